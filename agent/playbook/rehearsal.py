"""Rehearse playbooks on recorded signals: no cluster, virtual time, nothing written.

``aiops playbook test`` and the shipped playbooks' tests use this. Records come from a JSON Lines
file, one per line:

- a signal, in the wire form of the signals topic (``Signal.to_dict()``):
  ``{"kind": "anomaly", "metric": "m", "labels": {...}, "timestamp": 1700000000, "value": 0.3,
  "score": 0.99}`` (``timestamp`` may also be an ISO 8601 string; ``detector`` and ``details`` are
  optional);
- a fact the ``when`` conditions ask about:
  ``{"fact": "rollout", "target": {"kind": "Deployment", "namespace": "shop", "name": "web"},
  "timestamp": ...}``.

Blank lines and lines starting with ``#`` are skipped. The clock is a :class:`ManualClock` that
jumps from record to record and stops at every deadline in between (a ``for:`` window ending,
verification), so each decision is stamped with the time it would have happened.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from agent.clock import ManualClock
from agent.playbook.engine import PlaybookEngine, RecordedFacts, iso_time
from agent.playbook.events import AuditEvent, AuditLog, IncidentEvent, SignalRejected
from agent.playbook.guardrails import GuardrailDefaults, format_seconds
from agent.playbook.loader import PlaybookSet
from agent.playbook.requests import Proposal, RecordingExecutor
from agent.yamlloc import LocatedError, Location, YamlValidationError, field_path
from detectors.series import SeriesKey
from detectors.signal import Signal, SignalKind
from remediations.jsontext import loads as loads_json
from remediations.types import ActionResult, ActionStatus, Target

#: After the last record, timers run for at most this long (verification windows end in it).
SETTLE = 86400.0


def _timestamp(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError as exc:
            msg = f"expected seconds since the epoch or an ISO 8601 time, got {value!r}"
            raise ValueError(msg) from exc
    return value


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    timestamp: Annotated[float, BeforeValidator(_timestamp)]


class RecordedSignal(_Record):
    """A signal line."""

    kind: SignalKind
    metric: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    value: float = 0.0
    score: float = Field(1.0, ge=0.0, le=1.0)
    detector: str = "recorded"
    details: dict[str, Any] = Field(default_factory=dict)

    def to_signal(self) -> Signal:
        """The Signal."""
        return Signal(
            self.kind,
            SeriesKey.of(self.metric, self.labels),
            self.timestamp,
            self.value,
            self.score,
            self.detector,
            dict(self.details),
        )


class RecordedTarget(BaseModel):
    """A target named in a fact line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    namespace: str
    name: str


class RecordedFact(_Record):
    """A fact line: a rollout of a target at a time."""

    fact: Literal["rollout"]
    target: RecordedTarget


Record = RecordedSignal | RecordedFact


def parse_records(text: str, file: str) -> list[Record]:
    """Parse JSON Lines records; raise YamlValidationError with every bad line located."""
    records: list[Record] = []
    errors: list[LocatedError] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = loads_json(stripped)
        except json.JSONDecodeError as exc:
            errors.append(LocatedError(Location(file, lineno, exc.colno), "", f"invalid JSON: {exc.msg}"))
            continue
        model: type[RecordedSignal] | type[RecordedFact] = (
            RecordedFact if isinstance(data, dict) and "fact" in data else RecordedSignal
        )
        try:
            records.append(model.model_validate(data))
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                message = err["msg"].removeprefix("Value error, ")
                errors.append(LocatedError(Location(file, lineno, 1), field_path(err["loc"]), message))
    if errors:
        raise YamlValidationError(errors)
    return records


@dataclass(frozen=True, slots=True)
class Rehearsal:
    """What happened: every audit event, every request and its result."""

    start: float
    events: tuple[AuditEvent, ...]
    requests: tuple[Proposal, ...]
    results: tuple[ActionResult, ...]

    def actions(self) -> list[tuple[Proposal, ActionResult]]:
        """Each request with its result, in order."""
        return list(zip(self.requests, self.results, strict=True))

    def ran(self) -> list[Proposal]:
        """The requests that would have changed something (executed or dry-run)."""
        done = {ActionStatus.EXECUTED, ActionStatus.DRY_RUN}
        return [req for req, res in self.actions() if res.status in done]

    def held(self) -> list[IncidentEvent]:
        """Events where a guardrail, a condition or priority held an incident back."""
        return [e for e in self.events if isinstance(e, IncidentEvent) and e.guardrail is not None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "start": self.start,
            "events": [e.to_dict() for e in self.events],
            "actions": [{"request": q.to_dict(), "result": r.to_dict()} for q, r in self.actions()],
        }


