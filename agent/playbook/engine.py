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
    the steps run in order, each a :class:`~remediations.types.ActionRequest` (in a
    :class:`~agent.playbook.requests.Proposal`) with an
    idempotency key (playbook, target, incident, step) sent to the executor. A step that fails
    ends the incident *failed* and runs ``onFailure``. A step waiting for approval, or running on
    the action pool's workers (the executor answers ``running``), pauses the incident until
    :meth:`PlaybookEngine.report` brings its result; meanwhile it stays in flight on its target.
``verifying``
    with ``verify.clears`` (the default): let T be the time the last step completed. The incident
    is *resolved* at the first moment at least ``verify.quiet`` has passed without a matching
    signal, counting from T or from the last matching signal after T, if that moment is no later
    than T + ``verify.within`` and every series that fired has since sent at least
    ``verify.samples`` fresh samples (under the bar: no signal). Otherwise at T + ``within`` it is
    *escalated* and ``onFailure`` runs. For alert signals the condition holds from a firing alert
    until its resolved notification. With ``clears: false`` the incident is resolved when the
    steps are done.
``stale``
    a series that fired has sent nothing for :data:`STALE_INTERVALS` of its own scrape interval:
    silence is not recovery. Fresh samples bring the incident back to verifying; at the deadline
    it is escalated.

Action classes. A playbook is corrective when it rolls back, restarts, deletes pods or retrains,
capacity when it only scales. Each class has its own budgets (see the guardrails), and the
"one remediation in flight per target" rule holds within a class: a capacity incident never
makes a fix wait. While a corrective incident is open on a target, capacity playbooks may scale
it up, never down. A corrective action of the same kind on the same target within
``repeat_window`` waits for a person's approval instead of running again. When a capacity
incident that raised replicas (or an HPA's floor) is resolved by verification (its condition
cleared), the raise is released after ``restore_after``.

A retryable failure (a conflict, a throttled or unavailable API) is tried again after the delay
the action gave, until ``verify.within`` after the incident started acting; then it fails.

Signals older than ``trigger.maxGap`` when they arrive (a backfill, a consumer far behind) open
nothing: acting on stale evidence is worse than waiting for fresh. Alert signals are exempt:
their timestamp is when the alert started, and a firing alert is current until resolved.

Incident ids derive from (playbook, target, timestamp of the first matching signal; for a signal
that stands for several samples of one batch, the oldest of them), so a signal redelivered after a
restart, or a breach found again in a successor's backfill, reopens the same incident id and the
executor's idempotency keys stop a second execution. An id is never given to two incidents: a new
episode whose first signal has the timestamp of an earlier one (an alert re-sent with the same
``startsAt`` after it was resolved) gets the next id in sequence. A step skipped because its key had
already executed is not a remediation: it starts no cooldown and spends no budget.

With decisions taken from the signals topic, each incident belongs to the signals partition its
signals come from (its ``origin``). :meth:`PlaybookEngine.hand_over` lets go of a partition's
incidents and returns what its next owner needs; :meth:`PlaybookEngine.take_over` goes on with
them there, asking again for a step whose outcome had not come back (agent/handover.py carries
them between replicas; agent/playbook/incident.py is their form).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from agent.audit import AuditSink
from agent.clock import Clock
from agent.decisions import explain_signal
from agent.metrics import AgentMetrics
from agent.playbook.actions import ActionParams, action_class, changes_workload, playbook_class
from agent.playbook.events import (
    AuditEvent,
    IncidentEvent,
    IncidentState,
    SignalRejected,
)
from agent.playbook.guardrails import (
    ALERTS,
    ALLOW,
    SIGNALS,
    ActionLedger,
    EffectiveGuardrails,
    GuardrailDefaults,
    Verdict,
    check_action,
    effective,
    format_seconds,
    guardrail_values,
    values_text,
)
from agent.playbook.incident import ALERT_STALE_AFTER, HandoverError, Incident, freeze, thaw
from agent.playbook.loader import EMPTY_SET, LoadedPlaybook, PlaybookSet, render_params, signal_context
from agent.playbook.models import ActionStep
from agent.playbook.requests import DONE_STATUSES, LATER_STATUSES, Approval, Executor, Proposal
from agent.playbook.templating import TemplateError, format_number
from agent.playbook.vetting import vet
from detectors.freshness import Seen
from detectors.series import SeriesKey
from detectors.signal import Signal, SignalKind
from remediations.registry import make_request
from remediations.state import RecordedAction, finite_number
from remediations.types import ActionClass, ActionResult, ActionStatus, SignalFacts, Target, idempotency_key

log = logging.getLogger("aiops.playbooks")

#: The same rejection (playbook, reason) is audited at most once per this long.
REJECTION_QUIET = 300.0
#: A series silent for this many of its scrape intervals is stale.
STALE_INTERVALS = 3.0
#: How long incident ids and a target's incident history are remembered.
MEMORY = 86400.0
#: Most (playbook, condition, target) entries the ``withoutSignal`` conditions remember.
MAX_ABSENT = 100_000
#: Most incident ids of one signals partition handed over with it (the newest).
MAX_HANDED_IDS = 1000
#: States in which an incident holds its target's slot for its class.
BUSY = frozenset(
    {
        IncidentState.ACTING,
        IncidentState.VERIFYING,
        IncidentState.STALE,
        IncidentState.FAILED,
        IncidentState.ESCALATED,
    }
)
#: States in which an incident runs steps (its actions, or onFailure's).
STEPPING = frozenset({IncidentState.ACTING, IncidentState.FAILED, IncidentState.ESCALATED})
#: A retryable failure without a delay of its own is tried again after this long.
RETRY_DELAY = 30.0


