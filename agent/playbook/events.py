"""The audit path of the playbook engine: one frozen event per decision, with its reason.

Every incident transition is an :class:`IncidentEvent`; so is every action submitted and every
result. A matching signal that could not become an incident (its target does not resolve to a
valid name) is a :class:`SignalRejected`. Events go to an :class:`~agent.audit.AuditSink`, the one
audit protocol the executor's decisions go through too; :class:`LogAudit` logs them,
:class:`AuditLog` keeps them in memory.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.audit import Entry
from agent.decisions import explain_signal
from remediations.types import Target

log = logging.getLogger("aiops.playbooks")


class IncidentState(enum.StrEnum):
    """Where an incident is in its life.

    pending -> firing -> acting -> verifying -> resolved | failed | escalated; an incident can
    also end suppressed (another playbook won the target, or its namespace is not allowed) or
    expired (the condition went away before any action ran). A verifying incident whose series
    stopped reporting is stale: it goes back to verifying when fresh samples come, and is
    escalated, never resolved, if none come in time.
    """

    PENDING = "pending"
    FIRING = "firing"
    ACTING = "acting"
    VERIFYING = "verifying"
    STALE = "stale"
    RESOLVED = "resolved"
    FAILED = "failed"
    ESCALATED = "escalated"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"


#: States an incident does not leave.
TERMINAL = frozenset(
    {
        IncidentState.RESOLVED,
        IncidentState.FAILED,
        IncidentState.ESCALATED,
        IncidentState.SUPPRESSED,
        IncidentState.EXPIRED,
    }
)


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One step of one incident: a transition (``previous`` != ``state``) or an action on the way."""

    time: float
    incident: str
    playbook: str
    target: Target
    previous: IncidentState | None
    state: IncidentState
    reason: str
    action: str | None = None
    step: str | None = None
    key: str | None = None
    status: str | None = None
    guardrail: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """What the decision record needs beyond the reason: ``signal`` (the latest matching signal,
    with ``signals``, how many matched), ``rule`` (the trigger, with ``priority``, ``class`` and
    ``source``, when it opens), ``guardrails`` (each check with its value, when it acts),
    ``evidence`` (per series that fired: fresh samples, when a verification ends)."""

    @property
    def is_transition(self) -> bool:
        """Whether the state changed."""
        return self.previous != self.state

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the audit log's record)."""
        out: dict[str, Any] = {
            "type": "incident",
            "time": self.time,
            "incident": self.incident,
            "playbook": self.playbook,
            "target": self.target.to_dict(),
            "previous": None if self.previous is None else self.previous.value,
            "state": self.state.value,
            "reason": self.reason,
        }
        for name in ("action", "step", "key", "status", "guardrail"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.details:
            out["details"] = dict(self.details)
        return out


@dataclass(frozen=True, slots=True)
class SignalRejected:
    """A signal matched a playbook but could not become an incident; says why."""

    time: float
    playbook: str
    reason: str
    signal: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "type": "signal_rejected",
            "time": self.time,
            "playbook": self.playbook,
            "reason": self.reason,
            "signal": dict(self.signal),
        }


AuditEvent = IncidentEvent | SignalRejected


class AuditLog:
    """Keeps events in memory (bounded): for tests, ``aiops playbook test`` and the status view."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.events: list[AuditEvent] = []
        self._lock = threading.Lock()

    def record(self, entry: Entry) -> None:
        """Append an engine event, dropping the oldest past ``limit`` (other entries are ignored)."""
        if not isinstance(entry, IncidentEvent | SignalRejected):
            return
        with self._lock:
            self.events.append(entry)
            if len(self.events) > self.limit:
                del self.events[: len(self.events) - self.limit]

    def incident_events(self) -> list[IncidentEvent]:
        """The incident events only."""
        with self._lock:
            return [e for e in self.events if isinstance(e, IncidentEvent)]


class LogAudit:
    """Writes each event as one log record (the event's fields under ``audit`` in JSON logs)."""

    def record(self, event: Entry) -> None:
        """Log an engine event at INFO, or WARNING for failures, escalations and rejected signals."""
        if not isinstance(event, IncidentEvent | SignalRejected):
            return
        warn = isinstance(event, SignalRejected) or event.state in {
            IncidentState.FAILED,
            IncidentState.ESCALATED,
        }
        if isinstance(event, IncidentEvent):
            text = f"incident {event.incident} {event.playbook} {event.target}: "
            text += f"{event.previous} -> {event.state}" if event.is_transition else f"{event.state}"
            text += f": {event.reason}"
            signal = event.details.get("signal")
            if event.is_transition and isinstance(signal, Mapping):
                why = explain_signal(signal)
                text += f" [{signal.get('metric')}: {why}]" if why else ""
        else:
            text = f"signal rejected by {event.playbook}: {event.reason}"
        log.log(logging.WARNING if warn else logging.INFO, "%s", text, extra={"audit": event.to_dict()})
