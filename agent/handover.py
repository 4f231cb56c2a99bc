"""Open incidents that move with their signals partitions, as Kafka Streams keeps a changelog.

With decisions taken from the signals topic (agent/routing.py), the incidents a replica's
playbook engine holds belong to the signals partitions it owns. For each of them the decision
consumer writes what the engine exports (:meth:`~agent.playbook.engine.PlaybookEngine.export`:
the open incidents, the raises still to release, the ids given out) to the compacted state
topic, under the key ``decision_group/signals_topic/partition``, with the offset of the next
signal the engine has not taken. It is written through the same :class:`~agent.partition_state.
Changelog` as the detector state (chunks, then a manifest; two slots, so a torn write leaves the
previous one whole), at most every ``interval`` while something changed, and when the partition
is given up. The next owner reads it before the partition's first signal, hands it to its engine
(:meth:`~agent.playbook.engine.PlaybookEngine.take_over`) and resumes the partition at that
offset: the signals after it are taken again and join the incidents they joined before.

Each chunk is a versioned envelope: zlib-compressed JSON ``{"format": "aiops.incidents",
"version": 1, "id", "chunk", "incidents", "releases", "ids"}``. A chunk of another format or
version, larger than ``max_inflated_bytes`` once inflated, or not of the checkpoint its
manifest names is refused, and the partition's incidents are not restored (a warning says
where and why); an incident entry the engine cannot take in is dropped alone.
"""

from __future__ import annotations

import logging
import threading
import uuid
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from kafka import TopicPartition

from agent.clock import Clock
from agent.config import HandoverConfig, KafkaConnection
from agent.metrics import AgentMetrics
from agent.partition_state import Changelog, check_chunk
from detectors.checkpoint import CheckpointError, inflate

log = logging.getLogger("aiops.handover")

FORMAT = "aiops.incidents"
VERSION = 1
#: What a chunk's envelope costs besides its entries (JSON keys, id, chunk number).
_ENVELOPE = 256
_PARTS = ("incidents", "releases", "ids")


def origin(tp: TopicPartition) -> str:
    """The engine's name of a signals partition: ``topic[partition]``."""
    return f"{tp.topic}[{tp.partition}]"


class IncidentHandover:
    """Writes and reads the hand-over record of each signals partition this replica owns."""

    def __init__(
        self,
        config: HandoverConfig,
        group: str,
        connection: KafkaConnection,
        metrics: AgentMetrics,
        clock: Clock,
        stop: threading.Event,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.changelog = Changelog(config, group, connection, metrics, clock, stop, environ)
        #: Records written and restored.
        self.written = 0
        self.restored = 0

    def write(self, tp: TopicPartition, offset: int, exported: Mapping[str, Any]) -> bool:
        """Write ``exported`` (the engine's export of ``tp``) as reflecting the signals before ``offset``."""
        ident = uuid.uuid4().hex
        blobs, left_out = encode(exported, ident, self.config.max_bytes)
        for part, size in left_out:
            self.metrics.checkpoint_errors.labels("too_large").inc()
            log.warning(
                "handover: an entry of %s of %s[%d] is %d bytes, over max_bytes %d; left out",
                part,
                tp.topic,
                tp.partition,
                size,
                self.config.max_bytes,
            )
        if self.changelog.write(tp, offset, blobs, ident) is None:
            return False
        self.written += 1
        return True

    def read(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, tuple[int, dict[str, Any]]]:
        """The latest usable record of each of ``tps``: the offset to resume at, and what to hand
        to the engine's ``take_over``."""
        started = self.clock.now()
        out: dict[TopicPartition, tuple[int, dict[str, Any]]] = {}
        for tp, (manifest, blobs) in self.changelog.read(tps).items():
            merged: dict[str, Any] = {"incidents": [], "releases": [], "ids": {}}
            try:
                for i, blob in enumerate(blobs):
                    chunk = decode(blob, self.config.max_inflated_bytes)
                    check_chunk(manifest, i, chunk)
                    merged["incidents"] += chunk["incidents"]
                    merged["releases"] += chunk["releases"]
                    merged["ids"].update(chunk["ids"])
            except CheckpointError as exc:
                self.changelog.skipped(tp, exc)
                continue
            out[tp] = (manifest.offset, merged)
            self.restored += 1
        self.metrics.restore_seconds.observe(max(0.0, self.clock.now() - started))
        return out

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """``tps`` were given up."""
        self.changelog.forget(tps)

    def close(self) -> None:
        """Close the producer."""
        self.changelog.close()


def encode(
    exported: Mapping[str, Any], ident: str, max_bytes: int
) -> tuple[list[bytes], list[tuple[str, int]]]:
    """The entries of ``exported`` (an engine's export) packed in order into the chunks of
    checkpoint ``ident``, at most ``max_bytes`` of JSON each (so compressed, less); and the part
    and size of each entry left out because it is larger than that alone."""
    limit = max_bytes - _ENVELOPE
    chunks: list[dict[str, Any]] = []
    current: dict[str, Any] = {"incidents": [], "releases": [], "ids": {}}
    left_out: list[tuple[str, int]] = []
    size = 0
    entries: list[tuple[str, Any]] = [("incidents", e) for e in exported.get("incidents", ())]
    entries += [("releases", e) for e in exported.get("releases", ())]
    entries += [("ids", e) for e in dict(exported.get("ids", {})).items()]
    for part, entry in entries:
        n = len(orjson.dumps(entry)) + 1
        if n > limit:
            left_out.append((part, n))
            continue
        if size + n > limit:
            chunks.append(current)
            current, size = {"incidents": [], "releases": [], "ids": {}}, 0
        if part == "ids":
            current["ids"][entry[0]] = entry[1]
        else:
            current[part].append(entry)
        size += n
    chunks.append(current)
    blobs = [
        zlib.compress(
            orjson.dumps({"format": FORMAT, "version": VERSION, "id": ident, "chunk": i, **chunk}), 1
        )
        for i, chunk in enumerate(chunks)
    ]
    return blobs, left_out


def decode(blob: bytes, max_bytes: int) -> dict[str, Any]:
    """One chunk's envelope; CheckpointError when it is not one of this format and version, or
    inflates past ``max_bytes``."""
    raw = inflate(blob, max_bytes, "an incidents chunk", "max_inflated_bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"not an incidents chunk (not JSON: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"not an incidents chunk (format {FORMAT!r} expected)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"incidents chunk version {data.get('version')!r} is not supported")
    for part, kind in zip(_PARTS, (list, list, dict), strict=True):
        if not isinstance(data.get(part), kind):
            raise CheckpointError(f"its {part!r} is not a {kind.__name__}")
    return data
