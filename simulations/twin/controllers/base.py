"""What every twin controller shares: its configuration, the context of a pass, the event recorder."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from agent.clock import Clock
from simulations.twin.errors import ApiError
from simulations.twin.objects import Obj, format_time, name_of, namespace_of, uid_of
from simulations.twin.resources.base import ResourceType
from simulations.twin.resources.core import EVENTS
from simulations.twin.store import Store

ANNOTATION_PREFIX = "twin.aiops.dev/"
"""Pod-template annotations under this prefix steer the simulated kubelet (see :class:`PodFate`)."""


@dataclass(frozen=True)
class PodFate:
    """How a simulated pod behaves once scheduled.

    ``start_seconds`` after creation its containers run; they are ready unless ``ready`` is False
    or ``crash`` is True (CrashLoopBackOff: restarting, never ready). With ``run_seconds`` set the
    containers exit that long after starting: the pod Succeeds with ``exit_code`` 0, else Fails.
    """

    start_seconds: float
    ready: bool = True
    crash: bool = False
    run_seconds: float | None = None
    exit_code: int = 0


PodFateHook = Callable[[Obj], PodFate | None]
"""Decides a pod's fate from the pod (None: fall back to annotations and defaults)."""

HpaHook = Callable[[Obj, Obj], int | None]
"""``(hpa, target)`` to the replica count the HPA would recommend from metrics (None: keep current)."""


@dataclass
class TwinConfig:
    """Timings and hooks of the simulated control plane and kubelet.

    Pod-template annotations override the timings per workload: ``twin.aiops.dev/start-seconds``,
    ``twin.aiops.dev/run-seconds``, ``twin.aiops.dev/exit-code``, ``twin.aiops.dev/crash: "true"``
    (CrashLoopBackOff) and ``twin.aiops.dev/ready: "false"`` (running, never ready).
    """

    pod_start_seconds: float = 2.0
    """From pod creation to containers running and ready."""
    job_run_seconds: float = 5.0
    """How long a Job's pod runs (after starting) before it succeeds."""
    crash_restart_seconds: float = 10.0
    """Time between restarts of a crash-looping container."""
    hpa_sync_seconds: float = 15.0
    """HorizontalPodAutoscaler resync period (a spec change is acted on at once)."""
    node_name: str = "twin-node-1"
    seed: int = 0
    namespaces: tuple[str, ...] = ("default", "kube-system", "kube-public", "kube-node-lease")
    emit_events: bool = True
    """Whether controllers write Events (ScalingReplicaSet, SuccessfulCreate ...) like the real ones."""
    event_ttl_seconds: float | None = 3600.0
    """How long an Event is kept after it was created (the API server's ``--event-ttl``; None: forever)."""
    pod_fate: PodFateHook | None = None
    hpa_recommendation: HpaHook | None = None


@dataclass
class Context:
    """One reconcile pass: the store, the clock reading of the pass, the configuration."""

    store: Store
    clock: Clock
    config: TwinConfig
    now: float = 0.0
    _event_serial: list[int] = field(default_factory=lambda: [0])

    def event(self, involved: Obj, reason: str, message: str, component: str, kind: str = "Normal") -> None:
        """Record a core/v1 Event on ``involved``, as a controller's event recorder does."""
        if not self.config.emit_events:
            return
        self._event_serial[0] += 1
        stamp = format_time(self.now)
        name = f"{name_of(involved)}.{int(self.now * 1e9) + self._event_serial[0]:x}"
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace_of(involved) or "default"},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", ""),
                "kind": involved.get("kind", ""),
                "name": name_of(involved),
                "namespace": namespace_of(involved),
                "uid": uid_of(involved),
                "resourceVersion": str((involved.get("metadata") or {}).get("resourceVersion") or ""),
            },
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": kind,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": "",
        }
        # In a namespace being deleted the recorder drops the event, as the real one would.
        with contextlib.suppress(ApiError):
            self.store.create(EVENTS, namespace_of(involved) or "default", body)


