"""The default ensemble (seasonal, CUSUM, burst, novelty) as one compiled loop over samples.

:class:`~detectors.ensemble.EnsembleDetector` is vectorised over series: one numpy round per
sample of a series, which is fast for many series and slow for one long one (each round costs
the same fixed overhead whatever its width). This module runs the same arithmetic, in the same
order and on the same state arrays, one sample at a time in a loop compiled by numba, so a
series of any length costs a fixed few hundred nanoseconds per sample. Samples are taken series
by series, in timestamp order (batch order on ties); series are independent, so this gives the
scores of round-by-round processing.

The state layout is the detector's own (:class:`~detectors.streaming.SeriesState`), so
checkpoints do not depend on which path computed them. numba's functions come from LLVM and the
C library where numpy has its own (``exp``, ``log1p``, ``expm1``, ``log10``): results agree with
the numpy path to the last bit or two, and exactly with themselves for any split of the samples
into batches.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

import numba
import numpy as np

from detectors.batch import FloatArray, IdArray, SampleBatch
from detectors.calibration import CalibratedDetector
from detectors.changepoint import BurstComponent, CusumComponent
from detectors.novelty import NoveltyComponent
from detectors.seasonal import SeasonalComponent
from detectors.streaming import SeriesState

_DAY = 86_400.0
_REL_FLOOR = 1e-6
_ABS_FLOOR = 1e-9
_MAX_RAW = 1e6
_MAX_INDEX = float(2**52)
_MAX_ABS_TIMESTAMP = 1e11

F64 = np.ndarray[Any, np.dtype[np.float64]]
F32 = np.ndarray[Any, np.dtype[np.float32]]

#: numba's array functions, which its CPU target imports when the first compiled function of a
#: process is called (loaded from the cache or compiled).
_NUMBA_ARRAYS = "numba.np.arraymath"

#: What that import probes for, only to choose how compiled ``np.correlate``/``np.convolve`` take
#: inner products (BLAS or a plain loop); the probe imports all of ``scipy.linalg``.
_BLAS_PROBE = "scipy.linalg.cython_blas"


def _import_numba_arrays() -> None:
    """Import :data:`_NUMBA_ARRAYS` with :data:`_BLAS_PROBE` reported missing, when that is
    safe: scipy.linalg not loaded yet (else the probe is free) and no other thread that could
    import it meanwhile.

    Importing scipy.linalg costs about as much as everything else numba loads for the first call
    (docs/benchmarks.md, ``aiops detect`` start-up); the loop uses neither BLAS nor
    ``np.correlate``/``np.convolve``, so its code and scores do not change. The only lasting effect
    is on numba code compiled later in the same process: its ``np.correlate``/``np.convolve`` use
    numba's own loop instead of BLAS.
    """
    if _NUMBA_ARRAYS in sys.modules:
        return
    if "scipy.linalg" in sys.modules or threading.active_count() > 1:
        importlib.import_module(_NUMBA_ARRAYS)
        return
    sys.modules[_BLAS_PROBE] = None  # type: ignore[assignment]  # the import system's "not found"
    try:
        importlib.import_module(_NUMBA_ARRAYS)
    finally:
        if sys.modules.get(_BLAS_PROBE, sys) is None:
            del sys.modules[_BLAS_PROBE]


@numba.njit(cache=True, inline="always")
def _track_run(
    run: F32, run_sum: F64, sid: int, value: float, flagged: bool, relearn_after: int
) -> tuple[bool, float]:
    if flagged:
        n = run[sid] + np.float32(1.0)
        total = run_sum[sid] + value
    else:
        n = np.float32(0.0)
        total = 0.0
    relearn = n >= relearn_after
    mean = total / max(n, np.float32(1.0)) if relearn else 0.0
    run[sid] = np.float32(0.0) if relearn else n
    run_sum[sid] = 0.0 if relearn else total
    return relearn, mean


@numba.njit(cache=True, inline="always")
def _learn_baseline(
    f32: tuple[F32, ...],
    f64: tuple[F64, ...],
    sid: int,
    x: float,
    z: float,
    sd: float,
    mean: float,
    var: float,
    alpha: float,
    flagged: bool,
    relearn_after: int,
) -> bool:
    """One step of the slow baseline CUSUM and burst share: the EW mean and variance of the
    standardised residual (a tenth of it when flagged), or a relearn after a long flagged run."""
    n = np.float64(f32[0][sid])
    a = max(alpha, 1.0 / (n + 1.0))
    r = z * sd if n >= 2 else x - mean
    if flagged:
        r = r * 0.1
    relearn, run_mean = _track_run(f32[1], f64[2], sid, x, flagged, relearn_after)
    f64[0][sid] = run_mean if relearn else mean + a * r
    f64[1][sid] = (1.0 - a) * (var + a * r * r)
    f32[0][sid] = n + 1.0
    return relearn


@numba.njit(cache=True, inline="always")
def _fit(cal: tuple[F32, ...], sid: int) -> tuple[float, float, float]:
    q = np.float64(cal[0][sid])
    m = max(np.float64(cal[1][sid]), 1e-9)
    m2 = np.float64(cal[2][sid])
    var = max(m2 - m * m, 1e-18)
    xi = min(max(0.5 * (1.0 - m * m / var), 0.0), 0.45)
    sigma = max(m * (1.0 - xi), 1e-9)
    return q, sigma, xi


@numba.njit(cache=True, inline="always")
def _clean_raw(raw: float) -> float:
    if np.isnan(raw):
        return 0.0
    return min(max(raw, 0.0), _MAX_RAW)


@numba.njit(cache=True)
def _p_value(cal: tuple[F32, ...], sid: int, raw: float, tail: float, warmup: float) -> float:
    raw = _clean_raw(raw)
    q, sigma, xi = _fit(cal, sid)
    if raw > q:
        y = max(raw - q, 0.0) / sigma
        p = tail * (np.exp(-np.log1p(xi * y) / max(xi, 1e-12)) if xi > 1e-6 else np.exp(-y))
    else:
        p = 1.0 - (1.0 - tail) * raw / max(q, 1e-12)
    if not cal[3][sid] >= warmup:
        p = 1.0
    p = min(max(p, 0.0), 1.0)
    return 1.0 if np.isnan(p) else p


@numba.njit(cache=True)
def _learn_cal(
    cal: tuple[F32, ...], sid: int, raw: float, flagged: bool, tail: float, rate: float, flag_p: float
) -> None:
    raw = _clean_raw(raw)
    q, sigma, xi = _fit(cal, sid)
    m = np.float64(cal[1][sid])
    m2 = np.float64(cal[2][sid])
    n = np.float64(cal[3][sid])
    ratio = tail / flag_p
    if flagged:
        if xi > 1e-6:
            flag_excess = sigma * np.expm1(xi * np.log(ratio)) / max(xi, 1e-12)
        else:
            flag_excess = sigma * np.log(ratio)
        cap = 2.0 * flag_excess
    else:
        cap = 50.0 * max(m, 1e-9)
    excess = min(raw - q, cap)
    eta = max(1.0 / (n + 2.0), rate)
    eta_over = max(1.0 / (n * tail + 2.0), rate / tail)
    over = raw > q
    step = eta * max(m, 1e-9) * 0.5
    cal[0][sid] = max(q + step * ((1.0 if over else 0.0) - tail) / tail, 0.0)
    if over:
        cal[1][sid] = m + eta_over * (excess - m)
        cal[2][sid] = m2 + eta_over * (excess * excess - m2)
    cal[3][sid] = n + 1.0


#: The arrays of a novelty lattice (``<prefix><column>``), in the order the loop indexes them.
LATTICE_COLUMNS = ("n", "first", "lo", "hi", "width", "total", "widened", "low_bin", "high_bin", "once")


@numba.njit(cache=True)
def _coarsen(
    lat: tuple[F64, ...],
    visits: np.ndarray[Any, np.dtype[np.uint8]],
    sid: int,
    index: int,
    bins: int,
    max_span: int,
) -> None:
    """Visit bin ``index`` (outside the visited range, which it widens past ``max_span``): bins
    double in width until the range fits (see Lattice._coarsen)."""
    low = int(lat[7][sid])
    high = int(lat[8][sid])
    size = high - low + 2
    keys = np.empty(size, dtype=np.int64)
    vals = np.empty(size, dtype=np.int64)
    k = 0
    if index < low:
        keys[0] = index
        vals[0] = 1
        k = 1
    for i in range(low, high + 1):
        c = visits[sid, i % bins]
        if c:
            keys[k] = i
            vals[k] = c
            k += 1
    if index > high:
        keys[k] = index
        vals[k] = 1
        k += 1
    width = lat[4][sid]
    while keys[k - 1] - keys[0] + 1 > max_span:
        j = 0
        for i in range(k):
            key = keys[i] // 2
            if j > 0 and keys[j - 1] == key:
                vals[j - 1] = min(vals[j - 1] + vals[i], 2)
            else:
                keys[j] = key
                vals[j] = vals[i]
                j += 1
        k = j
        width = 2.0 * width
    visits[sid, :] = 0
    once = 0
    for i in range(k):
        visits[sid, keys[i] % bins] = vals[i]
        once += vals[i] == 1
    lat[4][sid] = width
    lat[7][sid] = keys[0]
    lat[8][sid] = keys[k - 1]
    lat[9][sid] = once
    lat[5][sid] += 1.0
    lat[6][sid] += 1.0


@numba.njit(cache=True)
def _lattice_step(
    lat: tuple[F64, ...],
    visits: np.ndarray[Any, np.dtype[np.uint8]],
    sid: int,
    t: float,
    x: float,
    flag_learn: bool,
    bins: int,
    gap_weight: float,
    max_span: int,
    levels: int,
    range_samples: int,
    range_seconds: float,
) -> float:
    """The probability of ``x``'s bin being new; with ``flag_learn``, also learn it."""
    width = lat[4][sid]
    ready = width > 0.0
    position = (x - lat[2][sid]) / (width if ready else 1.0)
    if np.isnan(position):
        position = 0.0
    index = np.floor(min(max(position, -_MAX_INDEX), _MAX_INDEX))
    slot = int(index % bins)
    count = visits[sid, slot]
    total = lat[5][sid]
    beyond = total == 0.0 or index < lat[7][sid] or index > lat[8][sid]
    if not ready:
        p = 1.0
    else:
        if beyond:
            p = (lat[6][sid] + 1.0) / (total + 2.0) / (1.0 - gap_weight)
        elif count == 0:
            p = (lat[9][sid] + 1.0) / (total + 2.0) / gap_weight
        else:
            p = 1.0
        p = min(p, 1.0)
    if not flag_learn:
        return p
    if ready:
        first = total == 0.0
        low = index if first else min(lat[7][sid], index)
        high = index if first else max(lat[8][sid], index)
        if high - low + 1.0 > max_span:
            _coarsen(lat, visits, sid, int(index), bins, max_span)
        else:
            lat[6][sid] += 1.0 if beyond else 0.0
            lat[7][sid] = low
            lat[8][sid] = high
            visits[sid, slot] = min(count, 1) + 1
            lat[5][sid] = total + 1.0
            lat[9][sid] += (1.0 if count == 0 else 0.0) - (1.0 if count == 1 else 0.0)
    else:
        n = lat[0][sid]
        unset = n == 0.0
        first_t = t if unset else lat[1][sid]
        lo = x if unset else min(lat[2][sid], x)
        hi = x if unset else max(lat[3][sid], x)
        n += 1.0
        lat[0][sid] = n
        lat[1][sid] = first_t
        lat[2][sid] = lo
        lat[3][sid] = hi
        if n >= range_samples and t - first_t >= range_seconds:
            span = hi - lo
            magnitude = max(abs(lo), abs(hi))
            if span <= 1e-9 * magnitude:
                span = 0.1 * magnitude if magnitude > 0.0 else 1.0
            lat[4][sid] = span / levels
    return p


