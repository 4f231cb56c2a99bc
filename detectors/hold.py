"""Alarm hold: an alarm stays up while its series stays away from where it was before the alarm.

Learned detectors flag the *onset* of a change; their calibration then adapts, and a step that
persists (an error ratio that went from 0.1 % to 9 % and stays there) stops scoring high within a
few samples. For a benchmark that credits only the earliest detection that is right; for
operations it is not: the incident goes on, and a playbook's ``for:`` window must see it go on.

:class:`AlarmHold` keeps, per series, a slow average of the values seen while no alarm is up (the
pre-alarm level) and, when a sample raises an alarm (its score reaches the bar), the alarm's
value and score. While the alarm is up, every sample that is still at least ``fraction`` of the
way from the pre-alarm level to the alarm's value carries the alarm's score; the first sample
back nearer to the old level (and not flagged on its own) ends the alarm. An alarm is held at
most ``max_seconds`` (series time): a change that lasts that long is the new normal.

The hold is causal (state from earlier samples only) and per series in arrays; within a batch,
state moves on the newest sample of each series.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors.base import DetectorError, grow
from detectors.batch import FloatArray, IdArray, newest_per_series

#: How fast the pre-alarm level follows the values (per sample, while no alarm is up).
LEVEL_RATE = 0.02


class AlarmHold:
    """Per-series alarm state for one detector of the bank."""

    def __init__(self, *, fraction: float = 0.5, max_seconds: float = 6 * 3600.0) -> None:
        if not 0.0 < fraction <= 1.0:
            msg = f"hold fraction must be in (0, 1], got {fraction}"
            raise DetectorError(msg)
        if not max_seconds > 0:
            msg = f"hold max_seconds must be positive, got {max_seconds}"
            raise DetectorError(msg)
        self.fraction = fraction
        self.max_seconds = max_seconds
        self._level = np.zeros(0, np.float64)
        self._onset = np.zeros(0, np.float64)
        self._score = np.zeros(0, np.float64)
        self._since = np.zeros(0, np.float64)
        self._active = np.zeros(0, np.bool_)
        #: Samples whose score the hold raised.
        self.held = 0

    def forget(self, ids: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        """Forget the series of ``ids``: no alarm held for them."""
        ids = ids[ids < self._level.shape[0]]
        self._level[ids] = np.nan
        self._onset[ids] = np.nan
        self._score[ids] = 0.0
        self._since[ids] = -np.inf
        self._active[ids] = False

    def _ensure(self, size: int) -> None:
        if size <= self._level.size:
            return
        rows = max(size, 2 * self._level.size, 64)
        self._level = grow(self._level, rows, np.nan)
        self._onset = grow(self._onset, rows, np.nan)
        self._score = grow(self._score, rows, 0.0)
        self._since = grow(self._since, rows, -np.inf)
        self._active = grow(self._active, rows, False)

    def apply(
        self, ids: IdArray, ts: FloatArray, values: FloatArray, scores: FloatArray, bar: float
    ) -> FloatArray:
        """Scores with held alarms raised to the alarm's score; updates the alarm state."""
        if ids.size == 0:
            return scores
        self._ensure(int(ids.max()) + 1)
        active = self._active[ids]
        level = self._level[ids]
        gap = np.abs(values - level)
        need = self.fraction * np.abs(self._onset[ids] - level)
        with np.errstate(invalid="ignore"):
            away = np.isfinite(gap) & (gap >= need) & (need > 0)
        held = active & away & (ts - self._since[ids] <= self.max_seconds)
        out = np.where(held & (scores < self._score[ids]), self._score[ids], scores)
        self.held += int((held & (scores < self._score[ids])).sum())
        # state moves on the newest sample of each series in the batch
        pick = newest_per_series(ids, ts)
        sid, v, t, raw, h = ids[pick], values[pick], ts[pick], scores[pick], held[pick]
        was = self._active[sid]
        new = (raw >= bar) & ~was & np.isfinite(v)
        ended = was & ~h & (raw < bar)
        self._onset[sid] = np.where(new, v, self._onset[sid])
        self._score[sid] = np.where(new, raw, self._score[sid])
        self._since[sid] = np.where(new, t, self._since[sid])
        now_active = (was | new) & ~ended
        self._active[sid] = now_active
        quiet = ~now_active & np.isfinite(v)
        old = self._level[sid]
        self._level[sid] = np.where(quiet, np.where(np.isnan(old), v, old + LEVEL_RATE * (v - old)), old)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The per-series arrays."""
        return {
            "level": self._level.copy(),
            "onset": self._onset.copy(),
            "score": self._score.copy(),
            "since": self._since.copy(),
            "active": self._active.copy(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        try:
            arrays = [np.asarray(state[k]) for k in ("level", "onset", "score", "since", "active")]
        except KeyError as exc:
            msg = f"hold state is missing {exc}"
            raise DetectorError(msg) from exc
        if len({a.shape for a in arrays}) != 1:
            msg = "hold state arrays differ in length"
            raise DetectorError(msg)
        self._level, self._onset, self._score, self._since = (a.astype(np.float64) for a in arrays[:4])
        self._active = arrays[4].astype(np.bool_)
