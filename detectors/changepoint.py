"""Sustained departures from a slow baseline: a level shift (CUSUM) and a burst (short-term spread).

Both components standardise each sample against a slowly learned baseline (an exponentially
weighted mean and spread) and clip it to ``±z_clip``, so one spike cannot trip them. The baseline
does not learn from flagged samples (only a tenth of their clipped step); after
``relearn_after`` flagged samples in a row, the new level is the run's mean and the statistic
restarts.

``cusum``, what catches a bad rollout: the sums ``g+ = max(0, g+ + z - drift)`` and
``g- = max(0, g- - z - drift)`` accumulate a sustained move in either direction; the raw score is
``max(g+, g-)``.

``burst``, what catches a series turning erratic (a flapping pod, a saturated link, a stretch
of values far from the level in both directions, which a CUSUM's two sums cancel): the raw score
is ``sqrt(e)`` with ``e`` a short exponentially weighted mean of ``z^2`` (weight ``short`` per
sample: about ``2 / short`` samples), which is 1 on average while the series behaves as usual.
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
from detectors.robust import learned_expectation, spread_floor
from detectors.streaming import ArraySpec, check_float, check_int, merge_params


class SlowBaselineComponent(Component):
    """A slow EW baseline per series and each sample's clipped standardised deviation from it."""

    def __init__(self, *, alpha: float, z_clip: float, relearn_after: int, prefix: str) -> None:
        self.prefix = prefix
        self.alpha = alpha
        self.z_clip = z_clip
        self.relearn_after = relearn_after
        self._z: FloatArray = np.empty(0)
        self._sd: FloatArray = np.empty(0)

    def baseline_specs(self) -> list[ArraySpec]:
        """Baseline mean, variance, count and the flagged-run tracker."""
        p = self.prefix
        return [
            ArraySpec(f"{p}mean", np.float64, 0.0),
            ArraySpec(f"{p}var", np.float64, 0.0),
            ArraySpec(f"{p}n", np.float32, 0.0),
            *run_specs(p),
        ]

    def standardise(self, ids: IdArray, values: FloatArray) -> tuple[FloatArray, BoolArray]:
        """Each sample's deviation in baseline spreads, clipped (0 while the series has < 2 samples),
        and where the series is warm (>= 2 samples)."""
        p = self.prefix
        mean = self.s[f"{p}mean"][ids]
        var = self.s[f"{p}var"][ids].astype(np.float64)
        warm: BoolArray = self.s[f"{p}n"][ids] >= 2
        floor = spread_floor(mean)
        self._sd = sd = np.sqrt(var + floor * floor)
        self._z = np.where(warm, np.clip((values - mean) / sd, -self.z_clip, self.z_clip), 0.0)
        return self._z, warm

    def learn_baseline(self, ids: IdArray, values: FloatArray, flagged: BoolArray) -> BoolArray:
        """Move the baseline (freely only on unflagged samples); True where a run became the new level."""
        p = self.prefix
        s = self.s
        n = s[f"{p}n"][ids].astype(np.float64)
        mean = s[f"{p}mean"][ids]
        var = s[f"{p}var"][ids].astype(np.float64)
        a = np.maximum(self.alpha, 1.0 / (n + 1.0))
        r = np.where(n >= 2, self._z * self._sd, values - mean)  # the clipped deviation
        r = np.where(flagged, r * 0.1, r)
        relearn, run_mean = track_runs(s, p, ids, values, flagged, self.relearn_after)
        s[f"{p}mean"][ids] = np.where(relearn, run_mean, mean + a * r)
        s[f"{p}var"][ids] = (1.0 - a) * (var + a * r * r)
        s[f"{p}n"][ids] = n + 1.0
        return relearn

    def details(self, series_id: int) -> dict[str, Any]:
        """The baseline."""
        return {f"{self.prefix}mean": float(self.s[f"{self.prefix}mean"][series_id])}

    def expectation(self, series_id: int) -> tuple[float, float] | None:
        """The baseline and its spread (with the floor a sample is judged with)."""
        return learned_expectation(self.s, self.prefix, series_id)


