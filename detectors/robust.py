"""Distance from a learned level in units of a learned spread: robust rolling z and EWMA.

``robust_z``: the median and MAD of a window of each series' recent values (a ring buffer per
series); the raw score is ``|x - median| / (1.4826 MAD)`` (the mean absolute deviation stands in
when the MAD is 0, as on a series that is mostly constant).

``ewma``: an exponentially weighted mean and variance per series; the raw score is
``|x - mean| / sd``. Cheap (four numbers per series) and the first component of the default
ensemble.

Both clip what they learn from a flagged sample to ``clip`` spreads from the level, and after
``relearn_after`` flagged samples in a row take the run's mean as the new level.
"""

from __future__ import annotations

import warnings
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
from detectors.streaming import ArraySpec, SeriesState, check_float, check_int, merge_params

#: Relative floor of the spread: changes smaller than this fraction of the level never score.
REL_FLOOR = 1e-6
ABS_FLOOR = 1e-9


def spread_floor(level: FloatArray) -> FloatArray:
    """The smallest spread a series is judged with (a constant series still has one)."""
    return REL_FLOOR * np.abs(level) + ABS_FLOOR


def learned_expectation(state: SeriesState, prefix: str, series_id: int) -> tuple[float, float] | None:
    """A series' learned mean and the spread it is judged with (``PREFIXmean``, ``PREFIXvar`` and
    the floor), once it has two samples (``PREFIXn``); None before."""
    if state[f"{prefix}n"][series_id] < 2:
        return None
    mean = float(state[f"{prefix}mean"][series_id])
    floor = float(spread_floor(np.array([mean]))[0])
    return mean, float(np.sqrt(float(state[f"{prefix}var"][series_id]) + floor * floor))


