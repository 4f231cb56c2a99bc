"""Deletion: the garbage collector (dependents of deleted owners) and the namespace controller."""

from __future__ import annotations

from simulations.twin import resources
from simulations.twin.controllers.base import Context
from simulations.twin.objects import name_of, namespace_of
from simulations.twin.resources.core import NAMESPACES


class GarbageCollector:
    """Deletes objects whose owners are all gone (background cascading deletion)."""

    def sync(self, ctx: Context) -> None:
        """One sweep over all namespaced objects with owner references."""
        alive = ctx.store.uids()
        seen_storage: set[str] = set()
        for rt in resources.ALL:
            if rt.storage_key in seen_storage or rt.from_storage is not None:
                continue
            seen_storage.add(rt.storage_key)
            for obj in ctx.store.peek(rt):  # read only: most sweeps delete nothing
                refs = obj["metadata"].get("ownerReferences") or []
                if refs and not any(ref.get("uid") in alive for ref in refs):
                    ctx.store.remove(rt, namespace_of(obj), name_of(obj))

    def next_due(self, ctx: Context) -> float | None:
        """Nothing timed."""
        del ctx
        return None


class NamespaceController:
    """Empties a namespace being deleted, then removes it."""

    def sync(self, ctx: Context) -> None:
        """Finish the deletion of terminating namespaces."""
        for ns in ctx.store.list(NAMESPACES)[0]:
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            namespace = name_of(ns)
            seen_storage: set[str] = set()
            for rt in resources.ALL:
                if not rt.namespaced or rt.storage_key in seen_storage:
                    continue
                seen_storage.add(rt.storage_key)
                for obj in ctx.store.list(rt, namespace)[0]:
                    ctx.store.remove(rt, namespace, name_of(obj))
            ctx.store.remove(NAMESPACES, "", namespace)

    def next_due(self, ctx: Context) -> float | None:
        """Nothing timed."""
        del ctx
        return None
