"""Signals: the few, small events detectors hand to the rest of the agent."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from detectors.series import SeriesKey


class SignalKind(enum.StrEnum):
    """What kind of evidence a signal carries; playbooks trigger on these names."""

    ANOMALY = "anomaly"
    FORECAST = "forecast"
    DRIFT = "drift"
    THRESHOLD = "threshold"
    ALERT = "alert"


@dataclass(frozen=True, slots=True)
class Signal:
    """One detection on one series at one event time."""

    kind: SignalKind
    series: SeriesKey
    timestamp: float
    value: float
    score: float
    detector: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        """The metric name of the series."""
        return self.series.name

    @property
    def labels(self) -> dict[str, str]:
        """The labels of the series."""
        return self.series.label_dict

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (the wire form on the signals topic and in logs)."""
        return {
            "kind": self.kind.value,
            "metric": self.series.name,
            "labels": self.series.label_dict,
            "timestamp": self.timestamp,
            "value": self.value,
            "score": self.score,
            "detector": self.detector,
            "details": self.details,
        }
