"""Deletion: the garbage collector (dependents of deleted owners), Event expiry, the namespace controller."""

from __future__ import annotations

from simulations.twin import resources
from simulations.twin.controllers.base import Context
from simulations.twin.objects import name_of, namespace_of, parse_time
from simulations.twin.resources.core import EVENTS, NAMESPACES


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


class EventExpiry:
    """Deletes each Event ``event_ttl_seconds`` after it was created, as the API server's
    ``--event-ttl`` (default 1 h) does, so a long replay keeps the last hour of Events, not all.

    Events are created at the clock's time, so the oldest one expires first: between sweeps the
    controller only compares the time with that expiry.
    """

    def __init__(self) -> None:
        self._due: float | None = None
        """When the oldest stored Event expires (None: not known, sweep)."""

    def sync(self, ctx: Context) -> None:
        """Delete the Events whose time is up."""
        ttl = ctx.config.event_ttl_seconds
        if ttl is None or (self._due is not None and ctx.now < self._due):
            return
        oldest: float | None = None
        for obj in ctx.store.peek(EVENTS):
            created = parse_time(str(obj["metadata"]["creationTimestamp"]))
            if created + ttl <= ctx.now:
                ctx.store.remove(EVENTS, namespace_of(obj), name_of(obj))
            elif oldest is None or created < oldest:
                oldest = created
        self._due = None if oldest is None else oldest + ttl

    def next_due(self, ctx: Context) -> float | None:
        """When the oldest Event expires."""
        del ctx
        return self._due


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
