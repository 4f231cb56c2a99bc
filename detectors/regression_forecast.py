"""A scikit-learn ridge regression per series on lag and time-of-day features.

For each horizon ``h = 1..max_horizon`` a linear model predicts the change from the newest
value to the value ``h`` steps later, in the model ``transform`` (the *direct* strategy: no
forecast is fed back as an input). All horizons share one design matrix and are fit together as
one multi-output ``sklearn.linear_model.Ridge`` on standardised features:

- the last ``lags`` values relative to the newest, and the newest value itself (mean reversion);
- ``harmonics`` sine/cosine pairs of the origin's phase in the season (the daily shape; for a
  linear model per horizon this spans the same functions as the target's phase);
- the log of the gap before the newest sample (a sample after an outage says less).

Each series keeps a ring of its last ``window`` samples and is refit on it every
``refit_every`` samples (and at 16, 32, 64 ... samples while young, so a new series soon has a
model). The upper bound is split-conformal: the model is first fit on the older part of the
window, the ``quantile`` of its residuals on the newest ``calibration`` part is each horizon's
margin, and the model is then refit on the whole window. Targets are the samples nearest to
``origin + h * step`` within half a step, so irregular series train only on real lead times;
when too few origins have every target, the horizons are split in halves, each fit on the
origins that have all of its targets (a few fits for a young series, not one per horizon).

Fitted coefficients are stored per series in arrays, so forecasting is numpy over all series at
once and checkpoints are plain arrays (no pickled estimators). Until a series has ``min_train``
training rows its forecast is its newest value, with a conformal margin from the changes seen
so far. Memory is ``16 * window`` bytes per series for the ring (32 KiB at the default).
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
    TRANSFORMS,
    ParamReader,
    Transform,
    as_ids,
    check_horizon,
    export_state,
    order_batch,
    restore_state,
)

_COUNTERS = ("invalid", "out_of_order", "refits")
_STATE_VERSION = 1
#: The first refit happens at this many samples; later ones as the ring doubles, up to refit_every.
_FIRST_FIT = 16
#: Fewer calibration residuals than this give no upper bound (NaN).
_MIN_RESIDUALS = 8
#: Gaps longer than this many steps look alike to the model.
_MAX_GAP_STEPS = 288.0


def conformal_quantile(residuals: FloatArray, quantile: float) -> float:
    """The split-conformal margin: the ``ceil((n + 1) q)``-th smallest residual (the largest if beyond)."""
    n = residuals.size
    if n < _MIN_RESIDUALS:
        return math.nan
    k = min(n, math.ceil((n + 1) * quantile))
    return float(np.partition(residuals, k - 1)[k - 1])


class RegressionForecaster:
    """Direct multi-horizon ridge regression per series, with conformal upper bounds.

    Samples that are not finite are counted in :attr:`invalid`, samples not newer than their
    series' newest in :attr:`out_of_order`; :attr:`refits` counts model fits.
    """

    name = "regression"
    PARAMS: ClassVar[frozenset[str]] = frozenset(
        {
            "step",
            "quantile",
            "season",
            "transform",
            "lags",
            "harmonics",
            "max_horizon",
            "window",
            "refit_every",
            "min_train",
            "ridge_alpha",
            "calibration",
        }
    )

    def __init__(
        self,
        *,
        step: float = 300.0,
        quantile: float = 0.95,
        season: float = 86400.0,
        transform: str = "asinh",
        lags: int = 6,
        harmonics: int = 2,
        max_horizon: int = 12,
        window: int = 2016,
        refit_every: int = 288,
        min_train: int = 48,
        ridge_alpha: float = 1.0,
        calibration: float = 0.25,
    ) -> None:
        self.step = step
        self.quantile = quantile
        self.season = season
        self.transform = Transform(transform)
        self.lags = lags
        self.harmonics = harmonics
        self.max_horizon = max_horizon
        self.window = window
        self.refit_every = refit_every
        self.min_train = min_train
        self.ridge_alpha = ridge_alpha
        self.calibration = calibration
        self.features = lags + 2 * harmonics + 1
        self.invalid = 0
        self.out_of_order = 0
        self.refits = 0
        self._ring_t = np.zeros((0, window), np.float64)
        self._ring_z = np.zeros((0, window), np.float64)
        self._pos = np.zeros(0, np.int64)
        self._len = np.zeros(0, np.int64)
        self._last_ts = np.zeros(0, np.float64)
        self._since = np.zeros(0, np.int64)
        self._fit_len = np.zeros(0, np.int64)
        self._coef = np.zeros((0, max_horizon, self.features), np.float64)
        self._icpt = np.zeros((0, max_horizon), np.float64)
        self._margin = np.zeros((0, max_horizon), np.float64)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RegressionForecaster:
        """Build from a parameter mapping; every error names the parameter."""
        p = ParamReader(cls.name, params, cls.PARAMS)
        step = p.number("step", 300.0, low=0.0, low_open=True)
        season = p.number("season", 86400.0, low=0.0, low_open=True)
        if season < 2 * step:
            raise DetectorError(
                f"{cls.name}.season: must be at least two steps ({2 * step:g} s), got {season:g}"
            )
        window = p.integer("window", 2016, low=64, high=1_000_000)
        min_train = p.integer("min_train", 48, low=_MIN_RESIDUALS * 2, high=window)
        return cls(
            step=step,
            quantile=p.number("quantile", 0.95, low=0.5, high=1.0, high_open=True),
            season=season,
            transform=p.choice("transform", "asinh", TRANSFORMS),
            lags=p.integer("lags", 6, low=1, high=256),
            harmonics=p.integer("harmonics", 2, low=0, high=24),
            max_horizon=p.integer("max_horizon", 12, low=1, high=MAX_HORIZON_STEPS),
            window=window,
            refit_every=p.integer("refit_every", 288, low=1),
            min_train=min_train,
            ridge_alpha=p.number("ridge_alpha", 1.0, low=0.0),
            calibration=p.number("calibration", 0.25, low=0.05, high=0.9),
        )

    # ------------------------------------------------------------------ state arrays

    def _ensure(self, size: int) -> None:
        if size <= self._pos.shape[0]:
            return
        self._pos = grow(self._pos, size, 0)
        rows = self._pos.shape[0]
        self._len = grow(self._len, rows, 0)
        self._last_ts = grow(self._last_ts, rows, -np.inf)
        self._since = grow(self._since, rows, 0)
        self._fit_len = grow(self._fit_len, rows, 0)
        self._ring_t = grow(self._ring_t, rows, 0.0)
        self._ring_z = grow(self._ring_z, rows, 0.0)
        self._coef = grow(self._coef, rows, 0.0)
        self._icpt = grow(self._icpt, rows, 0.0)
        self._margin = grow(self._margin, rows, np.nan)

    def forget(self, ids: IdArray) -> None:
        """Forget the series of ``ids``: the next sample under one of them starts a new series."""
        ids = ids[ids < self._pos.shape[0]]
        for attr in ("_pos", "_len", "_since", "_fit_len"):
            getattr(self, attr)[ids] = 0
        self._last_ts[ids] = -np.inf
        for attr in ("_ring_t", "_ring_z", "_coef", "_icpt"):
            getattr(self, attr)[ids] = 0.0
        self._margin[ids] = np.nan

    # ------------------------------------------------------------------ features

    def _design(self, recent: FloatArray, t_now: FloatArray, t_prev: FloatArray) -> FloatArray:
        """Feature rows ``(R, features)``; ``recent[:, k]`` is the value ``k`` samples before the origin.

        The harmonics are of the origin's phase: for each horizon's own linear model they span
        the same functions as harmonics of the target's phase (a fixed rotation), and so one
        design matrix serves every horizon.
        """
        level = recent[:, 0]
        cols = [recent[:, k] - level for k in range(1, self.lags)]
        cols.append(level)
        phase = 2.0 * np.pi * np.mod(t_now, self.season) / self.season
        for q in range(1, self.harmonics + 1):
            cols.extend((np.sin(q * phase), np.cos(q * phase)))
        cols.append(np.log1p(np.clip((t_now - t_prev) / self.step, 0.0, _MAX_GAP_STEPS)))
        return np.stack(cols, axis=1)

    # ------------------------------------------------------------------ learning

    def update(self, batch: SampleBatch) -> None:
        """Append ``batch`` to each series' ring and refit the series that are due."""
        if len(batch) == 0:
            return
        self._ensure(max(int(batch.series.max()) + 1, 0))
        samples = order_batch(batch, self._last_ts)
        self.invalid += samples.invalid
        self.out_of_order += samples.out_of_order
        if len(samples) == 0:
            return
        s, rank = samples.series, samples.rank
        newest = samples.newest()
        per_series = np.zeros(self._pos.shape[0], np.int64)
        np.add.at(per_series, s, 1)
        # a series with more than `window` samples in this batch keeps only its newest `window`
        keep = rank >= per_series[s] - self.window
        offset = np.maximum(per_series[s] - self.window, 0)
        slot = (self._pos[s] + rank - offset) % self.window
        self._ring_t[s[keep], slot[keep]] = samples.timestamps[keep]
        self._ring_z[s[keep], slot[keep]] = self.transform.forward(samples.values[keep])
        touched = s[newest]
        added = np.minimum(per_series[touched], self.window)
        self._pos[touched] = (self._pos[touched] + added) % self.window
        self._len[touched] = np.minimum(self._len[touched] + added, self.window)
        self._last_ts[touched] = samples.timestamps[newest]
        self._since[touched] += per_series[touched]
        due_after = np.clip(self._fit_len[touched], _FIRST_FIT, self.refit_every)
        for sid in touched[self._since[touched] >= due_after].tolist():
            self._refit(int(sid))

    def _chronological(self, sid: int) -> tuple[FloatArray, FloatArray]:
        n = int(self._len[sid])
        idx = (int(self._pos[sid]) - n + np.arange(n)) % self.window
        return self._ring_t[sid, idx], self._ring_z[sid, idx]

    def _refit(self, sid: int) -> None:
        t, z = self._chronological(sid)
        n = t.size
        self._since[sid] = 0
        if n < 2:
            return
        self._fit_len[sid] = n
        self.refits += 1
        origins = np.arange(n)
        back = np.maximum(origins[:, None] - np.arange(self.lags)[None, :], 0)
        t_prev = np.where(origins > 0, t[np.maximum(origins - 1, 0)], t - self.step)
        x = self._design(z[back], t, t_prev)
        # the target of each origin and horizon: the sample nearest to origin + h * step
        ahead = np.arange(1, self.max_horizon + 1)[None, :]
        if np.all(np.abs(np.diff(t) - self.step) <= 1e-6 * self.step):
            # evenly spaced (the usual case): the target h steps ahead is the sample h places on
            j = origins[:, None] + ahead
            valid = j < n
            j = np.minimum(j, n - 1)
        else:
            target = t[:, None] + self.step * ahead
            j = np.clip(np.searchsorted(t, target), 1, n - 1)
            j = np.where(np.abs(t[j - 1] - target) <= np.abs(t[j] - target), j - 1, j)
            valid = (np.abs(t[j] - target) <= self.step / 2) & (j > origins[:, None])
        y = z[j] - z[:, None]
        self._fit_block(sid, np.arange(self.max_horizon), x, y, valid)

    def _fit_block(
        self, sid: int, horizons: IdArray, x: FloatArray, y: FloatArray, valid: npt.NDArray[np.bool_]
    ) -> None:
        """One multi-output ridge for ``horizons`` on the origins that have every one of their targets.

        When fewer than ``min_train`` origins have them all (a young or irregular series), the
        horizons are split in halves and each half tried the same way, so a series that is young
        takes a few fits, not one per horizon; a single horizon with too few rows falls back to
        persistence, with the margin of its own errors.
        """
        rows = valid[:, horizons].all(axis=1)
        if np.count_nonzero(rows) >= self.min_train:
            self._fit_horizons(sid, horizons, x[rows], y[np.ix_(rows, horizons)])
        elif horizons.size > 1:
            half = horizons.size // 2
            self._fit_block(sid, horizons[:half], x, y, valid)
            self._fit_block(sid, horizons[half:], x, y, valid)
        else:
            h = int(horizons[0])
            self._coef[sid, h] = 0.0
            self._icpt[sid, h] = 0.0
            self._margin[sid, h] = conformal_quantile(y[valid[:, h], h], self.quantile)

    def _fit_horizons(self, sid: int, horizons: IdArray, x: FloatArray, y: FloatArray) -> None:
        """Split-conformal margins from a fit on the older rows, then the model fit on all rows."""
        rows = x.shape[0]
        split = rows - max(_MIN_RESIDUALS, round(rows * self.calibration))
        coef, icpt = self._fit(x[:split], y[:split])
        residuals = y[split:] - (x[split:] @ coef.T + icpt)
        for col, h in enumerate(horizons.tolist()):
            self._margin[sid, h] = conformal_quantile(residuals[:, col], self.quantile)
        self._coef[sid, horizons], self._icpt[sid, horizons] = self._fit(x, y)

    def _fit(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Ridge on standardised features; coefficients ``(outputs, features)`` of the raw features."""
        from sklearn import config_context  # noqa: PLC0415 - a slow import, needed only to fit
        from sklearn.linear_model import Ridge  # noqa: PLC0415

        mu = x.mean(axis=0)
        sd = x.std(axis=0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        # the inputs are finite by construction and the parameters checked at construction:
        # sklearn's own per-call checks would cost more than the fit of these small matrices
        with config_context(assume_finite=True, skip_parameter_validation=True):
            model = Ridge(alpha=self.ridge_alpha).fit((x - mu) / sd, y)
        coef = np.asarray(model.coef_, dtype=np.float64).reshape(y.shape[1], -1) / sd
        icpt = np.asarray(model.intercept_, dtype=np.float64).reshape(-1) - coef @ mu
        return coef, icpt

    # ------------------------------------------------------------------ forecasting

    def forecast(self, series_ids: Sequence[int] | IdArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        """Point forecast and upper bound for steps ``1..horizon`` (at most ``max_horizon``)."""
        check_horizon(self.name, horizon, self.max_horizon)
        ids = as_ids(series_ids)
        mean = np.full((ids.size, horizon), np.nan)
        upper = np.full((ids.size, horizon), np.nan)
        known = ids < self._pos.shape[0]
        known[known] = self._len[ids[known]] > 0
        if not known.any():
            return mean, upper
        s = ids[known]
        length = self._len[s]
        back = np.minimum(np.arange(self.lags)[None, :], (length - 1)[:, None])
        idx = (self._pos[s][:, None] - 1 - back) % self.window
        recent = self._ring_z[s[:, None], idx]
        t_now = self._last_ts[s]
        prev_idx = (self._pos[s] - 2) % self.window
        t_prev = np.where(length > 1, self._ring_t[s, prev_idx], t_now - self.step)
        x = self._design(recent, t_now, t_prev)
        mean_z = recent[:, :1] + np.einsum("rp,rhp->rh", x, self._coef[s, :horizon]) + self._icpt[s, :horizon]
        upper_z = mean_z + self._margin[s, :horizon]
        mean[known] = self.transform.inverse(mean_z)
        with np.errstate(invalid="ignore"):
            upper[known] = np.fmax(self.transform.inverse(upper_z), mean[known])
        upper[known] = np.where(np.isnan(upper_z), np.nan, upper[known])
        return mean, upper

    # ------------------------------------------------------------------ checkpoints

    _ARRAYS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("ring_t", 2),
        ("ring_z", 2),
        ("pos", 1),
        ("len", 1),
        ("last_ts", 1),
        ("since", 1),
        ("fit_len", 1),
        ("coef", 3),
        ("icpt", 2),
        ("margin", 2),
    )
    _INTS: ClassVar[frozenset[str]] = frozenset({"pos", "len", "since", "fit_len"})

    def _config(self) -> dict[str, Any]:
        return {"window": self.window, "max_horizon": self.max_horizon, "features": self.features}

    def _shape(self, key: str, rows: int) -> tuple[int, ...]:
        widths: dict[str, tuple[int, ...]] = {
            "ring_t": (self.window,),
            "ring_z": (self.window,),
            "coef": (self.max_horizon, self.features),
            "icpt": (self.max_horizon,),
            "margin": (self.max_horizon,),
        }
        return (rows, *widths.get(key, ()))

    def state_dict(self) -> dict[str, Any]:
        """Rings, fitted coefficients and margins per series (copies)."""
        return export_state(self, self.name, _STATE_VERSION, self._ARRAYS, self._config(), _COUNTERS)

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` exported, for the same window, horizon and features."""
        restore_state(
            self,
            state,
            self.name,
            _STATE_VERSION,
            self._ARRAYS,
            self._config(),
            _COUNTERS,
            self._shape,
            self._INTS,
        )
