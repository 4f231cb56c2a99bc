"""apps/v1: Deployments, ReplicaSets, StatefulSets."""

from __future__ import annotations

import math
import re

from simulations.twin.errors import FieldError, forbidden, immutable, invalid, not_supported, required
from simulations.twin.objects import Obj
from simulations.twin.resources.base import ResourceType
from simulations.twin.resources.podspec import default_pod_template, template_labels, validate_pod_template
from simulations.twin.selectors import field_getters, from_label_selector, validate_label_selector
from simulations.twin.validation import nonnegative

_PERCENT = re.compile(r"^(\d+)%$")


def resolve_int_or_percent(value: object, total: int, *, round_up: bool) -> int:
    """An ``IntOrString`` such as ``maxSurge`` as a count of ``total`` (percentages rounded as in Go)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match:
            exact = int(match.group(1)) * total / 100
            return math.ceil(exact) if round_up else math.floor(exact)
        if value.isdigit():
            return int(value)
    return 0


def _validate_int_or_percent(value: object, path: str) -> list[FieldError]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return [] if value >= 0 else [invalid(path, value, "must be greater than or equal to 0")]
    if isinstance(value, str) and _PERCENT.match(value):
        return []
    return [invalid(path, value, "a valid percent string must be a numeric string followed by an ending '%'")]


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
        obj["spec"] = spec
    return spec


def _default_workload(obj: Obj) -> None:
    spec = _spec(obj)
    spec.setdefault("replicas", 1)
    default_pod_template(spec.get("template"))


def _validate_selector_and_template(spec: Obj, restart: list[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    selector = spec.get("selector")
    if selector is None:
        errors.append(required("spec.selector"))
    else:
        errors += validate_label_selector(selector, "spec.selector")
        if (
            isinstance(selector, dict)
            and not selector.get("matchLabels")
            and not selector.get("matchExpressions")
        ):
            errors.append(invalid("spec.selector", selector, "empty selector is invalid for deployment"))
    template = spec.get("template")
    errors += validate_pod_template(template, "spec.template", restart)
    if isinstance(selector, dict) and isinstance(template, dict) and not errors:
        labels = template_labels(template)
        if not from_label_selector(selector).matches(labels):
            errors.append(
                invalid(
                    "spec.template.metadata.labels", labels, "`selector` does not match template `labels`"
                )
            )
    errors += nonnegative(spec, "replicas", "spec")
    errors += nonnegative(spec, "minReadySeconds", "spec")
    errors += nonnegative(spec, "revisionHistoryLimit", "spec")
    return errors


def _selector_unchanged(new: Obj, old: Obj | None) -> list[FieldError]:
    if old is None:
        return []
    before, after = (old.get("spec") or {}).get("selector"), (new.get("spec") or {}).get("selector")
    return [] if before == after else [immutable("spec.selector", after)]


# ---------------------------------------------------------------- Deployment


def _default_deployment(obj: Obj) -> None:
    _default_workload(obj)
    spec = _spec(obj)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)


def _validate_deployment(new: Obj, old: Obj | None) -> list[FieldError]:
    spec = new.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    errors = _validate_selector_and_template(spec, ["Always"])
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type")
    if kind not in {"RollingUpdate", "Recreate"}:
        errors.append(not_supported("spec.strategy.type", kind, ["Recreate", "RollingUpdate"]))
    rolling = strategy.get("rollingUpdate")
    if kind == "Recreate" and rolling is not None:
        errors.append(
            forbidden(
                "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"
            )
        )
    if kind == "RollingUpdate" and isinstance(rolling, dict):
        surge, unavailable = rolling.get("maxSurge"), rolling.get("maxUnavailable")
        errors += _validate_int_or_percent(surge, "spec.strategy.rollingUpdate.maxSurge")
        errors += _validate_int_or_percent(unavailable, "spec.strategy.rollingUpdate.maxUnavailable")
        if (
            resolve_int_or_percent(surge, 100, round_up=True) == 0
            and resolve_int_or_percent(unavailable, 100, round_up=True) == 0
        ):
            errors.append(
                invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    unavailable,
                    "may not be 0 when `maxSurge` is 0",
                )
            )
        if isinstance(unavailable, str) and resolve_int_or_percent(unavailable, 100, round_up=False) > 100:
            errors.append(
                invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable", unavailable, "must not be greater than 100%"
                )
            )
    deadline, ready = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds") or 0
    if isinstance(deadline, int) and deadline <= ready:
        errors.append(
            invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")
        )
    return errors + _selector_unchanged(new, old)


def _reset_status(obj: Obj) -> None:
    obj["status"] = {}


DEPLOYMENTS = ResourceType(
    group="apps",
    version="v1",
    plural="deployments",
    singular="deployment",
    kind="Deployment",
    short_names=("deploy",),
    categories=("all",),
    subresources=("scale", "status"),
    generation_on_annotations=True,
    defaults=_default_deployment,
    prepare_create=_reset_status,
    validate=_validate_deployment,
)


# ---------------------------------------------------------------- ReplicaSet


def _validate_replicaset(new: Obj, old: Obj | None) -> list[FieldError]:
    spec = new.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    return _validate_selector_and_template(spec, ["Always"]) + _selector_unchanged(new, old)


def _replicaset_status(obj: Obj) -> None:
    obj["status"] = {"replicas": 0}


REPLICASETS = ResourceType(
    group="apps",
    version="v1",
    plural="replicasets",
    singular="replicaset",
    kind="ReplicaSet",
    short_names=("rs",),
    categories=("all",),
    subresources=("scale", "status"),
    defaults=_default_workload,
    prepare_create=_replicaset_status,
    validate=_validate_replicaset,
    field_labels=field_getters("status.replicas"),
)


# ---------------------------------------------------------------- StatefulSet

_STS_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _default_statefulset(obj: Obj) -> None:
    _default_workload(obj)
    spec = _spec(obj)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})


def _validate_statefulset(new: Obj, old: Obj | None) -> list[FieldError]:
    spec = new.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    errors = _validate_selector_and_template(spec, ["Always"])
    policy = spec.get("podManagementPolicy")
    if policy not in {"OrderedReady", "Parallel"}:
        errors.append(not_supported("spec.podManagementPolicy", policy, ["OrderedReady", "Parallel"]))
    kind = (spec.get("updateStrategy") or {}).get("type")
    if kind not in {"RollingUpdate", "OnDelete"}:
        errors.append(not_supported("spec.updateStrategy.type", kind, ["OnDelete", "RollingUpdate"]))
    if old is not None:
        before = {k: v for k, v in (old.get("spec") or {}).items() if k not in _STS_MUTABLE}
        after = {k: v for k, v in spec.items() if k not in _STS_MUTABLE}
        if before != after:
            errors.append(
                forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                    "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
                    "'minReadySeconds' are forbidden",
                )
            )
    return errors


def _statefulset_status(obj: Obj) -> None:
    obj["status"] = {"replicas": 0, "availableReplicas": 0}


STATEFULSETS = ResourceType(
    group="apps",
    version="v1",
    plural="statefulsets",
    singular="statefulset",
    kind="StatefulSet",
    short_names=("sts",),
    categories=("all",),
    subresources=("scale", "status"),
    defaults=_default_statefulset,
    prepare_create=_statefulset_status,
    validate=_validate_statefulset,
)

RESOURCES = (DEPLOYMENTS, REPLICASETS, STATEFULSETS)
