"""Guardrails: what may hold an action back, and the checks themselves, as pure code on given times.

Two layers: the agent config has :class:`GuardrailDefaults`; each playbook has
:class:`PlaybookGuardrails`. A playbook can only tighten the defaults: for each field the
effective value is the stricter of the two (:func:`effective`).

The playbook engine checks what it can decide alone, before it asks for an action: the namespace
allow-list, the cooldown per playbook and target, and the hourly rate limits
(:func:`check_action`). Budgets are kept per action class (:class:`~remediations.types.ActionClass`):
capacity actions (scale) and corrective ones (rollback, restart, delete_pod, retrain) each have
their own per-target and agent-wide hourly limits, so scaling never spends what a fix needs.
The executor applies what needs the cluster or a person: dry-run,
approval, and the replica bounds and step of a scale, with :func:`check_scale`.

Every check takes the time as an argument and returns a :class:`Verdict`: allowed, or the name of
the guardrail that held the action, why, and until when.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.playbook.fields import Duration
from agent.playbook.requests import Approval
from remediations.names import check_label
from remediations.state import RecordedAction
from remediations.types import ActionClass, Limits, Target, key_digest

HOUR = 3600.0
#: A recorded action dated further ahead than this (another replica's clock) is not believed.
SKEW = 60.0

_NAMESPACE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

#: Where an incident's evidence came from: the detectors' signals, or Alertmanager's alerts. Each
#: source has its own budgets and incident slots.
SIGNALS = "signals"
ALERTS = "alerts"

#: The cluster's own namespaces: no playbook acts there unless the config lifts it (``unprotect``).
PROTECTED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
#: What ``max_step`` limits (the agent's guardrail and a playbook's ``maxStep``).
MAX_STEP = (
    "one scale changes replicas by at most this (not a forecast lowering an HPA's floor: the HPA paces"
    " the pods that go)"
)


def _namespace_names(value: list[str] | None) -> list[str] | None:
    """Namespace lists hold namespace names: they become RBAC Roles' namespaces (agent.rbac)."""
    for name in value or ():
        check_label("namespace", name)
    return value


class GuardrailDefaults(BaseModel):
    """Agent-wide guardrails (config section); playbooks may tighten them, never loosen them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    cooldown: Duration = Field(300.0, description="least time between two remediations of one target")
    max_per_hour: int | None = Field(
        6,
        ge=0,
        description="workload-changing actions per target per hour, counted per action class "
        "(capacity, corrective); null: no limit",
    )
    max_per_hour_total: int | None = Field(
        30,
        ge=0,
        description="workload-changing actions per hour, all targets together, counted per action "
        "class; null: no limit",
    )
    repeat_window: Duration = Field(
        86400.0,
        description="a second corrective action of the same kind on one target within this long "
        "waits for a person's approval instead of running",
    )
    restore_after: Duration = Field(
        600.0,
        description="what a capacity incident raised is put back this long after it resolves "
        "(unless a person changed it meanwhile)",
    )
    min_replicas: int = Field(1, ge=0, description="scale never goes below this")
    max_replicas: int | None = Field(None, ge=0, description="scale never goes above this")
    max_step: int | None = Field(None, ge=1, description=MAX_STEP)
    namespaces: list[str] | None = Field(
        None,
        description="the namespaces the agent may act in (Kubernetes names); null: all. `aiops rbac` "
        "makes Roles in them instead of a ClusterRole (docs/deployment.md, RBAC)",
    )
    protected_namespaces: list[str] = Field(
        default_factory=lambda: list(PROTECTED_NAMESPACES),
        description="namespaces the agent never acts in, whatever a playbook or signal names (the agent's "
        "own namespace, $POD_NAMESPACE, is added at start); lift one only with unprotect",
    )
    unprotect: list[str] = Field(
        default_factory=list,
        description="protected namespaces the agent may act in after all: the one explicit way to lift "
        "the protection",
    )
    dry_run: bool = Field(False, description="plan and audit every action, write nothing")
    approval: Approval = Field(Approval.NONE, description="required: every action waits for approval")

    @field_validator("namespaces", "protected_namespaces", "unprotect")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        return _namespace_names(value)

    @model_validator(mode="after")
    def _bounds(self) -> GuardrailDefaults:
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            msg = f"max_replicas {self.max_replicas} is below min_replicas {self.min_replicas}"
            raise ValueError(msg)
        return self


class PlaybookGuardrails(BaseModel):
    """A playbook's guardrails: each field tightens the agent's default, never loosens it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    cooldown: Duration | None = Field(
        None, description="least time between two remediations of one target by this playbook"
    )
    max_per_hour: int | None = Field(
        None, alias="maxPerHour", ge=0, description="workload-changing actions per target per hour"
    )
    max_per_hour_total: int | None = Field(
        None,
        alias="maxPerHourTotal",
        ge=0,
        description="workload-changing actions per hour by this playbook, all targets together",
    )
    min_replicas: int | None = Field(None, alias="minReplicas", ge=0, description="scale never below this")
    max_replicas: int | None = Field(None, alias="maxReplicas", ge=0, description="scale never above this")
    max_step: int | None = Field(None, alias="maxStep", ge=1, description=MAX_STEP)
    namespaces: list[str] | None = Field(
        None,
        description="only act in these namespaces (within the agent's own allow-list)",
        json_schema_extra={"items": {"type": "string", "pattern": _NAMESPACE}},
    )
    dry_run: bool = Field(False, alias="dryRun", description="plan and audit, write nothing")
    approval: Approval = Field(Approval.NONE, description="required: each action waits for approval")

    @field_validator("namespaces")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        return _namespace_names(value)

    @model_validator(mode="after")
    def _bounds(self) -> PlaybookGuardrails:
        if (
            self.min_replicas is not None
            and self.max_replicas is not None
            and self.max_replicas < self.min_replicas
        ):
            msg = f"maxReplicas {self.max_replicas} is below minReplicas {self.min_replicas}"
            raise ValueError(msg)
        return self


