"""The HorizontalPodAutoscaler controller, without a metrics pipeline.

Each sync reads the target's replicas, asks the configured recommendation hook (the simulations
derive one from their workload model; without it the current count stands), clamps to
``[minReplicas, maxReplicas]`` and writes the target's ``spec.replicas``. So raising
``minReplicas`` scales the target up at once, as with the real controller. Syncs happen every
``hpa_sync_seconds`` and whenever the HPA's spec changes.
"""

from __future__ import annotations

from simulations.twin.controllers.base import Context
from simulations.twin.objects import Obj, clone, format_time, name_of, namespace_of, set_condition
from simulations.twin.resources.apps import DEPLOYMENTS, REPLICASETS, STATEFULSETS
from simulations.twin.resources.autoscaling import HORIZONTALPODAUTOSCALERS
from simulations.twin.resources.base import ResourceType

COMPONENT = "horizontal-pod-autoscaler"
_TARGETS: dict[str, ResourceType] = {
    "Deployment": DEPLOYMENTS,
    "StatefulSet": STATEFULSETS,
    "ReplicaSet": REPLICASETS,
}


def _condition(kind: str, ok: bool, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


class HorizontalPodAutoscalerController:
    """Clamps targets to the HPA bounds and applies the recommendation hook."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def sync(self, ctx: Context) -> None:
        """Sync every HPA that is due."""
        hpas = ctx.store.list(HORIZONTALPODAUTOSCALERS)[0]
        present = {hpa["metadata"]["uid"] for hpa in hpas}
        self._last = {uid: last for uid, last in self._last.items() if uid in present}
        for hpa in hpas:
            uid, generation = hpa["metadata"]["uid"], int(hpa["metadata"].get("generation") or 0)
            last = self._last.get(uid)
            if last is not None and last[1] == generation and ctx.now < last[0] + ctx.config.hpa_sync_seconds:
                continue
            self._last[uid] = (ctx.now, generation)
            self._sync_one(ctx, hpa)

    def next_due(self, ctx: Context) -> float | None:
        """The next periodic resync."""
        if not self._last:
            return None
        return min(when + ctx.config.hpa_sync_seconds for when, _ in self._last.values())

    def _sync_one(self, ctx: Context, hpa: Obj) -> None:
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        now = format_time(ctx.now)
        status = clone(hpa.get("status") or {})
        conditions: list[Obj] = list(status.get("conditions") or [])
        rt = _TARGETS.get(str(ref.get("kind")))
        target = ctx.store.find(rt, namespace_of(hpa), str(ref.get("name"))) if rt is not None else None
        if rt is None or target is None:
            conditions = set_condition(
                conditions,
                _condition(
                    "AbleToScale",
                    False,
                    "FailedGetScale",
                    "the HPA controller was unable to get the target's current scale: "
                    f'{str(ref.get("kind")).lower()}s "{ref.get("name")}" not found',
                    now,
                ),
            )
            status["conditions"] = conditions
            self._write(ctx, hpa, status)
            return
        current = int((target.get("spec") or {}).get("replicas", 1))
        low, high = int(spec.get("minReplicas", 1)), int(spec.get("maxReplicas", 1))
        hook = ctx.config.hpa_recommendation
        recommended = hook(hpa, target) if hook is not None else None
        desired = current if recommended is None else recommended
        limited = ""
        if desired < low:
            desired, limited = low, "TooFewReplicas"
        elif desired > high:
            desired, limited = high, "TooManyReplicas"
        if desired != current:
            body = clone(target)
            body["spec"]["replicas"] = desired
            ctx.store.update(rt, namespace_of(target), name_of(target), body)
            status["lastScaleTime"] = now
            ctx.event(
                hpa,
                "SuccessfulRescale",
                f"New size: {desired}; reason: "
                + (
                    "below minimum"
                    if limited == "TooFewReplicas"
                    else "above maximum"
                    if limited
                    else "recommendation"
                ),
                COMPONENT,
            )
        conditions = set_condition(
            conditions,
            _condition(
                "AbleToScale",
                True,
                "SucceededRescale" if desired != current else "ReadyForNewScale",
                "the HPA controller was able to update the target scale"
                if desired != current
                else "recommended size matches current size",
                now,
            ),
        )
        conditions = set_condition(
            conditions,
            _condition(
                "ScalingActive",
                hook is not None,
                "ValidMetricFound" if hook is not None else "FailedGetResourceMetric",
                "the HPA was able to successfully calculate a replica count"
                if hook is not None
                else "the twin has no metrics pipeline; only the replica bounds are enforced",
                now,
            ),
        )
        conditions = set_condition(
            conditions,
            _condition(
                "ScalingLimited",
                bool(limited),
                limited or "DesiredWithinRange",
                "the desired replica count is "
                + (
                    "less than the minimum replica count"
                    if limited == "TooFewReplicas"
                    else "more than the maximum replica count"
                    if limited
                    else "within the acceptable range"
                ),
                now,
            ),
        )
        status.update({"currentReplicas": current, "desiredReplicas": desired, "conditions": conditions})
        status.setdefault("currentMetrics", None)
        status["observedGeneration"] = int(hpa["metadata"].get("generation") or 0)
        self._write(ctx, hpa, status)

    @staticmethod
    def _write(ctx: Context, hpa: Obj, status: Obj) -> None:
        if status != hpa.get("status"):
            ctx.store.update(
                HORIZONTALPODAUTOSCALERS,
                namespace_of(hpa),
                name_of(hpa),
                {**hpa, "status": status},
                subresource="status",
            )
