"""The StatefulSet controller, simplified: pods ``<name>-0 .. <name>-(n-1)`` with stable names.

OrderedReady creates one pod at a time, each after the previous one is Running and Ready, and
removes from the highest ordinal; Parallel does all at once. A template change rolls pods from the
highest ordinal down (respecting ``partition``), one at a time, each after all pods are ready.
"""

from __future__ import annotations

from simulations.twin.controllers.base import Context, owned_by, strip_zeros
from simulations.twin.controllers.replicaset import is_active, is_available, is_ready, pod_from_template
from simulations.twin.objects import Obj, clone, labels_of, metadata, name_of, namespace_of, template_hash
from simulations.twin.resources.apps import STATEFULSETS
from simulations.twin.resources.core import PODS

COMPONENT = "statefulset-controller"
REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def _ordinal(sts: Obj, pod: Obj) -> int:
    suffix = name_of(pod)[len(name_of(sts)) + 1 :]
    return int(suffix) if suffix.isdigit() else -1


class StatefulSetController:
    """Keeps each StatefulSet's ordinal pods."""

    def sync(self, ctx: Context) -> None:
        """One pass over all StatefulSets."""
        sets, _ = ctx.store.list(STATEFULSETS)
        if not sets:
            return
        pods_by_owner = owned_by(ctx.store.list(PODS)[0])
        for sts in sets:
            if not sts["metadata"].get("deletionTimestamp"):
                self._sync_one(ctx, sts, pods_by_owner.get(sts["metadata"]["uid"], []))

    def next_due(self, ctx: Context) -> float | None:
        """Nothing is timed here: the kubelet's timings drive StatefulSets."""
        del ctx
        return None

    def _sync_one(self, ctx: Context, sts: Obj, pods: list[Obj]) -> None:
        spec = sts.get("spec") or {}
        wanted = int(spec.get("replicas", 1))
        revision = f"{name_of(sts)}-{template_hash(spec.get('template') or {})}"
        parallel = spec.get("podManagementPolicy") == "Parallel"
        by_ordinal = {_ordinal(sts, p): p for p in pods if is_active(p)}
        # Create missing ordinals (in order; OrderedReady waits for each to be ready).
        for ordinal in range(wanted):
            if ordinal in by_ordinal:
                if not parallel and not is_ready(by_ordinal[ordinal]):
                    break
                continue
            by_ordinal[ordinal] = self._create(ctx, sts, ordinal, revision)
            if not parallel:
                break
        # Remove ordinals beyond replicas, highest first.
        for ordinal in sorted((o for o in by_ordinal if o >= wanted), reverse=True):
            pod = by_ordinal.pop(ordinal)
            ctx.store.delete(PODS, namespace_of(pod), name_of(pod))
            ctx.event(
                sts,
                "SuccessfulDelete",
                f"delete Pod {name_of(pod)} in StatefulSet {name_of(sts)} successful",
                COMPONENT,
            )
            if not parallel:
                break
        # Roll outdated pods, highest ordinal first, once everything is ready.
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate" and len(by_ordinal) == wanted:
            partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
            if all(is_ready(p) for p in by_ordinal.values()):
                for ordinal in sorted(by_ordinal, reverse=True):
                    pod = by_ordinal[ordinal]
                    if ordinal >= partition and labels_of(pod).get(REVISION_LABEL) != revision:
                        ctx.store.delete(PODS, namespace_of(pod), name_of(pod))
                        del by_ordinal[ordinal]
                        break
        current = (sts.get("status") or {}).get("currentRevision") or revision
        active = list(by_ordinal.values())
        updated = sum(1 for p in active if labels_of(p).get(REVISION_LABEL) == revision)
        if updated == len(active) == wanted:
            current = revision
        min_ready = int(spec.get("minReadySeconds") or 0)
        status = strip_zeros(
            {
                "observedGeneration": int(sts["metadata"].get("generation") or 0),
                "replicas": len(active),
                "readyReplicas": sum(1 for p in active if is_ready(p)),
                "currentReplicas": sum(1 for p in active if labels_of(p).get(REVISION_LABEL) == current),
                "updatedReplicas": updated,
                "availableReplicas": sum(1 for p in active if is_available(p, min_ready, ctx.now)),
            },
            keep=("replicas", "availableReplicas"),
        )
        status.update({"currentRevision": current, "updateRevision": revision, "collisionCount": 0})
        if status != sts.get("status"):
            ctx.store.update(
                STATEFULSETS, namespace_of(sts), name_of(sts), {**sts, "status": status}, subresource="status"
            )

    @staticmethod
    def _create(ctx: Context, sts: Obj, ordinal: int, revision: str) -> Obj:
        spec = sts.get("spec") or {}
        template = clone(spec.get("template") or {})
        body = pod_from_template(sts, template, "")
        meta = metadata(body)
        del meta["generateName"]
        meta["name"] = f"{name_of(sts)}-{ordinal}"
        labels = meta.setdefault("labels", {})
        labels.update({REVISION_LABEL: revision, POD_NAME_LABEL: meta["name"], POD_INDEX_LABEL: str(ordinal)})
        body["spec"]["hostname"] = meta["name"]
        if spec.get("serviceName"):
            body["spec"]["subdomain"] = spec["serviceName"]
        pod = ctx.store.create(PODS, namespace_of(sts), body)
        ctx.event(
            sts,
            "SuccessfulCreate",
            f"create Pod {meta['name']} in StatefulSet {name_of(sts)} successful",
            COMPONENT,
        )
        return pod
