"""Partition checkpoints on a real broker: written, read back by another replica, bad ones skipped."""

from __future__ import annotations

import io
import logging
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer, TopicPartition

from agent.clock import WallClock
from agent.config import KafkaConnection, PartitionStateConfig
from agent.metrics import AgentMetrics
from agent.partition_state import Manifest, PartitionStates, state_key, state_partition
from detectors import DetectorBank, DetectorSpec, SampleBatch, SeriesKey, SeriesRegistry, build_detector

pytestmark = pytest.mark.integration

GROUP = "g"


def _bank() -> DetectorBank:
    registry = SeriesRegistry()
    detector = build_detector("ewma", {"warmup": 20, "warmup_hours": 0}, registry)
    return DetectorBank(registry, [DetectorSpec(detector, 0.6)])


def _states(
    bootstrap: str, topic: str, bank: DetectorBank, metrics: AgentMetrics, max_bytes: int = 900_000
) -> PartitionStates:
    config = PartitionStateConfig(topic=topic, interval=1.0, restore_timeout=10.0, max_bytes=max_bytes)
    connection = KafkaConnection(bootstrap_servers=[bootstrap], request_timeout=5.0)
    return PartitionStates(
        config, GROUP, bank, connection, metrics, WallClock(), threading.Event(), environ={}
    )


def _learn(bank: DetectorBank, keys: list[SeriesKey], n: int = 60) -> np.ndarray[Any, np.dtype[np.int64]]:
    ids = np.array([bank.series.id_for(k) for k in keys], dtype=np.int64)
    for step in range(n):
        x = 10.0 + ((step * 7919 + ids * 31) % 13) / 13.0
        bank.process(SampleBatch.from_arrays(ids, np.full(ids.size, 1.7e9 + 15.0 * step), x))
    return ids


def _spike_scores(bank: DetectorBank, key: SeriesKey, at: int = 60) -> list[float]:
    sid = bank.series.id_for(key)
    batch = SampleBatch.from_arrays(np.array([sid]), np.array([1.7e9 + 15.0 * at]), np.array([50.0]))
    return [s.score for s in bank.process(batch)]


def _donate(bootstrap: str, topic: str, tp: TopicPartition, key: SeriesKey, offset: int) -> None:
    """One replica's checkpoint of ``tp``: ``key`` learned, at ``offset``."""
    bank = _bank()
    donor = _states(bootstrap, topic, bank, AgentMetrics())
    donor.observe(tp, _learn(bank, [key], 40), next_offset=offset)
    assert donor.checkpoint([tp]) == 1
    donor.close()


def _restore(
    bootstrap: str, topic: str, tps: list[TopicPartition], caplog: pytest.LogCaptureFixture
) -> tuple[dict[TopicPartition, int], DetectorBank, AgentMetrics]:
    """What a new replica restores of ``tps`` (its warnings in ``caplog``), its bank and metrics."""
    bank, metrics = _bank(), AgentMetrics()
    states = _states(bootstrap, topic, bank, metrics)
    try:
        with caplog.at_level(logging.WARNING, logger="aiops.state"):
            restored = states.restore(tps)
    finally:
        states.close()
    return restored, bank, metrics


def _value(metric: Any) -> float:
    return float(metric._value.get())


