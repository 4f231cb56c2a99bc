"""Open incidents handed over with their signals partition, on a real broker.

Two deciding replicas, A and B, each a playbook engine behind a decision consumer in one
consumer group on a one-partition signals topic, with the hand-over records on a state topic.
A owns the partition first; it is dropped (its consumer closed, nothing written on the way out:
what a crash leaves); B is assigned the partition and goes on with A's incidents, on the
injected clock's time.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer, TopicPartition

from agent.clock import ManualClock
from agent.config import HandoverConfig, KafkaConnection
from agent.handover import IncidentHandover
from agent.metrics import AgentMetrics
from agent.partition_state import Manifest, state_key
from agent.playbook.engine import PlaybookEngine
from agent.playbook.events import AuditLog, IncidentState
from agent.playbook.loader import PlaybookSet
from agent.playbook.requests import RecordingExecutor
from agent.routing import DecisionConsumer
from detectors import SampleBatch, SeriesRegistry, Signal
from detectors.freshness import SeriesFreshness
from detectors.signal import SignalKind
from tests.integration.decision_support import NS, error_key, restart_playbooks

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def _playbooks(**trigger: Any) -> PlaybookSet:
    return restart_playbooks(minScore=0.5, **trigger)


class Replica:
    """The deciding half of one replica: engine, recording executor, freshness, decision consumer."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        signals_topic: str,
        state_topic: str,
        group: str,
        playbooks: PlaybookSet,
        clock: ManualClock,
        *,
        handover: bool = True,
    ) -> None:
        self.name = name
        self.clock = clock
        self.metrics = AgentMetrics()
        self.series = SeriesRegistry()
        self.freshness = SeriesFreshness(self.series)
        self.executor = RecordingExecutor()
        self.audit = AuditLog()
        self.engine = PlaybookEngine(
            playbooks, self.executor, clock, self.audit, metrics=self.metrics, freshness=self.freshness
        )
        connection = KafkaConnection(bootstrap_servers=[bootstrap], request_timeout=5.0)
        config = HandoverConfig(topic=state_topic, interval=1.0, restore_timeout=10.0)
        self.stop = threading.Event()
        self.handover = IncidentHandover(config, group, connection, self.metrics, clock, self.stop, {})
        self.decisions = DecisionConsumer(
            connection,
            signals_topic,
            group,
            self.engine,
            self.metrics,
            clock,
            {},
            session_timeout=2.0,
            heartbeat_interval=0.5,
            handover=self.handover if handover else None,
        )
        self.consumer: Any = None
        self.gone = False

    def join(self, tp: TopicPartition) -> None:
        """Connect and poll until the group gave this replica ``tp`` (and it took it over)."""
        self.consumer = self.decisions.connect()
        self.drive(lambda: tp in self.decisions.owned, what=f"{self.name} owning {tp}")

    def drive(self, done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Run the consumer's steps until ``done`` (wall-time bounded: the broker's)."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.decisions.step(self.consumer)

    def take(self, n: int) -> None:
        """Poll until ``n`` signals in all reached the engine."""
        self.drive(lambda: self.decisions.received >= n, what=f"{self.name} taking {n} signals")

    def crash(self) -> None:
        """The consumer closes without the hand-over a clean exit writes."""
        self.consumer.close(autocommit=False)
        self.gone = True

    def leave(self) -> None:
        """Leave cleanly: the hand-over records are written on the way out."""
        if self.consumer is not None:
            self.decisions.leave(self.consumer)
        self.gone = True

    def close(self) -> None:
        """Leave (unless gone already) and close the hand-over producer."""
        if not self.gone:
            self.leave()
        self.handover.close()

    def report(self, deployment: str, *times: float) -> None:
        """Samples of the deployment's series under the bar at ``times`` (counted as fresh)."""
        sid = self.series.id_for(error_key(deployment))
        ts = np.array(times, dtype=np.float64)
        self.freshness.observe(SampleBatch.from_arrays(np.full(ts.size, sid), ts, np.full(ts.size, 0.01)))

    def transitions(self, incident: str) -> list[tuple[float, IncidentState]]:
        return [
            (e.time, e.state)
            for e in self.audit.incident_events()
            if e.incident == incident and e.previous is not e.state
        ]


def _open(replica: Replica) -> list[dict[str, Any]]:
    """The replica's open incidents, as its engine shows them."""
    return cast(list[dict[str, Any]], replica.engine.incidents())


