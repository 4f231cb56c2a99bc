"""A seasonal baseline: level plus a learned daily (and optionally weekly) profile per series.

The expected value of a sample is ``level + daily(time of day) [+ weekly(day and time)]``. The
daily profile has ``bins`` bins per day (UTC, from the sample's Unix timestamp) and is read with
linear interpolation between bin centres, so 24 hourly bins follow a smooth daily curve at any
sampling rate; it is learned by a least-squares step on the interpolated value (both neighbouring
bins move, in proportion to their weight). The optional weekly profile adds a correction per day
of week and bin on top of the daily one, so a busy Monday morning is not an anomaly and the
weekly part starts at zero instead of guessing. The level is an exponentially weighted mean of
the deseasonalised values with a time constant of ``level_hours``. The raw score is
``|residual| / sd`` with ``sd`` an exponentially weighted spread of the residuals.

Flagged samples are learned clipped to ``clip`` spreads; after ``relearn_after`` flagged samples in
a row the run's deseasonalised mean becomes the new level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from detectors.batch import FloatArray, IdArray
from detectors.calibration import (
    CALIBRATION_DEFAULTS,
    BoolArray,
    CalibratedDetector,
    Component,
    run_specs,
    track_runs,
)
from detectors.robust import spread_floor
from detectors.streaming import ArraySpec, check_bool, check_float, check_int, merge_params

DAY = 86_400.0
WEEK = 7 * DAY


class SeasonalComponent(Component):
    """Level + interpolated daily (+ weekly) profile; raw score ``|x - expected| / sd``."""

    def __init__(
        self,
        *,
        bins: int,
        weekly: bool,
        level_hours: float,
        season_alpha: float,
        scale_alpha: float,
        clip: float,
        relearn_after: int,
        prefix: str = "seasonal_",
    ) -> None:
        self.prefix = prefix
        self.bins = bins
        self.weekly = weekly
        self.level_tau = level_hours * 3600.0
        self.season_alpha = season_alpha
        self.scale_alpha = scale_alpha
        self.clip = clip
        self.relearn_after = relearn_after
        self._cache: tuple[FloatArray, ...] = ()
        self._r: FloatArray = np.empty(0)
        self._sd: FloatArray = np.empty(0)
        self._off: FloatArray = np.empty(0)
        self._idx: tuple[np.ndarray[Any, np.dtype[np.intp]], ...] = ()

    def array_specs(self) -> list[ArraySpec]:
        """Level, residual variance, last time, sample count, profile bins and their weights."""
        p = self.prefix
        specs = [
            ArraySpec(f"{p}level", np.float64, 0.0),
            ArraySpec(f"{p}var", np.float64, 0.0),
            ArraySpec(f"{p}t", np.float64, -np.inf),
            ArraySpec(f"{p}n", np.float32, 0.0),
            ArraySpec(f"{p}day", np.float32, 0.0, self.bins),
            ArraySpec(f"{p}day_w", np.float32, 0.0, self.bins),
            *run_specs(p),
        ]
        if self.weekly:
            specs += [
                ArraySpec(f"{p}week", np.float32, 0.0, 7 * self.bins),
                ArraySpec(f"{p}week_w", np.float32, 0.0, 7 * self.bins),
            ]
        return specs

    def _positions(
        self, ts: FloatArray, period: float, nbins: int
    ) -> tuple[np.ndarray[Any, np.dtype[np.intp]], np.ndarray[Any, np.dtype[np.intp]], FloatArray]:
        u = np.mod(ts, period) * (nbins / period) - 0.5
        fl = np.floor(u)
        w1 = u - fl
        b0 = np.mod(fl, nbins).astype(np.intp)
        b1 = b0 + 1
        b1[b1 == nbins] = 0
        return b0, b1, w1

    def expected_offset(self, ids: IdArray, ts: FloatArray) -> FloatArray:
        """The profile's offset from the level at each sample's time (caches bin positions)."""
        p = self.prefix
        rows = ids.astype(np.intp)
        d0, d1, dw = self._positions(ts, DAY, self.bins)
        day = self.s[f"{p}day"]
        off: FloatArray = (1.0 - dw) * day[rows, d0] + dw * day[rows, d1]
        self._idx = (d0, d1)
        self._cache = (dw,)
        if self.weekly:
            k0, k1, kw = self._positions(ts, WEEK, 7 * self.bins)
            week = self.s[f"{p}week"]
            off = off + (1.0 - kw) * week[rows, k0] + kw * week[rows, k1]
            self._idx = (d0, d1, k0, k1)
            self._cache = (dw, kw)
        return off

    def raw(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """``|x - level - profile| / sd``; 0 for the first two samples of a series."""
        p = self.prefix
        level = self.s[f"{p}level"][ids]
        off = self.expected_offset(ids, ts)
        var = self.s[f"{p}var"][ids].astype(np.float64)
        n = self.s[f"{p}n"][ids]
        r = values - level - off
        floor = spread_floor(level + off)
        sd = np.sqrt(var + floor * floor)
        self._r, self._sd, self._off = r, sd, off
        return np.where(n >= 2, np.abs(r) / sd, 0.0)

    def learn(self, ids: IdArray, ts: FloatArray, values: FloatArray, flagged: BoolArray) -> None:
        """Level, profile and spread move by the (clipped if flagged) residual."""
        p = self.prefix
        s = self.s
        rows = ids.astype(np.intp)
        n = s[f"{p}n"][ids].astype(np.float64)
        lim = self.clip * self._sd
        r = np.where(flagged, np.clip(self._r, -lim, lim), self._r)
        # Level: time-based exponential weight, so any sampling rate gives the same memory.
        dt = ts - s[f"{p}t"][ids]
        a_level = np.where(np.isfinite(dt), -np.expm1(-np.maximum(dt, 0.0) / self.level_tau), 1.0)
        a_level = np.maximum(a_level, 1.0 / (n + 1.0))
        level = s[f"{p}level"][ids] + a_level * r
        # Profile: the rest of the residual goes to the bins, by interpolation weight.
        rest = (1.0 - a_level) * r
        day, day_w = s[f"{p}day"], s[f"{p}day_w"]
        d0, d1 = self._idx[0], self._idx[1]
        dw = self._cache[0]
        seen = n >= 1  # the first sample only sets the level
        for b, w in ((d0, 1.0 - dw), (d1, dw)):
            cnt = day_w[rows, b]
            a = np.maximum(self.season_alpha, 1.0 / (cnt + 1.0)) * w * seen
            day[rows, b] += a * rest
            day_w[rows, b] = cnt + w * seen
        if self.weekly:
            week, week_w = s[f"{p}week"], s[f"{p}week_w"]
            k0, k1 = self._idx[2], self._idx[3]
            kw = self._cache[1]
            # the weekly part learns what the daily part did not explain this time
            rest_week = rest * (1.0 - self.season_alpha)
            for b, w in ((k0, 1.0 - kw), (k1, kw)):
                cnt = week_w[rows, b]
                a = np.maximum(self.season_alpha, 1.0 / (cnt + 1.0)) * w * seen
                week[rows, b] += a * rest_week
                week_w[rows, b] = cnt + w * seen
        a_s = np.maximum(self.scale_alpha, 1.0 / (n + 1.0))
        # a flagged sample does not widen the spread it was judged by
        var = np.where(flagged, s[f"{p}var"][ids], (1.0 - a_s) * (s[f"{p}var"][ids] + a_s * r * r))
        relearn, run_mean = track_runs(s, p, ids, values - self._off, flagged, self.relearn_after)
        s[f"{p}level"][ids] = np.where(relearn, run_mean, level)
        s[f"{p}var"][ids] = var
        s[f"{p}t"][ids] = ts
        s[f"{p}n"][ids] = n + 1.0

    def expectation(self, series_id: int) -> tuple[float, float] | None:
        """Level plus profile at the series' last sample time, and the residual spread there."""
        p, s = self.prefix, self.s
        t = float(s[f"{p}t"][series_id])
        if s[f"{p}n"][series_id] < 2 or not np.isfinite(t):
            return None
        ts = np.array([t])
        d0, d1, dw = self._positions(ts, DAY, self.bins)
        day = s[f"{p}day"][series_id]
        off = (1.0 - dw[0]) * day[d0[0]] + dw[0] * day[d1[0]]
        if self.weekly:
            k0, k1, kw = self._positions(ts, WEEK, 7 * self.bins)
            week = s[f"{p}week"][series_id]
            off += (1.0 - kw[0]) * week[k0[0]] + kw[0] * week[k1[0]]
        expected = float(s[f"{p}level"][series_id]) + float(off)
        floor = float(spread_floor(np.array([expected]))[0])
        return expected, float(np.sqrt(float(s[f"{p}var"][series_id]) + floor * floor))

    @property
    def last_offset(self) -> FloatArray:
        """The profile offsets of the round :meth:`raw` scored last."""
        return self._off

    @property
    def last_residual(self) -> FloatArray:
        """The residuals of the round :meth:`raw` scored last."""
        return self._r

    def details(self, series_id: int) -> dict[str, Any]:
        """The learned level and residual spread."""
        p = self.prefix
        return {
            f"{p}level": float(self.s[f"{p}level"][series_id]),
            f"{p}sd": float(np.sqrt(self.s[f"{p}var"][series_id])),
        }


