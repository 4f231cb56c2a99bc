"""The Kafka source and producer against a real Kafka-protocol broker (tansu), real faults included.

Consumer groups use ``session_timeout=2 s`` and ``heartbeat_interval=0.5 s`` so that a join takes
about a second. The wall clock is used throughout: the broker runs in real time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAlreadyExistsError

from agent.clock import WallClock
from agent.config import KafkaConnection, KafkaSourceConfig
from agent.engine import Engine
from agent.kafka_client import KafkaDeliveryError, ResilientProducer
from agent.metrics import AgentMetrics
from agent.sinks import CollectingSink
from agent.sources.base import Polled, SourceStartupError
from agent.sources.kafka import (
    ERROR_HEADER,
    OFFSET_HEADER,
    PARTITION_HEADER,
    TOPIC_HEADER,
    KafkaSource,
    _seek_back,
)
from agent.sources.kafka_formats import Malformed
from agent.sources.kafka_worker import DecodeWorker, Taken
from detectors import DetectorBank, DetectorSpec, SampleBatch, SeriesRegistry
from detectors.threshold import ThresholdDetector
from tests.servers.common import eventually
from tests.servers.kafka import FaultyKafka, Tansu, create_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: An hour before the test started, whole seconds: inside the source's window of accepted timestamps.
T0 = float(int(time.time()) - 3600)

#: Tests that hold for both ways of decoding run with each (``sources.kafka.decode_worker``).
both_decoders = pytest.mark.parametrize("decode_worker", [True, False], ids=["worker", "inline"])


# ---------------------------------------------------------------------------- helpers


def connection(bootstrap: str, request_timeout: float = 5.0) -> KafkaConnection:
    return KafkaConnection(
        bootstrap_servers=[bootstrap], client_id="aiops-test", request_timeout=request_timeout
    )


def make_source(
    bootstrap: str,
    topic: str,
    *,
    group: str | None = None,
    series: SeriesRegistry | None = None,
    metrics: AgentMetrics | None = None,
    request_timeout: float = 5.0,
    bank: DetectorBank | None = None,
    **overrides: Any,
) -> KafkaSource:
    settings: dict[str, Any] = {
        "topics": [topic],
        "group_id": group or f"g-{uuid.uuid4().hex[:8]}",
        "dead_letter_topic": f"{topic}.dlq",
        "session_timeout": 2.0,
        "heartbeat_interval": 0.5,
        "lag_interval": 0.5,
        "poll_timeout": 0.2,
        **overrides,
    }
    source = KafkaSource(
        KafkaSourceConfig(**settings),
        connection(bootstrap, request_timeout),
        series if series is not None else SeriesRegistry(),
        metrics if metrics is not None else AgentMetrics(),
        WallClock(),
        threading.Event(),
        environ={},
        bank=bank,
    )
    source.start()
    return source


def produce(
    bootstrap: str, topic: str, values: Iterable[bytes | None], keys: Iterable[bytes | None] = ()
) -> None:
    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all")
    try:
        keys = list(keys)
        for i, value in enumerate(values):
            producer.send(topic, value=value, key=keys[i] if i < len(keys) else None)
        producer.flush(10)
    finally:
        producer.close(5)


def sample(value: float, ts: float, name: str = "temp", **labels: str) -> dict[str, Any]:
    return {"timestamp": ts, "value": str(value), "name": name, "labels": {"__name__": name, **labels}}


def one_per_message(values: Iterable[int], **labels: str) -> list[bytes]:
    return [orjson.dumps(sample(v, T0 + v, **labels)) for v in values]


def poll_values(source: KafkaSource, timeout: float = 0.2) -> tuple[Polled | None, list[float]]:
    polled = source.poll(timeout)
    if polled is None:
        return None, []
    return polled, polled.samples.values.tolist()


def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> list[int | None]:
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group, enable_auto_commit=False)
    try:
        return [consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        consumer.close(autocommit=False)


def consume_all(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list[Any]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=[bootstrap], auto_offset_reset="earliest", enable_auto_commit=False
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            for recs in consumer.poll(200).values():
                records.extend(recs)
    finally:
        consumer.close(autocommit=False)
    return records


def ready_gauge(metrics: AgentMetrics) -> float:
    return float(metrics.source_ready.labels("kafka")._value.get())


def counter(metrics: AgentMetrics, family: str, *labels: str) -> float:
    return float(getattr(metrics, family).labels(*labels)._value.get())


# ---------------------------------------------------------------------------- (a) formats to signals


@both_decoders
def test_each_format_becomes_signals_through_the_engine(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], decode_worker: bool
) -> None:
    topic = kafka_topic(partitions=3)
    adapter_msgs = [orjson.dumps(sample(v, T0 + i, fmt="adapter")) for i, v in enumerate([10, 20, 99, 30])]
    batch_msg = orjson.dumps([sample(v, T0 + i, fmt="batch") for i, v in enumerate([11, 77, 12])])
    otlp_msg = orjson.dumps(
        {
            "resourceMetrics": [
                {
                    "resource": {"attributes": [{"key": "fmt", "value": {"stringValue": "otlp"}}]},
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": "temp",
                                    "gauge": {
                                        "dataPoints": [
                                            {"timeUnixNano": str(int((T0 + i) * 1e9)), "asDouble": v}
                                            for i, v in enumerate([5.0, 66.5])
                                        ]
                                    },
                                },
                                {
                                    "name": "temp",
                                    "sum": {
                                        "dataPoints": [
                                            {
                                                "attributes": [
                                                    {"key": "kind", "value": {"stringValue": "sum"}}
                                                ],
                                                "timeUnixNano": str(int((T0 + 5) * 1e9)),
                                                "asInt": "51",
                                            }
                                        ]
                                    },
                                },
                            ]
                        }
                    ],
                }
            ]
        }
    )
    # keyed by format so each format's messages stay in order on one partition
    produce(
        kafka_bootstrap,
        topic,
        [*adapter_msgs, batch_msg, otlp_msg],
        [b"adapter"] * len(adapter_msgs) + [b"batch", b"otlp"],
    )

    series = SeriesRegistry()
    metrics = AgentMetrics()
    source = make_source(
        kafka_bootstrap, topic, series=series, metrics=metrics, format="auto", decode_worker=decode_worker
    )
    rule = ThresholdDetector.from_params({"rules": [{"metric": "temp", "above": 50}]}, series)
    sink = CollectingSink()
    engine = Engine(
        [source], DetectorBank(series, [DetectorSpec(rule)]), [sink], WallClock(), metrics, source.stop
    )
    engine.start()
    try:
        eventually(lambda: engine.run_once() >= 0 and engine.samples_processed >= 10, what="10 samples")
    finally:
        engine.close()

    assert engine.samples_processed == 10
    got = {(s.labels["fmt"], s.labels.get("kind", ""), s.value) for s in sink.signals}
    assert got == {("adapter", "", 99.0), ("batch", "", 77.0), ("otlp", "", 66.5), ("otlp", "sum", 51.0)}
    assert all(s.detector == "threshold" and s.score == 1.0 for s in sink.signals)
    assert counter(metrics, "samples_in", "kafka") == 10
    assert counter(metrics, "commits", "kafka") >= 1
    # every record was committed once processed
    ends = sorted(c or 0 for c in committed(kafka_bootstrap, source.config.group_id, topic, 3))
    assert sum(ends) == len(adapter_msgs) + 2


# ---------------------------------------------------------------------------- (b) crash before commit


@both_decoders
def test_a_consumer_killed_before_commit_loses_nothing(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], decode_worker: bool
) -> None:
    topic = kafka_topic(partitions=2)
    produce(kafka_bootstrap, topic, one_per_message(range(60), job="b"))
    group = f"g-{uuid.uuid4().hex[:8]}"

    first = make_source(kafka_bootstrap, topic, group=group, max_poll_records=7, decode_worker=decode_worker)
    seen_first: list[float] = []
    committed_values: list[float] = []
    try:
        deadline = time.monotonic() + 20
        while len(seen_first) < 60 and time.monotonic() < deadline:
            polled, values = poll_values(first)
            if polled is None:
                continue
            seen_first += values
            if not committed_values:  # commit the first batch only, then "crash"
                first.commit(polled)
                committed_values += values
    finally:
        first.close()  # leaves the group without committing anything else
    assert sorted(seen_first) == [float(v) for v in range(60)], "the first consumer read everything"
    assert committed_values, "it committed one batch"

    second = make_source(kafka_bootstrap, topic, group=group, decode_worker=decode_worker)
    seen_second: list[float] = []
    try:
        deadline = time.monotonic() + 20
        while set(seen_second) | set(committed_values) != set(seen_first) and time.monotonic() < deadline:
            polled, values = poll_values(second)
            if polled is not None:
                seen_second += values
                second.commit(polled)
    finally:
        second.close()
    assert set(seen_second) | set(committed_values) == {float(v) for v in range(60)}, "no sample lost"
    assert not set(committed_values) & set(seen_second), "committed records are not read again"


def test_a_partition_assigned_with_no_checkpoint_gets_an_empty_one_where_it_starts(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """Before any record of a partition with no checkpoint, its first checkpoint, empty, is
    written at the committed offset: a next owner that reads the state topic before this one's
    revoke checkpoint lands resumes there and replays, rather than starting cold past all that
    was learned since."""
    from kafka.structs import OffsetAndMetadata

    from agent.config import PartitionStateConfig
    from agent.partition_state import PartitionStates
    from detectors import build_detector

    topic, state_topic = kafka_topic(), kafka_topic(prefix="state")
    group = f"g-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)
    produce(kafka_bootstrap, topic, one_per_message(range(5), job="a"))
    committer = KafkaConsumer(bootstrap_servers=[kafka_bootstrap], group_id=group, enable_auto_commit=False)
    committer.commit({tp: OffsetAndMetadata(3, "", -1)})  # a previous run processed 3 of them
    committer.close(autocommit=False)

    def bank() -> DetectorBank:
        series = SeriesRegistry()
        return DetectorBank(series, [DetectorSpec(build_detector("ewma", {"warmup_hours": 0}, series))])

    first, metrics = bank(), AgentMetrics()
    state = {"enabled": True, "topic": state_topic, "interval": 3600.0}
    source = make_source(
        kafka_bootstrap, topic, group=group, series=first.series, metrics=metrics, bank=first, state=state
    )
    reader = PartitionStates(
        PartitionStateConfig(**state),
        group,
        bank(),
        connection(kafka_bootstrap),
        AgentMetrics(),
        WallClock(),
        threading.Event(),
        environ={},
    )
    seen: list[float] = []
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            seen += poll_values(source)[1]
        assert seen == [3.0, 4.0]
        # while the source still owns the partition (nothing written since: no revoke, no interval)
        where = {"topic": topic, "partition": "0"}
        assert metrics.registry.get_sample_value("aiops_state_checkpoint_series", where) == 0
        assert reader.restore([tp]) == {tp: 3}
    finally:
        source.close()
        reader.close()


# ---------------------------------------------------------------------------- (c) dead letters


@both_decoders
def test_malformed_messages_go_to_the_dead_letter_topic_and_good_ones_through(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], decode_worker: bool
) -> None:
    topic = kafka_topic()
    dlq = f"{topic}.dlq"
    create_topic(kafka_bootstrap, dlq)
    bad_value = orjson.dumps(sample(0, T0) | {"value": "abc"})
    values = [
        one_per_message([1])[0],
        b"{not json",
        one_per_message([2])[0],
        bad_value,
        one_per_message([3])[0],
    ]
    keys = [b"k0", b"k1", b"k2", b"k3", b"k4"]
    produce(kafka_bootstrap, topic, values, keys)

    metrics = AgentMetrics()
    source = make_source(
        kafka_bootstrap, topic, metrics=metrics, dead_letter_topic=dlq, decode_worker=decode_worker
    )
    good: list[float] = []
    try:
        deadline = time.monotonic() + 20
        while len(good) < 3 and time.monotonic() < deadline:
            polled, got = poll_values(source)
            if polled is not None:
                good += got
                source.commit(polled)
        group = source.config.group_id
    finally:
        source.close()
    assert good == [1.0, 2.0, 3.0]
    assert committed(kafka_bootstrap, group, topic) == [5], "the dead-lettered records are committed too"
    assert counter(metrics, "dead_lettered", "kafka", "not_json") == 1
    assert counter(metrics, "dead_lettered", "kafka", "bad_value") == 1

    dead = consume_all(kafka_bootstrap, dlq, 2)
    assert [r.value for r in dead] == [b"{not json", bad_value], "sent raw"
    assert [r.key for r in dead] == [b"k1", b"k3"]
    headers = [dict(r.headers) for r in dead]
    assert headers[0][ERROR_HEADER].decode().startswith("not JSON: ")
    assert headers[1][ERROR_HEADER].decode() == "field 'value': expected a number, got 'abc'"
    assert [h[OFFSET_HEADER] for h in headers] == [b"1", b"3"]
    assert {h[TOPIC_HEADER] for h in headers} == {topic.encode()}
    assert {h[PARTITION_HEADER] for h in headers} == {b"0"}


def test_a_poll_of_only_malformed_messages_is_still_committed(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic()
    produce(kafka_bootstrap, topic, [b"nope", b"[1, 2]", b"null"])
    source = make_source(kafka_bootstrap, topic)
    polls: list[Polled] = []
    try:
        deadline = time.monotonic() + 20
        while not any(p.token for p in polls) and time.monotonic() < deadline:
            polled = source.poll(0.2)
            if polled is not None:
                polls.append(polled)
                source.commit(polled)
        # anything left over arrives in later polls
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            polled = source.poll(0.2)
            if polled is not None:
                polls.append(polled)
                source.commit(polled)
        group = source.config.group_id
    finally:
        source.close()
    assert polls, "malformed-only polls are handed out"
    assert all(len(p.samples) == 0 for p in polls)
    assert committed(kafka_bootstrap, group, topic) == [3]
    assert len(consume_all(kafka_bootstrap, f"{topic}.dlq", 3)) == 3


@both_decoders
def test_nothing_is_handed_out_until_the_dead_letters_are_written(
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    tansu_factory: Callable[..., Tansu],
    decode_worker: bool,
) -> None:
    """With the dead-letter topic unwritable the poll is read again later, never skipped."""
    topic = kafka_topic()
    produce(kafka_bootstrap, topic, [one_per_message([1])[0], b"garbage", one_per_message([2])[0]])
    dlq_broker = tansu_factory()
    dlq_broker.stop()
    dead_letter = ResilientProducer(connection(dlq_broker.bootstrap, 2.0), WallClock(), connect_timeout=0.5)
    metrics = AgentMetrics()
    source = KafkaSource(
        KafkaSourceConfig(
            topics=[topic],
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            dead_letter_topic="dead",
            session_timeout=2.0,
            heartbeat_interval=0.5,
            lag_interval=0.5,
            decode_worker=decode_worker,
        ),
        connection(kafka_bootstrap),
        SeriesRegistry(),
        metrics,
        WallClock(),
        threading.Event(),
        environ={},
        dead_letter=dead_letter,
    )
    source.start()
    good: list[float] = []
    try:
        eventually(
            lambda: (
                source.poll(0.2) is None and counter(metrics, "source_errors", "kafka", "dead_letter") >= 2
            ),
            what="failed dead-letter attempts",
        )
        assert not source.ready
        dlq_broker.start()
        create_topic(dlq_broker.bootstrap, "dead")

        def drained() -> bool:
            polled, values = poll_values(source)
            if polled is not None:
                good.extend(values)
                source.commit(polled)
            return good == [1.0, 2.0]

        eventually(drained, timeout=30, what="the batch once the dead letter was written")
        group = source.config.group_id
    finally:
        source.close()
    assert [r.value for r in consume_all(dlq_broker.bootstrap, "dead", 1)] == [b"garbage"]
    assert committed(kafka_bootstrap, group, topic) == [3]
    assert counter(metrics, "dead_lettered", "kafka", "not_json") == 1


# ---------------------------------------------------------------------------- the decode worker


def batched(first: int, count: int, per_message: int = 10) -> list[bytes]:
    """``count`` values from ``first`` on, ``per_message`` samples (of as many series) per message."""
    return [
        orjson.dumps(
            [
                sample(v, T0 + v, pod=f"p{v % per_message}")
                for v in range(start, min(first + count, start + per_message))
            ]
        )
        for start in range(first, first + count, per_message)
    ]


def test_polls_come_out_in_order_once_each_with_the_worker(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """Decoding one poll while fetching the next hands every poll out once, in order, committed."""
    topic = kafka_topic()
    total = 3000
    produce(kafka_bootstrap, topic, batched(0, total))
    series = SeriesRegistry()
    source = make_source(kafka_bootstrap, topic, series=series, max_poll_records=7)
    seen: list[float] = []
    polls = 0
    try:
        deadline = time.monotonic() + 30
        while len(seen) < total and time.monotonic() < deadline:
            polled, values = poll_values(source)
            if polled is not None:
                polls += 1
                seen += values
                source.commit(polled)
        group = source.config.group_id
    finally:
        source.close()
    assert seen == [float(v) for v in range(total)], "every sample once, in order"
    assert polls >= total // 70, "many polls (7 messages each at most)"
    assert len(series) == 10
    assert committed(kafka_bootstrap, group, topic) == [total // 10]


def survives_losing_the_worker(
    bootstrap: str,
    kafka_topic: Callable[..., str],
    lose: Callable[[KafkaSource, list[float], list[bool]], int | None],
) -> list[bool]:
    """A source with the decode worker, small polls, on a 2-partition topic: ``lose(source, seen,
    readiness)`` drains it until its worker is lost and returns that worker's pid; then every
    sample must come out, committed, through a new worker. Returns the readiness seen."""
    total = 2000
    topic = kafka_topic(partitions=2)
    produce(bootstrap, topic, batched(0, total))
    metrics = AgentMetrics()
    source = make_source(bootstrap, topic, metrics=metrics, max_poll_records=5)
    worker = source.worker
    assert worker is not None
    seen: list[float] = []
    readiness: list[bool] = []
    try:
        lost = lose(source, seen, readiness)
        drain_until(
            source,
            seen,
            readiness,
            lambda: set(seen) == set(map(float, range(total))) and source.ready,
            "every sample after the worker was lost",
            timeout=30,
        )
        second = worker.pid
        group = source.config.group_id
    finally:
        source.close()
    assert set(seen) == {float(v) for v in range(total)}, "no sample lost"
    assert counter(metrics, "source_errors", "kafka", "decode_worker") >= 1
    assert lost is not None
    assert second is not None
    assert second != lost, "a new worker took over"
    assert sum(c or 0 for c in committed(bootstrap, group, topic, 2)) == total // 10
    return readiness


def test_a_worker_that_dies_loses_nothing_and_is_replaced(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    def kill(source: KafkaSource, seen: list[float], readiness: list[bool]) -> int | None:
        drain_until(source, seen, readiness, lambda: len(seen) >= 200, "samples before the kill")
        assert source.worker is not None
        pid = source.worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return pid

    readiness = survives_losing_the_worker(kafka_bootstrap, kafka_topic, kill)
    assert False in readiness, "not ready while the worker was down"


def test_a_worker_failing_on_a_batch_loses_nothing(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's answer is checked after the next batch went to it (DecodeWorker.finish): a
    failure found then drops both, the batches are read again, and a new worker takes over."""
    real = DecodeWorker.finish
    finished = 0
    failed: int | None = None

    def finish(self: DecodeWorker, taken: Taken) -> tuple[SampleBatch, list[Malformed]]:
        nonlocal finished, failed
        finished += 1
        if finished == 20:  # as a _Failure answer does: the worker is unusable from here
            failed = self.pid
            raise self._failed("failed:\nTraceback ...: injected")
        return real(self, taken)

    monkeypatch.setattr(DecodeWorker, "finish", finish)

    def fail(source: KafkaSource, seen: list[float], readiness: list[bool]) -> int | None:
        drain_until(source, seen, readiness, lambda: finished >= 20, "batches up to the failure")
        return failed

    survives_losing_the_worker(kafka_bootstrap, kafka_topic, fail)