class Signals:
    """Publishes threshold signals to the signals topic, timestamped by the injected clock."""

    def __init__(self, bootstrap: str, topic: str, clock: ManualClock) -> None:
        self.producer = KafkaProducer(bootstrap_servers=[bootstrap])
        self.topic = topic
        self.clock = clock
        self.sent = 0

    def breach(self, *deployments: str, partition: int = 0) -> None:
        for name in deployments:
            signal = Signal(SignalKind.THRESHOLD, error_key(name), self.clock.now(), 0.9, 1.0, "threshold")
            key = f"Deployment/{NS}/{name}".encode()
            self.producer.send(self.topic, orjson.dumps(signal.to_dict()), key=key, partition=partition)
            self.sent += 1
        self.producer.flush(10)

    def close(self) -> None:
        self.producer.close()


def _replicas(
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    playbooks: PlaybookSet,
    *,
    handover: bool = True,
    partitions: int = 1,
) -> tuple[Replica, Replica, Signals, TopicPartition, ManualClock]:
    signals_topic = kafka_topic(partitions, prefix="signals")
    state_topic = kafka_topic(1, prefix="state")
    group = f"decide-{signals_topic}"
    clock = ManualClock(T0)
    a, b = (
        Replica(n, kafka_bootstrap, signals_topic, state_topic, group, playbooks, clock, handover=handover)
        for n in "ab"
    )
    return a, b, Signals(kafka_bootstrap, signals_topic, clock), TopicPartition(signals_topic, 0), clock


@pytest.mark.parametrize("handover", [True, False], ids=["handed-over", "without-hand-over"])
def test_a_pending_incident_keeps_its_for_window_on_the_new_owner(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], handover: bool
) -> None:
    """``for: 5m``; A opens the incident at 0 and is dropped at 4m; B executes at 5m, once, under
    the same id. Without the hand-over, B opens it anew at 4m30 and executes at 9m30."""
    a, b, signals, tp, clock = _replicas(
        kafka_bootstrap, kafka_topic, _playbooks(**{"for": "5m"}), handover=handover
    )
    try:
        a.join(tp)
        for t in range(0, 241, 30):
            clock.set(T0 + t)
            signals.breach("web")
            a.take(signals.sent)
        (opened,) = _open(a)
        assert (opened["state"], opened["startedAt"]) == ("pending", T0)
        a.crash()
        assert a.executor.requests == []

        b.join(tp)
        restored = _open(b)
        if handover:
            assert [(i["id"], i["state"], i["startedAt"]) for i in restored] == [
                (opened["id"], "pending", T0)
            ]
            assert b.metrics.incidents_restored._value.get() == 1
        else:
            assert restored == []
        for t in range(270, 631, 30):
            clock.set(T0 + t)
            signals.breach("web")
            b.take(b.decisions.received + 1)
        executed = [(p.time, p.request.incident) for p in b.executor.requests]
        if handover:
            assert executed == [(T0 + 300, opened["id"])]
            assert (T0 + 300, IncidentState.FIRING) in b.transitions(opened["id"])
        else:
            assert [when for when, _ in executed] == [T0 + 270 + 300]
            assert executed[0][1] != opened["id"]  # a new incident: its first signal came later
    finally:
        signals.close()
        a.close()
        b.close()


