"""The DetectorBank: runs every configured detector over each batch and turns scores into Signals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.base import Detector, DetectorError
from detectors.batch import SampleBatch
from detectors.drift import DriftDetector
from detectors.registry import DEFAULT, LEARNED, build_learned
from detectors.series import SeriesRegistry
from detectors.signal import Signal
from detectors.threshold import ThresholdDetector


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A detector and the score at or above which a sample raises a signal."""

    detector: Detector
    min_score: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.min_score <= 1.0:
            msg = f"{self.detector.name}: min_score must be in (0, 1], got {self.min_score}"
            raise DetectorError(msg)


#: The detector ``aiops detect`` uses when none is named: the calibrated ensemble.
DEFAULT_DETECTOR = DEFAULT


def build_detector(name: str, params: Mapping[str, Any], series: SeriesRegistry) -> Detector:
    """Construct a built-in detector by its configuration name."""
    if name == "threshold":
        return ThresholdDetector.from_params(params, series)
    if name in LEARNED:
        return build_learned(name, params)
    # Drift of ML models (detectors/drift.py): a detector by protocol, not an anomaly detector,
    # so it is left out of detector_names() and of the NAB table.
    if name == DriftDetector.name:
        return DriftDetector.from_params(params, series)
    msg = f"unknown detector {name!r}; built-in detectors: {detector_names()}"
    raise DetectorError(msg)


def detector_names() -> list[str]:
    """The names :func:`build_detector` accepts (keep in step with it)."""
    return ["threshold", *sorted(LEARNED)]


@dataclass(slots=True)
class DetectorBank:
    """Runs detectors over batches; at most one signal per detector and series per batch.

    When several samples of a series cross the bar in one batch, the newest one is reported
    (its score is the highest among them where scores tie).
    """

    series: SeriesRegistry
    specs: Sequence[DetectorSpec]
    signals_out: dict[str, int] = field(default_factory=dict)

    def process(self, batch: SampleBatch) -> list[Signal]:
        """Score ``batch`` with every detector and return the resulting signals."""
        batch = batch.without_dropped()
        if len(batch) == 0:
            return []
        signals: list[Signal] = []
        for spec in self.specs:
            scores = spec.detector.update(batch)
            hit = np.flatnonzero(scores >= spec.min_score)
            if hit.size == 0:
                continue
            # newest hit per series: sort hits by (series, timestamp) and keep each group's last
            order = hit[np.lexsort((batch.timestamps[hit], batch.series[hit]))]
            s = batch.series[order]
            last = np.ones(order.size, dtype=bool)
            last[:-1] = s[1:] != s[:-1]
            for i in order[last].tolist():
                sid = int(batch.series[i])
                signals.append(
                    Signal(
                        kind=spec.detector.signal_kind,
                        series=self.series.key(sid),
                        timestamp=float(batch.timestamps[i]),
                        value=float(batch.values[i]),
                        score=float(scores[i]),
                        detector=spec.detector.name,
                        details=spec.detector.signal_details(sid),
                    )
                )
            name = spec.detector.name
            self.signals_out[name] = self.signals_out.get(name, 0) + int(last.sum())
        return signals