class Freshness(Protocol):
    """When a series last reported and how often: the detector bank's :class:`SeriesFreshness`, or
    with decisions from the signals topic :class:`~agent.freshness.FreshnessView` (the bank, and
    the records of the replicas that detect the other series)."""

    def seen(self, key: SeriesKey) -> Seen | None:
        """The series' freshness; None for a series never seen."""
        ...


class TargetFacts(Protocol):
    """What the engine may ask about a target: for ``when`` conditions, and what the target's own
    records say the agent did (they survive the agent's restarts, unlike its memory)."""

    def last_rollout(self, target: Target) -> float | None:
        """When the target's last rollout started, or None when unknown or never."""
        ...

    def last_rollback(self, target: Target) -> float | None:
        """When the agent last rolled the target back (its ``aiops.dev/rollbacks``), or None."""
        ...

    def actions_on(self, target: Target) -> Sequence[RecordedAction] | None:
        """The actions the agent recorded on the target (its ``aiops.dev/actions``); None when the
        record cannot be read."""
        ...

    def actions_by_agent(self) -> Sequence[RecordedAction] | None:
        """The agent's actions of the last hour on every target (the agent-wide record); None when
        it cannot be read."""
        ...


class NoFacts:
    """Knows nothing: every ``when`` condition holds back its playbook."""

    def last_rollout(self, target: Target) -> float | None:
        """Unknown."""
        return None

    def last_rollback(self, target: Target) -> float | None:
        """Unknown."""
        return None

    def actions_on(self, target: Target) -> Sequence[RecordedAction] | None:
        """None known."""
        return ()

    def actions_by_agent(self) -> Sequence[RecordedAction] | None:
        """None known."""
        return ()


class RecordedFacts:
    """Facts given by hand: for tests and ``aiops playbook test``."""

    def __init__(self) -> None:
        self._rollouts: dict[Target, float] = {}

    def record_rollout(self, target: Target, when: float) -> None:
        """``target`` rolled out at ``when``."""
        self._rollouts[target] = max(when, self._rollouts.get(target, when))

    def last_rollout(self, target: Target) -> float | None:
        """The latest recorded rollout."""
        return self._rollouts.get(target)

    def last_rollback(self, target: Target) -> float | None:
        """None: rollbacks are what the engine itself records in these runs."""
        return None

    def actions_on(self, target: Target) -> Sequence[RecordedAction] | None:
        """None: actions are what the engine itself records in these runs."""
        return ()

    def actions_by_agent(self) -> Sequence[RecordedAction] | None:
        """None: actions are what the engine itself records in these runs."""
        return ()


def _entries(handed: Mapping[str, Any], name: str, kind: type[Any]) -> Any:
    """``handed[name]`` when it is a ``kind``, else an empty one."""
    value = handed.get(name)
    return value if isinstance(value, kind) else kind()


def first_signal_time(signal: Signal, max_gap: float) -> float:
    """When ``signal``'s evidence began: its ``since`` (the oldest of the samples of one batch it
    stands for, :class:`~detectors.bank.DetectorBank`), if that is a time within ``max_gap``
    before it, else its own timestamp. Signalled sample by sample or in a batch (a backfill, a
    successor replaying from a checkpoint), one breach then opens the same incident id."""
    since = signal.details.get("since")
    if finite_number(since) and signal.timestamp - max_gap <= since <= signal.timestamp:
        return float(since)
    return signal.timestamp


def incident_id(playbook: str, target: Target, first_signal: float) -> str:
    """A stable id: the same first signal, redelivered, gives the same id."""
    raw = f"{playbook}|{target}|{first_signal!r}".encode()
    return "inc-" + hashlib.sha256(raw).hexdigest()[:12]


