"""``delete_pod``: delete one pod of a workload, so its controller replaces it; rate-limited per window.

The target is the workload (Deployment, StatefulSet, ReplicaSet, DaemonSet) or one of its pods.
The pod to delete is named (``pod``), selected by a label selector (``selector``), or, with
neither, chosen among the workload's pods: not-ready first, then the most restarts, then the
oldest. Only pods the workload controls are ever candidates, and a pod without a controller is
refused (nothing would replace it).

One pod per execution, and never more than ``maxPerWindow`` per ``window`` per workload: each
deletion is recorded on the workload (``aiops.dev/pod-deletions``) before the pod is deleted,
with the resourceVersion as a precondition, so two agents cannot both take the last slot. The
record carries the idempotency key: executing the request again finishes the deletion it
recorded (if the pod is still there) or does nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from remediations import state as notes
from remediations.base import BaseAction
from remediations.diff import render
from remediations.errors import ActionRefused, ConflictError, NotFoundError
from remediations.events import timestamp
from remediations.kube import KubeClients, PatchType
from remediations.names import selector_from_label_selector
from remediations.params import ActionParams, Duration, KubernetesName, LabelSelector
from remediations.types import ActionClass, ActionContext, ActionResult, ActionStatus, Plan, Target

DELETIONS = notes.PREFIX + "pod-deletions"
KEEP_SECONDS = 86_400.0
KEEP_ENTRIES = 100
SKEW = 60.0
"""A deletion dated further ahead of the agent's clock than this (another replica's) is not believed."""
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"})

Obj = dict[str, Any]


class DeletePodParams(ActionParams):
    """Parameters of ``delete_pod``: which pod (name, selector, or the unhealthiest) and the rate limit."""

    action: ClassVar[str] = "delete_pod"

    pod: KubernetesName | None = Field(None, description="the pod to delete, e.g. '{{ labels.pod }}'")
    selector: LabelSelector | None = Field(
        None, description="choose among the workload's pods matching this label selector"
    )
    max_per_window: int = Field(
        1,
        alias="maxPerWindow",
        ge=1,
        le=100,
        description="at most this many deletions per window per workload",
    )
    window: Duration = Field(600.0, gt=0, le=KEEP_SECONDS, description="the rate-limit window")
    grace_period: Duration | None = Field(
        None,
        alias="gracePeriod",
        ge=0,
        le=3600,
        description="how long the pod gets to stop; default: its own",
    )

    @model_validator(mode="after")
    def _one_choice(self) -> DeletePodParams:
        if self.pod is not None and self.selector is not None:
            msg = "delete_pod takes at most one of pod, selector"
            raise ValueError(msg)
        return self

    def describe(self) -> str:
        """Plain words."""
        which = (
            f"pod {self.pod}"
            if self.pod
            else f"one pod matching {self.selector}"
            if self.selector
            else "one pod"
        )
        return f"delete {which} (at most {self.max_per_window} per {self.window:g} s)"


# ---------------------------------------------------------------- pods and owners


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def controller_of(obj: Obj) -> Obj | None:
    """The owner reference marked ``controller: true``."""
    for ref in _meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def is_ready(pod: Obj) -> bool:
    """Whether the pod's Ready condition is True."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def restarts(pod: Obj) -> int:
    """Container restarts of the pod."""
    return sum(
        int(c.get("restartCount") or 0) for c in (pod.get("status") or {}).get("containerStatuses") or []
    )


def _rank(pod: Obj) -> tuple[bool, int, str, str]:
    meta = _meta(pod)
    return (is_ready(pod), -restarts(pod), str(meta.get("creationTimestamp") or ""), str(meta.get("name")))


def _describe_pod(pod: Obj) -> str:
    phase = (pod.get("status") or {}).get("phase") or "Unknown"
    ready = "ready" if is_ready(pod) else "not ready"
    return f"{_meta(pod).get('name')} ({phase}, {ready}, {restarts(pod)} restarts)"


class _Owner:
    """The workload that owns the pods, as read, and its kind."""

    def __init__(self, kind: str, obj: Obj) -> None:
        self.kind = kind
        self.obj = obj

    @property
    def name(self) -> str:
        return str(_meta(self.obj).get("name") or "")

    @property
    def namespace(self) -> str:
        return str(_meta(self.obj).get("namespace") or "")

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


