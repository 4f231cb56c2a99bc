"""Kafka ingest throughput: bare kafka-python against the agent's path (KafkaSource + Engine + detectors).

For 1k, 10k and 100k series, samples are produced both batched (500 samples per message) and one
per message. Each layout is then consumed from the same topic by two kinds of reader, each in a
fresh consumer group every time:

- bare: a kafka-python ``KafkaConsumer`` poll loop with the source's own client settings, no
  parsing (what the client alone can do);
- engine: ``KafkaSource`` + ``Engine`` + ``DetectorBank`` with a ``ThresholdDetector`` that has a
  rule for the metric, committing every batch (what the agent does, with the source's default
  configuration: decoding in its worker process).

Rates are samples per second from the first batch to the last (the group join is not counted),
the best of two alternating rounds. Every series is scraped at least ten times (with 100k
series, a backlog of 2.5 minutes of a 15 s scrape interval; with fewer series, more scrapes), so
that the figure is a stream's and not only its first scrape's. That first scrape is also timed
alone: the engine's "first pass" rate runs until every series is registered (registering a new
series costs far more than scoring a sample of a known one), its "warm" rate from then on. The
table is printed, and written to ``bench-results/kafka_throughput.json``. Run with
``make bench`` (``pytest -m bench -s tests/bench``).
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kafka
import orjson
import pytest
from kafka import KafkaProducer

from agent.clock import WallClock
from agent.config import KafkaConnection, KafkaSourceConfig
from agent.engine import Engine
from agent.kafka_client import FAST_CRC32C, consumer_kwargs, create_consumer
from agent.metrics import AgentMetrics
from agent.sinks import CollectingSink
from agent.sources.kafka import KafkaSource
from detectors import DetectorBank, DetectorSpec, SeriesRegistry
from detectors.threshold import ThresholdDetector
from tests.servers.kafka import KAFKA_ENV, Tansu, create_topic

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

SERIES = (1_000, 10_000, 100_000)
PER_MESSAGE = 500
PARTITIONS = 2
ROUNDS = 2
METRIC = "container_cpu_usage"
RESULTS = Path("bench-results") / "kafka_throughput.json"
#: A day before the bench started, on a whole day: inside the source's window of accepted timestamps.
START = datetime.fromtimestamp((int(time.time()) // 86400 - 1) * 86400, tz=UTC)


#: Layouts: adapter samples one per message; a JSON array of adapter samples; the columnar batch
#: form (per message, COLUMNAR_SERIES series with COLUMNAR_POINTS points each).
LAYOUTS = ("batched", "columnar", "single")
COLUMNAR_SERIES = 50
COLUMNAR_POINTS = 10


def samples_for(series: int, layout: str) -> int:
    """How many samples a case produces: every series at least once, enough to time steadily."""
    if layout == "columnar":
        block = series * COLUMNAR_POINTS
        return max(1, -(-250_000 // block)) * block
    if layout == "batched":  # as columnar: every series scraped at least COLUMNAR_POINTS times
        return max(250_000, COLUMNAR_POINTS * series)
    return max(50_000, series)


def labels_of(sid: int) -> dict[str, str]:
    return {
        "__name__": METRIC,
        "namespace": f"ns-{sid % 20}",
        "pod": f"api-{sid}",
        "container": "app",
        "node": f"node-{sid % 50}",
    }


def columnar_messages(series: int, total: int) -> list[bytes]:
    """Blocks of COLUMNAR_POINTS scrapes; each message holds COLUMNAR_SERIES series of that block."""
    rng = random.Random(series)
    out = []
    epoch = START.timestamp()
    for block in range(total // (series * COLUMNAR_POINTS)):
        stamps = [epoch + 15 * (block * COLUMNAR_POINTS + k) for k in range(COLUMNAR_POINTS)]
        for first in range(0, series, COLUMNAR_SERIES):
            out.append(
                orjson.dumps(
                    [
                        {
                            "name": METRIC,
                            "labels": labels_of(sid),
                            "timestamps": stamps,
                            "values": [round(rng.random(), 6) for _ in stamps],
                        }
                        for sid in range(first, min(series, first + COLUMNAR_SERIES))
                    ]
                )
            )
    return out


def rows_of_samples(series: int, total: int) -> Iterator[dict[str, Any]]:
    """Scrape after scrape of every series, like a Prometheus remote-write feed."""
    rng = random.Random(series)
    for i in range(total):
        sid = i % series
        scrape = i // series
        yield {
            "timestamp": (START + timedelta(seconds=15 * scrape)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "value": repr(round(rng.random(), 6)),
            "name": METRIC,
            "labels": labels_of(sid),
        }


def messages(series: int, total: int, layout: str) -> list[bytes]:
    if layout == "columnar":
        return columnar_messages(series, total)
    rows = rows_of_samples(series, total)
    if layout == "single":
        return [orjson.dumps(r) for r in rows]
    out = []
    chunk: list[dict[str, Any]] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) == PER_MESSAGE:
            out.append(orjson.dumps(chunk))
            chunk = []
    if chunk:
        out.append(orjson.dumps(chunk))
    return out


def produce(bootstrap: str, topic: str, values: list[bytes]) -> float:
    started = time.perf_counter()
    producer = KafkaProducer(
        bootstrap_servers=[bootstrap],
        acks="all",
        linger_ms=20,
        batch_size=1 << 20,
        max_request_size=4 << 20,
    )
    try:
        for v in values:
            producer.send(topic, v)
        producer.flush(120)
    finally:
        producer.close(10)
    return time.perf_counter() - started


def source_config(topic: str) -> KafkaSourceConfig:
    return KafkaSourceConfig(
        topics=[topic],
        group_id=f"bench-engine-{uuid.uuid4().hex[:8]}",
        dead_letter_topic=f"{topic}.dlq",
        session_timeout=2.0,
        heartbeat_interval=0.5,
        lag_interval=5.0,
    )


def bare_rate(bootstrap: str, topic: str, n_messages: int, samples_per_message: float) -> tuple[float, float]:
    """Samples/s of a plain poll loop with the source's client settings; (rate, seconds)."""
    cfg = source_config(topic)
    kwargs = consumer_kwargs(
        KafkaConnection(bootstrap_servers=[bootstrap]),
        {},
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=cfg.max_poll_records,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    consumer = create_consumer(topic, **kwargs)
    try:
        got = 0
        deadline = time.monotonic() + 60
        while got == 0 and time.monotonic() < deadline:
            got += sum(len(r) for r in consumer.poll(200, max_records=cfg.max_poll_records).values())
        started = time.perf_counter()
        first = got
        while got < n_messages and time.monotonic() < deadline + 120:
            got += sum(len(r) for r in consumer.poll(200, max_records=cfg.max_poll_records).values())
        elapsed = time.perf_counter() - started
    finally:
        consumer.close(autocommit=False)
    assert got == n_messages, f"bare consumer read {got} of {n_messages} messages"
    return (got - first) * samples_per_message / elapsed, elapsed


def engine_rate(
    bootstrap: str, topic: str, total: int, n_series: int, partition_state: bool = False
) -> dict[str, float]:
    """Samples/s through KafkaSource + Engine + DetectorBank, overall and once every series is known
    (``partition_state``: the source keeps the bank's state by partition, as the daemon does)."""
    gc.collect()  # the previous case's engine (its registry, 100k keys) is not this one's to scan
    series = SeriesRegistry(limit=200_000)
    metrics = AgentMetrics()
    stop = threading.Event()
    rule = ThresholdDetector.from_params({"rules": [{"metric": METRIC, "above": 0.9999}]}, series)
    bank = DetectorBank(series, [DetectorSpec(rule)])
    source = KafkaSource(
        source_config(topic),
        KafkaConnection(bootstrap_servers=[bootstrap]),
        series,
        metrics,
        WallClock(),
        stop,
        environ={},
        bank=bank if partition_state else None,
    )
    sink = CollectingSink()
    engine = Engine([source], bank, [sink], WallClock(), metrics, stop)
    engine.start()
    try:
        deadline = time.monotonic() + 60
        first = 0
        while first == 0 and time.monotonic() < deadline:
            first = engine.run_once()
        started = time.perf_counter()
        warm_at, warm_from = (started, first) if len(series) >= n_series else (0.0, 0)
        while engine.samples_processed < total and time.monotonic() < deadline + 240:
            engine.run_once()
            if not warm_at and len(series) >= n_series:
                warm_at, warm_from = time.perf_counter(), engine.samples_processed
        ended = time.perf_counter()
        known = len(series)  # closing gives the partitions up: with partition state, their series go
    finally:
        engine.close()
    assert engine.samples_processed == total, (
        f"engine processed {engine.samples_processed} of {total} samples"
    )
    assert known == n_series
    assert series.dropped == 0
    warm = (total - warm_from) / (ended - warm_at) if warm_at and total > warm_from else math.nan
    cold = (warm_from - first) / (warm_at - started) if warm_at > started else math.nan
    return {
        "rate": (total - first) / (ended - started),
        "seconds": ended - started,
        "first_pass_rate": cold,
        "warm_rate": warm,
        "signals": len(sink.signals),
    }


def ratio_or_none(rate: float, bare: float) -> float | None:
    """``rate / bare`` to three places; None when the rate was not measured (NaN or 0)."""
    return round(rate / bare, 3) if rate > 0 else None


@pytest.fixture
def bench_bootstrap(tansu_factory: Callable[..., Tansu]) -> str:
    external = os.environ.get(KAFKA_ENV, "").strip()
    return external or tansu_factory().bootstrap


def test_kafka_ingest_throughput(bench_bootstrap: str) -> None:
    load_before = os.getloadavg()[0]  # other work on the machine skews the figures: say how much
    rows: list[dict[str, Any]] = []
    for n_series in SERIES:
        for layout in LAYOUTS:
            total = samples_for(n_series, layout)
            values = messages(n_series, total, layout)
            topic = f"bench-{n_series}-{layout}-{uuid.uuid4().hex[:6]}"
            create_topic(bench_bootstrap, topic, PARTITIONS)
            produce_s = produce(bench_bootstrap, topic, values)
            # best of ROUNDS, alternating, so that a burst of load elsewhere on the machine hurts less
            bare, bare_s = 0.0, 0.0
            result: dict[str, float] = {"rate": 0.0}
            for _ in range(ROUNDS):
                rate, seconds = bare_rate(bench_bootstrap, topic, len(values), total / len(values))
                if rate > bare:
                    bare, bare_s = rate, seconds
                attempt = engine_rate(bench_bootstrap, topic, total, n_series)
                if attempt["rate"] > result["rate"]:
                    result = attempt
            engine = result["rate"]
            row = {
                "series": n_series,
                "layout": {
                    "batched": f"batched {PER_MESSAGE}/msg",
                    "columnar": f"columnar {COLUMNAR_SERIES * COLUMNAR_POINTS}/msg",
                    "single": "1/msg",
                }[layout],
                "samples": total,
                "messages": len(values),
                "produce_s": round(produce_s, 2),
                "bare_samples_per_s": round(bare),
                "bare_s": round(bare_s, 2),
                "engine_samples_per_s": round(engine),
                "engine_s": round(result["seconds"], 2),
                "ratio": round(engine / bare, 3),
                "first_pass_ratio": ratio_or_none(result["first_pass_rate"], bare),
                "engine_warm_samples_per_s": round(result["warm_rate"]) if result["warm_rate"] > 0 else None,
                "warm_ratio": ratio_or_none(result["warm_rate"], bare),
                "signals": int(result["signals"]),
            }
            rows.append(row)
            print(
                f"\n{n_series:>7} series {row['layout']:>16}: bare {bare:>10,.0f}/s  "
                f"engine {engine:>10,.0f}/s  ratio {engine / bare:.2f}  "
                f"(first pass {row['first_pass_ratio']}, warm {row['warm_ratio']})",
                flush=True,
            )

    header = (
        f"{'series':>7} {'layout':>16} {'samples':>8} {'bare/s':>11} {'engine/s':>11} {'ratio':>6}"
        f" {'first pass':>10} {'warm engine/s':>14} {'warm ratio':>10}"
    )
    print("\n" + header)
    for r in rows:
        warm = f"{r['engine_warm_samples_per_s']:>14,}" if r["engine_warm_samples_per_s"] else f"{'-':>14}"
        warm_ratio = f"{r['warm_ratio']:>10.2f}" if r["warm_ratio"] else f"{'-':>10}"
        cold = f"{r['first_pass_ratio']:>10.2f}" if r["first_pass_ratio"] else f"{'-':>10}"
        print(
            f"{r['series']:>7} {r['layout']:>16} {r['samples']:>8} {r['bare_samples_per_s']:>11,} "
            f"{r['engine_samples_per_s']:>11,} {r['ratio']:>6.2f} {cold} {warm} {warm_ratio}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "kafka_throughput",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "environment": {
                    "python": platform.python_version(),
                    "kafka_python": kafka.__version__,
                    "cpus": os.cpu_count(),
                    "broker": os.environ.get(KAFKA_ENV) or "tansu (memory)",
                    "crc32c_extension": FAST_CRC32C,
                    "check_crcs": FAST_CRC32C,
                    "decode_worker": KafkaSourceConfig().decode_worker,
                    "load_average_before": load_before,
                },
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    for r in rows:
        assert r["engine_samples_per_s"] > 0
        assert r["bare_samples_per_s"] > 0


STATE_PARTITIONS = 6
STATE_SERIES = 10_000


def test_partition_state_ingest_cost(bench_bootstrap: str) -> None:
    """The Kafka path with and without the partition state (records handed out one partition at
    a time, series ownership noted), on one topic of 6 partitions; best of ROUNDS each."""
    total = samples_for(STATE_SERIES, "batched")
    values = messages(STATE_SERIES, total, "batched")
    topic = f"bench-state-{uuid.uuid4().hex[:6]}"
    create_topic(bench_bootstrap, topic, STATE_PARTITIONS)
    produce(bench_bootstrap, topic, values)
    best = {False: 0.0, True: 0.0}
    for _ in range(ROUNDS):
        for state in (False, True):
            best[state] = max(
                best[state], engine_rate(bench_bootstrap, topic, total, STATE_SERIES, state)["rate"]
            )
    result = {
        "series": STATE_SERIES,
        "partitions": STATE_PARTITIONS,
        "samples": total,
        "without_state_samples_per_s": round(best[False]),
        "with_state_samples_per_s": round(best[True]),
        "ratio": round(best[True] / best[False], 3),
    }
    print(json.dumps(result, indent=2))
    out = Path("bench-results/kafka_state.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
