"""The simulated scheduler and kubelet: bind pods to the node and move them through their phases.

A pod is Pending (ContainerCreating) for its fate's ``start_seconds``, then Running and Ready; a
crash-looping one restarts with the kubelet's back-off (``crash_restart_seconds``, doubling up
to five minutes) and is never ready; one with
``run_seconds`` terminates (Succeeded or Failed). The status is a pure function of the pod and
its timeline, so repeated passes write nothing new.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from simulations.twin.controllers.base import ANNOTATION_PREFIX, Context, Freshness, PodFate, TwinConfig
from simulations.twin.objects import (
    Obj,
    annotations_of,
    controller_ref,
    format_time,
    name_of,
    namespace_of,
    uid_of,
)
from simulations.twin.resources.core import PODS

TERMINAL = {"Succeeded", "Failed"}
HOST_IP = "10.0.0.10"


MAX_BACKOFF_SECONDS = 300.0


@dataclass
class _Timeline:
    created: float
    fate: PodFate
    loops: bool
    """Crash-looping: the container restarts in place (restartPolicy Always)."""


def crash_restarts(elapsed: float, base: float) -> tuple[int, float, float]:
    """Restarts of a crash-looping container ``elapsed`` seconds after it first started.

    The kubelet's back-off: ``base``, doubling, capped at five minutes. Returns the restart count,
    when (after the first start) the current attempt began, and when the next one will.
    """
    base = max(base, 1e-3)
    count, last, delay = 1, 0.0, base
    while last + delay <= elapsed:
        last += delay
        count += 1
        delay = min(delay * 2, MAX_BACKOFF_SECONDS)
    return count, last, last + delay


def fate_of(pod: Obj, config: TwinConfig) -> PodFate:
    """The fate of a pod: the hook's answer, else its annotations, else the configured defaults."""
    if config.pod_fate is not None:
        decided = config.pod_fate(pod)
        if decided is not None:
            return decided
    notes = annotations_of(pod)

    def number(key: str) -> float | None:
        value = notes.get(ANNOTATION_PREFIX + key)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    owner = controller_ref(pod)
    restart = (pod.get("spec") or {}).get("restartPolicy", "Always")
    run = number("run-seconds")
    if run is None and ((owner is not None and owner.get("kind") == "Job") or restart != "Always"):
        run = config.job_run_seconds
    start = number("start-seconds")
    exit_code = number("exit-code")
    return PodFate(
        start_seconds=config.pod_start_seconds if start is None else start,
        ready=notes.get(ANNOTATION_PREFIX + "ready", "true").lower() != "false",
        crash=notes.get(ANNOTATION_PREFIX + "crash", "false").lower() == "true",
        run_seconds=run,
        exit_code=int(exit_code) if exit_code is not None else 0,
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _pod_ip(uid: str) -> str:
    value = int(_digest(uid)[:4], 16)
    return f"10.244.{value >> 8}.{value & 255 or 1}"


class Kubelet:
    """Scheduler and kubelet for every pod of the twin (one node)."""

    def __init__(self) -> None:
        self._timelines: dict[str, _Timeline] = {}
        # a pod's status is current at the resourceVersion it was checked or written at, until
        # its timeline's next event: a pass skips it until either changes
        self._fresh = Freshness()

    def sync(self, ctx: Context) -> None:
        """Bind unscheduled pods and write each pod's status for the current time."""
        pods = ctx.store.peek(PODS)  # read only: every write below goes through the store
        seen: set[str] = set()
        for pod in pods:
            uid = uid_of(pod)
            seen.add(uid)
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            timeline = self._timelines.get(uid)
            if timeline is None:
                fate = fate_of(pod, ctx.config)
                loops = fate.crash and (pod.get("spec") or {}).get("restartPolicy", "Always") == "Always"
                timeline = _Timeline(ctx.now, fate, loops)
                self._timelines[uid] = timeline
            if not (pod.get("spec") or {}).get("nodeName"):
                self._bind(ctx, pod)
                continue
            version = str(pod["metadata"].get("resourceVersion"))
            if self._fresh.current(uid, version, ctx.now):
                continue
            status = self._status(pod, timeline, ctx.now, ctx.config.crash_restart_seconds)
            if status != pod.get("status"):
                written = ctx.store.update(
                    PODS, namespace_of(pod), name_of(pod), {**pod, "status": status}, subresource="status"
                )
                version = str(written["metadata"].get("resourceVersion"))
            self._fresh.record(uid, version, self._next_event(timeline, ctx))
        for uid in set(self._timelines) - seen:
            del self._timelines[uid]
        self._fresh.keep_only(seen)

    def _bind(self, ctx: Context, pod: Obj) -> None:
        """Bind the pod to the node (the scheduler), then write its status (the kubelet)."""
        body = {**pod, "spec": {**pod["spec"], "nodeName": ctx.config.node_name}}
        bound = ctx.store.update(PODS, namespace_of(pod), name_of(pod), body)
        timeline = self._timelines[uid_of(bound)]
        status = self._status(bound, timeline, ctx.now, ctx.config.crash_restart_seconds)
        if status != bound.get("status"):
            ctx.store.update(
                PODS, namespace_of(bound), name_of(bound), {**bound, "status": status}, subresource="status"
            )

    def next_due(self, ctx: Context) -> float | None:
        """The next start, exit or crash-loop restart of a pod."""
        events = (self._next_event(timeline, ctx) for timeline in self._timelines.values())
        due = [t for t in events if t is not None]
        return min(due) if due else None

    @staticmethod
    def _next_event(timeline: _Timeline, ctx: Context) -> float | None:
        """When the pod's status next changes by itself (start, exit, crash-loop restart), if ever."""
        fate, start = timeline.fate, timeline.created + timeline.fate.start_seconds
        if ctx.now < start:
            return start
        if fate.run_seconds is not None and not fate.crash and ctx.now < start + fate.run_seconds:
            return start + fate.run_seconds
        if timeline.loops:
            return start + crash_restarts(ctx.now - start, ctx.config.crash_restart_seconds)[2]
        return None

    # ------------------------------------------------------------ status

    @staticmethod
    def _status(pod: Obj, timeline: _Timeline, now: float, backoff: float) -> Obj:
        fate = timeline.fate
        spec = pod.get("spec") or {}
        old = pod.get("status") or {}
        scheduled = format_time(timeline.created)
        start = timeline.created + fate.start_seconds
        status: Obj = {
            "phase": "Pending",
            "conditions": [_condition("PodScheduled", True, scheduled)],
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "startTime": scheduled,
            "qosClass": old.get("qosClass", "BestEffort"),
        }
        containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
        if now < start:
            status["conditions"] = [
                _condition("PodReadyToStartContainers", False, scheduled),
                _condition("Initialized", True, scheduled),
                _condition("Ready", False, scheduled, "ContainersNotReady", _unready(containers)),
                _condition("ContainersReady", False, scheduled, "ContainersNotReady", _unready(containers)),
                _condition("PodScheduled", True, scheduled),
            ]
            status["containerStatuses"] = [
                _container(pod, c, ready=False, state={"waiting": {"reason": "ContainerCreating"}})
                for c in containers
            ]
            return status
        started = format_time(start)
        ip = _pod_ip(uid_of(pod))
        status.update({"podIP": ip, "podIPs": [{"ip": ip}]})
        end = start + fate.run_seconds if fate.run_seconds is not None else None
        restart_policy = spec.get("restartPolicy", "Always")
        if fate.crash and restart_policy != "Always":
            end = start
        if end is not None and now >= end and not (fate.crash and restart_policy == "Always"):
            failed = fate.crash or fate.exit_code != 0
            code = fate.exit_code or (1 if failed else 0)
            finished = format_time(end)
            status["phase"] = "Failed" if failed else "Succeeded"
            reason = "PodFailed" if failed else "PodCompleted"
            status["conditions"] = [
                _condition("PodReadyToStartContainers", False, finished),
                _condition("Initialized", True, scheduled, "PodCompleted"),
                _condition("Ready", False, finished, reason),
                _condition("ContainersReady", False, finished, reason),
                _condition("PodScheduled", True, scheduled),
            ]
            terminated = {
                "exitCode": code,
                "reason": "Error" if failed else "Completed",
                "startedAt": started,
                "finishedAt": finished,
                "containerID": _container_id(pod, 0),
            }
            status["containerStatuses"] = [
                _container(pod, c, ready=False, state={"terminated": terminated}, started=False)
                for c in containers
            ]
            return status
        status["phase"] = "Running"
        if fate.crash:
            restarts, since, _ = crash_restarts(now - start, backoff)
            last = start + since
            waiting = {
                "reason": "CrashLoopBackOff",
                "message": "back-off restarting failed container={name} "
                f"pod={name_of(pod)}_{namespace_of(pod)}",
            }
            terminated = {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": format_time(last),
                "finishedAt": format_time(last),
                "containerID": _container_id(pod, restarts),
            }
            status["conditions"] = [
                _condition("PodReadyToStartContainers", True, started),
                _condition("Initialized", True, scheduled),
                _condition("Ready", False, started, "ContainersNotReady", _unready(containers)),
                _condition("ContainersReady", False, started, "ContainersNotReady", _unready(containers)),
                _condition("PodScheduled", True, scheduled),
            ]
            status["containerStatuses"] = [
                {
                    **_container(
                        pod,
                        c,
                        ready=False,
                        state={
                            "waiting": {
                                **waiting,
                                "message": waiting["message"].replace("{name}", str(c.get("name"))),
                            }
                        },
                        started=False,
                    ),
                    "restartCount": restarts,
                    "lastState": {"terminated": terminated},
                }
                for c in containers
            ]
            return status
        ready = fate.ready
        status["conditions"] = [
            _condition("PodReadyToStartContainers", True, started),
            _condition("Initialized", True, scheduled),
            _condition(
                "Ready",
                ready,
                started,
                "" if ready else "ContainersNotReady",
                "" if ready else _unready(containers),
            ),
            _condition(
                "ContainersReady",
                ready,
                started,
                "" if ready else "ContainersNotReady",
                "" if ready else _unready(containers),
            ),
            _condition("PodScheduled", True, scheduled),
        ]
        status["containerStatuses"] = [
            _container(pod, c, ready=ready, state={"running": {"startedAt": started}}) for c in containers
        ]
        return status


def _condition(kind: str, ok: bool, when: str, reason: str = "", message: str = "") -> Obj:
    condition: Obj = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": when,
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _unready(containers: list[Obj]) -> str:
    return "containers with unready status: [" + " ".join(str(c.get("name")) for c in containers) + "]"


def _container_id(pod: Obj, restarts: int) -> str:
    return "containerd://" + _digest(f"{uid_of(pod)}/{restarts}")


def _container(pod: Obj, container: Obj, *, ready: bool, state: Obj, started: bool | None = None) -> Obj:
    image = str(container.get("image") or "")
    running = "running" in state
    status: Obj = {
        "name": str(container.get("name") or ""),
        "image": image,
        "imageID": "" if "waiting" in state and not started else f"{image}@sha256:{_digest(image)}",
        "ready": ready,
        "restartCount": 0,
        "started": running if started is None else started,
        "state": state,
    }
    if running or "terminated" in state:
        status["containerID"] = _container_id(pod, 0)
    return status