def resolve_owner(kube: KubeClients, target: Target) -> tuple[_Owner, Obj | None]:
    """The workload the pods belong to, and the target pod when the target is a Pod."""
    if target.kind != "Pod":
        return _Owner(target.kind, kube.get(target.kind, target.namespace, target.name)), None
    pod = kube.get("Pod", target.namespace, target.name)
    ref = controller_of(pod)
    if ref is None:
        msg = f"pod {target.namespace}/{target.name} has no controller: deleting it would not replace it"
        raise ActionRefused(msg)
    kind, name = str(ref.get("kind")), str(ref.get("name"))
    if kind not in WORKLOAD_KINDS:
        pod_name = f"{target.namespace}/{target.name}"
        msg = f"pod {pod_name} is controlled by a {kind}, not a workload delete_pod handles"
        raise ActionRefused(msg)
    owner = kube.get(kind, target.namespace, name)
    up = controller_of(owner) if kind == "ReplicaSet" else None
    if up is not None and up.get("kind") == "Deployment":
        return _Owner("Deployment", kube.get("Deployment", target.namespace, str(up.get("name")))), pod
    return _Owner(kind, owner), pod


def pods_of(kube: KubeClients, owner: _Owner, selector: str | None) -> list[Obj]:
    """The pods the owner controls (through its ReplicaSets for a Deployment), matching ``selector``."""
    own = selector_from_label_selector((owner.obj.get("spec") or {}).get("selector"))
    if not own:
        return []
    query = ",".join(s for s in (own, selector) if s)
    controllers = {str(_meta(owner.obj).get("uid"))}
    if owner.kind == "Deployment":
        for rs in kube.list_objects("ReplicaSet", owner.namespace, label_selector=own):
            ref = controller_of(rs)
            if ref is not None and ref.get("uid") in controllers:
                controllers.add(str(_meta(rs).get("uid")))
    pods = kube.list_objects("Pod", owner.namespace, label_selector=query)
    return [p for p in pods if (controller_of(p) or {}).get("uid") in controllers]


def controls(kube: KubeClients, owner: _Owner, pod: Obj) -> bool:
    """Whether ``owner`` controls ``pod`` (a Deployment through a ReplicaSet it controls)."""
    ref = controller_of(pod)
    if ref is None:
        return False
    uid = _meta(owner.obj).get("uid")
    if ref.get("uid") == uid:
        return True
    if owner.kind != "Deployment" or ref.get("kind") != "ReplicaSet":
        return False
    try:
        rs = kube.get("ReplicaSet", owner.namespace, str(ref.get("name")))
    except NotFoundError:
        return False
    up = controller_of(rs)
    return _meta(rs).get("uid") == ref.get("uid") and up is not None and up.get("uid") == uid


def deletions(owner: Obj) -> list[dict[str, Any]]:
    """The deletions recorded on the workload, oldest first (entries without a finite time left out)."""
    value = notes.read_json(owner, DELETIONS)
    if not isinstance(value, list):
        return []
    return [e for e in value if isinstance(e, dict) and notes.finite_number(e.get("at"))]


