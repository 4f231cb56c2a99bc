"""The default detector: several streaming components, calibrated per series, combined.

Each component sees every sample of a series and gives a raw score; each raw score is turned
into a tail probability by its own per-series :class:`~detectors.calibration.TailCalibrator`; the
ensemble's probability is the smallest one times the number of components (Bonferroni), reported
as ``-log10(p) / 10``. What one component misses another catches: ``seasonal`` a spike or a
value wrong for its time of day (a daily profile in 48 half-hour bins), ``cusum`` a small
sustained shift, ``burst`` a series turning erratic. ``ewma`` (a spike against the recent level)
can be added; on nab-dev it added false alarms more than detections.
A sample the ensemble flags is learned by no component as normal.

Parameters: ``components`` (names, default ``["seasonal", "cusum", "burst"]``, any of
``ewma``, ``seasonal``, ``cusum``, ``burst``), a mapping per component of its own parameters
(``{"seasonal": {"bins": 24}}``, see each family's defaults), and the calibration parameters of
:data:`~detectors.calibration.CALIBRATION_DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from detectors.base import DetectorError
from detectors.calibration import CALIBRATION_DEFAULTS, CalibratedDetector, Component
from detectors.changepoint import BURST_DEFAULTS, CUSUM_DEFAULTS, burst_component, cusum_component
from detectors.robust import EWMA_DEFAULTS, ewma_component
from detectors.seasonal import SEASONAL_DEFAULTS, seasonal_component
from detectors.streaming import merge_params


def _own(defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in defaults.items() if k not in CALIBRATION_DEFAULTS}


#: Each component's own parameters inside the ensemble, and how to build it.
_COMPONENTS: dict[str, tuple[dict[str, Any], Callable[[str, Mapping[str, Any]], Component]]] = {
    "ewma": ({**_own(EWMA_DEFAULTS), "alpha": 0.01}, ewma_component),
    "seasonal": ({**_own(SEASONAL_DEFAULTS), "bins": 48}, seasonal_component),
    "cusum": (_own(CUSUM_DEFAULTS), cusum_component),
    "burst": (_own(BURST_DEFAULTS), burst_component),
}

ENSEMBLE_DEFAULTS: dict[str, Any] = {
    "components": ["seasonal", "cusum", "burst"],
    **{name: {} for name in _COMPONENTS},
    **CALIBRATION_DEFAULTS,
}


class EnsembleDetector(CalibratedDetector):
    """Calibrated components (seasonal, CUSUM, burst by default) combined by the smallest tail p."""

    kind = "ensemble"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EnsembleDetector:
        """Build from parameters; errors name the parameter."""
        p = merge_params(cls.kind, ENSEMBLE_DEFAULTS, params)
        names = p["components"]
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names)
        ):
            msg = f"{cls.kind}.components: expected a non-empty list of distinct names, got {names!r}"
            raise DetectorError(msg)
        unknown = sorted(set(names) - set(_COMPONENTS))
        if unknown:
            msg = (
                f"{cls.kind}.components: unknown component(s) {unknown}; "
                f"expected some of {sorted(_COMPONENTS)}"
            )
            raise DetectorError(msg)
        components: list[Component] = []
        resolved: dict[str, Any] = dict(p)
        for name, (defaults, build) in _COMPONENTS.items():
            own = p[name]
            if not isinstance(own, Mapping):
                msg = f"{cls.kind}.{name}: expected a mapping of parameters, got {own!r}"
                raise DetectorError(msg)
            merged = merge_params(f"{cls.kind}.{name}", defaults, own)
            resolved[name] = merged
            if name in names:
                components.append(build(f"{cls.kind}.{name}", merged))
        resolved["components"] = list(names)
        return cls(components, resolved)
