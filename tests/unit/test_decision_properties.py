"""Properties of the decision loop over random interleavings of signals, alerts, gaps and faults.

- no action beyond its class's and source's budget (per target and agent-wide, in any hour);
- no incident id given twice;
- no ``resolved`` without fresh samples of every series that fired;
- no rollback to a revision the target was rolled back from within the window;
- budgets and cooldowns hold across restarts, counted from the records the executor leaves.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.clock import ManualClock
from agent.playbook.guardrails import HOUR, GuardrailDefaults
from agent.playbook.requests import Proposal, RecordingExecutor
from detectors.series import SeriesKey
from detectors.signal import SignalKind
from remediations.errors import ActionRefused
from remediations.rollback import ROLLBACKS, RollbackParams, choose, template_hash
from remediations.state import AGENT_ACTIONS, MAX_ACTIONS, RecordedAction, dump_json
from remediations.types import ActionClass, ActionResult, ActionStatus, Target, key_digest
from tests.unit.test_playbook_engine import T0, FakeFreshness, Harness, playbook

LIMIT, TOTAL = 2, 3
CLASSES = {"restart": ActionClass.CORRECTIVE, "scale": ActionClass.CAPACITY}


class FaultyExecutor(RecordingExecutor):
    """Fails the requests the test draws: retryable or not."""

    def __init__(self, faults: list[int]) -> None:
        super().__init__()
        self.faults = faults

    def submit(self, proposal: Proposal) -> ActionResult:
        fault = self.faults[len(self.requests) % len(self.faults)] if self.faults else 0
        if fault:
            self.requests.append(proposal)
            result = ActionResult(
                ActionStatus.FAILED,
                "API fault",
                proposal.action,
                proposal.key,
                retryable=fault == 1,
                retry_after=20.0,
            )
            self.results.append(result)
            return result
        return super().submit(proposal)


PLAYBOOKS = (
    playbook(
        "restart-web",
        trigger={"for": "30s"},
        guardrails={"cooldown": "2m"},
        verify={"within": "5m", "quiet": "1m"},
    ),
    playbook(
        "scale-web",
        priority=10,
        trigger={"metric": "cpu", "for": 0},
        actions=[{"scale": {"by": 1}}],
        verify={"within": "5m", "quiet": "1m"},
        guardrails={"cooldown": 0},
    ),
    playbook(
        "restart-on-alert",
        trigger={"signal": "alert", "metric": "Crash", "for": 0},
        guardrails={"cooldown": 0},
        verify={"within": "5m", "quiet": "1m"},
    ),
)

EVENT = st.tuples(
    st.integers(min_value=1, max_value=120),  # seconds since the previous event
    st.sampled_from(["errors", "cpu", "alert", "resolve", "sample", "gap"]),
    st.sampled_from(["web", "api"]),
)


@settings(max_examples=60, deadline=None)
@given(events=st.lists(EVENT, min_size=1, max_size=80), faults=st.lists(st.integers(0, 2), max_size=5))
def test_random_interleavings_keep_the_invariants(
    events: list[tuple[int, str, str]], faults: list[int]
) -> None:
    fresh = FakeFreshness()
    defaults = GuardrailDefaults(cooldown=0, max_per_hour=LIMIT, max_per_hour_total=TOTAL, repeat_window=0)
    h = Harness(*PLAYBOOKS, defaults=defaults, freshness=fresh)
    h.executor = FaultyExecutor(faults)
    h.engine.executor = h.executor
    reported: dict[SeriesKey, list[float]] = {}
    signalled: dict[SeriesKey, list[float]] = {}
    t = 0.0
    for gap, what, deployment in events:
        t += gap
        labels = {"namespace": "shop", "deployment": deployment}
        errors = SeriesKey.of("errors", labels)
        cpu = SeriesKey.of("cpu", labels)
        if what == "gap":
            h.run_until(t)
            continue
        if what in {"errors", "cpu", "sample"}:
            h.run_until(t)
            for key in (errors, cpu):
                fresh.report(key, t)
                reported.setdefault(key, []).append(t)
        if what in {"errors", "cpu"}:
            h.signal(t, metric=what, deployment=deployment)
            signalled.setdefault(errors if what == "errors" else cpu, []).append(t)
        elif what in {"alert", "resolve"}:
            status = "firing" if what == "alert" else "resolved"
            h.signal(
                t,
                kind=SignalKind.ALERT,
                metric="Crash",
                score=1.0,
                timestamp=T0,  # every alert has the same startsAt
                details={"status": status, "fingerprint": deployment},
                deployment=deployment,
            )
    h.run_until(t + 3600)

    # budgets: executed workload actions per class and source (alerts have their own), per target
    # and agent-wide, in any hour
    acted = [
        (q.time, (CLASSES[q.action], q.evidence.get("kind") == "alert"), q.target)
        for q, r in zip(h.executor.requests, h.executor.results, strict=True)
        if q.action in CLASSES and r.status is ActionStatus.EXECUTED and not q.request.restore
    ]
    for when, budget, target in acted:
        window = [(w, b, g) for w, b, g in acted if when - HOUR < w <= when and b == budget]
        assert len([1 for _, _, g in window if g == target]) <= LIMIT
        assert len(window) <= TOTAL

    # ids: every incident opened once
    opened = [e.incident for e in h.audit.incident_events() if e.is_transition and e.previous is None]
    assert len(opened) == len(set(opened))

    # resolved only on fresh samples: the fired series reported verify.samples (3) times after
    # its last matching signal, and before the resolution
    for e in h.audit.incident_events():
        if not (e.is_transition and e.state.value == "resolved" and e.playbook != "restart-on-alert"):
            continue
        metric = "errors" if e.playbook == "restart-web" else "cpu"
        key = SeriesKey.of(metric, {"namespace": e.target.namespace, "deployment": e.target.name})
        resolved_at = e.time - T0
        last_match = max(x for x in signalled[key] if x <= resolved_at)
        fresh_after = [x for x in reported.get(key, []) if last_match < x <= resolved_at]
        assert len(fresh_after) >= 3, (key, last_match, resolved_at, fresh_after)


def _rs(revision: int, name: str, created: float) -> dict[str, Any]:
    stamp = __import__("datetime").datetime.fromtimestamp(created, __import__("datetime").UTC)
    return {
        "metadata": {
            "name": f"web-{name}",
            "labels": {"pod-template-hash": name},
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "creationTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"image": name}}},
    }


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=6),
    gaps=st.lists(st.integers(min_value=60, max_value=7200), min_size=6, max_size=6),
    rolled_from=st.lists(st.integers(min_value=0, max_value=5), max_size=4),
    healthy_for=st.sampled_from([0.0, 900.0]),
)
def test_a_rollback_never_goes_to_a_revision_rolled_back_from(
    n: int, gaps: list[int], rolled_from: list[int], healthy_for: float
) -> None:
    t = T0
    replica_sets = []
    for r in range(1, n + 1):
        t += gaps[r - 1]
        replica_sets.append(_rs(r, f"h{r}", t))
    now = t + 600
    avoided = {f"h{i + 1}" for i in rolled_from if i + 1 < n}
    record = [{"time": now - 300, "from": h, "to": f"h{n}"} for h in sorted(avoided)]
    current = replica_sets[-1]
    deployment = {
        "metadata": {"name": "web", "annotations": {ROLLBACKS: dump_json(record)}},
        "spec": {"template": current["spec"]["template"]},
    }
    params = RollbackParams.model_validate({"healthyFor": healthy_for})
    try:
        _, chosen = choose(deployment, replica_sets, params, now=now)
    except ActionRefused:  # nothing qualifies: a person decides
        return
    assert template_hash(chosen) not in avoided
    assert template_hash(chosen) != template_hash(current)


class DurableCluster:
    """What survives the agent: the records the executor writes on the targets and the agent-wide
    record (``aiops.dev/actions``), and the executed keys. Facts read them as KubeFacts does."""

    def __init__(self) -> None:
        self.on_target: dict[Target, list[RecordedAction]] = {}
        self.agent: list[RecordedAction] = []
        self.keys: set[str] = set()

    def actions_on(self, target: Target) -> list[RecordedAction]:
        return list(self.on_target.get(target, [])[-MAX_ACTIONS:])

    def actions_by_agent(self) -> list[RecordedAction]:
        return list(self.agent[-AGENT_ACTIONS:])

    def last_rollout(self, target: Target) -> float | None:
        return None

    def last_rollback(self, target: Target) -> float | None:
        return None


class RecordingKubeExecutor(RecordingExecutor):
    """Answers like :class:`RecordingExecutor`, and records each workload action before it runs,
    as the KubeExecutor does; an executed key is never executed again (the target's annotation)."""

    def __init__(self, cluster: DurableCluster, clock: ManualClock) -> None:
        super().__init__()
        self.cluster = cluster
        self.clock = clock

    def submit(self, proposal: Proposal) -> ActionResult:
        if proposal.key in self.cluster.keys:
            self._keys.add(proposal.key)
        result = super().submit(proposal)
        if (
            result.status is ActionStatus.EXECUTED
            and proposal.action in CLASSES
            and not proposal.request.restore
        ):
            entry = RecordedAction(
                self.clock.now(),
                proposal.playbook,
                proposal.action,
                CLASSES[proposal.action].value,
                proposal.source,
                key_digest(proposal.key),
            )
            self.cluster.on_target.setdefault(proposal.target, []).append(entry)
            self.cluster.agent.append(replace(entry, target=str(proposal.target)))
            self.cluster.keys.add(proposal.key)
        return result


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(EVENT, min_size=1, max_size=80),
    restarts=st.lists(st.integers(min_value=0, max_value=79), max_size=12),
)
# errors on one target for 20 minutes, the agent restarting every 3: each life would act again
@example(events=[(30, "errors", "web")] * 40, restarts=list(range(6, 40, 6)))
@example(events=[(20, "alert", "web"), (20, "cpu", "api")] * 30, restarts=list(range(4, 60, 4)))
def test_budgets_and_cooldowns_hold_across_restarts(
    events: list[tuple[int, str, str]], restarts: list[int]
) -> None:
    """The agent restarts at random points (a fresh engine and executor: memory gone); the records
    it left keep every hourly budget and cooldown, counted over all its lives together."""
    cluster = DurableCluster()
    defaults = GuardrailDefaults(cooldown=0, max_per_hour=LIMIT, max_per_hour_total=TOTAL, repeat_window=0)
    lives: list[Harness] = []

    def start() -> Harness:
        h = Harness(*PLAYBOOKS, defaults=defaults, freshness=FakeFreshness())
        if lives:
            h.clock.set(lives[-1].clock.now())
        h.executor = RecordingKubeExecutor(cluster, h.clock)
        h.engine.executor = h.executor
        h.engine.facts = cluster
        lives.append(h)
        return h

    h = start()
    t = 0.0
    for i, (gap, what, deployment) in enumerate(events):
        t += gap
        if i in restarts:
            h = start()
        if what in {"errors", "cpu"}:
            h.signal(t, metric=what, deployment=deployment)
        elif what in {"alert", "resolve"}:
            status = "firing" if what == "alert" else "resolved"
            details = {"status": status, "fingerprint": deployment}
            h.signal(
                t, kind=SignalKind.ALERT, metric="Crash", score=1.0, details=details, deployment=deployment
            )
        else:
            h.run_until(t)
    h.run_until(t + 3600)

    acted = [
        (q.time, (CLASSES[q.action], q.source), q.target, q.playbook)
        for life in lives
        for q, r in zip(life.executor.requests, life.executor.results, strict=True)
        if q.action in CLASSES and r.status is ActionStatus.EXECUTED and not q.request.restore
    ]
    for when, budget, target, _ in acted:
        window = [(w, b, g) for w, b, g, _ in acted if when - HOUR < w <= when and b == budget]
        assert len([1 for _, _, g in window if g == target]) <= LIMIT, (when, target, acted)
        assert len(window) <= TOTAL, (when, acted)
    # restart-web's cooldown (2m) between remediations of one target, whichever life ran them
    restarts_web = sorted((w, g) for w, _, g, p in acted if p == "restart-web")
    for (a, ga), (b, gb) in itertools.pairwise(restarts_web):
        assert ga != gb or b - a >= 120.0, (a, b, ga)
