"""Raw Kubernetes objects as JSON dicts, and the small helpers every part of the twin shares."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import orjson

Obj = dict[str, Any]
"""A Kubernetes object (or any JSON object) as decoded from JSON."""

OWNER_CONTROLLER_KEYS = ("apiVersion", "kind", "name", "uid")


def clone(value: Obj) -> Obj:
    """A deep copy of a JSON object, so the store never shares structure with a caller.

    Through orjson (about three times faster than walking the dicts in Python, which matters in
    long replays); a value orjson cannot encode (a non-string key, an integer past 64 bits, a
    non-JSON type) is copied by :func:`_copy` instead. Tuples come back as lists and NaN as null,
    as they would from the wire.
    """
    try:
        return orjson.loads(orjson.dumps(value))  # type: ignore[no-any-return]
    except (TypeError, orjson.JSONEncodeError):
        return _copy(value)  # type: ignore[no-any-return]


def _copy(value: Any) -> Any:
    # JSON values only: several times faster than copy.deepcopy, which matters in long replays.
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    if isinstance(value, dict | list):
        return copy.deepcopy(value)
    return value


def metadata(obj: Obj) -> Obj:
    """The object's metadata, created empty when missing."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def name_of(obj: Obj) -> str:
    """``metadata.name`` or the empty string."""
    return str((obj.get("metadata") or {}).get("name") or "")


def namespace_of(obj: Obj) -> str:
    """``metadata.namespace`` or the empty string."""
    return str((obj.get("metadata") or {}).get("namespace") or "")


def uid_of(obj: Obj) -> str:
    """``metadata.uid`` or the empty string."""
    return str((obj.get("metadata") or {}).get("uid") or "")


def labels_of(obj: Obj) -> dict[str, str]:
    """``metadata.labels`` (never None)."""
    labels = (obj.get("metadata") or {}).get("labels")
    return dict(labels) if isinstance(labels, dict) else {}


def annotations_of(obj: Obj) -> dict[str, str]:
    """``metadata.annotations`` (never None)."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    return dict(annotations) if isinstance(annotations, dict) else {}


def controller_ref(obj: Obj) -> Obj | None:
    """The owner reference marked ``controller: true``, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def owner_reference(owner: Obj, *, controller: bool = True) -> Obj:
    """An owner reference pointing at ``owner``, as the built-in controllers write it."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def format_time(seconds: float) -> str:
    """A ``metav1.Time`` string: RFC 3339 in UTC with whole seconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(seconds: float) -> str:
    """A ``metav1.MicroTime`` string: RFC 3339 in UTC with microseconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """Seconds since the epoch from an RFC 3339 string; a time without a zone is an error, as in Go."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        msg = f'parsing time "{text}": missing time zone offset'
        raise ValueError(msg)
    return when.timestamp()


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def fnv32a(data: bytes) -> int:
    """The 32-bit FNV-1a hash, the one the Kubernetes controllers use for pod-template hashes."""
    value = 0x811C9DC5
    for byte in data:
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
"""The alphabet of generated names and hashes (no vowels, no confusable characters), as in apimachinery."""


def safe_encode(text: str) -> str:
    """``rand.SafeEncodeString``: map each character onto :data:`SAFE_ALPHANUMS`."""
    return "".join(SAFE_ALPHANUMS[ord(char) % len(SAFE_ALPHANUMS)] for char in text)


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """The ``pod-template-hash`` of a pod template, computed the way the controllers do (FNV-32a)."""
    data = canonical_json(template).encode()
    if collision_count is not None:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def set_condition(conditions: list[Obj], condition: Obj) -> list[Obj]:
    """Replace the condition of the same type, keeping ``lastTransitionTime`` when the status holds.

    Like the controllers' ``SetCondition`` helpers: an identical status and reason change nothing.
    """
    current = next((c for c in conditions if c.get("type") == condition["type"]), None)
    if current is not None and current.get("status") == condition.get("status"):
        if current.get("reason") == condition.get("reason"):
            return conditions
        if "lastTransitionTime" in current:
            condition = {**condition, "lastTransitionTime": current["lastTransitionTime"]}
    return [c for c in conditions if c.get("type") != condition["type"]] + [condition]


def find_condition(obj: Obj, kind: str) -> Obj | None:
    """The status condition of type ``kind``, if present."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return None
