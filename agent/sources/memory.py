"""A source over batches already in memory: for the demo, replays and tests."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from agent.sources.base import Polled
from detectors import SampleBatch


class MemorySource:
    """Hands out the given batches in order, then nothing; records what was committed."""

    def __init__(self, batches: Iterable[SampleBatch], name: str = "memory") -> None:
        self.name = name
        self._queue: deque[SampleBatch] = deque(batches)
        self.committed = 0

    def push(self, batch: SampleBatch) -> None:
        """Add a batch at the end."""
        self._queue.append(batch)

    @property
    def exhausted(self) -> bool:
        """Whether every batch has been handed out."""
        return not self._queue

    def start(self) -> None:
        """Nothing to connect to."""

    def poll(self, timeout: float) -> Polled | None:
        """The next batch, or None when there is none."""
        return Polled(self.name, self._queue.popleft(), None) if self._queue else None

    def commit(self, polled: Polled) -> None:
        """Count the commit."""
        self.committed += len(polled.samples)

    @property
    def ready(self) -> bool:
        """Always ready."""
        return True

    def close(self) -> None:
        """Nothing to release."""
