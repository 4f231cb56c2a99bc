"""The playbook engine: signals -> matches -> incidents -> action requests, every step audited.

An incident belongs to one playbook and one target (kind, namespace, name). Its life, on the
injected clock's time:

``pending``
    the first matching signal opened it. It fires at the first matching signal that arrives once
    ``trigger.for`` has elapsed (for an alert: when ``for`` has elapsed and the alert still fires),
    provided the condition held all along: no silence of ``trigger.maxGap`` or longer between
    matching signals. Such a silence *expires* it.
``firing``
    ``for`` has elapsed. It acts as soon as nothing holds it: the ``when`` conditions, the
    guardrails (namespace allow-list, cooldown, hourly rates) and the rule that a target has at
    most one remediation in flight. A held incident stays firing and is checked again at every
    signal and tick (one event each time the reason changes); it expires if the condition clears.
    Where several incidents on one target are ready together, the highest ``priority`` acts and
    the others end *suppressed*, as does any incident whose target is being remediated by an
    incident of a playbook with equal or higher priority, or whose namespace is not allowed.
    A suppressed incident stays muted (absorbing its signals) until its condition clears.
``acting``
    the steps run in order, each an :class:`~agent.playbook.requests.ActionRequest` with an
    idempotency key (playbook, target, incident, step) sent to the executor. A step that fails
    ends the incident *failed* and runs ``onFailure``. A step waiting for approval pauses the
    incident until :meth:`PlaybookEngine.report` brings its result.
``verifying``
    with ``verify.clears`` (the default): let T be the time the last step completed. The incident
    is *resolved* at the first moment at least ``verify.quiet`` has passed without a matching
    signal, counting from T or from the last matching signal after T, if that moment is no later
    than T + ``verify.within``. Otherwise at T + ``within`` it is *escalated* and ``onFailure``
    runs. For alert signals the condition holds from a firing alert until its resolved
    notification. With ``clears: false`` the incident is resolved when the steps are done.

Signals older than ``trigger.maxGap`` when they arrive (a backfill, a consumer far behind) open
nothing: acting on stale evidence is worse than waiting for fresh. Alert signals are exempt:
their timestamp is when the alert started, and a firing alert is current until resolved.

Incident ids derive from (playbook, target, timestamp of the first matching signal), so a signal
redelivered after a restart reopens the same incident id and the executor's idempotency keys
stop a second execution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from agent.clock import Clock
from agent.metrics import AgentMetrics
from agent.playbook.actions import ActionParams, changes_workload
from agent.playbook.events import (
    AuditEvent,
    AuditSink,
    IncidentEvent,
    IncidentState,
    SignalRejected,
)
from agent.playbook.guardrails import (
    ALLOW,
    ActionLedger,
    EffectiveGuardrails,
    GuardrailDefaults,
    Verdict,
    check_action,
    effective,
    format_seconds,
)
from agent.playbook.loader import EMPTY_SET, LoadedPlaybook, PlaybookSet, render_params, signal_context
from agent.playbook.models import ActionStep
from agent.playbook.requests import (
    DONE_STATUSES,
    ActionRequest,
    ActionResult,
    ActionStatus,
    Approval,
    Executor,
    TargetRef,
    idempotency_key,
)
from agent.playbook.templating import TemplateError, format_number
from detectors.signal import Signal, SignalKind

log = logging.getLogger("aiops.playbooks")

#: A firing alert not re-notified for this long counts as resolved (Alertmanager re-sends firing
#: alerts every repeat_interval, 4h by default; three missed repeats mean the resolve was lost).
ALERT_STALE_AFTER = 12 * 3600.0
#: The same rejection (playbook, reason) is audited at most once per this long.
REJECTION_QUIET = 300.0


class TargetFacts(Protocol):
    """What the engine may ask about a target to evaluate ``when`` conditions."""

    def last_rollout(self, target: TargetRef) -> float | None:
        """When the target's last rollout started, or None when unknown or never."""
        ...