@numba.njit(cache=True)
def run(
    series: IdArray,
    timestamps: FloatArray,
    values: FloatArray,
    order: IdArray,
    scores: FloatArray,
    counters: np.ndarray[Any, np.dtype[np.int64]],
    last_ts: F64,
    # seasonal: (level, var, t, run_sum), (n, run), day and day_w (bins wide)
    s_f64: tuple[F64, ...],
    s_f32: tuple[F32, ...],
    s_day: F32,
    s_day_w: F32,
    # cusum: (mean, var, run_sum), (n, run, gp, gn); burst: (mean, var, run_sum, e), (n, run)
    c_f64: tuple[F64, ...],
    c_f32: tuple[F32, ...],
    b_f64: tuple[F64, ...],
    b_f32: tuple[F32, ...],
    # novelty: each lattice's LATTICE_COLUMNS and visits; (mean, seen) of the recent level
    v_lat: tuple[F64, ...],
    v_visits: np.ndarray[Any, np.dtype[np.uint8]],
    l_lat: tuple[F64, ...],
    l_visits: np.ndarray[Any, np.dtype[np.uint8]],
    nov: tuple[F64, ...],
    # calibrators of seasonal, cusum, burst: (q, m, m2, n)
    cal_s: tuple[F32, ...],
    cal_c: tuple[F32, ...],
    cal_b: tuple[F32, ...],
    # episodes: (peak, peak_ts, first_ts)
    episode: tuple[F64, ...],
    fparams: F64,
    iparams: np.ndarray[Any, np.dtype[np.int64]],
    inflation: F64,
) -> None:
    """Score and learn ``order``'s samples one at a time (see the module docstring)."""
    s_bins, s_relearn, c_relearn, b_relearn, n_bins, n_levels, n_range_samples, n_max_span = (
        iparams[0],
        iparams[1],
        iparams[2],
        iparams[3],
        iparams[4],
        iparams[5],
        iparams[6],
        iparams[7],
    )
    level_tau = fparams[0]
    season_alpha = fparams[1]
    scale_alpha = fparams[2]
    s_clip = fparams[3]
    c_alpha = fparams[4]
    c_drift = fparams[5]
    c_zclip = fparams[6]
    b_alpha = fparams[7]
    b_short = fparams[8]
    b_zclip = fparams[9]
    n_range_seconds = fparams[10]
    n_gap_weight = fparams[11]
    n_level_alpha = fparams[12]
    n_level_weight = fparams[13]
    tail = fparams[14]
    rate = fparams[15]
    warmup = fparams[16]
    flag_p = fparams[17]
    refractory = fparams[18]
    damping = fparams[19]
    warm_seconds = fparams[20]
    season_alpha32 = np.float32(season_alpha)
    one32 = np.float32(1.0)
    for j in range(order.shape[0]):
        i = order[j]
        sid = series[i]
        t = timestamps[i]
        x = values[i]
        prev = last_ts[sid]
        if not t > prev:
            if t == prev:
                counters[0] += 1
            else:
                counters[1] += 1
            continue

        # -- seasonal raw
        level = s_f64[0][sid]
        u = (t % _DAY) * (s_bins / _DAY) - 0.5
        fl = np.floor(u)
        dw = u - fl
        d0 = int(fl % s_bins)
        d1 = d0 + 1
        if d1 == s_bins:
            d1 = 0
        off = (1.0 - dw) * s_day[sid, d0] + dw * s_day[sid, d1]
        s_var = s_f64[1][sid]
        s_n = s_f32[0][sid]
        r = x - level - off
        floor = _REL_FLOOR * abs(level + off) + _ABS_FLOOR
        s_sd = np.sqrt(s_var + floor * floor)
        raw_s = abs(r) / s_sd if s_n >= 2 else 0.0

        # -- cusum raw
        c_mean = c_f64[0][sid]
        c_var = c_f64[1][sid]
        c_warm = c_f32[0][sid] >= 2
        floor = _REL_FLOOR * abs(c_mean) + _ABS_FLOOR
        c_sd = np.sqrt(c_var + floor * floor)
        c_z = min(max((x - c_mean) / c_sd, -c_zclip), c_zclip) if c_warm else 0.0
        gp = max(0.0, c_f32[2][sid] + c_z - c_drift)
        gn = max(0.0, c_f32[3][sid] - c_z - c_drift)
        raw_c = max(gp, gn)

        # -- burst raw
        b_mean = b_f64[0][sid]
        b_var = b_f64[1][sid]
        b_warm = b_f32[0][sid] >= 2
        floor = _REL_FLOOR * abs(b_mean) + _ABS_FLOOR
        b_sd = np.sqrt(b_var + floor * floor)
        b_z = min(max((x - b_mean) / b_sd, -b_zclip), b_zclip) if b_warm else 0.0
        e = (1.0 - b_short) * b_f64[3][sid] + b_short * b_z * b_z
        e = e if b_warm else 1.0
        raw_b = np.sqrt(e) if b_warm else 0.0

        # -- novelty raw
        mean = nov[0][sid] if nov[1][sid] > 0.0 else x
        nlevel = mean + n_level_alpha * (x - mean)
        p_values = _lattice_step(
            v_lat,
            v_visits,
            sid,
            t,
            x,
            False,
            n_bins,
            n_gap_weight,
            n_max_span,
            n_levels,
            n_range_samples,
            0.0,
        ) / (1.0 - n_level_weight)
        p_level = (
            _lattice_step(
                l_lat,
                l_visits,
                sid,
                t,
                nlevel,
                False,
                n_bins,
                n_gap_weight,
                n_max_span,
                n_levels,
                n_range_samples,
                0.0,
            )
            / n_level_weight
        )
        p_n = min(p_values, p_level, 1.0)

        # -- calibrate, combine
        p_s = _p_value(cal_s, sid, raw_s, tail, warmup)
        p_c = _p_value(cal_c, sid, raw_c, tail, warmup)
        p_b = _p_value(cal_b, sid, raw_b, tail, warmup)
        p = min(p_s * inflation[0], p_c * inflation[1], p_b * inflation[2], p_n * inflation[3], 1.0)
        flagged = min(p_s, p_c, p_b, p_n) * 4 <= flag_p

        # -- seasonal learn
        n = np.float64(s_n)
        lim = s_clip * s_sd
        rr = min(max(r, -lim), lim) if flagged else r
        dt = t - s_f64[2][sid]
        a_level = -np.expm1(-max(dt, 0.0) / level_tau) if np.isfinite(dt) else 1.0
        a_level = max(a_level, 1.0 / (n + 1.0))
        new_level = level + a_level * rr
        rest = (1.0 - a_level) * rr
        seen = 1.0 if n >= 1 else 0.0
        cnt = s_day_w[sid, d0]
        a = np.float64(max(season_alpha32, one32 / (cnt + one32))) * (1.0 - dw) * seen
        s_day[sid, d0] = s_day[sid, d0] + a * rest
        s_day_w[sid, d0] = cnt + (1.0 - dw) * seen
        cnt = s_day_w[sid, d1]
        a = np.float64(max(season_alpha32, one32 / (cnt + one32))) * dw * seen
        s_day[sid, d1] = s_day[sid, d1] + a * rest
        s_day_w[sid, d1] = cnt + dw * seen
        a_s = max(scale_alpha, 1.0 / (n + 1.0))
        new_var = s_var if flagged else (1.0 - a_s) * (s_var + a_s * rr * rr)
        relearn, run_mean = _track_run(s_f32[1], s_f64[3], sid, x - off, flagged, s_relearn)
        s_f64[0][sid] = run_mean if relearn else new_level
        s_f64[1][sid] = new_var
        s_f64[2][sid] = t
        s_f32[0][sid] = n + 1.0
        _learn_cal(cal_s, sid, raw_s, flagged, tail, rate, flag_p)

        # -- cusum learn
        relearn = _learn_baseline(c_f32, c_f64, sid, x, c_z, c_sd, c_mean, c_var, c_alpha, flagged, c_relearn)
        c_f32[2][sid] = 0.0 if relearn else gp
        c_f32[3][sid] = 0.0 if relearn else gn
        _learn_cal(cal_c, sid, raw_c, flagged, tail, rate, flag_p)

        # -- burst learn
        relearn = _learn_baseline(b_f32, b_f64, sid, x, b_z, b_sd, b_mean, b_var, b_alpha, flagged, b_relearn)
        b_f64[3][sid] = 1.0 if relearn else e
        _learn_cal(cal_b, sid, raw_b, flagged, tail, rate, flag_p)

        # -- novelty learn (every sample)
        _lattice_step(
            v_lat,
            v_visits,
            sid,
            t,
            x,
            True,
            n_bins,
            n_gap_weight,
            n_max_span,
            n_levels,
            n_range_samples,
            n_range_seconds,
        )
        _lattice_step(
            l_lat,
            l_visits,
            sid,
            t,
            nlevel,
            True,
            n_bins,
            n_gap_weight,
            n_max_span,
            n_levels,
            n_range_samples,
            n_range_seconds,
        )
        nov[0][sid] = nlevel
        nov[1][sid] = 1.0

        # -- score, episodes
        out = -np.log10(min(max(p, 1e-300), 1.0)) / 10.0
        if np.isnan(out):
            out = 0.0
        out = min(max(out, 0.0), 1.0)
        if warm_seconds > 0.0:
            start = episode[2][sid]
            if start > _MAX_ABS_TIMESTAMP:
                start = t
            episode[2][sid] = start
            out = out * min(max((t - start) / warm_seconds, 0.0), 1.0)
        if refractory > 0.0:
            peak_ts = episode[1][sid]
            peak = episode[0][sid] if t - peak_ts < refractory else 0.0
            if out > peak:
                episode[0][sid] = out
                episode[1][sid] = t
            else:
                episode[0][sid] = peak
                out = out * damping
        scores[i] = out
        last_ts[sid] = t


