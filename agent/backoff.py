"""Exponential backoff with jitter, for reconnecting to brokers and servers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays ``initial * factor**n`` capped at ``maximum``, each shortened by up to ``jitter``."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    seed: int | None = None
    attempts: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.factor < 1 or not 0 <= self.jitter < 1:
            msg = f"invalid backoff {self.initial=} {self.maximum=} {self.factor=} {self.jitter=}"
            raise ValueError(msg)
        self._rng = random.Random(self.seed)  # noqa: S311 - jitter, not cryptography

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        base = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Start over after a success."""
        self.attempts = 0