class DeletePodAction(BaseAction[DeletePodParams]):
    """Delete one pod of a workload, at most ``maxPerWindow`` per ``window``."""

    name: ClassVar[str] = "delete_pod"
    params_model: ClassVar[type[ActionParams]] = DeletePodParams
    target_kinds: ClassVar[frozenset[str]] = WORKLOAD_KINDS | {"Pod"}
    action_class: ClassVar[ActionClass] = ActionClass.CORRECTIVE

    def _candidates(self, ctx: ActionContext, owner: _Owner, pod: Obj | None) -> list[Obj]:
        params = self.params(ctx)
        if pod is not None:
            if params.pod is not None and params.pod != ctx.target.name:
                msg = f"delete_pod on {ctx.target} names another pod ({params.pod}): refused"
                raise ActionRefused(msg)
            found = [pod]
        else:
            found = pods_of(ctx.kube, owner, params.selector)
            if params.pod is not None:
                found = [p for p in found if _meta(p).get("name") == params.pod]
        alive = [p for p in found if not _meta(p).get("deletionTimestamp")]
        if not alive:
            which = (
                f"pod {params.pod}"
                if params.pod
                else f"pod matching {params.selector}"
                if params.selector
                else "pod"
            )
            msg = (
                f"no {which} of {owner} to delete (only pods it controls and that are not terminating count)"
            )
            raise ActionRefused(msg)
        return sorted(alive, key=_rank)

    def _window(self, ctx: ActionContext, owner: Obj) -> list[dict[str, Any]]:
        params = self.params(ctx)
        now = ctx.clock.now()
        recorded = deletions(owner)
        future = [e for e in recorded if float(e["at"]) > now + SKEW]
        if future:
            # the agent dates its entries by its clock: one dated later was not written by it, and
            # would hold the window shut until then
            why = f"{len(future)} deletion(s) dated after now left out"
            notes.unreadable(owner, DELETIONS, why)
        recent = [e for e in recorded if now - params.window < float(e["at"]) <= now + SKEW]
        if len(recent) >= params.max_per_window:
            oldest = min(float(e["at"]) for e in recent)
            msg = (
                f"delete_pod limit reached for {ctx.target}: {len(recent)} pod(s) deleted in the last "
                f"{params.window:g} s (maxPerWindow {params.max_per_window}); next allowed after "
                f"{timestamp(oldest + params.window)}"
            )
            raise ActionRefused(msg)
        return recent

    def _plan(self, ctx: ActionContext) -> Plan:
        target, key = ctx.target, ctx.request.key
        owner, pod = resolve_owner(ctx.kube, target)
        if any(e.get("key") == notes.stored_key(key) for e in deletions(owner.obj)):
            return Plan(self.name, target, f"nothing to do: {key} already executed", changes=False)
        recent = self._window(ctx, owner.obj)
        chosen = self._candidates(ctx, owner, pod)[0]
        params = self.params(ctx)
        summary = (
            f"delete pod {_describe_pod(chosen)} of {owner}; {len(recent)} of {params.max_per_window} "
            f"deletion(s) used in the last {params.window:g} s"
        )
        name = str(_meta(chosen).get("name"))
        diff = render(
            f"Pod {target.namespace}/{name}",
            {"pod": {"name": name, "uid": _meta(chosen).get("uid")}},
            {"pod": f"(deleted; {owner.kind} {owner.name} creates a replacement)"},
        )
        return Plan(self.name, target, summary, diff, details={"pod": name, "owner": str(owner)})

    def _execute(self, ctx: ActionContext) -> ActionResult:
        target, kube, key, params = ctx.target, ctx.kube, ctx.request.key, self.params(ctx)
        owner, pod = resolve_owner(kube, target)
        chosen: dict[str, Any] = {}

        def reserve(current: Obj) -> Obj | None:
            chosen.clear()
            entries = deletions(current)
            mine = next((e for e in entries if e.get("key") == notes.stored_key(key)), None)
            if mine is not None:
                chosen.update(entry=mine, earlier=True)
                return None
            recent = self._window(ctx, current)
            victim = self._candidates(ctx, _Owner(owner.kind, current), pod)[0]
            entry = {
                "at": ctx.clock.now(),
                "pod": _meta(victim).get("name"),
                "uid": _meta(victim).get("uid"),
                "key": notes.stored_key(key),
            }
            now = ctx.clock.now()
            keep = [e for e in entries if now - KEEP_SECONDS < float(e["at"]) <= now + SKEW][
                -KEEP_ENTRIES + 1 :
            ]
            chosen.update(entry=entry, earlier=False, used=len(recent) + 1, pod=victim)
            return notes.record_key_patch(current, key, {DELETIONS: notes.dump_json([*keep, entry])})

        owner_obj, written = kube.read_modify_write(
            lambda: kube.get(owner.kind, owner.namespace, owner.name),
            reserve,
            lambda _, body: kube.patch(owner.kind, owner.namespace, owner.name, body, PatchType.MERGE),
        )
        entry = chosen["entry"]
        name, uid = str(entry.get("pod")), str(entry.get("uid"))
        if chosen["earlier"]:
            # the entry was read back from the workload: it names the pod to delete, so that pod
            # must be one the workload controls, as when the entry was made
            try:
                recorded = kube.get("Pod", owner.namespace, name)
            except NotFoundError:
                return self.result(ctx, ActionStatus.NOOP, f"already executed: {key} (pod {name} is gone)")
            if _meta(recorded).get("uid") == uid and not controls(kube, owner, recorded):
                why = f"the deletion recorded for {key} names pod {name}, which {owner} does not control"
                notes.unreadable(owner_obj, DELETIONS, why)
                raise ActionRefused(f"{why}: refused, nothing deleted")
        grace = None if params.grace_period is None else round(params.grace_period)
        try:
            kube.delete("Pod", owner.namespace, name, uid=uid, grace_period=grace)
        except (NotFoundError, ConflictError):
            # Gone already, or replaced by a new pod of the same name (a StatefulSet's): done.
            if chosen["earlier"]:
                return self.result(ctx, ActionStatus.NOOP, f"already executed: {key} (pod {name} is gone)")
            message = f"pod {name} of {owner} was already gone; its deletion is recorded"
            return self.result(ctx, ActionStatus.NOOP, message, details={"pod": name})
        message = f"deleted pod {name} of {owner}"
        if not chosen["earlier"]:
            message += (
                f" ({chosen['used']} of at most {params.max_per_window} in {params.window:g} s; "
                f"was {_describe_pod(chosen['pod'])})"
            )
        else:
            message += " (finishing the deletion recorded before for this key)"
        diff = render(
            f"Pod {owner.namespace}/{name}", {"pod": {"name": name, "uid": uid}}, {"pod": "(deleted)"}
        )
        event_on = pod if pod is not None else (written or owner_obj)
        details = {
            "pod": name,
            "uid": uid,
            "owner": str(owner),
            "event": self.event(ctx, event_on, "AiopsPodDeleted", message),
        }
        return self.result(ctx, ActionStatus.EXECUTED, message, diff=diff, details=details)
