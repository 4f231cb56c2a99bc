"""The Deployment controller, following kube-controller-manager's ``deployment`` package.

- The new ReplicaSet is the one whose pod template equals the Deployment's (ignoring the
  ``pod-template-hash`` label); when there is none, one is created as ``<deployment>-<hash>`` with
  the next ``deployment.kubernetes.io/revision``. When the template goes back to an older one, that
  old ReplicaSet becomes the new one again and its revision is bumped (the old number goes to
  ``deployment.kubernetes.io/revision-history``), exactly as ``kubectl rollout undo`` expects.
- RollingUpdate scales the new ReplicaSet up within ``maxSurge`` and old ones down within
  ``maxUnavailable`` as pods become available; Recreate scales old ones to zero first.
- Status: replicas, updated, ready, available, unavailable, observedGeneration, and the
  Available / Progressing conditions (with ``progressDeadlineSeconds``).
- Once a rollout is complete, old ReplicaSets beyond ``revisionHistoryLimit`` are deleted.
"""

from __future__ import annotations

from simulations.twin.controllers.base import Context, SettledObjects, copies, owned_by, strip_zeros
from simulations.twin.errors import ApiError
from simulations.twin.objects import (
    Obj,
    annotations_of,
    clone,
    find_condition,
    format_time,
    metadata,
    name_of,
    namespace_of,
    owner_reference,
    parse_time,
    template_hash,
)
from simulations.twin.resources.apps import DEPLOYMENTS, REPLICASETS, resolve_int_or_percent

COMPONENT = "deployment-controller"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
POD_TEMPLATE_HASH = "pod-template-hash"
SKIP_COPY = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS})
"""Deployment annotations that are not copied to ReplicaSets (and that rollback keeps)."""


def revision_of(obj: Obj) -> int:
    """The ``deployment.kubernetes.io/revision`` annotation as a number (0 when absent)."""
    try:
        return int(annotations_of(obj).get(REVISION, "0"))
    except ValueError:
        return 0


def without_hash(template: Obj | None) -> Obj:
    """A pod template without the ``pod-template-hash`` label (``EqualIgnoreHash``)."""
    copy = clone(template or {})
    labels = (copy.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
        if not labels:
            copy["metadata"].pop("labels")
    return copy


def fenceposts(deployment: Obj) -> tuple[int, int]:
    """``(maxSurge, maxUnavailable)`` resolved against ``spec.replicas`` (``ResolveFenceposts``)."""
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    rolling = ((spec.get("strategy") or {}).get("rollingUpdate")) or {}
    surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(deployment: Obj) -> int:
    """``MaxUnavailable``: 0 for Recreate or no replicas, else the resolved value capped at replicas."""
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    if (spec.get("strategy") or {}).get("type") != "RollingUpdate" or replicas == 0:
        return 0
    return min(fenceposts(deployment)[1], replicas)


def _replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0))


def _status_count(rs: Obj, key: str) -> int:
    return int((rs.get("status") or {}).get(key) or 0)


def _created(obj: Obj) -> tuple[float, str]:
    return (parse_time(str(obj["metadata"]["creationTimestamp"])), name_of(obj))


def _deadline(deployment: Obj, now: float) -> float | None:
    """When an unfinished rollout of ``deployment`` passes its progress deadline, if after ``now``."""
    deadline = (deployment.get("spec") or {}).get("progressDeadlineSeconds")
    condition = find_condition(deployment, "Progressing")
    if deadline is None or condition is None or condition.get("status") != "True":
        return None
    if condition.get("reason") == "NewReplicaSetAvailable":
        return None
    when = parse_time(str(condition.get("lastUpdateTime"))) + int(deadline) + 1
    return when if when > now else None