class NoFacts:
    """Knows nothing: every ``when`` condition holds back its playbook."""

    def last_rollout(self, target: TargetRef) -> float | None:
        """Unknown."""
        return None


class RecordedFacts:
    """Facts given by hand: for tests and ``aiops playbook test``."""

    def __init__(self) -> None:
        self._rollouts: dict[TargetRef, float] = {}

    def record_rollout(self, target: TargetRef, when: float) -> None:
        """``target`` rolled out at ``when``."""
        self._rollouts[target] = max(when, self._rollouts.get(target, when))

    def last_rollout(self, target: TargetRef) -> float | None:
        """The latest recorded rollout."""
        return self._rollouts.get(target)


def incident_id(playbook: str, target: TargetRef, first_signal: float) -> str:
    """A stable id: the same first signal, redelivered, gives the same id."""
    raw = f"{playbook}|{target}|{first_signal!r}".encode()
    return "inc-" + hashlib.sha256(raw).hexdigest()[:12]


def iso_time(ts: float) -> str:
    """``1700000000`` -> ``2023-11-14T22:13:20Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True, eq=False)
class Incident:
    """One incident's working state (mutable; the engine publishes snapshots, not these)."""

    id: str
    playbook: LoadedPlaybook
    guardrails: EffectiveGuardrails
    target: TargetRef
    state: IncidentState
    started_at: float
    signal: Signal
    last_point: float | None = None  # clock time of the last matching non-alert signal
    alerts: dict[str, float] = field(default_factory=dict)  # firing alert fingerprint -> last notified
    cleared_at: float | None = None  # when the last active alert resolved
    signals: int = 0
    held: str | None = None
    retry_at: float | None = None
    acted_at: float | None = None
    phase: str = "actions"
    step_index: int = 0
    waiting_key: str | None = None

    def condition_last(self, now: float) -> float:
        """The last time the condition was seen to hold (``now`` while an alert is firing)."""
        for fp, notified in list(self.alerts.items()):
            if now - notified >= ALERT_STALE_AFTER:
                del self.alerts[fp]
                self.cleared_at = max(self.cleared_at or -math.inf, notified + ALERT_STALE_AFTER)
        if self.alerts:
            return now
        return max(self.last_point or -math.inf, self.cleared_at or -math.inf, self.started_at)

    def lapsed(self, now: float) -> bool:
        """Whether the condition has been silent for ``maxGap`` or longer."""
        return now - self.condition_last(now) >= self.playbook.model.spec.trigger.max_gap

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "id": self.id,
            "playbook": self.playbook.name,
            "target": self.target.to_dict(),
            "state": self.state.value,
            "startedAt": self.started_at,
            "signals": self.signals,
            "heldBy": self.held,
            "actedAt": self.acted_at,
        }


