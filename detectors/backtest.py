"""Rolling-origin backtests of forecasters: MAPE, sMAPE and interval coverage at one horizon.

The backtest is causal: the series is fed to the forecaster one sample at a time, and after
each sample (the *origin*) the forecast ``horizon`` steps ahead is recorded before the
forecaster sees anything later. A forecast is scored against the sample nearest to its target
time (``origin + horizon * step``) if one lies within half a step; irregular series thus score
only where the data really holds a value at that lead time. Beside it, the seasonal-naive
forecast (the value at the same time one season earlier, within half a step, known at the
origin) and persistence (the value at the origin) are scored on exactly the same pairs.

The upper bound is also judged the way scaling uses it: the largest upper bound over steps
``1..horizon`` against the *peak* of the samples at those steps (origins where every step has a
sample), the coverage of the lead's peak.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorError
from detectors.batch import FloatArray, IdArray, SampleBatch
from detectors.forecast import Forecaster


def smape(forecast: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Symmetric MAPE in percent: mean of ``2|f - a| / (|f| + |a|)``, a pair of zeros scoring 0."""
    f = np.asarray(forecast, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if f.size == 0:
        return math.nan
    denom = np.abs(f) + np.abs(a)
    terms = np.where(denom > 0, 2.0 * np.abs(f - a) / np.where(denom > 0, denom, 1.0), 0.0)
    return float(100.0 * terms.mean())


def mape(forecast: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """MAPE in percent: mean of ``|f - a| / |a|`` over the pairs whose actual is not zero."""
    f = np.asarray(forecast, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    keep = a != 0
    if not keep.any():
        return math.nan
    return float(100.0 * np.mean(np.abs(f[keep] - a[keep]) / np.abs(a[keep])))


def coverage(upper: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """The fraction of actuals at or below their upper bound."""
    u = np.asarray(upper, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if a.size == 0:
        return math.nan
    return float(np.mean(a <= u))


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Accuracy of one forecaster on one series at one horizon, and of seasonal naive beside it."""

    horizon: int
    step: float
    pairs: int
    mape: float
    smape: float
    coverage: float
    quantile: float
    naive_mape: float
    naive_smape: float
    zero_actuals: int
    persistence_smape: float = math.nan
    peak_coverage: float = math.nan
    peak_pairs: int = 0

    @property
    def baseline_smape(self) -> float:
        """The better of persistence's and seasonal naive's sMAPE."""
        return float(np.nanmin([self.persistence_smape, self.naive_smape]))

    @property
    def smape_ratio(self) -> float:
        """Our sMAPE over seasonal naive's (below 1 is better than seasonal naive)."""
        return self.smape / self.naive_smape if self.naive_smape > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BacktestRun:
    """The per-origin record of a backtest, for callers that pool several series."""

    result: BacktestResult
    forecast: FloatArray
    upper: FloatArray
    naive: FloatArray
    actual: FloatArray
    persistence: FloatArray | None = None
    upper_peak: FloatArray | None = None
    actual_peak: FloatArray | None = None


def _nearest(sorted_ts: FloatArray, targets: FloatArray) -> IdArray:
    """Index of the sample in ``sorted_ts`` nearest to each target."""
    n = sorted_ts.size
    right = np.clip(np.searchsorted(sorted_ts, targets), 1, n - 1)
    left = right - 1
    closer_left = np.abs(sorted_ts[left] - targets) <= np.abs(sorted_ts[right] - targets)
    return np.where(closer_left, left, right).astype(np.int64)


def backtest(
    forecaster: Forecaster,
    timestamps: npt.ArrayLike,
    values: npt.ArrayLike,
    horizon: int,
    *,
    season: float = 86400.0,
    warmup: float | None = None,
    series_id: int = 0,
) -> BacktestRun:
    """Feed one series to ``forecaster`` sample by sample and score its ``horizon``-step forecasts.

    Origins within ``warmup`` seconds (default: one ``season``) of the first sample are not
    scored, so seasonal naive has a value a season back and the forecaster a season of
    history. The forecaster ends up having learned the whole series, as if streamed.
    """
    if horizon < 1:
        raise DetectorError(f"backtest: horizon must be at least 1, got {horizon}")
    ts = np.asarray(timestamps, dtype=np.float64)
    vs = np.asarray(values, dtype=np.float64)
    if ts.shape != vs.shape or ts.ndim != 1:
        raise DetectorError("backtest: timestamps and values must be one-dimensional and of equal length")
    step = forecaster.step
    warm = season if warmup is None else warmup

    # the origins: samples the forecaster will learn (finite and newer than all before)
    finite = np.isfinite(ts) & np.isfinite(vs)
    running_max = np.maximum.accumulate(np.where(finite, ts, -np.inf))
    newer = np.ones(ts.size, dtype=bool)
    newer[1:] = ts[1:] > running_max[:-1]
    origin = finite & newer
    n_origins = int(origin.sum())
    fc = np.full(n_origins, np.nan)
    up = np.full(n_origins, np.nan)
    up_peak = np.full(n_origins, np.nan)
    j = 0
    ids = np.array([series_id], dtype=np.int64)
    for i in range(ts.size):
        forecaster.update(SampleBatch(ids, ts[i : i + 1], vs[i : i + 1]))
        if origin[i]:
            mean, upper = forecaster.forecast(ids, horizon)
            fc[j], up[j] = mean[0, -1], upper[0, -1]
            up_peak[j] = np.max(upper[0])
            j += 1

    o_ts, o_vs = ts[origin], vs[origin]
    actual = np.full(n_origins, np.nan)
    naive = np.full(n_origins, np.nan)
    peak = np.full(n_origins, np.nan)
    if n_origins >= 2:
        peak = np.full(n_origins, -np.inf)
        for ahead in range(1, horizon + 1):
            target = o_ts + ahead * step
            k = _nearest(o_ts, target)
            hit = (np.abs(o_ts[k] - target) <= step / 2) & (k > np.arange(n_origins))
            actual = np.where(hit, o_vs[k], np.nan)
            peak = np.maximum(peak, actual)  # NaN where any step lacks a sample
        back = target - season
        m = _nearest(o_ts, back)
        known = (np.abs(o_ts[m] - back) <= step / 2) & (o_ts[m] <= o_ts)
        naive = np.where(known, o_vs[m], np.nan)
    scored = (
        np.isfinite(actual)
        & np.isfinite(naive)
        & np.isfinite(fc)
        & (o_ts - (o_ts[0] if n_origins else 0) >= warm)
    )
    a, f, u, nv = actual[scored], fc[scored], up[scored], naive[scored]
    persist = o_vs[scored]
    with_peak = np.isfinite(peak[scored])
    peak_up, peak_a = up_peak[scored][with_peak], peak[scored][with_peak]
    result = BacktestResult(
        horizon=horizon,
        step=step,
        pairs=int(scored.sum()),
        mape=mape(f, a),
        smape=smape(f, a),
        coverage=coverage(u, a),
        quantile=forecaster.quantile,
        naive_mape=mape(nv, a),
        naive_smape=smape(nv, a),
        zero_actuals=int(np.count_nonzero(a == 0)),
        persistence_smape=smape(persist, a),
        peak_coverage=coverage(peak_up, peak_a),
        peak_pairs=int(peak_a.size),
    )
    return BacktestRun(result, f, u, nv, a, persist, peak_up, peak_a)


def resample_sum(
    timestamps: npt.ArrayLike, values: npt.ArrayLike, width: float
) -> tuple[FloatArray, FloatArray]:
    """Sums over consecutive ``width``-second bins aligned to the epoch, stamped at each bin's start.

    Bins between the first and the last sample that hold no sample sum to 0 (a count series
    reports nothing when nothing happened); rows that are not finite are left out.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    vs = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(ts) & np.isfinite(vs)
    if not ok.any():
        return np.zeros(0), np.zeros(0)
    b = np.floor(ts[ok] / width).astype(np.int64)
    first = int(b.min())
    sums = np.zeros(int(b.max()) - first + 1)
    np.add.at(sums, b - first, vs[ok])
    starts = (first + np.arange(sums.size, dtype=np.float64)) * width
    return starts, sums


def horizon_steps(step: float, lead_time: float) -> int:
    """The number of ``step``-second steps that covers ``lead_time`` seconds (at least one)."""
    if step <= 0 or lead_time <= 0:
        raise DetectorError(f"horizon_steps: step and lead time must be positive, got {step}, {lead_time}")
    return max(1, math.ceil(lead_time / step - 1e-9))
