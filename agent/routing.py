"""The decision side of several replicas: the playbook engine fed from the signals topic.

Every replica publishes the signals it detects to ``signals.topic`` keyed by their *target* (the
target of the first playbook, by name, that the signal triggers; the series when none does),
so all the signals of one target land on one partition. With ``signals.decisions`` on, each
replica's playbook engine takes its signals from that topic in the consumer group
``signals.decision_group`` rather than from its own detectors: a target's incidents are decided
and executed by the one replica that owns its partition, whichever replica detected them, and
when that replica dies its partitions, and the signals on them, go to another.

Offsets are committed after the engine has taken a poll's signals (at least once: a signal may
reach the engine twice after a failover, and joins the incident it already opened). The open
incidents move with their partitions (agent/handover.py): the owner writes each partition's
incidents, with the offset of the next signal its engine has not taken, to the state topic
while they change (at most every ``signals.handover.interval``) and when it gives the partition
up; the next owner hands them to its engine and resumes the partition at that offset before
taking any of its signals. An incident keeps its id, its ``for:`` window, the steps it has done
and its deadlines across the move; the idempotency key of each step (playbook, target,
incident, step), recorded on the target object, remains the guard against a step running
twice when the record a dead replica left is older than what it did.

Beside the signals, the topic carries freshness records (agent/freshness.py): each replica
publishes, under the same key as a series' signals, how many samples the series sent and when
its newest came, so the replica deciding its incidents verifies them on samples it never saw.
The consumer hands them to the engine's :class:`~agent.freshness.FreshnessView`, with the
timestamps of the signals, before the engine takes the signals of the same poll.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError

from agent.backoff import Backoff
from agent.clock import Clock
from agent.config import KafkaConnection
from agent.freshness import FreshnessRecord, FreshnessRecordError, FreshnessView, is_record
from agent.handover import IncidentHandover, origin
from agent.kafka_client import RebalanceEvents, consumer_kwargs, create_consumer, owned_after
from agent.metrics import AgentMetrics
from agent.playbook.engine import PlaybookEngine
from agent.playbook.loader import PlaybookSet
from agent.playbook.templating import TemplateError
from detectors import Signal

log = logging.getLogger("aiops.decisions")

#: Records taken per poll.
MAX_POLL_RECORDS = 500
#: A partition whose offset moved by freshness records alone has its hand-over record written at
#: most this often: its next owner reads at most this long of records again, and a partition
#: without signals is not written every interval for records alone.
RECORDS_ONLY_EVERY = 60.0


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


class DecisionConsumer:
    """Consumes the signals topic in the decision group and hands each partition's signals to
    ``engine``; with ``handover``, the incidents of a partition move with it."""

    def __init__(
        self,
        connection: KafkaConnection,
        topic: str,
        group: str,
        engine: PlaybookEngine,
        metrics: AgentMetrics,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        session_timeout: float = 10.0,
        heartbeat_interval: float = 3.0,
        handover: IncidentHandover | None = None,
        freshness: FreshnessView | None = None,
    ) -> None:
        self.topic = topic
        self.group = group
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self.handover = handover
        self.freshness = freshness
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
        self._rebalances = RebalanceEvents()
        self.owned: set[TopicPartition] = set()
        self._taken: dict[TopicPartition, int] = {}  # the next offset the engine has not taken
        self._written: dict[TopicPartition, tuple[float, int]] = {}  # the last hand-over record: when, offset
        self._signalled: dict[TopicPartition, int] = {}  # the offset after the last signal taken
        #: Signals handed to the engine, and records that were neither signals nor freshness records.
        self.received = 0
        self.malformed = 0

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop``; a broker that is away is retried with backoff. On the way out
        the partitions' incidents are written for their next owners."""
        consumer = None
        try:
            while not stop.is_set():
                if consumer is None:
                    try:
                        consumer = self.connect()
                    except KafkaError as exc:
                        self._failed(exc, stop)
                        continue
                try:
                    self.step(consumer)
                    self._backoff.reset()
                except KafkaError as exc:  # the records not committed are read again
                    # the partitions may have gone to another replica meanwhile: its record must
                    # not be overwritten by this one's; the last one written stands
                    self.leave(consumer, write=False)
                    consumer = None
                    self._failed(exc, stop)
        finally:
            if consumer is not None:
                self.leave(consumer)
            if self.handover is not None:
                self.handover.close()

    def connect(self) -> Any:
        """A consumer subscribed to the topic in the group (KafkaError when the broker is away)."""
        consumer = create_consumer(**self._kwargs)
        self._rebalances.take(settled=False)  # what a closed consumer left is not this one's
        consumer.subscribe(topics=[self.topic], listener=self._rebalances)
        return consumer

    def step(self, consumer: Any) -> None:
        """One poll: partitions moved are handed over and taken over first; then each partition's
        signals go to the engine, due hand-over records are written, and the offsets committed."""
        if self._rebalanced(consumer, None):
            return
        polled = consumer.poll(timeout_ms=500)
        if self._rebalanced(consumer, polled):
            return
        for tp, records in polled.items():
            signals, fresh = self._decode(records)
            if self.freshness is not None:  # before the engine: its baselines are taken on them
                self.freshness.signalled(signals)
                self.freshness.receive(fresh)
            if signals:
                self.engine.emit(signals, origin=origin(tp))
            if records:
                self._taken[tp] = records[-1].offset + 1
            if signals:
                self._signalled[tp] = records[-1].offset + 1
        self.engine.flush()
        self._save(self._due())
        if polled:
            try:
                consumer.commit()
            except (CommitFailedError, RebalanceInProgressError) as exc:  # a rebalance began: its
                # callbacks come with the next poll; the records not committed are read again
                self.metrics.source_errors.labels("decisions", "commit").inc()
                log.info("decisions: commit refused during a rebalance (%s)", exc)

    def leave(self, consumer: Any, *, write: bool = True) -> None:
        """Write the incidents of every partition owned for their next owner (unless not ``write``),
        let them go, and close the consumer (leaving the group)."""
        try:
            self._rebalanced(consumer, None, settled=False)
            self._give_up(set(self.owned), write=write)
        finally:
            self.owned = set()
            self.metrics.partitions_owned.labels(self.topic).set(0)
            try:
                consumer.close(autocommit=False)
            except Exception:  # closing a broken consumer is best effort
                log.debug("decisions: error while closing the consumer", exc_info=True)

    def _rebalanced(
        self, consumer: Any, polled: Mapping[TopicPartition, Sequence[Any]] | None, *, settled: bool = True
    ) -> bool:
        """Act on the rebalance callbacks since the last call; True if there were any. Records
        ``polled`` with them are dropped (sought back): they are taken after the take-over."""
        events = self._rebalances.take(settled=settled)
        if not events:
            return False
        for tp, records in (polled or {}).items():
            if records:
                with contextlib.suppress(KafkaError):  # given away: its new owner starts from the commit
                    consumer.seek(tp, records[0].offset)
        owned = owned_after(self.owned, events)
        gone, added = self.owned - owned, owned - self.owned
        # lost (evicted from the group): another replica may own them already; nothing is written
        lost = gone & set().union(*(p for what, p in events if what == "lost"))
        self._give_up(lost, write=False)
        self._give_up(gone - lost)
        self.owned = owned
        self.metrics.partitions_owned.labels(self.topic).set(len(owned))
        if added and self.handover is not None and self.handover.config.enabled:
            self._take_over(consumer, added)
        log.info(
            "decisions: rebalanced: %d signals partition(s) owned, %d given up, %d new",
            len(owned),
            len(gone),
            len(added),
        )
        return True

    def _take_over(self, consumer: Any, added: set[TopicPartition]) -> None:
        assert self.handover is not None
        now = self.clock.now()
        for tp, (offset, handed) in self.handover.read(added).items():
            restored = self.engine.take_over(origin(tp), handed)
            self._taken[tp] = offset
            self._written[tp] = (now, offset)
            try:
                consumer.seek(tp, offset)
            except (KafkaError, ValueError) as exc:  # given away again meanwhile
                log.warning("decisions: cannot resume %s at its hand-over offset %d: %s", tp, offset, exc)
            log.info(
                "decisions: took over %s at offset %d with %d open incident(s)", origin(tp), offset, restored
            )

    def _give_up(self, gone: set[TopicPartition], *, write: bool = True) -> None:
        """Write the incidents of ``gone`` for their next owner (unless not ``write``) and let them
        go here."""
        if not gone:
            return
        handover = self.handover
        for tp in sorted(gone):
            exported = self.engine.hand_over(origin(tp))
            taken = self._taken.pop(tp, None)
            self._written.pop(tp, None)
            self._signalled.pop(tp, None)
            if write and handover is not None and handover.config.enabled and taken is not None:
                handover.write(tp, taken, exported)
        if handover is not None:
            handover.forget(gone)

    def _due(self) -> list[TopicPartition]:
        """The partitions whose incidents changed, or that had signals, since their record was
        written at least ``interval`` ago; those whose offset moved by other records alone (the
        freshness records) when it was written at least :data:`RECORDS_ONLY_EVERY` ago."""
        if self.handover is None or not self.handover.config.enabled:
            return []
        now = self.clock.now()
        changed = self.engine.changed()
        due = []
        for tp in self.owned:
            taken = self._taken.get(tp)
            if taken is None:
                continue
            when, offset = self._written.get(tp, (-math.inf, -1))
            moved = self._signalled.get(tp, -1) > offset
            if origin(tp) in changed or moved:
                if now - when >= self.handover.config.interval:
                    due.append(tp)
                elif origin(tp) in changed:
                    self.engine.touch(origin(tp))  # still changed: written when the interval is over
            elif offset != taken and now - when >= max(RECORDS_ONLY_EVERY, self.handover.config.interval):
                due.append(tp)
        return due

    def _save(self, tps: list[TopicPartition]) -> None:
        assert self.handover is not None or not tps
        now = self.clock.now()
        for tp in tps:
            taken = self._taken[tp]
            if self.handover is not None and self.handover.write(tp, taken, self.engine.export(origin(tp))):
                self._written[tp] = (now, taken)
            else:
                self.engine.touch(origin(tp))  # tried again at the next interval
                self._written[tp] = (now, self._written.get(tp, (now, -1))[1])

    def _decode(self, records: Sequence[object]) -> tuple[list[Signal], list[FreshnessRecord]]:
        """The signals and the freshness records among ``records``; others are counted and skipped."""
        signals: list[Signal] = []
        fresh: list[FreshnessRecord] = []
        for rec in records:
            value = getattr(rec, "value", None)
            what = "signal"
            try:
                data = orjson.loads(value or b"")
                if is_record(data):
                    what = "freshness record"
                    fresh.append(FreshnessRecord.from_dict(data))
                else:
                    signals.append(Signal.from_dict(data))
            except (ValueError, orjson.JSONDecodeError) as exc:  # FreshnessRecordError is a ValueError
                self.malformed += 1
                bad = "malformed_freshness" if isinstance(exc, FreshnessRecordError) else "malformed_signal"
                self.metrics.source_errors.labels("decisions", bad).inc()
                at = (
                    getattr(rec, "topic", "?"),
                    getattr(rec, "partition", "?"),
                    getattr(rec, "offset", "?"),
                )
                log.warning("decisions: skipping a record that is not a %s at %s[%s]@%s: %s", what, *at, exc)
        self.received += len(signals)
        return signals, fresh

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
