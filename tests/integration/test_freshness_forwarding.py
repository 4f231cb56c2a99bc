"""Freshness carried with the signals, on a real broker: detected on one replica, verified on another.

Replica A detects: a threshold detector bank whose signals and freshness records go to the
signals topic keyed by target (the daemon's composition). Replica B decides: a playbook engine
behind a decision consumer on that topic; its own detector bank never sees the series. B acts on
A's signals, then verifies on the samples A counted: the incident resolves on fresh samples under
the bar forwarded from A, and goes stale (then escalates) when A's samples stop. With the engine
on B's own bank alone (how verification worked before), both escalate: B never sees a sample.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer, TopicPartition

from agent.app import detector_bank
from agent.clock import ManualClock
from agent.config import DetectorConfig, FreshnessConfig, KafkaConnection
from agent.freshness import FreshnessForwarder, FreshnessRecord, FreshnessView
from agent.kafka_client import ResilientProducer
from agent.kafka_sink import KafkaSignalSink
from agent.metrics import AgentMetrics
from agent.playbook.engine import PlaybookEngine
from agent.playbook.events import AuditLog, IncidentState
from agent.playbook.loader import PlaybookSet
from agent.playbook.requests import RecordingExecutor
from agent.routing import DecisionConsumer, target_key
from detectors import SampleBatch, SeriesRegistry, Signal
from detectors.freshness import Seen, SeriesFreshness
from detectors.signal import SignalKind
from tests.integration.decision_support import error_key, restart_playbooks
from tests.servers.kafka import read_records

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
SCRAPE = 15.0


class Detecting:
    """Replica A's detecting half: its detector bank, signal sink and freshness forwarder."""

    def __init__(
        self, connection: KafkaConnection, topic: str, playbooks: PlaybookSet, clock: ManualClock
    ) -> None:
        self.series = SeriesRegistry()
        rule = {"rules": [{"metric": "error_ratio", "above": 0.05}]}
        self.bank = detector_bank([DetectorConfig(type="threshold", params=rule)], self.series)
        self.stop = threading.Event()

        def key(signal: Signal) -> bytes:
            return target_key(playbooks, signal)

        self.signals = KafkaSignalSink(
            ResilientProducer(connection, clock, self.stop, name="signals"), topic, key=key
        )
        self.forwarder = FreshnessForwarder(
            FreshnessConfig(interval=5.0),
            ResilientProducer(connection, clock, self.stop, name="freshness"),
            topic,
            key,
            self.bank.freshness,
            clock,
            AgentMetrics(),
            "replica-a-1",
        )
        self.sent = 0

    def scrape(self, at: float, **values: float) -> None:
        """One scrape of the given deployments at ``at``: detect, publish the signals, then what
        freshness is due."""
        ids = np.array([self.series.id_for(error_key(d)) for d in values], dtype=np.int64)
        batch = SampleBatch.from_arrays(ids, np.full(ids.size, at), np.array(list(values.values())))
        signals = self.bank.process(batch)
        for sink in (self.signals, self.forwarder):
            sink.emit(signals)
            sink.flush()
        self.sent += len(signals)
        self.forwarder.publish()

    def close(self) -> None:
        self.signals.close()
        self.forwarder.producer.close()


