"""The executor: the playbook engine's proposals, through the guards, to the remediations.

:class:`KubeExecutor` implements the engine's :class:`~agent.playbook.requests.Executor`
protocol. A proposal carries a :class:`~remediations.types.ActionRequest` (validated by the
engine with the action's own parameter model) and what only the engine knows (approval, priority,
evidence); the executor answers with a :class:`~remediations.types.ActionResult`, one vocabulary
from the engine to the write.

Before any write, the guards run in this order; the first that answers decides, and every
decision is audited (:data:`GUARDS`):

1. ``idempotency``: the key was executed before (in this process or in the audit file) -> ``skipped``;
2. ``leader``: only the leader acts; others answer ``skipped`` and plan nothing;
3. ``target``: the target is read: missing -> ``failed`` naming it;
4. ``idempotency``: its ``aiops.dev/executed-keys`` annotation holds the key -> ``skipped``
   (idempotency across restarts and leader changes);
5. ``gitops``: a target managed by Argo CD or Flux is skipped (``gitops: skip``, the default),
   acted on and annotated (``annotate``), or acted on (``act``);

then the request runs: in dry run (the playbook's or the agent's guardrails) the action plans and
only an Event is written; a workload action whose plan changes nothing is a ``noop`` (audited once:
nothing is recorded ahead, no approval is asked); with approval required a pending record goes to
the approval store (:mod:`agent.approvals`: ConfigMaps shared by every replica, or a directory) and
:meth:`KubeExecutor.tick` acts on the decision (``aiops approve ID`` / ``aiops reject ID``) or
expires it after ``approval_ttl``, reporting the outcome to the engine (an approved request runs
only if the engine's ``vet``, bound with :meth:`KubeExecutor.bind`, finds it one the engine would
have proposed: a record is data anyone who may write the store can forge); otherwise a ``started``
audit record is written first (write-ahead: a crash between the write and its outcome still
leaves a record), then the action runs within the request's
:class:`~remediations.types.Limits` (replica bounds, step, the namespace allow-list, which the
action checks where it writes).

The executor never raises into the engine: any error is a ``failed`` result, audited.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from agent.approvals import (
    ApprovalError,
    ApprovalRecord,
    ApprovalsFullError,
    ApprovalState,
    ApprovalStore,
    ApprovalsUnavailableError,
    open_store,
)
from agent.audit import Audit, AuditRecord, Decision, executed_keys_from_file
from agent.clock import Clock
from agent.config import ExecutorConfig
from agent.decisions import explain_signal
from agent.leader import AlwaysLeader, LeaderState
from agent.metrics import AgentMetrics
from agent.playbook.requests import Approval, Proposal
from remediations import state as notes
from remediations.errors import (
    AlreadyExistsError,
    KubeError,
    NotFoundError,
    RemediationError,
    TemporaryKubeError,
)
from remediations.events import EventType, try_record_event
from remediations.kube import KubeClients, PatchType, api_version_of
from remediations.registry import ACTIONS
from remediations.types import (
    Action,
    ActionClass,
    ActionContext,
    ActionResult,
    ActionStatus,
    RetrainPublisher,
    Target,
    key_digest,
)

log = logging.getLogger("aiops.executor")

Obj = dict[str, Any]
Vet = Callable[[Proposal], str | None]
"""Why a request would not have been proposed (a phrase), or None: :meth:`PlaybookEngine.vet`."""

HOUR = 3600.0
#: How often settled approval records past their retention are looked for.
PRUNE_EVERY = 60.0
#: Per-target locks kept before idle ones are forgotten.
MAX_TARGET_LOCKS = 4096

#: Set on a target changed behind its GitOps controller's back (``gitops: annotate``).
GITOPS_DRIFT = notes.PREFIX + "gitops-drift"

#: Labels and annotations by which Argo CD and Flux mark what they manage, and who that is.
ARGO_INSTANCE = "argocd.argoproj.io/instance"
ARGO_TRACKING = "argocd.argoproj.io/tracking-id"
FLUX_KUSTOMIZE = "kustomize.toolkit.fluxcd.io/name"
FLUX_HELM = "helm.toolkit.fluxcd.io/name"


def gitops_manager(obj: Obj) -> str | None:
    """Who manages the object through GitOps (``argocd:APP``, ``flux-kustomization:NAME`` ...), or None."""
    labels, annotations = notes.labels_of(obj), notes.annotations_of(obj)
    marks = {**annotations, **labels}
    if ARGO_INSTANCE in marks:
        return f"argocd:{marks[ARGO_INSTANCE]}"
    if ARGO_TRACKING in annotations:
        return f"argocd:{annotations[ARGO_TRACKING].split(':', 1)[0]}"
    if FLUX_KUSTOMIZE in marks:
        return f"flux-kustomization:{marks[FLUX_KUSTOMIZE]}"
    if FLUX_HELM in marks:
        return f"flux-helmrelease:{marks[FLUX_HELM]}"
    return None


def _perform(action: Action, ctx: ActionContext) -> ActionResult:
    """Run the action, or its ``restore`` for a request that releases what an incident raised."""
    if not ctx.request.restore:
        return action.execute(ctx)
    restore: Callable[[ActionContext], ActionResult] | None = getattr(action, "restore", None)
    if restore is None:
        return ActionResult(
            ActionStatus.FAILED, f"{action.name} has nothing to restore", action.name, ctx.request.key
        )
    return restore(ctx)


# ---------------------------------------------------------------- the executor

_STATUS = {
    Decision.EXECUTED: ActionStatus.EXECUTED,
    Decision.NOOP: ActionStatus.NOOP,
    Decision.DRY_RUN: ActionStatus.DRY_RUN,
    Decision.SKIPPED: ActionStatus.SKIPPED,
    Decision.FAILED: ActionStatus.FAILED,
    Decision.PENDING_APPROVAL: ActionStatus.PENDING_APPROVAL,
    Decision.APPROVED: ActionStatus.PENDING_APPROVAL,
    Decision.REJECTED: ActionStatus.SKIPPED,
    Decision.EXPIRED: ActionStatus.FAILED,
}
"""The outcome the engine sees for each audited decision."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    decision: Decision
    message: str
    guardrail: str = ""
    error: str = ""
    event: str = ""
    """The Event reason to write on the target ("" for none)."""
    details: Mapping[str, Any] | None = None
    result: ActionResult | None = None
    """The action's own result, when it ran (its diff, retryable, retry_after)."""


