"""The decision side of several replicas: the playbook engine fed from the signals topic.

Every replica publishes the signals it detects to ``signals.topic`` keyed by their *target* (the
target of the first playbook, by name, that the signal triggers; the series when none does),
so all the signals of one target land on one partition. With ``signals.decisions`` on, each
replica's playbook engine takes its signals from that topic in the consumer group
``signals.decision_group`` rather than from its own detectors: a target's incidents are decided
and executed by the one replica that owns its partition, whichever replica detected them, and
when that replica dies its partitions, and the signals on them, go to another.

Offsets are committed after the engine has taken a poll's signals (at least once: a signal may
reach the engine twice after a failover, and joins the incident it already opened). An incident
that was open on a replica that died is opened again on the new owner by the signals that keep
coming while the anomaly lasts; the idempotency key of each step (playbook, target, incident,
step), recorded on the target object, keeps a step that was executed from running twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import orjson
from kafka import ConsumerRebalanceListener
from kafka.errors import KafkaError

from agent.backoff import Backoff
from agent.clock import Clock
from agent.config import KafkaConnection
from agent.kafka_client import consumer_kwargs, create_consumer
from agent.metrics import AgentMetrics
from agent.playbook.loader import PlaybookSet
from agent.playbook.templating import TemplateError
from agent.sinks import SignalSink
from detectors import Signal

log = logging.getLogger("aiops.decisions")

#: Records taken per poll.
MAX_POLL_RECORDS = 500


def target_key(playbooks: PlaybookSet, signal: Signal) -> bytes:
    """The signals-topic key of ``signal``: the target of the first playbook it triggers, else its series."""
    for playbook in sorted(playbooks, key=lambda p: p.name):
        if not playbook.matches(signal):
            continue
        try:
            return str(playbook.resolve_target(signal)).encode()
        except TemplateError:
            continue  # the engine rejects it with the reason; it needs no particular partition
    return str(signal.series).encode()


class _Owned(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """Keeps ``aiops_kafka_partitions_owned{topic}`` of the signals topic up to date."""

    def __init__(self, metrics: AgentMetrics, topic: str) -> None:
        self.metrics = metrics
        self.topic = topic
        self.owned: set[object] = set()

    def on_partitions_revoked(self, revoked: object) -> None:
        self.owned -= set(revoked)  # type: ignore[call-overload]
        self.metrics.partitions_owned.labels(self.topic).set(len(self.owned))

    def on_partitions_assigned(self, assigned: object) -> None:
        self.owned |= set(assigned)  # type: ignore[call-overload]
        self.metrics.partitions_owned.labels(self.topic).set(len(self.owned))


class DecisionConsumer:
    """Consumes the signals topic in the decision group and hands each poll's signals to ``engine``."""

    def __init__(
        self,
        connection: KafkaConnection,
        topic: str,
        group: str,
        engine: SignalSink,
        metrics: AgentMetrics,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        session_timeout: float = 10.0,
        heartbeat_interval: float = 3.0,
    ) -> None:
        self.topic = topic
        self.group = group
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self._kwargs = consumer_kwargs(
            connection,
            environ,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group loses nothing; stale signals are refused by max_gap
            max_poll_records=MAX_POLL_RECORDS,
            session_timeout_ms=int(session_timeout * 1000),
            heartbeat_interval_ms=int(heartbeat_interval * 1000),
        )
        self._backoff = Backoff(initial=0.5, maximum=15.0)
        self._thread: threading.Thread | None = None
        #: Signals handed to the engine, and records that were not signals.
        self.received = 0
        self.malformed = 0

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop``; a broker that is away is retried with backoff."""
        consumer = None
        try:
            while not stop.is_set():
                if consumer is None:
                    try:
                        consumer = create_consumer(**self._kwargs)
                        consumer.subscribe(topics=[self.topic], listener=_Owned(self.metrics, self.topic))
                    except KafkaError as exc:
                        self._failed(exc, stop)
                        continue
                try:
                    polled = consumer.poll(timeout_ms=500)
                    signals = self._decode(polled)
                    if signals:
                        self.engine.emit(signals)
                        self.engine.flush()
                    if polled:
                        consumer.commit()
                    self._backoff.reset()
                except KafkaError as exc:  # the records not committed are read again
                    consumer.close(autocommit=False)
                    consumer = None
                    self._failed(exc, stop)
        finally:
            if consumer is not None:
                consumer.close(autocommit=False)

    def _decode(self, polled: Mapping[object, Sequence[object]]) -> list[Signal]:
        signals: list[Signal] = []
        for records in polled.values():
            for rec in records:
                value = getattr(rec, "value", None)
                try:
                    signals.append(Signal.from_dict(orjson.loads(value or b"")))
                except (ValueError, orjson.JSONDecodeError) as exc:
                    self.malformed += 1
                    self.metrics.source_errors.labels("decisions", "malformed_signal").inc()
                    at = (
                        getattr(rec, "topic", "?"),
                        getattr(rec, "partition", "?"),
                        getattr(rec, "offset", "?"),
                    )
                    log.warning(
                        "decisions: skipping a record that is not a signal at %s[%s]@%s: %s", *at, exc
                    )
        self.received += len(signals)
        return signals

    def _failed(self, exc: Exception, stop: threading.Event) -> None:
        self.metrics.source_errors.labels("decisions", "consume").inc()
        delay = self._backoff.next_delay()
        log.warning("decisions: consuming %s failed (%s); retrying in %.1f s", self.topic, exc, delay)
        self.clock.wait(delay, stop)

    def start(self, stop: threading.Event) -> None:
        """Run :meth:`run` in a daemon thread."""
        self._thread = threading.Thread(target=self.run, args=(stop,), name="aiops-decisions", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the thread after ``stop`` was set."""
        if self._thread is not None:
            self._thread.join(timeout)
