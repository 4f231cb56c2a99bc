"""The replay's parts on their own: the HPA algorithm, the alarm hold, the latency curve, scoring."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from agent.clock import ManualClock
from detectors import SampleBatch, SeriesRegistry
from detectors.base import DetectorError
from detectors.hold import AlarmHold
from simulations.replay import HpaAlgorithm, bring_up, cpu_target, hpa_object
from simulations.result import CPU, READY
from simulations.runner import SHIPPED_SCENARIOS as SCENARIOS
from simulations.scenario import load_scenario
from simulations.scoring import recovered
from simulations.twin import TwinCluster, TwinConfig
from simulations.twin.objects import parse_time
from simulations.twin.resources.apps import REPLICASETS
from simulations.twin.resources.core import PODS
from simulations.workload import TIMEOUT_SECONDS, Observation, Workload, latency


def deployment(name: str, replicas: int) -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": {"replicas": replicas}}


def hpa_at(algo: HpaAlgorithm, now: float, cpu: float, ready: float) -> None:
    """At ``now`` metrics-server reports ``cpu`` and ``ready`` (measured one resolution earlier)."""
    algo._now = now
    algo._seen.setdefault("web", []).append((now - algo.metrics_delay, cpu, ready))


def test_hpa_scales_up_by_the_documented_formula() -> None:
    algo = HpaAlgorithm(step=15.0)
    hpa_at(algo, 0.0, 0.95, 4)
    assert algo.recommend({}, deployment("web", 4)) == 6  # ceil(4 * 0.95 / 0.7)


def test_hpa_holds_within_the_tolerance() -> None:
    algo = HpaAlgorithm(step=15.0)
    hpa_at(algo, 0.0, 0.75, 4)  # 0.75 / 0.7 = 1.07: within 10 %
    assert algo.recommend({}, deployment("web", 4)) == 4


def test_hpa_scale_down_waits_for_the_stabilisation_window() -> None:
    algo = HpaAlgorithm(step=15.0)
    hpa_at(algo, 0.0, 0.95, 4)
    assert algo.recommend({}, deployment("web", 4)) == 6
    hpa_at(algo, 60.0, 0.2, 6)  # ceil(6 * 0.2 / 0.7) = 2, but 6 was recommended 60 s ago
    assert algo.recommend({}, deployment("web", 6)) == 6
    hpa_at(algo, 400.0, 0.2, 6)  # the high recommendation left the 5-minute window
    assert algo.recommend({}, deployment("web", 6)) == 2


def test_hpa_scale_up_follows_the_default_behavior_policies() -> None:
    """behavior.scaleUp defaults: per 15 s at most the larger of +100 % and +4 pods."""
    algo = HpaAlgorithm(step=15.0)
    hpa_at(algo, 0.0, 3.5, 2)  # wants ceil(2 * 3.5 / 0.7) = 10
    assert algo.recommend({}, deployment("web", 2)) == 6  # 2 + 4 pods beats +100 %
    hpa_at(algo, 15.0, 3.5, 10)  # wants 50
    assert algo.recommend({}, deployment("web", 10)) == 20  # +100 % beats +4 pods


def test_hpa_sees_cpu_one_metrics_resolution_late() -> None:
    """What the HPA acts on is what metrics-server reported: 15 s old."""

    def seen(now: float, cpu: float) -> Observation:
        batch = SampleBatch(np.zeros(1, np.int64), np.array([now]), np.array([cpu]))
        return Observation(batch, {"web": {CPU: cpu, READY: 4.0}}, {}, {}, {}, [])

    algo = HpaAlgorithm(step=15.0)
    for now, cpu in [(0.0, 0.7), (15.0, 0.7), (30.0, 1.4)]:
        algo.observe(seen(now, cpu))
    assert algo.recommend({}, deployment("web", 4)) == 4  # at 30 s it still sees 0.7 (the target)
    algo.observe(seen(45.0, 1.4))
    assert algo.recommend({}, deployment("web", 4)) == 8  # now the 1.4 of 30 s: ceil(4 * 2)


def test_hpa_aims_at_the_cpu_target_its_object_names() -> None:
    """As the controller reads it each sync: the HPA's own averageUtilization (a scenario's
    hpaTargetCPU), 70 % when it names none or names it in a form that is not a positive integer."""
    service = (
        load_scenario(SCENARIOS / "elb-surge.yaml").spec.services[0].model_copy(update={"hpa_target_cpu": 50})
    )
    at_50 = hpa_object(service)
    algo = HpaAlgorithm(step=15.0)
    hpa_at(algo, 0.0, 0.95, 4)
    assert algo.recommend(at_50, deployment("web", 4)) == 8  # ceil(4 * 0.95 / 0.5)
    assert cpu_target(at_50, 0.7) == 0.5
    garbled = copy.deepcopy(at_50)
    for bad in (0, -20, True, "50", None):
        garbled["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] = bad
        assert cpu_target(garbled, 0.7) == 0.7
    for spec in (None, {"metrics": "cpu"}, {"metrics": 5}, {"metrics": ["cpu", 5]}):
        assert cpu_target({"spec": spec}, 0.7) == 0.7
    for resource in (
        "cpu",
        {"name": "cpu", "target": [50]},
        {"name": "memory", "target": {"averageUtilization": 50}},
    ):
        assert cpu_target({"spec": {"metrics": [{"type": "Resource", "resource": resource}]}}, 0.7) == 0.7
    assert algo.recommend({}, deployment("web", 4)) == 6  # ceil(4 * 0.95 / 0.7)


def test_hpa_without_metrics_keeps_the_count() -> None:
    assert HpaAlgorithm(step=15.0).recommend({}, deployment("web", 3)) is None


def test_alarm_hold_keeps_a_shift_up_and_ends_when_it_recovers() -> None:
    hold = AlarmHold()
    ids = np.zeros(1, dtype=np.int64)
    out = []
    values = [0.001] * 50 + [0.09] * 20 + [0.001] * 5
    scores = [0.0] * 50 + [1.0, 0.7, 0.4] + [0.2] * 17 + [0.0] * 5
    for t, (v, s) in enumerate(zip(values, scores, strict=True)):
        out.append(float(hold.apply(ids, np.array([t * 15.0]), np.array([v]), np.array([s]), 0.9)[0]))
    assert out[:50] == [0.0] * 50
    assert out[50:70] == [1.0] * 20  # held while the error ratio stays up
    assert out[70:] == [0.0] * 5  # released as soon as it is back
    state = hold.state_dict()
    again = AlarmHold()
    again.load_state(state)
    np.testing.assert_array_equal(again.state_dict()["level"], state["level"])


def test_alarm_hold_gives_up_after_max_seconds() -> None:
    hold = AlarmHold(max_seconds=60.0)
    ids = np.zeros(1, dtype=np.int64)
    for t in range(10):
        hold.apply(ids, np.array([t * 15.0]), np.array([1.0]), np.array([0.0]), 0.9)
    first = hold.apply(ids, np.array([150.0]), np.array([5.0]), np.array([1.0]), 0.9)
    later = hold.apply(ids, np.array([300.0]), np.array([5.0]), np.array([0.1]), 0.9)
    assert first[0] == 1.0
    assert later[0] == pytest.approx(0.1)


def test_alarm_hold_bad_parameters() -> None:
    with pytest.raises(DetectorError, match="fraction"):
        AlarmHold(fraction=0.0)
    with pytest.raises(DetectorError, match="max_seconds"):
        AlarmHold(max_seconds=0.0)


def test_latency_grows_with_utilisation_and_times_out_past_capacity() -> None:
    idle, busy, full = latency(0.04, 0.3), latency(0.04, 0.9), latency(0.04, 3.0)
    assert idle[1] < busy[1] < full[1] <= TIMEOUT_SECONDS
    assert idle[0] < idle[1]


def test_the_recorder_keeps_held_actions_with_their_guardrail_and_the_order_they_happened() -> None:
    from agent.audit import AuditRecord, Decision
    from agent.playbook.events import IncidentEvent, IncidentState
    from remediations.types import Target
    from simulations.replay import Recorder
    from simulations.runner import SHIPPED_SCENARIOS
    from simulations.scenario import load_scenario

    scenario = load_scenario(SHIPPED_SCENARIOS / "bad-rollout.yaml")
    recorder = Recorder(scenario, "agent", scenario.start + 15.0 * np.arange(4, dtype=np.float64))
    target = Target("Deployment", "shop", "checkout")
    at = scenario.start + 30
    firing = IncidentState.FIRING
    recorder.on_incident(IncidentEvent(at, "inc-1", "pb", target, IncidentState.PENDING, firing, "held 2m"))
    recorder.on_incident(  # not a transition: held by a guardrail
        IncidentEvent(
            at, "inc-1", "pb", target, firing, firing, "held by cooldown: 4m left", guardrail="cooldown"
        )
    )
    recorder.on_incident(  # not a transition, no guardrail: an action submitted, the executor says the rest
        IncidentEvent(at, "inc-1", "pb", target, firing, firing, "submitted restart", action="restart")
    )
    recorder.on_decision(
        AuditRecord(
            at,
            Decision.SKIPPED,
            "k",
            "restart",
            target.to_dict(),
            "rate",
            "pb",
            "inc-1",
            guardrail="maxPerHour",
        )
    )
    recorder.on_decision(
        AuditRecord(at, Decision.EXECUTED, "k2", "scale", target.to_dict(), "2 -> 4", "pb", "inc-1")
    )
    run = recorder.run([at + 60])
    assert [(e.kind, e.guardrail, e.state) for e in run.events] == [
        ("incident", "", "firing"),
        ("held", "cooldown", ""),
        ("held", "maxPerHour", ""),
        ("action", "", ""),
    ]
    assert all(e.incident == "inc-1" and e.playbook == "pb" for e in run.events)
    assert [(a.action, a.outcome, a.guardrail) for a in run.actions] == [
        ("restart", "skipped", "maxPerHour"),
        ("scale", "executed", ""),
    ]
    assert run.mitigated == [at + 60]


def test_recovery_is_judged_to_the_end_or_over_its_hold() -> None:
    times = 1000.0 + 60.0 * np.arange(12)
    #           fault at 1000: bad, bad, back at 1120 ... then one bad step at 1540
    ok = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=bool)
    # to the end of the run: only from the step after the last bad one
    assert recovered(times, ok, 1000.0, None) == 1600.0
    # for 5 minutes: from 1120 (1120 .. 1420 all back)
    assert recovered(times, ok, 1000.0, 300.0) == 1120.0
    # for 8 minutes the window from 1120 reaches the bad step; from 1600 the run ends first
    assert recovered(times, ok, 1000.0, 480.0) == 1600.0
    assert recovered(times, np.zeros(12, dtype=bool), 1000.0, 300.0) is None
    assert recovered(times, np.zeros(12, dtype=bool), 1000.0, None) is None
    assert recovered(times, np.ones(12, dtype=bool), 1000.0, None) == 1000.0
    # steps before the fault do not count
    assert recovered(times, np.ones(12, dtype=bool), 1300.0, 60.0) == 1300.0


def test_a_replays_workload_is_created_before_its_warm_up_and_ready_at_the_start() -> None:
    """Its first ReplicaSet is as old as the history the agent learned, not a rollout 5 minutes
    before the start (which let `rolloutWithin: 30m` pass on any early error spike)."""
    scenario = load_scenario(SCENARIOS / "bad-rollout.yaml")
    start, step = scenario.start, scenario.spec.step
    created = start - scenario.spec.warmup - 300.0
    times = start + step * np.arange(4, dtype=np.float64)
    with TwinCluster(ManualClock(created), TwinConfig(seed=1)) as twin:
        workload = Workload(scenario, twin.store, SeriesRegistry(), times)
        bring_up(twin, workload, [], start - step)
        assert twin.clock.now() == start - step
        service = scenario.spec.services[0]
        sets, _ = twin.store.list(REPLICASETS, service.namespace)
        assert sets
        assert {parse_time(rs["metadata"]["creationTimestamp"]) for rs in sets} == {created}
        pods, _ = twin.store.list(PODS, service.namespace)
        ready = [
            p
            for p in pods
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in p["status"]["conditions"])
        ]
        mine = [p for p in ready if p["metadata"]["name"].startswith(service.name + "-")]
        assert len(mine) == service.replicas