@dataclass(slots=True)
class _Check:
    """What the guards look at: the proposal, and the target once read."""

    proposal: Proposal
    action: Action
    obj: Obj | None = None
    manager: str | None = None


class KubeExecutor:
    """Guards, leader check, dry run, approval, audit, then the remediation. Thread-safe: one
    request at a time per target, different targets at once."""

    def __init__(
        self,
        kube: KubeClients,
        config: ExecutorConfig,
        clock: Clock,
        audit: Audit,
        *,
        leader: LeaderState | None = None,
        metrics: AgentMetrics | None = None,
        instance: str = "",
        actions: Mapping[str, Action] = ACTIONS,
        publisher: RetrainPublisher | None = None,
        stop: threading.Event | None = None,
        environ: Mapping[str, str] | None = None,
        agent_record: Target | None = None,
        approvals: ApprovalStore | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock
        self.audit = audit
        self.leader: LeaderState = leader if leader is not None else AlwaysLeader()
        self.metrics = metrics
        self.instance = instance
        self.actions = actions
        self.publisher = publisher
        self.stop = stop
        self.environ = environ
        """Where actions read secrets named in their parameters (None: ``os.environ``)."""
        self.approvals: ApprovalStore = (
            approvals if approvals is not None else open_store(config, kube, environ or {})
        )
        """Actions waiting for a person (``executor.approvals.store``)."""
        self.report: Callable[[ActionResult], None] | None = None
        """Where results of approved (or rejected, expired) requests go: the engine's ``report``."""
        self.vet: Vet | None = None
        """Why the engine would not have proposed a request read back from an approval record (None:
        it would): the engine's ``vet``. Unbound, no approved record is run."""
        self.agent_record = agent_record
        """The object whose ``aiops.dev/actions`` records every action of the agent in the last hour
        (a Lease in the agent's namespace): the agent-wide budgets after a restart; None: none."""
        self._executed = executed_keys_from_file(config.audit_file)
        self._lock = threading.RLock()  # approvals, and the table of per-target locks
        self._locks: dict[Target, threading.Lock] = {}
        self._next_prune = 0.0

    def bind(self, report: Callable[[ActionResult], None], vet: Vet | None = None) -> None:
        """Send results that come later (approvals) to ``report``; check approved requests with
        ``vet`` (the engine's policy) before running them."""
        self.report = report
        if vet is not None:
            self.vet = vet

    # ------------------------------------------------------------ the protocol

    def submit(self, proposal: Proposal) -> ActionResult:
        """Run, plan or queue ``proposal``; never raises. Requests on different targets may run at
        once (the action pool's workers); those on one target run one at a time."""
        try:
            return self._submit(proposal, approved=False)
        except Exception as exc:  # the last line: a bug here must not stop the engine
            log.exception("executor failed on %s", proposal.key)
            outcome = _Outcome(Decision.FAILED, f"executor error: {exc!r}", error=type(exc).__name__)
            return self._finish(proposal, outcome, None)

    def tick(self) -> None:
        """Act on approval decisions and expire old pending approvals (the leader only), then
        delete settled ones past their retention; never raises.

        Each record is acted on by its owner (the replica whose engine waits for it), or by any
        replica once its owner has left it alone for ``approvals.takeover``; every transition is a
        conditional change of the record, so two replicas never both act on one decision."""
        if not self.leader.is_leader():
            return
        try:
            records = list(self.approvals.records(finished=False))
        except (OSError, ApprovalError):
            log.exception("cannot read approvals (%s)", self.approvals.where)
            return
        for record in records:
            try:
                with self._lock:
                    self._tick_one(record)
            except Exception:
                log.exception("approval %s could not be processed", record.id)
        now = self.clock.now()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            try:
                gone = self.approvals.prune(now)
            except (OSError, ApprovalError):
                log.exception("cannot delete settled approvals (%s)", self.approvals.where)
            else:
                if gone:
                    log.info("deleted %d settled approval(s) past their retention", gone)

    def _mine(self, record: ApprovalRecord, now: float) -> bool:
        """Whether this replica acts on ``record`` now: its own, an unowned one, or one its owner
        has left alone past ``takeover`` since it became actionable (decided, or expired); a
        claimed one whose claimer reported nothing within ``takeover`` plus the action deadline
        (it died while running it: the action's key on the target says whether it wrote)."""
        if record.state is ApprovalState.DONE:
            return self._stale_claim(record, now)
        if record.owner in {"", self.instance}:
            return True
        since = record.expires if record.state is ApprovalState.PENDING else record.decided_at
        return since is not None and now >= since + self.config.approvals.takeover

    def _stale_claim(self, record: ApprovalRecord, now: float) -> bool:
        if record.settled is not None or record.outcome.get("status") != ActionStatus.RUNNING.value:
            return False
        since = record.outcome.get("since", record.decided_at)
        if not isinstance(since, int | float):
            return False
        return now >= since + self.config.approvals.takeover + self.config.action_deadline

    # ------------------------------------------------------------ the guards, in order

    def _executed_before(self, c: _Check) -> _Outcome | None:
        if c.proposal.key in self._executed:
            return _Outcome(Decision.SKIPPED, "already executed (audit log)", "idempotency")
        return None

    def _leader(self, c: _Check) -> _Outcome | None:
        if self.leader.is_leader():
            return None
        return _Outcome(Decision.SKIPPED, "not leader: detected and planned here, the leader acts", "leader")

    def _read_target(self, c: _Check) -> _Outcome | None:
        if c.action.action_class is ActionClass.NOTIFY:
            return None  # a notification changes no workload: nothing to read
        target = c.proposal.target
        try:
            c.obj = self.kube.get(target.kind, target.namespace, target.name)
        except (RemediationError, ValueError) as exc:
            return _Outcome(Decision.FAILED, str(exc), "target", error=type(exc).__name__)
        return None

    def _recorded_on_target(self, c: _Check) -> _Outcome | None:
        if c.obj is None or not notes.was_executed(c.obj, c.proposal.key):
            return None
        self._executed.add(c.proposal.key)
        return _Outcome(Decision.SKIPPED, "already executed (target annotation)", "idempotency")

    def _gitops(self, c: _Check) -> _Outcome | None:
        if c.obj is None:
            return None
        c.manager = gitops_manager(c.obj)
        if c.manager is None or self.config.gitops != "skip":
            return None
        message = f"managed by GitOps ({c.manager}): not changed behind the controller's back (gitops: skip)"
        return _Outcome(Decision.SKIPPED, message, "gitops", event="AiopsSkipped")

    GUARDS: tuple[Callable[[KubeExecutor, _Check], _Outcome | None], ...] = (
        _executed_before,
        _leader,
        _read_target,
        _recorded_on_target,
        _gitops,
    )
    """Each answers (holds the request) or returns None (the next one looks)."""

    # ------------------------------------------------------------ the steps

    def _target_lock(self, target: Target) -> threading.Lock:
        with self._lock:
            lock = self._locks.get(target)
            if lock is None:
                if len(self._locks) >= MAX_TARGET_LOCKS:  # bounded: forget the idle ones
                    for idle in [t for t, held in self._locks.items() if not held.locked()]:
                        del self._locks[idle]
                lock = self._locks[target] = threading.Lock()
            return lock

    def _submit(self, proposal: Proposal, *, approved: bool) -> ActionResult:
        with self._target_lock(proposal.target):
            return self._submit_one(proposal, approved=approved)

    def _submit_one(self, proposal: Proposal, *, approved: bool) -> ActionResult:
        action = self.actions[proposal.action]
        check = _Check(proposal, action)
        for guard in self.GUARDS:
            held = guard(self, check)
            if held is not None:
                return self._finish(proposal, held, check.obj)
        guards = {"guards": self._passed(check)}
        ctx = self._context(proposal)
        if proposal.request.dry_run:
            result = _perform(action, ctx)
            if result.status is ActionStatus.FAILED:
                return self._failed(proposal, result, check.obj)
            outcome = _Outcome(
                Decision.DRY_RUN,
                result.message,
                "dry_run",
                event="AiopsDryRun",
                details=guards,
                result=result,
            )
            return self._finish(proposal, outcome, check.obj)
        unchanged = self._unchanged(proposal, action, ctx)
        if unchanged is not None:
            outcome = _Outcome(Decision.NOOP, unchanged.message, details=guards, result=unchanged)
            return self._finish(proposal, outcome, None)
        needs_approval = (
            action.action_class is not ActionClass.NOTIFY and proposal.approval is Approval.REQUIRED
        )
        if needs_approval and not approved:
            return self._pend(proposal, action, ctx, check.obj)
        # write-ahead: the record exists before the write does
        started = f"{proposal.action} on {proposal.target}: starting"
        self._audit(proposal, _Outcome(Decision.STARTED, started, details=guards))
        recorded = self._record_ahead(check)
        if isinstance(recorded, ActionResult):
            return self._failed(proposal, recorded, check.obj)
        result = _perform(action, ctx)
        if recorded is not None and result.status is not ActionStatus.EXECUTED:
            self._unrecord(proposal, recorded)
        if result.status is ActionStatus.FAILED:
            return self._failed(proposal, result, check.obj)
        if result.status is ActionStatus.SKIPPED:
            outcome = _Outcome(Decision.SKIPPED, result.message, "action", result=result)
            return self._finish(proposal, outcome, check.obj)
        self._executed.add(proposal.key)
        details: dict[str, Any] = dict(guards)
        if check.manager is not None and self.config.gitops == "annotate" and check.obj is not None:
            details["gitops"] = self._annotate_drift(proposal.target, check.manager, proposal.key)
        decision = Decision.NOOP if result.status is ActionStatus.NOOP else Decision.EXECUTED
        outcome = _Outcome(decision, result.message, details=details, result=result)
        return self._finish(proposal, outcome, None)  # the action wrote its own Event

    def _unchanged(self, proposal: Proposal, action: Action, ctx: ActionContext) -> ActionResult | None:
        """The no-op result of a workload action whose plan changes nothing, else None.

        Such a request writes nothing, so it is neither recorded ahead nor asked for approval:
        the plan's reads decide, and the request is audited once, as ``noop``. (A forecast that
        moved without moving the replicas it needs is the common case.) A plan that cannot be
        made leaves the answer to the execution, which reports why.
        """
        if action.action_class is ActionClass.NOTIFY or proposal.request.restore:
            return None
        try:
            plan = action.plan(ctx)
        except Exception:  # executing reads the same and reports the error
            log.debug(
                "no plan for %s on %s; executing decides", proposal.action, proposal.target, exc_info=True
            )
            return None
        if plan.changes:
            return None
        return ActionResult(
            ActionStatus.NOOP,
            plan.summary,
            proposal.action,
            proposal.key,
            proposal.target,
            details=plan.details,
        )

    def _record_ahead(self, c: _Check) -> notes.RecordedAction | ActionResult | None:
        """Record a workload-changing action on its target (and in the agent-wide record) before it
        writes, so cooldowns and budgets count it after a crash; a failed result if that fails."""
        proposal = c.proposal
        if c.action.action_class is ActionClass.NOTIFY or proposal.request.restore:
            return None
        entry = notes.RecordedAction(
            self.clock.now(),
            proposal.playbook,
            proposal.action,
            c.action.action_class.value,
            proposal.source,
            key_digest(proposal.key),
        )
        target = proposal.target
        try:
            self._annotate(target, lambda obj: notes.with_action(obj, entry), first=c.obj)
            if self.agent_record is not None:
                self._annotate(
                    self.agent_record,
                    lambda obj: notes.with_action(
                        obj, replace(entry, target=str(target)), notes.AGENT_ACTIONS, entry.time - HOUR
                    ),
                    create=True,
                )
        except (KubeError, ValueError) as exc:
            message = f"cannot record {proposal.action} before acting, so nothing was changed: {exc}"
            retryable = isinstance(exc, TemporaryKubeError)
            return ActionResult(
                ActionStatus.FAILED,
                message,
                proposal.action,
                proposal.key,
                target,
                error=type(exc).__name__,
                retryable=retryable,
            )
        return entry

    def _unrecord(self, proposal: Proposal, entry: notes.RecordedAction) -> None:
        """The action did not execute: take its entry out of the records again (best effort),
        unless the target's executed keys hold its key (an earlier try, or this one whose answer
        was lost, did write): then it stays counted."""
        written = False

        def drop_on_target(obj: Obj) -> str | None:
            nonlocal written
            written = notes.was_executed(obj, proposal.key)
            return None if written else notes.without_action(obj, entry.key)

        def drop_agent_wide(obj: Obj) -> str | None:
            return notes.without_action(obj, entry.key, notes.AGENT_ACTIONS)

        places: list[tuple[Target, Callable[[Obj], str | None]]] = [(proposal.target, drop_on_target)]
        if self.agent_record is not None:
            places.append((self.agent_record, drop_agent_wide))
        for where, drop in places:
            try:
                self._annotate(where, drop)
            except (KubeError, ValueError) as exc:
                log.warning("could not take %s out of the actions record of %s: %s", proposal.key, where, exc)
                return  # kept: counted once too often rather than not at all
            if written:
                return

    def _annotate(
        self,
        where: Target,
        value: Callable[[Obj], str | None],
        *,
        first: Obj | None = None,
        create: bool = False,
    ) -> None:
        """Set the actions annotation of ``where`` to ``value(current)`` (None: leave it), by a merge
        patch conditional on the version read; re-read on a conflict. ``create``: make a missing
        object (the agent-wide record)."""
        kube = self.kube
        unread = [first] if first is not None else []

        def read() -> Obj:
            if unread:  # the target as the guards read it: one GET fewer on the way to the write
                return unread.pop()
            try:
                return kube.get(where.kind, where.namespace, where.name)
            except NotFoundError:
                if not create:
                    raise
                body = {
                    "apiVersion": api_version_of(where.kind),
                    "kind": where.kind,
                    "metadata": {"name": where.name, "namespace": where.namespace},
                    "spec": {},
                }
                try:
                    return kube.create(where.kind, where.namespace, body)
                except AlreadyExistsError:
                    return kube.get(where.kind, where.namespace, where.name)

        def change(obj: Obj) -> Obj | None:
            text = value(obj)
            if text is None:
                return None
            return {
                "metadata": {
                    "resourceVersion": notes.resource_version(obj),
                    "annotations": {notes.ACTIONS: text},
                }
            }

        kube.read_modify_write(
            read,
            change,
            lambda _, body: kube.patch(where.kind, where.namespace, where.name, body, PatchType.MERGE),
        )

    def _passed(self, c: _Check) -> list[dict[str, Any]]:
        """The executor's guards the request passed, with their values (for the decision record)."""
        return [
            {"name": "idempotency", "value": "key not executed before", "ok": True},
            {"name": "leader", "value": self.instance or "this replica", "ok": True},
            {"name": "gitops", "value": c.manager or "none", "mode": self.config.gitops, "ok": True},
            {"name": "dryRun", "value": c.proposal.request.dry_run, "ok": True},
            {"name": "approval", "value": c.proposal.approval.value, "ok": True},
        ]

    def _context(self, proposal: Proposal) -> ActionContext:
        return ActionContext(
            kube=self.kube,
            request=proposal.request,
            clock=self.clock,
            publisher=self.publisher,
            instance=self.instance,
            stop=self.stop,
            environ=self.environ,
        )

    def _failed(self, proposal: Proposal, result: ActionResult, obj: Obj | None) -> ActionResult:
        outcome = _Outcome(
            Decision.FAILED,
            result.message,
            error=result.error,
            event="AiopsFailed" if obj is not None else "",
            result=result,
        )
        return self._finish(proposal, outcome, obj)

    def _pend(self, proposal: Proposal, action: Action, ctx: ActionContext, obj: Obj | None) -> ActionResult:
        try:
            plan = str(action.plan(ctx))
        except RemediationError as exc:
            return self._finish(proposal, _Outcome(Decision.FAILED, str(exc), error=type(exc).__name__), obj)
        now = self.clock.now()
        try:
            record = self.approvals.create(
                proposal.key, proposal.to_dict(), now, self.config.approval_ttl, plan, self.instance
            )
            if record.owner != self.instance or record.key != proposal.key:
                # proposed here again (this replica owns the target now), or the same step of the
                # incident opened again after a failover: the record follows this proposal, and
                # its outcome comes to this replica's engine
                adopted = self.approvals.change(record.id, lambda r: self._adopt(r, proposal, plan))
                record = adopted if adopted is not None else self.approvals.get(record.id)
        except ApprovalError as exc:
            message = f"not queued for approval: {exc}"
            error = type(exc).__name__
            # the store did not answer: the engine tries again within the playbook's deadline
            retryable = isinstance(exc, ApprovalsUnavailableError)
            outcome = _Outcome(
                Decision.FAILED,
                message,
                "approval",
                error=error,
                event="AiopsFailed",
                details={"approvals": self.approvals.where, "full": isinstance(exc, ApprovalsFullError)},
                result=ActionResult(
                    ActionStatus.FAILED,
                    message,
                    proposal.action,
                    proposal.key,
                    error=error,
                    retryable=retryable,
                ),
            )
            return self._finish(proposal, outcome, obj)
        settled = record.outcome.get("status")
        if record.settled is not None and settled in {s.value for s in ActionStatus}:
            # decided and acted on before (by another replica, or before a restart): its outcome
            message = (
                f"approval {record.id} is {record.state.value}: {record.outcome.get('message') or settled}"
            )
            return ActionResult(
                ActionStatus(settled),
                message,
                proposal.action,
                proposal.key,
                proposal.target,
                details={"approval": record.id},
            )
        if record.state is not ApprovalState.PENDING:
            # decided already (by a person, before a restart): the tick acts on it
            return ActionResult(
                ActionStatus.PENDING_APPROVAL,
                f"approval {record.id} is {record.state.value}",
                proposal.action,
                proposal.key,
                proposal.target,
                details={"approval": record.id},
            )
        message = f"waiting for approval {record.id}: aiops approve {record.id} | aiops reject {record.id}"
        outcome = _Outcome(
            Decision.PENDING_APPROVAL,
            message,
            "approval",
            event="AiopsPendingApproval",
            details={"approval": record.id, "plan": plan, "expires": record.expires},
        )
        return self._finish(proposal, outcome, obj)

    def _adopt(self, record: ApprovalRecord, proposal: Proposal, plan: str) -> ApprovalRecord | None:
        """The record, owned here and carrying ``proposal``, while nobody has acted on it yet (a
        record still waiting for a person shows the plan as it is now)."""
        if record.state not in {ApprovalState.PENDING, ApprovalState.APPROVED, ApprovalState.REJECTED}:
            return None
        if record.outcome or (record.owner == self.instance and record.key == proposal.key):
            return None
        shown = plan if record.state is ApprovalState.PENDING else record.plan
        return replace(record, owner=self.instance, key=proposal.key, request=proposal.to_dict(), plan=shown)

    def _tick_one(self, record: ApprovalRecord) -> None:
        """Act on one record if it is this replica's to act on. Each step is a conditional change
        that re-checks the record as it is now: the replica whose change lands acts, any other
        finds it changed and leaves it."""
        now = self.clock.now()
        if not self._mine(record, now):
            return
        if record.state is ApprovalState.PENDING and now >= record.expires:
            expired = self.approvals.change(record.id, lambda r: self._expire(r, now))
            if expired is None:
                return  # decided in time, or expired by another replica
            proposal = Proposal.from_dict(expired.request)
            outcome = _Outcome(Decision.EXPIRED, f"approval {record.id} expired unanswered", "approval")
            self._report(self._finish(proposal, outcome, None))
        elif record.state is ApprovalState.REJECTED and not record.outcome:
            rejected = self.approvals.change(record.id, lambda r: self._settle_rejected(r, now))
            if rejected is None:
                return
            proposal = Proposal.from_dict(rejected.request)
            message = f"approval {record.id} rejected by {rejected.decided_by or 'someone'}"
            if rejected.reason:
                message += f": {rejected.reason}"
            self._report(self._finish(proposal, _Outcome(Decision.REJECTED, message, "approval"), None))
        elif record.state in {ApprovalState.APPROVED, ApprovalState.DONE}:
            # Claimed (approved -> done, running) before acting, by a change conditional on the
            # record as read: of two replicas only one claims it. A claim whose replica died is
            # claimed again once stale; the action's key on the target stops a repeat.
            claimed = self.approvals.change(record.id, lambda r: self._claim(r, now))
            if claimed is None:
                return
            try:
                proposal = Proposal.from_dict(claimed.request)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self._refuse_unreadable(claimed, exc)
                return
            refused = self._refusal(claimed, proposal)
            if refused is not None:
                log.warning("%s", refused)
                outcome = _Outcome(Decision.FAILED, refused, "approval", error="ApprovalRefused")
                result = self._finish(proposal, outcome, None)
            else:
                by = claimed.decided_by or "someone"
                approved = _Outcome(Decision.APPROVED, f"approval {record.id} approved by {by}", "approval")
                self._audit(proposal, approved)
                result = self._submit(proposal, approved=True)
            self.approvals.change(
                record.id, lambda r: replace(r, outcome=result.to_dict(), settled=self.clock.now())
            )
            self._report(result)

    def _refusal(self, record: ApprovalRecord, proposal: Proposal) -> str | None:
        """Why the approved ``proposal`` read from ``record`` is not run, or None: anyone who may
        write the records could have written it, so it runs only if the engine would have proposed
        it, as the record's own (its key the record's)."""
        why: str | None
        if record.key != proposal.key:
            why = f"carries the request of {proposal.key!r}, not its own {record.key!r}"
        elif proposal.action not in self.actions:
            why = f"asks for unknown action {proposal.action!r}"
        elif self.vet is None:
            why = "cannot be checked: no playbook policy is bound to the executor"
        else:
            try:
                why = self.vet(proposal)
            except Exception as exc:  # a bug in the check must refuse, never run
                log.exception("approval %s could not be checked", record.id)
                why = f"could not be checked ({exc!r})"
        return None if why is None else f"approval {record.id} {why}: refused"

    def _refuse_unreadable(self, record: ApprovalRecord, exc: Exception) -> None:
        """Settle a claimed record whose request cannot be read as failed (nothing to audit it by)."""
        message = f"approval {record.id} holds no readable request ({exc!r}): refused"
        log.warning("%s", message)
        outcome = {"status": ActionStatus.FAILED.value, "message": message, "error": "ApprovalRefused"}
        self.approvals.change(record.id, lambda r: replace(r, outcome=outcome, settled=self.clock.now()))

    def _expire(self, record: ApprovalRecord, now: float) -> ApprovalRecord | None:
        if record.state is not ApprovalState.PENDING or now < record.expires or not self._mine(record, now):
            return None
        return replace(record, state=ApprovalState.EXPIRED, outcome={"status": "failed"}, settled=now)

    def _settle_rejected(self, record: ApprovalRecord, now: float) -> ApprovalRecord | None:
        if record.state is not ApprovalState.REJECTED or record.outcome or not self._mine(record, now):
            return None
        return replace(record, outcome={"status": "skipped"}, settled=now)

    def _claim(self, record: ApprovalRecord, now: float) -> ApprovalRecord | None:
        if record.state not in {ApprovalState.APPROVED, ApprovalState.DONE} or not self._mine(record, now):
            return None
        running = {"status": ActionStatus.RUNNING.value, "by": self.instance, "since": now}
        return replace(record, state=ApprovalState.DONE, outcome=running)

    def _report(self, result: ActionResult) -> None:
        if self.report is None:
            return
        try:
            self.report(result)
        except Exception:
            log.exception("engine report failed for %s", result.key)

    def _annotate_drift(self, target: Target, manager: str, key: str) -> str:
        value = json.dumps({"manager": manager, "key": key, "time": self.clock.now()}, sort_keys=True)
        body = {"metadata": {"annotations": {GITOPS_DRIFT: value}}}
        try:
            self.kube.patch(target.kind, target.namespace, target.name, body, PatchType.MERGE)
        except KubeError as exc:
            log.warning("could not annotate %s as changed behind %s: %s", target, manager, exc)
            return f"annotation failed: {exc}"
        return f"annotated {GITOPS_DRIFT} ({manager})"

    # ------------------------------------------------------------ audit

    def _audit(self, proposal: Proposal, outcome: _Outcome) -> None:
        details = dict(outcome.details or {})
        if outcome.result is not None:
            details["status"] = outcome.result.status.value
            if outcome.result.diff:
                details["diff"] = outcome.result.diff
            if outcome.result.retryable:
                details["retryable"] = True
        record = AuditRecord(
            time=self.clock.now(),
            decision=outcome.decision,
            key=proposal.key,
            action=proposal.action,
            target=proposal.target.to_dict(),
            message=outcome.message,
            playbook=proposal.playbook,
            incident=proposal.incident,
            step=proposal.request.step,
            guardrail=outcome.guardrail,
            error=outcome.error,
            instance=self.instance,
            details=details,
        )
        self.audit.record(record)
        if self.metrics is not None:
            self.metrics.actions.labels(proposal.action, outcome.decision.value).inc()

    def _finish(self, proposal: Proposal, outcome: _Outcome, obj: Obj | None) -> ActionResult:
        self._audit(proposal, outcome)
        if outcome.event and obj is not None and self.config.events:
            event_type: EventType = "Warning" if outcome.decision is Decision.FAILED else "Normal"
            why = explain_signal(proposal.evidence)
            note = (
                f"{proposal.action}: {outcome.message} "
                f"(playbook {proposal.playbook}, incident {proposal.incident}"
                f"{'; ' + why if why else ''})"
            )
            try_record_event(
                self.kube,
                proposal.target.kind,
                obj,
                reason=outcome.event,
                message=note[:1024],
                clock=self.clock,
                event_type=event_type,
                action=proposal.action,
                key=proposal.key,
                instance=self.instance,
            )
        details: dict[str, Any] = {"decision": outcome.decision.value}
        if outcome.guardrail:
            details["guardrail"] = outcome.guardrail
        details.update(outcome.details or {})
        ran = outcome.result
        return ActionResult(
            _STATUS[outcome.decision],
            outcome.message,
            proposal.action,
            proposal.key,
            proposal.target,
            diff=ran.diff if ran is not None else "",
            details={**(dict(ran.details) if ran is not None else {}), **details},
            error=outcome.error,
            retryable=ran.retryable if ran is not None else False,
            retry_after=ran.retry_after if ran is not None else None,
        )
