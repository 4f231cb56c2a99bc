"""What every action shares: the checks before acting, dry-run, and turning failures into results.

:class:`BaseAction` implements the :class:`~remediations.types.Action` protocol around two
methods an action module writes, ``_plan`` and ``_execute``:

- ``plan(ctx)`` checks the request (the action's name, the target's kind, the namespace allow-list)
  and returns ``_plan(ctx)``: reads only;
- ``execute(ctx)`` does the same checks, returns the plan as a ``dry_run`` result when the request
  is a dry run, else ``_execute(ctx)``; any failure becomes a ``failed`` result naming the error,
  so a missing object or a forbidden namespace never crashes the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar, cast

from remediations.errors import ActionRefused, RemediationError
from remediations.events import EventType, try_record_event
from remediations.params import ActionParams
from remediations.types import ActionClass, ActionContext, ActionResult, ActionStatus, Plan

log = logging.getLogger(__name__)

P = TypeVar("P", bound=ActionParams)
Obj = dict[str, Any]


class BaseAction(Generic[P]):
    """The frame of an action: checks, dry-run, failures as results, Events."""

    name: ClassVar[str] = ""
    params_model: ClassVar[type[ActionParams]] = ActionParams
    target_kinds: ClassVar[frozenset[str]] = frozenset()
    action_class: ClassVar[ActionClass] = ActionClass.CORRECTIVE

    # ------------------------------------------------------------ the protocol

    def plan(self, ctx: ActionContext) -> Plan:
        """What executing would change; reads only. Raises a RemediationError when it cannot act."""
        self.check(ctx)
        return self._plan(ctx)

    def execute(self, ctx: ActionContext) -> ActionResult:
        """Act on the target, once per idempotency key; a dry-run request only plans."""
        try:
            self.check(ctx)
            if ctx.request.dry_run:
                plan = self._plan(ctx)
                return self.result(
                    ctx,
                    ActionStatus.DRY_RUN if plan.changes else ActionStatus.NOOP,
                    f"dry run, nothing written: {plan.summary}",
                    diff=plan.diff,
                    details=plan.details,
                )
            return self._execute(ctx)
        except RemediationError as error:
            return self.failure(ctx, error)
        except Exception as error:
            # A bug in an action must not take the executor down with it; it is logged in full.
            log.exception("action %s on %s failed unexpectedly", self.name, ctx.target)
            return self.failure(ctx, error)

    # ------------------------------------------------------------ for the action modules

    def _plan(self, ctx: ActionContext) -> Plan:
        raise NotImplementedError

    def _execute(self, ctx: ActionContext) -> ActionResult:
        raise NotImplementedError

    def check(self, ctx: ActionContext) -> None:
        """Refuse a request this action must not run: wrong action, kind or namespace."""
        request = ctx.request
        if request.action != self.name:
            msg = f"request for action {request.action!r} given to action {self.name!r}"
            raise ActionRefused(msg)
        if not isinstance(request.params, self.params_model):
            given, wanted = type(request.params).__name__, self.params_model.__name__
            msg = f"{self.name}: parameters are {given}, not {wanted}"
            raise ActionRefused(msg)
        if self.target_kinds and request.target.kind not in self.target_kinds:
            kinds = ", ".join(sorted(self.target_kinds))
            msg = f"{self.name} does not act on a {request.target.kind} (it acts on: {kinds})"
            raise ActionRefused(msg)
        allowed = request.limits.namespaces
        if allowed is not None and request.target.namespace not in allowed:
            msg = (
                f"{self.name} on {request.target}: namespace {request.target.namespace!r} is not in the "
                f"allowed namespaces ({', '.join(sorted(allowed)) or 'none'})"
            )
            raise ActionRefused(msg)

    def params(self, ctx: ActionContext) -> P:
        """The request's parameters, as this action's model."""
        return cast(P, ctx.request.params)

    def result(
        self,
        ctx: ActionContext,
        status: ActionStatus,
        message: str,
        *,
        diff: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> ActionResult:
        """A result for this request."""
        return ActionResult(
            status=status,
            message=message,
            action=self.name,
            key=ctx.request.key,
            target=ctx.request.target,
            diff=diff,
            details=dict(details or {}),
        )

    def failure(self, ctx: ActionContext, error: BaseException) -> ActionResult:
        """A ``failed`` result naming the error."""
        retryable = isinstance(error, RemediationError) and error.retryable
        message = str(error) if isinstance(error, RemediationError) else f"internal error: {error!r}"
        return ActionResult(
            status=ActionStatus.FAILED,
            message=message,
            action=self.name,
            key=ctx.request.key,
            target=ctx.request.target,
            error=type(error).__name__,
            retryable=retryable,
            retry_after=getattr(error, "delay", None) if retryable else None,
        )

    def event(
        self,
        ctx: ActionContext,
        obj: Obj,
        reason: str,
        message: str,
        *,
        kind: str | None = None,
        event_type: EventType = "Normal",
    ) -> str:
        """Write an Event on ``obj`` (default: the target's kind); returns its name or why it failed."""
        request = ctx.request
        note = f"{message} (playbook {request.playbook}, incident {request.incident})"
        if request.reason:
            note += f": {request.reason}"
        return try_record_event(
            ctx.kube,
            kind or request.target.kind,
            obj,
            reason=reason,
            message=note,
            clock=ctx.clock,
            event_type=event_type,
            action=self.name,
            key=request.key,
            instance=ctx.instance,
        )

    def read_target(self, ctx: ActionContext) -> Obj:
        """GET the target (NotFoundError naming it when it is missing)."""
        target = ctx.target
        return ctx.kube.get(target.kind, target.namespace, target.name)
