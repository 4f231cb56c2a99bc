"""Two ``aiops run`` replicas share a 6-partition topic; a stopped replica's series keep their baselines.

Each replica learns the series of the partitions it owns; the state of each partition is
checkpointed to the state topic. When one replica is killed, the other takes its partitions
over and, with the checkpoints, flags a spike on a series whose baseline only the dead replica
ever saw; without them (state off) it cannot, because Kafka replays nothing already committed.
A replica stopped by SIGTERM (a rolling update) hands its partitions over the same way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from tests.e2e.daemon import Daemon
from tests.e2e.support import PARTITIONS, latency, metric, total
from tests.servers.common import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

WARMUP = 60


@pytest.mark.parametrize(
    ("state", "stop"),
    [(True, "kill"), (False, "kill"), (True, "term")],
    ids=["sigkill-with-checkpoints", "sigkill-without-checkpoints", "sigterm-rolling-update"],
)
def test_killed_replicas_partitions_move_with_their_baselines(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str], state: bool, stop: str
) -> None:
    metrics_topic = kafka_topic(PARTITIONS)
    signals_topic = kafka_topic(prefix="signals")
    state_topic = f"aiops-state-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=[kafka_bootstrap])
    admin.create_topics([NewTopic(state_topic, 3, 1, topic_configs={"cleanup.policy": "compact"})])
    admin.close()
    cfg = {
        "kafka": {"bootstrap_servers": [kafka_bootstrap]},
        "sources": {
            "kafka": {
                "topics": [metrics_topic],
                "group_id": f"e2e-{uuid.uuid4().hex[:8]}",
                "dead_letter_topic": kafka_topic(prefix="dlq"),
                "session_timeout": "2s",
                "heartbeat_interval": "500ms",
                # on SIGTERM, no periodic checkpoint: the one written at shutdown must do
                "state": {
                    "enabled": state,
                    "topic": state_topic,
                    "interval": "500ms" if stop == "kill" else "1h",
                },
            }
        },
        "detectors": [{"type": "ewma", "min_score": 0.6, "params": {"warmup": 20, "warmup_hours": 0}}],
        "signals": {"topic": signals_topic},
        "log": {"format": "json"},
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    start = time.time() - 3600
    with Daemon(tmp_path / "a", cfg) as a, Daemon(tmp_path / "b", cfg) as b:
        a.wait_http("/readyz", 200, timeout=60)
        b.wait_http("/readyz", 200, timeout=60)
        eventually(
            lambda: (
                total(a, "aiops_kafka_partitions_owned") == 3
                and total(b, "aiops_kafka_partitions_owned") == 3
            ),
            timeout=60,
            what="each replica owning 3 of the 6 partitions",
        )
        producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
        for p in range(PARTITIONS):
            producer.send(
                metrics_topic,
                latency(p, start, range(WARMUP), 0.0),
                key=f"d{p}".encode(),
                partition=p,
            )
        producer.flush(10)
        eventually(
            lambda: (
                total(a, "aiops_samples_in_total") + total(b, "aiops_samples_in_total") == PARTITIONS * WARMUP
            ),
            timeout=60,
            what="both replicas learning every warm-up sample",
        )
        assert total(a, "aiops_samples_in_total") == 3 * WARMUP  # each learned only its own partitions
        if state and stop == "kill":
            # one warm-up message per partition: a checkpoint holding its series covers all of it
            eventually(
                lambda: (
                    list(metric(a.wait_http("/metrics", 200), "aiops_state_checkpoint_series").values())
                    == [1.0] * 3
                ),
                timeout=30,
                what="the checkpoints of the replica to be killed covering the warm-up",
            )
        if stop == "kill":
            a.proc.kill()  # SIGKILL: no revoke, no last checkpoint
            a.proc.wait(10)
        else:  # what a Deployment update does: SIGTERM, a last checkpoint, the group left at once
            code, _ = a.terminate()
            assert code == 0
        eventually(
            lambda: total(b, "aiops_kafka_partitions_owned") == PARTITIONS,
            timeout=60,
            what="the survivor owning all 6 partitions",
        )
        spike = range(WARMUP, WARMUP + 3)
        for p in range(PARTITIONS):
            producer.send(metrics_topic, latency(p, start, spike, 40.0), key=f"d{p}".encode(), partition=p)
        producer.flush(10)
        producer.close()
        eventually(
            lambda: total(b, "aiops_samples_in_total") >= 3 * WARMUP + PARTITIONS * len(spike),
            timeout=60,
            what="the survivor processing the spike on every partition",
        )
        consumer = KafkaConsumer(bootstrap_servers=[kafka_bootstrap], auto_offset_reset="earliest")
        consumer.assign([TopicPartition(signals_topic, 0)])
        flagged: set[str] = set()

        def read() -> bool:
            for records in consumer.poll(500).values():
                flagged.update(orjson.loads(r.value)["labels"]["deployment"] for r in records)
            return len(flagged) == PARTITIONS

        if state:
            eventually(read, timeout=30, what="a signal for the spike of every partition's series")
            restored = total(b, "aiops_state_series_restored_total")
            assert restored == 3  # the dead replica's three series, from their checkpoints
            assert "skipping the checkpoint" not in b.output()
            # no sample lost and none processed twice: the checkpoints were at the committed offsets
            assert total(b, "aiops_samples_in_total") == 3 * WARMUP + PARTITIONS * len(spike)
        else:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                read()
            # the survivor's own series only: the dead replica's started cold and stay in warm-up
            assert len(flagged) == 3, flagged
        consumer.close()
        code, _ = b.terminate()
        assert code == 0
