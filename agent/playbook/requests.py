"""What the playbook engine hands to the executor, and what it gets back.

:class:`ActionRequest` carries an idempotency key (playbook, target, incident, step): an executor
that has executed a key never executes it again. The real executor (guardrails that need the
cluster, leader check, approval, Kubernetes writes) comes with the remediations; this module has
the :class:`Executor` protocol and a :class:`RecordingExecutor` that writes nothing, for tests and
``aiops playbook test``. Nothing here imports the agent, so these records can move to
``remediations/`` unchanged.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("aiops.executor")


@dataclass(frozen=True, slots=True, order=True)
class TargetRef:
    """The Kubernetes object a playbook acts on."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}


class Approval(enum.StrEnum):
    """Whether an action runs at once or waits for a person to approve it."""

    NONE = "none"
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class RequestGuardrails:
    """The guardrails the executor applies, since they need the cluster or a person."""

    dry_run: bool = False
    approval: Approval = Approval.NONE
    min_replicas: int | None = None
    max_replicas: int | None = None
    max_step: int | None = None
    scale_down: bool = True  # False while a corrective incident is open on the target

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "dryRun": self.dry_run,
            "approval": self.approval.value,
            "minReplicas": self.min_replicas,
            "maxReplicas": self.max_replicas,
            "maxStep": self.max_step,
            "scaleDown": self.scale_down,
        }


def idempotency_key(playbook: str, target: TargetRef, incident: str, step: str) -> str:
    """The key that identifies one step of one incident: executing it twice must be impossible."""
    return f"{playbook}/{target}/{incident}/{step}"


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One action the engine wants run, with everything needed to run, plan or audit it."""

    key: str
    playbook: str
    incident: str
    step: str  # "actions[0]", "onFailure[1]"
    action: str
    target: TargetRef
    params: Mapping[str, Any]  # validated and rendered, YAML names
    guardrails: RequestGuardrails
    time: float
    signal_value: float
    reason: str = ""
    unhealthy: tuple[tuple[float, float], ...] = ()  # the target's incidents (start, end)
    restore: bool = False  # release what the incident raised instead of acting

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "key": self.key,
            "playbook": self.playbook,
            "incident": self.incident,
            "step": self.step,
            "action": self.action,
            "target": self.target.to_dict(),
            "params": dict(self.params),
            "guardrails": self.guardrails.to_dict(),
            "time": self.time,
            "signalValue": self.signal_value,
            "reason": self.reason,
            "unhealthy": [list(span) for span in self.unhealthy],
            "restore": self.restore,
        }


class ActionStatus(enum.StrEnum):
    """How a request ended (or that it has not ended yet)."""

    SUCCEEDED = "succeeded"
    NOOP = "noop"  # nothing to do: already as wanted
    DRY_RUN = "dry_run"  # planned and audited, nothing written
    PENDING_APPROVAL = "pending_approval"  # waits for a person; reported later
    SKIPPED = "skipped"  # a guardrail in the executor held it, or this replica is not the leader
    FAILED = "failed"


#: Statuses after which the engine goes on with the next step.
DONE_STATUSES = frozenset(
    {ActionStatus.SUCCEEDED, ActionStatus.NOOP, ActionStatus.DRY_RUN, ActionStatus.SKIPPED}
)


@dataclass(frozen=True, slots=True)
class ActionResult:
    """The outcome of one request."""

    key: str
    status: ActionStatus
    message: str = ""
    time: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "key": self.key,
            "status": self.status.value,
            "message": self.message,
            "time": self.time,
            "details": dict(self.details),
        }


class Executor(Protocol):
    """Runs action requests: guardrails that need the cluster, leader check, approval, the write.

    ``submit`` returns the result, or a result with status ``pending_approval`` and reports the
    final one later through the engine's ``report``. It never raises for an action that failed:
    that is a ``failed`` result.
    """

    def submit(self, request: ActionRequest) -> ActionResult:
        """Run (or plan, or queue) ``request``."""
        ...


class RecordingExecutor:
    """Writes nothing: records every request and answers as told. For tests and ``playbook test``.

    Requests with ``dryRun`` get ``dry_run``; with approval required, ``pending_approval``; an
    action named in ``fail`` gets ``failed``; every other gets ``outcome``. A key seen before gets
    ``skipped``, which is what an idempotent executor does.
    """

    def __init__(
        self, outcome: ActionStatus = ActionStatus.SUCCEEDED, fail: frozenset[str] = frozenset()
    ) -> None:
        self.outcome = outcome
        self.fail = fail
        self.requests: list[ActionRequest] = []
        self.results: list[ActionResult] = []
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, request: ActionRequest) -> ActionResult:
        """Record ``request`` and answer."""
        with self._lock:
            self.requests.append(request)
            if request.key in self._keys:
                status, message = ActionStatus.SKIPPED, "idempotency key already executed"
            elif request.action in self.fail:
                status, message = ActionStatus.FAILED, f"{request.action} failed (as the test asked)"
            elif request.guardrails.dry_run:
                status, message = ActionStatus.DRY_RUN, "dry run: planned, nothing written"
            elif request.guardrails.approval is Approval.REQUIRED:
                status, message = ActionStatus.PENDING_APPROVAL, "waiting for approval"
            else:
                status, message = self.outcome, "recorded, nothing written"
            self._keys.add(request.key)
            result = ActionResult(request.key, status, message, request.time)
            self.results.append(result)
            return result


class DryRunExecutor:
    """Plans and logs every request, writes nothing: the daemon's executor until a real one is wired.

    Remembers the last ``memory`` keys so a redelivered request is answered ``skipped``.
    """

    def __init__(self, memory: int = 10_000) -> None:
        self._keys: set[str] = set()
        self._order: deque[str] = deque()
        self._memory = memory
        self._lock = threading.Lock()

    def submit(self, request: ActionRequest) -> ActionResult:
        """Log the plan; answer ``dry_run`` (or ``skipped`` for a key seen before)."""
        with self._lock:
            if request.key in self._keys:
                return ActionResult(
                    request.key, ActionStatus.SKIPPED, "idempotency key already seen", request.time
                )
            self._keys.add(request.key)
            self._order.append(request.key)
            if len(self._order) > self._memory:
                self._keys.discard(self._order.popleft())
        log.warning(
            "dry run: would %s %s (%s)",
            request.action,
            request.target,
            request.key,
            extra={"action_request": request.to_dict()},
        )
        return ActionResult(
            request.key, ActionStatus.DRY_RUN, "dry run: no executor configured", request.time
        )
