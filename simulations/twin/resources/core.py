"""core/v1: Namespaces, Pods, Events, ConfigMaps."""

from __future__ import annotations

import base64
import binascii
import re

from simulations.twin.errors import FieldError, forbidden, invalid, not_supported, required, too_long
from simulations.twin.objects import Obj, metadata, name_of, namespace_of
from simulations.twin.resources.base import ResourceType
from simulations.twin.resources.podspec import default_pod_spec, validate_pod_spec
from simulations.twin.resources.timefields import normalise
from simulations.twin.selectors import FieldGetter, field_getters
from simulations.twin.validation import dns1123_label

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
EVENT_TYPES = ["Normal", "Warning"]

# ---------------------------------------------------------------- Namespace


def _default_namespace(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("finalizers", ["kubernetes"])
    name = name_of(obj)
    if name:
        labels = metadata(obj).setdefault("labels", {})
        if isinstance(labels, dict):
            labels[NAMESPACE_NAME_LABEL] = name


def _namespace_status(obj: Obj) -> None:
    obj["status"] = {"phase": "Active"}


NAMESPACES = ResourceType(
    group="",
    version="v1",
    plural="namespaces",
    singular="namespace",
    kind="Namespace",
    namespaced=False,
    short_names=("ns",),
    subresources=("status",),
    has_generation=False,
    name_rule=dns1123_label,
    defaults=_default_namespace,
    prepare_create=_namespace_status,
    field_labels=field_getters("status.phase"),
)

# ---------------------------------------------------------------- Pod

_POD_MUTABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _default_pod(obj: Obj) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        default_pod_spec(spec)


def _pod_status(obj: Obj) -> None:
    obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}


def _comparable_pod_spec(spec: Obj) -> Obj:
    copy = {k: v for k, v in spec.items() if k not in _POD_MUTABLE_SPEC}
    for key in ("containers", "initContainers"):
        if isinstance(copy.get(key), list):
            copy[key] = [
                {k: v for k, v in c.items() if k != "image"} for c in copy[key] if isinstance(c, dict)
            ]
    return copy


def _validate_pod(new: Obj, old: Obj | None) -> list[FieldError]:
    spec = new.get("spec")
    errors = validate_pod_spec(spec, "spec")
    if old is not None and isinstance(spec, dict):
        before = old.get("spec") or {}
        after = dict(spec)
        if not before.get("nodeName"):
            after.pop("nodeName", None)  # binding a pod to a node, as the scheduler does
        if _comparable_pod_spec(before) != _comparable_pod_spec(after):
            errors.append(
                forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
                    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                    "(allow it to be set to 1 if it was previously negative)",
                )
            )
    return errors


PODS = ResourceType(
    group="",
    version="v1",
    plural="pods",
    singular="pod",
    kind="Pod",
    short_names=("po",),
    categories=("all",),
    subresources=("status",),
    defaults=_default_pod,
    prepare_create=_pod_status,
    validate=_validate_pod,
    field_labels=field_getters(
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    return_deleted_object=True,
)

# ---------------------------------------------------------------- Event (core/v1)


def _default_event(obj: Obj) -> None:
    normalise(obj, "firstTimestamp", micro=False)
    normalise(obj, "lastTimestamp", micro=False)
    normalise(obj, "eventTime", micro=True)
    normalise(obj, "series.lastObservedTime", micro=True)


def _validate_event(new: Obj, old: Obj | None) -> list[FieldError]:
    del old
    errors: list[FieldError] = []
    involved = new.get("involvedObject")
    if not isinstance(involved, dict):
        errors.append(required("involvedObject"))
    else:
        their_namespace = involved.get("namespace") or ""
        if their_namespace and their_namespace != namespace_of(new):
            errors.append(
                invalid("involvedObject.namespace", their_namespace, "does not match event.namespace")
            )
    kind = new.get("type")
    if kind and kind not in EVENT_TYPES:
        errors.append(not_supported("type", kind, EVENT_TYPES))
    count = new.get("count")
    if count is not None and (not isinstance(count, int) or count < 0):
        errors.append(invalid("count", count, "must be greater than or equal to 0"))
    return errors


def _source(obj: Obj) -> str:
    source = obj.get("source")
    return str(source.get("component") or "") if isinstance(source, dict) else ""


def _event_fields() -> dict[str, FieldGetter]:
    getters = field_getters(
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "type",
    )
    getters["source"] = _source
    return getters


EVENTS = ResourceType(
    group="",
    version="v1",
    plural="events",
    singular="event",
    kind="Event",
    short_names=("ev",),
    has_generation=False,
    defaults=_default_event,
    validate=_validate_event,
    field_labels=_event_fields(),
    storage="events",
    allow_create_on_update=True,
)

# ---------------------------------------------------------------- ConfigMap

#: The API server's limit on a ConfigMap's data and binaryData together (``MaxSecretSize``).
CONFIGMAP_MAX_BYTES = 1024 * 1024
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_KEY_MAX = 253


def _configmap_key(key: str) -> str | None:
    """Why ``key`` is not a valid ConfigMap key (``IsConfigMapKey``), or None."""
    if len(key) > _KEY_MAX:
        return f"must be no more than {_KEY_MAX} characters"
    if not _CONFIGMAP_KEY.fullmatch(key):
        return "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
    if key in {".", ".."} or key.startswith(".."):
        return "must not be '.' or '..' or start with '..'"
    return None


def _string_map(new: Obj, name: str, errors: list[FieldError]) -> dict[str, str]:
    """``new[name]`` as a map of strings, with an error per key or value that is not one."""
    value = new.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(invalid(name, value, "must be a map of string keys to string values"))
        return {}
    found: dict[str, str] = {}
    for key, text in value.items():
        problem = _configmap_key(str(key))
        if problem is not None:
            errors.append(invalid(f"{name}[{key}]", key, problem))
        elif not isinstance(text, str):
            errors.append(invalid(f"{name}[{key}]", text, "must be a string"))
        else:
            found[key] = text
    return found


def _validate_configmap(new: Obj, old: Obj | None) -> list[FieldError]:
    errors: list[FieldError] = []
    data = _string_map(new, "data", errors)
    binary = _string_map(new, "binaryData", errors)
    size = sum(len(v.encode()) for v in data.values())
    for key, text in binary.items():
        if key in data:
            errors.append(invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
        try:
            size += len(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            errors.append(invalid(f"binaryData[{key}]", "<value>", "must be base64-encoded bytes"))
    if size > CONFIGMAP_MAX_BYTES:
        errors.append(too_long("data", CONFIGMAP_MAX_BYTES))
    immutable = new.get("immutable")
    if immutable is not None and not isinstance(immutable, bool):
        errors.append(invalid("immutable", immutable, "must be a boolean"))
    if old is not None and old.get("immutable") is True:
        if immutable is not True:
            errors.append(forbidden("immutable", "field is immutable when `immutable` is set"))
        for name in ("data", "binaryData"):
            if (new.get(name) or {}) != (old.get(name) or {}):
                errors.append(forbidden(name, "field is immutable when `immutable` is set"))
    return errors


CONFIGMAPS = ResourceType(
    group="",
    version="v1",
    plural="configmaps",
    singular="configmap",
    kind="ConfigMap",
    short_names=("cm",),
    has_generation=False,
    validate=_validate_configmap,
)

RESOURCES = (NAMESPACES, PODS, EVENTS, CONFIGMAPS)
