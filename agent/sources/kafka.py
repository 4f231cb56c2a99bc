"""The Kafka source: samples from topics in a consumer group, committed only once processed.

Each :meth:`KafkaSource.poll` returns the samples of one ``KafkaConsumer.poll`` as a
:class:`~detectors.SampleBatch`, with the offsets after its last record of each partition as the
commit token; the engine commits them once every signal of the batch is delivered, so delivery
is at least once. Messages that do not decode go to the dead-letter topic, raw (original value,
key and headers) with the reason in the ``aiops-error`` header, and the dead-letter producer is
flushed before the batch is handed out: a commit never covers a message that was neither
processed nor dead-lettered. When the dead-letter topic cannot be written, the consumer seeks
back and the whole poll is read again later.

Decoding runs in a child process by default (``decode_worker``, see kafka_worker.py): while it
decodes one poll, this side hands out the previous one and fetches the next, and kafka-python's
network thread, which a decoding thread would starve of the GIL, keeps reading. At most one poll
is in the worker and one more held here; a poll's samples come out of the call that fetched
it or of the next one, in order. Polls not yet handed out are never committed: when the worker
dies or the dead letters cannot be written, the consumer seeks back to the first of them, and
a re-created consumer starts from the committed offsets, so they are read again.

A message that kills the decode worker is found by the position the worker left in shared
memory (see kafka_worker.py); one that kills it :data:`CRASHES_BEFORE_DEAD_LETTER` times is
dead-lettered (kind ``decoder_crash``) instead of being decoded again, so one message cannot
stop a partition for good. While a partition's records are being read again after such a
failure, ``aiops_kafka_partition_stuck`` is 1 for it and the source is not ready.

Nothing here blocks for long or raises when the broker is away: the consumer is created lazily
and re-created when it breaks, with exponential backoff on the injected clock; meanwhile
:attr:`KafkaSource.ready` is false and ``aiops_source_errors{source="kafka"}`` counts why. The
consumer lag of every assigned partition is measured every ``lag_interval``; that round trip to
the broker is also the health probe, since kafka-python's ``poll`` keeps returning nothing
rather than raising while the broker is unreachable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from agent.backoff import Backoff
from agent.clock import Clock
from agent.config import ConfigError, KafkaConnection, KafkaSourceConfig
from agent.kafka_client import (
    KafkaDeliveryError,
    RebalanceEvents,
    ResilientProducer,
    consumer_kwargs,
    create_consumer,
    owned_after,
)
from agent.metrics import AgentMetrics
from agent.sources.base import Polled, SourceStartupError
from agent.sources.kafka_formats import DecodeLimits, Malformed, SampleDecoder
from agent.sources.kafka_worker import DecodeWorker, DecodeWorkerError
from detectors import DetectorBank, SampleBatch, SeriesRegistry

if TYPE_CHECKING:
    from agent.partition_state import PartitionStates

log = logging.getLogger("aiops.sources.kafka")

SOURCE = "kafka"

#: Headers added to every dead-lettered record.
ERROR_HEADER = "aiops-error"
TOPIC_HEADER = "aiops-source-topic"
PARTITION_HEADER = "aiops-source-partition"
OFFSET_HEADER = "aiops-source-offset"
#: Set (to the original size) when a value was cut to fit the producer's request size limit.
TRUNCATED_HEADER = "aiops-truncated-from"

#: The largest value dead-lettered as is (the producer's default request limit is 1 MiB).
MAX_DEAD_LETTER_VALUE = 900_000
#: Consecutive poll failures after which the consumer is closed and created anew.
RECREATE_AFTER = 3
#: How long closing waits for the decode worker to exit before terminating it.
WORKER_CLOSE_TIMEOUT = 1.0
#: A message that killed the decode worker this many times is dead-lettered, not decoded again.
CRASHES_BEFORE_DEAD_LETTER = 2
#: How many messages' crash counts (and dead-letter verdicts) are remembered; then they start over.
_CRASH_MEMORY = 10_000

#: The records of one ``KafkaConsumer.poll``.
Records = dict[TopicPartition, list[Any]]


class KafkaSource:
    """Consumes samples from ``config.topics`` in the consumer group ``config.group_id``.

    With a ``bank`` and ``config.state.enabled``, the detector state of each owned partition is
    checkpointed and restored with it (agent/partition_state.py): polls are then handed out one
    partition at a time, so that each batch's series are known to belong to its partition.
    """

    name = SOURCE

    def __init__(
        self,
        config: KafkaSourceConfig,
        connection: KafkaConnection,
        series: SeriesRegistry,
        metrics: AgentMetrics,
        clock: Clock,
        stop: threading.Event,
        environ: Mapping[str, str] | None = None,
        dead_letter: ResilientProducer | None = None,
        bank: DetectorBank | None = None,
    ) -> None:
        self.config = config
        self.bank = bank
        self.states: PartitionStates | None = None
        self._rebalances = RebalanceEvents()
        self._owned: set[TopicPartition] = set()
        self._split: deque[Records] = deque()  # one partition's records each, not yet handed out
        self.connection = connection
        self.series = series
        self.metrics = metrics
        self.clock = clock
        self.stop = stop
        self.environ = environ
        limits = DecodeLimits(**config.limits.model_dump())
        self.decoder = SampleDecoder(series, config.format, limits=limits, owner=SOURCE)
        #: Decodes in a child process when ``config.decode_worker`` is on (see kafka_worker.py).
        self.worker = (
            DecodeWorker(series, config.format, limits=limits, owner=SOURCE) if config.decode_worker else None
        )
        self._decoding: Records | None = None  # records whose values are in the worker
        self._in_child: Records | None = None  # the records last submitted to the worker
        self._crashes: dict[tuple[str, int, int], int] = {}  # (topic, partition, offset) -> worker deaths
        self._poison: dict[tuple[str, int, int], str] = {}  # messages to dead-letter unread, and why
        self._stuck: set[tuple[str, int]] = set()  # partitions read again after a worker death
        self._held: Records | None = None  # records polled while the worker was busy
        self._dead_letter = dead_letter
        self._consumer: KafkaConsumer | None = None
        self._kwargs: dict[str, Any] | None = None
        self._backoff = Backoff(initial=0.5, maximum=15.0)
        self._pause_until = 0.0
        self._next_lag = 0.0
        self._failures = 0
        self._ready = False
        self._closed = False
        self._lag_labels: set[tuple[str, str]] = set()
        timeout = min(connection.request_timeout, 5.0)
        self._probe_timeout_ms = max(100, int(timeout * 1000))
        self._flush_timeout = min(connection.request_timeout, 10.0)
        #: How many consumers were created (the first one included).
        self.consumers_created = 0
        #: Commits refused because the group rebalanced (their records will be read again).
        self.commit_failures = 0
        metrics.source_ready.labels(SOURCE).set(0)

    # ------------------------------------------------------------------ contract
    @property
    def ready(self) -> bool:
        """Whether the broker answered the last time it was asked and no partition is stuck."""
        return self._ready and not self._stuck

    def forget_series(self) -> None:
        """The registry evicted series: drop the ids the decoders cached (an id may name another series)."""
        self.decoder.forget_series()
        if self.worker is not None:
            self.worker.forget_series()

    def start(self) -> None:
        """Check the configuration; connecting happens in :meth:`poll`, so this never waits for the broker."""
        cfg = self.config
        if cfg.heartbeat_interval >= cfg.session_timeout:
            msg = (
                f"kafka: heartbeat_interval ({cfg.heartbeat_interval} s) must be shorter than "
                f"session_timeout ({cfg.session_timeout} s)"
            )
            raise SourceStartupError(msg)
        if self.connection.request_timeout <= cfg.fetch_max_wait:
            msg = (
                f"kafka: request_timeout ({self.connection.request_timeout} s) must be longer than "
                f"sources.kafka.fetch_max_wait ({cfg.fetch_max_wait} s)"
            )
            raise SourceStartupError(msg)
        try:
            self._kwargs = consumer_kwargs(
                self.connection,
                self.environ,
                group_id=cfg.group_id,
                enable_auto_commit=False,
                auto_offset_reset=cfg.auto_offset_reset,
                max_poll_records=cfg.max_poll_records,
                fetch_max_wait_ms=max(1, round(cfg.fetch_max_wait * 1000)),
                session_timeout_ms=int(cfg.session_timeout * 1000),
                heartbeat_interval_ms=int(cfg.heartbeat_interval * 1000),
            )
            if self._dead_letter is None:
                self._dead_letter = ResilientProducer(
                    self.connection,
                    self.clock,
                    self.stop,
                    name="dead-letter",
                    environ=self.environ,
                    connect_timeout=self._flush_timeout,  # a poll must not hang on a broker that is away
                )
            if self.bank is not None and cfg.state.enabled and self.states is None:
                from agent.partition_state import PartitionStates  # noqa: PLC0415

                self.states = PartitionStates(
                    cfg.state,
                    cfg.group_id,
                    self.bank,
                    self.connection,
                    self.metrics,
                    self.clock,
                    self.stop,
                    self.environ,
                )
        except ConfigError as exc:
            raise SourceStartupError(f"kafka: {exc}") from exc
        log.info(
            "kafka source: topics %s, group %s, format %s, decoding %s, dead letters to %s",
            ", ".join(cfg.topics),
            cfg.group_id,
            cfg.format,
            "in a worker process" if self.worker is not None else "in process",
            cfg.dead_letter_topic,
        )
        if self.worker is not None and not self.worker.alive:
            try:  # it gets ready while the consumer joins its group
                self.worker.start()
            except DecodeWorkerError as exc:  # retried by poll
                log.warning("kafka source: %s", exc)

    def poll(self, timeout: float) -> Polled | None:
        """The samples of the next records, waiting at most about ``timeout`` seconds for them."""
        if self._closed or self.stop.is_set():
            return None
        now = self.clock.now()
        if now < self._pause_until:
            self.clock.wait(min(timeout, self._pause_until - now), self.stop)
            return None
        consumer = self._consumer if self._consumer is not None else self._connect()
        if consumer is None:
            return None
        if self.states is not None:
            due = self.states.due(self._owned)
            if due:
                self.states.checkpoint(due)
        if self.worker is not None:
            return self._poll_pipelined(consumer, self.worker, timeout)
        records = self._fetch(consumer, timeout)
        if not records:
            return None
        samples, malformed = self.decoder.decode(self._values(records), self.clock.now())
        return self._finish(consumer, records, samples, malformed)

    def _fetch(self, consumer: KafkaConsumer, timeout: float) -> Records | None:
        """One ``consumer.poll``: its records (None on failure), with the lag measured when due.

        With partition state on, the records come one partition at a time, and a rebalance is
        acted on (checkpoints, restores, seeks) before any record of the new assignment.
        """
        if self._rebalanced(consumer, None):
            return None
        if self._split:
            return self._split.popleft()
        try:
            records: Records = consumer.poll(
                timeout_ms=max(0, int(timeout * 1000)), max_records=self.config.max_poll_records
            )
        except Exception as exc:  # KafkaError, or a client bug during a fault: never kill the loop
            if not isinstance(exc, KafkaError):
                log.exception("kafka source: unexpected error from the consumer")
            self._poll_failed(exc)
            return None
        if self._rebalanced(consumer, records):
            return None
        if self.states is not None and len(records) > 1:
            self._split.extend({tp: recs} for tp, recs in records.items())
            records = self._split.popleft()
        self._failures = 0
        healthy = self._measure_lag(consumer) if self.clock.now() >= self._next_lag else True
        if records and healthy:
            self._backoff.reset()
            self._set_ready(True, "records received")
        return records

    def _poll_pipelined(self, consumer: KafkaConsumer, worker: DecodeWorker, timeout: float) -> Polled | None:
        """Poll with decoding in the worker: while it decodes one poll, the next one is fetched.

        At most one poll is in the worker and one more is held here; each call hands out the
        oldest, so a poll's samples come out of the call that fetched them or of the next one.
        """
        if not worker.alive:
            if worker.pid is not None:  # it died since the last call, maybe holding a poll
                exited = DecodeWorkerError(f"the decode worker exited with code {worker.exit_code}")
                self._worker_failed(consumer, worker, exited)
                return None
            try:  # never started, or closed after it failed
                worker.start()
            except DecodeWorkerError as exc:
                self._failed("decode_worker", exc)
                return None
        if self._decoding is None:
            records = self._fetch(consumer, timeout)
            if not records or not self._submit(consumer, worker, records):
                return None
        if not self._hold(consumer):  # what is buffered already, without waiting
            return None
        try:
            taken = worker.take(self.stop)
        except DecodeWorkerError as exc:
            self._worker_failed(consumer, worker, exc)
            return None
        if taken is None:  # stopping: leave the batches to be read again
            self._drop_in_flight(consumer)
            return None
        if not self._hold(consumer):  # what arrived while the worker decoded: decoded next, meanwhile
            return None
        records, self._decoding = self._decoding, None
        assert records is not None  # submitted above, or by the previous call
        held, self._held = self._held, None
        if held is not None:
            self._submit(consumer, worker, held)
        try:  # unpickled, and its new series registered, while the worker decodes the next one
            samples, malformed = worker.finish(taken)
        except DecodeWorkerError as exc:  # it failed on this batch: read it again, and what followed
            self._worker_failed(consumer, worker, exc, records)
            return None
        return self._finish(consumer, records, samples, malformed)

    def _hold(self, consumer: KafkaConsumer) -> bool:
        """Unless a poll is held already, hold what the consumer has buffered (without waiting).

        False when that poll broke the consumer (it is closed and the batches in flight dropped),
        or brought a rebalance (the batches in flight were dropped).
        """
        if self._held is None:
            owned = self._owned
            self._held = self._fetch(consumer, 0.0) or None
            if self._owned is not owned:
                return False
        return self._consumer is consumer

    def _count_partitions(self, consumer: KafkaConsumer | None) -> None:
        """Set the gauges of partitions owned and partitions there are, per topic."""
        for topic in self.config.topics:
            mine = sum(1 for tp in self._owned if tp.topic == topic)
            self.metrics.partitions_owned.labels(topic).set(mine)
            if consumer is not None:
                known = consumer.partitions_for_topic(topic)  # from the metadata the consumer has
                if known:
                    self.metrics.topic_partitions.labels(topic).set(len(known))

    def _rebalanced(self, consumer: KafkaConsumer, fetched: Records | None, *, settled: bool = True) -> bool:
        """Act on the rebalance callbacks since the last call; True if there were any.

        The partitions given up are checkpointed and their series forgotten; the polls not yet
        handed out (and ``fetched``) are dropped, their partitions sought back; the partitions
        newly assigned get their state restored and resume at their checkpoint's offset.
        """
        events = self._rebalances.take(settled=settled)
        if not events:
            return False
        owned = owned_after(self._owned, events)
        gone, added = self._owned - owned, owned - self._owned
        self._drop_in_flight(consumer, fetched)
        self._owned = owned  # a new object: _hold sees that a rebalance happened
        self.metrics.rebalances.inc()
        self._count_partitions(consumer)
        log.info(
            "kafka source: rebalanced: %d partition(s) owned, %d given up, %d new",
            len(owned),
            len(gone),
            len(added),
        )
        states = self.states
        if states is None:
            return True
        if gone:
            states.checkpoint(gone)
            if states.release(gone):
                self.forget_series()
        restored = states.restore(added)
        for tp, offset in restored.items():
            try:
                consumer.seek(tp, offset)
            except (KafkaError, ValueError) as exc:  # given away again meanwhile
                log.warning("kafka source: cannot resume %s at its checkpoint %d: %s", tp, offset, exc)
        cold = added - restored.keys()
        if cold:
            states.start_cold(self._positions(consumer, cold))
        return True

    def _positions(self, consumer: KafkaConsumer, tps: set[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset each of ``tps`` will be read from (those the broker does not tell in time left out)."""
        timeout_ms = int(self.config.state.restore_timeout * 1000)
        positions = {}
        for tp in sorted(tps):
            try:
                offset = consumer.position(tp, timeout_ms=timeout_ms)
            except (KafkaError, ValueError) as exc:  # given away again meanwhile, or no answer
                log.warning("kafka source: no position of %s for its first checkpoint: %s", tp, exc)
                continue
            if offset is not None:
                positions[tp] = int(offset)
        return positions

    def _submit(self, consumer: KafkaConsumer, worker: DecodeWorker, records: Records) -> bool:
        try:
            self._in_child = records
            worker.submit(self._values(records), self.clock.now())
        except DecodeWorkerError as exc:
            self._worker_failed(consumer, worker, exc, records)
            return False
        self._decoding = records
        return True

    def _worker_failed(
        self,
        consumer: KafkaConsumer,
        worker: DecodeWorker,
        exc: DecodeWorkerError,
        unsent: Records | None = None,
    ) -> None:
        """The worker died: read its batches (and ``unsent``) again, from a new worker after a backoff.

        The message it died on, when it said which, counts a crash; at
        :data:`CRASHES_BEFORE_DEAD_LETTER` it is dead-lettered when read again, not decoded.
        """
        log.error("kafka source: %s; its records will be read again", exc)
        self._blame(worker, exc)
        for batch in (unsent, self._decoding, self._held):
            for tp in batch or ():
                self._set_stuck(tp.topic, tp.partition, True)
        self._drop_in_flight(consumer, unsent)
        worker.close(0)
        self._failed("decode_worker", exc)

    def _blame(self, worker: DecodeWorker, exc: DecodeWorkerError) -> None:
        """Count a crash against the message the worker was decoding when it died, if it said."""
        at = worker.crashed_at
        batch = self._in_child
        if at is None or batch is None:
            return
        flat = [r for recs in batch.values() for r in recs]
        if at >= len(flat):  # pragma: no cover - the worker names a position of the batch it got
            return
        rec = flat[at]
        key = (rec.topic, rec.partition, rec.offset)
        if len(self._crashes) >= _CRASH_MEMORY:
            self._crashes.clear()
        crashes = self._crashes[key] = self._crashes.get(key, 0) + 1
        log.error(
            "kafka source: the decode worker died on %s[%d] offset %d (crash %d; dead-lettered at %d)",
            rec.topic,
            rec.partition,
            rec.offset,
            crashes,
            CRASHES_BEFORE_DEAD_LETTER,
        )
        if crashes >= CRASHES_BEFORE_DEAD_LETTER:
            if len(self._poison) >= _CRASH_MEMORY:
                self._poison.clear()
            self._poison[key] = f"the message killed the decode worker {crashes} times; last: {exc}"
            del self._crashes[key]

    def _values(self, records: Records) -> list[bytes | None]:
        """The values to decode; those of messages to dead-letter unread are left out (None)."""
        values = _values(records)
        if self._poison:
            poison = self._poison
            for i, rec in enumerate(r for recs in records.values() for r in recs):
                if (rec.topic, rec.partition, rec.offset) in poison:
                    values[i] = None
        return values

    def _set_stuck(self, topic: str, partition: int, stuck: bool) -> None:
        key = (topic, partition)
        if stuck:
            self._stuck.add(key)
        elif key not in self._stuck:
            return
        else:
            self._stuck.discard(key)
        self.metrics.partition_stuck.labels(topic, str(partition)).set(1 if stuck else 0)

    def _drop_in_flight(self, consumer: KafkaConsumer | None, older: Records | None = None) -> None:
        """Forget the polls in the worker and held here (and ``older``, polled before them), seeking back
        so that they are read again."""
        batches = [b for b in (older, self._decoding, self._held, *self._split) if b]
        self._decoding = self._held = None
        self._split.clear()
        if self.worker is not None:
            self.worker.discard()
        if consumer is not None:
            _seek_back(consumer, batches)

    def commit(self, polled: Polled) -> None:
        """Commit the offsets of ``polled`` synchronously; a refused commit is logged and counted."""
        offsets = polled.token
        if not offsets or not isinstance(offsets, dict):
            return
        if self.states is not None and len(offsets) == 1:
            ((tp, at),) = offsets.items()
            self.states.observe(tp, polled.samples.series, at.offset)
        consumer = self._consumer
        if consumer is None:
            log.warning(
                "kafka source: consumer was re-created since this batch; its records will be read again"
            )
            self.metrics.source_errors.labels(SOURCE, "commit").inc()
            return
        try:
            consumer.commit(offsets=offsets, timeout_ms=self._probe_timeout_ms)
        except (CommitFailedError, RebalanceInProgressError) as exc:
            self.commit_failures += 1
            self.metrics.source_errors.labels(SOURCE, "commit_failed").inc()
            log.warning("kafka source: commit refused after a rebalance, records will be read again: %s", exc)
        except Exception as exc:  # the records stay uncommitted: read again later, never lost
            if not isinstance(exc, KafkaError):
                log.exception("kafka source: unexpected error while committing")
            self.metrics.source_errors.labels(SOURCE, "commit").inc()
            self._set_ready(False, f"commit failed: {exc}")

    def close(self) -> None:
        """Close the consumer (leaving the group, committing nothing) and the dead-letter producer."""
        if self._closed:
            return
        self._closed = True
        if self.states is not None and self._consumer is not None:
            self._rebalanced(self._consumer, None, settled=False)
            self.states.checkpoint(self._owned)  # what the next owner resumes from
        self._close_consumer()
        if self.states is not None:
            self.states.close()
        if self.worker is not None:
            self.worker.close(WORKER_CLOSE_TIMEOUT)
        if self._dead_letter is not None:
            self._dead_letter.close(timeout=self._flush_timeout)
        self._set_ready(False, "closed")

    # ------------------------------------------------------------------ connection
    def _connect(self) -> KafkaConsumer | None:
        if self._kwargs is None:
            self.start()
        assert self._kwargs is not None  # set by start()
        try:
            consumer = create_consumer(**self._kwargs)
        except KafkaError as exc:
            self._failed("connect", exc)
            return None
        try:
            consumer.subscribe(topics=list(self.config.topics), listener=self._rebalances)
        except KafkaError as exc:  # pragma: no cover - subscribe is local bookkeeping
            consumer.close(autocommit=False, timeout_ms=0)
            self._failed("connect", exc)
            return None
        self._consumer = consumer
        self.consumers_created += 1
        self._failures = 0
        self._backoff.reset()
        self._next_lag = self.clock.now() + self.config.lag_interval
        self._set_ready(True, "connected")
        return consumer

    def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._drop_in_flight(None)  # a new consumer starts from the committed offsets
        self._rebalances.take(settled=False)
        if self._owned:
            # the next assignment starts from the checkpoints, as on any other replica
            if self.states is not None and self.states.release(self._owned):
                self.forget_series()
            self._owned = set()
            self._count_partitions(None)
        if consumer is None:
            return
        try:
            consumer.close(autocommit=False, timeout_ms=self._probe_timeout_ms)
        except Exception:  # closing a broken consumer is best effort
            log.debug("kafka source: error while closing the consumer", exc_info=True)

    def _failed(self, kind: str, exc: BaseException) -> None:
        """Count a failure, mark not ready and pause polling for the next backoff delay."""
        self.metrics.source_errors.labels(SOURCE, kind).inc()
        delay = self._backoff.next_delay()
        self._pause_until = self.clock.now() + delay
        self._next_lag = min(self._next_lag, self._pause_until)
        self._set_ready(False, f"{kind}: {exc}; retrying in {delay:.1f} s")

    def _poll_failed(self, exc: Exception) -> None:
        self._failures += 1
        self._failed("poll", exc)
        broken = isinstance(exc, IllegalStateError) or not isinstance(exc, KafkaError)
        if broken or self._failures >= RECREATE_AFTER:
            log.warning(
                "kafka source: re-creating the consumer after %d failed poll(s); "
                "it resumes from the committed offsets",
                self._failures,
            )
            self._close_consumer()
            self._failures = 0

    def _set_ready(self, ready: bool, why: str) -> None:
        if ready != self._ready:
            if ready:
                log.info("kafka source ready: %s", why)
            else:
                log.warning("kafka source not ready: %s", why)
        elif not ready:
            log.debug("kafka source still not ready: %s", why)
        self._ready = ready
        self.metrics.source_ready.labels(SOURCE).set(1 if ready else 0)

    # ------------------------------------------------------------------ lag (and health)
    def _measure_lag(self, consumer: KafkaConsumer) -> bool:
        """Set the lag gauge of every assigned partition; False (not ready) when the broker did not answer."""
        self._next_lag = self.clock.now() + self.config.lag_interval
        timeout_ms = self._probe_timeout_ms
        try:
            assigned = list(consumer.assignment())
            if not assigned:
                # nothing to measure: ask for the end of each topic's first partition as a probe
                consumer.end_offsets(
                    [TopicPartition(t, 0) for t in self.config.topics], timeout_ms=timeout_ms
                )
                labels: set[tuple[str, str]] = set()
            else:
                ends = consumer.end_offsets(assigned, timeout_ms=timeout_ms)
                labels = set()
                for tp in assigned:
                    position = consumer.position(tp, timeout_ms=timeout_ms)
                    if position is None:
                        continue
                    # Some brokers (tansu 0.6) answer ListOffsets with the last batch's base
                    # offset + 1; the high watermark of the last fetch is never behind it.
                    end = max(int(ends.get(tp) or 0), int(consumer.highwater(tp) or 0))
                    label = (tp.topic, str(tp.partition))
                    self.metrics.consumer_lag.labels(*label).set(max(0, end - int(position)))
                    labels.add(label)
        except Exception as exc:
            if not isinstance(exc, KafkaError):
                log.exception("kafka source: unexpected error while measuring the lag")
            self._failed("lag", exc)
            return False
        for gone in self._lag_labels - labels:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(*gone)
        self._lag_labels = labels
        self._backoff.reset()
        self._set_ready(True, "broker answered")
        return True

    # ------------------------------------------------------------------ records
    def _finish(
        self, consumer: KafkaConsumer, records: Records, samples: SampleBatch, malformed: list[Malformed]
    ) -> Polled | None:
        """The decoded poll with its commit token, once its malformed records are dead-lettered."""
        token: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, recs in records.items():
            last = recs[-1]
            epoch = last.leader_epoch if last.leader_epoch is not None else -1
            token[tp] = OffsetAndMetadata(last.offset + 1, "", epoch)
        if malformed:
            flat = [r for recs in records.values() for r in recs]
            if self._poison:
                poison = self._poison
                malformed = [
                    Malformed(m.position, poison[key], "decoder_crash") if key in poison else m
                    for m in malformed
                    for key in [(flat[m.position].topic, flat[m.position].partition, flat[m.position].offset)]
                ]
            if not self._send_dead_letters(flat, malformed):
                # read the whole poll again later, and whatever was polled after it
                self._drop_in_flight(consumer, records)
                return None
        for tp in records:
            self._set_stuck(tp.topic, tp.partition, False)
        return Polled(SOURCE, samples, token)

    def _send_dead_letters(self, records: list[Any], malformed: list[Malformed]) -> bool:
        """Send the malformed records to the dead-letter topic and wait for the broker; False on failure."""
        producer = self._dead_letter
        assert producer is not None  # created by start()
        topic = self.config.dead_letter_topic
        try:
            for bad in malformed:
                rec = records[bad.position]
                value, key, headers = _dead_letter_record(rec, bad.reason)
                producer.send(topic, value, key=key, headers=headers)
            producer.flush(self._flush_timeout)
        except KafkaDeliveryError as exc:
            log.warning(
                "kafka source: cannot write %d record(s) to the dead-letter topic %s (%s); "
                "the batch will be read again",
                len(malformed),
                topic,
                exc,
            )
            self._failed("dead_letter", exc)
            return False
        for bad in malformed:
            self.metrics.dead_lettered.labels(SOURCE, bad.kind).inc()
        log.warning(
            "kafka source: %d malformed message(s) sent to %s; first: %s",
            len(malformed),
            topic,
            malformed[0].reason,
        )
        return True


