"""``restart``: a rolling restart, as ``kubectl rollout restart`` does it.

It sets the pod-template annotation ``kubectl.kubernetes.io/restartedAt`` to the current time,
which changes the template, so the controller replaces the pods one by one under its rollout
strategy (a new ReplicaSet for a Deployment). The same strategic merge patch records the
idempotency key in ``aiops.dev/executed-keys`` and carries the resourceVersion read, so the
restart and its record are one write, and a request executed twice restarts once.
"""

from __future__ import annotations

from typing import Any, ClassVar

from remediations import state as notes
from remediations.base import BaseAction
from remediations.diff import render
from remediations.events import timestamp
from remediations.kube import PatchType
from remediations.params import ActionParams
from remediations.types import ActionClass, ActionContext, ActionResult, ActionStatus, Plan

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

Obj = dict[str, Any]


class RestartParams(ActionParams):
    """Parameters of ``restart``: none."""

    action: ClassVar[str] = "restart"

    def describe(self) -> str:
        """Plain words."""
        return "restart the target's pods, rolling, as kubectl rollout restart does"


def _restarted_at(obj: Obj) -> str | None:
    template = (obj.get("spec") or {}).get("template") or {}
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
    return str(value) if value is not None else None


class RestartAction(BaseAction[RestartParams]):
    """Rolling restart of a Deployment, StatefulSet or DaemonSet."""

    name: ClassVar[str] = "restart"
    params_model: ClassVar[type[ActionParams]] = RestartParams
    target_kinds: ClassVar[frozenset[str]] = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
    action_class: ClassVar[ActionClass] = ActionClass.CORRECTIVE

    def _diff(self, ctx: ActionContext, obj: Obj, when: str) -> str:
        target = ctx.target
        before = {
            "spec": {
                "template": {"metadata": {"annotations": {RESTARTED_AT: _restarted_at(obj) or "(unset)"}}}
            }
        }
        after = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: when}}}}}
        return render(f"{target.kind} {target.namespace}/{target.name}", before, after)

    def _plan(self, ctx: ActionContext) -> Plan:
        target = ctx.target
        obj = self.read_target(ctx)
        if notes.was_executed(obj, ctx.request.key):
            return Plan(
                self.name, target, f"nothing to do: {ctx.request.key} already executed", changes=False
            )
        when = timestamp(ctx.clock.now())
        summary = f"restart the pods of {target}, rolling"
        if (obj.get("spec") or {}).get("paused"):
            summary += " (it is paused: the pods roll when it is resumed)"
        return Plan(self.name, target, summary, self._diff(ctx, obj, when), details={"restartedAt": when})

    def _execute(self, ctx: ActionContext) -> ActionResult:
        target, kube, key = ctx.target, ctx.kube, ctx.request.key
        when = timestamp(ctx.clock.now())
        outcome: dict[str, Any] = {}

        def restart(obj: Obj) -> Obj | None:
            if notes.was_executed(obj, key):
                return None
            outcome["diff"] = self._diff(ctx, obj, when)
            body = notes.record_key_patch(obj, key)
            body["spec"] = {"template": {"metadata": {"annotations": {RESTARTED_AT: when}}}}
            return body

        _, written = kube.read_modify_write(
            lambda: self.read_target(ctx),
            restart,
            lambda _, body: kube.patch(target.kind, target.namespace, target.name, body, PatchType.STRATEGIC),
        )
        if written is None:
            return self.result(ctx, ActionStatus.NOOP, f"already executed: {key}")
        message = f"restarted the pods of {target} (restartedAt {when})"
        details = {"restartedAt": when, "event": self.event(ctx, written, "AiopsRestarted", message)}
        return self.result(ctx, ActionStatus.EXECUTED, message, diff=outcome["diff"], details=details)
