"""The Job controller: run ``parallelism`` pods until ``completions`` succeed, or fail the Job.

Pods run for the kubelet's ``job_run_seconds`` (or the template's ``twin.aiops.dev/run-seconds``)
after they start; a pod exiting non-zero (``twin.aiops.dev/exit-code``) counts as a failure,
replaced until ``backoffLimit`` is exceeded. Conditions and counters are those of the real
controller: ``SuccessCriteriaMet`` then ``Complete``, or ``FailureTarget`` then ``Failed``.
"""

from __future__ import annotations

from simulations.twin.controllers.base import Context, copies, owned_by
from simulations.twin.controllers.replicaset import is_active, is_ready, pod_from_template
from simulations.twin.objects import Obj, find_condition, format_time, name_of, namespace_of, parse_time
from simulations.twin.resources.batch import JOBS
from simulations.twin.resources.core import PODS

COMPONENT = "job-controller"


def _condition(kind: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def is_finished(job: Obj) -> bool:
    """The Job has a Complete or Failed condition that is True."""
    return any(
        (c := find_condition(job, kind)) is not None and c.get("status") == "True"
        for kind in ("Complete", "Failed")
    )


class JobController:
    """Runs Jobs to completion (or failure)."""

    def sync(self, ctx: Context) -> None:
        """One pass over all Jobs."""
        jobs, _ = ctx.store.list(JOBS)
        if not jobs:
            return
        pods_by_owner = owned_by(ctx.store.peek(PODS))  # read only: copies of the ones synced below
        for job in jobs:
            if not job["metadata"].get("deletionTimestamp") and not is_finished(job):
                self._sync_one(ctx, job, copies(ctx, PODS, pods_by_owner.get(job["metadata"]["uid"], [])))

    def next_due(self, ctx: Context) -> float | None:
        """When a running Job passes its ``activeDeadlineSeconds``."""
        due: list[float] = []
        for job in ctx.store.list(JOBS)[0]:
            deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
            started = (job.get("status") or {}).get("startTime")
            if deadline and started and not is_finished(job):
                when = parse_time(str(started)) + int(deadline)
                if when > ctx.now:
                    due.append(when)
        return min(due) if due else None

    def _sync_one(self, ctx: Context, job: Obj, pods: list[Obj]) -> None:
        spec = job.get("spec") or {}
        old = job.get("status") or {}
        status: Obj = dict(old)
        now = format_time(ctx.now)
        if spec.get("suspend"):
            for pod in pods:
                if is_active(pod):
                    ctx.store.delete(PODS, namespace_of(pod), name_of(pod))
            status.update({"active": 0, "ready": 0})
            self._write(ctx, job, status)
            return
        status.setdefault("startTime", now)
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        active = [p for p in pods if is_active(p)]
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        backoff = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        conditions = list(old.get("conditions") or [])
        done: tuple[str, str, str] | None = None
        if failed > backoff:
            done = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline and ctx.now >= parse_time(str(status["startTime"])) + int(deadline):
            done = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        elif (completions is not None and succeeded >= int(completions)) or (
            completions is None and succeeded > 0 and not active
        ):
            done = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        if done is not None:
            kind, reason, message = done
            for pod in active:
                ctx.store.delete(PODS, namespace_of(pod), name_of(pod))
            interim = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
            conditions += [_condition(interim, reason, message, now), _condition(kind, reason, message, now)]
            status.update({"active": 0, "ready": 0, "conditions": conditions})
            if kind == "Complete":
                status["completionTime"] = now
                ctx.event(job, "Completed", "Job completed", COMPONENT)
            else:
                ctx.event(job, reason, message, COMPONENT, "Warning")
        else:
            remaining = parallelism if completions is None else min(parallelism, int(completions) - succeeded)
            for _ in range(max(0, remaining - len(active))):
                pod = ctx.store.create(
                    PODS,
                    namespace_of(job),
                    pod_from_template(job, spec.get("template") or {}, name_of(job) + "-"),
                )
                active.append(pod)
                ctx.event(job, "SuccessfulCreate", f"Created pod: {name_of(pod)}", COMPONENT)
            status.update({"active": len(active), "ready": sum(1 for p in active if is_ready(p))})
        status["succeeded"], status["failed"] = succeeded, failed
        status.setdefault("uncountedTerminatedPods", {})
        status.setdefault("terminating", 0)
        self._write(ctx, job, status)

    @staticmethod
    def _write(ctx: Context, job: Obj, status: Obj) -> None:
        keep = ("ready", "terminating")
        status = {k: v for k, v in status.items() if k in keep or v != 0}
        if status != job.get("status"):
            ctx.store.update(
                JOBS, namespace_of(job), name_of(job), {**job, "status": status}, subresource="status"
            )
