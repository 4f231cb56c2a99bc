"""Score calibration: any raw score turned into a tail probability per series.

Raw scores of different detectors and series are not comparable: a z of 4 is rare on a quiet
series and common on a bursty one. :class:`TailCalibrator` learns, per series, the upper tail of
the raw scores it has seen (peaks over threshold, as in SPOT: a running ``1 - tail`` quantile
``q`` and a generalised Pareto distribution fitted to the excesses over it, shape ``xi`` and
scale ``sigma`` from their running moments, so a series whose normal includes bursts gets a
heavy tail rather than endless alarms), so a raw score ``r`` becomes

``p = tail * (1 + xi (r - q) / sigma) ** (-1 / xi)`` for ``r > q`` (``exp(-(r - q) / sigma)``
when ``xi = 0``), and ``p`` falling linearly from 1 to ``tail`` on ``[0, q]``;

the probability that a sample of that series as it usually behaves scores at least ``r``. The
detectors report ``-log10(p) / 10`` clipped to ``[0, 1]``, so one threshold means the same tail
probability on every series (0.5 is ``p = 1e-5``, see :data:`~detectors.streaming.LOG10_P_AT_ONE`).

:class:`Component` is the raw-score half of a learned detector (a residual and its scale, a
CUSUM statistic, ...). :class:`CalibratedDetector` runs one or more components, calibrates each
(a component whose raw score is a probability already, :attr:`Component.self_calibrated`, is
used as it is), combines their tail probabilities (a Bonferroni bound: the smallest one times
the number of components, or with weights ``min_i p_i * sum(w) / w_i``, so adding components
does not add false alarms) and tells every component whether the sample was flagged, so no
component learns from what the detector flags.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detectors.base import DetectorError
from detectors.batch import FloatArray, IdArray
from detectors.episodes import EPISODE_DEFAULTS, EpisodeStage, check_episodes
from detectors.streaming import (
    ArraySpec,
    SeriesState,
    StreamingDetector,
    check_float,
    check_int,
    p_to_score,
    score_to_p,
)

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


#: A signal's ``band`` is the expected value plus or minus this many of its spreads.
BAND_SPREADS = 3.0

#: Raw scores are capped here: beyond it every score is equally certain, and the moments stay
#: representable in float32.
MAX_RAW = 1e6


class TailCalibrator:
    """Per-series peaks-over-threshold fit of a raw score's upper tail (arrays in a SeriesState).

    A running ``1 - tail`` quantile ``q`` (Robbins-Monro) and, above it, a generalised Pareto
    tail fitted by the method of moments to the running mean and second moment of the excesses
    ``r - q`` (shape clipped to ``[0, 0.45]``: never thinner than exponential, never so heavy
    that the variance is undefined). ``prior_q`` and ``prior_e`` are the quantile and mean
    excess assumed before any data (their weight fades as samples arrive); ``rate`` is the
    slowest learning rate. The excess of a flagged sample is capped at twice the flagging
    level's before it is learned, so one outage does not fatten the tail it is judged by, while
    a series whose bursts are its normal learns a heavier tail.
    """

    def __init__(
        self, prefix: str, *, tail: float, rate: float, prior_q: float, prior_e: float, warmup: int
    ) -> None:
        self.prefix = prefix
        self.tail = tail
        self.rate = rate
        self.prior_q = prior_q
        self.prior_e = prior_e
        self.warmup = warmup
        self._state: SeriesState | None = None

    def array_specs(self) -> list[ArraySpec]:
        """Quantile, first and second moments of the excess, and sample count per series."""
        p = self.prefix
        return [
            ArraySpec(f"{p}cal_q", np.float32, self.prior_q),
            ArraySpec(f"{p}cal_m", np.float32, self.prior_e),
            ArraySpec(f"{p}cal_m2", np.float32, 2.0 * self.prior_e * self.prior_e),
            ArraySpec(f"{p}cal_n", np.float32, 0.0),
        ]

    def bind(self, state: SeriesState) -> None:
        """Use the arrays of ``state``."""
        self._state = state

    @property
    def _s(self) -> SeriesState:
        if self._state is None:
            msg = "calibrator used before bind()"
            raise RuntimeError(msg)
        return self._state

    def _fit(self, ids: IdArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        s = self._s
        q = s[f"{self.prefix}cal_q"][ids].astype(np.float64)
        m = np.maximum(s[f"{self.prefix}cal_m"][ids].astype(np.float64), 1e-9)
        m2 = s[f"{self.prefix}cal_m2"][ids].astype(np.float64)
        var = np.maximum(m2 - m * m, 1e-18)
        xi = np.clip(0.5 * (1.0 - m * m / var), 0.0, 0.45)
        sigma = np.maximum(m * (1.0 - xi), 1e-9)
        return q, sigma, xi

    def p_value(self, ids: IdArray, raw: FloatArray) -> FloatArray:
        """Tail probability of ``raw`` per sample; 1 while a series is warming up."""
        raw = np.clip(np.nan_to_num(raw, nan=0.0), 0.0, MAX_RAW)
        q, sigma, xi = self._fit(ids)
        n = self._s[f"{self.prefix}cal_n"][ids]
        y = np.maximum(raw - q, 0.0) / sigma
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            heavy = np.exp(-np.log1p(xi * y) / np.maximum(xi, 1e-12))
            above = self.tail * np.where(xi > 1e-6, heavy, np.exp(-y))
            below = 1.0 - (1.0 - self.tail) * raw / np.maximum(q, 1e-12)
        p = np.where(raw > q, above, below)
        p = np.where(n >= self.warmup, p, 1.0)
        out: FloatArray = np.nan_to_num(np.clip(p, 0.0, 1.0), nan=1.0)
        return out

    def learn(self, ids: IdArray, raw: FloatArray, flagged: BoolArray, flag_p: float) -> None:
        """Update the tail fit of each series with its raw score (capped when flagged)."""
        raw = np.clip(np.nan_to_num(raw, nan=0.0), 0.0, MAX_RAW)
        s = self._s
        p = self.prefix
        q, sigma, xi = self._fit(ids)
        m = s[f"{p}cal_m"][ids].astype(np.float64)
        m2 = s[f"{p}cal_m2"][ids].astype(np.float64)
        n = s[f"{p}cal_n"][ids].astype(np.float64)
        ratio = self.tail / flag_p
        with np.errstate(over="ignore", invalid="ignore"):
            flag_excess = np.where(
                xi > 1e-6, sigma * np.expm1(xi * np.log(ratio)) / np.maximum(xi, 1e-12), sigma * np.log(ratio)
            )
        cap = np.where(flagged, 2.0 * flag_excess, 50.0 * np.maximum(m, 1e-9))
        excess = np.minimum(raw - q, cap)
        eta = np.maximum(1.0 / (n + 2.0), self.rate)
        # The moments learn from exceedances only: the same memory in samples means a rate
        # 1 / tail times larger per exceedance.
        eta_over = np.maximum(1.0 / (n * self.tail + 2.0), self.rate / self.tail)
        over = raw > q
        # Robbins-Monro step towards the 1 - tail quantile, in units of the tail's scale.
        step = eta * np.maximum(m, 1e-9) * 0.5
        s[f"{p}cal_q"][ids] = np.maximum(q + step * (over - self.tail) / self.tail, 0.0)
        s[f"{p}cal_m"][ids] = np.where(over, m + eta_over * (excess - m), m)
        s[f"{p}cal_m2"][ids] = np.where(over, m2 + eta_over * (excess * excess - m2), m2)
        s[f"{p}cal_n"][ids] = n + 1.0


class Component(ABC):
    """The raw-score half of a detector: per-series arrays, a raw score, learning.

    :meth:`raw` may keep what it computed for the round on ``self`` for :meth:`learn`, which is
    always called next with the same samples and whether the detector flagged each one.
    """

    #: Names this component's arrays and parameters inside a detector.
    prefix: str = ""
    #: True when :meth:`raw` is already a tail probability (the component has its own
    #: probability model): it is combined as it is, without a :class:`TailCalibrator`.
    self_calibrated: bool = False
    #: Prior 1 - tail quantile and mean excess of the raw score, for the calibrator.
    prior_q: float = 2.2
    prior_e: float = 0.5
    _state: SeriesState

    def bind(self, state: SeriesState) -> None:
        """Use the arrays of ``state``."""
        self._state = state

    @property
    def s(self) -> SeriesState:
        """The bound state."""
        return self._state

    @abstractmethod
    def array_specs(self) -> list[ArraySpec]:
        """Per-series arrays (names start with :attr:`prefix`)."""

    @abstractmethod
    def raw(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """A raw anomaly score >= 0 per sample (0 while the series warms up)."""

    @abstractmethod
    def learn(self, ids: IdArray, ts: FloatArray, values: FloatArray, flagged: BoolArray) -> None:
        """Learn from the round just scored; flagged samples must not move the baseline freely."""

    def details(self, series_id: int) -> dict[str, Any]:
        """Facts about ``series_id`` for a signal (the baseline it was judged against)."""
        del series_id
        return {}

    def expectation(self, series_id: int) -> tuple[float, float] | None:
        """The value this component expects of ``series_id`` and its spread, or None if it has no
        single expected value (the signal's ``expected`` and ``band``)."""
        del series_id
        return None


def track_runs(
    state: SeriesState, prefix: str, ids: IdArray, values: FloatArray, flagged: BoolArray, relearn_after: int
) -> tuple[BoolArray, FloatArray]:
    """Count each series' consecutive flagged samples; say where a run became a new normal.

    Returns a mask of the samples whose series has now been flagged ``relearn_after`` times in a
    row (the run is then forgotten) and the mean value of that run: a persistent level shift is
    re-learned instead of alarming forever, while a short outage never moves the baseline.
    """
    run, run_sum = state[f"{prefix}run"], state[f"{prefix}run_sum"]
    n = np.where(flagged, run[ids] + 1.0, 0.0)
    total = np.where(flagged, run_sum[ids] + values, 0.0)
    relearn = n >= relearn_after
    mean = np.where(relearn, total / np.maximum(n, 1.0), 0.0)
    run[ids] = np.where(relearn, 0.0, n)
    run_sum[ids] = np.where(relearn, 0.0, total)
    return relearn, mean


def run_specs(prefix: str) -> list[ArraySpec]:
    """The arrays :func:`track_runs` keeps."""
    return [ArraySpec(f"{prefix}run", np.float32, 0.0), ArraySpec(f"{prefix}run_sum", np.float64, 0.0)]


#: Calibration parameters every calibrated detector accepts, with their defaults.
CALIBRATION_DEFAULTS: dict[str, Any] = {
    "tail": 0.03,
    "calibration_rate": 0.002,
    "warmup": 30,
    "flag_score": 0.3,
    **EPISODE_DEFAULTS,
}


def check_calibration(where: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validated calibration parameters from ``params`` (defaults filled in)."""
    return {
        "tail": check_float(where, "tail", params["tail"], low=0.0, high=0.5, low_open=True),
        "calibration_rate": check_float(
            where, "calibration_rate", params["calibration_rate"], low=0.0, high=1.0, low_open=True
        ),
        "warmup": check_int(where, "warmup", params["warmup"], low=0),
        "flag_score": check_float(
            where, "flag_score", params["flag_score"], low=0.0, high=1.0, low_open=True
        ),
        **check_episodes(where, params),
    }


def episode_stage(calibration: Mapping[str, Any]) -> EpisodeStage:
    """The :class:`~detectors.episodes.EpisodeStage` of validated calibration parameters."""
    return EpisodeStage(
        refractory_hours=float(calibration["refractory_hours"]),
        damping=float(calibration["damping"]),
        warmup_hours=float(calibration["warmup_hours"]),
    )


class CalibratedDetector(StreamingDetector):
    """Components whose raw scores are calibrated per series and combined by the smallest p.

    A sample is *flagged* when its score reaches ``flag_score``; flagged samples are learned by
    every component and calibrator only in clipped form (and, after a sustained run, as a new
    normal: see the components).
    """

    #: Scores are ``-log10(p) / 10`` of a tail probability: the bank puts ``p_value`` on signals.
    scores_are_tail_p = True

    def __init__(
        self,
        components: Sequence[Component],
        params: Mapping[str, Any],
        name: str | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.components = list(components)
        if not self.components:
            msg = "a calibrated detector needs at least one component"
            raise DetectorError(msg)
        w = np.ones(len(self.components)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(self.components),) or not np.all(np.isfinite(w)) or np.any(w <= 0.0):
            msg = f"weights: expected one positive weight per component, got {list(weights or [])}"
            raise DetectorError(msg)
        # Weighted Bonferroni: component i is tested at level alpha * w_i / sum(w).
        self._inflation: FloatArray = w.sum() / w
        self._params = dict(params)
        calibration = check_calibration(name or self.kind, params)
        self.calibrators: list[TailCalibrator | None] = [
            None
            if c.self_calibrated
            else TailCalibrator(
                c.prefix,
                tail=float(calibration["tail"]),
                rate=float(calibration["calibration_rate"]),
                prior_q=c.prior_q,
                prior_e=c.prior_e,
                warmup=int(calibration["warmup"]),
            )
            for c in self.components
        ]
        self.flag_p = score_to_p(float(calibration["flag_score"]))
        self.episodes = episode_stage(calibration)
        super().__init__(name)
        for c, cal in zip(self.components, self.calibrators, strict=True):
            c.bind(self.state)
            if cal is not None:
                cal.bind(self.state)
        self.episodes.bind(self.state)
        self._last_p: list[FloatArray] = []

    @property
    def inflation(self) -> FloatArray:
        """Each component's Bonferroni factor ``sum(w) / w_i``: its p is multiplied by it."""
        return self._inflation

    def array_specs(self) -> list[ArraySpec]:
        """The arrays of every component and calibrator."""
        specs: list[ArraySpec] = []
        for c, cal in zip(self.components, self.calibrators, strict=True):
            specs += c.array_specs()
            if cal is not None:
                specs += cal.array_specs()
        return specs + self.episodes.array_specs()

    def params(self) -> dict[str, Any]:
        """The parameters the detector was built with, defaults filled in."""
        return dict(self._params)

    def step(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """Raw scores, calibrated, combined; then every part learns with the flag."""
        raws = [c.raw(ids, ts, values) for c in self.components]
        ps = [
            r if cal is None else cal.p_value(ids, r) for cal, r in zip(self.calibrators, raws, strict=True)
        ]
        if len(ps) == 1:
            p = flag_p = ps[0]
        else:
            p = np.minimum(np.minimum.reduce([q * f for q, f in zip(ps, self._inflation, strict=True)]), 1.0)
            # What no component may learn as normal is decided with equal shares: the weights
            # share out the alarms, not what each component judges anomalous.
            flag_p = np.minimum.reduce(ps) * len(ps)
        flagged = flag_p <= self.flag_p
        for c, cal, r in zip(self.components, self.calibrators, raws, strict=True):
            c.learn(ids, ts, values, flagged)
            if cal is not None:
                cal.learn(ids, r, flagged, self.flag_p)
        return self.episodes.apply(ids, ts, p_to_score(p))

    def signal_details(self, series_id: int) -> dict[str, Any]:
        """The detector kind and each component's view of the series."""
        out: dict[str, Any] = {"detector": self.kind}
        if series_id < self._used:
            for c in self.components:
                out.update(c.details(series_id))
            for c in self.components:
                expected = c.expectation(series_id)
                if expected is not None:
                    mean, spread = expected
                    out["expected"] = mean
                    out["band"] = [mean - BAND_SPREADS * spread, mean + BAND_SPREADS * spread]
                    break
        return out