class DeploymentController:
    """Rolls Deployments out through ReplicaSets."""

    def __init__(self) -> None:
        self._settled = SettledObjects()

    def sync(self, ctx: Context) -> None:
        """One pass over all Deployments.

        A Deployment is skipped while it and its ReplicaSets are as a sync of it that wrote
        nothing left them, until its progress deadline: the sync reads nothing else, and the time
        only through that deadline.
        """
        deployments = ctx.store.peek(DEPLOYMENTS)  # read only: copies of the ones synced
        if not deployments:
            return

        self._settled.sync_all(
            ctx,
            DEPLOYMENTS,
            deployments,
            owned_by(ctx.store.peek(REPLICASETS)),
            lambda d, owned: self._sync_one(ctx, d, copies(ctx, REPLICASETS, owned)),
            lambda d, _: _deadline(d, ctx.now),
        )

    def next_due(self, ctx: Context) -> float | None:
        """When an unfinished rollout passes its progress deadline."""
        due = [t for t in (_deadline(d, ctx.now) for d in ctx.store.peek(DEPLOYMENTS)) if t is not None]
        return min(due) if due else None

    # ------------------------------------------------------------ one deployment

    def _sync_one(self, ctx: Context, deployment: Obj, owned: list[Obj]) -> None:
        spec = deployment.get("spec") or {}
        owned.sort(key=_created)
        template = without_hash(spec.get("template"))
        new_rs = next(
            (rs for rs in owned if without_hash((rs.get("spec") or {}).get("template")) == template), None
        )
        old = [rs for rs in owned if rs is not new_rs]
        created_now = False
        found_condition = False
        collision = (deployment.get("status") or {}).get("collisionCount")
        if spec.get("paused"):
            self._scale_paused(ctx, deployment, new_rs, old)
        else:
            new_revision = max((revision_of(rs) for rs in old), default=0) + 1
            if new_rs is not None:
                new_rs = self._sync_new_annotations(ctx, deployment, new_rs, new_revision)
                found_condition = find_condition(deployment, "Progressing") is None
            else:
                new_rs, collision = self._create_new(ctx, deployment, owned, new_revision, collision)
                created_now = new_rs is not None
            if new_rs is not None:
                if (spec.get("strategy") or {}).get("type") == "Recreate":
                    self._recreate(ctx, deployment, new_rs, old)
                else:
                    new_rs = self._rolling(ctx, deployment, new_rs, old)
        # Re-read what this pass may have written: the owned sets and the new one (not the whole
        # namespace, which made a pass quadratic in the number of Deployments).
        names = {name_of(rs) for rs in owned} | ({name_of(new_rs)} if new_rs is not None else set())
        fresh = (ctx.store.find(REPLICASETS, namespace_of(deployment), name) for name in sorted(names))
        owned = sorted((rs for rs in fresh if rs is not None), key=_created)
        owned = [
            rs
            for rs in owned
            if any(
                r.get("uid") == deployment["metadata"]["uid"] and r.get("controller")
                for r in rs["metadata"].get("ownerReferences") or []
            )
        ]
        if new_rs is not None:
            new_rs = next((rs for rs in owned if rs["metadata"]["uid"] == new_rs["metadata"]["uid"]), None)
        old = [rs for rs in owned if new_rs is None or rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        status = self._status(ctx, deployment, new_rs, owned, collision, created_now, found_condition)
        annotations = annotations_of(deployment)
        if new_rs is not None and annotations.get(REVISION) != str(revision_of(new_rs)):
            annotations[REVISION] = str(revision_of(new_rs))
        if status != deployment.get("status") or annotations != annotations_of(deployment):
            body = clone(deployment)
            body["status"] = status
            metadata(body)["annotations"] = annotations
            deployment = ctx.store.update(
                DEPLOYMENTS, namespace_of(deployment), name_of(deployment), body, subresource="status"
            )
        if self._complete(deployment, status):
            self._cleanup(ctx, deployment, old)

    # ------------------------------------------------------------ new replica set

    def _sync_new_annotations(self, ctx: Context, deployment: Obj, rs: Obj, new_revision: int) -> Obj:
        body = clone(rs)
        notes = metadata(body).setdefault("annotations", {})
        for key, value in annotations_of(deployment).items():
            if key not in SKIP_COPY:
                notes[key] = value
        old_revision = notes.get(REVISION, "")
        if revision_of(rs) < new_revision:
            notes[REVISION] = str(new_revision)
            if old_revision:
                history = notes.get(REVISION_HISTORY, "")
                notes[REVISION_HISTORY] = f"{history},{old_revision}" if history else old_revision
        wanted_ready = (deployment.get("spec") or {}).get("minReadySeconds")
        if (body.get("spec") or {}).get("minReadySeconds") != wanted_ready:
            if wanted_ready is None:
                body["spec"].pop("minReadySeconds", None)
            else:
                body["spec"]["minReadySeconds"] = wanted_ready
        if body == rs:
            return rs
        return ctx.store.update(REPLICASETS, namespace_of(rs), name_of(rs), body)

    def _create_new(
        self, ctx: Context, deployment: Obj, owned: list[Obj], revision: int, collision: int | None
    ) -> tuple[Obj | None, int | None]:
        spec = deployment["spec"]
        template = without_hash(spec.get("template"))
        pod_hash = template_hash(template, collision)
        template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = pod_hash
        selector = clone(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = pod_hash
        replicas = int(spec.get("replicas", 1))
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            initial = 0
        else:
            surge = fenceposts(deployment)[0]
            current = sum(_replicas(rs) for rs in owned)
            initial = max(0, min(replicas + surge - current, replicas))
        notes = {k: v for k, v in annotations_of(deployment).items() if k not in SKIP_COPY}
        notes[REVISION] = str(revision)
        notes[DESIRED_REPLICAS] = str(replicas)
        notes[MAX_REPLICAS] = str(replicas + fenceposts(deployment)[0])
        body: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name_of(deployment)}-{pod_hash}",
                "namespace": namespace_of(deployment),
                "labels": dict(template["metadata"]["labels"]),
                "annotations": notes,
                "ownerReferences": [owner_reference(deployment)],
            },
            "spec": {"replicas": initial, "selector": selector, "template": template},
        }
        if spec.get("minReadySeconds") is not None:
            body["spec"]["minReadySeconds"] = spec["minReadySeconds"]
        try:
            rs = ctx.store.create(REPLICASETS, namespace_of(deployment), body)
        except ApiError as error:
            if error.code != 409:
                raise
            # A ReplicaSet of that name with another template: bump collisionCount and retry next pass.
            return None, (collision or 0) + 1
        if initial > 0:
            ctx.event(
                deployment,
                "ScalingReplicaSet",
                f"Scaled up replica set {name_of(rs)} from 0 to {initial}",
                COMPONENT,
            )
        return rs, collision

    # ------------------------------------------------------------ strategies

    def _scale(self, ctx: Context, deployment: Obj, rs: Obj, replicas: int) -> Obj:
        spec = deployment.get("spec") or {}
        wanted = int(spec.get("replicas", 1))
        notes = {DESIRED_REPLICAS: str(wanted), MAX_REPLICAS: str(wanted + fenceposts(deployment)[0])}
        current = _replicas(rs)
        if current == replicas and all(annotations_of(rs).get(k) == v for k, v in notes.items()):
            return rs
        body = clone(rs)
        body["spec"]["replicas"] = replicas
        metadata(body).setdefault("annotations", {}).update(notes)
        updated = ctx.store.update(REPLICASETS, namespace_of(rs), name_of(rs), body)
        if current != replicas:
            direction = "up" if replicas > current else "down"
            ctx.event(
                deployment,
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {name_of(rs)} from {current} to {replicas}",
                COMPONENT,
            )
        return updated

    def _rolling(self, ctx: Context, deployment: Obj, new_rs: Obj, old: list[Obj]) -> Obj:
        wanted = int(deployment["spec"].get("replicas", 1))
        surge, unavailable = fenceposts(deployment)
        current_new = _replicas(new_rs)
        if current_new > wanted:
            new_rs = self._scale(ctx, deployment, new_rs, wanted)
        elif current_new < wanted:
            total = current_new + sum(_replicas(rs) for rs in old)
            if total < wanted + surge:
                step = min(wanted + surge - total, wanted - current_new)
                new_rs = self._scale(ctx, deployment, new_rs, current_new + step)
        old_pods = sum(_replicas(rs) for rs in old)
        if old_pods == 0:
            return new_rs
        all_pods = _replicas(new_rs) + old_pods
        min_available = wanted - min(unavailable, wanted)
        new_unavailable = _replicas(new_rs) - _status_count(new_rs, "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return new_rs
        old = sorted(old, key=_created)
        cleaned = 0
        for i, rs in enumerate(old):
            if cleaned >= max_scaled_down:
                break
            count, available = _replicas(rs), _status_count(rs, "availableReplicas")
            if count == 0 or count <= available:
                continue
            down = min(max_scaled_down - cleaned, count - available)
            old[i] = self._scale(ctx, deployment, rs, count - down)
            cleaned += down
        available = _status_count(new_rs, "availableReplicas") + sum(
            _status_count(rs, "availableReplicas") for rs in old
        )
        if available <= min_available:
            return new_rs
        budget, scaled = available - min_available, 0
        for i, rs in enumerate(old):
            if scaled >= budget:
                break
            count = _replicas(rs)
            if count == 0:
                continue
            down = min(count, budget - scaled)
            old[i] = self._scale(ctx, deployment, rs, count - down)
            scaled += down
        return new_rs

    def _scale_paused(self, ctx: Context, deployment: Obj, new_rs: Obj | None, old: list[Obj]) -> None:
        """A paused Deployment still scales: the only active (or the newest) ReplicaSet takes the count."""
        wanted = int(deployment["spec"].get("replicas", 1))
        active = [rs for rs in ([new_rs] if new_rs is not None else []) + old if _replicas(rs) > 0]
        if len(active) == 1:
            target: Obj | None = active[0]
        elif not active:
            target = new_rs if new_rs is not None else (max(old, key=_created) if old else None)
        else:
            target = None  # proportional scaling across several active ReplicaSets is not simulated
        if target is not None and _replicas(target) != wanted:
            self._scale(ctx, deployment, target, wanted)

    def _recreate(self, ctx: Context, deployment: Obj, new_rs: Obj, old: list[Obj]) -> None:
        if any(_replicas(rs) > 0 for rs in old):
            for rs in old:
                if _replicas(rs) > 0:
                    self._scale(ctx, deployment, rs, 0)
            return
        if any(_status_count(rs, "replicas") > 0 for rs in old):
            return
        self._scale(ctx, deployment, new_rs, int(deployment["spec"].get("replicas", 1)))

    # ------------------------------------------------------------ status

    @staticmethod
    def _complete(deployment: Obj, status: Obj) -> bool:
        wanted = int((deployment.get("spec") or {}).get("replicas", 1))
        return (
            int(status.get("updatedReplicas") or 0) == wanted
            and int(status.get("replicas") or 0) == wanted
            and int(status.get("availableReplicas") or 0) == wanted
            and int(status.get("observedGeneration") or 0)
            >= int(deployment["metadata"].get("generation") or 0)
        )

    def _status(
        self,
        ctx: Context,
        deployment: Obj,
        new_rs: Obj | None,
        owned: list[Obj],
        collision: int | None,
        created_now: bool,
        found_new: bool,
    ) -> Obj:
        spec = deployment.get("spec") or {}
        wanted = int(spec.get("replicas", 1))
        available = sum(_status_count(rs, "availableReplicas") for rs in owned)
        total = sum(_replicas(rs) for rs in owned)
        counts = {
            "observedGeneration": int(deployment["metadata"].get("generation") or 0),
            "replicas": sum(_status_count(rs, "replicas") for rs in owned),
            "updatedReplicas": _status_count(new_rs, "replicas") if new_rs is not None else 0,
            "readyReplicas": sum(_status_count(rs, "readyReplicas") for rs in owned),
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
        }
        status: Obj = strip_zeros(counts)
        old_status = deployment.get("status") or {}
        conditions = [clone(c) for c in old_status.get("conditions") or []]
        now = format_time(ctx.now)
        if available >= wanted - max_unavailable(deployment):
            conditions = _set(
                conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                now,
            )
        else:
            conditions = _set(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                now,
            )
        deadline = spec.get("progressDeadlineSeconds")
        if deadline is not None and not spec.get("paused") and new_rs is not None:
            rs_name = name_of(new_rs)
            if created_now:
                conditions = _set(
                    conditions,
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    f'Created new replica set "{rs_name}"',
                    now,
                )
            elif found_new:
                conditions = _set(
                    conditions,
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    f'Found new replica set "{rs_name}"',
                    now,
                )
            current = next((c for c in conditions if c["type"] == "Progressing"), None)
            settled = (
                status.get("replicas", 0) == status.get("updatedReplicas", 0)
                and current is not None
                and current.get("reason") == "NewReplicaSetAvailable"
            )
            if not settled:
                if self._complete(deployment, status):
                    conditions = _set(
                        conditions,
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        f'ReplicaSet "{rs_name}" has successfully progressed.',
                        now,
                    )
                elif _progressing(old_status, status):
                    fresh = _condition(
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        f'ReplicaSet "{rs_name}" is progressing.',
                        now,
                    )
                    if current is not None and current.get("status") == "True":
                        fresh["lastTransitionTime"] = current.get("lastTransitionTime", now)
                    conditions = [c for c in conditions if c["type"] != "Progressing"] + [fresh]
                elif current is not None and (
                    current.get("reason") == "ProgressDeadlineExceeded"
                    or parse_time(str(current.get("lastUpdateTime"))) + int(deadline) < ctx.now
                ):
                    conditions = _set(
                        conditions,
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        f'ReplicaSet "{rs_name}" has timed out progressing.',
                        now,
                    )
        if conditions:
            status["conditions"] = conditions
        if collision is not None:
            status["collisionCount"] = collision
        return status

    def _cleanup(self, ctx: Context, deployment: Obj, old: list[Obj]) -> None:
        limit = (deployment.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        alive = [rs for rs in old if not rs["metadata"].get("deletionTimestamp")]
        excess = len(alive) - int(limit)
        if excess <= 0:
            return
        for rs in sorted(alive, key=revision_of)[:excess]:
            if (
                _replicas(rs) != 0
                or _status_count(rs, "replicas") != 0
                or int(rs["metadata"].get("generation") or 0) > _status_count(rs, "observedGeneration")
            ):
                continue
            ctx.store.delete(REPLICASETS, namespace_of(rs), name_of(rs))


def _condition(kind: str, status: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def _set(conditions: list[Obj], kind: str, status: str, reason: str, message: str, now: str) -> list[Obj]:
    """``SetDeploymentCondition``: same status and reason change nothing; same status keeps the transition."""
    current = next((c for c in conditions if c["type"] == kind), None)
    if current is not None and current.get("status") == status and current.get("reason") == reason:
        return conditions
    fresh = _condition(kind, status, reason, message, now)
    if current is not None and current.get("status") == status:
        fresh["lastTransitionTime"] = current.get("lastTransitionTime", now)
    return [c for c in conditions if c["type"] != kind] + [fresh]


def _progressing(old: Obj, new: Obj) -> bool:
    """``DeploymentProgressing``: more updated, fewer old, more ready or more available replicas."""

    def get(status: Obj, key: str) -> int:
        return int(status.get(key) or 0)

    old_old = get(old, "replicas") - get(old, "updatedReplicas")
    new_old = get(new, "replicas") - get(new, "updatedReplicas")
    return (
        get(new, "updatedReplicas") > get(old, "updatedReplicas")
        or new_old < old_old
        or get(new, "readyReplicas") > get(old, "readyReplicas")
        or get(new, "availableReplicas") > get(old, "availableReplicas")
    )
