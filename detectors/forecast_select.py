"""A forecaster that picks, per series and online, the candidate with the best rolling backtest.

Candidates (:data:`CANDIDATES`): persistence (the newest value), seasonal naive a day and a week
back (the value at the target time one season earlier), Holt-Winters
(:mod:`detectors.holtwinters`), the ridge regression (:mod:`detectors.regression_forecast`), and
their combination weighted by the inverse square of each one's recent error. Every sample is a
forecast origin: each candidate's forecast ``max_horizon`` steps ahead (the *lead*) is kept until
the sample at its target time arrives, then scored by its sMAPE term. A series uses the candidate
whose exponentially weighted sMAPE (half-life ``memory`` seconds of forecasts) is lowest among those
scored at least ``min_scored`` times, persistence until one is; the choice is re-made from the
scores at every forecast, so it follows the data as it arrives and depends only on the past.
A candidate is chosen only once its bound can be calibrated (eight peak errors, below).

The upper bound is conformal and calibrated where it is used: for each candidate the forecaster
keeps the last ``calibration`` errors of the *peak* over the lead (the largest value seen in
``(origin, origin + lead]`` minus the largest point forecast over the lead), each divided by the
candidate's typical peak error at its origin (an exponentially weighted mean of the absolute
peak errors, half-life ``scale_memory`` seconds), so that a quiet night and a busy evening share
one distribution. The margin is the ``ceil((n + 1) level)``-th smallest of the chosen
candidate's ``n`` scaled errors times its typical error now, added to every step's point
forecast, so the largest upper bound over the lead covers the lead's peak with probability
``level``; each single step is covered at least as often. ``level`` starts at ``quantile`` and is
adapted per series as the published bounds are judged (adaptive conformal inference, Gibbs and
Candes 2021: up by ``adapt / lead x quantile`` after a miss, down by ``adapt / lead x
(1 - quantile)`` after a cover), never below ``quantile``. The bounds published at consecutive
origins share all but one step of their lead, so one burst is missed by up to ``lead`` of them
at once: judged at ``1 / lead`` each it counts as one miss, and the adaptation's pace is per
lead, the same at any step. When the errors drift, as demand that grows or changes its daily
shape makes them, the misses beyond the budget raise the level until they are paid back, and a
stretch of easy covers does not lower it below the one the errors alone would give. The bound is
NaN until the chosen candidate has eight scaled errors.

Seasonal naive reads a ring of ``week / max(step, resolution)`` bins per series holding each
bin's mean (exact at a step of ``resolution``, an average of the bin when sampling is faster).
Forecasts may be asked for at most ``max_horizon`` steps. docs/forecasting.md has how the
defaults were chosen and what they score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorError, grow
from detectors.batch import FloatArray, IdArray, SampleBatch
from detectors.forecast import (
    MAX_HORIZON_STEPS,
    ParamReader,
    as_ids,
    check_horizon,
    check_state_version,
    order_batch,
    state_array,
)
from detectors.holtwinters import HoltWintersForecaster
from detectors.regression_forecast import RegressionForecaster

#: The candidates, in the order of the per-candidate arrays and of :meth:`SelectingForecaster.scores`.
CANDIDATES = ("persistence", "seasonal_day", "seasonal_week", "holt_winters", "regression", "combined")
PERSISTENCE, SEASONAL_DAY, SEASONAL_WEEK, HOLT_WINTERS, REGRESSION, COMBINED = range(len(CANDIDATES))
_BASE = COMBINED  # candidates before this index are the ones combined
_STATE_VERSION = 1
_MIN_RESIDUALS = 8
#: The adapted level may run past 1 (where the margin is the largest residual) so that misses
#: still owed are remembered; this caps that debt.
_MAX_LEVEL = 1.5
#: A typical error of 0 (a series flat for hours) still divides: by this much of the forecast.
_SCALE_FLOOR = 1e-9
_COUNTERS = ("invalid", "out_of_order")
_HW_STATE = "holt_winters_state"
_REG_STATE = "regression_state"


def smape_terms(forecast: FloatArray, actual: FloatArray) -> FloatArray:
    """``2|f - a| / (|f| + |a|)`` elementwise (0 for a pair of zeros; NaN where f is NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):  # values near the float limit score NaN
        denom = np.abs(forecast) + np.abs(actual)
        terms = np.where(denom > 0, 2.0 * np.abs(forecast - actual) / np.where(denom > 0, denom, 1.0), 0.0)
    return np.where(np.isnan(forecast), np.nan, terms)


