"""Time for everything on the data path: the wall clock in the daemon, virtual time in replays."""

from __future__ import annotations

import threading

# Where components read the time and wait: nothing on the data path calls ``time`` itself. The
# protocol and the wall clock live in remediations, the lowest layer that needs them.
from remediations.types import Clock
from remediations.types import SystemClock as WallClock

__all__ = ["Clock", "ManualClock", "WallClock"]


class ManualClock:
    """Virtual time: ``wait`` advances the clock instantly, so timing logic runs in no wall time."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current virtual time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move virtual time forward."""
        if seconds < 0:
            msg = f"cannot move a clock backwards by {seconds} s"
            raise ValueError(msg)
        with self._lock:
            self._now += seconds

    def set(self, when: float) -> None:
        """Jump to ``when`` (never backwards)."""
        with self._lock:
            self._now = max(self._now, when)

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Advance by ``seconds`` at once."""
        if stop is not None and stop.is_set():
            return True
        self.advance(max(0.0, seconds))
        return stop is not None and stop.is_set()