class Deciding:
    """Replica B's deciding half; ``forwarded`` False: its engine verifies on its own bank only."""

    def __init__(
        self,
        connection: KafkaConnection,
        topic: str,
        playbooks: PlaybookSet,
        clock: ManualClock,
        *,
        forwarded: bool,
    ) -> None:
        self.metrics = AgentMetrics()
        self.bank = SeriesFreshness(SeriesRegistry())  # B detects none of these series
        self.view = FreshnessView(
            FreshnessConfig(interval=5.0), self.bank, "replica-b-1", clock, self.metrics
        )
        self.executor = RecordingExecutor()
        self.audit = AuditLog()
        self.engine = PlaybookEngine(
            playbooks,
            self.executor,
            clock,
            self.audit,
            metrics=self.metrics,
            freshness=self.view if forwarded else self.bank,
        )
        self.decisions = DecisionConsumer(
            connection,
            topic,
            f"decide-{topic}",
            self.engine,
            self.metrics,
            clock,
            {},
            session_timeout=2.0,
            heartbeat_interval=0.5,
            freshness=self.view,
        )
        self.consumer = self.decisions.connect()

    def drive(self, done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.decisions.step(self.consumer)

    def transitions(self, deployment: str) -> list[tuple[float, IncidentState]]:
        return [
            (e.time - T0, e.state)
            for e in self.audit.incident_events()
            if e.target.name == deployment and e.previous is not e.state
        ]

    def close(self) -> None:
        self.decisions.leave(self.consumer)


def _partitions(bootstrap: str, topic: str) -> dict[str, set[tuple[str, int]]]:
    """Per deployment, the (what, partition) pairs its messages on ``topic`` went to."""
    out: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for message in read_records(bootstrap, topic):
        data = orjson.loads(message.value)
        what = "freshness" if "format" in data else "signal"
        out[data["labels"]["deployment"]].add((what, message.partition))
    return out


@pytest.mark.parametrize("forwarded", [True, False], ids=["forwarded-freshness", "own-bank-only"])
def test_an_incident_detected_on_one_replica_is_verified_on_the_replica_that_decides_it(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], forwarded: bool
) -> None:
    """A scrapes ``calm`` and ``silent`` every 15 s; both breach at T0, B restarts both. ``calm``
    goes on under the bar on A: B resolves it at T0+2m (verify.quiet) on samples only A saw.
    ``silent`` stops reporting: B judges it stale (3 intervals of 15 s after its last sample)
    and escalates at T0+10m (verify.within). Without the forwarded freshness both escalate."""
    topic = kafka_topic(3, prefix="signals")
    connection = KafkaConnection(bootstrap_servers=[kafka_bootstrap], request_timeout=5.0)
    clock = ManualClock(T0 - 2 * SCRAPE)
    playbooks = restart_playbooks()
    a = Detecting(connection, topic, playbooks, clock)
    b = Deciding(connection, topic, playbooks, clock, forwarded=forwarded)
    try:
        b.drive(lambda: len(b.decisions.owned) == 3, what="b owning the signals partitions")
        for at in (T0 - 2 * SCRAPE, T0 - SCRAPE):
            clock.set(at)
            a.scrape(at, calm=0.01, silent=0.01)
        clock.set(T0)
        a.scrape(T0, calm=0.5, silent=0.5)
        assert a.sent == 2
        b.drive(lambda: b.decisions.received == 2, what="b taking the signals")
        assert sorted(p.request.target.name for p in b.executor.requests) == ["calm", "silent"]
        for t in range(int(SCRAPE), 601, int(SCRAPE)):
            clock.set(T0 + t)
            a.scrape(T0 + t, calm=0.01)
            b.drive(lambda: b.view.received >= a.forwarder.published, what="b taking the records")
            b.engine.tick()
        calm, silent = b.transitions("calm"), b.transitions("silent")
        assert silent[-1] == (600.0, IncidentState.ESCALATED)
        assert sorted(p.request.target.name for p in b.executor.requests) == ["calm", "silent"]  # once each
        if forwarded:
            assert calm[-1] == (120.0, IncidentState.RESOLVED)
            assert (60.0, IncidentState.STALE) in silent  # last sample at T0, 3 x 15 s before T0+60
            (resolved,) = [e for e in b.audit.incident_events() if e.state is IncidentState.RESOLVED]
            (evidence,) = resolved.details["evidence"]
            assert evidence["freshSamples"] >= 3
            assert evidence["lastSeen"] == T0 + 120
        else:  # before: B never hears of a sample, so calm is as stale as silent
            assert calm[-1] == (600.0, IncidentState.ESCALATED)
            assert (0.0, IncidentState.STALE) in calm
        assert b.metrics.freshness_received._value.get() == a.forwarder.published > 40
        # each series' records went to the partition of its signals
        where = _partitions(kafka_bootstrap, topic)
        for deployment in ("calm", "silent"):
            parts = {p for _, p in where[deployment]}
            assert len(parts) == 1, where[deployment]
            assert {w for w, _ in where[deployment]} == {"signal", "freshness"}
    finally:
        a.close()
        b.close()