class CompiledPlan:
    """The compiled loop bound to one detector's parameters (state arrays are passed per call)."""

    def __init__(
        self,
        fparams: FloatArray,
        iparams: np.ndarray[Any, np.dtype[np.int64]],
        inflation: FloatArray,
    ) -> None:
        self.fparams = fparams
        self.iparams = iparams
        self.inflation = inflation

    def run(
        self,
        state: SeriesState,
        batch: SampleBatch,
        order: IdArray,
        scores: FloatArray,
        counters: np.ndarray[Any, np.dtype[np.int64]],
    ) -> None:
        """Score and learn the samples ``order`` of ``batch`` into ``scores`` (duplicates and
        out-of-order samples counted in ``counters``)."""
        _import_numba_arrays()  # before the first call sets numba up
        a = state.arrays

        def lattice(prefix: str) -> tuple[F64, ...]:
            return tuple(a[f"{prefix}{c}"] for c in LATTICE_COLUMNS)

        def cal(prefix: str) -> tuple[F32, ...]:
            return tuple(a[f"{prefix}cal_{c}"] for c in ("q", "m", "m2", "n"))

        run(
            batch.series,
            batch.timestamps,
            batch.values,
            order,
            scores,
            counters,
            a["last_ts"],
            (a["seasonal_level"], a["seasonal_var"], a["seasonal_t"], a["seasonal_run_sum"]),
            (a["seasonal_n"], a["seasonal_run"]),
            a["seasonal_day"],
            a["seasonal_day_w"],
            (a["cusum_mean"], a["cusum_var"], a["cusum_run_sum"]),
            (a["cusum_n"], a["cusum_run"], a["cusum_gp"], a["cusum_gn"]),
            (a["burst_mean"], a["burst_var"], a["burst_run_sum"], a["burst_e"]),
            (a["burst_n"], a["burst_run"]),
            lattice("novelty_"),
            a["novelty_visits"],
            lattice("novelty_level_"),
            a["novelty_level_visits"],
            (a["novelty_mean"], a["novelty_seen"]),
            cal("seasonal_"),
            cal("cusum_"),
            cal("burst_"),
            (a["episode_peak"], a["episode_peak_ts"], a["episode_first_ts"]),
            self.fparams,
            self.iparams,
            self.inflation,
        )


