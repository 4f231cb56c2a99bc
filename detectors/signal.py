"""Signals: the few, small events detectors hand to the rest of the agent."""

from __future__ import annotations

import enum
import math
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

    @property
    def forecast_mean(self) -> float | None:
        """A forecast's point value (its highest point forecast over the horizon); None otherwise."""
        return self._forecast_number("forecast_mean")

    @property
    def capacity_per_pod(self) -> float | None:
        """A forecast's measured capacity per pod (what one ready pod serves at full utilisation)."""
        value = self._forecast_number("capacity_per_pod")
        return value if value is not None and value > 0 else None

    @property
    def observed_peak(self) -> float | None:
        """A forecast's observed peak: the highest value its series took over the last horizon."""
        return self._forecast_number("observed_peak")

    def _forecast_number(self, name: str) -> float | None:
        value = self.details.get(name) if self.kind is SignalKind.FORECAST else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value)

    @classmethod
    def from_dict(cls, data: object) -> Signal:
        """The signal :meth:`to_dict` wrote; ValueError naming the field that is wrong."""
        if not isinstance(data, dict):
            msg = f"a signal must be a JSON object, got {type(data).__name__}"
            raise ValueError(msg)
        try:
            kind = SignalKind(str(data.get("kind")))
        except ValueError as exc:
            msg = f"signal field 'kind': {data.get('kind')!r} is not one of {[k.value for k in SignalKind]}"
            raise ValueError(msg) from exc
        metric, labels, details = data.get("metric"), data.get("labels", {}), data.get("details", {})
        if not isinstance(metric, str) or not metric:
            raise ValueError("signal field 'metric' must be a non-empty string")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise ValueError("signal field 'labels' must be an object of strings")
        if not isinstance(details, dict):
            raise ValueError("signal field 'details' must be an object")
        numbers = {}
        for name in ("timestamp", "value", "score"):
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                msg = f"signal field {name!r} must be a number, got {value!r}"
                raise ValueError(msg)
            numbers[name] = float(value)
        detector = data.get("detector")
        if not isinstance(detector, str):
            raise ValueError("signal field 'detector' must be a string")
        return cls(
            kind,
            SeriesKey.of(metric, labels),
            numbers["timestamp"],
            numbers["value"],
            numbers["score"],
            detector,
            details,
        )

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