def conformal_margins(residuals: FloatArray, lengths: IdArray, quantile: FloatArray) -> FloatArray:
    """Per row, the ``ceil((n + 1) quantile)``-th smallest of its first ``n = lengths`` residuals.

    Rows hold residual rings (unused slots NaN) and ``quantile`` one level per row; a row with
    fewer than eight residuals gets NaN.
    """
    ordered = np.sort(residuals, axis=1)  # NaN sorts last
    k = np.minimum(np.ceil((lengths + 1) * quantile).astype(np.int64), lengths)
    k = np.maximum(k, 1)
    out = np.take_along_axis(ordered, (k - 1)[:, None], axis=1)[:, 0]
    return np.where(lengths >= _MIN_RESIDUALS, out, np.nan)


class SelectingForecaster:
    """Per series, the candidate forecaster with the lowest recent sMAPE at the lead, online.

    Samples that are not finite are counted in :attr:`invalid`, samples not newer than their
    series' newest in :attr:`out_of_order`; neither is learned.
    """

    name = "select"
    PARAMS: ClassVar[frozenset[str]] = frozenset(
        {
            "step",
            "quantile",
            "season",
            "week",
            "resolution",
            "max_horizon",
            "memory",
            "min_scored",
            "calibration",
            "adapt",
            "scale_memory",
            "holt_winters_params",
            "regression_params",
        }
    )

    def __init__(
        self,
        *,
        step: float = 300.0,
        quantile: float = 0.95,
        season: float = 86400.0,
        week: float = 604800.0,
        resolution: float = 300.0,
        max_horizon: int = 12,
        memory: float = 21600.0,
        min_scored: int = 12,
        calibration: int = 576,
        adapt: float = 0.005,
        scale_memory: float = 3600.0,
        holt_winters_params: Mapping[str, Any] | None = None,
        regression_params: Mapping[str, Any] | None = None,
    ) -> None:
        self.step = step
        self.quantile = quantile
        self.season = season
        self.week = week
        self.resolution = resolution
        self.max_horizon = max_horizon
        self.memory = memory
        self.min_scored = min_scored
        self.calibration = calibration
        self.adapt = adapt
        self.scale_memory = scale_memory
        self._sig_decay = 0.5 ** (step / scale_memory)
        self.bin_width = max(step, resolution)
        self.bins = max(2, math.ceil(week / self.bin_width))
        # an origin's lead forecast waits lead steps for its target; room for samples faster than step
        self.pending = 2 * max_horizon + 2
        # per scored forecast: one per step of the series
        self._decay = 0.5 ** (step / memory)
        hw = {"step": step, "quantile": quantile, "season": season, **(holt_winters_params or {})}
        reg = {
            "step": step,
            "quantile": quantile,
            "season": season,
            "max_horizon": max_horizon,
            **(regression_params or {}),
        }
        self.holt_winters = HoltWintersForecaster.from_params(hw)
        self.regression = RegressionForecaster.from_params(reg)
        self.invalid = 0
        self.out_of_order = 0
        c = len(CANDIDATES)
        self._count = np.zeros(0, np.int64)
        self._last_ts = np.zeros(0, np.float64)
        self._last_v = np.zeros(0, np.float64)
        self._bin_id = np.zeros((0, self.bins), np.int64)
        self._bin_sum = np.zeros((0, self.bins), np.float64)
        self._bin_n = np.zeros((0, self.bins), np.float64)
        self._pend_pos = np.zeros(0, np.int64)
        self._pend_o = np.zeros((0, self.pending), np.float64)
        self._pend_t = np.zeros((0, self.pending), np.float64)
        self._pend_peak = np.zeros((0, self.pending), np.float64)
        self._pend_f = np.zeros((0, self.pending, c), np.float64)
        self._pend_pf = np.zeros((0, self.pending, c), np.float64)
        self._err_sum = np.zeros((0, c), np.float64)
        self._err_w = np.zeros((0, c), np.float64)
        self._scored = np.zeros((0, c), np.int64)
        self._total = np.zeros((0, c), np.float64)
        self._res = np.zeros((0, c, calibration), np.float64)
        self._res_pos = np.zeros((0, c), np.int64)
        self._res_len = np.zeros((0, c), np.int64)
        self._level = np.zeros(0, np.float64)
        self._pend_up = np.zeros((0, self.pending), np.float64)
        self._sig = np.zeros((0, c), np.float64)
        self._pend_sig = np.zeros((0, self.pending, c), np.float64)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SelectingForecaster:
        """Build from a parameter mapping; every error names the parameter."""
        p = ParamReader(cls.name, params, cls.PARAMS)
        step = p.number("step", 300.0, low=0.0, low_open=True)
        season = p.number("season", 86400.0, low=0.0, low_open=True)
        week = p.number("week", 604800.0, low=0.0, low_open=True)
        if season < 2 * step or week < season:
            raise DetectorError(
                f"{cls.name}.season: must be at least two steps ({2 * step:g} s) and at most week "
                f"({week:g} s), got {season:g}"
            )
        resolution = p.number("resolution", 300.0, low=0.0, low_open=True)
        p.slots("week", week, max(step, resolution))  # seasonal naive's bins: a row per series
        nested: dict[str, Mapping[str, Any]] = {}
        for key in ("holt_winters_params", "regression_params"):
            raw = params.get(key, {})
            if not isinstance(raw, Mapping):
                raise DetectorError(f"{cls.name}.{key}: expected a mapping, got {raw!r}")
            nested[key] = raw
        values: dict[str, Any] = {
            "quantile": p.number("quantile", 0.95, low=0.5, high=1.0, high_open=True),
            "resolution": resolution,
            "max_horizon": p.integer("max_horizon", 12, low=1, high=MAX_HORIZON_STEPS),
            "memory": p.number("memory", 21600.0, low=step),
            "min_scored": p.integer("min_scored", 12, low=_MIN_RESIDUALS),
            "calibration": p.integer("calibration", 576, low=_MIN_RESIDUALS * 2, high=100_000),
            "adapt": p.number("adapt", 0.005, low=0.0, high=0.5),
            "scale_memory": p.number("scale_memory", 3600.0, low=step),
        }
        try:  # errors of the candidate models' own parameters
            return cls(
                step=step,
                season=season,
                week=week,
                holt_winters_params=nested["holt_winters_params"],
                regression_params=nested["regression_params"],
                **values,
            )
        except DetectorError as exc:
            raise DetectorError(f"{cls.name}: {exc}") from exc

    # ------------------------------------------------------------------ state arrays

    def _ensure(self, size: int) -> None:
        if size <= self._count.shape[0]:
            return
        self._count = grow(self._count, size, 0)
        rows = self._count.shape[0]
        self._last_ts = grow(self._last_ts, rows, -np.inf)
        self._last_v = grow(self._last_v, rows, np.nan)
        self._pend_pos = grow(self._pend_pos, rows, 0)
        self._level = grow(self._level, rows, self.quantile)
        for key, fill in (
            ("bin_id", -1),
            ("bin_sum", 0.0),
            ("bin_n", 0.0),
            ("pend_o", np.nan),
            ("pend_t", np.nan),
            ("pend_peak", -np.inf),
            ("pend_f", np.nan),
            ("pend_pf", np.nan),
            ("pend_up", np.nan),
            ("sig", np.nan),
            ("pend_sig", np.nan),
            ("err_sum", 0.0),
            ("err_w", 0.0),
            ("scored", 0),
            ("total", 0.0),
            ("res", np.nan),
            ("res_pos", 0),
            ("res_len", 0),
        ):
            old = getattr(self, f"_{key}")
            new = np.full((rows, *old.shape[1:]), fill, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, f"_{key}", new)

    # ------------------------------------------------------------------ candidates

    def _seasonal(self, s: IdArray, targets: FloatArray, lag: float) -> FloatArray:
        """The mean of the bin one ``lag`` before each target, NaN where that bin holds nothing."""
        b = np.floor((targets - lag) / self.bin_width).astype(np.int64)
        slot = np.mod(b, self.bins)
        rows = s[:, None]
        hit = self._bin_id[rows, slot] == b
        n = self._bin_n[rows, slot]
        return np.where(hit & (n > 0), self._bin_sum[rows, slot] / np.where(n > 0, n, 1.0), np.nan)

    def _errors(self, s: IdArray) -> FloatArray:
        """Each candidate's recent mean sMAPE term; inf until it may be chosen.

        A candidate may be chosen once it is scored ``min_scored`` times and has the eight peak
        errors its bound needs (a seasonal candidate reaches its lead step before its first).
        """
        w = self._err_w[s]
        err = self._err_sum[s] / np.where(w > 0, w, 1.0)
        ready = (self._scored[s] >= self.min_scored) & (self._res_len[s] >= _MIN_RESIDUALS)
        return np.where(ready, err, np.inf)

    def _candidates(self, s: IdArray, horizon: int) -> FloatArray:
        """Point forecasts of every candidate for steps ``1..horizon``: ``(len(s), candidates, horizon)``."""
        out = np.full((s.size, len(CANDIDATES), horizon), np.nan)
        k = np.arange(1, horizon + 1, dtype=np.float64)
        targets = self._last_ts[s][:, None] + k * self.step
        out[:, PERSISTENCE] = self._last_v[s][:, None]
        out[:, SEASONAL_DAY] = self._seasonal(s, targets, self.season)
        out[:, SEASONAL_WEEK] = self._seasonal(s, targets, self.week)
        out[:, HOLT_WINTERS] = self.holt_winters.forecast(s, horizon)[0]
        out[:, REGRESSION] = self.regression.forecast(s, horizon)[0]
        err = self._errors(s)[:, :_BASE]
        base = out[:, :_BASE]
        with np.errstate(divide="ignore"):
            weight = np.where(np.isfinite(err), 1.0 / np.maximum(err, 1e-6) ** 2, 0.0)[:, :, None]
        weight = np.where(np.isfinite(base), weight, 0.0)
        total = weight.sum(axis=1)
        combined = np.nansum(np.where(weight > 0, base, 0.0) * weight, axis=1) / np.where(
            total > 0, total, 1.0
        )
        out[:, COMBINED] = np.where(total > 0, combined, np.nan)
        return out

    def chosen(self, series_ids: Sequence[int] | IdArray) -> IdArray:
        """The index in :data:`CANDIDATES` each series uses now (persistence until one is scored enough)."""
        ids = as_ids(series_ids)
        out = np.zeros(ids.size, np.int64)
        known = ids < self._count.shape[0]
        if known.any():
            err = self._errors(ids[known])
            best = np.argmin(err, axis=1)
            ok = np.isfinite(err[np.arange(best.size), best])
            out[known] = np.where(ok, best, PERSISTENCE)
        return out

    def scores(self, series_ids: Sequence[int] | IdArray) -> dict[str, FloatArray]:
        """Per candidate: recent (weighted) and all-time sMAPE in percent at the lead, and forecasts scored.

        Arrays of shape ``(len(series_ids), candidates)``, columns in :data:`CANDIDATES` order.
        """
        ids = as_ids(series_ids)
        c = len(CANDIDATES)
        recent = np.full((ids.size, c), np.nan)
        overall = np.full((ids.size, c), np.nan)
        scored = np.zeros((ids.size, c))
        known = ids < self._count.shape[0]
        s = ids[known]
        w = self._err_w[s]
        n = self._scored[s]
        recent[known] = np.where(w > 0, 100.0 * self._err_sum[s] / np.where(w > 0, w, 1.0), np.nan)
        overall[known] = np.where(n > 0, 100.0 * self._total[s] / np.maximum(n, 1), np.nan)
        scored[known] = n
        return {"recent_smape": recent, "smape": overall, "scored": scored}

    # ------------------------------------------------------------------ learning

    def update(self, batch: SampleBatch) -> None:
        """Learn from ``batch``: each series' samples in time order, series in parallel."""
        if len(batch) == 0:
            return
        self._ensure(max(int(batch.series.max()) + 1, 0))
        samples = order_batch(batch, self._last_ts)
        self.invalid += samples.invalid
        self.out_of_order += samples.out_of_order
        if len(samples) == 0:
            return
        # one vectorized step per rank: the r-th sample of every series in the batch at once,
        # so that each sample is a forecast origin of every candidate
        for r in range(int(samples.rank.max()) + 1):
            sel = samples.rank == r
            part = SampleBatch(samples.series[sel], samples.timestamps[sel], samples.values[sel])
            self.holt_winters.update(part)
            self.regression.update(part)
            self._step(part.series, part.timestamps, part.values)

    def _step(self, s: IdArray, t: FloatArray, v: FloatArray) -> None:
        half = self.step / 2.0
        # the peak seen since each pending origin, this sample included
        o, due = self._pend_o[s], self._pend_t[s]
        inside = (o < t[:, None]) & (t[:, None] <= due + half)
        self._pend_peak[s] = np.where(inside, np.maximum(self._pend_peak[s], v[:, None]), self._pend_peak[s])
        # resolve the pending forecast whose target is this sample; drop those it has passed
        match = np.abs(due - t[:, None]) <= half
        has = match.any(axis=1)
        if has.any():
            rows = np.flatnonzero(has)
            sr = s[rows]
            col = np.argmax(match[rows], axis=1)
            f = self._pend_f[sr, col]
            terms = smape_terms(f, v[rows][:, None])
            scored = np.isfinite(terms)
            decay = np.where(scored, self._decay, 1.0)
            self._err_sum[sr] = decay * self._err_sum[sr] + np.where(scored, terms, 0.0)
            self._err_w[sr] = decay * self._err_w[sr] + scored
            self._scored[sr] += scored
            self._total[sr] += np.where(scored, terms, 0.0)
            # the peak's error, in units of the candidate's typical peak error at the origin
            with np.errstate(over="ignore", invalid="ignore"):  # values near the float limit: inf
                raw = self._pend_peak[sr, col][:, None] - self._pend_pf[sr, col]
                scale = self._pend_sig[sr, col]
                resid = raw / np.maximum(scale, _SCALE_FLOOR * (1.0 + np.abs(self._pend_pf[sr, col])))
                sig = self._sig[sr]
                sig = np.where(
                    np.isnan(sig), np.abs(raw), self._sig_decay * sig + (1.0 - self._sig_decay) * np.abs(raw)
                )
            self._sig[sr] = np.where(np.isfinite(raw), sig, self._sig[sr])
            rr, cc = np.nonzero(np.isfinite(resid))
            target = sr[rr]
            pos = self._res_pos[target, cc]
            self._res[target, cc, pos] = resid[rr, cc]
            self._res_pos[target, cc] = (pos + 1) % self.calibration
            self._res_len[target, cc] = np.minimum(self._res_len[target, cc] + 1, self.calibration)
            # adaptive conformal (Gibbs and Candes 2021): the level moves by `adapt` / lead x
            # (miss - 1 + q), so the published bound's long-run coverage of the peak holds when
            # errors drift; a lead's worth of consecutive bounds share one peak and count as one
            up = self._pend_up[sr, col]
            judged = np.isfinite(up)
            miss = self._pend_peak[sr, col] > up
            level = self._level[sr] + self.adapt / self.max_horizon * (miss - (1.0 - self.quantile))
            self._level[sr] = np.where(judged, np.clip(level, self.quantile, _MAX_LEVEL), self._level[sr])
        gone = match | (due < t[:, None] - half)
        self._pend_t[s] = np.where(gone, np.nan, due)
        # the seasonal bins, the newest value
        b = np.floor(t / self.bin_width).astype(np.int64)
        slot = np.mod(b, self.bins)
        stale = self._bin_id[s, slot] != b
        self._bin_sum[s, slot] = np.where(stale, 0.0, self._bin_sum[s, slot]) + v
        self._bin_n[s, slot] = np.where(stale, 0.0, self._bin_n[s, slot]) + 1.0
        self._bin_id[s, slot] = b
        self._last_ts[s] = t
        self._last_v[s] = v
        self._count[s] += 1
        # this sample as an origin: every candidate's forecast over the lead, kept until its target
        fc = self._candidates(s, self.max_horizon)
        peak = np.max(fc, axis=2)
        pos = self._pend_pos[s]
        self._pend_o[s, pos] = t
        self._pend_t[s, pos] = t + self.max_horizon * self.step
        self._pend_peak[s, pos] = -np.inf
        self._pend_f[s, pos] = fc[:, :, -1]
        self._pend_pf[s, pos] = peak
        self._pend_sig[s, pos] = self._sig[s]
        pick = self.chosen(s)
        rows = np.arange(s.size)
        published = np.where(np.isfinite(peak[rows, pick]), peak[rows, pick], peak[:, PERSISTENCE])
        self._pend_up[s, pos] = published + self._margins(s, pick)
        self._pend_pos[s] = (pos + 1) % self.pending

    # ------------------------------------------------------------------ forecasting

    def forecast(self, series_ids: Sequence[int] | IdArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        """The chosen candidate's forecast for steps ``1..horizon`` and its conformal upper bound."""
        check_horizon(self.name, horizon, self.max_horizon)
        ids = as_ids(series_ids)
        mean = np.full((ids.size, horizon), np.nan)
        upper = np.full((ids.size, horizon), np.nan)
        known = ids < self._count.shape[0]
        known[known] = self._count[ids[known]] > 0
        if not known.any():
            return mean, upper
        s = ids[known]
        rows = np.arange(s.size)
        pick = self.chosen(s)
        fc = self._candidates(s, horizon)
        m = fc[rows, pick]
        m = np.where(np.isfinite(m), m, fc[:, PERSISTENCE])
        margin = self._margins(s, pick)
        with np.errstate(invalid="ignore", over="ignore"):
            u = m + margin[:, None]
            u = np.where(np.isnan(u), np.nan, np.fmax(u, m))
        mean[known] = m
        upper[known] = u
        return mean, upper

    def _margins(self, s: IdArray, pick: IdArray) -> FloatArray:
        """The conformal margin of candidate ``pick`` of each series ``s``, at the series' level."""
        quantile = conformal_margins(self._res[s, pick], self._res_len[s, pick], self._level[s])
        with np.errstate(over="ignore", invalid="ignore"):  # values near the float limit: inf
            return quantile * self._sig[s, pick]

    # ------------------------------------------------------------------ checkpoints

    _ARRAYS: ClassVar[tuple[str, ...]] = (
        "count",
        "last_ts",
        "last_v",
        "bin_id",
        "bin_sum",
        "bin_n",
        "pend_pos",
        "pend_o",
        "pend_t",
        "pend_peak",
        "pend_f",
        "pend_pf",
        "err_sum",
        "err_w",
        "scored",
        "total",
        "res",
        "res_pos",
        "res_len",
        "level",
        "pend_up",
        "sig",
        "pend_sig",
    )
    _INTS: ClassVar[frozenset[str]] = frozenset(
        {"count", "bin_id", "pend_pos", "scored", "res_pos", "res_len"}
    )

    def _config(self) -> dict[str, Any]:
        return {
            "candidates": list(CANDIDATES),
            "bins": self.bins,
            "bin_width": self.bin_width,
            "pending": self.pending,
            "calibration": self.calibration,
            "max_horizon": self.max_horizon,
        }

    def state_dict(self) -> dict[str, Any]:
        """Per-series bins, pending forecasts, candidate scores and residuals, and both models' state."""
        state: dict[str, Any] = {"kind": self.name, "version": _STATE_VERSION, **self._config()}
        for key in _COUNTERS:
            state[key] = getattr(self, key)
        for key in self._ARRAYS:
            state[key] = getattr(self, f"_{key}").copy()
        state[_HW_STATE] = self.holt_winters.state_dict()
        state[_REG_STATE] = self.regression.state_dict()
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` exported for the same configuration; all of it or none."""
        check_state_version(state, self.name, _STATE_VERSION)
        for key, value in self._config().items():
            if state.get(key) != value:
                raise DetectorError(f"{self.name}: state has {key} {state.get(key)!r}, configured {value!r}")
        empty = {key: getattr(self, f"_{key}") for key in self._ARRAYS}
        loaded: dict[str, npt.NDArray[Any]] = {}
        rows = None
        for key in self._ARRAYS:
            array = state_array(state, key, self.name, empty[key].ndim)
            rows = array.shape[0] if rows is None else rows
            want = (rows, *empty[key].shape[1:])
            if array.shape != want:
                raise DetectorError(f"{self.name}: state {key!r} has shape {array.shape}, expected {want}")
            loaded[key] = np.array(array, dtype=np.int64 if key in self._INTS else np.float64)
        for key in (_HW_STATE, _REG_STATE):
            if not isinstance(state.get(key), Mapping):
                raise DetectorError(f"{self.name}: state lacks {key!r}")
        hw_before, reg_before = self.holt_winters.state_dict(), self.regression.state_dict()
        try:
            self.holt_winters.load_state(state[_HW_STATE])
            self.regression.load_state(state[_REG_STATE])
        except DetectorError:
            self.holt_winters.load_state(hw_before)
            self.regression.load_state(reg_before)
            raise
        for key, array in loaded.items():
            setattr(self, f"_{key}", array)
        for key in _COUNTERS:
            setattr(self, key, int(state.get(key, 0)))
