"""The learned detectors by configuration name.

Every name maps to a factory taking the detector's parameters (a mapping, validated by the
detector with errors that name the parameter). ``pyod_<model>`` names fix the PyOD model;
``pyod`` takes it as the ``model`` parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from detectors.base import DetectorError
from detectors.changepoint import BurstDetector, CusumDetector
from detectors.ensemble import ENSEMBLE_CV_GRID, EnsembleDetector
from detectors.novelty import NoveltyDetector
from detectors.pyod_window import MODELS, PyodWindowDetector
from detectors.robust import EwmaDetector, RobustZDetector
from detectors.seasonal import SeasonalDetector
from detectors.streaming import Factory, StreamingDetector

#: The default detector: the calibrated ensemble.
DEFAULT = "ensemble"

#: The score at which the cluster (k8s/agent-config.yaml) and the replays raise an anomaly from
#: the default detector: a tail probability of 10**-5.5 (about 3e-6) per sample, so a series
#: sampled every 15 s, as the shipped config does, raises about one false alarm in 55 days. It is a
#: threshold on the same calibrated score ``aiops detect`` reports; ``aiops nab`` scores it too.
ALARM_SCORE = 0.55

#: Parameter candidates cross-validated per detector (the first is its default parameters).
CV_GRIDS: Mapping[str, tuple[Mapping[str, Any], ...]] = MappingProxyType({"ensemble": ENSEMBLE_CV_GRID})


def _pyod_named(model: str) -> Factory:
    def build(params: Mapping[str, Any]) -> StreamingDetector:
        if "model" in params and params["model"] != model:
            msg = f"pyod_{model.lower()}.model: fixed to {model!r} by the name; use 'pyod' to choose"
            raise DetectorError(msg)
        return PyodWindowDetector({**params, "model": model}, name=f"pyod_{model.lower()}")

    return build


#: Learned detectors by name (read-only).
LEARNED: Mapping[str, Factory] = MappingProxyType(
    {
        "ensemble": EnsembleDetector.from_params,
        "ewma": EwmaDetector.from_params,
        "robust_z": RobustZDetector.from_params,
        "seasonal": SeasonalDetector.from_params,
        "cusum": CusumDetector.from_params,
        "burst": BurstDetector.from_params,
        "novelty": NoveltyDetector.from_params,
        "pyod": PyodWindowDetector.from_params,
        **{f"pyod_{m.lower()}": _pyod_named(m) for m in MODELS},
    }
)


def build_learned(name: str, params: Mapping[str, Any]) -> StreamingDetector:
    """A fresh learned detector ``name`` built from ``params``."""
    factory = LEARNED.get(name)
    if factory is None:
        msg = f"unknown detector {name!r}; learned detectors: {sorted(LEARNED)}"
        raise DetectorError(msg)
    return factory(params)
