"""Where signals go: the log, and the ``aiops.signals`` Kafka topic (the playbook engine plugs in here)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import orjson

from detectors import Signal

log = logging.getLogger("aiops.signals")


class SinkError(RuntimeError):
    """A sink could not deliver; the engine retries and does not commit the batch meanwhile."""


class SignalSink(Protocol):
    """Receives the signals of each batch; ``flush`` returns only once all of them are delivered."""

    name: str

    def emit(self, signals: Sequence[Signal]) -> None:
        """Queue or deliver ``signals``."""
        ...

    def flush(self) -> None:
        """Deliver everything emitted so far, or raise :class:`SinkError`."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


def encode_signal(signal: Signal) -> bytes:
    """The JSON wire form of a signal."""
    return orjson.dumps(signal.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class LogSink:
    """Writes each signal as one log record (JSON fields under ``signal`` in JSON log format)."""

    name = "log"

    def emit(self, signals: Sequence[Signal]) -> None:
        """Log every signal at WARNING: each is something an operator may want to see."""
        for s in signals:
            log.warning(
                "signal %s %s score=%.3f value=%g detector=%s",
                s.kind.value,
                s.series,
                s.score,
                s.value,
                s.detector,
                extra={"signal": s.to_dict()},
            )

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to release."""


class CollectingSink:
    """Keeps signals in memory: for the demo, replays and tests."""

    name = "memory"

    def __init__(self) -> None:
        self.signals: list[Signal] = []

    def emit(self, signals: Sequence[Signal]) -> None:
        """Append the signals."""
        self.signals.extend(signals)

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to release."""