class EwmaComponent(Component):
    """Exponentially weighted mean and variance; raw score ``|x - mean| / sd``."""

    def __init__(self, *, alpha: float, clip: float, relearn_after: int, prefix: str = "ewma_") -> None:
        self.prefix = prefix
        self.alpha = alpha
        self.clip = clip
        self.relearn_after = relearn_after
        self._r: FloatArray = np.empty(0)
        self._sd: FloatArray = np.empty(0)

    def array_specs(self) -> list[ArraySpec]:
        """Mean, variance and count per series, and the flagged-run tracker."""
        p = self.prefix
        return [
            ArraySpec(f"{p}mean", np.float64, 0.0),
            ArraySpec(f"{p}var", np.float64, 0.0),
            ArraySpec(f"{p}n", np.float32, 0.0),
            *run_specs(p),
        ]

    def raw(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """``|x - mean| / sd``; 0 for the first two samples of a series."""
        del ts
        mean = self.s[f"{self.prefix}mean"][ids]
        var = self.s[f"{self.prefix}var"][ids].astype(np.float64)
        n = self.s[f"{self.prefix}n"][ids]
        floor = spread_floor(mean)
        self._r = values - mean
        self._sd = np.sqrt(var + floor * floor)
        return np.where(n >= 2, np.abs(self._r) / self._sd, 0.0)

    def learn(self, ids: IdArray, ts: FloatArray, values: FloatArray, flagged: BoolArray) -> None:
        """EW update, clipped for flagged samples; a sustained run becomes the new mean."""
        del ts
        p = self.prefix
        mean_a, var_a, n_a = self.s[f"{p}mean"], self.s[f"{p}var"], self.s[f"{p}n"]
        n = n_a[ids].astype(np.float64)
        a = np.maximum(self.alpha, 1.0 / (n + 1.0))
        lim = self.clip * self._sd
        r = np.where(flagged, np.clip(self._r, -lim, lim), self._r)
        mean = mean_a[ids] + a * r
        # a flagged sample does not widen the spread it was judged by
        var = np.where(flagged, var_a[ids], (1.0 - a) * (var_a[ids] + a * r * r))
        relearn, run_mean = track_runs(self.s, p, ids, values, flagged, self.relearn_after)
        mean_a[ids] = np.where(relearn, run_mean, mean)
        var_a[ids] = var
        n_a[ids] = n + 1.0

    def details(self, series_id: int) -> dict[str, Any]:
        """The learned mean and standard deviation."""
        p = self.prefix
        return {
            f"{p}mean": float(self.s[f"{p}mean"][series_id]),
            f"{p}sd": float(np.sqrt(self.s[f"{p}var"][series_id])),
        }

    def expectation(self, series_id: int) -> tuple[float, float] | None:
        """The learned mean and its spread (with the floor a sample is judged with)."""
        return learned_expectation(self.s, self.prefix, series_id)


class RobustWindowComponent(Component):
    """Median and MAD of the last ``window`` values; raw score ``|x - median| / (1.4826 MAD)``."""

    def __init__(self, *, window: int, clip: float, relearn_after: int, prefix: str = "robust_") -> None:
        self.prefix = prefix
        self.window = window
        self.clip = clip
        self.relearn_after = relearn_after
        self._med: FloatArray = np.empty(0)
        self._scale: FloatArray = np.empty(0)

    def array_specs(self) -> list[ArraySpec]:
        """A ring buffer of recent values, its write position and fill count, the run tracker."""
        p = self.prefix
        return [
            ArraySpec(f"{p}buf", np.float32, np.nan, self.window),
            ArraySpec(f"{p}pos", np.int32, 0),
            ArraySpec(f"{p}n", np.int32, 0),
            *run_specs(p),
        ]

    def raw(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """``|x - median| / scale`` over the window; 0 until the window holds 3 values."""
        del ts
        buf = self.s[f"{self.prefix}buf"][ids].astype(np.float64)
        n = self.s[f"{self.prefix}n"][ids]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows of new series
            if bool((n >= self.window).all()):
                med = np.median(buf, axis=1)
                dev = np.abs(buf - med[:, None])
                mad = np.median(dev, axis=1)
                mean_ad = dev.mean(axis=1)
            else:
                med = np.nanmedian(buf, axis=1)
                dev = np.abs(buf - med[:, None])
                mad = np.nanmedian(dev, axis=1)
                mean_ad = np.nanmean(dev, axis=1)
        med = np.nan_to_num(med)
        scale = np.where(mad > 0, 1.4826 * mad, 1.2533 * np.nan_to_num(mean_ad))
        scale = np.maximum(scale, spread_floor(med))
        self._med, self._scale = med, scale
        return np.where(n >= 3, np.abs(values - med) / scale, 0.0)

    def learn(self, ids: IdArray, ts: FloatArray, values: FloatArray, flagged: BoolArray) -> None:
        """Push the value (clipped if flagged); a sustained run moves the whole window."""
        del ts
        p = self.prefix
        buf, pos_a, n_a = self.s[f"{p}buf"], self.s[f"{p}pos"], self.s[f"{p}n"]
        lim = self.clip * self._scale
        x = np.where(flagged, np.clip(values, self._med - lim, self._med + lim), values)
        pos = pos_a[ids]
        buf[ids, pos] = x
        pos_a[ids] = (pos + 1) % self.window
        n_a[ids] = np.minimum(n_a[ids] + 1, self.window)
        relearn, run_mean = track_runs(self.s, p, ids, values, flagged, self.relearn_after)
        if bool(relearn.any()):
            rid = ids[relearn]
            shift = run_mean[relearn] - self._med[relearn]
            buf[rid] = buf[rid] + shift[:, None].astype(np.float32)

    def details(self, series_id: int) -> dict[str, Any]:
        """The window's current median."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = float(np.nanmedian(self.s[f"{self.prefix}buf"][series_id]))
        return {f"{self.prefix}median": med}


EWMA_DEFAULTS: dict[str, Any] = {"alpha": 0.02, "clip": 3.0, "relearn_after": 12, **CALIBRATION_DEFAULTS}
ROBUST_DEFAULTS: dict[str, Any] = {"window": 64, "clip": 3.0, "relearn_after": 12, **CALIBRATION_DEFAULTS}


def ewma_component(where: str, params: Mapping[str, Any], prefix: str = "ewma_") -> EwmaComponent:
    """An :class:`EwmaComponent` from validated ``alpha``, ``clip``, ``relearn_after``."""
    return EwmaComponent(
        alpha=check_float(where, "alpha", params["alpha"], low=0.0, high=1.0, low_open=True),
        clip=check_float(where, "clip", params["clip"], low=0.0, low_open=True),
        relearn_after=check_int(where, "relearn_after", params["relearn_after"], low=1),
        prefix=prefix,
    )


class EwmaDetector(CalibratedDetector):
    """Calibrated ``|x - EW mean| / EW sd`` per series.

    Parameters: ``alpha`` (EW weight of a new sample, 0.02), ``clip`` (spreads a flagged sample
    is clipped to before it is learned, 3), ``relearn_after`` (flagged samples in a row after
    which their mean becomes the new level, 12), and the calibration parameters of
    :data:`~detectors.calibration.CALIBRATION_DEFAULTS`.
    """

    kind = "ewma"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EwmaDetector:
        """Build from parameters; errors name the parameter."""
        p = merge_params(cls.kind, EWMA_DEFAULTS, params)
        return cls([ewma_component(cls.kind, p)], p)


class RobustZDetector(CalibratedDetector):
    """Calibrated robust z-score: ``|x - median| / (1.4826 MAD)`` over a rolling window.

    Parameters: ``window`` (values per series, 64), ``clip`` (3), ``relearn_after`` (12), and
    the calibration parameters of :data:`~detectors.calibration.CALIBRATION_DEFAULTS`.
    """

    kind = "robust_z"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RobustZDetector:
        """Build from parameters; errors name the parameter."""
        p = merge_params(cls.kind, ROBUST_DEFAULTS, params)
        component = RobustWindowComponent(
            window=check_int(cls.kind, "window", p["window"], low=3, high=4096),
            clip=check_float(cls.kind, "clip", p["clip"], low=0.0, low_open=True),
            relearn_after=check_int(cls.kind, "relearn_after", p["relearn_after"], low=1),
        )
        return cls([component], p)
