"""autoscaling/v2: HorizontalPodAutoscalers."""

from __future__ import annotations

from simulations.twin.errors import FieldError, invalid, required
from simulations.twin.objects import Obj
from simulations.twin.resources.base import ResourceType
from simulations.twin.validation import path_segment_name

DEFAULT_CPU_UTILIZATION = 80


def _default_hpa(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION},
                },
            }
        ]


def _validate_hpa(new: Obj, old: Obj | None) -> list[FieldError]:
    del old
    spec = new.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    errors: list[FieldError] = []
    ref = spec.get("scaleTargetRef")
    if not isinstance(ref, dict):
        errors.append(required("spec.scaleTargetRef"))
    else:
        if not ref.get("kind"):
            errors.append(required("spec.scaleTargetRef.kind"))
        name = ref.get("name")
        if not name:
            errors.append(required("spec.scaleTargetRef.name"))
        else:
            errors += [invalid("spec.scaleTargetRef.name", name, p) for p in path_segment_name(str(name))]
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    if high is None:
        errors.append(required("spec.maxReplicas"))
    elif not isinstance(high, int) or high < 1:
        errors.append(invalid("spec.maxReplicas", high, "must be greater than or equal to 1"))
    if low is not None and (not isinstance(low, int) or low < 1):
        errors.append(invalid("spec.minReplicas", low, "must be greater than or equal to 1"))
    elif isinstance(low, int) and isinstance(high, int) and high < low:
        errors.append(invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`"))
    return errors


def _initial_status(obj: Obj) -> None:
    obj["status"] = {"currentMetrics": None, "desiredReplicas": 0}


HORIZONTALPODAUTOSCALERS = ResourceType(
    group="autoscaling",
    version="v2",
    plural="horizontalpodautoscalers",
    singular="horizontalpodautoscaler",
    kind="HorizontalPodAutoscaler",
    short_names=("hpa",),
    categories=("all",),
    subresources=("status",),
    defaults=_default_hpa,
    prepare_create=_initial_status,
    validate=_validate_hpa,
)

RESOURCES = (HORIZONTALPODAUTOSCALERS,)