#: The components, in order, that the compiled loop implements.
COMPILED_COMPONENTS = ("seasonal", "cusum", "burst", "novelty")


def compiled_plan(detector: CalibratedDetector) -> CompiledPlan | None:
    """The compiled loop for ``detector``'s parameters, or None when its components are not
    :data:`COMPILED_COMPONENTS` with their default prefixes (a weekly profile included)."""
    comps = detector.components
    if len(comps) != len(COMPILED_COMPONENTS):
        return None
    s, c, b, nov = comps
    if not (
        isinstance(s, SeasonalComponent)
        and s.prefix == "seasonal_"
        and not s.weekly
        and type(c) is CusumComponent
        and c.prefix == "cusum_"
        and type(b) is BurstComponent
        and b.prefix == "burst_"
        and isinstance(nov, NoveltyComponent)
        and nov.prefix == "novelty_"
    ):
        return None
    cal = detector.calibrators[0]
    if cal is None:
        return None
    lat = nov.values
    e = detector.episodes
    fparams = np.array(
        [
            s.level_tau,
            s.season_alpha,
            s.scale_alpha,
            s.clip,
            c.alpha,
            c.drift,
            c.z_clip,
            b.alpha,
            b.short,
            b.z_clip,
            lat.range_seconds,
            lat.gap_weight,
            nov.level_alpha,
            nov.level_weight,
            cal.tail,
            cal.rate,
            float(cal.warmup),
            detector.flag_p,
            e.refractory,
            e.damping,
            e.warmup,
        ],
        dtype=np.float64,
    )
    iparams = np.array(
        [
            s.bins,
            s.relearn_after,
            c.relearn_after,
            b.relearn_after,
            lat.bins,
            lat.levels,
            lat.range_samples,
            lat.max_span,
        ],
        dtype=np.int64,
    )
    return CompiledPlan(fparams, iparams, np.asarray(detector.inflation, dtype=np.float64))
