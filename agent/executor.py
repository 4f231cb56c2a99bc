"""The executor: the playbook engine's requests, through the guardrails, to the remediations.

:class:`KubeExecutor` implements the engine's :class:`~agent.playbook.requests.Executor`
protocol. The engine keeps its own request and result records
(:class:`agent.playbook.requests.ActionRequest` / ``ActionResult``: rendered YAML parameters, the
engine's statuses); this module is the ONE place where they are converted to and from the
remediations' (:func:`to_remediation`, :func:`to_engine_result`). The parameter models themselves
are shared: the playbook validates with the remediations' models.

For each request, in this order (the first that holds decides, and every decision is audited):

1. the request must convert: a valid target name, parameters the action's model accepts;
2. the namespace allow-list (config ``executor.namespaces``): refused, ``failed``;
3. the idempotency key: executed before (in this process or in the audit file) -> ``skipped``;
4. only the leader acts: others record ``skipped`` (guardrail ``leader``) and plan nothing;
5. the target is read: missing -> ``failed`` naming it; its ``aiops.dev/executed-keys``
   annotation holds the key -> ``skipped`` (idempotency across restarts and leader changes);
6. GitOps: a target managed by Argo CD or Flux is skipped (``gitops: skip``, the default), acted
   on and annotated (``annotate``), or acted on (``act``);
7. dry run (config or playbook): the action plans, nothing is written but an Event;
8. approval (config or playbook): a pending record in ``approvals_dir``; ``aiops approve ID`` /
   ``aiops reject ID`` decide it and :meth:`KubeExecutor.tick` acts on the decision (or expires
   the record after ``approval_ttl``) and reports the result to the engine;
9. the action runs, bounded by :class:`~remediations.types.Limits` (replica bounds, max step,
   namespaces) from the request's guardrails and the config, the tighter one winning.

The executor never raises into the engine: any error is a ``failed`` result, audited.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.approvals import ApprovalRecord, ApprovalState, ApprovalStore
from agent.audit import ActionAudit, AuditRecord, Decision, executed_keys_from_file
from agent.clock import Clock
from agent.config import ExecutorConfig
from agent.leader import AlwaysLeader, LeaderState
from agent.metrics import AgentMetrics
from agent.playbook.requests import ActionRequest as EngineRequest
from agent.playbook.requests import ActionResult as EngineResult
from agent.playbook.requests import ActionStatus as EngineStatus
from agent.playbook.requests import Approval, RequestGuardrails, TargetRef
from remediations import state as notes
from remediations.errors import KubeError, RemediationError
from remediations.events import EventType, try_record_event
from remediations.kube import KubeClients, PatchType
from remediations.registry import ACTIONS, make_request
from remediations.types import (
    Action,
    ActionContext,
    ActionRequest,
    ActionResult,
    ActionStatus,
    Limits,
    RetrainPublisher,
    Target,
)

log = logging.getLogger("aiops.executor")

Obj = dict[str, Any]

#: Set on a target changed behind its GitOps controller's back (``gitops: annotate``).
GITOPS_DRIFT = notes.PREFIX + "gitops-drift"

#: Labels and annotations by which Argo CD and Flux mark what they manage, and who that is.
ARGO_INSTANCE = "argocd.argoproj.io/instance"
ARGO_TRACKING = "argocd.argoproj.io/tracking-id"
FLUX_KUSTOMIZE = "kustomize.toolkit.fluxcd.io/name"
FLUX_HELM = "helm.toolkit.fluxcd.io/name"

#: Actions that change no workload: no target read, no GitOps check, no approval.
_NOTIFY_ONLY = frozenset({"notify"})


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


# ---------------------------------------------------------------- the one conversion


def _tighter(a: int | None, b: int | None, pick: Callable[[int, int], int]) -> int | None:
    return b if a is None else a if b is None else pick(a, b)


def limits_for(request: EngineRequest, config: ExecutorConfig) -> Limits:
    """The limits an action enforces: the request's guardrails and the config's, the tighter one."""
    g = request.guardrails
    return Limits(
        min_replicas=_tighter(g.min_replicas, config.min_replicas, max),
        max_replicas=_tighter(g.max_replicas, config.max_replicas, min),
        max_step=_tighter(g.max_step, config.max_step, min),
        namespaces=frozenset(config.namespaces) if config.namespaces is not None else None,
        scale_down=g.scale_down,
    )


def to_remediation(request: EngineRequest, config: ExecutorConfig) -> ActionRequest:
    """The engine's request as the remediations' (target names and parameters validated again).

    Raises ValueError (a ParamsError for parameters) when the rendered request is not valid.
    """
    t = request.target
    target = Target(t.kind, t.namespace, t.name)
    converted = make_request(
        request.action,
        target,
        dict(request.params),
        playbook=request.playbook,
        incident=request.incident,
        step=request.step,
        dry_run=config.dry_run or request.guardrails.dry_run,
        reason=request.reason,
        signal_value=request.signal_value,
        limits=limits_for(request, config),
    )
    # The engine's key is the identity the engine tracks; the remediations record the same key.
    return replace(converted, key=request.key, unhealthy=request.unhealthy, restore=request.restore)


_STATUS = {
    ActionStatus.EXECUTED: EngineStatus.SUCCEEDED,
    ActionStatus.NOOP: EngineStatus.NOOP,
    ActionStatus.DRY_RUN: EngineStatus.DRY_RUN,
    ActionStatus.SKIPPED: EngineStatus.SKIPPED,
    ActionStatus.FAILED: EngineStatus.FAILED,
}


def to_engine_result(key: str, result: ActionResult, now: float, **details: Any) -> EngineResult:
    """A remediations result as the engine's."""
    info = {"status": result.status.value, **({"error": result.error} if result.error else {}), **details}
    if result.diff:
        info["diff"] = result.diff
    return EngineResult(key, _STATUS[result.status], result.message, now, info)


