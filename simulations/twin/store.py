"""The twin's storage: every object behind one lock, with the API server's write semantics.

What the real API server (its generic registry and the types' strategies) does on a write, the
store does here: system metadata (``uid``, ``creationTimestamp``, a global ``resourceVersion``
counter, ``generation`` bumped on spec changes), defaulting, validation (422 Invalid), optimistic
concurrency (409 Conflict on a stale ``resourceVersion``), ``status`` kept apart from the main
resource, no-op updates that do not bump ``resourceVersion``, finalizers and namespace lifecycle.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator

from agent.clock import Clock
from simulations.twin.errors import ApiError, FieldError, invalid
from simulations.twin.objects import Obj, clone, format_time, metadata, safe_encode
from simulations.twin.resources.base import ResourceType
from simulations.twin.resources.core import NAMESPACES
from simulations.twin.selectors import EVERYTHING, FieldSelector, LabelSelector
from simulations.twin.validation import validate_object_meta

GENERATED_SUFFIX = 5
_SYSTEM_META = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "managedFields",
)
_KEEP_ON_UPDATE = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)
Key = tuple[str, str]
_NAMESPACE_MISMATCH = "the namespace of the provided object does not match the namespace sent on the request"


class Store:
    """All objects of the twin, keyed by storage, namespace and name, behind one re-entrant lock.

    Public methods take the lock themselves; hold :attr:`lock` around several calls to make them
    one atomic step (the API does that for read-modify-write patches, the controllers for a pass).
    """

    def __init__(self, clock: Clock, seed: int = 0) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.rng = random.Random(seed)  # noqa: S311 - seeded on purpose: replays must repeat
        self._revision = 0
        self._data: dict[str, dict[Key, Obj]] = {}

    # ------------------------------------------------------------ reading

    @property
    def revision(self) -> int:
        """The global resource version: it grows with every write."""
        with self.lock:
            return self._revision

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        """One object, or 404 NotFound."""
        found = self.find(rt, namespace, name)
        if found is None:
            raise ApiError.not_found(rt.group, rt.plural, name)
        return found

    def find(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        """One object (a copy), or None."""
        with self.lock:
            stored = self._bucket(rt).get(self._key(rt, namespace, name))
            return None if stored is None else self._view(rt, stored)

    def list(
        self,
        rt: ResourceType,
        namespace: str = "",
        labels: LabelSelector = EVERYTHING,
        fields: FieldSelector | None = None,
    ) -> tuple[list[Obj], str]:
        """Matching objects (copies) in key order, and the resource version of the list.

        An empty ``namespace`` lists across all namespaces.
        """
        with self.lock:
            # Labels first, on the stored object (storage never changes metadata.labels), so only
            # the matches are copied: controllers list by selector many times per pass.
            items = [
                obj
                for obj in (
                    self._view(rt, stored)
                    for stored in self._iter(rt, namespace)
                    if labels.matches((stored.get("metadata") or {}).get("labels"))
                )
                if fields is None or fields.matches(obj, rt.field_labels)
            ]
            return items, str(self._revision)

    def peek(self, rt: ResourceType, namespace: str = "") -> tuple[Obj, ...]:
        """The stored objects themselves, not copies: READ ONLY, for simulations that read every step.

        Fields the storage layer adds on the way out (``apiVersion``, ``kind``) may be missing.
        """
        with self.lock:
            return tuple(self._iter(rt, namespace))

    def peek_one(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        """One stored object itself (READ ONLY), or None."""
        with self.lock:
            return self._bucket(rt).get(self._key(rt, namespace, name))

    def uids(self) -> set[str]:
        """The uid of every stored object (for the garbage collector)."""
        with self.lock:
            return {str(obj["metadata"]["uid"]) for bucket in self._data.values() for obj in bucket.values()}

    # ------------------------------------------------------------ writing

    def create(self, rt: ResourceType, namespace: str, body: Obj, *, dry_run: bool = False) -> Obj:
        """POST: assign system metadata, default, validate and store; 409 AlreadyExists when taken."""
        with self.lock:
            obj = clone(body)
            self._check_type(rt, obj)
            meta = metadata(obj)
            if rt.namespaced:
                if meta.get("namespace") and meta["namespace"] != namespace:
                    raise ApiError.bad_request(_NAMESPACE_MISMATCH)
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generate_name(rt, namespace, str(meta["generateName"]))
            name = str(meta.get("name") or "")
            if rt.namespaced:
                self._require_namespace(rt, namespace, name)
            for system_field in _SYSTEM_META:
                meta.pop(system_field, None)
            meta["uid"] = self.new_uid()
            meta["creationTimestamp"] = format_time(self.clock.now())
            if rt.has_generation:
                meta["generation"] = 1
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            rt.defaults(obj)
            rt.prepare_create(obj)
            self._validate(rt, obj, None)
            key = self._key(rt, namespace, name)
            if key in self._bucket(rt):
                raise ApiError.already_exists(rt.group, rt.plural, name)
            if dry_run:
                return clone(obj)
            meta["resourceVersion"] = self._bump()
            self._bucket(rt)[key] = rt.to_storage(obj) if rt.to_storage else obj
            return self._view(rt, self._bucket(rt)[key])

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT: replace an object (or only its status); 409 Conflict when ``resourceVersion`` is stale."""
        with self.lock:
            key = self._key(rt, namespace, name)
            stored = self._bucket(rt).get(key)
            if stored is None:
                if rt.allow_create_on_update and subresource is None:
                    return self.create(rt, namespace, body, dry_run=dry_run)
                raise ApiError.not_found(rt.group, rt.plural, name)
            old = self._view(rt, stored)
            obj = clone(body)
            self._check_type(rt, obj)
            meta = metadata(obj)
            if meta.get("name") and meta["name"] != name:
                msg = f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
                raise ApiError.bad_request(msg)
            if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError.bad_request(_NAMESPACE_MISMATCH)
            version = meta.get("resourceVersion")
            if version and version != old["metadata"]["resourceVersion"]:
                raise ApiError.stale(rt.group, rt.plural, name)
            if subresource == "status":
                # Like the types' status strategies: only status changes (and annotations, which the
                # deployment controller writes this way so that the generation stays put).
                new = clone(old)
                new["status"] = obj.get("status")
                if new["status"] is None:
                    new.pop("status")
                if "annotations" in meta:
                    metadata(new)["annotations"] = meta["annotations"]
                if not metadata(new).get("annotations"):
                    metadata(new).pop("annotations", None)
            else:
                new = self._merge_system_fields(rt, old, obj)
            self._validate(rt, new, old)
            if _without_version(new) == _without_version(old):
                return old
            if dry_run:
                return new
            metadata(new)["resourceVersion"] = self._bump()
            if self._finalized(rt, new):
                del self._bucket(rt)[key]
                return new
            self._bucket(rt)[key] = rt.to_storage(new) if rt.to_storage else new
            return self._view(rt, self._bucket(rt)[key])

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        preconditions: Obj | None = None,
        propagation: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """DELETE: remove the object, or mark it deleting while finalizers (or namespace content) remain."""
        with self.lock:
            key = self._key(rt, namespace, name)
            stored = self._bucket(rt).get(key)
            if stored is None:
                raise ApiError.not_found(rt.group, rt.plural, name)
            obj = self._view(rt, stored)
            meta = obj["metadata"]
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = (preconditions or {}).get(field)
                if wanted and wanted != meta.get(field):
                    why = (
                        f"Precondition failed: {label} in precondition: {wanted}, "
                        f"{label} in object meta: {meta.get(field)}"
                    )
                    raise ApiError.conflict(rt.group, rt.plural, name, why)
            if dry_run:
                return obj
            if rt is NAMESPACES or meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = format_time(self.clock.now())
                    meta["deletionGracePeriodSeconds"] = 0
                    if rt is NAMESPACES:
                        obj["status"] = {"phase": "Terminating"}
                    meta["resourceVersion"] = self._bump()
                    self._bucket(rt)[key] = rt.to_storage(obj) if rt.to_storage else obj
                return self._view(rt, self._bucket(rt)[key])
            del self._bucket(rt)[key]
            meta["resourceVersion"] = self._bump()
            if propagation == "Orphan":
                self._orphan(meta["uid"])
            return obj

    def remove(self, rt: ResourceType, namespace: str, name: str) -> None:
        """Drop an object outright, finalizers or not (the namespace controller and GC use this)."""
        with self.lock:
            if self._bucket(rt).pop(self._key(rt, namespace, name), None) is not None:
                self._bump()

    def new_uid(self) -> str:
        """A random (but seeded, so replays repeat) version-4 UUID."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def random_suffix(self, length: int = GENERATED_SUFFIX) -> str:
        """Random characters of the generated-name alphabet."""
        return "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(length))

    # ------------------------------------------------------------ internals

    def _bump(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _bucket(self, rt: ResourceType) -> dict[Key, Obj]:
        return self._data.setdefault(rt.storage_key, {})

    @staticmethod
    def _key(rt: ResourceType, namespace: str, name: str) -> Key:
        return (namespace if rt.namespaced else "", name)

    def _iter(self, rt: ResourceType, namespace: str) -> Iterator[Obj]:
        bucket = self._bucket(rt)
        for key in sorted(bucket):
            if not rt.namespaced or not namespace or key[0] == namespace:
                yield bucket[key]

    @staticmethod
    def _view(rt: ResourceType, stored: Obj) -> Obj:
        obj = rt.from_storage(clone(stored)) if rt.from_storage else clone(stored)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        return obj

    @staticmethod
    def _check_type(rt: ResourceType, obj: Obj) -> None:
        version, kind = obj.get("apiVersion"), obj.get("kind")
        if version and version != rt.api_version:
            msg = (
                f"the API version in the data ({version}) does not match "
                f"the expected API version ({rt.api_version})"
            )
            raise ApiError.bad_request(msg)
        if kind and kind != rt.kind:
            msg = f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            raise ApiError.bad_request(msg)
        if not isinstance(obj.get("metadata", {}), dict):
            raise ApiError.bad_request("metadata must be an object")

    def _require_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        ns = self._bucket(NAMESPACES).get(("", namespace))
        if ns is None:
            raise ApiError.not_found("", "namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            why = f"unable to create new content in namespace {namespace} because it is being terminated"
            raise ApiError.forbidden(rt.group, rt.plural, name, why)

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        for _ in range(100):
            name = prefix + self.random_suffix()
            if self._key(rt, namespace, name) not in self._bucket(rt):
                return name
        return prefix + safe_encode(str(self.rng.getrandbits(32)))

    def _merge_system_fields(self, rt: ResourceType, old: Obj, obj: Obj) -> Obj:
        meta, old_meta = metadata(obj), old["metadata"]
        for key in _KEEP_ON_UPDATE:
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        meta["name"] = old_meta["name"]
        if rt.namespaced:
            meta["namespace"] = old_meta["namespace"]
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.has_status:
            if "status" in old:
                obj["status"] = clone(old["status"])
            else:
                obj.pop("status", None)
        rt.defaults(obj)
        if rt.has_generation:
            changed = _spec_part(obj) != _spec_part(old)
            if rt.generation_on_annotations:
                changed = changed or meta.get("annotations") != old_meta.get("annotations")
            if changed:
                meta["generation"] = int(old_meta.get("generation") or 0) + 1
        return obj

    @staticmethod
    def _validate(rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        meta = obj["metadata"]
        errors: list[FieldError] = validate_object_meta(meta, rt.name_rule)
        for i, ref in enumerate(meta.get("ownerReferences") or []):
            for field in ("apiVersion", "kind", "name", "uid"):
                if not isinstance(ref, dict) or not ref.get(field):
                    errors.append(
                        invalid(f"metadata.ownerReferences[{i}].{field}", "", f"{field} must not be empty")
                    )
        errors += rt.validate(obj, old)
        if errors:
            raise ApiError.invalid(rt.group, rt.kind, str(meta.get("name") or ""), errors)

    @staticmethod
    def _finalized(rt: ResourceType, obj: Obj) -> bool:
        meta = obj["metadata"]
        return rt is not NAMESPACES and bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")

    def _orphan(self, owner_uid: str) -> None:
        for bucket in self._data.values():
            for obj in bucket.values():
                refs = obj["metadata"].get("ownerReferences") or []
                kept = [r for r in refs if r.get("uid") != owner_uid]
                if len(kept) != len(refs):
                    if kept:
                        obj["metadata"]["ownerReferences"] = kept
                    else:
                        obj["metadata"].pop("ownerReferences")
                    obj["metadata"]["resourceVersion"] = self._bump()


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in {"metadata", "status", "apiVersion", "kind"}}


def _without_version(obj: Obj) -> Obj:
    copy = dict(obj)
    copy["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return copy
