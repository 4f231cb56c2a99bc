"""State the actions keep on the objects themselves, in annotations, so it survives restarts.

The main one is ``aiops.dev/executed-keys``: the idempotency keys executed on an object, newest
last, bounded to the last :data:`MAX_KEYS`. An action that finds its key there does nothing, so a
key never executes twice, across restarts and leader changes. The executor records keys the same
way (:func:`record_key_patch`).
"""

from __future__ import annotations

import json
from typing import Any

from remediations.types import key_digest

PREFIX = "aiops.dev/"
EXECUTED_KEYS = PREFIX + "executed-keys"
MAX_KEYS = 20
MAX_KEY_LENGTH = 256
"""A longer key is stored as ``sha256:<digest>``, so one odd key cannot bloat the object."""

Obj = dict[str, Any]


def annotations_of(obj: Obj) -> dict[str, str]:
    """``metadata.annotations`` of an object (never None)."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    return dict(annotations) if isinstance(annotations, dict) else {}


def labels_of(obj: Obj) -> dict[str, str]:
    """``metadata.labels`` of an object (never None)."""
    labels = (obj.get("metadata") or {}).get("labels")
    return dict(labels) if isinstance(labels, dict) else {}


def resource_version(obj: Obj) -> str:
    """``metadata.resourceVersion`` (empty when missing)."""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def uid_of(obj: Obj) -> str:
    """``metadata.uid`` (empty when missing)."""
    return str((obj.get("metadata") or {}).get("uid") or "")


def read_json(obj: Obj, annotation: str) -> Any:
    """The JSON value of an annotation, or None when it is missing or not JSON (never trust it blindly)."""
    text = annotations_of(obj).get(annotation)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def dump_json(value: Any) -> str:
    """Compact JSON for an annotation value."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def stored_key(key: str) -> str:
    """How a key is stored: as it is, or as its digest when it is too long."""
    return key if len(key) <= MAX_KEY_LENGTH else f"sha256:{key_digest(key, 32)}"


def executed_keys(obj: Obj) -> list[str]:
    """The keys recorded on an object, oldest first."""
    value = read_json(obj, EXECUTED_KEYS)
    if not isinstance(value, list):
        return []
    return [str(k) for k in value if isinstance(k, str)]


def was_executed(obj: Obj, key: str) -> bool:
    """Whether ``key`` is recorded on the object."""
    return stored_key(key) in executed_keys(obj)


def with_key(obj: Obj, key: str) -> str:
    """The executed-keys annotation value with ``key`` appended, bounded to the last MAX_KEYS."""
    keys = [k for k in executed_keys(obj) if k != stored_key(key)]
    keys.append(stored_key(key))
    return dump_json(keys[-MAX_KEYS:])


def record_key_patch(obj: Obj, key: str, annotations: dict[str, str | None] | None = None) -> Obj:
    """A merge patch that records ``key`` (and sets or removes ``annotations``) if the object is unchanged.

    It carries the object's resourceVersion, so the API server answers 409 Conflict when the
    object changed since it was read.
    """
    changes: dict[str, str | None] = {EXECUTED_KEYS: with_key(obj, key)}
    changes.update(annotations or {})
    return {"metadata": {"resourceVersion": resource_version(obj), "annotations": changes}}