def test_a_checkpoint_written_by_one_replica_is_restored_by_another(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    state_topic = kafka_topic(3, prefix="state")
    tp = TopicPartition("metrics", 4)
    key = SeriesKey.of("latency", {"deployment": "d4"})
    first, second = _bank(), _bank()
    metrics_b = AgentMetrics()
    a = _states(kafka_bootstrap, state_topic, first, AgentMetrics())
    b = _states(kafka_bootstrap, state_topic, second, metrics_b)
    try:
        a.observe(tp, _learn(first, [key]), next_offset=17)
        assert a.due([tp]) == [tp]
        assert a.checkpoint([tp]) == 1
        assert a.due([tp]) == []  # nothing new since
        assert a.release([tp]) == 1  # given up: the series leaves this replica
        assert first.series.lookup(key) is None
        assert b.restore([tp]) == {tp: 17}  # where the consumer resumes
        assert b.series_of(tp).tolist() == [second.series.lookup(key)]
        assert _spike_scores(second, key)  # the baseline came with it
        assert not _spike_scores(_bank(), key)  # a cold bank stays silent
        assert _value(metrics_b.series_restored) == 1
    finally:
        a.close()
        b.close()


def test_a_partition_that_starts_cold_is_checkpointed_empty_where_it_starts(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """The replica that owned a partition from its start has learned its series but not yet
    written their checkpoint (it does on revoke, when it learns of the new assignment): a new
    owner reading the state topic before then finds the empty first checkpoint and replays the
    partition from its start, rather than starting cold at the committed offset."""
    state_topic = kafka_topic(3, prefix="state")
    tp = TopicPartition("metrics", 2)
    key = SeriesKey.of("latency", {"deployment": "d2"})
    first, second = _bank(), _bank()
    metrics_a = AgentMetrics()
    a = _states(kafka_bootstrap, state_topic, first, metrics_a)
    b = _states(kafka_bootstrap, state_topic, second, AgentMetrics())
    try:
        assert a.restore([tp]) == {}  # nothing there yet: cold
        assert a.start_cold({tp: 3}) == 1
        assert _value(metrics_a.checkpoint_series.labels("metrics", "2")) == 0
        a.observe(tp, _learn(first, [key]), next_offset=17)  # learned, committed, not checkpointed
        assert b.restore([tp]) == {tp: 3}  # replay from where the first owner started
        assert b.series_of(tp).size == 0
        assert not _spike_scores(second, key)  # nothing learned yet: the replay brings it
    finally:
        a.close()
        b.close()


def test_a_large_checkpoint_goes_in_chunks_and_a_torn_write_keeps_the_previous_one(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """300 series over chunks of at most 1 kB; a later checkpoint whose manifest never came (the
    replica died between its chunks and its manifest) leaves the earlier one whole."""
    state_topic = kafka_topic(2, prefix="state")
    tp = TopicPartition("metrics", 0)
    keys = [SeriesKey.of("latency", {"pod": f"p{i}"}) for i in range(300)]
    bank, metrics = _bank(), AgentMetrics()
    writer = _states(kafka_bootstrap, state_topic, bank, metrics, max_bytes=1024)
    reader_bank = _bank()
    reader = _states(kafka_bootstrap, state_topic, reader_bank, AgentMetrics(), max_bytes=1024)
    try:
        writer.observe(tp, _learn(bank, keys), next_offset=5)
        assert writer.checkpoint([tp]) == 1
        size = _value(metrics.checkpoint_bytes.labels("metrics", "0"))
        assert size > 2 * 1024  # so it took several chunks
        # the next checkpoint's chunks go to the other slot; its manifest is lost
        writer.observe(tp, _learn(bank, keys[:1], n=1), next_offset=9)
        torn = Manifest(GROUP, "metrics", 0, 9, 1, 1, "torn")
        producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
        where = state_partition(state_key(GROUP, tp), [0, 1])  # beside the manifest, as a replica writes it
        producer.send(state_topic, b"half a checkpoint", key=torn.chunk_key(0), partition=where)
        producer.flush(10)
        producer.close()
        assert reader.restore([tp]) == {tp: 5}
        assert {reader_bank.series.key(int(i)) for i in reader.series_of(tp)} == set(keys)
        assert all(_spike_scores(reader_bank, k) for k in keys[::50])
    finally:
        writer.close()
        reader.close()


def test_damaged_foreign_and_misplaced_checkpoints_are_skipped_with_a_warning(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    state_topic = kafka_topic(1, prefix="state")
    tps = [TopicPartition("metrics", p) for p in range(5)]
    _donate(kafka_bootstrap, state_topic, tps[1], SeriesKey.of("latency", {"d": "1"}), 5)
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
    good = Manifest(GROUP, "metrics", 0, 5, 0, 1, "x")
    producer.send(state_topic, good.encode(0.0)[:-5], key=state_key(GROUP, tps[0]))  # truncated
    producer.send(state_topic, orjson.dumps({"hello": "world"}), key=state_key(GROUP, tps[2]))  # foreign
    elsewhere = Manifest(GROUP, "metrics", 9, 5, 0, 1, "y")  # says it is partition 9's
    producer.send(state_topic, elsewhere.encode(0.0), key=state_key(GROUP, tps[3]))
    chunkless = Manifest(GROUP, "metrics", 4, 5, 0, 1, "z")  # its chunk was never written
    producer.send(state_topic, chunkless.encode(0.0), key=state_key(GROUP, tps[4]))
    producer.send(state_topic, b"\x00\x01 not ours", key=b"another-app")  # not a key we read: ignored
    producer.send(state_topic, b"no key at all")
    producer.flush(10)
    producer.close()
    restored, bank, metrics = _restore(kafka_bootstrap, state_topic, tps, caplog)
    assert restored == {tps[1]: 5}
    skipped = [r.getMessage() for r in caplog.records if "skipping the checkpoint" in r.getMessage()]
    assert len(skipped) == 4, skipped
    assert any(f"key {GROUP}/metrics/0" in m and "not JSON" in m for m in skipped)
    assert any(f"key {GROUP}/metrics/2" in m and "not a checkpoint manifest" in m for m in skipped)
    assert any(f"key {GROUP}/metrics/3" in m and "belongs to g/metrics/9" in m for m in skipped)
    assert any(f"key {GROUP}/metrics/4" in m and "chunk 0 of 1 is missing" in m for m in skipped)
    assert _value(metrics.checkpoint_errors.labels("corrupt")) == 4
    assert bank.series.lookup(SeriesKey.of("latency", {"d": "1"})) is not None


def test_a_checkpoint_whose_arrays_claim_terabytes_is_skipped_and_the_others_restored(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk whose array header claims 1e12 float64s (in 218 bytes) is refused before anything is
    allocated: the restore goes on, the partition starts cold, the valid checkpoint beside it loads."""
    state_topic = kafka_topic(1, prefix="state")
    tps = [TopicPartition("metrics", p) for p in range(2)]
    _donate(kafka_bootstrap, state_topic, tps[1], SeriesKey.of("latency", {"d": "1"}), 5)
    header = orjson.dumps(
        {
            "format": "aiops.series-state",
            "version": 1,
            "meta": {"id": "x", "chunk": 0},
            "keys": [["m", []]],
            "parts": {"0:ewma": {"x": {"__array__": 1}}},
            "rows": {"0:ewma": {"__array__": 0}},
        }
    )
    arrays = []
    for shape, descr, data in (((1,), "<i8", bytes(8)), ((10**12,), "<f8", b"")):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
        arrays.append(buf.getvalue() + data)
    lengths = orjson.dumps([len(a) for a in arrays])
    size = struct.Struct(">I")
    body = (
        b"AIOPSST1" + size.pack(len(header)) + header + size.pack(len(lengths)) + lengths + b"".join(arrays)
    )
    manifest = Manifest(GROUP, "metrics", 0, 5, 0, 1, "x")
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
    producer.send(state_topic, zlib.compress(body), key=manifest.chunk_key(0))
    producer.send(state_topic, manifest.encode(0.0), key=state_key(GROUP, tps[0]))
    producer.flush(10)
    producer.close()
    restored, bank, metrics = _restore(kafka_bootstrap, state_topic, tps, caplog)
    assert restored == {tps[1]: 5}
    (skipped,) = [r.getMessage() for r in caplog.records if "skipping the checkpoint" in r.getMessage()]
    assert f"key {GROUP}/metrics/0" in skipped
    assert "claims shape (1000000000000,)" in skipped
    assert _value(metrics.checkpoint_errors.labels("corrupt")) == 1
    assert bank.series.lookup(SeriesKey.of("latency", {"d": "1"})) is not None


def test_records_under_a_manifests_key_that_name_no_chunk_are_not_held(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever may write the state topic could put any number of keys under ``<manifest key>#``:
    only ``#0.i`` and ``#1.i`` (i below MAX_CHUNKS) are held while it is read; the checkpoint beside
    the junk restores."""
    state_topic = kafka_topic(1, prefix="state")
    tp = TopicPartition("metrics", 0)
    _donate(kafka_bootstrap, state_topic, tp, SeriesKey.of("latency", {"d": "0"}), 7)
    base = state_key(GROUP, tp)
    junk = [b"#x", b"#2.0", b"#0.4096", b"#0.-1", b"#1.00000", b"#0.1\n"] + [
        b"#junk%d" % i for i in range(200)
    ]
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
    for suffix in junk:
        producer.send(state_topic, b"x" * 1000, key=base + suffix)
    producer.flush(10)
    producer.close()
    bank = _bank()
    states = _states(kafka_bootstrap, state_topic, bank, AgentMetrics())
    try:
        with caplog.at_level(logging.WARNING, logger="aiops.state"):
            read = states.changelog._read({base: tp})
            assert states.restore([tp]) == {tp: 7}
    finally:
        states.close()
    _, chunks = read[base]
    assert chunks
    assert all(k.startswith((base + b"#0.", base + b"#1.")) for k in chunks)
    assert not set(chunks) & {base + s for s in junk}
    assert any(f"skipped {len(junk)} record(s)" in r.getMessage() for r in caplog.records)
    assert bank.series.lookup(SeriesKey.of("latency", {"d": "0"})) is not None
