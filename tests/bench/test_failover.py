"""The pause of a failover (make bench): seconds from a replica's SIGKILL until the survivor has
processed a new record of each partition it took over, with the restore of their state; writes
bench-results/failover.json."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from tests.e2e.daemon import Daemon
from tests.servers.common import eventually

pytestmark = [pytest.mark.bench, pytest.mark.integration]

OUT = Path("bench-results/failover.json")
PARTITIONS = 6
SERIES_PER_PARTITION = 2000
WARMUP = 40


def _metric(d: Daemon, name: str) -> dict[str, float]:
    text = d.wait_http("/metrics", 200)
    return {
        m.group(1) or "": float(m.group(2))
        for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)
    }


def _batch(p: int, start: float, steps: range) -> bytes:
    return orjson.dumps(
        [
            {
                "name": "latency",
                "labels": {"p": str(p), "s": str(s)},
                "timestamp": start + 15 * i,
                "value": 1.0 + (s % 7) / 7,
            }
            for i in steps
            for s in range(SERIES_PER_PARTITION)
        ]
    )


def test_failover_pause(tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> None:
    metrics_topic = kafka_topic(PARTITIONS)
    state_topic = f"aiops-state-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=[kafka_bootstrap])
    admin.create_topics([NewTopic(state_topic, 3, 1, topic_configs={"cleanup.policy": "compact"})])
    admin.close()
    session = 2.0
    cfg = {
        "kafka": {"bootstrap_servers": [kafka_bootstrap]},
        "sources": {
            "kafka": {
                "topics": [metrics_topic],
                "group_id": f"bench-{uuid.uuid4().hex[:8]}",
                "dead_letter_topic": kafka_topic(prefix="dlq"),
                "session_timeout": f"{session}s",
                "heartbeat_interval": "500ms",
                "state": {"topic": state_topic, "interval": "1s"},
            }
        },
        "detectors": [{"type": "ensemble", "min_score": 0.55, "hold": True}],
        "signals": {"kafka": False},
        "log": {"format": "json"},
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    start = time.time() - 3 * 3600
    with Daemon(tmp_path / "a", cfg) as a, Daemon(tmp_path / "b", cfg) as b:
        for d in (a, b):
            d.wait_http("/readyz", 200, timeout=60)
        eventually(
            lambda: (
                sum(_metric(a, "aiops_kafka_partitions_owned").values()) == 3
                and sum(_metric(b, "aiops_kafka_partitions_owned").values()) == 3
            ),
            timeout=60,
            what="3 partitions each",
        )
        producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap], max_request_size=64 << 20)
        for p in range(PARTITIONS):
            for i in range(0, WARMUP, 10):
                producer.send(metrics_topic, _batch(p, start, range(i, i + 10)), partition=p)
        producer.flush(60)
        total = PARTITIONS * SERIES_PER_PARTITION * WARMUP
        eventually(
            lambda: (
                sum(_metric(a, "aiops_samples_in_total").values())
                + sum(_metric(b, "aiops_samples_in_total").values())
                == total
            ),
            timeout=300,
            what="the warm-up processed",
        )
        eventually(
            lambda: (
                list(_metric(a, "aiops_state_checkpoint_series").values())
                == [float(SERIES_PER_PARTITION)] * 3
            ),
            timeout=60,
            what="the checkpoints of the replica to be killed",
        )
        before = sum(_metric(b, "aiops_samples_in_total").values())
        a.proc.kill()
        killed = time.monotonic()
        for p in range(PARTITIONS):  # a new record on every partition, the dead replica's too
            producer.send(metrics_topic, _batch(p, start, range(WARMUP, WARMUP + 1)), partition=p)
        producer.flush(60)
        producer.close()
        eventually(
            lambda: (
                sum(_metric(b, "aiops_samples_in_total").values())
                >= before + PARTITIONS * SERIES_PER_PARTITION
            ),
            timeout=120,
            interval=0.1,
            what="the survivor processing every partition's new record",
        )
        pause = time.monotonic() - killed
        restore = _metric(b, "aiops_state_restore_seconds_sum")
        restored = sum(_metric(b, "aiops_state_series_restored_total").values())
    results = {
        "series_moved": int(restored),
        "session_timeout_seconds": session,
        "pause_seconds": round(pause, 2),
        "restore_seconds_total_on_survivor": round(sum(restore.values()), 3),
    }
    print(json.dumps(results, indent=2))
    assert restored == 3 * SERIES_PER_PARTITION
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True))
