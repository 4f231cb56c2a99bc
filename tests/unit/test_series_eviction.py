"""A bounded series table: idle series are evicted on the injected clock, their state forgotten and
their ids reused; one source cannot take more than its share. 100k junk series no longer blind
detection until a restart."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
import pytest

from agent.clock import ManualClock
from agent.engine import Engine
from agent.metrics import AgentMetrics
from agent.sinks import CollectingSink
from agent.sources.base import Polled
from agent.sources.kafka_formats import SampleDecoder
from detectors import DetectorBank, DetectorSpec, SeriesKey, SeriesRegistry
from detectors.series import DROPPED
from detectors.threshold import ThresholdDetector

T0 = 1_780_000_000.0
HOUR = 3600.0


class DecodingSource:
    """Adapter messages decoded as the Kafka source decodes them (same decoder, same caches)."""

    name = "kafka"
    ready = True

    def __init__(self, registry: SeriesRegistry, clock: ManualClock) -> None:
        self.decoder = SampleDecoder(registry, owner="kafka")
        self.clock = clock
        self.queue: list[list[bytes]] = []

    def push(self, messages: Sequence[bytes]) -> None:
        self.queue.append(list(messages))

    def start(self) -> None:
        pass

    def poll(self, timeout: float) -> Polled | None:
        if not self.queue:
            return None
        batch, errors = self.decoder.decode(self.queue.pop(0), self.clock.now())
        assert errors == []
        return Polled(self.name, batch, None)

    def commit(self, polled: Polled) -> None:
        pass

    def close(self) -> None:
        pass

    def forget_series(self) -> None:
        self.decoder.forget_series()


def samples(name: str, count: int, ts: float, value: float = 1.0, prefix: str = "j") -> list[bytes]:
    rows = [
        {"name": name, "labels": {"pod": f"{prefix}{i}"}, "value": value, "timestamp": ts}
        for i in range(count)
    ]
    return [orjson.dumps(rows[i : i + 5000]) for i in range(0, count, 5000)]


def agent(
    limit: int, per_source: int | None = None
) -> tuple[Engine, DecodingSource, CollectingSink, ManualClock]:
    clock = ManualClock(T0)
    registry = SeriesRegistry(limit=limit, per_owner=per_source)
    detector = ThresholdDetector.from_params({"rules": [{"metric": "errors", "above": 0.5}]}, registry)
    bank = DetectorBank(registry, [DetectorSpec(detector)])
    source = DecodingSource(registry, clock)
    sink = CollectingSink()
    engine = Engine([source], bank, [sink], clock, AgentMetrics(), series_idle=HOUR, evict_every=60.0)
    return engine, source, sink, clock


def drain(engine: Engine, source: DecodingSource) -> None:
    while source.queue:
        engine.run_once()


def test_100k_junk_series_then_a_new_real_series_is_detected_after_eviction() -> None:
    engine, source, sink, clock = agent(limit=100_000)
    registry = engine.bank.series
    source.push(samples("junk", 100_000, T0))
    drain(engine, source)
    assert len(registry) == 100_000

    source.push(samples("errors", 1, T0 + 60, value=0.9, prefix="checkout"))
    drain(engine, source)
    assert sink.signals == [], "the table is full: the real series is refused"
    assert registry.dropped == 1

    clock.advance(HOUR + 61)  # the junk producer stopped an hour ago
    source.push(samples("errors", 1, clock.now(), value=0.9, prefix="checkout"))
    drain(engine, source)
    assert registry.evicted == 100_000
    assert len(registry) == 1
    assert [s.series for s in sink.signals] == [SeriesKey.of("errors", {"pod": "checkout0"})]
    assert engine.metrics.series_evicted._value.get() == 100_000


def test_a_series_that_keeps_reporting_is_not_evicted_and_keeps_its_state() -> None:
    engine, source, _, clock = agent(limit=10)
    for step in range(5):
        source.push(samples("errors", 1, clock.now(), value=0.1, prefix="api"))
        if step == 0:
            source.push(samples("junk", 5, clock.now()))
        drain(engine, source)
        clock.advance(HOUR / 2)
    registry = engine.bank.series
    registered = registry.keys()
    assert [k.name for k in registered] == ["errors"]
    assert registry.evicted == 5
    # the detector still knows the series (a rate limit needs its previous sample)
    detector = engine.bank.specs[0].detector
    sid = registry.lookup(SeriesKey.of("errors", {"pod": "api0"}))
    assert sid is not None
    assert detector._last_ts[sid] == clock.now() - HOUR / 2  # type: ignore[attr-defined]


def test_a_reused_id_does_not_inherit_the_evicted_series_state() -> None:
    engine, source, sink, clock = agent(limit=1)
    source.push(samples("errors", 1, clock.now(), value=0.9, prefix="old"))  # an alarm on "old"
    drain(engine, source)
    assert len(sink.signals) == 1
    clock.advance(HOUR + 61)
    source.push(samples("errors", 1, clock.now(), value=0.1, prefix="new"))
    drain(engine, source)
    assert len(sink.signals) == 1, "the new series under the old id raises nothing"
    assert engine.bank.series.keys() == [SeriesKey.of("errors", {"pod": "new0"})]
    # the decoder's cache does not map the old series to the reused id any more
    source.push(samples("errors", 1, clock.now() + 1, value=0.9, prefix="old"))
    drain(engine, source)
    assert engine.bank.series.keys() == [SeriesKey.of("errors", {"pod": "new0"})]  # table full: refused


def test_one_source_cannot_fill_the_table() -> None:
    registry = SeriesRegistry(limit=10, per_owner=6)
    assert registry.ids_for([SeriesKey.of("m", {"i": str(i)}) for i in range(8)], "kafka") == [
        0, 1, 2, 3, 4, 5, DROPPED, DROPPED,
    ]  # fmt: skip
    assert registry.refused_by_owner == {"kafka": 2}
    assert registry.id_for(SeriesKey.of("up", {}), "prometheus") == 6
    assert registry.owned("kafka") == 6
    assert registry.owned("prometheus") == 1


def test_the_per_source_limit_is_counted_in_a_metric() -> None:
    engine, source, _, _ = agent(limit=100, per_source=10)
    source.push(samples("junk", 50, T0))
    drain(engine, source)
    assert len(engine.bank.series) == 10
    assert engine.metrics.series_refused.labels("kafka")._value.get() >= 40


def test_eviction_runs_on_the_clock_not_on_every_turn() -> None:
    engine, source, _, clock = agent(limit=10)
    source.push(samples("junk", 3, T0))
    drain(engine, source)
    clock.advance(HOUR + 1)
    assert engine.run_once() == 0
    assert engine.bank.series.evicted == 3
    source.push(samples("junk", 3, clock.now(), prefix="k"))
    drain(engine, source)
    clock.advance(HOUR + 1)
    engine.run_once()
    clock.advance(30)  # within evict_every of the last look
    assert engine.bank.series.evicted == 6


def test_eviction_needs_detectors_that_can_forget() -> None:
    class Stubborn:
        name = "stubborn"

    registry = SeriesRegistry()
    bank = DetectorBank(registry, [DetectorSpec(Stubborn())])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"cannot: \['stubborn'\]"):
        Engine([], bank, [], ManualClock(), AgentMetrics(), series_idle=HOUR)


def test_touch_and_evict_in_the_registry() -> None:
    registry = SeriesRegistry(limit=3)
    a, b = registry.id_for(SeriesKey.of("a", {})), registry.id_for(SeriesKey.of("b", {}))
    registry.touch(np.array([a, DROPPED]), 100.0)
    registry.touch(np.array([b]), 200.0)
    assert registry.evict_idle(150.0).tolist() == [a]
    assert registry.lookup(SeriesKey.of("a", {})) is None
    with pytest.raises(KeyError, match="not registered"):
        registry.key(a)
    assert registry.id_for(SeriesKey.of("c", {})) == a  # the freed id, reused
    assert registry.generation.tolist() == [1, 0]
    assert registry.capacity == 2
    assert len(registry) == 2


def test_one_metric_with_exploding_labels_cannot_fill_the_table() -> None:
    """100k junk series of one metric take their 20k, and a real metric still gets registered
    and detected while the junk keeps coming (no eviction needed)."""
    clock = ManualClock(T0)
    registry = SeriesRegistry(limit=100_000, per_metric=20_000)
    detector = ThresholdDetector.from_params({"rules": [{"metric": "errors", "above": 0.5}]}, registry)
    source = DecodingSource(registry, clock)
    sink = CollectingSink()
    engine = Engine([source], DetectorBank(registry, [DetectorSpec(detector)]), [sink], clock, AgentMetrics())
    source.push(samples("junk", 100_000, T0))
    source.push(samples("errors", 1, T0 + 1, value=0.9, prefix="checkout"))
    drain(engine, source)
    assert len(registry) == 20_001
    assert registry.refused_by_owner == {"kafka": 80_000}
    assert [s.series for s in sink.signals] == [SeriesKey.of("errors", {"pod": "checkout0"})]
    registry.touch(np.arange(20_001, dtype=np.int64), T0)
    registry.evict_idle(T0 + 1)
    assert registry.id_for(SeriesKey.of("junk", {"pod": "again"})) >= 0, (
        "evicting gives the metric room again"
    )