class PlaybookEngine:
    """Matches signals to playbooks and drives incidents; a SignalSink for the agent's engine.

    Thread-safe: signals (``emit``), timers (``tick``), late results (``report``) and reloads
    (``replace_playbooks``) may come from different threads.
    """

    name = "playbooks"

    def __init__(
        self,
        playbooks: PlaybookSet,
        executor: Executor,
        clock: Clock,
        audit: AuditSink,
        *,
        defaults: GuardrailDefaults | None = None,
        facts: TargetFacts | None = None,
        metrics: AgentMetrics | None = None,
        max_incidents: int = 10_000,
    ) -> None:
        self.executor = executor
        self.clock = clock
        self.audit = audit
        self.defaults = defaults if defaults is not None else GuardrailDefaults()
        self.facts: TargetFacts = facts if facts is not None else NoFacts()
        self.metrics = metrics
        self.max_incidents = max_incidents
        self.ledger = ActionLedger()
        self._lock = threading.RLock()
        self._set = EMPTY_SET
        self._guardrails: dict[str, EffectiveGuardrails] = {}
        self._active: dict[tuple[str, TargetRef], Incident] = {}
        self._in_flight: dict[TargetRef, Incident] = {}
        self._waiting: dict[str, Incident] = {}
        self._rejections: dict[tuple[str, str], float] = {}
        self.replace_playbooks(playbooks)

    # ------------------------------------------------------------------ SignalSink

    def emit(self, signals: Sequence[Signal]) -> None:
        """Match ``signals`` against the playbooks, then advance every incident."""
        with self._lock:
            now = self.clock.now()
            for signal in signals:
                try:
                    self._on_signal(signal, now)
                except Exception:  # a bug on one signal must not stop the agent's loop
                    self._internal_error("signal")
            try:
                self._evaluate(now)
            except Exception:
                self._internal_error("evaluate")

    def _internal_error(self, where: str) -> None:
        log.exception("playbook engine error in %s", where)
        if self.metrics is not None:
            self.metrics.sink_errors.labels(self.name).inc()

    def flush(self) -> None:
        """Nothing is buffered: signals are handled in ``emit``."""

    def close(self) -> None:
        """Nothing to release; open incidents stay as they are."""

    # ------------------------------------------------------------------ timers, results, reloads

    def tick(self) -> None:
        """Advance incidents on the clock alone: ``for`` windows, silences, verification, holds."""
        with self._lock:
            self._evaluate(self.clock.now())

    def next_deadline(self) -> float | None:
        """The earliest future time at which :meth:`tick` may change something; None if none."""
        with self._lock:
            now = self.clock.now()
            times: list[float] = []
            for inc in self._active.values():
                times.extend(self._deadlines(inc, now))
            future = [t for t in times if t > now]
            return min(future) if future else None

    def report(self, result: ActionResult) -> None:
        """The final result of a request that was pending (approval); resumes its incident."""
        with self._lock:
            inc = self._waiting.pop(result.key, None)
            if inc is None:
                log.warning("result for unknown or finished request %s ignored", result.key)
                return
            inc.waiting_key = None
            now = self.clock.now()
            step = self._steps(inc)[inc.step_index]
            self._after_result(inc, step.action, step.params, result, now)
            self._run(inc, now)

    def replace_playbooks(self, playbooks: PlaybookSet) -> None:
        """Swap the playbook set atomically.

        Incidents that have not acted yet and whose playbook was removed or changed end expired
        (the new definition starts afresh with the next signal); incidents acting or verifying
        finish under the definition they started with.
        """
        with self._lock:
            self._set = playbooks
            self._guardrails = {p.name: effective(p.model.spec.guardrails, self.defaults) for p in playbooks}
            now = self.clock.now()
            for key, inc in list(self._active.items()):
                if inc.state not in {IncidentState.PENDING, IncidentState.FIRING, IncidentState.SUPPRESSED}:
                    continue
                new = playbooks.get(inc.playbook.name)
                if new is not None and new.model == inc.playbook.model:
                    inc.playbook = new
                    continue
                del self._active[key]
                if inc.state is not IncidentState.SUPPRESSED:
                    why = "removed" if new is None else "changed"
                    self._transition(inc, IncidentState.EXPIRED, f"playbook {why} by a reload", now)

    @property
    def playbooks(self) -> PlaybookSet:
        """The active set."""
        return self._set

    def incidents(self) -> list[dict[str, object]]:
        """Snapshots of the open incidents."""
        with self._lock:
            return [inc.snapshot() for inc in self._active.values()]

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signal: Signal, now: float) -> None:
        is_alert = signal.kind is SignalKind.ALERT
        resolved = is_alert and signal.details.get("status") == "resolved"
        for pb in self._set:
            if not pb.matches(signal):
                continue
            trigger = pb.model.spec.trigger
            if not resolved and signal.score < trigger.min_score:
                continue
            if not is_alert and now - signal.timestamp > trigger.max_gap:
                self._count_rejected(pb.name, "stale")
                continue
            try:
                target = pb.resolve_target(signal)
            except TemplateError as exc:
                self._reject(pb, signal, str(exc), now)
                continue
            inc = self._active.get((pb.name, target))
            if resolved:
                if inc is not None:
                    self._alert_resolved(inc, signal, now)
                continue
            if inc is None:
                if len(self._active) >= self.max_incidents:
                    self._reject(pb, signal, f"{self.max_incidents} incidents open; refusing more", now)
                    continue
                inc = self._open(pb, target, signal, now)
            inc.signal = signal
            inc.signals += 1
            if is_alert:
                inc.alerts[str(signal.details.get("fingerprint") or signal.series)] = now
            else:
                inc.last_point = now

    def _open(self, pb: LoadedPlaybook, target: TargetRef, signal: Signal, now: float) -> Incident:
        inc = Incident(
            id=incident_id(pb.name, target, signal.timestamp),
            playbook=pb,
            guardrails=self._guardrails[pb.name],
            target=target,
            state=IncidentState.PENDING,
            started_at=now,
            signal=signal,
        )
        self._active[(pb.name, target)] = inc
        reason = f"first matching signal: {signal.kind.value} {signal.series} score {signal.score:.3g}"
        self._event(inc, None, IncidentState.PENDING, reason, now)
        return inc

    def _alert_resolved(self, inc: Incident, signal: Signal, now: float) -> None:
        inc.alerts.pop(str(signal.details.get("fingerprint") or signal.series), None)
        if inc.alerts:
            return
        inc.cleared_at = now
        # an incident opened by alerts alone ends with them; one that also saw other signals
        # ends by the usual silence of maxGap
        if inc.state in {IncidentState.PENDING, IncidentState.FIRING} and inc.last_point is None:
            self._finish(inc, IncidentState.EXPIRED, "the alert resolved before any action ran", now)

    def _reject(self, pb: LoadedPlaybook, signal: Signal, reason: str, now: float) -> None:
        self._count_rejected(pb.name, "target")
        key = (pb.name, reason)
        last = self._rejections.get(key)
        if last is not None and now - last < REJECTION_QUIET:
            return
        if len(self._rejections) > 10_000:
            self._rejections.clear()
        self._rejections[key] = now
        self._record(SignalRejected(now, pb.name, reason, signal.to_dict()))

    def _count_rejected(self, playbook: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.playbook_signals_rejected.labels(playbook, reason).inc()

    # ------------------------------------------------------------------ the state machine

    def _evaluate(self, now: float) -> None:
        for inc in sorted(self._active.values(), key=lambda i: (i.started_at, i.id)):
            self._advance(inc, now)
        ready: dict[TargetRef, list[Incident]] = defaultdict(list)
        for inc in self._active.values():
            if inc.state is IncidentState.FIRING:
                ready[inc.target].append(inc)
        for target in sorted(ready):
            contenders = sorted(ready[target], key=lambda i: (-i.playbook.priority, i.started_at, i.id))
            for inc in contenders:
                self._try_to_act(inc, now)
        self.ledger.prune(now, keep=max([g.cooldown for g in self._guardrails.values()] + [3600.0]))
        if self.metrics is not None:
            self.metrics.incidents_open.set(len(self._active))

    def _advance(self, inc: Incident, now: float) -> None:
        spec = inc.playbook.model.spec
        if inc.state is IncidentState.SUPPRESSED:
            if inc.lapsed(now):
                del self._active[(inc.playbook.name, inc.target)]
            return
        if inc.state in {IncidentState.PENDING, IncidentState.FIRING} and inc.lapsed(now):
            gap = format_seconds(spec.trigger.max_gap)
            if inc.state is IncidentState.PENDING:
                why = f"no matching signal for {gap} before for: {format_seconds(spec.trigger.for_)} elapsed"
            else:
                why = f"the condition cleared (no matching signal for {gap}) before any action ran"
            self._finish(inc, IncidentState.EXPIRED, why, now)
            return
        due = inc.started_at + spec.trigger.for_
        # firing needs the condition seen to hold once ``for`` has elapsed: a firing alert, or a
        # matching signal that arrived at or after the end of the window
        observed = bool(inc.alerts) or (inc.last_point is not None and inc.last_point >= due)
        if inc.state is IncidentState.PENDING and now >= due and observed:
            held_for = format_seconds(now - inc.started_at)
            why = (
                "fired at once (for: 0)"
                if spec.trigger.for_ == 0
                else f"matching signals held for {held_for} (for: {format_seconds(spec.trigger.for_)})"
            )
            self._transition(inc, IncidentState.FIRING, why, now)
            return
        if inc.state is IncidentState.VERIFYING:
            self._verify(inc, now)

    def _verify(self, inc: Incident, now: float) -> None:
        verify = inc.playbook.model.spec.verify
        assert inc.acted_at is not None
        quiet_since = max(inc.acted_at, inc.condition_last(now))
        resolve_at = quiet_since + verify.quiet
        deadline = inc.acted_at + verify.within
        if resolve_at <= now and resolve_at <= deadline:
            after = format_seconds(resolve_at - inc.acted_at)
            why = f"no matching signal for {format_seconds(verify.quiet)}: cleared {after} after the actions"
            self._finish(inc, IncidentState.RESOLVED, why, now)
        elif now >= deadline:
            last = inc.condition_last(now)
            seen = "an alert is still firing" if inc.alerts else f"last matching signal at {iso_time(last)}"
            why = (
                f"the condition did not clear within {format_seconds(verify.within)} of the actions "
                f"({seen}); running onFailure"
            )
            self._transition(inc, IncidentState.ESCALATED, why, now)
            inc.phase, inc.step_index = "onFailure", 0
            self._run(inc, now)

    def _try_to_act(self, inc: Incident, now: float) -> None:
        busy = self._in_flight.get(inc.target)
        if busy is not None and busy is not inc:
            owner = f"playbook {busy.playbook.name} (priority {busy.playbook.priority}, incident {busy.id})"
            if busy.playbook.priority >= inc.playbook.priority:
                why = f"{owner} is remediating this target"
                self._suppress(inc, "priority", why, now)
            else:
                self._hold(
                    inc, Verdict(False, "targetBusy", f"waiting: {owner} is remediating this target"), now
                )
            return
        verdict = self._when(inc, now)
        if verdict.allowed:
            planned = sum(1 for s in inc.playbook.model.spec.actions if changes_workload(s.params))
            verdict = check_action(inc.guardrails, self.ledger, inc.playbook.name, inc.target, planned, now)
        if not verdict.allowed:
            if verdict.guardrail == "namespaces":
                self._suppress(inc, "namespaces", verdict.reason, now)
            else:
                self._hold(inc, verdict, now)
            return
        self._start(inc, now)

    def _when(self, inc: Incident, now: float) -> Verdict:
        for cond in inc.playbook.model.spec.when:
            if cond.rollout_within is not None:
                last = self.facts.last_rollout(inc.target)
                if last is None or now - last > cond.rollout_within:
                    known = (
                        "no rollout known"
                        if last is None
                        else f"last rollout {format_seconds(now - last)} ago"
                    )
                    why = f"{cond.describe()} does not hold ({known})"
                    return Verdict(False, "when.rolloutWithin", why)
        return ALLOW

    def _hold(self, inc: Incident, verdict: Verdict, now: float) -> None:
        inc.retry_at = verdict.until
        if inc.held == verdict.guardrail:
            return
        inc.held = verdict.guardrail
        until = f" (until {iso_time(verdict.until)})" if verdict.until is not None else ""
        self._event(
            inc,
            inc.state,
            inc.state,
            f"held by {verdict.guardrail}: {verdict.reason}{until}",
            now,
            guardrail=verdict.guardrail,
        )

    def _suppress(self, inc: Incident, guardrail: str, reason: str, now: float) -> None:
        self._transition(
            inc, IncidentState.SUPPRESSED, f"suppressed by {guardrail}: {reason}", now, guardrail=guardrail
        )

    def _start(self, inc: Incident, now: float) -> None:
        inc.held, inc.retry_at = None, None
        n = len(inc.playbook.model.spec.actions)
        self._transition(inc, IncidentState.ACTING, f"guardrails passed; running {n} step(s)", now)
        self.ledger.record_remediation(inc.playbook.name, inc.target, now)
        self._in_flight[inc.target] = inc
        inc.phase, inc.step_index = "actions", 0
        self._run(inc, now)

    def _steps(self, inc: Incident) -> Sequence[ActionStep]:
        spec = inc.playbook.model.spec
        return spec.actions if inc.phase == "actions" else spec.on_failure

    def _run(self, inc: Incident, now: float) -> None:
        """Run the incident's steps from where it stands until done, failed or waiting."""
        spec = inc.playbook.model.spec
        while True:
            steps = spec.actions if inc.phase == "actions" else spec.on_failure
            if inc.step_index >= len(steps):
                break
            step = steps[inc.step_index]
            label = f"{inc.phase}[{inc.step_index}]"
            key = idempotency_key(inc.playbook.name, inc.target, inc.id, label)
            result = self._submit(inc, step.action, step.params, label, key, now)
            if result.status is ActionStatus.PENDING_APPROVAL:
                self._event(
                    inc,
                    inc.state,
                    inc.state,
                    f"{step.action} waits for approval",
                    now,
                    action=step.action,
                    step=label,
                    key=key,
                    status=result.status.value,
                )
                inc.waiting_key = key
                self._waiting[key] = inc
                return
            self._after_result(inc, step.action, step.params, result, now)
        if inc.phase == "actions":
            inc.acted_at = now
            verify = spec.verify
            if verify.clears:
                why = (
                    f"steps done; resolved once no matching signal for {format_seconds(verify.quiet)}, "
                    f"within {format_seconds(verify.within)}"
                )
                self._transition(inc, IncidentState.VERIFYING, why, now)
                self._verify(inc, now)
            else:
                self._finish(inc, IncidentState.RESOLVED, "steps done (verify.clears is false)", now)
        else:
            self._release(inc)

    def _submit(
        self, inc: Incident, action: str, params: ActionParams, label: str, key: str, now: float
    ) -> ActionResult:
        ctx = signal_context(inc.signal, inc.playbook.name)
        ctx.update(
            {
                "target.kind": inc.target.kind,
                "target.namespace": inc.target.namespace,
                "target.name": inc.target.name,
                "incident.id": inc.id,
                "incident.started": iso_time(inc.started_at),
            }
        )
        try:
            rendered = render_params(inc.playbook, params, ctx)
        except TemplateError as exc:
            return ActionResult(key, ActionStatus.FAILED, f"parameters did not render: {exc}", now)
        guardrails = inc.guardrails.for_request()
        if not changes_workload(params):
            # approval guards changes to workloads; a notification about them does not wait
            guardrails = dataclasses.replace(guardrails, approval=Approval.NONE)
        request = ActionRequest(
            key=key,
            playbook=inc.playbook.name,
            incident=inc.id,
            step=label,
            action=action,
            target=inc.target,
            params=rendered,
            guardrails=guardrails,
            time=now,
            signal_value=inc.signal.value,
            reason=f"{inc.signal.kind.value} on {inc.signal.series} value {format_number(inc.signal.value)}",
        )
        self._event(inc, inc.state, inc.state, f"submitted {action}", now, action=action, step=label, key=key)
        try:
            return self.executor.submit(request)
        except Exception as exc:  # an executor must not raise, but one that does must not stop the engine
            log.exception("executor raised for %s", key)
            return ActionResult(key, ActionStatus.FAILED, f"executor error: {exc}", now)

    def _after_result(
        self, inc: Incident, action: str, params: ActionParams, result: ActionResult, now: float
    ) -> None:
        label = f"{inc.phase}[{inc.step_index}]"
        message = f": {result.message}" if result.message else ""
        self._event(
            inc,
            inc.state,
            inc.state,
            f"{action} {result.status.value}{message}",
            now,
            action=action,
            step=label,
            key=result.key,
            status=result.status.value,
        )
        if self.metrics is not None:
            self.metrics.playbook_actions.labels(inc.playbook.name, action, result.status.value).inc()
        if result.status in DONE_STATUSES:
            if changes_workload(params) and result.status is not ActionStatus.SKIPPED:
                self.ledger.record_action(inc.playbook.name, inc.target, now)
            inc.step_index += 1
            return
        # failed
        if inc.phase == "actions":
            why = f"step {label} ({action}) failed{message}; running onFailure"
            self._transition(inc, IncidentState.FAILED, why, now)
            inc.phase, inc.step_index = "onFailure", 0
        else:
            inc.step_index += 1  # onFailure is best effort: the next step still runs

    def _finish(self, inc: Incident, state: IncidentState, reason: str, now: float) -> None:
        self._transition(inc, state, reason, now)
        self._release(inc)

    def _release(self, inc: Incident) -> None:
        if self._in_flight.get(inc.target) is inc:
            del self._in_flight[inc.target]
        key = (inc.playbook.name, inc.target)
        if self._active.get(key) is inc:
            del self._active[key]

    def _deadlines(self, inc: Incident, now: float) -> list[float]:
        spec = inc.playbook.model.spec
        out: list[float] = []
        if inc.alerts:
            out.append(min(inc.alerts.values()) + ALERT_STALE_AFTER)
        if inc.state in {IncidentState.PENDING, IncidentState.FIRING, IncidentState.SUPPRESSED}:
            if not inc.alerts:
                out.append(inc.condition_last(now) + spec.trigger.max_gap)
            if inc.state is IncidentState.PENDING and inc.alerts:
                out.append(inc.started_at + spec.trigger.for_)
            if inc.retry_at is not None:
                out.append(inc.retry_at)
        elif inc.state is IncidentState.VERIFYING and inc.acted_at is not None:
            if not inc.alerts:
                out.append(max(inc.acted_at, inc.condition_last(now)) + spec.verify.quiet)
            out.append(inc.acted_at + spec.verify.within)
        return out

    # ------------------------------------------------------------------ events

    def _transition(
        self, inc: Incident, state: IncidentState, reason: str, now: float, *, guardrail: str | None = None
    ) -> None:
        previous = inc.state
        inc.state = state
        if state is not IncidentState.FIRING:
            inc.held = None
        self._event(inc, previous, state, reason, now, guardrail=guardrail)
        if self.metrics is not None:
            self.metrics.incident_transitions.labels(inc.playbook.name, state.value).inc()

    def _event(
        self,
        inc: Incident,
        previous: IncidentState | None,
        state: IncidentState,
        reason: str,
        now: float,
        *,
        action: str | None = None,
        step: str | None = None,
        key: str | None = None,
        status: str | None = None,
        guardrail: str | None = None,
    ) -> None:
        event = IncidentEvent(
            now,
            inc.id,
            inc.playbook.name,
            inc.target,
            previous,
            state,
            reason,
            action,
            step,
            key,
            status,
            guardrail,
        )
        self._record(event)

    def _record(self, event: AuditEvent) -> None:
        try:
            self.audit.record(event)
        except Exception:  # the audit sink failing must not leave an incident half-moved
            log.exception("audit sink failed on %s", event)
            if self.metrics is not None:
                self.metrics.sink_errors.labels("audit").inc()
