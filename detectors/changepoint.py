"""Level shifts: a two-sided CUSUM per series, what catches a bad rollout.

Each sample is standardised against a slowly learned baseline (an exponentially weighted mean
and spread) and clipped to ``±z_clip``, so one spike cannot trip it; the CUSUM sums
``g+ = max(0, g+ + z - drift)`` and ``g- = max(0, g- - z - drift)`` accumulate a sustained
move in either direction and the raw score is ``max(g+, g-)``. The baseline does not learn from
flagged samples (only a clipped step); after ``relearn_after`` flagged samples in a row, the new
level is the run's mean and both sums restart from zero.
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
from detectors.streaming import ArraySpec, check_float, check_int, merge_params


class CusumComponent(Component):
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
        self.prefix = prefix
        self.alpha = alpha
        self.drift = drift
        self.z_clip = z_clip
        self.relearn_after = relearn_after
        self._z: FloatArray = np.empty(0)
        self._gp: FloatArray = np.empty(0)
        self._gn: FloatArray = np.empty(0)

    def array_specs(self) -> list[ArraySpec]:
        """Baseline mean, variance, count, the two sums and the flagged-run tracker."""
        p = self.prefix
        return [
            ArraySpec(f"{p}mean", np.float64, 0.0),
            ArraySpec(f"{p}var", np.float64, 0.0),
            ArraySpec(f"{p}n", np.float32, 0.0),
            ArraySpec(f"{p}gp", np.float32, 0.0),
            ArraySpec(f"{p}gn", np.float32, 0.0),
            *run_specs(p),
        ]

    def raw(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """``max(g+, g-)`` after this sample; 0 for the first two samples of a series."""
        del ts
        p = self.prefix
        mean = self.s[f"{p}mean"][ids]
        var = self.s[f"{p}var"][ids].astype(np.float64)
        n = self.s[f"{p}n"][ids]
        floor = spread_floor(mean)
        sd = np.sqrt(var + floor * floor)
        z = np.where(n >= 2, np.clip((values - mean) / sd, -self.z_clip, self.z_clip), 0.0)
        self._z = z
        self._gp = np.maximum(0.0, self.s[f"{p}gp"][ids] + z - self.drift)
        self._gn = np.maximum(0.0, self.s[f"{p}gn"][ids] - z - self.drift)
        return np.maximum(self._gp, self._gn)

    def learn(self, ids: IdArray, ts: FloatArray, values: FloatArray, flagged: BoolArray) -> None:
        """Keep the sums; the baseline moves freely only on unflagged samples."""
        del ts
        p = self.prefix
        s = self.s
        n = s[f"{p}n"][ids].astype(np.float64)
        mean = s[f"{p}mean"][ids]
        var = s[f"{p}var"][ids].astype(np.float64)
        a = np.maximum(self.alpha, 1.0 / (n + 1.0))
        floor = spread_floor(mean)
        sd = np.sqrt(var + floor * floor)
        r = np.where(n >= 2, self._z * sd, values - mean)  # the clipped deviation
        r = np.where(flagged, r * 0.1, r)
        relearn, run_mean = track_runs(s, p, ids, values, flagged, self.relearn_after)
        s[f"{p}mean"][ids] = np.where(relearn, run_mean, mean + a * r)
        s[f"{p}var"][ids] = (1.0 - a) * (var + a * r * r)
        s[f"{p}gp"][ids] = np.where(relearn, 0.0, self._gp)
        s[f"{p}gn"][ids] = np.where(relearn, 0.0, self._gn)
        s[f"{p}n"][ids] = n + 1.0

    def details(self, series_id: int) -> dict[str, Any]:
        """The baseline and the two sums."""
        p = self.prefix
        return {
            f"{p}mean": float(self.s[f"{p}mean"][series_id]),
            f"{p}up": float(self.s[f"{p}gp"][series_id]),
            f"{p}down": float(self.s[f"{p}gn"][series_id]),
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
