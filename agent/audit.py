"""The audit trail: one JSON line per decision, to the log, a file, and Kafka.

Everything audited is an entry with a ``to_dict()``: the playbook engine's incident events and
rejected signals (:mod:`agent.playbook.events`), and every decision the executor takes on a
request, an :class:`AuditRecord`: ``started`` (written before any write, so a crash between
the write and its outcome still leaves a record), ``executed``, ``noop``, ``dry_run``, ``skipped`` (with the
guardrail that held it), ``failed`` (with the error), ``pending_approval``, ``approved``,
``rejected``, ``expired``. One protocol, :class:`AuditSink`, receives them all; :class:`Audit`
fans an entry out to its sinks:

- :class:`LogAuditSink`: the ``aiops.audit`` logger, and optionally an append-only JSON-lines
  file. The file doubles as the memory of executed keys across restarts
  (:func:`executed_keys_in`);
- :class:`KafkaAuditSink`: the topic ``aiops.audit`` through a
  :class:`~agent.kafka_client.ResilientProducer`, keyed by the idempotency key.

(Kubernetes Events on the target are written by the executor, which holds the target object.)
A sink that fails is logged and skipped: auditing never raises into the executor.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from remediations.jsontext import loads as loads_json

log = logging.getLogger("aiops.audit")

#: The default Kafka topic of the audit trail.
AUDIT_TOPIC = "aiops.audit"


class Decision(enum.StrEnum):
    """What the executor decided about one request."""

    STARTED = "started"
    """Written before the write (write-ahead): a crash after it still leaves a record."""
    EXECUTED = "executed"
    NOOP = "noop"
    DRY_RUN = "dry_run"
    SKIPPED = "skipped"
    FAILED = "failed"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One decision on one request: what, on what, why, and by which agent replica."""

    time: float
    decision: Decision
    key: str
    action: str
    target: Mapping[str, str]
    message: str
    playbook: str = ""
    incident: str = ""
    step: str = ""
    guardrail: str = ""
    """For ``skipped`` (and refusals): the guardrail that held the action."""
    error: str = ""
    """For ``failed``: the error's class name."""
    instance: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "time": self.time,
            "decision": self.decision.value,
            "key": self.key,
            "action": self.action,
            "target": dict(self.target),
            "message": self.message,
            "playbook": self.playbook,
            "incident": self.incident,
            "step": self.step,
            "guardrail": self.guardrail,
            "error": self.error,
            "instance": self.instance,
            "details": dict(self.details),
        }

    def to_json(self) -> str:
        """One JSON line (no newline)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)


class Entry(Protocol):
    """Anything audited: an executor decision, an incident event, a rejected signal."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        ...


class AuditSink(Protocol):
    """Where audit entries go; ``record`` may raise, :class:`Audit` catches it."""

    def record(self, entry: Entry) -> None:
        """Deliver one entry."""
        ...


def _line(entry: Entry) -> str:
    return json.dumps(entry.to_dict(), sort_keys=True, separators=(",", ":"), default=str)


def _key(entry: Entry) -> str:
    data = entry.to_dict()
    return str(data.get("key") or data.get("incident") or data.get("playbook") or "")


class LogAuditSink:
    """JSON lines to the ``aiops.audit`` logger and, when ``path`` is given, appended to a file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, entry: Entry) -> None:
        """Log the line; append it to the file."""
        line = _line(entry)
        log.info("%s", line)
        if self.path is not None:
            with self._lock, self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()


class _Producer(Protocol):
    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any: ...

    def flush(self, timeout: float) -> None: ...


class KafkaAuditSink:
    """Each record to a Kafka topic, keyed by its idempotency key, flushed at once (records are rare)."""

    def __init__(self, producer: _Producer, topic: str = AUDIT_TOPIC, flush_timeout: float = 10.0) -> None:
        self.producer = producer
        self.topic = topic
        self.flush_timeout = flush_timeout

    def record(self, entry: Entry) -> None:
        """Send and wait for the acknowledgement (keyed by the idempotency key or the incident)."""
        self.producer.send(self.topic, _line(entry).encode(), key=_key(entry).encode())
        self.producer.flush(self.flush_timeout)


class MemoryAuditSink:
    """Keeps the executor's records in a list (tests); other entries are ignored."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self._lock = threading.Lock()

    def record(self, entry: Entry) -> None:
        """Keep it, if it is an executor decision."""
        if isinstance(entry, AuditRecord):
            with self._lock:
                self.records.append(entry)

    def decisions(self, key: str | None = None) -> list[str]:
        """The decisions recorded (for ``key`` only, when given), in order."""
        return [r.decision.value for r in self.records if key is None or r.key == key]


class Audit:
    """Fans every entry out to the sinks; a failing sink is logged, never raised."""

    def __init__(self, sinks: Sequence[AuditSink]) -> None:
        self.sinks = list(sinks)
        self.errors = 0

    def record(self, entry: Entry) -> None:
        """Deliver ``entry`` to every sink."""
        for sink in self.sinks:
            try:
                sink.record(entry)
            except Exception:  # an audit sink down must not stop the engine or the executor
                self.errors += 1
                log.exception("audit sink %s failed for %s", type(sink).__name__, _key(entry))


#: The decisions after which a key counts as executed (never run again).
EXECUTED_DECISIONS = frozenset({Decision.EXECUTED})


def executed_keys_in(lines: Iterable[str]) -> set[str]:
    """The keys with an ``executed`` decision among audit JSON lines (bad lines are ignored)."""
    keys: set[str] = set()
    for line in lines:
        try:
            data = loads_json(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("decision") in EXECUTED_DECISIONS and data.get("key"):
            keys.add(str(data["key"]))
    return keys


def executed_keys_from_file(path: Path | None) -> set[str]:
    """:func:`executed_keys_in` of an audit file; empty when there is none."""
    if path is None or not path.exists():
        return set()
    with path.open(encoding="utf-8", errors="replace") as fh:
        return executed_keys_in(fh)
