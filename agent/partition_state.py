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
import math
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from agent.clock import Clock
from agent.config import KafkaConnection, PartitionStateConfig
from agent.kafka_client import KafkaDeliveryError, ResilientProducer, consumer_kwargs, create_consumer
from agent.metrics import AgentMetrics
from detectors import DetectorBank
from detectors.checkpoint import (
    CheckpointError,
    SeriesState,
    decode,
    encode,
    merge,
    put_series,
    split,
    state_arrays,
    take_series,
)

log = logging.getLogger("aiops.state")

#: The registry owner of restored series (the Kafka source's, so its limits apply to them).
OWNER = "kafka"
MANIFEST_FORMAT = "aiops.partition-checkpoint"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 4096
#: Most chunks one partition's checkpoint may have (bounds what a manifest can make a reader hold).
MAX_CHUNKS = 4096
#: What follows ``#`` in a chunk's key: the slot (0 or 1), a dot, the chunk's index. Anything else
#: under a manifest's key is no chunk and is not held while the topic is read.
_CHUNK_SUFFIX = re.compile(rb"[01]\.[0-9]{1,4}")
#: The least compression expected of a checkpoint, for the first guess of its chunk count.
COMPRESSION_GUESS = 4.0
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
        self.changelog = Changelog(config, group, connection, metrics, clock, stop, environ, producer)
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
        now = self.clock.now()
        written = 0
        for tp in sorted(tps):
            offset = self._processed.get(tp)
            if offset is None:
                continue
            ids = self.series_of(tp)
            ident = uuid.uuid4().hex
            blobs = self._chunks(take_series(self.bank, ids), tp, ident)
            size = None if blobs is None else self.changelog.write(tp, offset, blobs, ident)
            if size is None:
                self._saved[tp] = (now, -1)  # tried: again after the next interval
                continue
            written += 1
            self._saved[tp] = (now, offset)
            label = (tp.topic, str(tp.partition))
            self.metrics.checkpoint_bytes.labels(*label).set(size)
            self.metrics.checkpoint_series.labels(*label).set(int(ids.size))
            self.metrics.checkpoint_time.labels(*label).set(now)
            self.last_bytes = size
        self.written += written
        return written

    def start_cold(self, positions: Mapping[TopicPartition, int]) -> int:
        """Checkpoint each newly assigned partition that had no usable checkpoint, empty, at the
        offset its consumer starts from; return how many were written.

        A replica giving a partition up in a rebalance checkpoints it when it learns of the new
        assignment, which may be after the new owner read the state topic. This first checkpoint
        is what such a new owner falls back on: it replays the partition from here rather than
        starting cold at the committed offset, which would lose every sample learned since.
        """
        for tp, offset in positions.items():
            self._processed[tp] = offset
        return self.checkpoint(positions)

    def _chunks(self, state: SeriesState, tp: TopicPartition, ident: str) -> list[bytes] | None:
        """``state`` encoded in chunks of at most ``max_bytes`` each; None if one series is larger."""
        limit = self.config.max_bytes
        raw = sum(int(a.nbytes) for part in state.parts.values() for _, a in state_arrays(part))
        pieces = max(1, math.ceil(raw / (COMPRESSION_GUESS * limit)))
        for _ in range(8):  # each round splits by the overshoot it measured
            blobs = []
            for i, piece in enumerate(split(state, pieces)):
                piece.meta.update({"id": ident, "chunk": i})
                blobs.append(encode(piece))
            biggest = max(len(b) for b in blobs)
            if biggest <= limit:
                return blobs
            if pieces >= len(state.keys):
                break
            pieces = min(len(state.keys), math.ceil(pieces * biggest / (0.8 * limit)))
        self.metrics.checkpoint_errors.labels("too_large").inc()
        log.warning(
            "state: the checkpoint of %s[%d] does not fit chunks of max_bytes %d (%d series); not written",
            tp.topic,
            tp.partition,
            limit,
            len(state.keys),
        )
        return None

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
        self.changelog.forget(gone)
        if ids.size == 0:
            return 0
        self.bank.forget(ids)
        freed = self.bank.series.evict(ids)
        self._owner[ids] = _NOBODY
        return int(freed.size)

    # ------------------------------------------------------------------ restore
    def restore(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Load the latest checkpoint of each of ``tps``; return the offset each restored one resumes at."""
        wanted = list(tps)
        if not wanted:
            return {}
        started = self.clock.now()
        for tp in wanted:  # the first periodic checkpoint comes an interval after the assignment
            self._saved[tp] = (started, -1)
        offsets: dict[TopicPartition, int] = {}
        for tp, (manifest, blobs) in self.changelog.read(wanted).items():
            resumed = self._load(tp, manifest, blobs)
            if resumed is not None:
                offsets[tp] = resumed
        elapsed = max(0.0, self.clock.now() - started)
        self.metrics.restore_seconds.observe(elapsed)
        cold = sorted(f"{tp.topic}[{tp.partition}]" for tp in wanted if tp not in offsets)
        log.info(
            "state: restored %d partition(s) in %.2f s%s",
            len(offsets),
            elapsed,
            f"; cold (no usable checkpoint): {', '.join(cold)}" if cold else "",
        )
        return offsets

    def _load(self, tp: TopicPartition, manifest: Manifest, blobs: list[bytes]) -> int | None:
        try:
            pieces = []
            for i, blob in enumerate(blobs):
                piece = decode(blob, self.config.max_inflated_bytes)
                check_chunk(manifest, i, piece.meta)
                pieces.append(piece)
            state = merge(pieces)
        except CheckpointError as exc:
            self.changelog.skipped(tp, exc)
            return None
        where = self.changelog.where(tp)
        restored = put_series(self.bank, state, OWNER)
        for part, why in restored.dropped.items():
            self.metrics.checkpoint_errors.labels("incompatible").inc()
            log.warning("state: %s: detector %s starts cold: %s", where, part, why)
        if restored.refused:
            log.warning("state: %s: %d series not restored (series limit)", where, restored.refused)
        self._mark(tp, restored.ids)
        self._processed[tp] = manifest.offset
        self._saved[tp] = (self.clock.now(), manifest.offset)
        self.metrics.series_restored.inc(int(np.count_nonzero(restored.ids >= 0)))
        self.restored += 1
        return manifest.offset

    def close(self) -> None:
        """Close the checkpoint producer."""
        self.changelog.close()


class Changelog:
    """A compacted topic of per-partition checkpoints: chunks under ``key#slot.i``, then a manifest
    under ``key`` (``group/topic/partition``) naming them and the offset they reflect.

    What the chunks hold is the caller's (detector state, open incidents); each chunk carries the
    checkpoint's id and its index, which the caller checks with :func:`check_chunk`.
    """

    def __init__(
        self,
        config: PartitionStateConfig,
        group: str,
        connection: KafkaConnection,
        metrics: AgentMetrics,
        clock: Clock,
        stop: threading.Event,
        environ: Mapping[str, str] | None = None,
        producer: ResilientProducer | None = None,
    ) -> None:
        self.config = config
        self.group = group
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
        self._slots: dict[TopicPartition, int] = {}  # the chunk slot of the last checkpoint written or read

    def where(self, tp: TopicPartition) -> str:
        """``topic key group/topic/partition``: where the checkpoint of ``tp`` is, for messages."""
        return f"{self.config.topic} key {state_key(self.group, tp).decode()}"

    def write(self, tp: TopicPartition, offset: int, blobs: list[bytes], ident: str) -> int | None:
        """Write ``blobs`` as the checkpoint ``ident`` of ``tp`` at ``offset``; its size, or None
        when it could not be written (counted and logged).

        The chunks go first, then the manifest, all on the state partition of the manifest's key;
        chunks alternate between two slots, so a crash while writing one leaves the previous
        checkpoint whole.
        """
        topic = self.config.topic
        try:
            partitions = self.producer.partitions_for(topic)
        except KafkaDeliveryError as exc:
            self._write_failed(exc)
            return None
        key = state_key(self.group, tp)
        slot = 1 - self._slots.get(tp, 1)
        manifest = Manifest(self.group, tp.topic, tp.partition, offset, slot, len(blobs), ident)
        where = state_partition(key, partitions)
        try:
            for i, blob in enumerate(blobs):
                self.producer.send(topic, blob, key=manifest.chunk_key(i), partition=where)
            self.producer.flush(self._flush_timeout)  # every chunk is there before the manifest
            self.producer.send(topic, manifest.encode(self.clock.now()), key=key, partition=where)
            self.producer.flush(self._flush_timeout)
        except KafkaDeliveryError as exc:
            self._write_failed(exc)
            return None
        self._slots[tp] = slot
        return sum(len(b) for b in blobs)

    def _write_failed(self, exc: Exception) -> None:
        self.metrics.checkpoint_errors.labels("write").inc()
        log.warning(
            "state: cannot write checkpoints to %s (%s); retried at the next interval", self.config.topic, exc
        )

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """``tps`` were given up: their next checkpoint here starts from what is read then."""
        for tp in tps:
            self._slots.pop(tp, None)

    def skipped(self, tp: TopicPartition, exc: Exception) -> None:
        """Log and count a checkpoint of ``tp`` that cannot be used."""
        self.metrics.checkpoint_errors.labels("corrupt").inc()
        log.warning(
            "state: skipping the checkpoint at %s: %s; %s[%d] starts cold",
            self.where(tp),
            exc,
            tp.topic,
            tp.partition,
        )

    def read(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, tuple[Manifest, list[bytes]]]:
        """The latest usable checkpoint of each of ``tps``: its manifest and its chunks in order.

        A checkpoint that cannot be used (its manifest damaged, foreign, of another version or
        partition, a chunk missing) is skipped with a warning; so is everything when the topic
        cannot be read.
        """
        wanted = {state_key(self.group, tp): tp for tp in tps}
        if not wanted:
            return {}
        try:
            found = self._read(wanted)
        except KafkaError as exc:
            self.metrics.checkpoint_errors.labels("read").inc()
            log.warning(
                "state: cannot read checkpoints from %s (%s); the partitions start cold",
                self.config.topic,
                exc,
            )
            return {}
        out: dict[TopicPartition, tuple[Manifest, list[bytes]]] = {}
        for key, (value, chunks) in found.items():
            tp = wanted[key]
            if value is None:  # a tombstone
                continue
            try:
                manifest = Manifest.decode(value, self.group, tp)
                blobs = []
                for i in range(manifest.chunks):
                    blob = chunks.get(manifest.chunk_key(i))
                    if blob is None:
                        raise CheckpointError(f"its chunk {i} of {manifest.chunks} is missing")
                    blobs.append(blob)
            except CheckpointError as exc:
                self.skipped(tp, exc)
                continue
            self._slots[tp] = manifest.slot
            out[tp] = (manifest, blobs)
        return out

    def _read(
        self, wanted: Mapping[bytes, TopicPartition]
    ) -> dict[bytes, tuple[bytes | None, dict[bytes, bytes | None]]]:
        """The newest manifest of each key of ``wanted`` in the state topic, with the newest value of
        each of its chunk keys (keys without a manifest: left out)."""
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
            tps = [TopicPartition(topic, p) for p in sorted({state_partition(k, ordered) for k in wanted})]
            reader.assign(tps)
            reader.seek_to_beginning(*tps)
            ends = reader.end_offsets(tps)
            manifests: dict[bytes, bytes | None] = {}
            chunks: dict[bytes, dict[bytes, bytes | None]] = {}
            junk = 0
            while True:
                for records in reader.poll(timeout_ms=200).values():
                    for rec in records:
                        key = rec.key or b""
                        if key in wanted:
                            manifests[key] = rec.value
                        else:
                            base, _, suffix = key.partition(b"#")
                            if base not in wanted:
                                continue
                            if _CHUNK_SUFFIX.fullmatch(suffix) and int(suffix[2:]) < MAX_CHUNKS:
                                chunks.setdefault(base, {})[key] = rec.value
                            else:  # no manifest names it: not held (a producer could write any number)
                                junk += 1
                if all(_caught_up(reader, tp, ends.get(tp) or 0) for tp in tps):
                    break
                if self.clock.now() >= deadline:
                    self.metrics.checkpoint_errors.labels("read_timeout").inc()
                    log.warning(
                        "state: reading %s took longer than restore_timeout (%.0f s); using what was read",
                        topic,
                        self.config.restore_timeout,
                    )
                    break
            if junk:
                log.warning(
                    "state: skipped %d record(s) in %s under a manifest's key that name no chunk "
                    "(a chunk is '#0.i' or '#1.i', i below %d)",
                    junk,
                    topic,
                    MAX_CHUNKS,
                )
            return {key: (value, chunks.get(key, {})) for key, value in manifests.items()}
        finally:
            reader.close(autocommit=False)

    def close(self) -> None:
        """Close the producer."""
        self.producer.close(self._flush_timeout)


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a partition's checkpoint is: the offset it reflects and the chunks that hold it."""

    group: str
    topic: str
    partition: int
    offset: int
    slot: int
    chunks: int
    id: str

    def chunk_key(self, i: int) -> bytes:
        """The key of chunk ``i``: the manifest's, ``#slot.i``."""
        return f"{self.group}/{self.topic}/{self.partition}#{self.slot}.{i}".encode()

    def encode(self, written: float) -> bytes:
        """The manifest's JSON."""
        return orjson.dumps(
            {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "written": written, **asdict(self)}
        )

    @classmethod
    def decode(cls, value: bytes, group: str, tp: TopicPartition) -> Manifest:
        """The manifest of ``tp``; CheckpointError for anything else (format, version, partition)."""
        if len(value) > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"not a checkpoint manifest ({len(value)} bytes)")
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise CheckpointError(f"not a checkpoint manifest (not JSON: {exc})") from exc
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise CheckpointError(f"not a checkpoint manifest (format {MANIFEST_FORMAT!r} expected)")
        if data.get("version") != MANIFEST_VERSION:
            raise CheckpointError(f"manifest version {data.get('version')!r} is not supported")
        expected = {"group": group, "topic": tp.topic, "partition": tp.partition}
        if {k: data.get(k) for k in expected} != expected:
            raise CheckpointError(
                f"it belongs to {data.get('group')}/{data.get('topic')}/{data.get('partition')}"
            )
        numbers: dict[str, int] = {}
        for name in ("offset", "slot", "chunks"):
            number = data.get(name)
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise CheckpointError(f"its {name} {number!r} is not a non-negative integer")
            numbers[name] = number
        if numbers["slot"] not in (0, 1) or not 1 <= numbers["chunks"] <= MAX_CHUNKS:
            raise CheckpointError(f"its slot or chunk count is out of range: {numbers}")
        ident = data.get("id")
        if not isinstance(ident, str):
            raise CheckpointError("its id is missing")
        return cls(
            group, tp.topic, tp.partition, numbers["offset"], numbers["slot"], numbers["chunks"], ident
        )


def state_partition(key: bytes, partitions: list[int]) -> int:
    """The state partition of a manifest key and its chunks: where the producer's default
    partitioner puts the key (murmur2, as the Java client)."""
    return partitions[(int(murmur2(key)) & 0x7FFFFFFF) % len(partitions)]


def check_chunk(manifest: Manifest, i: int, meta: Mapping[str, Any]) -> None:
    """CheckpointError unless ``meta`` (of a chunk read as the ``i``-th of ``manifest``) says so."""
    if meta.get("id") != manifest.id or meta.get("chunk") != i:
        raise CheckpointError(f"its chunk {i} belongs to another checkpoint")


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
