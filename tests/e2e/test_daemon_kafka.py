"""``aiops run`` as a process against a real Kafka-protocol broker: samples in, signals out, clean exit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.e2e.daemon import Daemon
from tests.servers.common import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_daemon_consumes_signals_out_dead_letters_and_exits_cleanly(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    metrics_topic = kafka_topic()
    signals_topic = kafka_topic(prefix="signals")
    dlq_topic = kafka_topic(prefix="dlq")
    cfg = {
        "kafka": {"bootstrap_servers": [kafka_bootstrap]},
        "sources": {
            "kafka": {
                "topics": [metrics_topic],
                "group_id": f"e2e-{uuid.uuid4().hex[:8]}",
                "dead_letter_topic": dlq_topic,
                "session_timeout": "2s",
                "heartbeat_interval": "500ms",
            }
        },
        "detectors": [{"type": "threshold", "params": {"rules": [{"metric": "error_ratio", "above": 0.05}]}}],
        "signals": {"topic": signals_topic},
        "log": {"format": "json"},
    }
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
    start = int(time.time()) - 3600  # inside the source's window of accepted timestamps
    batch = [
        {"name": "error_ratio", "labels": {"deployment": d}, "timestamp": start + 15 * i, "value": v}
        for i in range(20)
        for d, v in (("checkout", 0.30 if i >= 15 else 0.01), ("cart", 0.01))
    ]
    producer.send(metrics_topic, orjson.dumps(batch))
    producer.send(metrics_topic, b"{not json")
    producer.flush(10)
    producer.close()

    with Daemon(tmp_path, cfg) as d:
        d.wait_http("/readyz", 200, timeout=60)
        consumer = KafkaConsumer(bootstrap_servers=[kafka_bootstrap], auto_offset_reset="earliest")
        consumer.assign([TopicPartition(signals_topic, 0)])
        signals: list[dict[str, object]] = []

        def read() -> bool:
            for records in consumer.poll(500).values():
                signals.extend(orjson.loads(r.value) for r in records)
            return bool(signals)

        eventually(
            read,
            timeout=60,
            what="a signal on the signals topic",
        )
        consumer.close()
        assert {s["labels"]["deployment"] for s in signals} == {"checkout"}  # type: ignore[index]
        assert all(s["kind"] == "threshold" for s in signals)
        metrics = d.wait_http("/metrics", 200)
        assert 'aiops_samples_in_total{source="kafka"} 40.0' in metrics
        assert 'aiops_dead_lettered_total{reason="not_json",source="kafka"} 1.0' in metrics
        code, took = d.terminate()
        assert code == 0
        assert took < 15