def request_from_dict(data: Mapping[str, Any]) -> EngineRequest:
    """The engine's request from its ``to_dict()`` form (an approval record read after a restart)."""
    t, g = data["target"], data.get("guardrails") or {}
    return EngineRequest(
        key=str(data["key"]),
        playbook=str(data["playbook"]),
        incident=str(data["incident"]),
        step=str(data["step"]),
        action=str(data["action"]),
        target=TargetRef(str(t["kind"]), str(t["namespace"]), str(t["name"])),
        params=dict(data.get("params") or {}),
        guardrails=RequestGuardrails(
            dry_run=bool(g.get("dryRun", False)),
            approval=Approval(g.get("approval", "none")),
            min_replicas=g.get("minReplicas"),
            max_replicas=g.get("maxReplicas"),
            max_step=g.get("maxStep"),
            scale_down=bool(g.get("scaleDown", True)),
        ),
        time=float(data.get("time") or 0.0),
        signal_value=float(data.get("signalValue") or 0.0),
        reason=str(data.get("reason") or ""),
        unhealthy=tuple((float(a), float(b)) for a, b in data.get("unhealthy") or ()),
        restore=bool(data.get("restore", False)),
    )


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


@dataclass(frozen=True, slots=True)
class _Outcome:
    decision: Decision
    status: EngineStatus
    message: str
    guardrail: str = ""
    error: str = ""
    event: str = ""
    """The Event reason to write on the target ("" for none)."""
    details: Mapping[str, Any] | None = None


