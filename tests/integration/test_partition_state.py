"""Partition checkpoints on a real broker: written, read back by another replica, bad ones skipped."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer, TopicPartition

from agent.clock import WallClock
from agent.config import KafkaConnection, PartitionStateConfig
from agent.metrics import AgentMetrics
from agent.partition_state import PartitionStates, state_key
from detectors import DetectorBank, DetectorSpec, SampleBatch, SeriesKey, SeriesRegistry, build_detector
from detectors.checkpoint import encode, take_series

pytestmark = pytest.mark.integration

GROUP = "g"


def _bank() -> DetectorBank:
    registry = SeriesRegistry()
    detector = build_detector("ewma", {"warmup": 20, "warmup_hours": 0}, registry)
    return DetectorBank(registry, [DetectorSpec(detector, 0.6)])


def _states(bootstrap: str, topic: str, bank: DetectorBank, metrics: AgentMetrics) -> PartitionStates:
    config = PartitionStateConfig(topic=topic, interval=1.0, restore_timeout=10.0)
    connection = KafkaConnection(bootstrap_servers=[bootstrap], request_timeout=5.0)
    return PartitionStates(
        config, GROUP, bank, connection, metrics, WallClock(), threading.Event(), environ={}
    )


def _learn(bank: DetectorBank, key: SeriesKey, n: int) -> np.ndarray:
    sid = bank.series.id_for(key)
    t = 1.7e9 + 15.0 * np.arange(n)
    x = 10.0 + (np.arange(n) * 7919 % 13) / 13.0
    bank.process(SampleBatch.from_arrays(np.full(n, sid), t, x))
    return np.array([sid], dtype=np.int64)


def _spike_scores(bank: DetectorBank, key: SeriesKey, at: int) -> list[float]:
    sid = bank.series.id_for(key)
    return [
        s.score
        for s in bank.process(SampleBatch(np.array([sid]), np.array([1.7e9 + 15.0 * at]), np.array([50.0])))
    ]


def test_a_checkpoint_written_by_one_replica_is_restored_by_another(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    state_topic = kafka_topic(3, prefix="state")
    tp = TopicPartition("metrics", 4)
    key = SeriesKey.of("latency", {"deployment": "d4"})
    first, second = _bank(), _bank()
    metrics_a, metrics_b = AgentMetrics(), AgentMetrics()
    a = _states(kafka_bootstrap, state_topic, first, metrics_a)
    b = _states(kafka_bootstrap, state_topic, second, metrics_b)
    try:
        a.observe(tp, _learn(first, key, 60), next_offset=17)
        assert a.due([tp]) == [tp]
        assert a.checkpoint([tp]) == 1
        assert a.due([tp]) == []  # nothing new since
        assert a.release([tp]) == 1  # given up: the series leaves this replica
        assert first.series.lookup(key) is None
        assert b.restore([tp]) == {tp: 17}  # where the consumer resumes
        assert b.series_of(tp).tolist() == [second.series.lookup(key)]
        assert _spike_scores(second, key, 60)  # the baseline came with it
        assert not _spike_scores(_bank(), key, 60)  # a cold bank stays silent
        assert metrics_b.series_restored._value.get() == 1
    finally:
        a.close()
        b.close()


def test_damaged_foreign_and_misplaced_checkpoints_are_skipped_with_a_warning(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    state_topic = kafka_topic(1, prefix="state")
    tps = [TopicPartition("metrics", p) for p in range(4)]
    donor = _bank()
    good = take_series(donor, _learn(donor, SeriesKey.of("latency", {"d": "1"}), 40), _meta(1, 5))
    elsewhere = take_series(donor, np.zeros(0, np.int64), _meta(9, 5))  # says it is partition 9's
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
    producer.send(state_topic, encode(good), key=state_key(GROUP, tps[1]))
    producer.send(state_topic, encode(good)[:-20], key=state_key(GROUP, tps[0]))  # truncated
    producer.send(state_topic, orjson.dumps({"hello": "world"}), key=state_key(GROUP, tps[2]))  # foreign
    producer.send(state_topic, encode(elsewhere), key=state_key(GROUP, tps[3]))
    producer.send(state_topic, b"\x00\x01 not ours", key=b"another-app")  # not a key we read: ignored
    producer.send(state_topic, b"no key at all")
    producer.flush(10)
    producer.close()
    bank, metrics = _bank(), AgentMetrics()
    states = _states(kafka_bootstrap, state_topic, bank, metrics)
    try:
        with caplog.at_level(logging.WARNING, logger="aiops.state"):
            assert states.restore(tps) == {tps[1]: 5}
    finally:
        states.close()
    skipped = [r.getMessage() for r in caplog.records if "skipping the checkpoint" in r.getMessage()]
    assert len(skipped) == 3
    assert any(f"key {GROUP}/metrics/0" in m and "truncated" in m for m in skipped)
    assert any(f"key {GROUP}/metrics/2" in m and "not a checkpoint" in m for m in skipped)
    assert any(f"key {GROUP}/metrics/3" in m and "belongs to g/metrics/9" in m for m in skipped)
    assert metrics.checkpoint_errors.labels("corrupt")._value.get() == 3
    assert bank.series.lookup(SeriesKey.of("latency", {"d": "1"})) is not None


def _meta(partition: int, offset: int) -> dict[str, object]:
    return {
        "group": GROUP,
        "topic": "metrics",
        "partition": partition,
        "offset": offset,
        "id": uuid.uuid4().hex,
    }
