"""State the actions keep on the objects themselves, in annotations, so it survives restarts.

The main one is ``aiops.dev/executed-keys``: the idempotency keys executed on an object, newest
last, bounded to the last :data:`MAX_KEYS`. An action that finds its key there does nothing, so a
key never executes twice, across restarts and leader changes. The executor records keys the same
way (:func:`record_key_patch`).

The executor also records each workload-changing action it runs in ``aiops.dev/actions``
(:class:`RecordedAction`, bounded to :data:`MAX_ACTIONS`), before the write: the playbook
engine's cooldowns and hourly budgets count these after a restart or a leader change.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from remediations.jsontext import NestedTooDeep, loads
from remediations.types import key_digest

log = logging.getLogger(__name__)

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


def finite_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value``, read from JSON, is a finite number (not a bool; Python's JSON reads
    ``NaN`` and ``Infinity``): a time or a count the agent could have written."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def describe(obj: Obj) -> str:
    """``Kind namespace/name`` of an object as read, for messages."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind') or 'object'} {meta.get('namespace') or ''}/{meta.get('name') or ''}"


def unreadable(obj: Obj, annotation: str, why: str) -> None:
    """Warn that ``annotation`` on ``obj`` is not the agent's record (it is then treated as absent)."""
    log.warning("ignoring annotation %s on %s: %s", annotation, describe(obj), why)


def _loads(obj: Obj, annotation: str, text: str) -> Any:
    try:
        return loads(text)
    except NestedTooDeep:  # nobody's record
        unreadable(obj, annotation, "JSON nested too deep")
    except ValueError:
        unreadable(obj, annotation, "not JSON")
    return None


def read_json(obj: Obj, annotation: str) -> Any:
    """The JSON value of an annotation, or None when it is missing or not JSON (never trust it blindly)."""
    text = annotations_of(obj).get(annotation)
    if text is None:
        return None
    return _loads(obj, annotation, text)


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


# ---------------------------------------------------------------- the actions record

ACTIONS = PREFIX + "actions"
"""The workload-changing actions the agent ran on an object, newest last: what its cooldowns and
hourly budgets count after a restart or a leader change."""
MAX_ACTIONS = 32
"""Entries kept: more than any hourly budget or cooldown needs to count on one object."""
AGENT_ACTIONS = 512
"""Entries the agent-wide record keeps (each names its target): the last hour's, at most this many."""
MAX_RECORD_TEXT = 16_384
"""An actions annotation longer than this is not parsed (it was not written by the agent)."""
_MAX_FIELD = 253


@dataclass(frozen=True, slots=True)
class RecordedAction:
    """One workload-changing action, as recorded on its target: when, by which playbook, what
    kind and class, for an incident opened by which source, and its key's digest."""

    time: float
    playbook: str
    action: str
    action_class: str
    source: str
    key: str
    """``sha256`` digest of the idempotency key (:func:`~remediations.types.key_digest`)."""
    target: str = ""
    """``Kind/namespace/name`` in the agent-wide record; empty on the target itself."""

    def to_dict(self) -> dict[str, Any]:
        """The compact JSON form stored in the annotation."""
        out: dict[str, Any] = {
            "t": self.time,
            "p": self.playbook,
            "a": self.action,
            "c": self.action_class,
            "s": self.source,
            "k": self.key,
        }
        if self.target:
            out["g"] = self.target
        return out

    @classmethod
    def parse(cls, value: object) -> RecordedAction | None:
        """An entry from its JSON form; None when it is not one (never trust an annotation)."""
        if not isinstance(value, dict):
            return None
        t = value.get("t")
        fields = [value.get(f) for f in ("p", "a", "c", "s", "k")]
        if not finite_number(t) or not all(isinstance(f, str) and 0 < len(f) <= _MAX_FIELD for f in fields):
            return None
        target = value.get("g", "")
        if not isinstance(target, str) or len(target) > 3 * _MAX_FIELD:
            return None
        p, a, c, s, k = (str(f) for f in fields)
        return cls(float(t), p, a, c, s, k, target)


def recorded_actions(obj: Obj, limit: int = MAX_ACTIONS) -> list[RecordedAction]:
    """The actions recorded on an object, oldest first (the newest ``limit``; entries that do not
    parse are left out)."""
    text = annotations_of(obj).get(ACTIONS)
    if text is None:
        return []
    if len(text) > MAX_RECORD_TEXT * max(1, limit // MAX_ACTIONS):
        unreadable(obj, ACTIONS, f"{len(text)} characters, longer than the agent writes")
        return []
    value = _loads(obj, ACTIONS, text)
    if not isinstance(value, list):
        if value is not None:
            unreadable(obj, ACTIONS, "not a list")
        return []
    parsed = (RecordedAction.parse(v) for v in value[-limit:])
    return sorted((r for r in parsed if r is not None), key=lambda r: r.time)


def with_action(obj: Obj, entry: RecordedAction, limit: int = MAX_ACTIONS, since: float | None = None) -> str:
    """The actions annotation value with ``entry`` added (once per key), bounded to the newest
    ``limit`` and, with ``since``, to entries after it."""
    kept = [
        r for r in recorded_actions(obj, limit) if r.key != entry.key and (since is None or r.time > since)
    ]
    kept.append(entry)
    kept.sort(key=lambda r: r.time)
    return dump_json([r.to_dict() for r in kept[-limit:]])


def without_action(obj: Obj, key: str, limit: int = MAX_ACTIONS) -> str | None:
    """The actions annotation value without the entry of ``key``; None when it has none."""
    entries = recorded_actions(obj, limit)
    kept = [r for r in entries if r.key != key]
    if len(kept) == len(entries):
        return None
    return dump_json([r.to_dict() for r in kept])
