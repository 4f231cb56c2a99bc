"""The DetectorBank: runs every configured detector over each batch and turns scores into Signals."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import Detector, DetectorError
from detectors.batch import SampleBatch, oldest_and_newest_per_series
from detectors.counters import CounterRates
from detectors.drift import DriftDetector
from detectors.forecast_detector import ForecastDetector
from detectors.freshness import SeriesFreshness
from detectors.hold import AlarmHold
from detectors.patterns import Pattern, compile_pattern
from detectors.ratio import RatioDetector
from detectors.registry import DEFAULT, LEARNED, build_learned
from detectors.series import SeriesRegistry
from detectors.signal import Signal
from detectors.streaming import StreamingDetector, score_to_p
from detectors.threshold import ThresholdDetector

#: Counters by the OpenMetrics naming convention: a counter's name ends in ``_total``.
COUNTER_METRICS = r".+_total"


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A detector, the score at or above which a sample raises a signal, and the metrics it runs on.

    ``metrics`` is a regular expression full-matched against each series' metric name
    (:attr:`SeriesKey.name`); the detector is given only the samples of matching series, and is
    not called for a batch that holds none. None runs the detector on every series.
    """

    detector: Detector
    min_score: float = 0.5
    metrics: str | None = None
    hold: AlarmHold | None = None
    """Keep an alarm up while its series stays away from its pre-alarm level (see detectors/hold.py)."""
    pattern: Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.min_score <= 1.0:
            msg = f"{self.detector.name}: min_score must be in (0, 1], got {self.min_score}"
            raise DetectorError(msg)
        if self.metrics is not None:
            object.__setattr__(self, "pattern", compile_metrics(self.detector.name, self.metrics))


def compile_metrics(owner: str, metrics: object) -> Pattern:
    """``metrics`` compiled as a regular expression; a DetectorError naming ``owner`` otherwise."""
    if not isinstance(metrics, str):
        msg = f"{owner}: metrics must be a regular expression string, got {metrics!r}"
        raise DetectorError(msg)
    try:
        return compile_pattern(metrics)
    except ValueError as exc:
        msg = f"{owner}: metrics {metrics[:100]!r}: {exc}"
        raise DetectorError(msg) from exc


