"""Time for everything on the data path: the wall clock in the daemon, virtual time in replays."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where components read the time and wait; nothing on the data path calls ``time`` itself."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait ``seconds`` or until ``stop`` is set; return True if ``stop`` is set."""
        ...


class WallClock:
    """The real clock."""

    def now(self) -> float:
        """The system time."""
        return time.time()

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep, waking early when ``stop`` is set."""
        if stop is None:
            time.sleep(max(0.0, seconds))
            return False
        return stop.wait(max(0.0, seconds))


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
