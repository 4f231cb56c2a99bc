"""Counters read as rates: what a learned detector should judge of a monotonic counter.

A counter (``http_requests_total``) only ever grows, except when the process that keeps it
restarts and it starts again from zero. Its raw value says nothing about health: every sample is
a new maximum, and a reset is a fall to a level never seen. What carries the information is its
rate. :class:`CounterRates` turns each counter sample into the per-second rate since the
series' previous sample, the way Prometheus' ``rate()`` does:

- the increase is ``v - previous``; when the counter went down it was reset (its process
  restarted and counted from zero), and what it counted between the previous sample and the
  restart is lost: that sample gives no rate (neither a negative one nor the dip an
  undercount would show) and is the reference for the next;
- the rate is the increase over the time since the previous sample, so a gap (missing samples,
  an irregular step) gives the average rate over it, never a spike;
- a series' first sample, a sample not newer than the previous one, and a missing value (NaN)
  give no rate either: they are left out (a missing value, and a sample not newer, leave the
  previous sample as the reference).

Per-series state (the previous value and its time) lives in arrays indexed by series id; a
batch may hold several samples of a series, taken in timestamp order (batch order on ties).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors.base import grow
from detectors.batch import FloatArray, IdArray, SampleBatch

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


def _starts(ids: IdArray) -> BoolArray:
    """Where a new series begins in ids sorted by series."""
    first = np.ones(ids.size, dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return first


def _previous(x: FloatArray, first: BoolArray, stored: FloatArray) -> FloatArray:
    """Each sample's predecessor in its series (sorted): the sample before, or ``stored`` first."""
    out = np.empty(x.size)
    out[1:] = x[:-1]
    out[first] = stored[first]
    return out


class CounterRates:
    """Per-series previous sample of counters; :meth:`rates` turns counter samples into rates."""

    def __init__(self) -> None:
        self._value: FloatArray = np.zeros(0)
        self._ts: FloatArray = np.zeros(0)

    def forget(self, ids: IdArray) -> None:
        """Forget the series of ``ids`` (evicted): their next sample starts a counter afresh."""
        ids = ids[ids < self._value.shape[0]]
        self._value[ids] = np.nan
        self._ts[ids] = -np.inf

    def rates(self, batch: SampleBatch) -> SampleBatch:
        """The samples of ``batch`` (all counters) that have a rate, as that rate, in batch order."""
        n = len(batch)
        if n == 0:
            return batch
        size = int(batch.series.max()) + 1
        self._value = grow(self._value, size, np.nan)
        self._ts = grow(self._ts, size, -np.inf)
        index = np.flatnonzero(np.isfinite(batch.values) & np.isfinite(batch.timestamps))
        order = index[np.lexsort((batch.timestamps[index], batch.series[index]))]
        ids, ts = batch.series[order], batch.timestamps[order]
        # not newer than the stored sample, or a tie with the one before: no rate, no reference
        first = _starts(ids)
        keep = (ts > self._ts[ids]) & (ts > _previous(ts, first, self._ts[ids]))
        order, ids, ts = order[keep], ids[keep], ts[keep]
        values = batch.values[order]
        first = _starts(ids)
        prev_v = _previous(values, first, self._value[ids])
        prev_t = _previous(ts, first, self._ts[ids])
        last = np.ones(ids.size, dtype=bool)
        last[:-1] = first[1:]
        self._value[ids[last]] = values[last]
        self._ts[ids[last]] = ts[last]
        has_rate = values >= prev_v  # False for a first sample (prev NaN) and for a reset
        rows = order[has_rate]
        rate = np.empty(n)
        rate[rows] = (values[has_rate] - prev_v[has_rate]) / (ts[has_rate] - prev_t[has_rate])
        rows.sort()
        return SampleBatch(batch.series[rows], batch.timestamps[rows], rate[rows])