class MetricFilter:
    """Which series' metric name full-matches a pattern, cached as a boolean mask by series id.

    The mask grows as the registry does: each new series is classified once (through a cache by
    metric name, so many series of one metric cost one regex match), and a batch is filtered
    with one numpy lookup, never a Python object per sample.
    """

    def __init__(self, series: SeriesRegistry, pattern: Pattern) -> None:
        self.series = series
        self.pattern = pattern
        self._by_name: dict[str, bool] = {}
        self._mask = np.zeros(0, dtype=bool)
        self._stale = np.zeros(0, dtype=bool)  # ids forgotten since classified: classify again
        self._any_stale = False
        self._known = 0

    def _classify(self, sid: int) -> bool:
        name = self.series.key(sid).name
        hit = self._by_name.get(name)
        if hit is None:
            hit = self._by_name[name] = self.pattern.fullmatch(name)
        return hit

    def _extend(self) -> None:
        n = self.series.capacity
        if n <= self._known:
            return
        if n > self._mask.shape[0]:
            size = max(n, 2 * self._mask.shape[0], 64)
            mask, stale = np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
            mask[: self._known] = self._mask[: self._known]
            stale[: self._known] = self._stale[: self._known]
            self._mask, self._stale = mask, stale
        for sid in range(self._known, n):
            try:
                self._mask[sid] = self._classify(sid)
            except KeyError:  # a free id (its series evicted): classified when it is given again
                self._stale[sid] = self._any_stale = True
        self._known = n

    def forget(self, ids: npt.NDArray[np.int64]) -> None:
        """The series of ``ids`` were evicted: their ids will name other series."""
        ids = ids[ids < self._known]
        if ids.size:
            self._stale[ids] = True
            self._any_stale = True

    def select(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """True where the series of ``ids`` (registered, non-negative ids) matches the pattern."""
        if ids.size == 0:
            return np.zeros(0, dtype=bool)
        if self._any_stale:
            classified = ids[ids < self._known]
            stale = np.unique(classified[self._stale[classified]])
            for sid in stale.tolist():
                self._mask[sid] = self._classify(sid)
            self._stale[stale] = False
            self._any_stale = bool(self._stale[: self._known].any())
        if int(ids.max()) >= self._known:
            self._extend()
            if int(ids.max()) >= self._known:  # ids the registry does not know match nothing
                inside = ids < self._known
                out = np.zeros(ids.size, dtype=bool)
                out[inside] = self._mask[ids[inside]]
                return out
        return self._mask[ids]


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
    # Forecasts (detectors/forecast_detector.py): signals of kind forecast, not anomalies; also
    # left out of detector_names() and the NAB table.
    if name == ForecastDetector.name:
        return ForecastDetector.from_params(params, series)
    # Ratios with their counts (detectors/ratio.py): a pair of series per signal; not in the table.
    if name == RatioDetector.name:
        return RatioDetector.from_params(params, series)
    msg = f"unknown detector {name!r}; built-in detectors: {detector_names()}"
    raise DetectorError(msg)


def detector_names() -> list[str]:
    """The names :func:`build_detector` accepts (keep in step with it)."""
    return ["threshold", *sorted(LEARNED)]


@dataclass(slots=True)
class DetectorBank:
    """Runs detectors over batches; at most one signal per detector and series per batch.

    When several samples of a series cross the bar in one batch, the newest one is reported (its
    score is the highest among them where scores tie), with the time of the oldest one in its
    details as ``since``: what one sample at a time would have signalled first. A spec with
    ``metrics`` sees only the samples of the series whose metric name matches. A signal's value is
    the sample's, unless the detector has the optional ``signal_value(series_id)`` hook (see
    :class:`~detectors.base.Detector`) and it returns a number: a forecast's upper bound, say.
    """

    series: SeriesRegistry
    specs: Sequence[DetectorSpec]
    signals_out: dict[str, int] = field(default_factory=dict)
    counters: str | None = COUNTER_METRICS
    """Metric names (full match) that are counters: learned detectors see their rates."""
    freshness: SeriesFreshness = field(init=False)
    """When each series last reported and how often: the evidence the playbook engine checks."""
    _filters: dict[str, MetricFilter] = field(default_factory=dict, init=False, repr=False)
    _rates: CounterRates = field(default_factory=CounterRates, init=False, repr=False)

    def __post_init__(self) -> None:
        self.freshness = SeriesFreshness(self.series)

    def process(self, batch: SampleBatch) -> list[Signal]:
        """Score ``batch`` with every detector and return the resulting signals.

        Learned detectors (:class:`~detectors.streaming.StreamingDetector`) see the samples of
        counter series as rates (:mod:`detectors.counters`); rule-based ones see values as sent.
        """
        batch = batch.without_dropped()
        if len(batch) == 0:
            return []
        self.freshness.observe(batch)
        signals: list[Signal] = []
        subsets: dict[str, SampleBatch] = {}
        rated: SampleBatch | None = None
        rated_subsets: dict[str, SampleBatch] = {}
        for spec in self.specs:
            if isinstance(spec.detector, StreamingDetector):
                if rated is None:
                    rated = self._counters_as_rates(batch)
                source, cache = rated, rated_subsets
            else:
                source, cache = batch, subsets
            seen = source if spec.metrics is None else self._subset(spec, spec.metrics, source, cache)
            if len(seen):
                signals.extend(self._signals(spec, seen))
        return signals

    def forget(self, ids: npt.NDArray[np.int64]) -> None:
        """Forget the series of ``ids`` everywhere (evicted: the ids will name new series).

        Every detector and hold must be able to (``forget(ids)``); see :meth:`can_forget`.
        """
        if ids.size == 0:
            return
        for spec in self.specs:
            spec.detector.forget(ids)  # type: ignore[attr-defined]
            if spec.hold is not None:
                spec.hold.forget(ids)
        for metric_filter in self._filters.values():
            metric_filter.forget(ids)
        self._rates.forget(ids)
        self.freshness.forget(ids)

    def can_forget(self) -> list[str]:
        """The detectors that cannot forget a series (eviction needs none)."""
        return [
            spec.detector.name for spec in self.specs if not callable(getattr(spec.detector, "forget", None))
        ]

    def _counters_as_rates(self, batch: SampleBatch) -> SampleBatch:
        """``batch`` with the samples of counter series replaced by their rates (those without
        a rate left out); the same batch when it holds no counter."""
        if self.counters is None:
            return batch
        counter_filter = self._filters.get(self.counters)
        if counter_filter is None:
            pattern = compile_metrics("counters", self.counters)
            counter_filter = self._filters[self.counters] = MetricFilter(self.series, pattern)
        is_counter = counter_filter.select(batch.series)
        if not bool(is_counter.any()):
            return batch
        return SampleBatch.concat([batch.select(~is_counter), self._rates.rates(batch.select(is_counter))])

    def _subset(
        self, spec: DetectorSpec, metrics: str, batch: SampleBatch, subsets: dict[str, SampleBatch]
    ) -> SampleBatch:
        """The samples of ``batch`` whose metric matches ``metrics`` (once per pattern and batch)."""
        subset = subsets.get(metrics)
        if subset is not None:
            return subset
        metric_filter = self._filters.get(metrics)
        if metric_filter is None:  # specs with the same pattern share one mask
            pattern = spec.pattern or compile_metrics(spec.detector.name, metrics)
            metric_filter = self._filters[metrics] = MetricFilter(self.series, pattern)
        keep = metric_filter.select(batch.series)
        subset = batch if int(np.count_nonzero(keep)) == len(batch) else batch.select(keep)
        subsets[metrics] = subset
        return subset

    def _signals(self, spec: DetectorSpec, batch: SampleBatch) -> list[Signal]:
        scores = spec.detector.update(batch)
        if spec.hold is not None:
            scores = spec.hold.apply(batch.series, batch.timestamps, batch.values, scores, spec.min_score)
        hit = np.flatnonzero(scores >= spec.min_score)
        if hit.size == 0:
            return []
        # one signal per series and batch, its newest hit; an earlier hit of the batch goes with it
        # as ``since``, so the incident it opens has the id it would have had sample by sample
        first, last = oldest_and_newest_per_series(batch.series[hit], batch.timestamps[hit])
        oldest, newest = hit[first], hit[last]
        hook: Callable[[int], float | None] | None = getattr(spec.detector, "signal_value", None)
        tail_p = bool(getattr(spec.detector, "scores_are_tail_p", False))
        signals: list[Signal] = []
        for i, first in zip(newest.tolist(), oldest.tolist(), strict=True):  # both in series order
            sid = int(batch.series[i])
            value = hook(sid) if hook is not None else None
            details = spec.detector.signal_details(sid)
            if batch.timestamps[first] < batch.timestamps[i]:
                details = {**details, "since": float(batch.timestamps[first])}
            if tail_p and "p_value" not in details:  # the score stands for a tail probability
                details["p_value"] = score_to_p(float(scores[i]))
            signals.append(
                Signal(
                    kind=spec.detector.signal_kind,
                    series=self.series.key(sid),
                    timestamp=float(batch.timestamps[i]),
                    value=float(batch.values[i]) if value is None else float(value),
                    score=float(scores[i]),
                    detector=spec.detector.name,
                    details=details,
                )
            )
        name = spec.detector.name
        self.signals_out[name] = self.signals_out.get(name, 0) + len(signals)
        return signals