def iso_time(ts: float) -> str:
    """``1700000000`` -> ``2023-11-14T22:13:20Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


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
        freshness: Freshness | None = None,
        max_alert_incidents: int = 1_000,
    ) -> None:
        self.executor = executor
        self.freshness = freshness
        """Where fresh samples are counted; None: the engine sees signals only (quiet = cleared)."""
        self.clock = clock
        self.audit = audit
        self.defaults = defaults if defaults is not None else GuardrailDefaults()
        self.facts: TargetFacts = facts if facts is not None else NoFacts()
        self.metrics = metrics
        self.max_incidents = max_incidents
        self.max_alert_incidents = max_alert_incidents
        """Incidents opened by alerts hold at most this many of the slots: a flood of alerts
        cannot take the slots (or the budgets) the detectors' incidents need."""
        self.ledger = ActionLedger()
        self._lock = threading.RLock()
        self._set = EMPTY_SET
        self._guardrails: dict[str, EffectiveGuardrails] = {}
        self._active: dict[tuple[str, Target], Incident] = {}
        self._in_flight: dict[tuple[Target, ActionClass], Incident] = {}
        self._waiting: dict[str, Incident] = {}
        self._releasing: dict[str, tuple[Incident, str]] = {}  # restores running: key -> (incident, action)
        self._rejections: dict[tuple[str, str], float] = {}
        self._ids: dict[str, float] = {}  # every incident id given out, with when (bounded by MEMORY)
        self._history: dict[Target, list[tuple[float, float]]] = defaultdict(list)
        self._restores: list[tuple[float, Incident]] = []
        self._open_by_source: dict[str, int] = defaultdict(int)
        self._id_origin: dict[str, str] = {}  # the signals partition of each id given out there
        self._changed: set[str] = set()  # signals partitions whose incidents changed since asked
        # (playbook, index in its `when`, target) -> (time of the newest signal a withoutSignal
        # condition names, when it stops counting); oldest update first
        self._absent: dict[tuple[str, int, Target], tuple[float, float]] = {}
        self.replace_playbooks(playbooks)

    # ------------------------------------------------------------------ SignalSink

    def emit(self, signals: Sequence[Signal], origin: str | None = None) -> None:
        """Match ``signals`` against the playbooks, then advance every incident.

        ``origin`` names the signals partition they came from, when decisions are taken from the
        signals topic: the incidents they open or join belong to it and move with it (see
        :meth:`hand_over` and :meth:`take_over`).
        """
        with self._lock:
            now = self.clock.now()
            for signal in signals:
                try:
                    self._on_signal(signal, now, origin)
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
            times.extend(t for t, _ in self._restores)
            future = [t for t in times if t > now]
            return min(future) if future else None

    def report(self, result: ActionResult) -> None:
        """The final result of a request answered later (approval, the action pool); resumes its
        incident."""
        with self._lock:
            now = self.clock.now()
            released = self._releasing.pop(result.key, None)
            if released is not None:
                self._released(released, result, now)
                return
            inc = self._waiting.pop(result.key, None)
            if inc is None:
                log.warning("result for unknown or finished request %s ignored", result.key)
                return
            inc.waiting_key = None
            step = self._steps(inc)[inc.step_index]
            if self._take(inc, step, result, now):
                self._run(inc, now)

    def replace_playbooks(self, playbooks: PlaybookSet) -> None:
        """Swap the playbook set atomically.

        Incidents that have not acted yet and whose playbook was removed or changed end expired
        (the new definition starts afresh with the next signal); incidents acting or verifying
        finish under the definition they started with.
        """
        with self._lock:
            # what a withoutSignal condition saw stays only while the playbook's `when` is the same
            same = {
                p.name
                for p in playbooks
                if (o := self._set.get(p.name)) and o.model.spec.when == p.model.spec.when
            }
            self._absent = {k: v for k, v in self._absent.items() if k[0] in same}
            self._set = playbooks
            self._guardrails = {p.name: effective(p.model.spec.guardrails, self.defaults) for p in playbooks}
            now = self.clock.now()
            for inc in list(self._active.values()):
                if inc.state not in {IncidentState.PENDING, IncidentState.FIRING, IncidentState.SUPPRESSED}:
                    continue
                new = playbooks.get(inc.playbook.name)
                if new is not None and new.model == inc.playbook.model:
                    inc.playbook = new
                    continue
                self._drop(inc)
                if inc.state is not IncidentState.SUPPRESSED:
                    why = "removed" if new is None else "changed"
                    self._transition(inc, IncidentState.EXPIRED, f"playbook {why} by a reload", now)

    @property
    def playbooks(self) -> PlaybookSet:
        """The active set."""
        return self._set

    def vet(self, proposal: Proposal) -> str | None:
        """Why this engine, with its playbooks and guardrails as they are now, would not have
        proposed ``proposal`` (a request read back from an approval record); None when it would."""
        return vet(proposal, self._set, self.defaults)  # the set is swapped whole: no lock needed

    def incidents(self) -> list[dict[str, object]]:
        """Snapshots of the open incidents."""
        with self._lock:
            return [inc.snapshot() for inc in self._active.values()]

    # ------------------------------------------------------------------ hand-over

    def _touch(self, inc: Incident) -> None:
        if inc.origin is not None:
            self._changed.add(inc.origin)

    def touch(self, origin: str) -> None:
        """Count signals partition ``origin`` as changed (its record is still to be written)."""
        with self._lock:
            self._changed.add(origin)

    def changed(self) -> set[str]:
        """The signals partitions whose incidents changed since the last call (their hand-over
        record is out of date)."""
        with self._lock:
            changed, self._changed = self._changed, set()
            return changed

    def export(self, origin: str) -> dict[str, Any]:
        """What another replica needs to go on with the incidents of signals partition ``origin``:
        the open ones, the resolved ones whose raise is still to be released, and the ids given out
        there (so that none is given out again), as JSON data."""
        with self._lock:
            ids = [(t, i) for i, t in self._ids.items() if self._id_origin.get(i) == origin]
            return {
                "incidents": [freeze(inc) for inc in self._active.values() if inc.origin == origin],
                "releases": [
                    {"due": due, "incident": freeze(inc)}
                    for due, inc in self._restores
                    if inc.origin == origin
                ],
                "ids": {i: t for t, i in sorted(ids)[-MAX_HANDED_IDS:]},
            }

    def hand_over(self, origin: str) -> dict[str, Any]:
        """Let go of the incidents of signals partition ``origin``; return their :meth:`export`,
        taken at the same moment, for the partition's new owner to go on with."""
        with self._lock:
            exported = self.export(origin)
            now = self.clock.now()
            gone = [inc for inc in self._active.values() if inc.origin == origin]
            for inc in gone:
                self._event(inc, inc.state, inc.state, f"handed over with signals partition {origin}", now)
                if inc.waiting_key is not None:
                    self._waiting.pop(inc.waiting_key, None)
                if self._in_flight.get((inc.target, inc.cls)) is inc:
                    del self._in_flight[(inc.target, inc.cls)]
                self._drop(inc)
            self._restores = [(t, inc) for t, inc in self._restores if inc.origin != origin]
            for ident in [i for i, o in self._id_origin.items() if o == origin]:
                del self._id_origin[ident]
            self._changed.discard(origin)
            if self.metrics is not None:
                self.metrics.incidents_handed_over.inc(len(gone))
                self.metrics.incidents_open.set(len(self._active))
            return exported

    def take_over(self, origin: str, handed: Mapping[str, Any]) -> int:
        """Go on with the incidents of signals partition ``origin`` that its previous owner
        exported; return how many were restored. An entry that cannot be taken in (another
        version, its playbook gone or changed, damaged, or the same incident already open here)
        is dropped with a warning."""
        with self._lock:
            now = self.clock.now()
            for ident, when in _entries(handed, "ids", dict).items():
                if isinstance(when, int | float) and not isinstance(when, bool):
                    self._ids.setdefault(str(ident), float(when))
                    self._id_origin[str(ident)] = origin
            restored: list[Incident] = []
            for data in _entries(handed, "incidents", list):
                inc = self._thaw(origin, data)
                if inc is None:
                    continue
                key = (inc.playbook.name, inc.target)
                if key in self._active:
                    self._refused(origin, "open", f"incident {inc.id}: {key} has an incident open here")
                    continue
                self._active[key] = inc
                self._open_by_source[inc.source] += 1
                self._ids[inc.id] = self._ids.get(inc.id, inc.started_at)
                self._id_origin[inc.id] = origin
                if inc.state in BUSY and (inc.target, inc.cls) not in self._in_flight:
                    self._in_flight[(inc.target, inc.cls)] = inc
                restored.append(inc)
                why = f"taken over with signals partition {origin}; started {iso_time(inc.started_at)}"
                self._event(inc, inc.state, inc.state, why, now)
            for item in _entries(handed, "releases", list):
                due = item.get("due") if isinstance(item, dict) else None
                inc = self._thaw(origin, item.get("incident") if isinstance(item, dict) else None)
                if inc is not None and isinstance(due, int | float):
                    self._restores.append((float(due), inc))
            if self.metrics is not None:
                self.metrics.incidents_restored.inc(len(restored))
                self.metrics.incidents_open.set(len(self._active))
            for inc in restored:  # a step the previous owner was running or waiting on is asked again
                if inc.state in STEPPING and (inc.waiting_key is not None or inc.retry_at is None):
                    inc.waiting_key = None
                    try:
                        self._run(inc, now)
                    except Exception:
                        self._internal_error("take_over")
            self._changed.discard(origin)
            return len(restored)

    def _thaw(self, origin: str, data: object) -> Incident | None:
        try:
            name = data.get("playbook") if isinstance(data, dict) else None
            pb = self._set.get(name) if isinstance(name, str) else None
            cls = (
                playbook_class(s.params for s in pb.model.spec.actions)
                if pb is not None
                else ActionClass.CORRECTIVE
            )
            inc = thaw(data, self._set, self._guardrails, cls)
        except HandoverError as exc:
            self._refused(origin, "incompatible", str(exc))
            return None
        inc.origin = origin
        for key in inc.series:  # fresh samples are counted from here (the counts were the other replica's)
            seen = self.freshness.seen(key) if self.freshness is not None else None
            inc.series[key] = seen.count if seen is not None else 0
        return inc

    def _refused(self, origin: str, reason: str, why: str) -> None:
        log.warning("hand-over of signals partition %s: incident not restored: %s", origin, why)
        if self.metrics is not None:
            self.metrics.incidents_not_restored.labels(reason).inc()

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signal: Signal, now: float, origin: str | None = None) -> None:
        self._remember_absent(signal, now)
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
                source = ALERTS if is_alert else SIGNALS
                cap = self.max_alert_incidents if is_alert else self.max_incidents
                if self._open_by_source[source] >= cap:
                    self._reject(pb, signal, f"{cap} incidents from {source} open; refusing more", now)
                    continue
                inc = self._open(pb, target, signal, now, origin)
            elif origin is not None and inc.origin != origin:  # its signals moved (the playbooks changed)
                self._touch(inc)
                inc.origin = origin
            self._touch(inc)
            inc.signal = signal
            inc.signals += 1
            if is_alert:
                inc.alerts[str(signal.details.get("fingerprint") or signal.series)] = now
            else:
                inc.last_point = now
                seen = self.freshness.seen(signal.series) if self.freshness is not None else None
                inc.series[signal.series] = seen.count if seen is not None else 0
                if inc.state is IncidentState.STALE:
                    self._transition(inc, IncidentState.VERIFYING, "fresh matching samples again", now)

    def _remember_absent(self, signal: Signal, now: float) -> None:
        """Note ``signal`` for the ``withoutSignal`` conditions it breaks, on the target each one's
        playbook resolves it to (whatever the score: the condition names a kind, not a bar)."""
        at = min(signal.timestamp, now)  # a signal stamped in the future counts from now
        for pb in self._set:
            for absence in pb.absences:
                if not absence.matches(signal) or now - at > absence.within:
                    continue
                try:
                    target = pb.resolve_target(signal)
                except TemplateError:
                    continue
                key = (pb.name, absence.index, target)
                before = self._absent.pop(key, None)
                last = max(at, before[0]) if before is not None else at
                self._absent[key] = (last, last + absence.within)
                while len(self._absent) > MAX_ABSENT:  # the oldest update goes: the condition forgets it
                    del self._absent[next(iter(self._absent))]

    def _prune_absent(self, now: float) -> None:
        while self._absent:
            key, (_, until) = next(iter(self._absent.items()))
            if until > now:
                return
            del self._absent[key]

    def _open(
        self, pb: LoadedPlaybook, target: Target, signal: Signal, now: float, origin: str | None = None
    ) -> Incident:
        base = incident_id(pb.name, target, first_signal_time(signal, pb.model.spec.trigger.max_gap))
        ident, n = base, 1
        while ident in self._ids:  # a new episode, though its first signal has an old timestamp
            n += 1
            ident = f"{base}-{n}"
        self._ids[ident] = now
        if origin is not None:
            self._id_origin[ident] = origin
        inc = Incident(
            id=ident,
            playbook=pb,
            guardrails=self._guardrails[pb.name],
            target=target,
            state=IncidentState.PENDING,
            started_at=now,
            signal=signal,
            cls=playbook_class(s.params for s in pb.model.spec.actions),
            source=ALERTS if signal.kind is SignalKind.ALERT else SIGNALS,
            origin=origin,
        )
        self._active[(pb.name, target)] = inc
        self._open_by_source[inc.source] += 1
        reason = f"first matching signal: {signal.kind.value} {signal.series} score {signal.score:.3g}"
        rule = {
            "rule": pb.model.spec.trigger.model_dump(mode="json", by_alias=True, exclude_none=True),
            "priority": pb.priority,
            "class": inc.cls.value,
            "source": inc.source,
            "signal": signal.to_dict(),
            "signals": 1,
        }
        self._event(inc, None, IncidentState.PENDING, reason, now, details=rule)
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
        ready: dict[Target, list[Incident]] = defaultdict(list)
        for inc in self._active.values():
            if inc.state is IncidentState.FIRING:
                ready[inc.target].append(inc)
        for target in sorted(ready):
            # fixes first, then by priority: a capacity incident never takes a fix's turn
            contenders = sorted(
                ready[target],
                key=lambda i: (i.cls is not ActionClass.CORRECTIVE, -i.playbook.priority, i.started_at, i.id),
            )
            for inc in contenders:
                if inc.state is IncidentState.FIRING:  # not suppressed by a contender that just acted
                    self._try_to_act(inc, now)
        self._run_restores(now)
        keep = max([g.cooldown for g in self._guardrails.values()] + [3600.0])
        fixes = max([g.repeat_window for g in self._guardrails.values()] + [MEMORY])
        self.ledger.prune(now, keep=keep, keep_fixes=fixes)
        self._forget(now)
        self._prune_absent(now)
        if self.metrics is not None:
            self.metrics.incidents_open.set(len(self._active))

    def _forget(self, now: float) -> None:
        """Drop ids and incident history older than :data:`MEMORY` (bounded memory)."""
        if len(self._ids) > 1000:
            for ident in [i for i, t in self._ids.items() if t <= now - MEMORY]:
                del self._ids[ident]
                self._id_origin.pop(ident, None)
        for target in list(self._history):
            spans = self._history[target]
            if spans and spans[0][1] > now - MEMORY:
                # spans are appended as incidents end, oldest first: none has expired yet
                continue
            kept = [(a, b) for a, b in spans if b > now - MEMORY]
            if kept:
                self._history[target] = kept
            else:
                del self._history[target]

    def _advance(self, inc: Incident, now: float) -> None:
        spec = inc.playbook.model.spec
        if inc.state is IncidentState.SUPPRESSED:
            if inc.lapsed(now):
                self._drop(inc)
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
        if inc.state in {IncidentState.VERIFYING, IncidentState.STALE}:
            self._verify(inc, now)
        elif inc.state is IncidentState.ACTING and inc.retry_at is not None and now >= inc.retry_at:
            inc.retry_at = None
            self._run(inc, now)

    def _evidence(self, inc: Incident, now: float) -> tuple[list[str], list[str]]:
        """What stands between the incident and resolution: (stale series, series short of samples)."""
        if self.freshness is None:
            return [], []
        need = inc.playbook.model.spec.verify.samples
        stale: list[str] = []
        short: list[str] = []
        for key, at_match in inc.series.items():
            seen = self.freshness.seen(key)
            if seen is None or seen.stale(now, STALE_INTERVALS):
                gone = "never reported" if seen is None else f"silent since {iso_time(seen.last)}"
                interval = "" if seen is None else f", interval {format_seconds(seen.interval)}"
                stale.append(f"{key} {gone}{interval}")
            elif seen.count - at_match < need:
                short.append(f"{key} {seen.count - at_match} of {need} fresh samples")
        return stale, short

    def _evidence_facts(self, inc: Incident, now: float) -> list[dict[str, Any]]:
        """Per series that fired: the fresh samples since its last matching one, and when it last
        reported (the verification evidence of the decision record)."""
        if self.freshness is None:
            return []
        need = inc.playbook.model.spec.verify.samples
        out: list[dict[str, Any]] = []
        for key, at_match in list(inc.series.items())[:20]:
            seen = self.freshness.seen(key)
            out.append(
                {
                    "series": str(key),
                    "freshSamples": None if seen is None else seen.count - at_match,
                    "need": need,
                    "lastSeen": None if seen is None else seen.last,
                    "stale": seen is None or seen.stale(now, STALE_INTERVALS),
                }
            )
        return out

    def _verify(self, inc: Incident, now: float) -> None:
        verify = inc.playbook.model.spec.verify
        assert inc.acted_at is not None
        quiet_since = max(inc.acted_at, inc.condition_last(now))
        resolve_at = quiet_since + verify.quiet
        deadline = inc.acted_at + verify.within
        stale, short = self._evidence(inc, now)
        done = stale or now >= min(resolve_at, deadline)
        evidence = {"evidence": self._evidence_facts(inc, now)} if done else {}
        if stale and inc.state is not IncidentState.STALE:
            why = f"no fresh samples: {'; '.join(stale)}; silence is not recovery"
            self._transition(inc, IncidentState.STALE, why, now, details=evidence)
        elif not stale and inc.state is IncidentState.STALE:
            self._transition(inc, IncidentState.VERIFYING, "the series report again", now)
        if resolve_at <= now and resolve_at <= deadline and not stale and not short:
            after = format_seconds(resolve_at - inc.acted_at)
            why = f"no matching signal for {format_seconds(verify.quiet)}: cleared {after} after the actions"
            if inc.series and self.freshness is not None:
                why += f", on {verify.samples}+ fresh samples of each series that fired"
            self._finish(inc, IncidentState.RESOLVED, why, now, details=evidence)
        elif now >= deadline:
            last = inc.condition_last(now)
            if stale:
                seen = f"stale: {'; '.join(stale)}"
            elif resolve_at <= deadline and short:
                seen = f"too few fresh samples: {'; '.join(short)}"
            else:
                seen = (
                    "an alert is still firing" if inc.alerts else f"last matching signal at {iso_time(last)}"
                )
            why = (
                f"the condition did not clear within {format_seconds(verify.within)} of the actions "
                f"({seen}); running onFailure"
            )
            self._transition(inc, IncidentState.ESCALATED, why, now, details=evidence)
            inc.phase, inc.step_index = "onFailure", 0
            self._run(inc, now)

    def _try_to_act(self, inc: Incident, now: float) -> None:
        busy = self._in_flight.get((inc.target, inc.cls))
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
            verdict = self._recall(inc.target, now)
        if verdict.allowed:
            planned = sum(1 for s in inc.playbook.model.spec.actions if changes_workload(s.params))
            verdict = check_action(
                inc.guardrails, self.ledger, inc.playbook.name, inc.target, planned, now, inc.cls, inc.source
            )
        if not verdict.allowed:
            if verdict.guardrail in {"namespaces", "protected"}:
                self._suppress(inc, verdict.guardrail, verdict.reason, now)
            else:
                self._hold(inc, verdict, now)
            return
        self._start(inc, now)

    def _recall(self, target: Target, now: float) -> Verdict:
        """Count what the durable records say was done (before a restart, or by another replica);
        held while a record cannot be read: the cooldowns and budgets cannot be judged without it."""
        on_target, by_agent = self.facts.actions_on(target), self.facts.actions_by_agent()
        recalled = self.ledger.recall(on_target or (), now, target)
        recalled += self.ledger.recall(by_agent or (), now)
        if recalled:
            log.info("%d earlier action(s) recalled from the records for %s", recalled, target)
        if on_target is None or by_agent is None:
            where = f"on {target}" if on_target is None else "agent-wide"
            reason = f"the actions recorded {where} cannot be read; cooldowns and budgets need them"
            return Verdict(False, "records", reason, now + RETRY_DELAY)
        return ALLOW

    def _when(self, inc: Incident, now: float) -> Verdict:
        inc.when_checked = []
        for index, cond in enumerate(inc.playbook.model.spec.when):
            if cond.without_signal is not None:
                within = cond.without_signal.within
                seen = self._absent.get((inc.playbook.name, index, inc.target))
                last = seen[0] if seen is not None and now - seen[0] <= within else None
                inc.when_checked.append(
                    {"name": "when.withoutSignal", "limit": within, "lastSignal": last, "ok": last is None}
                )
                if last is not None:
                    why = f"{cond.describe()} does not hold (the last one {format_seconds(now - last)} ago)"
                    return Verdict(False, "when.withoutSignal", why, last + within)
            if cond.restarted_within is not None:
                recalled = self._recall(inc.target, now)  # a restart before the agent's own start
                if not recalled.allowed:
                    return recalled
                restarted = self.ledger.last_fix(inc.target, "restart")
                ok = (
                    restarted is not None
                    and restarted < inc.started_at
                    and inc.started_at - restarted <= cond.restarted_within
                )
                inc.when_checked.append(
                    {
                        "name": "when.restartedWithin",
                        "limit": cond.restarted_within,
                        "lastRestart": restarted,
                        "ok": ok,
                    }
                )
                if not ok:
                    known = (
                        "no restart by the agent known"
                        if restarted is None
                        else f"last restart {format_seconds(abs(inc.started_at - restarted))} "
                        + ("after the incident began" if restarted >= inc.started_at else "before it")
                    )
                    why = f"{cond.describe()} does not hold ({known})"
                    return Verdict(False, "when.restartedWithin", why)
            if cond.rollout_within is not None:
                last = self.facts.last_rollout(inc.target)
                inc.when_checked.append(
                    {
                        "name": "when.rolloutWithin",
                        "limit": cond.rollout_within,
                        "lastRollout": last,
                        "ok": last is not None and now - last <= cond.rollout_within,
                    }
                )
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
        values = (
            guardrail_values(
                inc.guardrails, self.ledger, inc.playbook.name, inc.target, now, inc.cls, inc.source
            )
            + inc.when_checked
        )
        checked = (
            f"{values_text(values, now)}; {inc.cls.value} budgets from {inc.source}, "
            "no other remediation of the target"
        )
        self._transition(
            inc,
            IncidentState.ACTING,
            f"guardrails passed ({checked}); running {n} step(s)",
            now,
            details={"guardrails": values},
        )
        self._in_flight[(inc.target, inc.cls)] = inc
        inc.phase, inc.step_index = "actions", 0
        inc.acting_since = now
        # one remediation per target and class decides an episode: the contenders of equal or
        # lower priority are suppressed now, even if this one finishes at once (clears: false)
        owner = f"playbook {inc.playbook.name} (priority {inc.playbook.priority}, incident {inc.id})"
        for other in list(self._active.values()):
            if (
                other is not inc
                and other.target == inc.target
                and other.cls is inc.cls
                and other.state is IncidentState.FIRING
                and other.playbook.priority <= inc.playbook.priority
            ):
                self._suppress(other, "priority", f"{owner} is remediating this target", now)
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
            if not self._take(inc, step, result, now):
                return
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

    def _take(self, inc: Incident, step: ActionStep, result: ActionResult, now: float) -> bool:
        """Apply a step's result; False when the incident waits (a retry, an approval, the pool)."""
        if self._retry(inc, step.action, result, now):
            return False
        if result.status in LATER_STATUSES:
            if result.status is ActionStatus.PENDING_APPROVAL:
                self._event(
                    inc,
                    inc.state,
                    inc.state,
                    f"{step.action} waits for approval",
                    now,
                    action=step.action,
                    step=f"{inc.phase}[{inc.step_index}]",
                    key=result.key,
                    status=result.status.value,
                )
            # running: it stays in flight on its target until the outcome is reported
            inc.waiting_key = result.key
            self._waiting[result.key] = inc
            return False
        self._after_result(inc, step.action, step.params, result, now)
        return True

    def _retry(self, inc: Incident, action: str, result: ActionResult, now: float) -> bool:
        """Schedule a retryable failure again while the incident's deadline allows; True if so."""
        if result.status is not ActionStatus.FAILED or not result.retryable:
            return False
        delay = result.retry_after
        at = now + (delay if delay is not None and delay > 0 else RETRY_DELAY)
        started = inc.acting_since if inc.acting_since is not None else now
        if at > started + inc.playbook.model.spec.verify.within:
            return False
        inc.retry_at = at
        self._event(
            inc,
            inc.state,
            inc.state,
            f"{action} failed and may succeed later: trying again at {iso_time(at)} ({result.message})",
            now,
            action=action,
            key=result.key,
            status="retry",
        )
        return True

    def _open_corrective(self, inc: Incident) -> bool:
        """Whether another incident on the same target fixes it right now (capacity may not scale down)."""
        return any(
            o is not inc
            and o.target == inc.target
            and o.cls is ActionClass.CORRECTIVE
            and o.state
            in {IncidentState.FIRING, IncidentState.ACTING, IncidentState.VERIFYING, IncidentState.STALE}
            for o in self._active.values()
        )

    def _submit(
        self,
        inc: Incident,
        action: str,
        params: ActionParams,
        label: str,
        key: str,
        now: float,
        *,
        restore: bool = False,
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
        cls = action_class(params)
        g = inc.guardrails
        try:
            rendered = render_params(inc.playbook, params, ctx)
            request = make_request(
                action,
                inc.target,
                rendered,
                playbook=inc.playbook.name,
                incident=inc.id,
                step=label,
                dry_run=g.dry_run,
                reason=f"{inc.signal.kind.value} on {inc.signal.series} "
                f"value {format_number(inc.signal.value)}; {explain_signal(inc.signal.to_dict())}",
                signal=SignalFacts(
                    inc.signal.value,
                    inc.signal.forecast_mean,
                    inc.signal.capacity_per_pod,
                    inc.signal.observed_peak,
                ),
                limits=g.limits(scale_down=not (cls is ActionClass.CAPACITY and self._open_corrective(inc))),
            )
        except (TemplateError, ValueError) as exc:  # a ParamsError is a ValueError naming the field
            return ActionResult(
                ActionStatus.FAILED, f"parameters did not render: {exc}", action, key, inc.target
            )
        request = dataclasses.replace(request, unhealthy=self._unhealthy(inc.target, now), restore=restore)
        # approval guards changes to workloads; a notification about them does not wait
        approval = g.approval if changes_workload(params) else Approval.NONE
        repeat = None if restore else self._repeat(inc, action, now)
        if repeat is not None:
            approval = Approval.REQUIRED
            self._event(inc, inc.state, inc.state, repeat, now, action=action, step=label, guardrail="repeat")
        proposal = Proposal(
            request, now, approval, inc.playbook.priority, inc.signal.to_dict(), source=inc.source
        )
        self._event(inc, inc.state, inc.state, f"submitted {action}", now, action=action, step=label, key=key)
        try:
            return self.executor.submit(proposal)
        except Exception as exc:  # an executor must not raise, but one that does must not stop the engine
            log.exception("executor raised for %s", key)
            return ActionResult(ActionStatus.FAILED, f"executor error: {exc}", action, key, inc.target)

    def _repeat(self, inc: Incident, action: str, now: float) -> str | None:
        """Why this corrective action escalates to a person (it ran on the target recently), or None."""
        window = inc.guardrails.repeat_window
        last = self.ledger.last_fix(inc.target, action)
        if action == "rollback":  # the Deployment's own record: it outlives the agent's memory
            recorded = self.facts.last_rollback(inc.target)
            if recorded is not None and (last is None or recorded > last):
                last = recorded
        if last is None or now - last >= window:
            return None
        return (
            f"escalated to a person: {action} already ran on {inc.target} "
            f"{format_seconds(now - last)} ago (repeat window {format_seconds(window)}); "
            "this one waits for approval"
        )

    def _unhealthy(self, target: Target, now: float) -> tuple[tuple[float, float], ...]:
        """When the target had incidents that stand for trouble (fired ones, open ones until now)."""
        spans = list(self._history.get(target, ()))
        spans += [
            (o.fired_at, now)
            for o in self._active.values()
            if o.target == target and o.fired_at is not None and _trouble(o)
        ]
        return tuple(sorted(spans))

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
            acted = result.status in {ActionStatus.EXECUTED, ActionStatus.DRY_RUN}
            if changes_workload(params) and acted:
                if not inc.remediated:
                    inc.remediated = True
                    self.ledger.record_remediation(inc.playbook.name, inc.target, now)
                self.ledger.record_action(
                    inc.playbook.name, inc.target, now, action_class(params), action, inc.source, result.key
                )
                if action_class(params) is ActionClass.CAPACITY and inc.phase == "actions":
                    inc.raised = True
            inc.step_index += 1
            return
        # failed
        if inc.phase == "actions":
            why = f"step {label} ({action}) failed{message}; running onFailure"
            self._transition(inc, IncidentState.FAILED, why, now)
            inc.phase, inc.step_index = "onFailure", 0
        else:
            inc.step_index += 1  # onFailure is best effort: the next step still runs

    def _finish(
        self,
        inc: Incident,
        state: IncidentState,
        reason: str,
        now: float,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        self._transition(inc, state, reason, now, details=details)
        # a raise is released once the condition that needed it cleared; a playbook that does not
        # verify (clears: false, e.g. scaling to a forecast) sets the level anew each time instead
        if state is IncidentState.RESOLVED and inc.raised and inc.playbook.model.spec.verify.clears:
            due = now + inc.guardrails.restore_after
            self._restores.append((due, inc))
            self._event(inc, state, state, f"what it raised is released at {iso_time(due)}", now)
        self._release(inc)

    def _release(self, inc: Incident) -> None:
        if self._in_flight.get((inc.target, inc.cls)) is inc:
            del self._in_flight[(inc.target, inc.cls)]
        if self._drop(inc) and inc.fired_at is not None and _trouble(inc):
            self._history[inc.target].append((inc.fired_at, self.clock.now()))

    def _drop(self, inc: Incident) -> bool:
        """Remove ``inc`` from the open incidents (freeing its source's slot); False if it was not open."""
        key = (inc.playbook.name, inc.target)
        if self._active.get(key) is not inc:
            return False
        del self._active[key]
        self._open_by_source[inc.source] -= 1
        return True

    def _run_restores(self, now: float) -> None:
        """Release the raises of resolved capacity incidents whose stabilisation window passed."""
        due = [(t, inc) for t, inc in self._restores if t <= now]
        if not due:
            return
        self._restores = [(t, inc) for t, inc in self._restores if t > now]
        for _, inc in due:
            step = next(
                s for s in inc.playbook.model.spec.actions if action_class(s.params) is ActionClass.CAPACITY
            )
            key = idempotency_key(inc.playbook.name, inc.target, inc.id, "restore")
            result = self._submit(inc, step.action, step.params, "restore", key, now, restore=True)
            if result.status is ActionStatus.RUNNING:
                self._releasing[key] = (inc, step.action)
            else:
                self._released((inc, step.action), result, now)

    def _released(self, release: tuple[Incident, str], result: ActionResult, now: float) -> None:
        inc, action = release
        message = f": {result.message}" if result.message else ""
        self._event(
            inc,
            inc.state,
            inc.state,
            f"release {result.status.value}{message}",
            now,
            action=action,
            step="restore",
            key=result.key,
            status=result.status.value,
        )

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
        elif inc.state in {IncidentState.VERIFYING, IncidentState.STALE} and inc.acted_at is not None:
            if not inc.alerts:
                out.append(max(inc.acted_at, inc.condition_last(now)) + spec.verify.quiet)
            out.append(inc.acted_at + spec.verify.within)
        elif inc.state is IncidentState.ACTING and inc.retry_at is not None:
            out.append(inc.retry_at)
        return out

    # ------------------------------------------------------------------ events

    def _transition(
        self,
        inc: Incident,
        state: IncidentState,
        reason: str,
        now: float,
        *,
        guardrail: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        previous = inc.state
        inc.state = state
        if state is IncidentState.FIRING and inc.fired_at is None:
            inc.fired_at = now
        if state is not IncidentState.FIRING:
            inc.held = None
        # every transition carries the evidence it was decided on: the latest matching signal
        facts = {"signal": inc.signal.to_dict(), "signals": inc.signals, **(details or {})}
        self._event(inc, previous, state, reason, now, guardrail=guardrail, details=facts)
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
        details: dict[str, Any] | None = None,
    ) -> None:
        self._touch(inc)
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
            details or {},
        )
        self._record(event)

    def _record(self, event: AuditEvent) -> None:
        try:
            self.audit.record(event)
        except Exception:  # the audit sink failing must not leave an incident half-moved
            log.exception("audit sink failed on %s", event)
            if self.metrics is not None:
                self.metrics.sink_errors.labels("audit").inc()


def _trouble(inc: Incident) -> bool:
    """Whether an incident stands for trouble on its target, so that the revision live then was
    not healthy: its playbook verifies that a condition cleared. A playbook that does not
    (``verify.clears: false``, e.g. setting the floor a demand forecast needs every few minutes)
    is routine: counted, it would leave no revision a quarter of an hour without an incident.
    """
    return inc.playbook.model.spec.verify.clears