class CusumComponent(SlowBaselineComponent):
    """Two-sided CUSUM of standardised deviations from a slow baseline."""

    prior_q = 2.0
    prior_e = 1.0

    def __init__(
        self,
        *,
        alpha: float,
        drift: float,
        z_clip: float,
        relearn_after: int,
        prefix: str = "cusum_",
    ) -> None:
        super().__init__(alpha=alpha, z_clip=z_clip, relearn_after=relearn_after, prefix=prefix)
        self.drift = drift
        self._gp: FloatArray = np.empty(0)
        self._gn: FloatArray = np.empty(0)

    def array_specs(self) -> list[ArraySpec]:
        """The baseline and the two sums."""
        p = self.prefix
        return [
            *self.baseline_specs(),
            ArraySpec(f"{p}gp", np.float32, 0.0),
            ArraySpec(f"{p}gn", np.float32, 0.0),
        ]

    def raw(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """``max(g+, g-)`` after this sample; 0 for the first two samples of a series."""
        del ts
        p = self.prefix
        z, _ = self.standardise(ids, values)
        self._gp = np.maximum(0.0, self.s[f"{p}gp"][ids] + z - self.drift)
        self._gn = np.maximum(0.0, self.s[f"{p}gn"][ids] - z - self.drift)
        return np.maximum(self._gp, self._gn)

    def learn(self, ids: IdArray, ts: FloatArray, values: FloatArray, flagged: BoolArray) -> None:
        """Keep the sums (restarted where a run became the new level); move the baseline."""
        del ts
        p = self.prefix
        relearn = self.learn_baseline(ids, values, flagged)
        self.s[f"{p}gp"][ids] = np.where(relearn, 0.0, self._gp)
        self.s[f"{p}gn"][ids] = np.where(relearn, 0.0, self._gn)

    def details(self, series_id: int) -> dict[str, Any]:
        """The baseline and the two sums."""
        p = self.prefix
        return {
            **super().details(series_id),
            f"{p}up": float(self.s[f"{p}gp"][series_id]),
            f"{p}down": float(self.s[f"{p}gn"][series_id]),
        }


class BurstComponent(SlowBaselineComponent):
    """Root of a short EW mean of squared standardised deviations from a slow baseline."""

    # sqrt(e) of a series as usual: about sqrt(chi2_19 / 19), whose 97th percentile is ~1.4
    prior_q = 1.5
    prior_e = 0.2

    def __init__(
        self,
        *,
        alpha: float,
        short: float,
        z_clip: float,
        relearn_after: int,
        prefix: str = "burst_",
    ) -> None:
        super().__init__(alpha=alpha, z_clip=z_clip, relearn_after=relearn_after, prefix=prefix)
        self.short = short
        self._e: FloatArray = np.empty(0)

    def array_specs(self) -> list[ArraySpec]:
        """The baseline and the short mean of z^2 (1: as usual)."""
        return [*self.baseline_specs(), ArraySpec(f"{self.prefix}e", np.float64, 1.0)]

    def raw(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """``sqrt(e)`` after this sample; 0 for the first two samples of a series."""
        del ts
        z, warm = self.standardise(ids, values)
        e = (1.0 - self.short) * self.s[f"{self.prefix}e"][ids] + self.short * z * z
        self._e = np.where(warm, e, 1.0)
        return np.where(warm, np.sqrt(self._e), 0.0)

    def learn(self, ids: IdArray, ts: FloatArray, values: FloatArray, flagged: BoolArray) -> None:
        """Keep the short mean (back to 1 where a run became the new level); move the baseline."""
        del ts
        relearn = self.learn_baseline(ids, values, flagged)
        self.s[f"{self.prefix}e"][ids] = np.where(relearn, 1.0, self._e)

    def details(self, series_id: int) -> dict[str, Any]:
        """The baseline and the short-term spread in baseline spreads."""
        return {
            **super().details(series_id),
            f"{self.prefix}spread": float(np.sqrt(self.s[f"{self.prefix}e"][series_id])),
        }


CUSUM_DEFAULTS: dict[str, Any] = {
    "alpha": 0.005,
    "drift": 0.5,
    "z_clip": 4.0,
    "relearn_after": 24,
    **CALIBRATION_DEFAULTS,
}


def cusum_component(where: str, p: Mapping[str, Any], prefix: str = "cusum_") -> CusumComponent:
    """A :class:`CusumComponent` from validated parameters (see :data:`CUSUM_DEFAULTS`)."""
    return CusumComponent(
        alpha=check_float(where, "alpha", p["alpha"], low=0.0, high=1.0, low_open=True),
        drift=check_float(where, "drift", p["drift"], low=0.0),
        z_clip=check_float(where, "z_clip", p["z_clip"], low=0.0, low_open=True),
        relearn_after=check_int(where, "relearn_after", p["relearn_after"], low=1),
        prefix=prefix,
    )


class CusumDetector(CalibratedDetector):
    """Calibrated two-sided CUSUM against a slow baseline: sustained level shifts.

    Parameters: ``alpha`` (EW weight of the baseline, 0.005), ``drift`` (allowance per sample in
    spreads, 0.5), ``z_clip`` (largest step one sample adds, 4), ``relearn_after`` (24), and
    the calibration parameters of :data:`~detectors.calibration.CALIBRATION_DEFAULTS`.
    """

    kind = "cusum"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> CusumDetector:
        """Build from parameters; errors name the parameter."""
        p = merge_params(cls.kind, CUSUM_DEFAULTS, params)
        return cls([cusum_component(cls.kind, p)], p)


BURST_DEFAULTS: dict[str, Any] = {
    "alpha": 0.01,
    "short": 0.1,
    "z_clip": 4.0,
    "relearn_after": 24,
    **CALIBRATION_DEFAULTS,
}


def burst_component(where: str, p: Mapping[str, Any], prefix: str = "burst_") -> BurstComponent:
    """A :class:`BurstComponent` from validated parameters (see :data:`BURST_DEFAULTS`)."""
    return BurstComponent(
        alpha=check_float(where, "alpha", p["alpha"], low=0.0, high=1.0, low_open=True),
        short=check_float(where, "short", p["short"], low=0.0, high=1.0, low_open=True),
        z_clip=check_float(where, "z_clip", p["z_clip"], low=0.0, low_open=True),
        relearn_after=check_int(where, "relearn_after", p["relearn_after"], low=1),
        prefix=prefix,
    )


class BurstDetector(CalibratedDetector):
    """Calibrated short-term spread against a slow baseline: a series turning erratic.

    Parameters: ``alpha`` (EW weight of the baseline, 0.01), ``short`` (EW weight of a sample in
    the short mean of z^2, 0.1), ``z_clip`` (4), ``relearn_after`` (24), and the calibration
    parameters of :data:`~detectors.calibration.CALIBRATION_DEFAULTS`.
    """

    kind = "burst"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BurstDetector:
        """Build from parameters; errors name the parameter."""
        p = merge_params(cls.kind, BURST_DEFAULTS, params)
        return cls([burst_component(cls.kind, p)], p)
