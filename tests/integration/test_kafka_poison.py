"""Poison messages against a real broker: each is dead-lettered with its reason, and what follows is read.

The nested-kvlist OTLP message (1.6 KB, 28 levels) used to grow a 536 MB label and kill the
decode worker on every retry, stopping its partition for good while readiness stayed green. A
message that kills the worker for a reason no limit foresees (here: the test sends the worker a
SIGSEGV while it decodes that message) is dead-lettered after its second kill.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from agent.metrics import AgentMetrics
from agent.sources.kafka import ERROR_HEADER, OFFSET_HEADER, TRUNCATED_HEADER, KafkaSource
from tests.integration.test_kafka_source import (
    T0,
    both_decoders,
    committed,
    consume_all,
    counter,
    make_source,
    one_per_message,
    poll_values,
)
from tests.servers.kafka import create_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def nested_kvlist(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": '"q"'}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


def otlp_points(points: list[dict[str, Any]]) -> bytes:
    metric = {"name": "temp", "gauge": {"dataPoints": points}}
    return orjson.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]})


POISON = otlp_points([{"timeUnixNano": str(int(T0 * 1e9)), "asDouble": 7, "attributes": [
    {"key": "k", "value": nested_kvlist(28)}
]}])  # fmt: skip


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", max_request_size=4 << 20)
    try:
        for value in values:
            producer.send(topic, value=value)
        producer.flush(10)
    finally:
        producer.close(5)


def drain(
    source: KafkaSource, want: int, timeout: float = 30.0, each: Callable[[], None] = lambda: None
) -> list[float]:
    good: list[float] = []
    deadline = time.monotonic() + timeout
    while len(good) < want and time.monotonic() < deadline:
        polled, got = poll_values(source)
        each()
        if polled is not None:
            good += got
            source.commit(polled)
    return good


@both_decoders
def test_the_nested_kvlist_message_is_dead_lettered_and_the_messages_after_it_processed(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], decode_worker: bool
) -> None:
    assert len(POISON) < 1700
    topic = kafka_topic()
    dlq = f"{topic}.dlq"
    create_topic(kafka_bootstrap, dlq)
    produce(kafka_bootstrap, topic, [*one_per_message([1]), POISON, *one_per_message([2, 3])])
    metrics = AgentMetrics()
    source = make_source(kafka_bootstrap, topic, metrics=metrics, decode_worker=decode_worker)
    try:
        good = drain(source, 3)
        group = source.config.group_id
        assert source.worker is None or source.worker.alive
        assert source.ready
    finally:
        source.close()
    assert good == [1.0, 2.0, 3.0]
    assert committed(kafka_bootstrap, group, topic) == [4]
    assert counter(metrics, "dead_lettered", "kafka", "over_limit") == 1
    (dead,) = consume_all(kafka_bootstrap, dlq, 1)
    assert dead.value == POISON
    headers = dict(dead.headers)
    assert headers[OFFSET_HEADER] == b"1"
    assert headers[ERROR_HEADER].decode().endswith("values nested 9 deep, over max_depth 8")


def test_timestamps_outside_the_window_are_dead_lettered(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic()
    dlq = f"{topic}.dlq"
    create_topic(kafka_bootstrap, dlq)
    far = orjson.dumps({"name": "temp", "labels": {}, "value": 1, "timestamp": 1e299})
    produce(kafka_bootstrap, topic, [far, *one_per_message([1])])
    metrics = AgentMetrics()
    source = make_source(kafka_bootstrap, topic, metrics=metrics)
    try:
        good = drain(source, 1)
    finally:
        source.close()
    assert good == [1.0]
    assert counter(metrics, "dead_lettered", "kafka", "bad_timestamp") == 1
    (dead,) = consume_all(kafka_bootstrap, dlq, 1)
    assert "over max_future 86400.0 s" in dict(dead.headers)[ERROR_HEADER].decode()


def slow_message(points: int = 20_000) -> bytes:
    """A valid OTLP message of about 2.7 MB that takes the decoder half a second."""
    return otlp_points(
        [
            {
                "timeUnixNano": str(int(T0 * 1e9)),
                "asDouble": i,
                "attributes": [{"key": "k", "value": {"arrayValue": {"values": [{"intValue": i}]}}}],
            }
            for i in range(points)
        ]
    )


class Killer(threading.Thread):
    """Sends the decode worker SIGSEGV when it stays on one message ``after`` seconds, ``times`` times."""

    def __init__(self, source: KafkaSource, times: int = 2, after: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.times = times
        self.after = after
        self.kills = 0
        self.done = threading.Event()

    def run(self) -> None:
        worker = self.source.worker
        assert worker is not None
        seen: tuple[int | None, int | None] = (None, None)
        since = time.monotonic()
        while not self.done.is_set() and self.kills < self.times:
            now = (worker.pid, worker.decoding)
            if now != seen:
                seen, since = now, time.monotonic()
            elif now[0] is not None and now[1] is not None and time.monotonic() - since > self.after:
                os.kill(now[0], signal.SIGSEGV)
                self.kills += 1
                seen = (None, None)
            time.sleep(0.005)


def test_a_message_that_kills_the_worker_twice_is_dead_lettered_and_skipped(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic()
    dlq = f"{topic}.dlq"
    create_topic(kafka_bootstrap, dlq)
    slow = slow_message()
    produce(kafka_bootstrap, topic, [*one_per_message([1]), slow, *one_per_message([2])])
    metrics = AgentMetrics()
    source = make_source(kafka_bootstrap, topic, metrics=metrics)
    killer = Killer(source)
    seen_stuck: list[tuple[bool, float]] = []

    def watch() -> None:
        seen_stuck.append((source.ready, metrics.partition_stuck.labels(topic, "0")._value.get()))

    killer.start()
    try:
        good = drain(source, 2, timeout=60, each=watch)
        group = source.config.group_id
    finally:
        killer.done.set()
        source.close()
    assert killer.kills == 2
    assert good == [1.0, 2.0], "the slow message is not decoded a third time; the others are, once"
    assert (False, 1.0) in seen_stuck, "while its records were read again the partition was stuck, not ready"
    assert seen_stuck[-1] == (True, 0.0)
    assert committed(kafka_bootstrap, group, topic) == [3]
    assert counter(metrics, "dead_lettered", "kafka", "decoder_crash") == 1
    assert counter(metrics, "source_errors", "kafka", "decode_worker") == 2
    (dead,) = consume_all(kafka_bootstrap, dlq, 1)
    assert slow.startswith(dead.value)  # cut to fit the producer's request limit, and said so
    assert dict(dead.headers)[TRUNCATED_HEADER] == str(len(slow)).encode()
    reason = dict(dead.headers)[ERROR_HEADER].decode()
    assert reason.startswith("the message killed the decode worker 2 times; last: ")
    assert "code -11" in reason
