"""What the playbook engine hands to the executor: a proposal around a request, and the protocol.

The request, its outcome and its plan are the remediations' (:mod:`remediations.types`:
:class:`~remediations.types.ActionRequest`, :class:`~remediations.types.ActionStatus`,
:class:`~remediations.types.ActionResult`), one vocabulary from the engine to the write. The
engine wraps a request in a :class:`Proposal` that carries what only the engine knows: whether a
person must approve it, the playbook's priority, the action's class, the evidence (the signal
that fired) and its source (detectors or alerts). :class:`RecordingExecutor` writes nothing, for
tests and ``aiops playbook test``; :class:`DryRunExecutor` plans and logs, for a daemon without an
executor.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from remediations.registry import get_action, make_request
from remediations.types import (
    ActionClass,
    ActionRequest,
    ActionResult,
    ActionStatus,
    Limits,
    SignalFacts,
    Target,
)

log = logging.getLogger("aiops.executor")


class Approval(enum.StrEnum):
    """Whether an action runs at once or waits for a person to approve it."""

    NONE = "none"
    REQUIRED = "required"


#: Outcomes after which the engine goes on with the next step.
DONE_STATUSES = frozenset(
    {ActionStatus.EXECUTED, ActionStatus.NOOP, ActionStatus.DRY_RUN, ActionStatus.SKIPPED}
)
#: Answers that say the outcome comes later, through the engine's ``report``.
LATER_STATUSES = frozenset({ActionStatus.PENDING_APPROVAL, ActionStatus.RUNNING})


@dataclass(frozen=True, slots=True)
class Proposal:
    """One request the engine wants run, with what only the engine knows about it."""

    request: ActionRequest
    time: float
    approval: Approval = Approval.NONE
    priority: int = 0
    evidence: Mapping[str, Any] = field(default_factory=dict)
    """The signal that fired, as JSON (detector, score, value, expected ...)."""
    source: str = "signals"
    """Where the incident's evidence came from (``signals`` or ``alerts``): each has its own budgets."""

    @property
    def key(self) -> str:
        """The request's idempotency key."""
        return self.request.key

    @property
    def action(self) -> str:
        """The action's name."""
        return self.request.action

    @property
    def target(self) -> Target:
        """The object acted on."""
        return self.request.target

    @property
    def playbook(self) -> str:
        """The playbook that proposes it."""
        return self.request.playbook

    @property
    def incident(self) -> str:
        """The incident it belongs to."""
        return self.request.incident

    @property
    def action_class(self) -> ActionClass:
        """Capacity, corrective or notify."""
        return get_action(self.request.action).action_class

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (audit, approval records)."""
        request = self.request
        return {
            **request.to_dict(),
            "limits": {
                "minReplicas": request.limits.min_replicas,
                "maxReplicas": request.limits.max_replicas,
                "maxStep": request.limits.max_step,
                "namespaces": None
                if request.limits.namespaces is None
                else sorted(request.limits.namespaces),
                "scaleDown": request.limits.scale_down,
            },
            "unhealthy": [list(span) for span in request.unhealthy],
            "time": self.time,
            "approval": self.approval.value,
            "priority": self.priority,
            "class": self.action_class.value,
            "evidence": dict(self.evidence),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proposal:
        """A proposal from :meth:`to_dict` (an approval record read after a restart), validated again."""
        t, lim = data["target"], data.get("limits") or {}
        namespaces = lim.get("namespaces")
        request = make_request(
            str(data["action"]),
            Target(str(t["kind"]), str(t["namespace"]), str(t["name"])),
            dict(data.get("params") or {}),
            playbook=str(data["playbook"]),
            incident=str(data["incident"]),
            step=str(data["step"]),
            dry_run=bool(data.get("dryRun", False)),
            reason=str(data.get("reason") or ""),
            signal=SignalFacts.from_dict(data),
            limits=Limits(
                min_replicas=lim.get("minReplicas"),
                max_replicas=lim.get("maxReplicas"),
                max_step=lim.get("maxStep"),
                namespaces=None if namespaces is None else frozenset(namespaces),
                scale_down=bool(lim.get("scaleDown", True)),
            ),
        )
        request = replace(
            request,
            key=str(data["key"]),
            unhealthy=tuple((float(a), float(b)) for a, b in data.get("unhealthy") or ()),
            restore=bool(data.get("restore", False)),
        )
        return cls(
            request,
            float(data.get("time") or 0.0),
            Approval(data.get("approval", "none")),
            int(data.get("priority") or 0),
            dict(data.get("evidence") or {}),
            str(data.get("source") or "signals"),
        )


class Executor(Protocol):
    """Runs proposals: guardrails that need the cluster, leader check, approval, the write.

    ``submit`` returns the outcome, or ``pending_approval`` / ``running`` and reports the final
    outcome later through the engine's ``report``. It never raises for an action that failed: that is a
    ``failed`` result.
    """

    def submit(self, proposal: Proposal) -> ActionResult:
        """Run (or plan, or queue) ``proposal``."""
        ...


def outcome(proposal: Proposal, status: ActionStatus, message: str, **details: Any) -> ActionResult:
    """A result for ``proposal`` decided without running the action (a guard, a recording)."""
    request = proposal.request
    return ActionResult(status, message, request.action, request.key, request.target, details=details)


class RecordingExecutor:
    """Writes nothing: records every proposal and answers as told. For tests and ``playbook test``.

    Dry-run requests get ``dry_run``; with approval required, ``pending_approval``; an action
    named in ``fail`` gets ``failed``; every other gets ``outcome``. A key seen before gets
    ``skipped``, which is what an idempotent executor does.
    """

    def __init__(
        self, outcome: ActionStatus = ActionStatus.EXECUTED, fail: frozenset[str] = frozenset()
    ) -> None:
        self.outcome = outcome
        self.fail = fail
        self.requests: list[Proposal] = []
        self.results: list[ActionResult] = []
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, proposal: Proposal) -> ActionResult:
        """Record ``proposal`` and answer."""
        with self._lock:
            self.requests.append(proposal)
            if proposal.key in self._keys:
                status, message = ActionStatus.SKIPPED, "idempotency key already executed"
            elif proposal.action in self.fail:
                status, message = ActionStatus.FAILED, f"{proposal.action} failed (as the test asked)"
            elif proposal.request.dry_run:
                status, message = ActionStatus.DRY_RUN, "dry run: planned, nothing written"
            elif proposal.approval is Approval.REQUIRED:
                status, message = ActionStatus.PENDING_APPROVAL, "waiting for approval"
            else:
                status, message = self.outcome, "recorded, nothing written"
            self._keys.add(proposal.key)
            result = outcome(proposal, status, message)
            self.results.append(result)
            return result


class DryRunExecutor:
    """Plans and logs every proposal, writes nothing: the daemon's executor until a real one is wired.

    Remembers the last ``memory`` keys so a redelivered request is answered ``skipped``.
    """

    def __init__(self, memory: int = 10_000) -> None:
        self._keys: set[str] = set()
        self._order: deque[str] = deque()
        self._memory = memory
        self._lock = threading.Lock()

    def submit(self, proposal: Proposal) -> ActionResult:
        """Log the plan; answer ``dry_run`` (or ``skipped`` for a key seen before)."""
        with self._lock:
            if proposal.key in self._keys:
                return outcome(proposal, ActionStatus.SKIPPED, "idempotency key already seen")
            self._keys.add(proposal.key)
            self._order.append(proposal.key)
            if len(self._order) > self._memory:
                self._keys.discard(self._order.popleft())
        log.warning(
            "dry run: would %s %s (%s)",
            proposal.action,
            proposal.target,
            proposal.key,
            extra={"action_request": proposal.to_dict()},
        )
        return outcome(proposal, ActionStatus.DRY_RUN, "dry run: no executor configured")
