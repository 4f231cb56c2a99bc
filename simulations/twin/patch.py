"""The three patch formats of the Kubernetes API: JSON patch, JSON merge patch, strategic merge patch.

- JSON patch (RFC 6902, ``application/json-patch+json``): a list of operations; ``kubectl rollout
  undo`` uses it to put an old pod template back.
- JSON merge patch (RFC 7386, ``application/merge-patch+json``): objects merge, ``null`` deletes,
  lists are replaced whole.
- Strategic merge patch (``application/strategic-merge-patch+json``, what the Python client sends
  for a dict body): like a merge patch, but lists that the built-in types mark with a merge key
  (``containers`` by ``name``, ``env`` by ``name``, ``conditions`` by ``type`` ...) merge element by
  element, and the ``$patch`` / ``$retainKeys`` / ``$deleteFromPrimitiveList`` /
  ``$setElementOrder`` directives apply. ``kubectl rollout restart`` and ``kubectl scale`` use it.
"""

from __future__ import annotations

import copy
from typing import Any

from simulations.twin.objects import Obj


class PatchError(ValueError):
    """A patch that cannot be applied (a missing path, a failed ``test``, a bad directive)."""


# ---------------------------------------------------------------- RFC 6902


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        msg = f"JSON pointer must start with '/': {path!r}"
        raise PatchError(msg)
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], segment: str, *, allow_end: bool) -> int:
    if segment == "-" and allow_end:
        return len(container)
    if not segment.isdigit() or (len(segment) > 1 and segment.startswith("0")):
        msg = f"invalid array index {segment!r}"
        raise PatchError(msg)
    index = int(segment)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        msg = f"array index {index} out of bounds"
        raise PatchError(msg)
    return index


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict):
            if token not in node:
                msg = f"doc is missing path: {path!r}"
                raise PatchError(msg)
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            msg = f"doc is missing path: {path!r}"
            raise PatchError(msg)
    return node


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            msg = f"doc is missing key: {path!r}"
            raise PatchError(msg)
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, allow_end=False)]
    msg = f"doc is missing path: {path!r}"
    raise PatchError(msg)


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path)
    token = parts[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, allow_end=True), value)
    else:
        msg = f"doc is missing path: {path!r}"
        raise PatchError(msg)
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        msg = "cannot remove the whole document"
        raise PatchError(msg)
    parent = _parent(doc, parts, path)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            msg = f"unable to remove nonexistent key: {token}: missing value"
            raise PatchError(msg)
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token, allow_end=False))
    msg = f"doc is missing path: {path!r}"
    raise PatchError(msg)


def json_patch(doc: Obj, operations: Any) -> Obj:
    """Apply an RFC 6902 patch to a copy of ``doc``."""
    if not isinstance(operations, list):
        msg = "a JSON patch must be a list of operations"
        raise PatchError(msg)
    result: Any = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            msg = f"invalid JSON patch operation: {op!r}"
            raise PatchError(msg)
        kind, path = op["op"], str(op["path"])
        if kind in {"add", "replace", "test"} and "value" not in op:
            msg = f"operation {kind} at {path!r} has no value"
            raise PatchError(msg)
        if kind == "add":
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            result, _ = _remove(result, path)
        elif kind == "replace":
            _get(result, path)
            if _pointer(path):
                result, _ = _remove(result, path)
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind in {"move", "copy"}:
            source = str(op.get("from", ""))
            if kind == "move":
                if path.startswith(source + "/"):
                    msg = f"cannot move {source!r} into its own child {path!r}"
                    raise PatchError(msg)
                result, value = _remove(result, source)
            else:
                value = copy.deepcopy(_get(result, source))
            result = _add(result, path, value)
        elif kind == "test":
            if _get(result, path) != op["value"]:
                msg = f"testing value {path} failed: test failed"
                raise PatchError(msg)
        else:
            msg = f"Unexpected kind: {kind}"
            raise PatchError(msg)
    if not isinstance(result, dict):
        msg = "a JSON patch must leave an object"
        raise PatchError(msg)
    return result


# ---------------------------------------------------------------- RFC 7386