def _dead_letter_record(rec: Any, reason: str) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """The value, key and headers to dead-letter ``rec`` with: its own, plus where it came from and why."""
    value: bytes = rec.value if rec.value is not None else b""
    headers = [(str(k), bytes(v) if v is not None else b"") for k, v in (rec.headers or [])]
    headers += [
        (ERROR_HEADER, reason.encode("utf-8", "replace")),
        (TOPIC_HEADER, rec.topic.encode()),
        (PARTITION_HEADER, str(rec.partition).encode()),
        (OFFSET_HEADER, str(rec.offset).encode()),
    ]
    if len(value) > MAX_DEAD_LETTER_VALUE:
        headers.append((TRUNCATED_HEADER, str(len(value)).encode()))
        value = value[:MAX_DEAD_LETTER_VALUE]
    return value, rec.key, headers


def _values(records: Records) -> list[bytes | None]:
    values: list[bytes | None] = []
    for recs in records.values():
        values.extend([r.value for r in recs])
    return values


def _seek_back(consumer: KafkaConsumer, batches: list[Records]) -> None:
    """Seek each partition to its first record in ``batches`` (oldest first)."""
    first: dict[TopicPartition, int] = {}
    for records in batches:
        for tp, recs in records.items():
            if recs and tp not in first:
                first[tp] = recs[0].offset
    owned = consumer.assignment()
    for tp, offset in first.items():
        if tp not in owned:  # no longer ours: its new owner starts from the commit
            continue
        try:
            consumer.seek(tp, offset)
        except (KafkaError, ValueError):  # revoked meanwhile (kafka-python: "Unassigned partition")
            log.debug("kafka source: cannot seek %s back", tp, exc_info=True)
