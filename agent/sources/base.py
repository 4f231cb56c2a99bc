"""The source contract the engine pulls from.

A source hands out batches with an opaque commit token; the engine calls :meth:`Source.commit`
only after every signal of the batch has been delivered, which is what makes delivery
at-least-once. Temporary failures (a broker or server down) never escape a source: it retries
with backoff and reports them through :attr:`Source.ready` and the metrics. Only a problem
that retrying cannot fix (a query the server rejects) raises :class:`SourceStartupError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from detectors import SampleBatch


class SourceStartupError(RuntimeError):
    """A source cannot work with its configuration; the message says what and why."""


@dataclass(frozen=True, slots=True)
class Polled:
    """One batch from a source, with what the source needs to commit it later."""

    source: str
    samples: SampleBatch
    token: object = None


class Source(Protocol):
    """A stream of sample batches."""

    name: str

    def start(self) -> None:
        """Connect and check the configuration; must not block for long when the server is down."""
        ...

    def poll(self, timeout: float) -> Polled | None:
        """The next batch, waiting at most ``timeout`` seconds; None when there is nothing yet."""
        ...

    def commit(self, polled: Polled) -> None:
        """Mark ``polled`` as fully processed."""
        ...

    @property
    def ready(self) -> bool:
        """Whether the source is connected and working."""
        ...

    def close(self) -> None:
        """Release connections; safe to call twice."""
        ...