def rehearse(
    playbooks: PlaybookSet,
    records: Sequence[Record],
    *,
    defaults: GuardrailDefaults | None = None,
    fail: frozenset[str] = frozenset(),
    settle: float = SETTLE,
) -> Rehearsal:
    """Feed ``records`` through a fresh engine on virtual time; nothing is written anywhere.

    ``fail`` names actions the recording executor reports as failed (to rehearse ``onFailure``).
    """
    ordered = sorted(records, key=lambda r: r.timestamp)
    start = ordered[0].timestamp if ordered else 0.0
    clock = ManualClock(start)
    executor = RecordingExecutor(fail=fail)
    audit = AuditLog()
    facts = RecordedFacts()
    engine = PlaybookEngine(playbooks, executor, clock, audit, defaults=defaults, facts=facts)

    def run_until(until: float) -> None:
        for _ in range(1_000_000):  # deadlines strictly increase; the bound is a guard, not a limit
            deadline = engine.next_deadline()
            if deadline is None or deadline > until:
                break
            clock.set(deadline)
            engine.tick()
        clock.set(until)

    for ts, group in itertools.groupby(ordered, key=lambda r: r.timestamp):
        run_until(ts)
        signals = []
        for record in group:
            if isinstance(record, RecordedFact):
                t = record.target
                facts.record_rollout(Target(t.kind, t.namespace, t.name), record.timestamp)
            else:
                signals.append(record.to_signal())
        engine.emit(signals)
    run_until(clock.now() + settle)
    return Rehearsal(start, tuple(audit.events), tuple(executor.requests), tuple(executor.results))


def _when(ts: float, start: float) -> str:
    return f"+{format_seconds(ts - start):<8}"


def format_rehearsal(r: Rehearsal) -> str:
    """The timeline and a summary, for people."""
    lines = [f"timeline (times relative to the first record, {iso_time(r.start)}):"]
    results = {res.key: res for res in r.results}
    for e in r.events:
        if isinstance(e, SignalRejected):
            lines.append(f"  {_when(e.time, r.start)} {e.playbook}: signal rejected: {e.reason}")
            continue
        head = f"  {_when(e.time, r.start)} {e.playbook} {e.target} {e.incident}"
        if e.status is not None and e.key in results:
            lines.append(f"{head}  {e.step} {e.action}: {_verb(results[e.key].status)}  [{e.reason}]")
        elif e.action is not None:
            continue  # the submission; its result line follows
        elif e.is_transition:
            before = f"{e.previous} -> " if e.previous is not None else ""
            lines.append(f"{head}  {before}{e.state}: {e.reason}")
        else:
            lines.append(f"{head}  {e.state}: {e.reason}")
    ran = r.ran()
    lines.append("")
    lines.append(f"actions that would run: {len(ran)}")
    for req in ran:
        params = json.dumps(req.request.params.to_yaml_dict(), sort_keys=True)
        what = f"{req.action} (release what the incident raised)" if req.request.restore else req.action
        lines.append(f"  {_when(req.time, r.start)} {what} {req.target} {params}  ({req.playbook})")
    held = r.held()
    if held:
        lines.append(f"held back or suppressed: {len(held)}")
        for e in held:
            lines.append(f"  {_when(e.time, r.start)} {e.playbook} {e.target}: {e.reason}")
    return "\n".join(lines) + "\n"


def _verb(status: ActionStatus) -> str:
    return {
        ActionStatus.EXECUTED: "would run",
        ActionStatus.NOOP: "nothing to do",
        ActionStatus.DRY_RUN: "dry run (planned only)",
        ActionStatus.PENDING_APPROVAL: "waits for approval",
        ActionStatus.RUNNING: "runs in the background",
        ActionStatus.SKIPPED: "skipped",
        ActionStatus.HELD: "held",
        ActionStatus.FAILED: "fails",
    }[status]