def test_bad_freshness_records_are_counted_and_skipped_with_a_warning(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """Between a good record and a signal: a record of another version and a damaged one. Both
    are counted and skipped, each with a warning naming where it is; the good ones go on."""
    topic = kafka_topic(1, prefix="signals")
    connection = KafkaConnection(bootstrap_servers=[kafka_bootstrap], request_timeout=5.0)
    clock = ManualClock(T0)
    b = Deciding(connection, topic, restart_playbooks(), clock, forwarded=True)
    good = FreshnessRecord("replica-a-1", error_key("web"), Seen(T0, 7, 15.0), 5.0)
    newer = {**orjson.loads(good.encode()), "version": 2}
    damaged = {**orjson.loads(good.encode()), "count": "many"}
    signal = Signal(SignalKind.THRESHOLD, error_key("web"), T0, 0.9, 1.0, "threshold")
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
    for value in (good.encode(), orjson.dumps(newer), orjson.dumps(damaged), orjson.dumps(signal.to_dict())):
        producer.send(topic, value, key=b"Deployment/shop/web")
    producer.flush(10)
    producer.close()
    try:
        with caplog.at_level(logging.WARNING, logger="aiops.decisions"):
            b.drive(lambda: b.decisions.received == 1, what="b taking the signal")
        assert b.view.received == 1
        assert b.decisions.malformed == 2
        errors = b.metrics.source_errors.labels("decisions", "malformed_freshness")._value.get()
        assert errors == 2
        warnings = [r.getMessage() for r in caplog.records]
        assert any(
            f"not a freshness record at {topic}[0]@1: freshness record version 2 is not supported" in w
            for w in warnings
        ), warnings
        assert any(
            f"at {topic}[0]@2: field 'count' must be a non-negative integer, got 'many'" in w
            for w in warnings
        ), warnings
        seen = b.view.seen(error_key("web"))
        assert seen is not None
        assert seen.last == T0
        assert [p.request.target.name for p in b.executor.requests] == ["web"]
    finally:
        b.close()


def test_freshness_records_alone_write_the_hand_over_record_once_a_minute_signals_at_once(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """A deciding replica with hand-over records every 1 s: two minutes of freshness records
    (one every 2 s, no signal) write its record at most once a minute (the next owner reads at
    most a minute of records again); a signal has it written at the next step."""
    from tests.integration.test_handover import Replica

    signals_topic = kafka_topic(1, prefix="signals")
    state_topic = kafka_topic(1, prefix="state")
    clock = ManualClock(T0)
    replica = Replica(
        "a",
        kafka_bootstrap,
        signals_topic,
        state_topic,
        f"decide-{signals_topic}",
        restart_playbooks(),
        clock,
    )
    tp = TopicPartition(signals_topic, 0)
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])

    def send(value: bytes) -> None:
        producer.send(signals_topic, value, key=b"Deployment/shop/web")
        producer.flush(10)
        sent = producer_offsets[0] = producer_offsets[0] + 1
        replica.drive(lambda: replica.consumer.position(tp) >= sent, what=f"taking {sent} records")

    producer_offsets = [0]
    try:
        replica.join(tp)
        before = replica.handover.written
        for t in range(0, 121, 2):
            clock.set(T0 + t)
            record = FreshnessRecord("replica-z-1", error_key("web"), Seen(T0 + t, t, 2.0), 5.0)
            send(record.encode())
        records_only = replica.handover.written - before
        assert 1 <= records_only <= 3, records_only  # at T0, T0+60, T0+120 (every 1 s before)
        clock.set(T0 + 122)
        signal = Signal(SignalKind.THRESHOLD, error_key("web"), T0 + 122, 0.9, 1.0, "threshold")
        send(orjson.dumps(signal.to_dict()))
        assert replica.handover.written - before == records_only + 1
    finally:
        producer.close()
        replica.close()
