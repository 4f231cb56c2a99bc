"""How fresh each series' evidence is: when it last reported, how many samples so far, how often.

The playbook engine asks this before it calls an incident resolved: a series that fell quiet
under the bar must keep reporting (fresh samples, not silence), and a series that stopped
reporting makes its incident stale, never resolved. Updated once per batch, vectorised over the
batch's series; the interval is an exponentially weighted mean of each series' gaps between
samples, so staleness is judged on the series' own scrape interval, not on wall time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detectors.base import grow
from detectors.batch import FloatArray, IdArray, SampleBatch, newest_per_series
from detectors.series import SeriesKey, SeriesRegistry

#: Weight of the newest gap in a series' interval estimate.
INTERVAL_ALPHA = 0.2


@dataclass(frozen=True, slots=True)
class Seen:
    """A series' freshness: its newest sample's time, samples so far, and its usual interval."""

    last: float
    count: int
    interval: float

    def stale(self, now: float, intervals: float) -> bool:
        """Whether no sample came for more than ``intervals`` of the series' interval."""
        return now - self.last > intervals * max(self.interval, 1.0)


@dataclass(slots=True)
class SeriesFreshness:
    """Per series id: newest timestamp, sample count, EW mean interval; about 24 bytes a series."""

    registry: SeriesRegistry
    _last: FloatArray = field(default_factory=lambda: np.full(0, np.nan))
    _count: IdArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _interval: FloatArray = field(default_factory=lambda: np.full(0, np.nan))

    def observe(self, batch: SampleBatch) -> None:
        """Count ``batch``'s samples (dropped ones excluded) and move each series' newest time."""
        if len(batch) == 0:
            return
        ids = batch.series
        size = int(ids.max()) + 1
        self._last = grow(self._last, size, np.nan)
        self._count = grow(self._count, size, 0)
        self._interval = grow(self._interval, size, np.nan)
        np.add.at(self._count, ids, 1)
        newest = newest_per_series(ids, batch.timestamps)
        sids, times = ids[newest], batch.timestamps[newest]
        previous = self._last[sids]
        gap = times - previous
        fresh = np.isfinite(gap) & (gap > 0)
        if len(newest) != len(batch):  # several samples of a series in the batch: their mean gap
            first = np.full(size, np.inf)
            np.minimum.at(first, ids, batch.timestamps)
            counts = np.bincount(ids, minlength=size)[sids]
            spread = times - first[sids]
            inner = (counts > 1) & (spread > 0)
            gap = np.where(inner, spread / np.maximum(counts - 1, 1), gap)
            fresh |= inner
        old = self._interval[sids]
        self._interval[sids] = np.where(
            fresh,
            np.where(np.isfinite(old), old + INTERVAL_ALPHA * (gap - old), gap),
            old,
        )
        self._last[sids] = np.fmax(previous, times)

    def forget(self, ids: IdArray) -> None:
        """Forget the series of ``ids`` (evicted: the ids will name new series)."""
        ids = ids[ids < self._last.shape[0]]
        self._last[ids] = np.nan
        self._count[ids] = 0
        self._interval[ids] = np.nan

    def seen(self, key: SeriesKey) -> Seen | None:
        """The freshness of ``key``; None for a series never seen."""
        sid = self.registry.lookup(key)
        if sid is None or sid >= self._last.shape[0] or not np.isfinite(self._last[sid]):
            return None
        interval = float(self._interval[sid])
        return Seen(float(self._last[sid]), int(self._count[sid]), interval if np.isfinite(interval) else 0.0)
