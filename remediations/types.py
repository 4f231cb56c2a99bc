"""The values every action works with: target, request, plan, result, context, and the protocols.

- :class:`Target`: the object an action acts on, its names checked against the Kubernetes rules
  when it is made, so a rendered template like ``web\\n`` or ``{{ x }}`` never reaches an API path.
- :class:`ActionRequest`: one step of one incident, with its validated parameters and the
  idempotency key (playbook, target, incident, step) that makes executing it twice impossible.
- :class:`Plan`: what an action would change, as a readable diff (dry-run and approval).
- :class:`ActionResult`: what happened (``executed``, ``dry_run``, ``skipped``, ``failed``, ``noop``).
- :class:`ActionContext`: what an action is given: the Kubernetes clients, the request, a clock.
- :class:`Action`: the protocol each action module implements.
"""

from __future__ import annotations

import enum
import hashlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from remediations.errors import ObjectRef
from remediations.names import check_kind, check_label, check_subdomain
from remediations.params import ActionParams

if TYPE_CHECKING:
    from remediations.kube import KubeClients

KEY_DIGEST_LENGTH = 16


class ActionClass(enum.StrEnum):
    """What an action is for; each class has its own budgets and cooldowns in the guardrails.

    Capacity actions (``scale``) work around a problem; corrective ones (``rollback``,
    ``restart``, ``delete_pod``, ``retrain``) fix its cause. Capacity never spends the budget a fix
    needs. Notifications change nothing and count against no budget.
    """

    CAPACITY = "capacity"
    CORRECTIVE = "corrective"
    NOTIFY = "notify"


class Clock(Protocol):
    """Where actions read the time and wait (the agent's clock fits: ``now()`` and ``wait()``)."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait ``seconds`` or until ``stop`` is set; True if ``stop`` is set."""
        ...


