"""events.k8s.io/v1: the newer view of the same Event objects as core/v1, with renamed fields."""

from __future__ import annotations

from simulations.twin.errors import FieldError, invalid, not_supported, required
from simulations.twin.objects import Obj, namespace_of
from simulations.twin.resources.base import ResourceType
from simulations.twin.resources.core import EVENT_TYPES
from simulations.twin.resources.timefields import normalise
from simulations.twin.selectors import field_getters

# (events.k8s.io/v1 field, core/v1 field)
_RENAMES = (
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)
_SAME = ("metadata", "eventTime", "series", "reportingInstance", "action", "reason", "related", "type")
NOTE_MAX = 1024
SHORT_MAX = 128


def to_core(obj: Obj) -> Obj:
    """An events.k8s.io/v1 Event as the core/v1 Event it is stored as."""
    core: Obj = {"apiVersion": "v1", "kind": "Event"}
    for key in _SAME:
        if key in obj:
            core[key] = obj[key]
    for new, old in _RENAMES:
        if new in obj:
            core[old] = obj[new]
    return core


def from_core(core: Obj) -> Obj:
    """A stored core/v1 Event as events.k8s.io/v1 shows it (``eventTime`` is null for legacy events)."""
    obj: Obj = {"apiVersion": "events.k8s.io/v1", "kind": "Event"}
    for key in _SAME:
        if key in core:
            obj[key] = core[key]
    obj.setdefault("eventTime", None)
    for new, old in _RENAMES:
        if old in core:
            obj[new] = core[old]
    return obj


def _default(obj: Obj) -> None:
    normalise(obj, "eventTime", micro=True)
    normalise(obj, "series.lastObservedTime", micro=True)
    normalise(obj, "deprecatedFirstTimestamp", micro=False)
    normalise(obj, "deprecatedLastTimestamp", micro=False)


def _validate(new: Obj, old: Obj | None) -> list[FieldError]:
    """``ValidateEventCreate`` for an events.k8s.io/v1 request: the newer, stricter rules."""
    errors: list[FieldError] = []
    if old is None and not new.get("eventTime"):
        errors.append(required("eventTime"))
    kind = new.get("type")
    if kind not in EVENT_TYPES:
        errors.append(not_supported("type", kind, EVENT_TYPES))
    for key in ("reportingController", "reportingInstance", "action", "reason"):
        value = new.get(key)
        if not value:
            errors.append(required(key))
        elif len(str(value)) > SHORT_MAX:
            errors.append(invalid(key, value, f"can have at most {SHORT_MAX} characters"))
    note = new.get("note")
    if isinstance(note, str) and len(note) > NOTE_MAX:
        errors.append(invalid("note", "", f"can have at most {NOTE_MAX} characters"))
    regarding = new.get("regarding")
    if isinstance(regarding, dict):
        theirs = regarding.get("namespace") or ""
        if theirs and theirs != namespace_of(new):
            errors.append(invalid("regarding.namespace", theirs, "does not match event.namespace"))
    return errors


EVENTS_V1 = ResourceType(
    group="events.k8s.io",
    version="v1",
    plural="events",
    singular="event",
    kind="Event",
    short_names=("ev",),
    has_generation=False,
    defaults=_default,
    validate=_validate,
    field_labels=field_getters(
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "regarding.fieldPath",
        "reason",
        "reportingController",
        "type",
    ),
    storage="events",
    to_storage=to_core,
    from_storage=from_core,
    allow_create_on_update=True,
)

RESOURCES = (EVENTS_V1,)