class Controller(Protocol):
    """A reconcile loop of the simulated control plane."""

    def sync(self, ctx: Context) -> None:
        """Bring the store one step closer to the desired state."""
        ...

    def next_due(self, ctx: Context) -> float | None:
        """The earliest future time at which this controller has work (None: only on changes)."""
        ...


Signature = tuple[str, tuple[str, ...]]
"""An object's resourceVersion and those of the objects it owns: what a controller's sync of it reads."""


def versions_of(owner: Obj, owned: Iterable[Obj]) -> Signature:
    """The :data:`Signature` of ``owner`` and ``owned`` (in the order given)."""
    return (
        str(owner["metadata"].get("resourceVersion")),
        tuple(str(o["metadata"].get("resourceVersion")) for o in owned),
    )


class Freshness:
    """Which objects a controller knows to be current: at which signature, and until when.

    An object is current while its signature (e.g. its resourceVersion) is the one recorded and
    the time is before the recorded deadline (``None``: none); a pass can skip it meanwhile.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[object, float]] = {}

    def current(self, uid: str, signature: object, now: float) -> bool:
        """Whether ``uid`` was recorded at ``signature`` and its deadline is still ahead."""
        known = self._known.get(uid)
        return known is not None and known[0] == signature and now < known[1]

    def record(self, uid: str, signature: object, until: float | None) -> None:
        """``uid`` is current at ``signature`` until ``until``."""
        self._known[uid] = (signature, until if until is not None else math.inf)

    def forget(self, uid: str) -> None:
        """``uid`` must be looked at again."""
        self._known.pop(uid, None)

    def keep_only(self, alive: set[str]) -> None:
        """Drop what is recorded of objects not in ``alive`` (deleted ones)."""
        for uid in set(self._known) - alive:
            del self._known[uid]


class SettledObjects:
    """Syncs a controller's objects, skipping those its last sync of them left as they were.

    For controllers whose sync of an object reads only that object and the objects it owns, and
    the time only through one deadline (``until``): when a sync wrote nothing, the object is
    settled until its :data:`Signature` changes or the deadline comes.
    """

    def __init__(self) -> None:
        self._fresh = Freshness()

    def sync_all(
        self,
        ctx: Context,
        rt: ResourceType,
        stored: Iterable[Obj],
        owned: dict[str, list[Obj]],
        sync: Callable[[Obj, list[Obj]], None],
        until: Callable[[Obj, list[Obj]], float | None],
    ) -> None:
        """Sync each of ``stored`` (read-only store objects) that is not settled, on a copy of it.

        ``owned`` maps an owner's uid to its (stored) objects; ``sync`` and ``until`` get the
        copy and those.
        """
        alive: set[str] = set()
        for obj in stored:
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            uid = str(meta["uid"])
            alive.add(uid)
            children = owned.get(uid, [])
            signature = versions_of(obj, children)
            if self._fresh.current(uid, signature, ctx.now):
                continue
            current = ctx.store.find(rt, namespace_of(obj), name_of(obj))
            if current is None:
                continue
            revision = ctx.store.revision
            sync(current, children)
            if ctx.store.revision == revision:
                self._fresh.record(uid, signature, until(current, children))
            else:
                self._fresh.forget(uid)
        self._fresh.keep_only(alive)


def copies(ctx: Context, rt: ResourceType, stored: Iterable[Obj]) -> list[Obj]:
    """Copies of the read-only store objects ``stored`` (see ``Store.peek``) still in the store."""
    found = (ctx.store.find(rt, namespace_of(obj), name_of(obj)) for obj in stored)
    return [obj for obj in found if obj is not None]


def owned_by(objects: Iterable[Obj]) -> dict[str, list[Obj]]:
    """Objects grouped by the uid of their controlling owner."""
    grouped: dict[str, list[Obj]] = {}
    for obj in objects:
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("controller") is True:
                grouped.setdefault(str(ref.get("uid")), []).append(obj)
    return grouped


def strip_zeros(status: Obj, keep: tuple[str, ...] = ()) -> Obj:
    """Drop zero counters from a status, as Go's ``omitempty`` does (except the fields in ``keep``)."""
    return {
        k: v
        for k, v in status.items()
        if k in keep or not (v == 0 and isinstance(v, int) and not isinstance(v, bool))
    }
