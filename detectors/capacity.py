"""Capacity per pod, measured: the demand one ready pod serves at full utilisation.

A forecast of demand says how many pods are needed only with the capacity of one pod. The
:class:`CapacityEstimator` measures it from three series with the same labels: the demand (the
forecast series, e.g. ``http_requests_per_second``), the pods' mean utilisation
(``utilisation_metric``, e.g. ``container_cpu_usage_ratio``: cores used over cores allowed) and
the ready replicas (``replicas_metric``, e.g. kube-state-metrics'
``kube_deployment_status_replicas_ready``). Each demand sample is joined with the newest sample
of each partner at or before its time (at most ``max_age`` older) and, when valid, gives one
estimate ``demand / (ready x utilisation)``.

A sample is valid only where utilisation is linear in load: between ``low`` and ``high``
(default 0.15 to 0.85). A saturated pod's CPU is capped at 1 and says nothing about what it could
serve; a near-idle pod's CPU is mostly its own overhead and noise. With ``settle`` > 0 a sample is
also skipped until the ready count has been unchanged that long: a utilisation computed over a
rate window (``rate(...[5m])``) still describes the previous pods for that window.

The estimate is a **median of bucket means**: valid estimates are averaged per bucket of
``window / buckets`` seconds, and the value is the median of the means of the last ``buckets``
buckets that had valid samples, and of the open one. Means within a bucket average out sampling
noise; the median across buckets ignores the few buckets a transient (a roll-out, a scale while
the CPU rate lags, a load step between scrapes) skews, which an EWMA would follow. Buckets without
a valid sample do not count, so it is the last hour (by default) of *valid* samples, however
long ago: while the pods run saturated or idle, the last measurement stands. Memory per series is
fixed (``2 x buckets + 8`` numbers), the estimate uses only samples at or before the newest one,
and it is trusted (:meth:`CapacityEstimator.value` returns it) only once those buckets hold
``min_samples`` valid samples.

Partner series are joined, not forecast: :meth:`CapacityEstimator.update` returns which samples
of a batch are the forecast's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorError, grow
from detectors.batch import FloatArray, IdArray, SampleBatch
from detectors.forecast import ParamReader, export_state, restore_state
from detectors.series import SeriesKey, SeriesRegistry

_STATE_VERSION = 1
_UNKNOWN, _DEMAND, _UTILISATION, _REPLICAS = -2, 0, 1, 2


def _asof(query_ids: IdArray, query_ts: FloatArray, ids: IdArray, ts: FloatArray) -> npt.NDArray[np.int64]:
    """For each query, the index into ``ids``/``ts`` of the newest sample of the same id at or
    before the query's time; -1 where there is none."""
    n, m = ids.size, query_ids.size
    all_ids = np.concatenate([ids, query_ids])
    all_ts = np.concatenate([ts, query_ts])
    is_query = np.concatenate([np.zeros(n, np.int8), np.ones(m, np.int8)])  # samples first on ties
    order = np.lexsort((is_query, all_ts, all_ids))
    index = np.where(order < n, order, -1)
    last = np.maximum.accumulate(np.where(index >= 0, np.arange(order.size), -1))
    found = np.where(last >= 0, order[np.maximum(last, 0)], -1)
    found = np.where((found >= 0) & (all_ids[np.maximum(found, 0)] == all_ids[order]), found, -1)
    out = np.full(m, -1, dtype=np.int64)
    queries = order >= n
    out[order[queries] - n] = found[queries]
    return out