class SystemClock:
    """The wall clock, for callers that give none."""

    def now(self) -> float:
        """The system time."""
        return time.time()

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep, waking early when ``stop`` is set."""
        if stop is None:
            time.sleep(max(0.0, seconds))
            return False
        return stop.wait(max(0.0, seconds))


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """The Kubernetes object an action acts on; every name is checked when the Target is made."""

    kind: str
    namespace: str
    name: str

    def __post_init__(self) -> None:
        check_kind("target kind", self.kind)
        check_label("target namespace", self.namespace)
        check_subdomain("target name", self.name)

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def ref(self) -> ObjectRef:
        """The target as an :class:`~remediations.errors.ObjectRef` (for error messages)."""
        return ObjectRef(self.kind, self.namespace, self.name)

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}


def idempotency_key(playbook: str, target: Target, incident: str, step: str) -> str:
    """The key of one step of one incident on one target: ``playbook/Kind/ns/name/incident/step``."""
    for what, value in (("playbook", playbook), ("incident", incident), ("step", step)):
        if not value or any(c in value for c in "\n\r\t"):
            msg = f"idempotency key: {what} must be a non-empty single-line string, got {value!r}"
            raise ValueError(msg)
    return f"{playbook}/{target}/{incident}/{step}"


def key_digest(key: str, length: int = KEY_DIGEST_LENGTH) -> str:
    """A short stable hex digest of a key, for names and labels (``[0-9a-f]``, DNS-safe)."""
    return hashlib.sha256(key.encode()).hexdigest()[:length]


@dataclass(frozen=True, slots=True)
class Limits:
    """Guardrail limits the executor hands down; the actions enforce them where they write.

    ``namespaces`` is an allow-list (None: any namespace). Replica bounds combine with the ones an
    action's parameters give: the tighter one holds.
    """

    min_replicas: int | None = None
    max_replicas: int | None = None
    max_step: int | None = None
    namespaces: frozenset[str] | None = None
    scale_down: bool = True
    """False while a corrective incident is open on the target: capacity may go up, never down."""

    def __post_init__(self) -> None:
        for name in ("min_replicas", "max_replicas"):
            value = getattr(self, name)
            if value is not None and value < 0:
                msg = f"limits: {name} must be >= 0, got {value}"
                raise ValueError(msg)
        if self.max_step is not None and self.max_step < 1:
            msg = f"limits: max_step must be >= 1, got {self.max_step}"
            raise ValueError(msg)


#: Each of :class:`SignalFacts`' fields and its key in the audit and the approval records.
_SIGNAL_KEYS = (
    ("value", "signalValue"),
    ("mean", "signalMean"),
    ("capacity", "signalCapacity"),
    ("observed", "signalObserved"),
)


@dataclass(frozen=True, slots=True)
class SignalFacts:
    """What the triggering signal measured, for an action sized on it (``scale: toForecast``).

    Audited and stored with an approval flat, as ``signalValue``, ``signalMean``,
    ``signalCapacity`` and ``signalObserved``.
    """

    value: float | None = None
    """The signal's value (a forecast's upper bound)."""
    mean: float | None = None
    """A forecast's point value: its highest point forecast over the horizon."""
    capacity: float | None = None
    """A forecast's measured capacity per pod: what one ready pod serves at full utilisation."""
    observed: float | None = None
    """A forecast's observed peak: the highest value its series took over the last horizon."""

    def to_dict(self) -> dict[str, float | None]:
        """The audit's fields: ``signalValue`` always, the others when known."""
        return {
            key: getattr(self, name)
            for name, key in _SIGNAL_KEYS
            if name == "value" or getattr(self, name) is not None
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignalFacts:
        """The facts in a mapping from :meth:`to_dict` (absent or null fields: unknown)."""
        read = {name: data.get(key) for name, key in _SIGNAL_KEYS}
        return cls(**{name: None if value is None else float(value) for name, value in read.items()})


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One action to run: which, on what, with which parameters, and the key that makes it run once.

    Build it with :func:`remediations.registry.make_request`, which validates the parameters with
    the action's model and computes the key.
    """

    action: str
    target: Target
    params: ActionParams
    key: str
    incident: str
    playbook: str
    step: str = ""
    dry_run: bool = False
    reason: str = ""
    signal: SignalFacts = field(default_factory=SignalFacts)
    """What the triggering signal measured (a forecast's bound, point value, capacity, peak seen)."""
    limits: Limits = field(default_factory=Limits)
    unhealthy: tuple[tuple[float, float], ...] = ()
    """Times (start, end) when the target had an incident: a rollback avoids revisions live then."""
    restore: bool = False
    """Put back what the incident's earlier steps raised (``scale``), instead of acting."""

    def __post_init__(self) -> None:
        if not self.key or "\n" in self.key:
            msg = "ActionRequest.key must be a non-empty single-line string"
            raise ValueError(msg)
        params: object = self.params  # checked at run time too: callers may be untyped
        if not isinstance(params, ActionParams):
            msg = f"ActionRequest.params must be a validated parameters model, got {type(params).__name__}"
            raise TypeError(msg)
        if self.params.action and self.params.action != self.action:
            msg = f"ActionRequest for {self.action!r} carries parameters of {self.params.action!r}"
            raise ValueError(msg)

    @property
    def key_digest(self) -> str:
        """A short digest of the key, for object names and label values."""
        return key_digest(self.key)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the audit log)."""
        return {
            "action": self.action,
            "target": self.target.to_dict(),
            "params": self.params.to_yaml_dict(),
            "key": self.key,
            "incident": self.incident,
            "playbook": self.playbook,
            "step": self.step,
            "dryRun": self.dry_run,
            "reason": self.reason,
            **self.signal.to_dict(),
            **({"restore": True} if self.restore else {}),
        }


class ActionStatus(enum.StrEnum):
    """How an action ended."""

    EXECUTED = "executed"
    """It changed the cluster (or sent the notification)."""
    DRY_RUN = "dry_run"
    """It planned and wrote nothing, as asked."""
    SKIPPED = "skipped"
    """It chose not to act (e.g. someone else changed what it would restore)."""
    FAILED = "failed"
    """It could not act; ``error`` and ``message`` say why."""
    NOOP = "noop"
    """Nothing to do: already done for this key, or the object is already as wanted."""
    HELD = "held"
    """A guardrail held it back; ``details["guardrail"]`` names which."""
    PENDING_APPROVAL = "pending_approval"
    """It waits for a person; the final outcome comes later."""
    RUNNING = "running"
    """It runs off the caller's thread (the agent's action pool); the final outcome comes later."""


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class Plan:
    """What an action would change: a one-line summary and a readable diff of the fields involved."""

    action: str
    target: Target
    summary: str
    diff: str = ""
    changes: bool = True
    """False when executing would change nothing (already done, or already as wanted)."""
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", _frozen(self.details))

    def __str__(self) -> str:
        return f"{self.summary}\n{self.diff}" if self.diff else self.summary


@dataclass(frozen=True, slots=True)
class ActionResult:
    """The outcome of one action: status, a message for people, the diff, and details for the audit."""

    status: ActionStatus
    message: str
    action: str = ""
    key: str = ""
    target: Target | None = None
    diff: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""
    """For ``failed``: the error's class name (``NotFoundError``, ``ActionRefused`` ...)."""
    retryable: bool = False
    """For ``failed``: whether trying again later may succeed."""
    retry_after: float | None = None
    """For a retryable failure: how long to wait before trying again (None: the caller decides)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", _frozen(self.details))

    @property
    def ok(self) -> bool:
        """Whether the action did what it should (executed, noop or dry run)."""
        return self.status in {ActionStatus.EXECUTED, ActionStatus.NOOP, ActionStatus.DRY_RUN}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the audit log)."""
        return {
            "status": self.status.value,
            "message": self.message,
            "action": self.action,
            "key": self.key,
            "target": self.target.to_dict() if self.target is not None else None,
            "diff": self.diff,
            "details": dict(self.details),
            "error": self.error,
            "retryable": self.retryable,
            "retryAfter": self.retry_after,
        }


