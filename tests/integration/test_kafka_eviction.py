"""Series eviction against a real broker, decoding in the worker process: junk series fill the
table, a real series is refused; once the junk is evicted the real series is registered (the
worker's cached ids re-resolved by key) and detected."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest
from kafka import KafkaProducer

from agent.clock import ManualClock
from agent.engine import Engine
from agent.metrics import AgentMetrics
from agent.sinks import CollectingSink
from detectors import DetectorBank, DetectorSpec, SeriesKey, SeriesRegistry
from detectors.threshold import ThresholdDetector
from tests.integration.test_kafka_source import T0, make_source

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HOUR = 3600.0


def batch(name: str, prefix: str, count: int, value: float) -> bytes:
    return orjson.dumps(
        [
            {"name": name, "labels": {"pod": f"{prefix}{i}"}, "value": value, "timestamp": T0 + 1}
            for i in range(count)
        ]
    )


def test_junk_then_a_real_series_detected_after_eviction_through_the_worker(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic()
    registry = SeriesRegistry(limit=500, per_owner=400)
    source = make_source(kafka_bootstrap, topic, series=registry)
    assert source.worker is not None
    clock = ManualClock(1_000_000.0)
    detector = ThresholdDetector.from_params({"rules": [{"metric": "errors", "above": 0.5}]}, registry)
    sink = CollectingSink()
    engine = Engine(
        [source],
        DetectorBank(registry, [DetectorSpec(detector)]),
        [sink],
        clock,
        AgentMetrics(),
        series_idle=HOUR,
    )
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap], acks="all")

    def send(value: bytes) -> None:
        producer.send(topic, value)
        producer.flush(10)

    def run_until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, what
            engine.run_once()

    try:
        send(batch("junk", "j", 1000, 0.0))
        run_until(lambda: registry.owned("kafka") == 400, "the junk reaching the source's limit")
        assert len(registry) == 400
        send(batch("errors", "checkout", 1, 0.9))
        run_until(lambda: registry.refused_by_owner.get("kafka", 0) >= 601, "the real series refused")
        assert sink.signals == []

        clock.advance(HOUR + 61)
        send(batch("errors", "checkout", 1, 0.9))
        run_until(lambda: bool(sink.signals), "the real series detected")
        assert registry.evicted == 400
        assert [s.series for s in sink.signals] == [SeriesKey.of("errors", {"pod": "checkout0"})]
        assert source.worker.alive
    finally:
        producer.close(5)
        source.close()