def merge_patch(doc: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch; returns a new value."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------- strategic merge

MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "podIPs": "ip",
    "hostIPs": "ip",
}
"""Lists of the built-in types that merge by key (``patchMergeKey``), by field name."""

PRIMITIVE_MERGE_LISTS = frozenset({"finalizers"})
"""Lists of scalars with ``patchStrategy: merge`` (union instead of replace)."""

_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_ORDER = "$setElementOrder/"


def strategic_merge_patch(doc: Obj, patch: Obj) -> Obj:
    """Apply a strategic merge patch to a copy of ``doc``."""
    result = _merge_map(copy.deepcopy(doc), patch)
    if result is None:
        return {}
    return result


def _strip(value: Any) -> Any:
    """A patch value with its directives removed, for keys missing from the original."""
    if isinstance(value, dict):
        if value.get(_DIRECTIVE) == "delete":
            return None
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [
            _strip(v)
            for v in value
            if not (isinstance(v, dict) and v.get(_DIRECTIVE) in {"delete", "replace"})
        ]
    return value


def _merge_map(original: Obj, patch: Obj) -> Obj | None:
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip({k: v for k, v in patch.items() if k != _DIRECTIVE})  # type: ignore[no-any-return]
    if directive not in {None, "merge"}:
        msg = f"unknown patch type: {directive}"
        raise PatchError(msg)
    retain = patch.get(_RETAIN)
    if retain is not None:
        if not isinstance(retain, list):
            msg = "$retainKeys must be a list"
            raise PatchError(msg)
        original = {k: v for k, v in original.items() if k in retain}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in {_DIRECTIVE, _RETAIN}:
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER) :]] = value if isinstance(value, list) else []
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
            current = original.get(field)
            if isinstance(current, list) and isinstance(value, list):
                original[field] = [item for item in current if item not in value]
            continue
        if value is None:
            original.pop(key, None)
            continue
        current = original.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged = _merge_map(current, value)
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list) and isinstance(current, list):
            original[key] = _merge_list(key, current, value)
        elif isinstance(value, dict):
            stripped = _strip(value)
            if stripped is None:
                original.pop(key, None)
            else:
                original[key] = stripped
        elif isinstance(value, list):
            original[key] = _merge_list(key, [], value)
        else:
            original[key] = copy.deepcopy(value)
    for key, order in orders.items():
        if isinstance(original.get(key), list):
            original[key] = _reorder(key, original[key], order)
    return original


def _merge_list(field: str, original: list[Any], patch: list[Any]) -> list[Any]:
    if any(isinstance(item, dict) and item.get(_DIRECTIVE) == "replace" for item in patch):
        return [_strip(item) for item in patch if not (isinstance(item, dict) and _DIRECTIVE in item)]
    merge_key = MERGE_KEYS.get(field)
    if field in PRIMITIVE_MERGE_LISTS:
        result = list(original)
        for item in patch:
            if item not in result:
                result.append(copy.deepcopy(item))
        return result
    if merge_key is None or not all(isinstance(item, dict) for item in patch):
        return [_strip(item) for item in patch]
    result = list(original)
    for item in patch:
        key_value = item.get(merge_key)
        if key_value is None:
            msg = f"map: {item!r} does not contain declared merge key: {merge_key}"
            raise PatchError(msg)
        index = next(
            (i for i, old in enumerate(result) if isinstance(old, dict) and old.get(merge_key) == key_value),
            None,
        )
        if item.get(_DIRECTIVE) == "delete":
            result = [
                old for old in result if not (isinstance(old, dict) and old.get(merge_key) == key_value)
            ]
            continue
        if index is None:
            stripped = _strip(item)
            if stripped is not None:
                result.append(stripped)
        else:
            merged = _merge_map(result[index], item)
            if merged is None:
                result.pop(index)
            else:
                result[index] = merged
    return result


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    merge_key = MERGE_KEYS.get(field)

    def key(item: Any) -> Any:
        if merge_key is not None and isinstance(item, dict):
            return item.get(merge_key)
        return item

    wanted = [key(o) for o in order]
    ranked = sorted(
        enumerate(items),
        key=lambda pair: (wanted.index(key(pair[1])) if key(pair[1]) in wanted else len(wanted), pair[0]),
    )
    return [item for _, item in ranked]