class KubeExecutor:
    """Guardrails, leader check, dry run, approval, audit, then the remediation. Thread-safe."""

    def __init__(
        self,
        kube: KubeClients,
        config: ExecutorConfig,
        clock: Clock,
        audit: ActionAudit,
        *,
        leader: LeaderState | None = None,
        metrics: AgentMetrics | None = None,
        instance: str = "",
        actions: Mapping[str, Action] = ACTIONS,
        publisher: RetrainPublisher | None = None,
        stop: threading.Event | None = None,
        environ: Mapping[str, str] | None = None,
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
        self.approvals = ApprovalStore(Path(config.approvals_dir))
        self.report: Callable[[EngineResult], None] | None = None
        """Where results of approved (or rejected, expired) requests go: the engine's ``report``."""
        self._executed = executed_keys_from_file(config.audit_file)
        self._lock = threading.RLock()

    def bind(self, report: Callable[[EngineResult], None]) -> None:
        """Send results that come later (approvals) to ``report``."""
        self.report = report

    # ------------------------------------------------------------ the protocol

    def submit(self, request: EngineRequest) -> EngineResult:
        """Run, plan or queue ``request``; never raises."""
        try:
            with self._lock:
                return self._submit(request, approved=False)
        except Exception as exc:  # the last line: a bug here must not stop the engine
            log.exception("executor failed on %s", request.key)
            outcome = _Outcome(
                Decision.FAILED, EngineStatus.FAILED, f"executor error: {exc!r}", error=type(exc).__name__
            )
            return self._finish(request, outcome, None)

    def tick(self) -> None:
        """Act on approval decisions and expire old pending approvals (the leader only); never raises."""
        if not self.leader.is_leader():
            return
        try:
            records = list(self.approvals.records())
        except OSError:
            log.exception("cannot read approvals in %s", self.approvals.directory)
            return
        for record in records:
            try:
                with self._lock:
                    self._tick_one(record)
            except Exception:
                log.exception("approval %s could not be processed", record.id)

    # ------------------------------------------------------------ the steps

    def _submit(self, request: EngineRequest, *, approved: bool) -> EngineResult:
        try:
            converted = to_remediation(request, self.config)
        except (ValueError, TypeError) as exc:
            return self._finish(
                request,
                _Outcome(
                    Decision.FAILED,
                    EngineStatus.FAILED,
                    f"invalid request: {exc}",
                    "input",
                    type(exc).__name__,
                ),
                None,
            )
        target = converted.target
        allowed = converted.limits.namespaces
        if allowed is not None and target.namespace not in allowed:
            message = (
                f"namespace {target.namespace!r} is not in the allowed namespaces "
                f"({', '.join(sorted(allowed)) or 'none'})"
            )
            return self._finish(
                request,
                _Outcome(Decision.FAILED, EngineStatus.FAILED, message, "namespace", "ActionRefused"),
                None,
            )
        if request.key in self._executed:
            return self._finish(
                request,
                _Outcome(
                    Decision.SKIPPED, EngineStatus.SKIPPED, "already executed (audit log)", "idempotency"
                ),
                None,
            )
        if not self.leader.is_leader():
            return self._finish(
                request,
                _Outcome(
                    Decision.SKIPPED,
                    EngineStatus.SKIPPED,
                    "not leader: detected and planned here, the leader acts",
                    "leader",
                ),
                None,
            )
        action = self.actions[converted.action]
        obj: Obj | None = None
        manager: str | None = None
        if converted.action not in _NOTIFY_ONLY:
            try:
                obj = self.kube.get(target.kind, target.namespace, target.name)
            except (RemediationError, ValueError) as exc:
                return self._finish(
                    request,
                    _Outcome(Decision.FAILED, EngineStatus.FAILED, str(exc), error=type(exc).__name__),
                    None,
                )
            if notes.was_executed(obj, request.key):
                self._executed.add(request.key)
                return self._finish(
                    request,
                    _Outcome(
                        Decision.SKIPPED,
                        EngineStatus.SKIPPED,
                        "already executed (target annotation)",
                        "idempotency",
                    ),
                    obj,
                )
            manager = gitops_manager(obj)
            if manager is not None and self.config.gitops == "skip":
                message = (
                    f"managed by GitOps ({manager}): not changed behind the controller's back (gitops: skip)"
                )
                return self._finish(
                    request,
                    _Outcome(Decision.SKIPPED, EngineStatus.SKIPPED, message, "gitops", event="AiopsSkipped"),
                    obj,
                )
        ctx = self._context(converted)
        if converted.dry_run:
            result = _perform(action, ctx)
            if result.status is ActionStatus.FAILED:
                return self._failed(request, result, obj)
            return self._finish(
                request,
                _Outcome(
                    Decision.DRY_RUN,
                    EngineStatus.DRY_RUN,
                    result.message,
                    "dry_run",
                    event="AiopsDryRun",
                    details={"diff": result.diff} if result.diff else None,
                ),
                obj,
            )
        needs_approval = converted.action not in _NOTIFY_ONLY and (
            self.config.approval or request.guardrails.approval is Approval.REQUIRED
        )
        if needs_approval and not approved:
            return self._pend(request, action, ctx, obj)
        result = _perform(action, ctx)
        if result.status is ActionStatus.FAILED:
            return self._failed(request, result, obj)
        if result.status is ActionStatus.SKIPPED:
            return self._finish(
                request, _Outcome(Decision.SKIPPED, EngineStatus.SKIPPED, result.message, "action"), obj
            )
        self._executed.add(request.key)
        details: dict[str, Any] = {"status": result.status.value}
        if result.diff:
            details["diff"] = result.diff
        if manager is not None and self.config.gitops == "annotate" and obj is not None:
            details["gitops"] = self._annotate_drift(target, manager, request.key)
        noop = result.status is ActionStatus.NOOP
        return self._finish(
            request,
            _Outcome(
                Decision.NOOP if noop else Decision.EXECUTED,
                EngineStatus.NOOP if noop else EngineStatus.SUCCEEDED,
                result.message,
                details=details,
            ),
            None,  # the action wrote its own Event
        )

    def _context(self, request: ActionRequest) -> ActionContext:
        return ActionContext(
            kube=self.kube,
            request=request,
            clock=self.clock,
            publisher=self.publisher,
            instance=self.instance,
            stop=self.stop,
            environ=self.environ,
        )

    def _failed(self, request: EngineRequest, result: ActionResult, obj: Obj | None) -> EngineResult:
        details: dict[str, Any] = {"retryable": result.retryable}
        if result.retry_after is not None:
            details["retryAfter"] = result.retry_after
        return self._finish(
            request,
            _Outcome(
                Decision.FAILED,
                EngineStatus.FAILED,
                result.message,
                error=result.error,
                event="AiopsFailed" if obj is not None else "",
                details=details,
            ),
            obj,
        )

    def _pend(
        self, request: EngineRequest, action: Action, ctx: ActionContext, obj: Obj | None
    ) -> EngineResult:
        try:
            plan = str(action.plan(ctx))
        except RemediationError as exc:
            return self._finish(
                request,
                _Outcome(Decision.FAILED, EngineStatus.FAILED, str(exc), error=type(exc).__name__),
                obj,
            )
        now = self.clock.now()
        record = self.approvals.create(request.key, request.to_dict(), now, self.config.approval_ttl, plan)
        if record.state is not ApprovalState.PENDING:
            # decided already (by a person, before a restart): the tick acts on it
            return EngineResult(
                request.key,
                EngineStatus.PENDING_APPROVAL,
                f"approval {record.id} is {record.state.value}",
                now,
                {"approval": record.id},
            )
        message = f"waiting for approval {record.id}: aiops approve {record.id} | aiops reject {record.id}"
        return self._finish(
            request,
            _Outcome(
                Decision.PENDING_APPROVAL,
                EngineStatus.PENDING_APPROVAL,
                message,
                "approval",
                event="AiopsPendingApproval",
                details={"approval": record.id, "plan": plan, "expires": record.expires},
            ),
            obj,
        )

    def _tick_one(self, record: ApprovalRecord) -> None:
        now = self.clock.now()
        if record.state is ApprovalState.PENDING and now >= record.expires:
            request = request_from_dict(record.request)
            self.approvals.update(replace(record, state=ApprovalState.EXPIRED, outcome={"status": "failed"}))
            result = self._finish(
                request,
                _Outcome(
                    Decision.EXPIRED,
                    EngineStatus.FAILED,
                    f"approval {record.id} expired unanswered",
                    "approval",
                ),
                None,
            )
            self._report(result)
        elif record.state is ApprovalState.REJECTED and not record.outcome:
            request = request_from_dict(record.request)
            self.approvals.update(replace(record, outcome={"status": "skipped"}))
            message = f"approval {record.id} rejected by {record.decided_by or 'someone'}"
            if record.reason:
                message += f": {record.reason}"
            result = self._finish(
                request, _Outcome(Decision.REJECTED, EngineStatus.SKIPPED, message, "approval"), None
            )
            self._report(result)
        elif record.state is ApprovalState.APPROVED:
            request = request_from_dict(record.request)
            self._audit(
                request,
                _Outcome(
                    Decision.APPROVED,
                    EngineStatus.PENDING_APPROVAL,
                    f"approval {record.id} approved by {record.decided_by or 'someone'}",
                    "approval",
                ),
            )
            # Marked done before acting: a crash in between leaves the key annotation to stop a repeat.
            self.approvals.update(replace(record, state=ApprovalState.DONE, outcome={"status": "running"}))
            result = self._submit(request, approved=True)
            self.approvals.update(replace(record, state=ApprovalState.DONE, outcome=result.to_dict()))
            self._report(result)

    def _report(self, result: EngineResult) -> None:
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

    def _audit(self, request: EngineRequest, outcome: _Outcome) -> None:
        record = AuditRecord(
            time=self.clock.now(),
            decision=outcome.decision,
            key=request.key,
            action=request.action,
            target=request.target.to_dict(),
            message=outcome.message,
            playbook=request.playbook,
            incident=request.incident,
            step=request.step,
            guardrail=outcome.guardrail,
            error=outcome.error,
            instance=self.instance,
            details=dict(outcome.details or {}),
        )
        self.audit.record(record)
        if self.metrics is not None:
            self.metrics.actions.labels(request.action, outcome.decision.value).inc()

    def _finish(self, request: EngineRequest, outcome: _Outcome, obj: Obj | None) -> EngineResult:
        self._audit(request, outcome)
        if outcome.event and obj is not None and self.config.events:
            event_type: EventType = "Warning" if outcome.decision is Decision.FAILED else "Normal"
            note = (
                f"{request.action}: {outcome.message} "
                f"(playbook {request.playbook}, incident {request.incident})"
            )
            try_record_event(
                self.kube,
                request.target.kind,
                obj,
                reason=outcome.event,
                message=note[:1024],
                clock=self.clock,
                event_type=event_type,
                action=request.action,
                key=request.key,
                instance=self.instance,
            )
        details: dict[str, Any] = {"decision": outcome.decision.value}
        if outcome.guardrail:
            details["guardrail"] = outcome.guardrail
        if outcome.error:
            details["error"] = outcome.error
        details.update(outcome.details or {})
        return EngineResult(request.key, outcome.status, outcome.message, self.clock.now(), details)
