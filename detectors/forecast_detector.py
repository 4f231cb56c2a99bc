"""Forecast signals: a forecaster's upper bound turned into scores the DetectorBank can signal.

The :class:`ForecastDetector` wraps a built-in forecaster (:mod:`detectors.forecasters`) and,
per series, at most once every ``every`` seconds of event time, forecasts ``horizon`` seconds
ahead (``ceil(horizon / step)`` steps of ``step`` seconds). Of that forecast it keeps

- ``U``, the largest upper bound over the horizon (the demand to provision for, or the highest
  the value may reach), and
- ``M``, the highest point forecast over the horizon (the demand expected at its peak; what a
  floor under a reactive autoscaler is sized on, which covers what the forecast misses).

Only the newest sample of a forecast series in a batch gets a score; every other sample scores
0, as do series whose forecaster has not learned enough for a full-horizon forecast yet (NaN).
Two modes:

- **With a** ``limit`` (e.g. 1.0 for a memory working set as a ratio of its limit): the score is
  ``clip(U / limit, 0, 1)``, so 1 means the upper bound reaches the limit within the horizon
  and a bank ``min_score`` of 0.9 signals when it reaches 90 % of it.
- **Without one** (e.g. requests per second, to scale ahead of demand): the score is 1 when ``U``,
  or the observed peak (below), differs from its value at the series' last *signalled* forecast
  by at least ``change`` relatively (or none was signalled yet), or when ``refresh`` seconds
  (default: the horizon) have passed since the series was last signalled, else 0: a new forecast,
  or a new observation, worth acting on (a floor held up by the load seen is lowered when that
  load has passed, even if the forecast stays where it was), and at least once a horizon the
  forecast again, so that a target whose replicas changed under it (restored by another incident,
  scaled by a person, a restart of the agent) is brought back to what the forecast needs while
  the forecast itself stands still. The detector
  records a forecast as signalled when it scores 1, so it assumes the bank's ``min_score``
  (which is at most 1) lets every such score through.

The signal's value is ``U`` (the bank asks :meth:`ForecastDetector.signal_value`), not the
sample's value, and its details carry ``M``, ``U``, the horizon and the forecaster's name, and
``observed_peak``: the highest value the series took over the last horizon (per ``step``, what
the forecaster learned), the load seen beside the load expected. A floor that follows the forecast
lowers only as far as both allow (``scale: toForecast``), as an HPA lowers only to the highest of
its recent recommendations.
Scores are causal: a forecast uses only samples up to the newest one of its series, which is the
sample that carries its score. Samples the forecaster refuses (not finite, out of order) are
counted by the forecaster; :attr:`ForecastDetector.invalid` and
:attr:`ForecastDetector.out_of_order` read its counters.

Configured in the agent like any detector, typically limited to the metrics it forecasts::

    detectors:
      - type: forecast
        metrics: container_memory_working_set_ratio
        min_score: 0.9
        params:                   # times in seconds
          limit: 1.0
          step: 60
          horizon: 1800
          forecaster: holt_winters    # with a trend: follows a leak's linear ramp
          forecaster_params: {beta: 0.1, phi: 1.0}
      - type: forecast
        metrics: http_requests_per_second
        min_score: 0.8
        params: {step: 30, horizon: 900, change: 0.1, forecaster: holt_winters}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorError, grow
from detectors.batch import FloatArray, SampleBatch
from detectors.capacity import CapacityEstimator
from detectors.forecast import (
    MAX_HORIZON_STEPS,
    Forecaster,
    ParamReader,
    check_state_version,
    export_state,
    order_batch,
    restore_state,
)
from detectors.forecasters import DEFAULT_FORECASTER, FORECASTERS, build_forecaster
from detectors.series import SeriesRegistry
from detectors.signal import SignalKind
from detectors.streaming import MAX_ABS_TIMESTAMP

_STATE_VERSION = 5
"""5: carries the time of each series' last signal (refresh); 4: the steps' highest values
(observed_peak); 3: may carry the capacity estimator's state. Versions 2 to 4 still load: what
they lack starts empty."""
_FORECASTER_STATE = "forecaster_state"
_CAPACITY_STATE = "capacity_state"


class ForecastDetector:
    """Scores each series' newest sample by its forecast: ``U / limit``, or 1 for a new forecast."""

    name = "forecast"
    signal_kind = SignalKind.FORECAST
    PARAMS: ClassVar[frozenset[str]] = frozenset(
        {
            "forecaster",
            "forecaster_params",
            "step",
            "horizon",
            "limit",
            "change",
            "refresh",
            "every",
            "aggregate",
            "capacity",
        }
    )

    def __init__(
        self,
        forecaster: Forecaster,
        *,
        step: float = 60.0,
        horizon: float = 900.0,
        limit: float | None = None,
        change: float = 0.1,
        refresh: float | None = None,
        every: float | None = None,
        aggregate: bool = False,
        capacity: CapacityEstimator | None = None,
    ) -> None:
        self.forecaster = forecaster
        self.capacity = capacity
        self.aggregate = aggregate
        self.step = step
        self.horizon = horizon
        # a hair under the exact ratio, so 900 / 60 is 15 steps however the floats round
        self.horizon_steps = max(1, math.ceil(horizon / step - 1e-9))
        self.limit = limit
        self.change = change
        self.refresh = horizon if refresh is None else refresh
        self.every = step if every is None else every
        self._last_ts = np.zeros(0, np.float64)
        self._forecast_ts = np.zeros(0, np.float64)
        self._upper = np.zeros(0, np.float64)
        self._mean = np.zeros(0, np.float64)
        self._peak = np.zeros(0, np.int64)
        self._signalled = np.zeros(0, np.float64)
        self._signalled_seen = np.zeros(0, np.float64)
        self._signalled_ts = np.zeros(0, np.float64)
        # aggregate: the open bucket of each series (its index of step, the sum and count so far)
        self._bucket = np.zeros(0, np.float64)
        self._sum = np.zeros(0, np.float64)
        self._count = np.zeros(0, np.float64)
        # the highest value of each of the last horizon_steps steps (a ring indexed by step)
        self._seen_step = np.zeros((0, self.horizon_steps), np.float64)
        self._seen_max = np.zeros((0, self.horizon_steps), np.float64)
        self._bad_time = 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any], series: SeriesRegistry | None = None) -> ForecastDetector:
        """Build from a parameter mapping; every error names the parameter.

        ``series`` (the registry) is needed with ``capacity``, to join the partner series.
        """
        p = ParamReader(cls.name, params, cls.PARAMS)
        name = p.choice("forecaster", DEFAULT_FORECASTER, sorted(FORECASTERS))
        raw = params.get("forecaster_params", {})
        if not isinstance(raw, Mapping):
            raise DetectorError(f"{cls.name}.forecaster_params: expected a mapping, got {raw!r}")
        # Timestamps are Unix seconds (at most MAX_ABS_TIMESTAMP) and steps are counted as int64
        # (t / step); samples come from scrapes and pushes seconds apart (15 s is the shortest the
        # shipped config uses): a step under a second is a mistake, not a resolution.
        step = p.number("step", 60.0, low=1.0)
        horizon = p.number("horizon", 900.0, low=0.0, low_open=True)
        if horizon / step > MAX_HORIZON_STEPS:  # the forecasts, and the ring of values seen, per series
            raise DetectorError(
                f"{cls.name}.horizon: at most {MAX_HORIZON_STEPS} steps of {step:g} s "
                f"({MAX_HORIZON_STEPS * step:g} s), got {horizon:g}"
            )
        limit = p.optional_number("limit", None, low=0.0, low_open=True)
        for key in ("change", "refresh"):
            if limit is not None and key in params:
                raise DetectorError(f"{cls.name}.{key}: applies without a limit only")
        change = p.number("change", 0.1, low=0.0)
        refresh = p.number("refresh", horizon, low=0.0, low_open=True)
        every = p.number("every", step, low=0.0)
        aggregate = params.get("aggregate", False)
        if not isinstance(aggregate, bool):
            raise DetectorError(f"{cls.name}.aggregate: expected true or false, got {aggregate!r}")
        if "step" in raw and raw["step"] != step:
            raise DetectorError(
                f"{cls.name}.forecaster_params.step: set step on the forecast detector "
                f"(it is {step:g}), not on its forecaster"
            )
        steps = max(1, math.ceil(horizon / step - 1e-9))
        try:
            forecaster = build_forecaster(name, raw, {"step": step, "max_horizon": steps})
        except DetectorError as exc:
            raise DetectorError(f"{cls.name}.forecaster_params: {exc}") from exc
        try:  # a horizon the forecaster cannot serve fails now, not at the first forecast
            forecaster.forecast(np.zeros(0, np.int64), steps)
        except DetectorError as exc:
            raise DetectorError(f"{cls.name}.horizon: {horizon:g} s is {steps} steps; {exc}") from exc
        return cls(
            forecaster,
            step=step,
            horizon=horizon,
            limit=limit,
            change=change,
            refresh=refresh,
            every=every,
            aggregate=aggregate,
            capacity=None
            if params.get("capacity") is None
            else CapacityEstimator.from_params(params["capacity"], series),
        )

    @property
    def invalid(self) -> int:
        """Samples refused as not finite, or at a time no clock reads (see MAX_ABS_TIMESTAMP)."""
        return self.forecaster.invalid + self._bad_time

    @property
    def out_of_order(self) -> int:
        """Samples the forecaster refused as not newer than their series' newest."""
        return self.forecaster.out_of_order

    # ------------------------------------------------------------------ state arrays

    def _ensure(self, size: int) -> None:
        if size <= self._last_ts.shape[0]:
            return
        self._last_ts = grow(self._last_ts, size, -np.inf)
        rows = self._last_ts.shape[0]
        self._forecast_ts = grow(self._forecast_ts, rows, -np.inf)
        self._upper = grow(self._upper, rows, np.nan)
        self._mean = grow(self._mean, rows, np.nan)
        self._peak = grow(self._peak, rows, 0)
        self._signalled = grow(self._signalled, rows, np.nan)
        self._signalled_seen = grow(self._signalled_seen, rows, np.nan)
        self._signalled_ts = grow(self._signalled_ts, rows, np.nan)
        self._bucket = grow(self._bucket, rows, -np.inf)
        self._sum = grow(self._sum, rows, 0.0)
        self._count = grow(self._count, rows, 0.0)
        self._seen_step = grow(self._seen_step, rows, -np.inf)
        self._seen_max = grow(self._seen_max, rows, np.nan)

    def forget(self, ids: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        """Forget the series of ``ids`` (and the forecaster's state for them)."""
        forget = getattr(self.forecaster, "forget", None)
        if forget is not None:
            forget(ids)
        if self.capacity is not None:
            self.capacity.forget(ids)
        ids = ids[ids < self._last_ts.shape[0]]
        self._last_ts[ids] = -np.inf
        self._forecast_ts[ids] = -np.inf
        self._upper[ids] = np.nan
        self._mean[ids] = np.nan
        self._peak[ids] = 0
        self._signalled[ids] = np.nan
        self._signalled_seen[ids] = np.nan
        self._signalled_ts[ids] = np.nan
        self._bucket[ids] = -np.inf
        self._sum[ids] = 0.0
        self._count[ids] = 0.0
        self._seen_step[ids] = -np.inf
        self._seen_max[ids] = np.nan

    # ------------------------------------------------------------------ streaming

    def update(self, batch: SampleBatch) -> FloatArray:
        """Feed ``batch`` to the forecaster and score the newest sample of each series due a forecast."""
        scores = np.zeros(len(batch), dtype=np.float64)
        if len(batch) == 0:
            return scores
        if int(batch.series.min()) < 0:
            raise DetectorError(f"{self.name}: batch holds unregistered series ids; drop them first")
        sane = np.abs(batch.timestamps) <= MAX_ABS_TIMESTAMP
        if not bool(sane.all()):  # a time no clock reads would move every forecast to it
            self._bad_time += int(sane.size - np.count_nonzero(sane))
            if sane.any():
                scores[sane] = self.update(batch.select(sane))
            return scores
        if self.capacity is not None:
            own = self.capacity.update(batch)  # the partner series are joined, not forecast
            if not own.all():
                if own.any():
                    scores[own] = self._forecast(batch.select(own))
                return scores
        return self._forecast(batch)

    def _forecast(self, batch: SampleBatch) -> FloatArray:
        """Forecast the series of ``batch`` (its timestamps sane) and score their newest samples."""
        scores = np.zeros(len(batch), dtype=np.float64)
        self._ensure(int(batch.series.max()) + 1)
        # the samples the forecaster will learn (the same rule, against the same newest times),
        # tagged with their index in the batch it learns (and, through positions, in the batch
        # given) so the scores can be put back in batch order
        positions = np.arange(len(batch), dtype=np.float64)
        if self.aggregate:
            batch, positions = self._buckets(batch)
        index = np.arange(len(batch), dtype=np.float64)
        tagged = SampleBatch(
            batch.series, batch.timestamps, np.where(np.isfinite(batch.values), index, np.nan)
        )
        samples = order_batch(tagged, self._last_ts)
        self.forecaster.update(batch)
        if len(samples) == 0:
            return scores
        kept = samples.values.astype(np.int64)
        self._see(samples.series, samples.timestamps, batch.values[kept])
        newest = samples.newest()
        s, t = samples.series[newest], samples.timestamps[newest]
        pos = positions[kept[newest]].astype(np.int64)
        self._last_ts[s] = t
        due = t - self._forecast_ts[s] >= self.every
        if not due.any():
            return scores
        s, t, pos = s[due], t[due], pos[due]
        mean, upper = self.forecaster.forecast(s, self.horizon_steps)
        learned = np.isfinite(upper).all(axis=1) & np.isfinite(mean).all(axis=1)
        if not learned.any():
            return scores
        s, t, pos = s[learned], t[learned], pos[learned]
        mean, upper = mean[learned], upper[learned]
        peak = np.argmax(upper, axis=1)
        rows = np.arange(s.size)
        u, m = upper[rows, peak], mean.max(axis=1)
        self._forecast_ts[s] = t
        self._upper[s] = u
        self._mean[s] = m
        self._peak[s] = peak + 1
        if self.limit is not None:
            scores[pos] = np.clip(u / self.limit, 0.0, 1.0)
            return scores
        seen = self._observed(s, t)
        new = self._moved(u, self._signalled[s]) | self._moved(seen, self._signalled_seen[s])
        with np.errstate(invalid="ignore"):  # never signalled (NaN): due
            new |= ~(t - self._signalled_ts[s] < self.refresh)
        self._signalled[s[new]] = u[new]
        self._signalled_seen[s[new]] = seen[new]
        self._signalled_ts[s[new]] = t[new]
        scores[pos] = new.astype(np.float64)
        return scores

    def _see(self, s: np.ndarray[Any, np.dtype[np.int64]], t: FloatArray, v: FloatArray) -> None:
        """Keep the highest value of each step among the samples (series, time order) learned."""
        step = np.floor(t / self.step)
        # one (series, step) per run; the batch may span more steps than the ring holds, and the
        # newest step of each ring slot wins
        starts = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (step[1:] != step[:-1])])
        run_s, run_step = s[starts], step[starts]
        run_max = np.maximum.reduceat(v, starts)
        slot = (run_step % self.horizon_steps).astype(np.int64)
        if run_s.size > 1 and not bool(np.all(run_s[1:] != run_s[:-1])):  # a series with several steps
            order = np.lexsort((run_step, slot, run_s))
            run_s, run_step, run_max, slot = run_s[order], run_step[order], run_max[order], slot[order]
            last = np.r_[(run_s[1:] != run_s[:-1]) | (slot[1:] != slot[:-1]), True]
            run_s, run_step, run_max, slot = run_s[last], run_step[last], run_max[last], slot[last]
        same = self._seen_step[run_s, slot] == run_step  # a step the ring holds goes on
        self._seen_max[run_s, slot] = np.where(same, np.fmax(self._seen_max[run_s, slot], run_max), run_max)
        self._seen_step[run_s, slot] = run_step

    def _observed(self, s: np.ndarray[Any, np.dtype[np.int64]], t: FloatArray) -> FloatArray:
        """The highest value of each series of ``s`` over the horizon up to ``t``; NaN if none."""
        now = np.floor(t / self.step)
        recent = self._seen_step[s] > (now - self.horizon_steps)[:, None]
        peak = np.where(recent, self._seen_max[s], -np.inf).max(axis=1, initial=-np.inf)
        return np.where(np.isfinite(peak), peak, np.nan)

    def _moved(self, value: FloatArray, ref: FloatArray) -> npt.NDArray[np.bool_]:
        """Whether ``value`` differs from ``ref`` by at least ``change`` relatively (or ``ref`` is NaN
        and ``value`` is not: the first one)."""
        with np.errstate(invalid="ignore"):
            moved: npt.NDArray[np.bool_] = (np.abs(value - ref) >= self.change * np.abs(ref)) & (value != ref)
        first: npt.NDArray[np.bool_] = np.isnan(ref) & ~np.isnan(value)
        return np.asarray(first | moved, dtype=np.bool_)

    def observed_peak(self, series_id: int) -> float | None:
        """The highest value of ``series_id`` over the horizon up to its newest sample; None if none."""
        if series_id >= self._seen_step.shape[0] or not math.isfinite(self._last_ts[series_id]):
            return None
        ids = np.array([series_id], np.int64)
        peak = float(self._observed(ids, self._last_ts[ids])[0])
        return peak if math.isfinite(peak) else None

    def _buckets(self, batch: SampleBatch) -> tuple[SampleBatch, FloatArray]:
        """The step means that ``batch`` completes, and the batch position of the sample that
        completed each (the sample that carries its forecast's score).

        Each series' samples are summed into buckets of ``step`` seconds (aligned to the epoch);
        a bucket is complete when a sample of a later bucket arrives, and its mean is timed at the
        bucket's end. A sample older than its series' open bucket, or not finite, is left out.
        """
        ok = np.isfinite(batch.values)
        order = np.lexsort((batch.timestamps, batch.series))
        order = order[ok[order]]
        s = batch.series[order]
        t = batch.timestamps[order]
        v = batch.values[order]
        b = np.floor(t / self.step)
        current = b >= self._bucket[s]  # not behind the series' open bucket
        order, s, b, v = order[current], s[current], b[current], v[current]
        empty = (SampleBatch.empty(), np.zeros(0, np.float64))
        if s.size == 0:
            return empty
        starts = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (b[1:] != b[:-1])])
        run_s, run_b = s[starts], b[starts]
        run_sum = np.add.reduceat(v, starts)
        run_n = np.diff(np.r_[starts, s.size]).astype(np.float64)
        first = np.r_[True, run_s[1:] != run_s[:-1]]
        last = np.r_[run_s[1:] != run_s[:-1], True]
        joins = first & (run_b == self._bucket[run_s])  # the batch goes on with the open bucket
        run_sum[joins] += self._sum[run_s[joins]]
        run_n[joins] += self._count[run_s[joins]]
        # complete: an open bucket a new one follows, and every run but each series' last
        closes = first & ~joins & (self._count[run_s] > 0)
        closed_s = np.concatenate([run_s[closes], run_s[~last]])
        closed_t = np.concatenate(
            [(self._bucket[run_s[closes]] + 1.0) * self.step, (run_b[~last] + 1.0) * self.step]
        )
        closed_v = np.concatenate(
            [self._sum[run_s[closes]] / self._count[run_s[closes]], run_sum[~last] / run_n[~last]]
        )
        nxt = np.flatnonzero(~last) + 1  # the run after a completed one starts with its closing sample
        closed_pos = np.concatenate([order[starts[closes]], order[starts[nxt]]]).astype(np.float64)
        self._bucket[run_s[last]] = run_b[last]
        self._sum[run_s[last]] = run_sum[last]
        self._count[run_s[last]] = run_n[last]
        if closed_s.size == 0:
            return empty
        by_time = np.lexsort((closed_t, closed_s))
        means = SampleBatch(closed_s[by_time], closed_t[by_time], closed_v[by_time])
        return means, closed_pos[by_time]

    # ------------------------------------------------------------------ signals and checkpoints

    def signal_value(self, series_id: int) -> float | None:
        """The upper bound ``U`` of the latest forecast of ``series_id``; None before the first."""
        if series_id >= self._upper.shape[0] or not math.isfinite(self._upper[series_id]):
            return None
        return float(self._upper[series_id])

    def signal_details(self, series_id: int) -> dict[str, Any]:
        """The latest forecast of ``series_id``: its highest point forecast and bound, and the horizon."""
        if series_id >= self._upper.shape[0] or not math.isfinite(self._upper[series_id]):
            return {}
        details: dict[str, Any] = {
            "forecast_mean": float(self._mean[series_id]),
            "forecast_upper": float(self._upper[series_id]),
            "horizon_seconds": self.horizon_steps * self.step,
            "peak_in_seconds": int(self._peak[series_id]) * self.step,
            "forecaster": self.forecaster.name,
        }
        observed = self.observed_peak(series_id)
        if observed is not None:
            details["observed_peak"] = observed
        if self.limit is not None:
            details["limit"] = self.limit
        if self.capacity is not None:
            capacity = self.capacity.value(series_id)
            if capacity is not None:
                details["capacity_per_pod"] = capacity
                details["capacity_samples"] = self.capacity.samples(series_id)
        return details

    _ARRAYS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("last_ts", 1),
        ("forecast_ts", 1),
        ("upper", 1),
        ("mean", 1),
        ("peak", 1),
        ("signalled", 1),
        ("signalled_seen", 1),
        ("signalled_ts", 1),
        ("bucket", 1),
        ("sum", 1),
        ("count", 1),
        ("seen_step", 2),
        ("seen_max", 2),
    )

    def _config(self) -> dict[str, Any]:
        return {
            "forecaster": self.forecaster.name,
            "step": self.step,
            "horizon_steps": self.horizon_steps,
            "aggregate": self.aggregate,
        }

    def state_dict(self) -> dict[str, Any]:
        """Per-series forecast times and results (copies), the forecaster's own state and the
        capacity estimator's (when configured)."""
        state = export_state(self, self.name, _STATE_VERSION, self._ARRAYS, self._config(), ())
        state[_FORECASTER_STATE] = self.forecaster.state_dict()
        if self.capacity is not None:
            state[_CAPACITY_STATE] = self.capacity.state_dict()
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` exported, for the same forecaster, step and horizon.

        Either all of the state is loaded, or (on a DetectorError) none of it. A version 2 state
        (from before capacity was measured), or one without the capacity estimator's state, loads
        with no capacity measured yet; a capacity state is ignored when none is configured. A
        version 2 or 3 state (from before the observed peak was kept) loads with none observed, and
        a version 2 to 4 state (from before ``refresh``) signals at its next forecast.
        """
        inner = state.get(_FORECASTER_STATE)
        if not isinstance(inner, Mapping):
            raise DetectorError(f"{self.name}: state lacks {_FORECASTER_STATE!r}")
        version = state.get("version") if state.get("kind") == self.name else None
        if version in (2, 3, 4):
            if version == 2:
                state = {k: v for k, v in state.items() if k != _CAPACITY_STATE}
            rows = np.shape(state.get("last_ts", ()))[:1] or (0,)
            older: dict[str, Any] = {"signalled_ts": np.full(rows[0], np.nan)}
            if version in (2, 3):
                older |= {
                    "seen_step": np.full((rows[0], self.horizon_steps), -np.inf),
                    "seen_max": np.full((rows[0], self.horizon_steps), np.nan),
                    "signalled_seen": np.full(rows[0], np.nan),
                }
            state = {**state, "version": _STATE_VERSION, **older}
        check_state_version(state, self.name, _STATE_VERSION)
        capacity = state.get(_CAPACITY_STATE)
        if capacity is not None and not isinstance(capacity, Mapping):
            raise DetectorError(f"{self.name}: state's {_CAPACITY_STATE!r} is not a mapping")
        # checked first, put in place last: a refused capacity state changes nothing
        staged = None if self.capacity is None else self.capacity.restored(capacity)
        before = {key: getattr(self, f"_{key}") for key, _ in self._ARRAYS}
        restore_state(
            self,
            state,
            self.name,
            _STATE_VERSION,
            self._ARRAYS,
            self._config(),
            (),
            lambda key, rows: (rows, self.horizon_steps) if key.startswith("seen_") else (rows,),
            {"peak"},
        )
        try:
            self.forecaster.load_state(inner)
        except DetectorError:
            for key, array in before.items():
                setattr(self, f"_{key}", array)
            raise
        self.capacity = staged