def test_close_ends_the_worker_process(kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> None:
    topic = kafka_topic()
    produce(kafka_bootstrap, topic, batched(0, 100))
    source = make_source(kafka_bootstrap, topic)
    assert source.worker is not None
    pid = source.worker.pid
    assert pid is not None
    try:
        eventually(lambda: source.poll(0.2) is not None, what="a batch")
    finally:
        started = time.monotonic()
        source.close()
    assert time.monotonic() - started < 5
    assert source.worker.pid is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: not a child any more


def test_without_the_worker_no_process_is_started(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    source = make_source(kafka_bootstrap, kafka_topic(), decode_worker=False)
    try:
        assert source.worker is None
        assert source.poll(0.1) is None
    finally:
        source.close()


# ---------------------------------------------------------------------------- configuration


def test_start_rejects_a_configuration_that_cannot_work() -> None:
    def source(conn: KafkaConnection, **cfg: Any) -> KafkaSource:
        return KafkaSource(
            KafkaSourceConfig(**cfg),
            conn,
            SeriesRegistry(),
            AgentMetrics(),
            WallClock(),
            threading.Event(),
            environ={},
        )

    plain = KafkaConnection(bootstrap_servers=["127.0.0.1:1"])
    with pytest.raises(SourceStartupError, match="heartbeat_interval"):
        source(plain, session_timeout=2.0, heartbeat_interval=2.0).start()
    hasty = KafkaConnection(bootstrap_servers=["127.0.0.1:1"], request_timeout=0.5)
    with pytest.raises(
        SourceStartupError,
        match=r"request_timeout \(0\.5 s\) must be longer than sources\.kafka\.fetch_max_wait \(0\.5 s\)",
    ):
        source(hasty).start()
    fits = source(hasty, fetch_max_wait=0.1)  # a shorter broker-side wait fits
    fits.start()
    fits.close()
    sasl = KafkaConnection(
        bootstrap_servers=["127.0.0.1:1"],
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="agent",
        sasl_password_env="AIOPS_TEST_NO_SUCH_VARIABLE",
    )
    with pytest.raises(SourceStartupError, match="AIOPS_TEST_NO_SUCH_VARIABLE"):
        source(sasl).start()


# ---------------------------------------------------------------------------- broker down at start


def test_start_does_not_wait_for_a_broker_that_is_down(tansu_factory: Callable[..., Tansu]) -> None:
    broker = tansu_factory()
    broker.stop()
    metrics = AgentMetrics()
    started = time.monotonic()
    source = make_source(broker.bootstrap, "t", metrics=metrics)
    assert time.monotonic() - started < 1.0
    try:
        assert source.poll(0.1) is None
        assert not source.ready
        assert ready_gauge(metrics) == 0
        assert counter(metrics, "source_errors", "kafka", "connect") == 1
        broker.start()
        create_topic(broker.bootstrap, "t")
        produce(broker.bootstrap, "t", one_per_message([7]))
        values: list[float] = []
        readiness: list[bool] = []
        drain_until(source, values, readiness, lambda: values == [7.0], "the sample after start")
        assert readiness[-1], "ready once records came"
        assert ready_gauge(metrics) == 1
    finally:
        source.close()


# ---------------------------------------------------------------------------- (d) network faults


def _drain(source: KafkaSource, seen: list[float], readiness: list[bool]) -> None:
    polled, values = poll_values(source)
    readiness.append(source.ready)
    if polled is not None:
        seen.extend(values)
        source.commit(polled)


def drain_until(
    source: KafkaSource,
    seen: list[float],
    readiness: list[bool],
    done: Callable[[], bool],
    what: str,
    timeout: float = 20.0,
) -> None:
    """Poll and commit (recording samples and readiness) until ``done()``."""

    def step() -> bool:
        _drain(source, seen, readiness)
        return done()

    eventually(step, timeout=timeout, what=what)


def test_no_loss_through_network_faults(kafka_fault_broker: FaultyKafka) -> None:
    bootstrap = kafka_fault_broker.bootstrap
    proxy = kafka_fault_broker.proxy
    topic = "faults"
    create_topic(bootstrap, topic, partitions=2)
    total = 400
    produce(bootstrap, topic, one_per_message(range(total), job="d"))
    metrics = AgentMetrics()
    source = make_source(bootstrap, topic, metrics=metrics, request_timeout=2.0, max_poll_records=20)
    seen: list[float] = []
    readiness: list[bool] = []
    try:
        drain_until(source, seen, readiness, lambda: len(seen) >= 60, "first samples")
        assert source.ready

        proxy.set_mode("blackhole")
        drain_until(source, seen, readiness, lambda: not source.ready, "not ready", timeout=15)
        for _ in range(5):
            _drain(source, seen, readiness)
        proxy.set_mode("reset")
        for _ in range(5):
            _drain(source, seen, readiness)
        proxy.set_mode("pass")
        drain_until(
            source,
            seen,
            readiness,
            lambda: set(seen) >= set(map(float, range(total))) and source.ready,
            "every sample after the faults",
            timeout=30,
        )
        group = source.config.group_id
    finally:
        source.close()
    assert set(seen) == {float(v) for v in range(total)}, "no sample lost"
    first_down = readiness.index(False)
    assert True in readiness[first_down:], "ready again after the faults"
    assert counter(metrics, "source_errors", "kafka", "lag") >= 1
    # every offset ends up committed (the retried commits included)
    assert sum(c or 0 for c in committed(bootstrap, group, topic, 2)) == total


def test_resilient_producer_delivers_through_a_reset(kafka_fault_broker: FaultyKafka) -> None:
    bootstrap = kafka_fault_broker.bootstrap
    create_topic(bootstrap, "out")
    producer = ResilientProducer(connection(bootstrap, 2.0), WallClock(), name="test")
    try:
        producer.send("out", b"one")
        producer.flush(5)
        kafka_fault_broker.proxy.set_mode("reset")
        producer.send("out", b"lost")
        with pytest.raises(KafkaDeliveryError):
            producer.flush(2)
        kafka_fault_broker.proxy.set_mode("pass")
        delivered = False
        deadline = time.monotonic() + 20
        while not delivered and time.monotonic() < deadline:
            try:
                producer.send("out", b"two")
                producer.flush(5)
                delivered = True
            except KafkaDeliveryError:
                time.sleep(0.2)
        assert delivered
    finally:
        producer.close()
    values = [r.value for r in consume_all(bootstrap, "out", 2)]
    assert values[0] == b"one"
    assert b"two" in values


# ---------------------------------------------------------------------------- (e) broker restart


def _create_tolerant(bootstrap: str, topic: str) -> None:
    with contextlib.suppress(TopicAlreadyExistsError):  # the consumer may have auto-created it
        create_topic(bootstrap, topic)


def test_source_recovers_from_a_broker_restart(tansu_factory: Callable[..., Tansu]) -> None:
    broker = tansu_factory()
    topic = "restart"
    create_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, one_per_message(range(5)))
    metrics = AgentMetrics()
    source = make_source(broker.bootstrap, topic, metrics=metrics, request_timeout=2.0)
    seen: list[float] = []
    readiness: list[bool] = []
    try:
        drain_until(source, seen, readiness, lambda: len(seen) == 5, "samples before the restart")
        broker.stop()
        drain_until(source, seen, readiness, lambda: not source.ready, "not ready", timeout=15)
        assert ready_gauge(metrics) == 0
        broker.start()  # memory storage: topics, data and offsets are gone
        _create_tolerant(broker.bootstrap, topic)
        produce(broker.bootstrap, topic, one_per_message(range(100, 105)))
        drain_until(
            source,
            seen,
            readiness,
            lambda: {100.0, 104.0} <= set(seen),
            "samples produced after the restart",
            timeout=30,
        )
        drain_until(source, seen, readiness, lambda: source.ready, "ready again", timeout=10)
    finally:
        source.close()
    assert {float(v) for v in range(100, 105)} <= set(seen)
    assert ready_gauge(metrics) == 0, "closed"
    assert readiness[readiness.index(False) :].count(True) > 0


def test_resilient_producer_recreates_itself_after_a_broker_restart(
    tansu_factory: Callable[..., Tansu],
) -> None:
    broker = tansu_factory()
    create_topic(broker.bootstrap, "signals")
    producer = ResilientProducer(connection(broker.bootstrap, 2.0), WallClock(), name="signals")
    try:
        producer.send("signals", b"before")
        producer.flush(5)
        broker.restart()
        create_topic(broker.bootstrap, "signals")
        failures = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                producer.send("signals", b"after", key=b"k", headers=[("h", b"v")])
                producer.flush(5)
                break
            except KafkaDeliveryError:
                failures += 1
                time.sleep(0.2)
        else:
            pytest.fail("the producer never delivered after the restart")
        assert producer.created >= 2 or failures == 0
    finally:
        producer.close()
    records = consume_all(broker.bootstrap, "signals", 1)
    assert [r.value for r in records] == [b"after"]
    assert records[0].key == b"k"
    assert records[0].headers == [("h", b"v")]


def test_seeking_back_skips_the_partitions_a_rebalance_took_away(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """Records polled from a partition that is no longer assigned are dropped, not sought back:
    kafka-python refuses that seek with ValueError("Unassigned partition"), which once killed a
    replica whose engine was slow enough to be dropped from its group (3 replicas on 2 cores)."""
    topic = kafka_topic(2)
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
    for p in (0, 1):
        for i in range(3):
            producer.send(topic, f"{p}-{i}".encode(), partition=p)
    producer.flush(10)
    producer.close()
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = KafkaConsumer(bootstrap_servers=[kafka_bootstrap], auto_offset_reset="earliest")
    try:
        consumer.assign([tp0, tp1])
        polled: dict[TopicPartition, list[Any]] = {}
        deadline = time.monotonic() + 10
        while sum(len(r) for r in polled.values()) < 6 and time.monotonic() < deadline:
            for tp, recs in consumer.poll(500).items():
                polled.setdefault(tp, []).extend(recs)
        assert {tp: len(r) for tp, r in polled.items()} == {tp0: 3, tp1: 3}
        consumer.assign([tp0])  # the rebalance: partition 1 went to another replica
        _seek_back(consumer, [polled])
        assert consumer.position(tp0) == 0, "the partition kept is read again"
        assert consumer.assignment() == {tp0}
    finally:
        consumer.close()
