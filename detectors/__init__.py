"""Pure computation over metric samples: series identity, sample batches, detectors, signals.

Nothing in this package performs I/O or reads the clock: time comes from the samples themselves.
"""

from detectors.bank import DetectorBank, DetectorSpec, build_detector
from detectors.base import Detector, DetectorError
from detectors.batch import SampleBatch
from detectors.series import SeriesKey, SeriesRegistry
from detectors.signal import Signal, SignalKind

__all__ = [
    "Detector",
    "DetectorBank",
    "DetectorError",
    "DetectorSpec",
    "SampleBatch",
    "SeriesKey",
    "SeriesRegistry",
    "Signal",
    "SignalKind",
    "build_detector",
]
