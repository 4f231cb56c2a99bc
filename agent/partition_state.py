"""Detector state that moves with its Kafka partitions, as Kafka Streams keeps a changelog.

The Kafka source tells :class:`PartitionStates` which series each processed batch of a
partition carried and up to which offset it processed (:meth:`~PartitionStates.observe`). Every
``interval`` and when a partition is given up, the detector state of that partition's series
(:mod:`detectors.checkpoint`) is written to the compacted state topic under the key
``group/topic/partition``, with the offset it reflects. When a partition is assigned, its
latest checkpoint is read back and loaded *before* the partition's first record is processed,
and the consumer is moved to the checkpoint's offset: restored state plus the records replayed
from there are what an uninterrupted run had (no sample learned twice, none skipped; records
between the checkpoint and the last commit are processed again, so their signals may repeat:
at least once, bounded by one ``interval`` of records).

A checkpoint that cannot be read (damaged, foreign, of another version, too large, of another
group or partition than its key says) is skipped with a warning and the partition starts cold;
a detector whose configuration changed since is started cold alone (see
:func:`detectors.checkpoint.put_series`). A series seen on several partitions goes with the
partition it was last seen on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from agent.clock import Clock
from agent.config import KafkaConnection, PartitionStateConfig
from agent.kafka_client import KafkaDeliveryError, ResilientProducer, consumer_kwargs, create_consumer
from agent.metrics import AgentMetrics
from detectors import DetectorBank
from detectors.checkpoint import CheckpointError, decode, encode, put_series, take_series

log = logging.getLogger("aiops.state")

#: The registry owner of restored series (the Kafka source's, so its limits apply to them).
OWNER = "kafka"
_NOBODY = -1


def state_key(group: str, tp: TopicPartition) -> bytes:
    """The checkpoint key of ``tp`` for consumer group ``group``."""
    return f"{group}/{tp.topic}/{tp.partition}".encode()


class PartitionStates:
    """Checkpoints and restores the detector state of the partitions this replica owns."""

    def __init__(
        self,
        config: PartitionStateConfig,
        group: str,
        bank: DetectorBank,
        connection: KafkaConnection,
        metrics: AgentMetrics,
        clock: Clock,
        stop: threading.Event,
        environ: Mapping[str, str] | None = None,
        producer: ResilientProducer | None = None,
    ) -> None:
        self.config = config
        self.group = group
        self.bank = bank
        self.connection = connection
        self.metrics = metrics
        self.clock = clock
        self.environ = environ
        self.producer = producer or ResilientProducer(
            connection,
            clock,
            stop,
            name="state",
            environ=environ,
            connect_timeout=min(connection.request_timeout, 10.0),
            max_request_size=max(config.max_bytes + 65_536, 1 << 20),
            compression_type=None,
        )
        self._flush_timeout = min(connection.request_timeout, 10.0)
        self._index: dict[TopicPartition, int] = {}
        self._tps: list[TopicPartition] = []
        self._owner = np.full(0, _NOBODY, dtype=np.int32)
        self._generation = np.zeros(0, dtype=np.int64)
        self._processed: dict[TopicPartition, int] = {}
        self._saved: dict[TopicPartition, tuple[float, int]] = {}  # when, at which offset
        #: Checkpoints written and restored, and the size of the last one written.
        self.written = 0
        self.restored = 0
        self.last_bytes = 0

    # ------------------------------------------------------------------ ownership
    def _slot(self, tp: TopicPartition) -> int:
        slot = self._index.get(tp)
        if slot is None:
            slot = self._index[tp] = len(self._tps)
            self._tps.append(tp)
        return slot

    def _grow(self, size: int) -> None:
        if size > self._owner.shape[0]:
            n = max(size, 2 * self._owner.shape[0], 64)
            owner = np.full(n, _NOBODY, dtype=np.int32)
            owner[: self._owner.shape[0]] = self._owner
            gen = np.zeros(n, dtype=np.int64)
            gen[: self._generation.shape[0]] = self._generation
            self._owner, self._generation = owner, gen

    def _mark(self, tp: TopicPartition, ids: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        ids = ids[ids >= 0]
        if ids.size == 0:
            return
        self._grow(int(ids.max()) + 1)
        self._owner[ids] = self._slot(tp)
        self._generation[ids] = _generations(self.bank.series, ids)

    def observe(self, tp: TopicPartition, ids: np.ndarray[Any, np.dtype[np.int64]], next_offset: int) -> None:
        """A batch of ``tp`` with the series ``ids`` was processed, up to (not including) ``next_offset``."""
        self._mark(tp, ids)
        self._processed[tp] = next_offset

    def series_of(self, tp: TopicPartition) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The ids of the registered series last seen on ``tp``."""
        slot = self._index.get(tp)
        n = min(self.bank.series.capacity, self._owner.shape[0])
        if slot is None or n == 0:
            return np.zeros(0, dtype=np.int64)
        same = self._generation[:n] == _generations(self.bank.series, np.arange(n, dtype=np.int64))
        ids = np.flatnonzero((self._owner[:n] == slot) & same).astype(np.int64)
        registry = self.bank.series
        return np.array([i for i in ids.tolist() if _registered(registry, i)], dtype=np.int64)

    # ------------------------------------------------------------------ checkpoints
    def due(self, owned: Iterable[TopicPartition]) -> list[TopicPartition]:
        """The partitions of ``owned`` whose checkpoint is older than ``interval`` and behind (those
        not behind are marked current)."""
        now = self.clock.now()
        due = []
        for tp in owned:
            processed = self._processed.get(tp)
            if processed is None:
                continue
            when, offset = self._saved.get(tp, (-np.inf, -1))
            if now - when < self.config.interval:
                continue
            if offset != processed:
                due.append(tp)
            else:  # nothing new since: the checkpoint there is is current
                self._saved[tp] = (now, offset)
                self.metrics.checkpoint_time.labels(tp.topic, str(tp.partition)).set(now)
        return due

    def checkpoint(self, tps: Iterable[TopicPartition]) -> int:
        """Write the checkpoint of each of ``tps`` that processed something; return how many were written."""
        sent: list[tuple[TopicPartition, int, int, int]] = []
        now = self.clock.now()
        for tp in sorted(tps):
            offset = self._processed.get(tp)
            if offset is None:
                continue
            ids = self.series_of(tp)
            meta = {"group": self.group, "topic": tp.topic, "partition": tp.partition, "offset": offset}
            meta["written"] = now
            blob = encode(take_series(self.bank, ids, meta))
            if len(blob) > self.config.max_bytes:
                self.metrics.checkpoint_errors.labels("too_large").inc()
                log.warning(
                    "state: checkpoint of %s[%d] is %d bytes (%d series), over max_bytes %d: not written; "
                    "use more partitions or raise the limit",
                    tp.topic,
                    tp.partition,
                    len(blob),
                    ids.size,
                    self.config.max_bytes,
                )
                self._saved[tp] = (now, -1)  # tried: again after the next interval
                continue
            try:
                self.producer.send(self.config.topic, blob, key=state_key(self.group, tp))
            except KafkaDeliveryError as exc:
                self._write_failed(exc)
                return 0
            sent.append((tp, offset, len(blob), int(ids.size)))
        if not sent:
            return 0
        try:
            self.producer.flush(self._flush_timeout)
        except KafkaDeliveryError as exc:
            self._write_failed(exc)
            for tp, *_ in sent:
                self._saved[tp] = (now, -1)
            return 0
        for tp, offset, size, series in sent:
            self._saved[tp] = (now, offset)
            label = (tp.topic, str(tp.partition))
            self.metrics.checkpoint_bytes.labels(*label).set(size)
            self.metrics.checkpoint_series.labels(*label).set(series)
            self.metrics.checkpoint_time.labels(*label).set(now)
            self.last_bytes = size
        self.written += len(sent)
        log.debug("state: %d checkpoint(s) written", len(sent))
        return len(sent)

    def _write_failed(self, exc: Exception) -> None:
        self.metrics.checkpoint_errors.labels("write").inc()
        log.warning(
            "state: cannot write checkpoints to %s (%s); retried at the next interval", self.config.topic, exc
        )

    def release(self, tps: Iterable[TopicPartition]) -> int:
        """Forget the series of ``tps`` (given up): their state leaves this replica; return how many."""
        gone = list(tps)
        ids = np.concatenate([self.series_of(tp) for tp in gone]) if gone else np.zeros(0, np.int64)
        for tp in gone:
            self._processed.pop(tp, None)
            self._saved.pop(tp, None)
            label = (tp.topic, str(tp.partition))
            for gauge in (
                self.metrics.checkpoint_bytes,
                self.metrics.checkpoint_series,
                self.metrics.checkpoint_time,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(*label)
        if ids.size == 0:
            return 0
        self.bank.forget(ids)
        freed = self.bank.series.evict(ids)
        self._owner[ids] = _NOBODY
        return int(freed.size)

    # ------------------------------------------------------------------ restore
    def restore(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Load the latest checkpoint of each of ``tps``; return the offset each restored one resumes at."""
        wanted = {state_key(self.group, tp): tp for tp in tps}
        if not wanted:
            return {}
        started = self.clock.now()
        for tp in wanted.values():  # the first checkpoint comes an interval after the assignment
            self._saved[tp] = (started, -1)
        try:
            latest = self._read(wanted)
        except KafkaError as exc:
            self.metrics.checkpoint_errors.labels("read").inc()
            log.warning(
                "state: cannot read checkpoints from %s (%s); the partitions start cold",
                self.config.topic,
                exc,
            )
            return {}
        offsets: dict[TopicPartition, int] = {}
        for key, value in latest.items():
            tp = wanted[key]
            resumed = self._load(tp, value)
            if resumed is not None:
                offsets[tp] = resumed
        elapsed = max(0.0, self.clock.now() - started)
        self.metrics.restore_seconds.observe(elapsed)
        cold = sorted(f"{tp.topic}[{tp.partition}]" for tp in wanted.values() if tp not in offsets)
        log.info(
            "state: restored %d partition(s) in %.2f s%s",
            len(offsets),
            elapsed,
            f"; cold (no usable checkpoint): {', '.join(cold)}" if cold else "",
        )
        return offsets

    def _load(self, tp: TopicPartition, value: bytes | None) -> int | None:
        where = f"{self.config.topic} key {state_key(self.group, tp).decode()}"
        if value is None:
            return None
        try:
            state = decode(value, self.config.max_inflated_bytes)
            meta = state.meta
            expected = {"group": self.group, "topic": tp.topic, "partition": tp.partition}
            if {k: meta.get(k) for k in expected} != expected:
                raise CheckpointError(
                    f"it belongs to {meta.get('group')}/{meta.get('topic')}/{meta.get('partition')}"
                )
            offset = meta.get("offset")
            if not isinstance(offset, int) or offset < 0:
                raise CheckpointError(f"its offset {offset!r} is not a non-negative integer")
        except CheckpointError as exc:
            self.metrics.checkpoint_errors.labels("corrupt").inc()
            log.warning(
                "state: skipping the checkpoint at %s: %s; %s[%d] starts cold",
                where,
                exc,
                tp.topic,
                tp.partition,
            )
            return None
        restored = put_series(self.bank, state, OWNER)
        for part, why in restored.dropped.items():
            self.metrics.checkpoint_errors.labels("incompatible").inc()
            log.warning("state: %s: detector %s starts cold: %s", where, part, why)
        if restored.refused:
            log.warning("state: %s: %d series not restored (series limit)", where, restored.refused)
        self._mark(tp, restored.ids)
        self._processed[tp] = offset
        self._saved[tp] = (self.clock.now(), offset)
        self.metrics.series_restored.inc(int(np.count_nonzero(restored.ids >= 0)))
        self.restored += 1
        return offset

    def _read(self, wanted: Mapping[bytes, TopicPartition]) -> dict[bytes, bytes | None]:
        """The newest value of each key of ``wanted`` in the state topic (keys absent: left out)."""
        topic = self.config.topic
        kwargs = consumer_kwargs(
            self.connection,
            self.environ,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=max(self.config.max_bytes + 65_536, 1 << 20),
        )
        reader = create_consumer(**kwargs)
        try:
            deadline = self.clock.now() + self.config.restore_timeout
            partitions = reader.partitions_for_topic(topic)  # fetches the topic's metadata
            if not partitions:
                log.info("state: topic %s does not exist yet: nothing to restore", topic)
                return {}
            ordered = sorted(partitions)
            # where the producer's default partitioner put each key (murmur2, as the Java client)
            needed = sorted({ordered[(murmur2(key) & 0x7FFFFFFF) % len(ordered)] for key in wanted})
            tps = [TopicPartition(topic, p) for p in needed]
            reader.assign(tps)
            reader.seek_to_beginning(*tps)
            ends = reader.end_offsets(tps)
            latest: dict[bytes, bytes | None] = {}
            while True:
                batches = reader.poll(timeout_ms=200)
                for records in batches.values():
                    for rec in records:
                        if rec.key in wanted:
                            latest[rec.key] = rec.value
                if all(_caught_up(reader, tp, ends.get(tp) or 0) for tp in tps):
                    return latest
                if self.clock.now() >= deadline:
                    self.metrics.checkpoint_errors.labels("read_timeout").inc()
                    log.warning(
                        "state: reading %s took longer than restore_timeout (%.0f s); using what was read",
                        topic,
                        self.config.restore_timeout,
                    )
                    return latest
        finally:
            reader.close(autocommit=False)

    def close(self) -> None:
        """Close the checkpoint producer."""
        self.producer.close(self._flush_timeout)


def _caught_up(reader: Any, tp: TopicPartition, end: int) -> bool:
    """Whether ``reader`` has read ``tp`` to its end (the end offset, or the fetched high watermark:
    some brokers answer ListOffsets with less than the true end)."""
    position = reader.position(tp)
    highwater = reader.highwater(tp)
    if highwater is None:
        return end == 0 and position is not None and position >= 0
    return position is not None and position >= max(end, int(highwater))


def _generations(
    registry: Any, ids: np.ndarray[Any, np.dtype[np.int64]]
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The registry's generation of each id (0 for ids it never evicted)."""
    gen = registry.generation
    out = np.zeros(ids.size, dtype=np.int64)
    inside = ids < gen.shape[0]
    out[inside] = gen[ids[inside]]
    return out


def _registered(registry: Any, sid: int) -> bool:
    try:
        registry.key(sid)
    except KeyError:
        return False
    return True
