"""``rollback``: put a Deployment's previous pod template back, as ``kubectl rollout undo`` does.

The history of a Deployment is its ReplicaSets: those it controls (an ownerReference with its
uid, found through its selector), each with a ``deployment.kubernetes.io/revision``. Undo takes
the ReplicaSet of the highest revision below the current one (or the one of ``toRevision``),
copies its pod template into the Deployment without the ``pod-template-hash`` label, and takes
its annotations (but keeps the Deployment's own revision bookkeeping, as kubectl does, and the
agent's ``aiops.dev/`` state). The Deployment controller then rolls the old ReplicaSet forward
again under a new revision number.

Which revision: without ``toRevision``, the newest earlier revision that was live and healthy:
live for at least ``healthyFor`` (default 15 min) without an incident on the target (the
request's ``unhealthy`` windows), and not one the agent rolled the target back *from* within
``avoidWithin`` (default 24 h), and not one that is the current version before a restart (a
template that differs only by ``kubectl.kubernetes.io/restartedAt``: going back to it would only
restart the same code). Each rollback is recorded on the Deployment
(``aiops.dev/rollbacks``: when, from which pod template, to which), which is how a revision
reused by an earlier rollback knows when it went live again, and how a rollback back to the bad
version is refused after a restart too. When no revision qualifies the rollback refuses and says
why for each one, and a person decides.

Unlike kubectl, the JSON patch carries the resourceVersion read, so a concurrent change gives a
409 Conflict and the rollback is recomputed from a fresh read instead of overwriting it. It refuses
clearly when there is no earlier revision, when ``toRevision`` is not in the history, and when
the Deployment is paused.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from remediations import state as notes
from remediations.base import BaseAction
from remediations.diff import render
from remediations.errors import ActionRefused, TemporaryError
from remediations.kube import KubeClients, PatchType
from remediations.names import selector_from_label_selector
from remediations.params import ActionParams, Duration
from remediations.restart import RESTARTED_AT
from remediations.types import ActionClass, ActionContext, ActionResult, ActionStatus, Plan

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
POD_TEMPLATE_HASH = "pod-template-hash"
ROLLBACKS = "aiops.dev/rollbacks"
MAX_ROLLBACKS = 20
"""Rollbacks kept in the record on the Deployment (the newest)."""
SKIP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
    }
)
"""The Deployment's annotations a rollback keeps instead of taking the ReplicaSet's (kubectl's list)."""

Obj = dict[str, Any]


class RollbackParams(ActionParams):
    """Parameters of ``rollback``: the revision to go back to (default: the previous one)."""

    action: ClassVar[str] = "rollback"

    to_revision: int | None = Field(
        None, alias="toRevision", ge=1, description="the revision to go back to; default: the previous one"
    )

    healthy_for: Duration = Field(
        900.0,
        alias="healthyFor",
        ge=0,
        le=30 * 86400,
        description="a revision qualifies when it was live this long without an incident (default 15m)",
    )
    avoid_within: Duration = Field(
        86400.0,
        alias="avoidWithin",
        ge=0,
        le=365 * 86400,
        description="never go back to a revision rolled back from within this long (default 24h)",
    )

    def describe(self) -> str:
        """Plain words."""
        if self.to_revision is None:
            return "roll back to the newest earlier revision that was live and healthy"
        return f"roll back to revision {self.to_revision}"


def revision_of(obj: Obj) -> int:
    """The ``deployment.kubernetes.io/revision`` of an object (0 when absent or not a number)."""
    try:
        return int(notes.annotations_of(obj).get(REVISION, "0"))
    except ValueError:
        return 0


def without_hash(template: Obj | None) -> Obj:
    """A pod template without the ``pod-template-hash`` label the controller adds to ReplicaSets."""
    copied = copy.deepcopy(template or {})
    labels = (copied.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return copied


def _normal(t: Obj | None, *, restarts: bool = True) -> Obj:
    """A pod template without the hash label, empty label and annotation maps, and (with
    ``restarts=False``) the restart annotation."""
    t = without_hash(t)
    meta = t.get("metadata")
    if isinstance(meta, dict):
        annotations = meta.get("annotations")
        if not restarts and isinstance(annotations, dict):
            annotations.pop(RESTARTED_AT, None)
        for key in ("labels", "annotations"):
            if meta.get(key) == {}:
                meta.pop(key)
        if not meta:
            t.pop("metadata")
    return t


def _same_template(a: Obj | None, b: Obj | None) -> bool:
    return _normal(a) == _normal(b)


def same_version(a: Obj | None, b: Obj | None) -> bool:
    """Whether two pod templates differ at most by a restart (``kubectl.kubernetes.io/restartedAt``,
    set by ``kubectl rollout restart`` and the ``restart`` action): the same version, newer pods."""
    return _normal(a, restarts=False) == _normal(b, restarts=False)


def version_changes(replica_sets: Sequence[Obj]) -> list[Obj]:
    """The ReplicaSets (oldest revision first) that changed the version: each whose template is
    more than a restart of the revision before it. Revision 1, the Deployment's creation, is not a
    change; one whose previous revision is no longer kept counts."""
    ordered = sorted(replica_sets, key=revision_of)
    by_revision = {revision_of(rs): rs for rs in ordered}
    changes = []
    for rs in ordered:
        revision = revision_of(rs)
        if revision == 1:
            continue
        before = by_revision.get(revision - 1)
        if before is not None and same_version(_template(before), _template(rs)):
            continue
        changes.append(rs)
    return changes


def _template(obj: Obj) -> Obj:
    template = (obj.get("spec") or {}).get("template")
    return template if isinstance(template, dict) else {}


def history(kube: KubeClients, deployment: Obj) -> list[Obj]:
    """The ReplicaSets the Deployment controls, oldest revision first."""
    meta = deployment.get("metadata") or {}
    selector = selector_from_label_selector((deployment.get("spec") or {}).get("selector"))
    found = kube.list_objects("ReplicaSet", str(meta.get("namespace") or ""), label_selector=selector or None)
    uid = meta.get("uid")
    owned = [
        rs
        for rs in found
        if any(
            ref.get("uid") == uid and ref.get("controller") is True
            for ref in (rs.get("metadata") or {}).get("ownerReferences") or []
        )
    ]
    return sorted(owned, key=revision_of)


@dataclass(frozen=True, slots=True)
class Rollback:
    """One rollback the agent did: when, from which pod template hash, to which."""

    time: float
    source: str
    to: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``aiops.dev/rollbacks`` record)."""
        return {"time": self.time, "from": self.source, "to": self.to}


def rollbacks_of(deployment: Obj) -> list[Rollback]:
    """The rollbacks recorded on the Deployment, oldest first (entries that do not parse are left out)."""
    data = notes.read_json(deployment, ROLLBACKS)
    out: list[Rollback] = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict):
            continue
        time, source, to = item.get("time"), item.get("from", ""), item.get("to", "")
        if notes.finite_number(time) and isinstance(source, str) and isinstance(to, str):
            out.append(Rollback(float(time), source, to))
    return sorted(out, key=lambda r: r.time)


def template_hash(rs: Obj) -> str:
    """The ReplicaSet's ``pod-template-hash`` label ("" when absent)."""
    return str(((rs.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH, ""))


def _created(rs: Obj) -> float:
    stamp = (rs.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(stamp, str):
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def live_spans(
    replica_sets: list[Obj], rollbacks: Sequence[Rollback], now: float
) -> dict[int, tuple[float, float]]:
    """When each revision was last live: ``revision -> (start, end)``.

    Revisions number the templates in the order they went live (a rollback gives the reused
    ReplicaSet the next number), so a revision went live when its ReplicaSet was created or, if
    the agent rolled back to it later, at that rollback; it stayed live until the next revision
    went live (the newest until ``now``).
    """
    starts: dict[int, float] = {}
    for rs in replica_sets:
        start = _created(rs)
        back = [r.time for r in rollbacks if r.to == template_hash(rs) and r.to]
        starts[revision_of(rs)] = max([start, *back])
    order = sorted(starts)
    spans: dict[int, tuple[float, float]] = {}
    for i, revision in enumerate(order):
        end = starts[order[i + 1]] if i + 1 < len(order) else now
        spans[revision] = (starts[revision], max(end, starts[revision]))
    return spans


def healthy_stretch(span: tuple[float, float], unhealthy: Sequence[tuple[float, float]]) -> float:
    """The longest time inside ``span`` without an incident."""
    start, end = span
    cuts = sorted((max(a, start), min(b, end)) for a, b in unhealthy if b > start and a < end)
    longest, cursor = 0.0, start
    for a, b in cuts:
        longest = max(longest, a - cursor)
        cursor = max(cursor, b)
    return max(longest, end - cursor)


def choose(
    deployment: Obj,
    replica_sets: list[Obj],
    params: RollbackParams,
    *,
    now: float,
    unhealthy: Sequence[tuple[float, float]] = (),
) -> tuple[int, Obj]:
    """``(current revision, the ReplicaSet to go back to)``; refuses, saying why, when there is none."""
    name = str((deployment.get("metadata") or {}).get("name"))
    current_rs = next(
        (rs for rs in replica_sets if _same_template(_template(rs), _template(deployment))), None
    )
    if current_rs is None:
        msg = (
            f"Deployment {name}: its current pod template has no ReplicaSet yet (a rollout is just "
            "starting); try again when the controller has caught up"
        )
        raise TemporaryError(msg, delay=5.0)
    current = revision_of(current_rs)
    if params.to_revision is not None:
        chosen = next((rs for rs in replica_sets if revision_of(rs) == params.to_revision), None)
        if chosen is None:
            known = ", ".join(str(revision_of(rs)) for rs in replica_sets) or "none"
            msg = (
                f"Deployment {name}: revision {params.to_revision} is not in its history (revisions: {known})"
            )
            raise ActionRefused(msg)
        return current, chosen
    earlier = [rs for rs in replica_sets if 0 < revision_of(rs) < current]
    if not earlier:
        msg = f"Deployment {name} has no earlier revision to roll back to (current revision {current})"
        raise ActionRefused(msg)
    rollbacks = rollbacks_of(deployment)
    avoided = {r.source for r in rollbacks if now - r.time < params.avoid_within and r.source}
    spans = live_spans(replica_sets, rollbacks, now)
    why: list[str] = []
    for rs in sorted(earlier, key=revision_of, reverse=True):
        revision = revision_of(rs)
        if same_version(_template(rs), _template(deployment)):
            why.append(f"revision {revision} is the current version before a restart")
            continue
        if template_hash(rs) in avoided:
            why.append(f"revision {revision} was rolled back from within {_hours(params.avoid_within)}")
            continue
        stretch = healthy_stretch(spans[revision], unhealthy)
        if stretch < params.healthy_for:
            why.append(
                f"revision {revision} was live without an incident for {stretch:.0f} s at most "
                f"(needs {params.healthy_for:.0f} s)"
            )
            continue
        return current, rs
    msg = f"Deployment {name}: no earlier revision was live and healthy ({'; '.join(why)}); a person decides"
    raise ActionRefused(msg)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g}h"


def rolled_back_annotations(deployment: Obj, rs: Obj) -> dict[str, str]:
    """The Deployment's annotations after the rollback (kubectl's rule, plus the agent's state kept)."""
    kept = {
        k: v
        for k, v in notes.annotations_of(deployment).items()
        if k in SKIP_ANNOTATIONS or k.startswith(notes.PREFIX)
    }
    taken = {
        k: v
        for k, v in notes.annotations_of(rs).items()
        if k not in SKIP_ANNOTATIONS and not k.startswith(notes.PREFIX)
    }
    return {**taken, **kept}


class RollbackAction(BaseAction[RollbackParams]):
    """Roll a Deployment back to its previous (or a named) revision."""

    name: ClassVar[str] = "rollback"
    params_model: ClassVar[type[ActionParams]] = RollbackParams
    target_kinds: ClassVar[frozenset[str]] = frozenset({"Deployment"})
    action_class: ClassVar[ActionClass] = ActionClass.CORRECTIVE

    def _decide(self, ctx: ActionContext, deployment: Obj) -> tuple[int, Obj, Rollback] | None:
        """The current revision, the ReplicaSet to go back to and the record of the move; None
        when the Deployment already runs that template."""
        if (deployment.get("spec") or {}).get("paused"):
            msg = f"{ctx.target} is paused: a rollback would not roll out; resume it first"
            raise ActionRefused(msg)
        replica_sets = history(ctx.kube, deployment)
        now = ctx.clock.now()
        current, chosen = choose(
            deployment, replica_sets, self.params(ctx), now=now, unhealthy=ctx.request.unhealthy
        )
        if _same_template(_template(chosen), _template(deployment)):
            return None
        source = next((template_hash(rs) for rs in replica_sets if revision_of(rs) == current), "")
        return current, chosen, Rollback(now, source, template_hash(chosen))

    def _plan(self, ctx: ActionContext) -> Plan:
        target = ctx.target
        deployment = self.read_target(ctx)
        if notes.was_executed(deployment, ctx.request.key):
            return Plan(
                self.name, target, f"nothing to do: {ctx.request.key} already executed", changes=False
            )
        decided = self._decide(ctx, deployment)
        if decided is None:
            summary = f"nothing to do: {target} already runs the template of the revision asked for"
            return Plan(self.name, target, summary, changes=False)
        current, chosen, _ = decided
        revision = revision_of(chosen)
        summary = f"roll back {target} from revision {current} to revision {revision}"
        diff = render(
            f"{target.kind} {target.namespace}/{target.name}",
            {"spec": {"template": _template(deployment)}},
            {"spec": {"template": without_hash(_template(chosen))}},
        )
        return Plan(self.name, target, summary, diff, details={"from": current, "to": revision})

    def _execute(self, ctx: ActionContext) -> ActionResult:
        target, kube, key = ctx.target, ctx.kube, ctx.request.key
        outcome: dict[str, Any] = {}

        def undo(deployment: Obj) -> list[Obj] | None:
            outcome.clear()
            if notes.was_executed(deployment, key):
                outcome["done"] = True
                return None
            decided = self._decide(ctx, deployment)
            if decided is None:
                return None
            current, chosen, done = decided
            template = without_hash(_template(chosen))
            annotations = rolled_back_annotations(deployment, chosen)
            annotations[notes.EXECUTED_KEYS] = notes.with_key(deployment, key)
            record = [r.to_dict() for r in rollbacks_of(deployment)] + [done.to_dict()]
            annotations[ROLLBACKS] = notes.dump_json(record[-MAX_ROLLBACKS:])
            outcome.update(
                current=current,
                revision=revision_of(chosen),
                diff=render(
                    f"{target.kind} {target.namespace}/{target.name}",
                    {"spec": {"template": _template(deployment)}},
                    {"spec": {"template": template}},
                ),
            )
            return [
                # Carrying the resourceVersion read makes the write conditional: 409 if it moved.
                {
                    "op": "replace",
                    "path": "/metadata/resourceVersion",
                    "value": notes.resource_version(deployment),
                },
                {"op": "replace", "path": "/spec/template", "value": template},
                {"op": "add", "path": "/metadata/annotations", "value": annotations},
            ]

        _, written = kube.read_modify_write(
            lambda: self.read_target(ctx),
            undo,
            lambda _, body: kube.patch(target.kind, target.namespace, target.name, body, PatchType.JSON),
        )
        if outcome.get("done"):
            return self.result(ctx, ActionStatus.NOOP, f"already executed: {key}")
        if written is None:
            message = f"{target} already runs the template of the revision asked for"
            return self.result(ctx, ActionStatus.NOOP, message)
        current, revision = outcome["current"], outcome["revision"]
        message = f"rolled back {target} from revision {current} to revision {revision}"
        details = {
            "from": current,
            "to": revision,
            "event": self.event(ctx, written, "AiopsRolledBack", message),
        }
        return self.result(ctx, ActionStatus.EXECUTED, message, diff=outcome["diff"], details=details)