def protecting(defaults: GuardrailDefaults, own: str | None) -> GuardrailDefaults:
    """``defaults`` with the agent's own namespace ``own`` protected too: it never acts on itself
    (``unprotect`` still lifts it, as any protected namespace)."""
    if not own or own in defaults.protected_namespaces:
        return defaults
    return defaults.model_copy(update={"protected_namespaces": [*defaults.protected_namespaces, own]})


def _min_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


@dataclass(frozen=True, slots=True)
class EffectiveGuardrails:
    """The guardrails that apply to one playbook: the stricter of its own and the agent's."""

    cooldown: float
    max_per_hour: int | None  # per target, this playbook's actions and the agent's default
    max_per_hour_playbook: int | None  # this playbook, all targets
    max_per_hour_total: int | None  # the agent, all playbooks and targets
    min_replicas: int
    max_replicas: int | None
    max_step: int | None
    namespaces: frozenset[str] | None
    dry_run: bool
    approval: Approval
    repeat_window: float = 86400.0
    restore_after: float = 600.0
    protected: frozenset[str] = frozenset(PROTECTED_NAMESPACES)

    def limits(self, *, scale_down: bool = True) -> Limits:
        """The limits the action enforces where it writes (replica bounds, step, namespaces)."""
        return Limits(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            max_step=self.max_step,
            namespaces=self.namespaces,
            scale_down=scale_down,
        )


