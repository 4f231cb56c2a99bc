"""The ReplicaSet controller: keep ``spec.replicas`` active pods from the template, report status."""

from __future__ import annotations

from simulations.twin.controllers.base import Context, SettledObjects, owned_by, strip_zeros
from simulations.twin.objects import (
    Obj,
    clone,
    find_condition,
    labels_of,
    name_of,
    namespace_of,
    owner_reference,
    parse_time,
)
from simulations.twin.resources.apps import REPLICASETS
from simulations.twin.resources.core import PODS
from simulations.twin.resources.podspec import template_labels

COMPONENT = "replicaset-controller"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def is_active(pod: Obj) -> bool:
    """Not terminated and not being deleted (``controller.IsPodActive``)."""
    return (pod.get("status") or {}).get("phase") not in {"Succeeded", "Failed"} and not (
        pod.get("metadata") or {}
    ).get("deletionTimestamp")


def is_ready(pod: Obj) -> bool:
    """The pod's Ready condition is True."""
    condition = find_condition(pod, "Ready")
    return condition is not None and condition.get("status") == "True"


def ready_since(pod: Obj) -> float | None:
    """When the pod last became ready (None when it is not ready)."""
    condition = find_condition(pod, "Ready")
    if condition is None or condition.get("status") != "True":
        return None
    try:
        return parse_time(str(condition.get("lastTransitionTime")))
    except ValueError:
        return None


def is_available(pod: Obj, min_ready_seconds: int, now: float) -> bool:
    """Ready for at least ``minReadySeconds``."""
    since = ready_since(pod)
    return since is not None and (min_ready_seconds <= 0 or since + min_ready_seconds <= now)


def pod_from_template(owner: Obj, template: Obj, generate_name: str) -> Obj:
    """A pod for ``owner`` from its pod template, controlled by ``owner``."""
    meta = clone(template.get("metadata") or {})
    pod_meta: Obj = {"generateName": generate_name, "namespace": namespace_of(owner)}
    for key in ("labels", "annotations"):
        if meta.get(key):
            pod_meta[key] = meta[key]
    pod_meta["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": clone(template.get("spec") or {}),
    }


def _deletion_rank(pod: Obj) -> tuple[int, int, int, float, int, float]:
    """Pods to delete first sort first: unscheduled, pending, not ready, recently ready, restarted, newest."""
    status = pod.get("status") or {}
    since = ready_since(pod)
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    created = parse_time(str(pod["metadata"]["creationTimestamp"]))
    return (
        1 if (pod.get("spec") or {}).get("nodeName") else 0,
        _PHASE_RANK.get(str(status.get("phase")), 1),
        1 if since is not None else 0,
        -(since or 0.0),
        -restarts,
        -created,
    )


def _next_available(rs: Obj, pods: list[Obj], now: float) -> float | None:
    """When the next of ``pods`` that is ready becomes available (``minReadySeconds``), if after ``now``."""
    wait = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
    if wait <= 0:
        return None
    due = [since + wait for since in map(ready_since, pods) if since is not None and since + wait > now]
    return min(due) if due else None


class ReplicaSetController:
    """Creates and deletes pods of every ReplicaSet; writes ``status``."""

    def __init__(self) -> None:
        self._settled = SettledObjects()

    def sync(self, ctx: Context) -> None:
        """One pass over all ReplicaSets.

        A ReplicaSet is skipped while it and its pods are as a sync of it that wrote nothing left
        them, until one of its pods becomes available (``minReadySeconds``): the sync reads
        nothing else, and the time only through that.
        """
        sets = ctx.store.peek(REPLICASETS)  # read only: copies of the ones synced
        if not sets:
            return
        pods_by_owner = owned_by(ctx.store.peek(PODS))  # read only: the stored pods
        self._settled.sync_all(
            ctx,
            REPLICASETS,
            sets,
            pods_by_owner,
            lambda rs, pods: self._sync_one(ctx, rs, pods),
            lambda rs, pods: _next_available(rs, pods, ctx.now),
        )

    def next_due(self, ctx: Context) -> float | None:
        """When a ready pod becomes available (``minReadySeconds``)."""
        pods_by_owner = owned_by(ctx.store.peek(PODS))  # read only: the stored pods
        times = (
            _next_available(rs, pods_by_owner.get(rs["metadata"]["uid"], []), ctx.now)
            for rs in ctx.store.peek(REPLICASETS)
        )
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def _sync_one(self, ctx: Context, rs: Obj, pods: list[Obj]) -> None:
        spec = rs.get("spec") or {}
        wanted = int(spec.get("replicas", 1))
        active = [p for p in pods if is_active(p)]
        diff = wanted - len(active)
        if diff > 0:
            template = spec.get("template") or {}
            for _ in range(diff):
                pod = ctx.store.create(
                    PODS, namespace_of(rs), pod_from_template(rs, template, name_of(rs) + "-")
                )
                active.append(pod)
                ctx.event(rs, "SuccessfulCreate", f"Created pod: {name_of(pod)}", COMPONENT)
        elif diff < 0:
            doomed = sorted(active, key=_deletion_rank)[:-diff]
            for pod in doomed:
                ctx.store.delete(PODS, namespace_of(pod), name_of(pod))
                ctx.event(rs, "SuccessfulDelete", f"Deleted pod: {name_of(pod)}", COMPONENT)
            gone = {p["metadata"]["uid"] for p in doomed}
            active = [p for p in active if p["metadata"]["uid"] not in gone]
        labels = template_labels(spec.get("template"))
        min_ready = int(spec.get("minReadySeconds") or 0)
        status = strip_zeros(
            {
                "replicas": len(active),
                "fullyLabeledReplicas": sum(
                    1 for p in active if all(labels_of(p).get(k) == v for k, v in labels.items())
                ),
                "readyReplicas": sum(1 for p in active if is_ready(p)),
                "availableReplicas": sum(1 for p in active if is_available(p, min_ready, ctx.now)),
                "observedGeneration": int(rs["metadata"].get("generation") or 0),
            },
            keep=("replicas",),
        )
        conditions = (rs.get("status") or {}).get("conditions")
        if conditions:
            status["conditions"] = conditions
        if status != rs.get("status"):
            ctx.store.update(
                REPLICASETS, namespace_of(rs), name_of(rs), {**rs, "status": status}, subresource="status"
            )
