"""coordination.k8s.io/v1: Leases (leader election)."""

from __future__ import annotations

from simulations.twin.errors import FieldError, invalid
from simulations.twin.objects import Obj
from simulations.twin.resources.base import ResourceType
from simulations.twin.resources.timefields import normalise


def _default_lease(obj: Obj) -> None:
    normalise(obj, "spec.acquireTime", micro=True)
    normalise(obj, "spec.renewTime", micro=True)


def _validate_lease(new: Obj, old: Obj | None) -> list[FieldError]:
    del old
    spec = new.get("spec") or {}
    if not isinstance(spec, dict):
        return [invalid("spec", spec, "must be an object")]
    errors: list[FieldError] = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        errors.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        errors.append(invalid("spec.leaseTransitions", transitions, "must be greater than or equal to 0"))
    return errors


LEASES = ResourceType(
    group="coordination.k8s.io",
    version="v1",
    plural="leases",
    singular="lease",
    kind="Lease",
    has_generation=False,
    defaults=_default_lease,
    validate=_validate_lease,
)

RESOURCES = (LEASES,)