def effective(playbook: PlaybookGuardrails, defaults: GuardrailDefaults) -> EffectiveGuardrails:
    """The stricter of ``playbook`` and ``defaults``, field by field."""
    namespaces: frozenset[str] | None
    if playbook.namespaces is None:
        namespaces = None if defaults.namespaces is None else frozenset(defaults.namespaces)
    elif defaults.namespaces is None:
        namespaces = frozenset(playbook.namespaces)
    else:
        namespaces = frozenset(playbook.namespaces) & frozenset(defaults.namespaces)
    min_replicas = max(defaults.min_replicas, playbook.min_replicas or 0)
    max_replicas = _min_opt(playbook.max_replicas, defaults.max_replicas)
    return EffectiveGuardrails(
        cooldown=max(defaults.cooldown, playbook.cooldown or 0.0),
        max_per_hour=_min_opt(playbook.max_per_hour, defaults.max_per_hour),
        max_per_hour_playbook=playbook.max_per_hour_total,
        max_per_hour_total=defaults.max_per_hour_total,
        min_replicas=min_replicas,
        # bounds that cross after merging leave no room to scale: max wins down to min
        max_replicas=None if max_replicas is None else max(max_replicas, min_replicas),
        max_step=_min_opt(playbook.max_step, defaults.max_step),
        namespaces=namespaces,
        dry_run=playbook.dry_run or defaults.dry_run,
        approval=Approval.REQUIRED
        if Approval.REQUIRED in (playbook.approval, defaults.approval)
        else Approval.NONE,
        repeat_window=defaults.repeat_window,
        restore_after=defaults.restore_after,
        protected=frozenset(defaults.protected_namespaces) - frozenset(defaults.unprotect),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """Allowed, or held by the named guardrail (``until``: when it may let go; None: not by itself)."""

    allowed: bool
    guardrail: str = ""
    reason: str = ""
    until: float | None = None


ALLOW = Verdict(True)


_Counted = tuple[float, str, Target, ActionClass, str, bool]
"""An action counted: when, playbook, target, class, source, and whether it counts beyond its target."""


class ActionLedger:
    """What was done recently, for cooldowns and rate limits; bounded in memory.

    Holds the last remediation time per (playbook, target), the workload-changing actions of the
    last hour with their class, and the corrective actions of the repeat window by kind. Only
    actions that ran (or were planned in dry-run) are recorded: a step skipped because its key
    had already executed is no remediation and spends nothing.

    Memory is one replica's and one process's; :meth:`recall` adds what the durable records say
    (``aiops.dev/actions`` on the targets and the agent-wide record, written by the executor
    before each write), so a restart or a leader change forgets nothing. Each action counts once,
    by its key's digest, however often it is recalled.

    What a target's own record says counts for that target only (its cooldown, ``maxPerHour``,
    the repeat window): whoever may edit the target may edit that record, and must not spend the
    budgets of the playbook or of the agent, which only this process's memory and the agent-wide
    record (in the agent's namespace) fill.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, Target], float] = {}
        self._actions: deque[_Counted] = deque()
        self._narrow: dict[str, _Counted] = {}  # key digest -> counted for its target only
        self._fixes: dict[tuple[Target, str], float] = {}
        self._keys: dict[str, float] = {}  # key digest -> when: what is counted already
        self._horizon = -math.inf  # what is older than this is forgotten (and not recalled)

    def recall(self, entries: Iterable[RecordedAction], now: float, target: Target | None = None) -> int:
        """Count the recorded actions not counted yet (``target``: the object they were recorded on;
        None: each entry names its own); return how many were new. Entries dated more than
        :data:`SKEW` ahead of ``now`` or of an unknown class are ignored."""
        new: list[_Counted] = []
        wide = target is None
        for e in entries:
            if e.time > now + SKEW or e.time <= self._horizon or (e.key in self._keys and not wide):
                continue
            try:
                cls = ActionClass(e.action_class)
                where = target if target is not None else Target(*e.target.split("/"))
            except (ValueError, TypeError):
                continue
            counted = (e.time, e.playbook, where, cls, e.source, wide)
            if e.key in self._keys:
                # counted from a target's record: the agent-wide record says it counts for all
                self._widen(e.key, counted)
                continue
            self._keys[e.key] = e.time
            if not wide:
                self._narrow[e.key] = counted
            last = self._last.get((e.playbook, where))
            self._last[(e.playbook, where)] = e.time if last is None else max(last, e.time)
            if cls is ActionClass.CORRECTIVE:
                fix = self._fixes.get((where, e.action))
                self._fixes[(where, e.action)] = e.time if fix is None else max(fix, e.time)
            new.append(counted)
        if new:
            self._actions = deque(sorted([*self._actions, *new], key=lambda a: a[0]))
        return len(new)

    def _widen(self, digest: str, counted: _Counted) -> None:
        """Count the action of ``digest``, known from a target's record only, as ``counted`` says."""
        narrow = self._narrow.pop(digest, None)
        if narrow is None:
            return
        try:
            self._actions.remove(narrow)
        except ValueError:
            return  # older than an hour already
        self._actions = deque(sorted([*self._actions, counted], key=lambda a: a[0]))

    def record_remediation(self, playbook: str, target: Target, now: float) -> None:
        """A remediation of ``target`` by ``playbook`` acted at ``now`` (starts its cooldown)."""
        self._last[(playbook, target)] = now

    def record_action(
        self,
        playbook: str,
        target: Target,
        now: float,
        cls: ActionClass = ActionClass.CORRECTIVE,
        action: str = "",
        source: str = SIGNALS,
        key: str = "",
    ) -> None:
        """One workload-changing action of class ``cls`` ran (or was planned in dry-run) at ``now``,
        for an incident opened by ``source`` (:data:`SIGNALS` or :data:`ALERTS`); ``key``: its
        idempotency key (an action recalled from a record already is not counted twice)."""
        counted = (now, playbook, target, cls, source, True)
        if key:
            digest = key_digest(key)
            if digest in self._keys:
                self._widen(digest, counted)
                return
            self._keys[digest] = now
        self._actions.append(counted)
        if cls is ActionClass.CORRECTIVE and action:
            self._fixes[(target, action)] = now

    def last_remediation(self, playbook: str, target: Target) -> float | None:
        """When ``playbook`` last started a remediation of ``target``."""
        return self._last.get((playbook, target))

    def last_fix(self, target: Target, action: str) -> float | None:
        """When a corrective ``action`` last ran on ``target`` (within the kept window)."""
        return self._fixes.get((target, action))

    def actions_since(
        self,
        since: float,
        *,
        target: Target | None = None,
        playbook: str | None = None,
        cls: ActionClass | None = None,
        source: str | None = None,
    ) -> list[float]:
        """Times of actions after ``since``, for one target, playbook, class and/or source; oldest first.
        Without ``target``, what only a target's own record says is not counted."""
        return [
            t
            for t, p, tg, c, src, wide in self._actions
            if t > since
            and (tg == target if target is not None else wide)
            and (playbook is None or p == playbook)
            and (cls is None or c is cls)
            and (source is None or src == source)
        ]

    def prune(self, now: float, keep: float, keep_fixes: float = 86400.0) -> None:
        """Forget actions older than an hour, remediations older than ``keep`` seconds and
        corrective actions older than ``keep_fixes``."""
        while self._actions and self._actions[0][0] <= now - HOUR:
            self._actions.popleft()
        for digest in [d for d, a in self._narrow.items() if a[0] <= now - HOUR]:
            del self._narrow[digest]
        stale = [k for k, t in self._last.items() if t <= now - keep]
        for k in stale:
            del self._last[k]
        for f in [f for f, t in self._fixes.items() if t <= now - keep_fixes]:
            del self._fixes[f]
        horizon = self._horizon = now - max(keep, keep_fixes, HOUR)
        for digest in [d for d, t in self._keys.items() if t <= horizon]:
            del self._keys[digest]


def _rate(
    name: str, limit: int | None, times: list[float], planned: int, scope: str, now: float
) -> Verdict | None:
    if limit is None or len(times) + planned <= limit:
        return None
    if planned > limit:
        reason = f"{planned} actions exceed the limit of {limit} per hour ({scope})"
        return Verdict(False, name, reason, None)
    # the hold lifts once enough of the counted actions have left the hour window
    free_at = times[len(times) + planned - limit - 1] + HOUR
    reason = f"{len(times)} {scope}, limit {limit}"
    return Verdict(False, name, reason, max(free_at, now))


def namespace_closed(g: EffectiveGuardrails, namespace: str) -> Verdict | None:
    """The verdict holding any action in ``namespace`` (outside the allow-list, or protected), or
    None when the agent may act there: for what the engine proposes, and for what a record (an
    approval, a hand-over) asks it to do."""
    if g.namespaces is not None and namespace not in g.namespaces:
        allowed = ", ".join(sorted(g.namespaces)) or "none"
        return Verdict(False, "namespaces", f"namespace {namespace!r} is not in the allow-list ({allowed})")
    if namespace in g.protected:
        reason = (
            f"namespace {namespace!r} is protected: the agent does not act there "
            "(playbooks.guardrails.unprotect lifts it)"
        )
        return Verdict(False, "protected", reason)
    return None


def check_action(
    g: EffectiveGuardrails,
    ledger: ActionLedger,
    playbook: str,
    target: Target,
    planned: int,
    now: float,
    cls: ActionClass = ActionClass.CORRECTIVE,
    source: str = SIGNALS,
) -> Verdict:
    """May ``playbook`` start a remediation of ``target`` with ``planned`` workload actions of
    class ``cls`` now? Rate limits count only actions of the same class and source: incidents
    opened by alerts never spend what the detectors' incidents need, nor the other way round."""
    closed = namespace_closed(g, target.namespace)
    if closed is not None:
        return closed
    last = ledger.last_remediation(playbook, target)
    if last is not None and now - last < g.cooldown:
        reason = f"last remediation {format_seconds(now - last)} ago, cooldown {format_seconds(g.cooldown)}"
        return Verdict(False, "cooldown", reason, last + g.cooldown)
    for name, limit, times, scope in _rate_checks(g, ledger, playbook, target, now, cls, source):
        held = _rate(name, limit, times, planned, scope, now)
        if held is not None:
            return held
    return ALLOW


def _rate_checks(
    g: EffectiveGuardrails,
    ledger: ActionLedger,
    playbook: str,
    target: Target,
    now: float,
    cls: ActionClass,
    source: str,
) -> tuple[tuple[str, int | None, list[float], str], ...]:
    """Each hourly budget: (guardrail, limit, times of the actions it counts, what it counts)."""
    since = now - HOUR
    what = f"{cls.value} actions in the last hour"
    return (
        (
            "maxPerHour",
            g.max_per_hour,
            ledger.actions_since(since, target=target, cls=cls, source=source),
            f"{what} on this target",
        ),
        (
            "maxPerHourTotal",
            g.max_per_hour_playbook,
            ledger.actions_since(since, playbook=playbook),
            "actions in the last hour by this playbook",
        ),
        (
            "agent.max_per_hour_total",
            g.max_per_hour_total,
            ledger.actions_since(since, cls=cls, source=source),
            f"{what} by the agent",
        ),
    )


def guardrail_values(
    g: EffectiveGuardrails,
    ledger: ActionLedger,
    playbook: str,
    target: Target,
    now: float,
    cls: ActionClass = ActionClass.CORRECTIVE,
    source: str = SIGNALS,
) -> list[dict[str, Any]]:
    """Every guardrail :func:`check_action` looks at, with its value at ``now`` and whether it
    lets the action go (``ok``), plus dry run, approval and the repeat window: for the record."""
    allowed = g.namespaces is None or target.namespace in g.namespaces
    last = ledger.last_remediation(playbook, target)
    remaining = 0.0 if last is None else max(0.0, last + g.cooldown - now)
    out: list[dict[str, Any]] = [
        {
            "name": "namespaces",
            "value": "any" if g.namespaces is None else sorted(g.namespaces),
            "namespace": target.namespace,
            "ok": allowed,
        },
        {
            "name": "protected",
            "value": sorted(g.protected),
            "namespace": target.namespace,
            "ok": target.namespace not in g.protected,
        },
        {
            "name": "cooldown",
            "limit": g.cooldown,
            "remaining": remaining,
            "lastRemediation": last,
            "ok": remaining <= 0.0,
        },
    ]
    for name, limit, times, scope in _rate_checks(g, ledger, playbook, target, now, cls, source):
        out.append(
            {
                "name": name,
                "used": len(times),
                "limit": limit,
                "counts": scope,
                "class": cls.value,
                "source": source,
                "ok": limit is None or len(times) < limit,
            }
        )
    out += [
        {"name": "dryRun", "value": g.dry_run, "ok": True},
        {"name": "approval", "value": g.approval.value, "ok": True},
        {"name": "repeatWindow", "limit": g.repeat_window, "ok": True},
    ]
    return out


def values_text(values: Iterable[dict[str, Any]], now: float) -> str:
    """:func:`guardrail_values` that passed, in a line: ``cooldown 30m (none yet), maxPerHour 0/2, ...``."""
    parts: list[str] = []
    for v in values:
        name = v["name"]
        if "used" in v:
            parts.append(f"{name} {v['used']}/{'-' if v['limit'] is None else v['limit']}")
        elif name == "cooldown":
            last = v.get("lastRemediation")
            since = "none yet" if last is None else f"last {format_seconds(now - last)} ago"
            parts.append(f"cooldown {format_seconds(v['limit'])} ({since})")
        elif name == "namespaces":
            parts.append(f"namespace {v['namespace']} allowed, not protected")
        elif name == "when.rolloutWithin" and v.get("lastRollout") is not None:
            parts.append(
                f"rollout {format_seconds(now - v['lastRollout'])} ago (within {format_seconds(v['limit'])})"
            )
        elif name == "when.restartedWithin" and v.get("lastRestart") is not None:
            parts.append(f"restarted {format_seconds(now - v['lastRestart'])} ago by the agent")
        elif name == "when.withoutSignal":
            parts.append(f"no such signal within {format_seconds(v['limit'])}")
        elif name in {"dryRun", "approval"}:
            parts.append(f"{name} {v['value']}")
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ScaleVerdict:
    """The replica count a scale may set, and which guardrails changed or held it."""

    allowed: bool
    replicas: int
    limited_by: tuple[str, ...]
    reason: str


def check_scale(g: Limits | EffectiveGuardrails, current: int, desired: int) -> ScaleVerdict:
    """Clamp ``desired`` to the replica bounds and the step; held when nothing would change."""
    limited: list[str] = []
    replicas = desired
    low = g.min_replicas if g.min_replicas is not None else 0
    if replicas < low:
        replicas = low
        limited.append("minReplicas")
    if g.max_replicas is not None and replicas > g.max_replicas:
        replicas = g.max_replicas
        limited.append("maxReplicas")
    if g.max_step is not None and abs(replicas - current) > g.max_step:
        replicas = current + int(math.copysign(g.max_step, replicas - current))
        limited.append("maxStep")
    if replicas == current:
        why = (
            f"already at {current} replicas" if desired == current else f"{desired} replicas is out of bounds"
        )
        return ScaleVerdict(False, current, tuple(limited), f"{why}; nothing to change")
    reason = f"scale {current} -> {replicas}"
    if limited:
        reason += f" (asked {desired}; limited by {', '.join(limited)})"
    return ScaleVerdict(True, replicas, tuple(limited), reason)


def format_seconds(seconds: float) -> str:
    """``90`` -> ``1m30s``: durations the way playbooks write them."""
    total = round(seconds)
    if total <= 0:
        return f"{seconds:.3g}s" if seconds > 0 else "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)


def describe(g: EffectiveGuardrails, playbook: PlaybookGuardrails, *, scales: bool = True) -> list[str]:
    """Each guardrail in plain words, saying whether it comes from the playbook or the agent.

    ``scales``: whether the playbook scales (the replica bounds are only mentioned then).
    """

    def origin(mine: object, theirs: object) -> str:
        return "this playbook" if mine == theirs else "the agent's default"

    lines = [
        f"cooldown {format_seconds(g.cooldown)} between remediations of one target "
        f"(from {origin(playbook.cooldown, g.cooldown)})"
    ]
    if g.max_per_hour is not None:
        lines.append(
            f"at most {g.max_per_hour} workload-changing actions per target per hour "
            f"(from {origin(playbook.max_per_hour, g.max_per_hour)})"
        )
    if g.max_per_hour_playbook is not None:
        lines.append(f"at most {g.max_per_hour_playbook} actions per hour by this playbook, all targets")
    if g.max_per_hour_total is not None:
        lines.append(f"at most {g.max_per_hour_total} workload-changing actions per hour by the whole agent")
    if scales:
        lines.append(_bounds_text(g))
    if g.namespaces is not None:
        lines.append(f"acts only in namespaces: {', '.join(sorted(g.namespaces)) or '(none: never acts)'}")
    if g.dry_run:
        lines.append(
            f"dry run: plans and audits, writes nothing (from {origin(playbook.dry_run, g.dry_run)})"
        )
    if g.approval is Approval.REQUIRED:
        lines.append("every action waits for a person to approve it")
    if g.protected:
        lines.append(f"never acts in the protected namespaces: {', '.join(sorted(g.protected))}")
    return lines


def _bounds_text(g: EffectiveGuardrails) -> str:
    text = f"scaling keeps replicas at least {g.min_replicas}"
    if g.max_replicas is not None:
        text += f" and at most {g.max_replicas}"
    if g.max_step is not None:
        text += f", changing by at most {g.max_step} at a time"
    return text


def namespaces_outside(playbook: Iterable[str] | None, defaults: GuardrailDefaults) -> list[str]:
    """Namespaces a playbook names that the agent's allow-list excludes (they can never be acted in)."""
    if playbook is None or defaults.namespaces is None:
        return []
    return sorted(set(playbook) - set(defaults.namespaces))