SEASONAL_DEFAULTS: dict[str, Any] = {
    "bins": 24,
    "weekly": False,
    "level_hours": 24.0,
    "season_alpha": 0.05,
    "scale_alpha": 0.02,
    "clip": 3.0,
    "relearn_after": 12,
    **CALIBRATION_DEFAULTS,
}


def seasonal_component(where: str, p: Mapping[str, Any], prefix: str = "seasonal_") -> SeasonalComponent:
    """A :class:`SeasonalComponent` from validated parameters (see :data:`SEASONAL_DEFAULTS`)."""
    return SeasonalComponent(
        bins=check_int(where, "bins", p["bins"], low=1, high=1440),
        weekly=check_bool(where, "weekly", p["weekly"]),
        level_hours=check_float(where, "level_hours", p["level_hours"], low=0.0, low_open=True),
        season_alpha=check_float(where, "season_alpha", p["season_alpha"], low=0.0, high=1.0, low_open=True),
        scale_alpha=check_float(where, "scale_alpha", p["scale_alpha"], low=0.0, high=1.0, low_open=True),
        clip=check_float(where, "clip", p["clip"], low=0.0, low_open=True),
        relearn_after=check_int(where, "relearn_after", p["relearn_after"], low=1),
        prefix=prefix,
    )


class SeasonalDetector(CalibratedDetector):
    """Calibrated residual from a learned daily (and optionally weekly) profile.

    Parameters: ``bins`` (per day, 24), ``weekly`` (add a day-of-week profile, false),
    ``level_hours`` (time constant of the level, 24), ``season_alpha`` (slowest learning rate
    of a profile bin, 0.05), ``scale_alpha`` (of the residual spread, 0.02), ``clip`` (3),
    ``relearn_after`` (12), and the calibration parameters of
    :data:`~detectors.calibration.CALIBRATION_DEFAULTS`.
    """

    kind = "seasonal"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SeasonalDetector:
        """Build from parameters; errors name the parameter."""
        p = merge_params(cls.kind, SEASONAL_DEFAULTS, params)
        return cls([seasonal_component(cls.kind, p)], p)
