"""Additive Holt-Winters (level, damped trend, daily season) for many series at once.

The classical recursions, made fit for streams that are irregular, noisy and start anywhere:

- **Time-indexed season.** The seasonal component is a profile over the time of day with
  ``season / max(step, resolution)`` slots (288 for a 5-minute step and ``resolution`` 300;
  48 with the default 30-minute resolution). A sample updates, and a forecast reads, the two
  slots around its phase with linear weights, so gaps, jittered timestamps and faster
  sampling do not shift the season.
- **Continuous-time smoothing.** ``alpha`` and ``beta`` are per step; a sample ``k`` steps
  after the previous one uses ``1 - (1 - alpha) ** k``, so a long gap lets the level catch up
  and an oversampled series is not over-smoothed. ``gamma`` is per day of data in a slot.
- **Sound initialisation.** During a series' first season the level is the running mean and
  every slot the running mean of its deviations: the classical "mean of the first season"
  start, done online. Afterwards a slot is a running mean until it holds ``1 / gamma`` days of
  data, then an exponential average.
- **Robust to outliers** (Gelper, Fried and Croux, *Robust forecasting with exponential and
  Holt-Winters smoothing*, J. Forecasting 2010): the observation the recursions see is
  clipped to ``huber_k`` robust scales of the one-step forecast, and the scale follows a
  Huber-type tau-scale recursion, so a single spike neither drags the level nor inflates the
  bound for long.
- **Prediction bound.** ``upper = mean + q * scale * sqrt(1 + sum_{j<h} c_j^2)`` with the
  classical ETS(A,Ad,A) variance growth ``c_j = alpha * (1 + beta * phi_j)`` and ``q`` an online
  (Robbins-Monro) estimate of the ``quantile`` of the standardised one-step errors, started
  at the Gaussian quantile: heavy tails widen the bound, calibration does not assume them away.

Series are modelled in a ``transform`` (asinh by default; see :class:`~detectors.forecast.Transform`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorError, grow
from detectors.batch import FloatArray, IdArray, SampleBatch
from detectors.forecast import (
    TRANSFORMS,
    ParamReader,
    Transform,
    as_ids,
    check_horizon,
    daily_slots,
    export_state,
    order_batch,
    restore_state,
    slot_weights,
)

_COUNTERS = ("invalid", "out_of_order")
_STATE_VERSION = 1
#: One-step errors of the first samples set the scale before the robust recursions take over.
_WARMUP_ERRORS = 10
#: Step size of the online quantile of the standardised errors.
_QUANTILE_RATE = 0.05
_NORMAL = NormalDist()


def _huber_consistency(k: float) -> float:
    """``E[min(Z^2, k^2)]`` for a standard normal Z: makes the clipped scale unbiased for Gaussians."""
    phi_k = _NORMAL.pdf(k)
    tail = 1.0 - _NORMAL.cdf(k)
    return (1.0 - 2.0 * tail) - 2.0 * k * phi_k + 2.0 * k * k * tail


class HoltWintersForecaster:
    """Additive Holt-Winters with a damped trend and a daily season, vectorized over series.

    Samples that are not finite are counted in :attr:`invalid`, samples not newer than their
    series' newest one in :attr:`out_of_order`; neither is learned.
    """

    name = "holt_winters"
    PARAMS: ClassVar[frozenset[str]] = frozenset(
        {
            "step",
            "quantile",
            "season",
            "resolution",
            "alpha",
            "beta",
            "phi",
            "gamma",
            "huber_k",
            "scale_smoothing",
            "transform",
        }
    )

    def __init__(
        self,
        *,
        step: float = 300.0,
        quantile: float = 0.95,
        season: float = 86400.0,
        resolution: float = 1800.0,
        alpha: float = 0.4,
        beta: float = 0.0,
        phi: float = 0.9,
        gamma: float = 0.1,
        huber_k: float | None = 2.0,
        scale_smoothing: float = 0.05,
        transform: str = "asinh",
    ) -> None:
        self.step = step
        self.quantile = quantile
        self.season = season
        self.resolution = resolution
        self.alpha = alpha
        self.beta = beta
        self.phi = phi
        self.gamma = gamma
        self.huber_k = huber_k
        self.scale_smoothing = scale_smoothing
        self.transform = Transform(transform)
        self.slots = daily_slots(season, step, resolution)
        self.slot_width = season / self.slots
        self._consistency = 1.0 if huber_k is None else _huber_consistency(huber_k)
        self.invalid = 0
        self.out_of_order = 0
        self._count = np.zeros(0, np.int64)
        self._first_ts = np.zeros(0, np.float64)
        self._last_ts = np.zeros(0, np.float64)
        self._level = np.zeros(0, np.float64)
        self._trend = np.zeros(0, np.float64)
        self._scale = np.zeros(0, np.float64)
        self._qhat = np.zeros(0, np.float64)
        self._seasonal = np.zeros((0, self.slots), np.float64)
        self._weight = np.zeros((0, self.slots), np.float64)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> HoltWintersForecaster:
        """Build from a parameter mapping; every error names the parameter."""
        p = ParamReader(cls.name, params, cls.PARAMS)
        step = p.number("step", 300.0, low=0.0, low_open=True)
        season = p.number("season", 86400.0, low=0.0, low_open=True)
        if season < 2 * step:
            raise DetectorError(
                f"{cls.name}.season: must be at least two steps ({2 * step:g} s), got {season:g}"
            )
        resolution = p.number("resolution", 1800.0, low=0.0, low_open=True)
        p.slots("season", season, max(step, resolution))  # one slot of state per series each
        return cls(
            step=step,
            quantile=p.number("quantile", 0.95, low=0.5, high=1.0, high_open=True),
            season=season,
            resolution=resolution,
            alpha=p.number("alpha", 0.4, low=0.0, high=1.0, low_open=True),
            beta=p.number("beta", 0.0, low=0.0, high=1.0),
            phi=p.number("phi", 0.9, low=0.0, high=1.0, low_open=True),
            gamma=p.number("gamma", 0.1, low=0.0, high=1.0, low_open=True),
            huber_k=p.optional_number("huber_k", 2.0, low=0.5),
            scale_smoothing=p.number("scale_smoothing", 0.05, low=0.0, high=1.0, low_open=True),
            transform=p.choice("transform", "asinh", TRANSFORMS),
        )

    # ------------------------------------------------------------------ state arrays

    def _ensure(self, size: int) -> None:
        if size <= self._count.shape[0]:
            return
        self._count = grow(self._count, size, 0)
        self._first_ts = grow(self._first_ts, size, np.nan)
        self._last_ts = grow(self._last_ts, size, -np.inf)
        self._level = grow(self._level, size, 0.0)
        self._trend = grow(self._trend, size, 0.0)
        self._scale = grow(self._scale, size, 0.0)
        self._qhat = grow(self._qhat, size, _NORMAL.inv_cdf(self.quantile))
        rows = self._count.shape[0]
        for attr in ("_seasonal", "_weight"):
            old = getattr(self, attr)
            new = np.zeros((rows, self.slots), np.float64)
            new[: old.shape[0]] = old
            setattr(self, attr, new)

    def forget(self, ids: IdArray) -> None:
        """Forget the series of ``ids``: the next sample under one of them starts a new series."""
        ids = ids[ids < self._count.shape[0]]
        self._count[ids] = 0
        self._first_ts[ids] = np.nan
        self._last_ts[ids] = -np.inf
        self._level[ids] = 0.0
        self._trend[ids] = 0.0
        self._scale[ids] = 0.0
        self._qhat[ids] = _NORMAL.inv_cdf(self.quantile)
        self._seasonal[ids] = 0.0
        self._weight[ids] = 0.0

    def _damped(self, k: FloatArray) -> FloatArray:
        """``sum_{i=1..k} phi^i`` for real ``k`` (``k`` itself when phi is 1)."""
        if self.phi >= 1.0:
            return k
        return self.phi * (1.0 - np.power(self.phi, k)) / (1.0 - self.phi)

    def _season_at(self, ids: IdArray, timestamps: FloatArray) -> FloatArray:
        """The seasonal component of series ``ids`` at ``timestamps`` (same shape, any ndim)."""
        lo, hi, frac = slot_weights(timestamps, self.season, self.slots)
        rows = ids.reshape(ids.shape + (1,) * (timestamps.ndim - ids.ndim))
        seen_lo = self._weight[rows, lo] > 0
        seen_hi = self._weight[rows, hi] > 0
        w_lo = np.where(seen_lo, 1.0 - frac, 0.0)
        w_hi = np.where(seen_hi, frac, 0.0)
        total = w_lo + w_hi
        num = w_lo * self._seasonal[rows, lo] + w_hi * self._seasonal[rows, hi]
        return np.where(total > 0, num / np.where(total > 0, total, 1.0), 0.0)

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
        values = self.transform.forward(samples.values)
        # One vectorized step per rank: the r-th sample of every series in the batch at once.
        for r in range(int(samples.rank.max()) + 1):
            sel = samples.rank == r
            self._step(samples.series[sel], samples.timestamps[sel], values[sel])

    def _step(self, s: IdArray, t: FloatArray, y: FloatArray) -> None:
        count = self._count[s]
        fresh = count == 0
        self._first_ts[s[fresh]] = t[fresh]
        dt = np.where(fresh, self.step, t - self._last_ts[s])
        k = np.minimum(dt / self.step, self.season / self.step)
        in_first_season = (t - self._first_ts[s]) < self.season

        level, trend = self._level[s], self._trend[s]
        level = np.where(fresh, y, level)
        seasonal = self._season_at(s, t)
        projected = level + trend * self._damped(k)
        pred = projected + seasonal
        err = np.where(fresh, 0.0, y - pred)

        # robust scale (tau-scale recursion) and the observation the recursions see
        scale = self._scale[s]
        n_err = np.maximum(count, 1)  # errors seen, this one included (none for a fresh series)
        warm = n_err <= _WARMUP_ERRORS
        cleaned = y
        sq = err * err
        if self.huber_k is not None:
            bound = self.huber_k * scale
            robust = ~warm & (scale > 0)
            clipped = np.clip(err, -bound, bound)
            cleaned = np.where(robust, pred + clipped, y)
            sq = np.where(robust, np.minimum(sq, bound * bound) / self._consistency, sq)
        lam = np.maximum(self.scale_smoothing, 1.0 / n_err)
        new_scale = np.sqrt((1.0 - lam) * scale * scale + lam * sq)
        # online quantile of the standardised one-step error (raw, not cleaned)
        u = np.where(scale > 0, err / np.where(scale > 0, scale, 1.0), 0.0)
        tracking = ~fresh & ~warm
        qhat = self._qhat[s]
        qhat = np.where(tracking, qhat + _QUANTILE_RATE * ((u > qhat) - (1.0 - self.quantile)), qhat)

        # level and damped trend, continuous-time smoothing; running means in the first season
        a = 1.0 - np.power(1.0 - self.alpha, k)
        a = np.where(in_first_season, 1.0 / (count + 1.0), a)
        new_level = a * (cleaned - seasonal) + (1.0 - a) * projected
        if self.beta > 0:
            b = 1.0 - np.power(1.0 - self.beta, k)
            slope = (new_level - level) / np.maximum(k, 1e-9)
            new_trend = np.where(fresh, 0.0, b * slope + (1.0 - b) * np.power(self.phi, k) * trend)
        else:
            new_trend = trend

        # the two slots around the phase, weighted by how much of a slot this sample covers
        resid = cleaned - new_level
        share = np.minimum(dt / self.slot_width, 1.0)
        lo, hi, frac = slot_weights(t, self.season, self.slots)
        for slot, w in ((lo, (1.0 - frac) * share), (hi, frac * share)):
            total = self._weight[s, slot] + w
            rate = 1.0 - np.power(1.0 - self.gamma, w)
            rate = np.maximum(rate, np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0))
            self._seasonal[s, slot] += rate * (resid - self._seasonal[s, slot])
            self._weight[s, slot] = total

        self._level[s] = new_level
        self._trend[s] = new_trend
        self._scale[s] = new_scale
        self._qhat[s] = qhat
        self._count[s] = count + 1
        self._last_ts[s] = t

    # ------------------------------------------------------------------ forecasting

    def forecast(self, series_ids: Sequence[int] | IdArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        """Point forecast and upper bound for steps ``1..horizon`` after each series' newest sample."""
        check_horizon(self.name, horizon)
        ids = as_ids(series_ids)
        mean = np.full((ids.size, horizon), np.nan)
        upper = np.full((ids.size, horizon), np.nan)
        known = ids < self._count.shape[0]
        known[known] = self._count[ids[known]] > 0
        if not known.any():
            return mean, upper
        s = ids[known]
        k = np.arange(1, horizon + 1, dtype=np.float64)
        targets = self._last_ts[s][:, None] + k * self.step
        mean_z = (
            self._level[s][:, None] + self._trend[s][:, None] * self._damped(k) + self._season_at(s, targets)
        )
        c = self.alpha * (1.0 + self.beta * self._damped(k[:-1]))
        growth = np.sqrt(1.0 + np.concatenate([[0.0], np.cumsum(c * c)]))
        upper_z = mean_z + (self._qhat[s] * self._scale[s])[:, None] * growth
        mean[known] = self.transform.inverse(mean_z)
        upper[known] = np.maximum(self.transform.inverse(upper_z), mean[known])
        return mean, upper

    # ------------------------------------------------------------------ checkpoints

    _ARRAYS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("count", 1),
        ("first_ts", 1),
        ("last_ts", 1),
        ("level", 1),
        ("trend", 1),
        ("scale", 1),
        ("qhat", 1),
        ("seasonal", 2),
        ("weight", 2),
    )

    def state_dict(self) -> dict[str, Any]:
        """Per-series level, trend, scale, seasonal profile and counters (copies)."""
        return export_state(self, self.name, _STATE_VERSION, self._ARRAYS, {"slots": self.slots}, _COUNTERS)

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` exported, for the same slot count."""
        restore_state(
            self,
            state,
            self.name,
            _STATE_VERSION,
            self._ARRAYS,
            {"slots": self.slots},
            _COUNTERS,
            lambda key, rows: (rows, self.slots) if key in {"seasonal", "weight"} else (rows,),
            {"count"},
        )