class CapacityEstimator:
    """Per demand series: the median of recent bucket means of ``demand / (ready x utilisation)``."""

    owner: ClassVar[str] = "forecast.capacity"
    PARAMS: ClassVar[frozenset[str]] = frozenset(
        {
            "utilisation_metric",
            "replicas_metric",
            "low",
            "high",
            "window",
            "buckets",
            "min_samples",
            "max_age",
            "settle",
        }
    )
    _ARRAYS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("last", 1),
        ("open", 1),
        ("open_sum", 1),
        ("open_n", 1),
        ("next", 1),
        ("value", 1),
        ("time", 1),
        ("changed", 1),
        ("ring_sum", 2),
        ("ring_n", 2),
    )

    def __init__(
        self,
        series: SeriesRegistry,
        utilisation_metric: str,
        replicas_metric: str,
        *,
        low: float = 0.15,
        high: float = 0.85,
        window: float = 3600.0,
        buckets: int = 12,
        min_samples: int = 20,
        max_age: float = 60.0,
        settle: float = 0.0,
    ) -> None:
        if utilisation_metric == replicas_metric:
            raise DetectorError(f"{self.owner}: utilisation_metric and replicas_metric must differ")
        if not 0.0 < low < high <= 1.0:
            raise DetectorError(f"{self.owner}.low: expected 0 < low < high <= 1, got low {low}, high {high}")
        self.series = series
        self.utilisation_metric = utilisation_metric
        self.replicas_metric = replicas_metric
        self.low = low
        self.high = high
        self.window = window
        self.buckets = buckets
        self.width = window / buckets
        self.min_samples = min_samples
        self.max_age = max_age
        self.settle = settle
        # per demand series: newest sample time seen, the open bucket (its index, sum, count)
        self._last: FloatArray = np.zeros(0)
        self._open: FloatArray = np.zeros(0)
        self._open_sum: FloatArray = np.zeros(0)
        self._open_n: FloatArray = np.zeros(0)
        # per partner series: its newest value and time, and (replicas) when the value last changed
        self._value: FloatArray = np.zeros(0)
        self._time: FloatArray = np.zeros(0)
        self._changed: FloatArray = np.zeros(0)
        # per demand series, its last `buckets` closed buckets (a ring; `next` counts them): sums, counts
        self._next: FloatArray = np.zeros(0)
        self._ring_sum: FloatArray = np.zeros((0, buckets))
        self._ring_n: FloatArray = np.zeros((0, buckets))
        self._role: IdArray = np.zeros(0, dtype=np.int64)
        self._partner: npt.NDArray[np.int64] = np.zeros((0, 2), dtype=np.int64)

    @classmethod
    def from_params(cls, params: object, series: SeriesRegistry | None) -> CapacityEstimator:
        """Build from the forecast detector's ``capacity`` mapping; every error names the key."""
        if not isinstance(params, Mapping):
            raise DetectorError(f"{cls.owner}: expected a mapping, got {params!r}")
        if series is None:
            raise DetectorError(f"{cls.owner}: needs the series registry")
        p = ParamReader(cls.owner, params, cls.PARAMS)
        names = {}
        for key in ("utilisation_metric", "replicas_metric"):
            value = params.get(key)
            if not isinstance(value, str) or not value:
                raise DetectorError(f"{cls.owner}.{key}: expected a metric name, got {value!r}")
            names[key] = value
        low = p.number("low", 0.15, low=0.0, high=1.0, low_open=True, high_open=True)
        high = p.number("high", 0.85, low=0.0, high=1.0, low_open=True)
        if high <= low:
            raise DetectorError(f"{cls.owner}.high: must be above low ({low:g}), got {high:g}")
        return cls(
            series,
            names["utilisation_metric"],
            names["replicas_metric"],
            low=low,
            high=high,
            window=p.number("window", 3600.0, low=60.0, high=30 * 86400.0),
            buckets=p.integer("buckets", 12, low=1, high=1000),
            min_samples=p.integer("min_samples", 20, low=1, high=1_000_000),
            max_age=p.number("max_age", 60.0, low=0.0, high=86400.0),
            settle=p.number("settle", 0.0, low=0.0, high=86400.0),
        )

    @property
    def metrics(self) -> tuple[str, str]:
        """The partner metrics, joined and never forecast."""
        return self.utilisation_metric, self.replicas_metric

    # ------------------------------------------------------------------ state arrays

    def _ensure(self, size: int) -> None:
        if size <= self._last.shape[0]:
            return
        self._last = grow(self._last, size, -np.inf)
        rows = self._last.shape[0]
        self._open = grow(self._open, rows, -np.inf)
        self._open_sum = grow(self._open_sum, rows, 0.0)
        self._open_n = grow(self._open_n, rows, 0.0)
        self._value = grow(self._value, rows, np.nan)
        self._time = grow(self._time, rows, -np.inf)
        self._changed = grow(self._changed, rows, -np.inf)
        self._ring_sum = grow(self._ring_sum, rows, 0.0)
        self._ring_n = grow(self._ring_n, rows, 0.0)
        self._next = grow(self._next, rows, 0.0)
        self._role = grow(self._role, rows, _UNKNOWN)
        partner = np.full((rows, 2), -1, dtype=np.int64)
        partner[: self._partner.shape[0]] = self._partner
        self._partner = partner

    def _roles(self, ids: IdArray) -> IdArray:
        """Each id's role; a demand series whose partners are not registered yet looks again."""
        role = self._role[ids]
        missing = (role == _DEMAND) & (self._partner[ids] < 0).any(axis=1)
        for sid in np.unique(ids[(role == _UNKNOWN) | missing]).tolist():
            key = self.series.key(sid)
            if key.name == self.utilisation_metric:
                self._role[sid] = _UTILISATION
                continue
            if key.name == self.replicas_metric:
                self._role[sid] = _REPLICAS
                continue
            self._role[sid] = _DEMAND
            for col, metric in enumerate(self.metrics):
                found = self.series.lookup(SeriesKey(metric, key.labels))
                self._partner[sid, col] = -1 if found is None else found
        return self._role[ids]

    def forget(self, ids: IdArray) -> None:
        """Forget the series of ``ids`` (evicted: the ids will name new series)."""
        ids = ids[ids < self._last.shape[0]]
        self._last[ids] = -np.inf
        self._open[ids] = -np.inf
        self._open_sum[ids] = 0.0
        self._open_n[ids] = 0.0
        self._value[ids] = np.nan
        self._time[ids] = -np.inf
        self._changed[ids] = -np.inf
        self._ring_sum[ids] = 0.0
        self._ring_n[ids] = 0.0
        self._next[ids] = 0.0
        self._role[ids] = _UNKNOWN
        self._partner[ids] = -1
        # a demand series whose partner was evicted looks for it again
        self._partner[np.isin(self._partner, ids)] = -1

    # ------------------------------------------------------------------ streaming

    def update(self, batch: SampleBatch) -> npt.NDArray[np.bool_]:
        """Learn from ``batch``; True for its demand samples (the ones to forecast), False for partners."""
        if len(batch) == 0:
            return np.zeros(0, dtype=bool)
        ids, ts, values = batch.series, batch.timestamps, batch.values
        self._ensure(int(ids.max()) + 1)
        role = self._roles(ids)
        demand = role == _DEMAND
        usable = np.isfinite(values) & np.isfinite(ts)
        partners = np.flatnonzero(~demand & usable & ~(ts < self._time[ids]))
        partners = partners[np.lexsort((ts[partners], ids[partners]))]
        p_ids, p_ts, p_values = ids[partners], ts[partners], values[partners]
        p_changed = self._change_times(p_ids, p_ts, p_values)
        rows = np.flatnonzero(demand & usable & (ts > self._last[ids]))
        if rows.size:
            rows = rows[np.lexsort((ts[rows], ids[rows]))]
            d, t = ids[rows], ts[rows]
            util, util_ts, _ = self._join(self._partner[d, 0], t, p_ids, p_ts, p_values, p_changed)
            ready, ready_ts, since = self._join(self._partner[d, 1], t, p_ids, p_ts, p_values, p_changed)
            with np.errstate(invalid="ignore", divide="ignore"):
                estimate = values[rows] / (ready * util)
                valid = (
                    (util >= self.low)
                    & (util <= self.high)
                    & (ready >= 1.0)
                    & (t - util_ts <= self.max_age)
                    & (t - ready_ts <= self.max_age)
                    & (t - since >= self.settle)
                    & np.isfinite(estimate)
                    & (estimate > 0)
                )
            self._learn(d[valid], t[valid], estimate[valid])
            np.maximum.at(self._last, d, t)
        if p_ids.size:  # each partner's newest sample, for the batches to come
            newest = np.r_[p_ids[1:] != p_ids[:-1], True]
            self._value[p_ids[newest]] = p_values[newest]
            self._time[p_ids[newest]] = p_ts[newest]
            self._changed[p_ids[newest]] = p_changed[newest]
        return np.asarray(demand, dtype=bool)

    def _change_times(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """For partner samples sorted by (id, time): when the series last changed value, as of each."""
        if ids.size == 0:
            return np.zeros(0)
        position = np.arange(ids.size)
        first = np.r_[True, ids[1:] != ids[:-1]]
        before = np.where(first, self._value[ids], np.r_[np.nan, values[:-1]])
        changed = ~(values == before)  # nothing known before (NaN) counts as a change
        latest = np.maximum.accumulate(np.where(changed, position, -1))
        group = np.maximum.accumulate(np.where(first, position, 0))
        inside = latest >= group  # a change within the series' samples of this batch
        return np.where(inside, ts[np.maximum(latest, 0)], self._changed[ids])

    def _join(
        self,
        partner: IdArray,
        t: FloatArray,
        p_ids: IdArray,
        p_ts: FloatArray,
        p_values: FloatArray,
        p_changed: FloatArray,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The partner's value, its time and its last change as of each time ``t`` (NaN/-inf: none)."""
        value = np.full(t.size, np.nan)
        when = np.full(t.size, -np.inf)
        since = np.full(t.size, np.inf)
        known = partner >= 0
        if not known.any():
            return value, when, since
        pk, tk = partner[known], t[known]
        found = _asof(pk, tk, p_ids, p_ts)
        stored = self._time[pk] <= tk  # the newest sample of earlier batches
        v = np.where(stored, self._value[pk], np.nan)
        w = np.where(stored, self._time[pk], -np.inf)
        c = np.where(stored, self._changed[pk], np.inf)
        hit = found >= 0
        v[hit], w[hit], c[hit] = p_values[found[hit]], p_ts[found[hit]], p_changed[found[hit]]
        value[known], when[known], since[known] = v, w, c
        return value, when, since

    def _learn(self, d: IdArray, t: FloatArray, estimate: FloatArray) -> None:
        """Add valid estimates (sorted by series, then time) to their buckets, closing full ones."""
        if d.size == 0:
            return
        b = np.floor(t / self.width)
        starts = np.flatnonzero(np.r_[True, (d[1:] != d[:-1]) | (b[1:] != b[:-1])])
        run_d, run_b = d[starts], b[starts]
        run_sum = np.add.reduceat(estimate, starts)
        run_n = np.diff(np.r_[starts, d.size]).astype(np.float64)
        first = np.r_[True, run_d[1:] != run_d[:-1]]
        last = np.r_[run_d[1:] != run_d[:-1], True]
        joins = first & (run_b == self._open[run_d])
        run_sum[joins] += self._open_sum[run_d[joins]]
        run_n[joins] += self._open_n[run_d[joins]]
        # closed: the open bucket a later one follows, then every run but each series' last
        closes = first & ~joins & (self._open_n[run_d] > 0)
        opened = run_d[closes]
        self._close(
            np.r_[opened, run_d[~last]],
            np.r_[np.full(opened.size, -1), np.flatnonzero(~last)],
            np.r_[self._open_sum[opened], run_sum[~last]],
            np.r_[self._open_n[opened], run_n[~last]],
        )
        self._open[run_d[last]] = run_b[last]
        self._open_sum[run_d[last]] = run_sum[last]
        self._open_n[run_d[last]] = run_n[last]

    def _close(self, d: IdArray, seq: IdArray, total: FloatArray, n: FloatArray) -> None:
        """Put closed buckets (in ``seq`` order per series) into each series' ring of the last ones."""
        if d.size == 0:
            return
        order = np.lexsort((seq, d))
        d, total, n = d[order], total[order], n[order]
        first = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        count = np.diff(np.r_[first, d.size])
        rank = np.arange(d.size) - np.repeat(first, count)
        keep = rank >= np.repeat(count, count) - self.buckets  # older ones would be overwritten anyway
        slot = ((self._next[d] + rank) % self.buckets).astype(np.int64)
        self._ring_sum[d[keep], slot[keep]] = total[keep]
        self._ring_n[d[keep], slot[keep]] = n[keep]
        self._next[d[first]] += count

    # ------------------------------------------------------------------ reading

    def samples(self, series_id: int) -> int:
        """Valid samples of ``series_id`` in its last ``buckets`` buckets (the open one included)."""
        if series_id >= self._last.shape[0] or self._open_n[series_id] <= 0:
            return 0
        return int(self._open_n[series_id] + self._ring_n[series_id].sum())

    def value(self, series_id: int) -> float | None:
        """The measured capacity per pod of ``series_id``; None until ``min_samples`` valid samples."""
        if self.samples(series_id) < self.min_samples:
            return None
        full = self._ring_n[series_id] > 0
        means = np.r_[
            self._ring_sum[series_id, full] / self._ring_n[series_id, full],
            self._open_sum[series_id] / self._open_n[series_id],
        ]
        out = float(np.median(means))
        return out if math.isfinite(out) else None

    # ------------------------------------------------------------------ checkpoints

    def _config(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "width": self.width}

    def state_dict(self) -> dict[str, Any]:
        """Per-series buckets and the partners' newest samples (copies)."""
        return export_state(self, self.owner, _STATE_VERSION, self._ARRAYS, self._config(), ())

    def restored(self, state: Mapping[str, Any] | None) -> CapacityEstimator:
        """A copy of this estimator with ``state`` loaded (None: nothing learned); this one is left
        as it is, so a caller can check a state before putting it in place."""
        copy = CapacityEstimator(
            self.series,
            self.utilisation_metric,
            self.replicas_metric,
            low=self.low,
            high=self.high,
            window=self.window,
            buckets=self.buckets,
            min_samples=self.min_samples,
            max_age=self.max_age,
            settle=self.settle,
        )
        if state is not None:
            copy.load_state(state)
        return copy

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` exported (same buckets); roles and partners are found again."""
        restore_state(
            self,
            state,
            self.owner,
            _STATE_VERSION,
            self._ARRAYS,
            self._config(),
            (),
            lambda key, rows: (rows, self.buckets) if key.startswith("ring_") else (rows,),
            (),
        )
        rows = self._last.shape[0]
        self._role = np.full(rows, _UNKNOWN, dtype=np.int64)
        self._partner = np.full((rows, 2), -1, dtype=np.int64)
