"""What freshness forwarding costs at its default bound: 10000 signalled series.

The publisher (to a real broker) sends one record per series whose count changed: timed, the
best of three rounds of all 10000 (each series sampled again between rounds) and a round with
nothing new. The deciding side: decoding a record from its wire form, taking it into the view,
and answering for a series (what the engine asks per series and tick). Results:
``bench-results/freshness_forwarding.json``.
"""

from __future__ import annotations

import json
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from agent.clock import ManualClock
from agent.config import FreshnessConfig, KafkaConnection
from agent.freshness import FreshnessForwarder, FreshnessRecord, FreshnessView
from agent.kafka_client import ResilientProducer
from agent.metrics import AgentMetrics
from detectors import SampleBatch, SeriesKey, SeriesRegistry, Signal
from detectors.freshness import SeriesFreshness
from detectors.signal import SignalKind

pytestmark = [pytest.mark.bench, pytest.mark.integration, pytest.mark.timeout(600)]

RESULTS = Path("bench-results") / "freshness_forwarding.json"
SERIES = 10_000
ROUNDS = 3
T0 = 1_700_000_000.0


def _best(run: Callable[[], object], before: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(ROUNDS):
        before()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def test_freshness_forwarding_costs(kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> None:
    topic = kafka_topic(6, prefix="signals")
    registry = SeriesRegistry(limit=2 * SERIES)
    local = SeriesFreshness(registry)
    keys = [
        SeriesKey.of("error_ratio", {"namespace": "shop", "deployment": f"svc-{i}", "pod": f"svc-{i}-7d9f8"})
        for i in range(SERIES)
    ]
    ids = np.array([registry.id_for(k) for k in keys], dtype=np.int64)
    clock = ManualClock(T0)
    config = FreshnessConfig(interval=5.0, max_series=SERIES)
    connection = KafkaConnection(bootstrap_servers=[kafka_bootstrap], request_timeout=10.0)
    producer = ResilientProducer(connection, clock, threading.Event(), name="bench")
    forwarder = FreshnessForwarder(
        config,
        producer,
        topic,
        lambda s: f"Deployment/shop/{s.series.label_dict['deployment']}".encode(),
        local,
        clock,
        AgentMetrics(),
        "bench-1",
    )
    forwarder.emit([Signal(SignalKind.THRESHOLD, k, T0, 0.9, 1.0, "threshold") for k in keys])

    def scrape() -> None:
        clock.advance(15.0)
        local.observe(SampleBatch.from_arrays(ids, np.full(SERIES, clock.now()), np.zeros(SERIES)))

    sent: list[int] = []
    try:
        publish_all = _best(lambda: sent.append(forwarder.publish()), scrape)
        assert sent == [SERIES] * ROUNDS
        nothing_new = _best(forwarder.publish, lambda: clock.advance(5.0))  # all due, none changed
    finally:
        producer.close()

    records = [FreshnessRecord("bench-1", k, s, 5.0) for k in keys if (s := local.seen(k)) is not None]
    wire = [r.encode() for r in records]
    decoded: list[FreshnessRecord] = []
    decode_seconds = _best(
        lambda: decoded.extend(FreshnessRecord.from_dict(orjson.loads(v)) for v in wire), decoded.clear
    )
    view = FreshnessView(config, SeriesFreshness(SeriesRegistry()), "decider-1", clock)
    receive_seconds = _best(lambda: view.receive(decoded))
    seen_seconds = _best(lambda: [view.seen(k) for k in keys])
    assert len(view) == SERIES
    result = {
        "series": SERIES,
        "record_bytes_mean": round(sum(len(w) for w in wire) / len(wire), 1),
        "publish_seconds_all_changed": round(publish_all, 4),
        "publish_seconds_nothing_new": round(nothing_new, 4),
        "decode_us_per_record": round(decode_seconds / SERIES * 1e6, 2),
        "receive_us_per_record": round(receive_seconds / SERIES * 1e6, 2),
        "seen_us_per_series": round(seen_seconds / SERIES * 1e6, 2),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
