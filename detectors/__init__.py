"""Pure computation over metric samples: series identity, sample batches, detectors, signals.

Nothing in this package performs I/O or reads the clock: time comes from the samples themselves.
"""

from detectors.bank import DEFAULT_DETECTOR, DetectorBank, DetectorSpec, build_detector, detector_names
from detectors.base import Detector, DetectorError
from detectors.batch import SampleBatch
from detectors.calibration import CalibratedDetector, TailCalibrator
from detectors.drift import DriftDetector
from detectors.forecast import Forecaster
from detectors.forecasters import DEFAULT_FORECASTER, build_forecaster
from detectors.series import SeriesKey, SeriesRegistry
from detectors.signal import Signal, SignalKind
from detectors.streaming import StreamingDetector

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_FORECASTER",
    "CalibratedDetector",
    "Detector",
    "DetectorBank",
    "DetectorError",
    "DetectorSpec",
    "DriftDetector",
    "Forecaster",
    "SampleBatch",
    "SeriesKey",
    "SeriesRegistry",
    "Signal",
    "SignalKind",
    "StreamingDetector",
    "TailCalibrator",
    "build_detector",
    "build_forecaster",
    "detector_names",
]
