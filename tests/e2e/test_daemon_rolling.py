"""A rolling restart of every replica, as a Deployment update does, loses no incident and no state.

Two ``aiops run`` replicas, a and b, learn the baselines of a series on each of 6 metrics
partitions, and one of them opens an incident that waits in its 40 s ``for:`` window while the
anomaly goes on. Then the replicas are replaced the way a Deployment with ``maxSurge: 1,
maxUnavailable: 0`` replaces them: c starts and takes its share, a is stopped with SIGTERM; d
starts, b is stopped. No periodic checkpoint is taken (a 1 h interval): what moves goes by the
checkpoints and hand-over records written in the rebalances and at shutdown.

Then the incident is executed once, by c or d, under its id and by the window it began before the
roll (not one restarted at a take-over); a spike planted on every series, whose baseline only a
and b ever learned, is flagged; and the checkpoints c and d leave count every sample of every
series once (records may be read twice where a new owner read a checkpoint older than the one
being written; what the detectors learned is the same).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from tests.e2e import support
from tests.e2e.daemon import Daemon
from tests.e2e.support import PARTITIONS, PLAYBOOK, THRESHOLD, Setup
from tests.servers.common import eventually
from tests.servers.twin import TwinFactory

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

WARMUP = 60
WINDOW = 40.0
EWMA: dict[str, Any] = {"type": "ewma", "min_score": 0.6, "params": {"warmup": 20, "warmup_hours": 0}}


class _Anomaly:
    """The error ratio of one deployment above its threshold, one sample a second, on a thread."""

    def __init__(self, producer: KafkaProducer, topic: str, namespace: str, name: str) -> None:
        self.producer, self.topic, self.namespace, self.name = producer, topic, namespace, name
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anomaly", daemon=True)

    def send(self) -> None:
        sample = {
            "name": "error_ratio",
            "labels": {"namespace": self.namespace, "deployment": self.name},
            "timestamp": time.time(),
            "value": 0.9,
        }
        self.producer.send(self.topic, orjson.dumps([sample]), key=self.name.encode(), partition=0)
        self.producer.flush(10)
        self.sent += 1

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.send()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)


def _logged(d: Daemon, pattern: str) -> list[tuple[float, re.Match[str]]]:
    """The (time, match) of each line of the daemon's JSON log whose message matches ``pattern``."""
    found = []
    for line in d.output().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            m = re.search(pattern, str(entry.get("message", "")))
            if m:
                found.append((datetime.fromisoformat(entry["time"]).timestamp(), m))
    return found


def _processed(d: Daemon) -> int:
    """The samples a stopped daemon processed in its life, from its last log line."""
    [(_, m)] = _logged(d, r"^agent stopped after (\d+) samples$")
    return int(m.group(1))


class _Flagged:
    """The deployments whose latency the ewma detector flagged at or after ``since``, read from
    every partition of the signals topic."""

    def __init__(self, bootstrap: str, topic: str, since: float) -> None:
        self.since = since
        self.deployments: set[str] = set()
        self.consumer = KafkaConsumer(bootstrap_servers=[bootstrap], auto_offset_reset="earliest")
        self.consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])

    def read(self) -> set[str]:
        for records in self.consumer.poll(500).values():
            for r in records:
                signal = orjson.loads(r.value)  # or a freshness record, which has no detector
                if (
                    signal.get("detector") == "ewma"
                    and signal["metric"] == "latency_seconds"
                    and signal["timestamp"] >= self.since
                ):
                    self.deployments.add(signal["labels"]["deployment"])
        return self.deployments


def _learned(bootstrap: str, state_topic: str, group: str, topic: str) -> dict[str, float]:
    """How many samples the ewma detector learned of each latency series, by its deployment, in
    the checkpoints the last replicas left on the state topic."""
    from agent.clock import WallClock
    from agent.config import KafkaConnection, PartitionStateConfig
    from agent.metrics import AgentMetrics
    from agent.partition_state import PartitionStates
    from detectors import DetectorBank, DetectorSpec, SeriesRegistry, build_detector

    registry = SeriesRegistry()
    ewma = build_detector("ewma", EWMA["params"], registry)
    bank = DetectorBank(registry, [DetectorSpec(ewma, EWMA["min_score"])])
    config = PartitionStateConfig(topic=state_topic, restore_timeout=10.0)
    connection = KafkaConnection(bootstrap_servers=[bootstrap])
    states = PartitionStates(config, group, bank, connection, AgentMetrics(), WallClock(), threading.Event())
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    try:
        assert len(states.restore(tps)) == PARTITIONS
    finally:
        states.close()
    n = ewma.state_dict()["arrays"]["ewma_n"]
    learned = {}
    for tp in tps:
        for i in states.series_of(tp).tolist():
            key = registry.key(i)
            if key.name == "latency_seconds":
                learned[key.label_dict["deployment"]] = float(n[i])
    return learned