class RetrainPublisher(Protocol):
    """Publishes a retrain request (the agent supplies one that writes to Kafka)."""

    def publish(self, topic: str, key: str, message: Mapping[str, Any]) -> None:
        """Send ``message`` to ``topic`` with ``key``; raise on failure."""
        ...


@dataclass(frozen=True)
class ActionContext:
    """Everything an action is given: the Kubernetes clients, the request, a clock, and options.

    ``environ`` is where secrets named in parameters are read (None: ``os.environ`` at the time of
    use); ``instance`` names this agent replica in Events; ``stop`` cuts retries short at shutdown.
    """

    kube: KubeClients
    request: ActionRequest
    clock: Clock
    publisher: RetrainPublisher | None = None
    environ: Mapping[str, str] | None = None
    instance: str = ""
    stop: threading.Event | None = None

    @property
    def target(self) -> Target:
        """The request's target."""
        return self.request.target


class Action(Protocol):
    """An action: a name, a parameters model, the kinds it acts on, ``plan`` and ``execute``.

    ``plan`` reads and never writes; it raises a :class:`~remediations.errors.RemediationError`
    when the action cannot go ahead. ``execute`` is idempotent (a request executed twice acts once)
    and never raises for a failure of the action: that is a ``failed`` result.
    """

    @property
    def name(self) -> str:
        """The action's name in playbooks."""
        ...

    @property
    def params_model(self) -> type[ActionParams]:
        """The pydantic model of the parameters."""
        ...

    @property
    def target_kinds(self) -> frozenset[str]:
        """The kinds of target it acts on."""
        ...

    @property
    def action_class(self) -> ActionClass:
        """Capacity, corrective or notify: which budgets it spends."""
        ...

    def plan(self, ctx: ActionContext) -> Plan:
        """What it would change, as a readable diff; writes nothing."""
        ...

    def execute(self, ctx: ActionContext) -> ActionResult:
        """Act (or only plan, for a dry-run request); idempotent."""
        ...