def test_an_incident_in_verify_whose_signals_stopped_resolves_or_goes_stale_on_the_new_owner(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """A restarts two deployments at 0; no signal comes after. A is dropped at 30 s, both
    incidents verifying. On B, ``calm`` reports fresh samples under the bar and resolves at 2m
    (verify.quiet after the action, with 3 fresh samples counted on B); ``silent`` never reports
    again: stale, then escalated at 10m (verify.within). B runs no step again."""
    a, b, signals, tp, clock = _replicas(kafka_bootstrap, kafka_topic, _playbooks(**{"for": "0s"}))
    try:
        a.join(tp)
        for name in ("calm", "silent"):
            a.report(name, T0 - 30, T0 - 15, T0)
        signals.breach("calm", "silent")
        a.take(2)
        assert sorted(p.request.target.name for p in a.executor.requests) == ["calm", "silent"]
        clock.set(T0 + 30)
        a.engine.tick()
        a.decisions.step(a.consumer)  # writes the hand-over record: the incidents changed
        ids = {i["target"]["name"]: i["id"] for i in _open(a)}
        assert {i["state"] for i in _open(a)} == {"verifying"}
        a.crash()

        b.join(tp)
        assert {i["target"]["name"]: (i["id"], i["state"]) for i in _open(b)} == {
            name: (ident, "verifying") for name, ident in ids.items()
        }
        assert all(i["actedAt"] == T0 for i in _open(b))
        for t in range(45, 601, 15):
            clock.set(T0 + t)
            b.report("calm", T0 + t)
            b.engine.tick()
        calm, silent = b.transitions(ids["calm"]), b.transitions(ids["silent"])
        assert calm[-1] == (T0 + 120, IncidentState.RESOLVED)
        assert silent[0][1] is IncidentState.STALE
        assert silent[-1] == (T0 + 600, IncidentState.ESCALATED)
        assert b.executor.requests == []  # no step ran twice
        assert _open(b) == []
    finally:
        signals.close()
        a.close()
        b.close()


def test_a_clean_exit_hands_over_and_a_record_of_another_version_is_dropped_with_a_warning(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """A leaves cleanly: its record is written on the way out and B takes the incident over. Then a
    record whose chunk is of another version replaces it: the next owner warns and starts empty."""
    a, b, signals, tp, clock = _replicas(kafka_bootstrap, kafka_topic, _playbooks(**{"for": "5m"}))
    try:
        a.join(tp)
        signals.breach("web")
        a.take(1)
        a.leave()
        assert _open(a) == []  # let go
        assert a.metrics.incidents_handed_over._value.get() == 1
        b.join(tp)
        assert [i["startedAt"] for i in _open(b)] == [T0]
        b.leave()

        chunk = zlib.compress(
            orjson.dumps({"format": "aiops.incidents", "version": 2, "id": "x", "chunk": 0})
        )
        manifest = Manifest(b.decisions.group, tp.topic, 0, 1, 0, 1, "x")
        state_topic = b.handover.config.topic
        producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
        producer.send(state_topic, chunk, key=manifest.chunk_key(0), partition=0)
        producer.send(state_topic, manifest.encode(T0), key=state_key(b.decisions.group, tp), partition=0)
        producer.flush(10)
        producer.close()
        c = Replica("c", kafka_bootstrap, tp.topic, state_topic, b.decisions.group, _playbooks(), clock)
        with caplog.at_level(logging.WARNING, logger="aiops.state"):
            c.join(tp)
        assert _open(c) == []
        where = state_key(b.decisions.group, tp).decode()
        assert any(
            "incidents chunk version 2 is not supported" in r.getMessage() and where in r.getMessage()
            for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
        c.close()
    finally:
        signals.close()
        a.close()
        b.close()


def test_a_replica_joining_takes_its_share_of_the_incidents_and_the_other_lets_them_go(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """A owns both signals partitions, an incident pending on each; B joins the group. After the
    rebalance each replica holds the incidents of the partition it owns, under their ids, and no
    incident is open on both."""
    a, b, signals, tp0, clock = _replicas(
        kafka_bootstrap, kafka_topic, _playbooks(**{"for": "5m"}), partitions=2
    )
    tp1 = TopicPartition(tp0.topic, 1)
    try:
        a.join(tp0)
        a.drive(lambda: a.decisions.owned == {tp0, tp1}, what="a owning both partitions")
        signals.breach("web", partition=0)
        signals.breach("api", partition=1)
        a.take(2)
        before = {i["target"]["name"]: i["id"] for i in _open(a)}
        assert sorted(before) == ["api", "web"]
        clock.set(T0 + 30)
        b.consumer = b.decisions.connect()
        deadline = time.monotonic() + 60
        while not (len(a.decisions.owned) == 1 and len(b.decisions.owned) == 1):
            assert time.monotonic() < deadline, "timed out waiting for the rebalance"
            a.decisions.step(a.consumer)
            b.decisions.step(b.consumer)
        held = {r.name: {i["target"]["name"]: i["id"] for i in _open(r)} for r in (a, b)}
        assert sum(len(h) for h in held.values()) == 2, held
        assert {**held["a"], **held["b"]} == before
        assert len(held["a"]) == len(held["b"]) == 1
        assert a.metrics.incidents_handed_over._value.get() == 1
        assert b.metrics.incidents_restored._value.get() == 1
    finally:
        signals.close()
        a.close()
        b.close()