def test_a_rolling_restart_of_every_replica_loses_no_incident_and_no_state(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str], twin_factory: TwinFactory
) -> None:
    state_topic = f"aiops-state-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=[kafka_bootstrap])
    admin.create_topics([NewTopic(state_topic, 3, 1, topic_configs={"cleanup.policy": "compact"})])
    admin.close()
    playbook = PLAYBOOK.replace("    maxGap: 10m", f"    maxGap: 10m\n    for: {WINDOW:.0f}s")
    detectors: list[dict[str, Any]] = [
        EWMA,
        THRESHOLD,
    ]
    source = {"state": {"enabled": True, "topic": state_topic, "interval": "1h"}}
    setup = Setup.start(
        tmp_path, kafka_bootstrap, kafka_topic, twin_factory, 2, playbook, source=source, detectors=detectors
    )
    names, namespace, metrics_topic = setup.names, setup.namespace, setup.metrics_topic
    a, b = setup.daemons
    with contextlib.ExitStack() as stack:
        stack.enter_context(a)
        stack.enter_context(b)
        setup.wait_ready()
        producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
        stack.callback(producer.close)
        # 1. baselines of a latency series on every partition, learned by a and b alone
        start = time.time() - 3600
        for p in range(PARTITIONS):
            producer.send(
                metrics_topic,
                support.latency(p, start, range(WARMUP), 0.0),
                key=f"d{p}".encode(),
                partition=p,
            )
        producer.flush(10)
        eventually(
            lambda: (
                support.total(a, "aiops_samples_in_total") + support.total(b, "aiops_samples_in_total")
                == PARTITIONS * WARMUP
            ),
            timeout=60,
            what="a and b learning every warm-up sample",
        )
        # an incident on the target of signals partition 0, waiting in its window while the anomaly goes on
        anomaly = _Anomaly(producer, metrics_topic, namespace, names[0])
        deadline = time.monotonic() + 30
        while not any(support.sample(d, "aiops_incidents_open") == 1 for d in (a, b)):
            assert time.monotonic() < deadline, "no replica opened the incident"
            anomaly.send()
            time.sleep(1)
        anomaly.start()
        stack.callback(anomaly.stop)
        owner = a if support.sample(a, "aiops_incidents_open") == 1 else b
        eventually(lambda: bool(support.opened(owner)), timeout=10, what="the opening in the owner's log")
        [opening] = support.opened(owner)

        # 2. the roll: maxSurge 1, maxUnavailable 0
        rolled_at = time.time()
        c = stack.enter_context(setup.replica("c"))
        setup.wait_owning([a, b, c], 2)
        assert a.terminate()[0] == 0
        setup.wait_owning([b, c], 3)
        d = stack.enter_context(setup.replica("d"))
        setup.wait_owning([b, c, d], 2)
        assert b.terminate()[0] == 0
        setup.wait_owning([c, d], 3)
        roll = time.time() - rolled_at

        # 3. a spike on every partition's series: flagged by c or d, from baselines a and b learned
        spike = range(WARMUP, WARMUP + 3)
        for p in range(PARTITIONS):
            producer.send(
                metrics_topic, support.latency(p, start, spike, 40.0), key=f"d{p}".encode(), partition=p
            )
        producer.flush(10)
        flagged = _Flagged(kafka_bootstrap, setup.signals_topic, start + 15 * WARMUP)
        stack.callback(flagged.consumer.close)
        eventually(
            lambda: flagged.read() == {f"d{p}" for p in range(PARTITIONS)},
            timeout=30,
            interval=0.5,
            what="a signal for the spike of every partition's series",
        )

        # the incident, once, under its id, by the window that began before the roll
        def restarted() -> bool:
            dep = setup.apps.read_namespaced_deployment(names[0], namespace)
            return "kubectl.kubernetes.io/restartedAt" in (dep.spec.template.metadata.annotations or {})

        eventually(restarted, timeout=60, interval=1.0, what="the deployment restarted")
        time.sleep(3)  # the anomaly goes on: room for a second execution, which must not come
        anomaly.stop()
        executed = [e for x in setup.daemons for e in support.executed(x.log_path.parent / "audit.jsonl")]
        assert [(e["target"]["name"], e["incident"]) for e in executed] == [(names[0], opening["incident"])]
        [done] = executed
        assert done["instance"] in {"c", "d"}
        took_over = [
            t
            for x in setup.daemons
            for t, _ in _logged(
                x, rf"took over {re.escape(setup.signals_topic)}\[0\] at offset \d+ with 1 open"
            )
        ]
        assert took_over, "the incident was never handed over"
        assert min(took_over) < opening["time"] + WINDOW, "handed over only after its window"
        assert opening["time"] + WINDOW <= done["time"] < min(took_over) + WINDOW, (
            done["time"] - opening["time"],
            [t - opening["time"] for t in took_over],
            roll,
        )

        # every sample processed, at least once: each replica's count at its exit
        sent = PARTITIONS * (WARMUP + len(spike)) + anomaly.sent
        eventually(
            lambda: (
                _processed(a)
                + _processed(b)
                + sum(support.total(x, "aiops_samples_in_total") for x in (c, d))
                >= sent
            ),
            timeout=30,
            what="c and d processing every sample",
        )
        assert c.terminate()[0] == 0
        assert d.terminate()[0] == 0
        processed = sum(_processed(x) for x in setup.daemons)
        assert processed >= sent
        # and learned exactly once, none lost: each series' count of samples, in the checkpoints c and
        # d wrote at their exit (a sample replayed from an older checkpoint is not counted twice)
        learned = _learned(kafka_bootstrap, state_topic, setup.group, metrics_topic)
        assert learned == {f"d{p}": WARMUP + len(spike) for p in range(PARTITIONS)}, (
            learned,
            processed - sent,
        )
