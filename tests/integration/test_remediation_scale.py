"""``scale`` against a Kubernetes API over HTTP: the twin, or a real cluster with AIOPS_TEST_KUBECONFIG."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from remediations import ActionStatus, KubeSettings, Limits
from remediations.registry import ACTIONS
from remediations.scale import CAPACITY_RAISE, SCALE_ORIGIN, ScaleAction, raise_of
from remediations.state import EXECUTED_KEYS, dump_json, stored_key
from remediations.types import ActionRequest, SignalFacts
from tests.integration.test_remediation_support import Cluster, hpa_body, open_cluster, statefulset_body

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(kube_env) -> Iterator[Cluster]:
    with open_cluster(kube_env) as opened:
        yield opened


@pytest.fixture
def twin(twin_cluster) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as opened:
        yield opened


def replicas(cluster: Cluster, name: str = "web", kind: str = "Deployment") -> int:
    return int(cluster.read(kind, name)["spec"]["replicas"])


def test_scale_to_an_absolute_count_writes_the_scale_subresource_records_the_key_and_an_event(cluster):
    cluster.deployment("web", replicas=2)
    request = cluster.request("scale", "Deployment", "web", {"replicas": 4})

    result = cluster.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    assert result.message == f"scaled Deployment/{cluster.ns}/web from 2 to 4 replicas"
    assert replicas(cluster) == 4
    deployment = cluster.read("Deployment", "web")
    assert json.loads(deployment["metadata"]["annotations"][EXECUTED_KEYS]) == [request.key]
    (event,) = cluster.events("Deployment", "web", "AiopsScaled")
    assert event.involved_object.uid == deployment["metadata"]["uid"]
    assert event.involved_object.resource_version
    assert (event.type, event.source.component, event.reporting_component) == (
        "Normal",
        "aiops-agent",
        "aiops-agent",
    )
    assert "from 2 to 4" in event.message
    assert "incident inc-1" in event.message
    if cluster.twin is not None:
        assert ("patch", "deployments/scale", "web") in cluster.writes()


def test_the_same_request_twice_scales_once(cluster):
    cluster.deployment("web", replicas=2)
    request = cluster.request("scale", "Deployment", "web", {"by": 2})

    first, second = cluster.run(request), cluster.run(request)

    assert first.status is ActionStatus.EXECUTED, first.message
    assert second.status is ActionStatus.NOOP
    assert second.message == f"already executed: {request.key}"
    assert replicas(cluster) == 4
    assert len(cluster.events("Deployment", "web", "AiopsScaled")) == 1


def test_a_relative_scale_interrupted_after_the_write_resumes_from_its_recorded_start(cluster):
    # As if an earlier execution recorded its start (2), scaled to 4 and crashed before recording the key.
    cluster.deployment("web", replicas=4)
    request = cluster.request("scale", "Deployment", "web", {"by": 2})
    origin = dump_json({"key": stored_key(request.key), "replicas": 2})
    cluster.apps.patch_namespaced_deployment(
        "web", cluster.ns, {"metadata": {"annotations": {SCALE_ORIGIN: origin}}}
    )

    result = cluster.run(request)

    assert result.status is ActionStatus.NOOP, result.message
    assert replicas(cluster) == 4, "2 + 2 from the recorded start, not 4 + 2"
    notes = cluster.read("Deployment", "web")["metadata"]["annotations"]
    assert SCALE_ORIGIN not in notes
    assert request.key in json.loads(notes[EXECUTED_KEYS])


def test_scale_is_clamped_by_max_replicas_and_max_step(cluster):
    cluster.deployment("web", replicas=2)
    request = cluster.request(
        "scale",
        "Deployment",
        "web",
        {"by": 10, "maxReplicas": 9, "maxStep": 3},
        limits=Limits(max_replicas=20),
    )

    result = cluster.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    assert replicas(cluster) == 5
    assert result.details["notes"] == ["clamped to maxReplicas 9", "limited to maxStep 3 from 2"]
    assert "asked 12" in result.message


def test_scale_to_a_forecast_is_clamped_by_the_guardrail_limits(cluster):
    cluster.deployment("web", replicas=2)
    params = {"toForecast": {"capacityPerPod": 50, "headroom": 0.2}}
    request = cluster.request(
        "scale", "Deployment", "web", params, signal=SignalFacts(400.0), limits=Limits(max_replicas=6)
    )

    result = cluster.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    assert result.details["requested"] == 10  # ceil(400 x 1.2 / 50)
    assert replicas(cluster) == 6


def test_a_forecast_sized_on_the_measured_capacity_says_so_in_plan_result_and_event(cluster):
    cluster.deployment("web", replicas=2)
    params = {"toForecast": {"headroom": 0.25}}  # capacityPerPod: measured, the default
    request = cluster.request("scale", "Deployment", "web", params, signal=SignalFacts(1000.0, capacity=80.0))

    plan = ACTIONS["scale"].plan(cluster.ctx(request))
    assert plan.summary.endswith("from 2 to 16 replicas; forecast 1000 at 80 per pod (measured)"), (
        plan.summary
    )
    result = cluster.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    assert replicas(cluster) == 16  # ceil(1000 x 1.25 / 80)
    assert result.details["sizing"] == "forecast 1000 at 80 per pod (measured)"
    assert result.message.endswith("; forecast 1000 at 80 per pod (measured)")
    assert request.to_dict()["signalCapacity"] == 80.0
    (event,) = cluster.events("Deployment", "web", "AiopsScaled")
    assert "80 per pod (measured)" in event.message


def test_a_forecast_without_a_measured_capacity_uses_the_fallback_or_is_refused(cluster):
    cluster.deployment("web", replicas=2, settled=True)
    before = cluster.rv("Deployment", "web")
    refused = cluster.run(
        cluster.request("scale", "Deployment", "web", {"toForecast": {}}, signal=SignalFacts(400.0))
    )
    assert refused.status is ActionStatus.FAILED
    assert "not measured yet" in refused.message
    assert "fallbackCapacityPerPod" in refused.message
    assert cluster.rv("Deployment", "web") == before  # nothing written
    params = {"toForecast": {"fallbackCapacityPerPod": 50}}
    result = cluster.run(
        cluster.request("scale", "Deployment", "web", params, signal=SignalFacts(400.0), step="s2")
    )
    assert result.status is ActionStatus.EXECUTED, result.message
    assert replicas(cluster) == 8
    assert result.details["sizing"] == "forecast 400 at 50 per pod (fallbackCapacityPerPod: not measured yet)"


def test_scale_down_stops_at_min_replicas(cluster):
    cluster.deployment("web", replicas=3)
    result = cluster.run(cluster.request("scale", "Deployment", "web", {"by": -3, "minReplicas": 2}))
    assert result.status is ActionStatus.EXECUTED, result.message
    assert replicas(cluster) == 2
    assert result.details["notes"] == ["raised to minReplicas 2"]


def test_an_absolute_count_outside_the_bounds_is_refused_and_nothing_is_written(cluster):
    cluster.deployment("web", replicas=2, settled=True)
    before = cluster.rv("Deployment", "web")
    request = cluster.request("scale", "Deployment", "web", {"replicas": 50}, limits=Limits(max_replicas=10))

    result = cluster.run(request)

    assert result.status is ActionStatus.FAILED
    assert result.error == "ActionRefused"
    assert "violates the bounds [None, 10]" in result.message
    assert cluster.rv("Deployment", "web") == before
    assert replicas(cluster) == 2


def test_plan_and_dry_run_show_a_diff_and_write_nothing(cluster):
    cluster.deployment("web", replicas=2, settled=True)
    before = cluster.rv("Deployment", "web")
    request = cluster.request("scale", "Deployment", "web", {"by": 2}, dry_run=True)

    plan = ACTIONS["scale"].plan(cluster.ctx(request))
    result = cluster.run(request)

    assert plan.changes
    assert plan.summary == f"scale Deployment/{cluster.ns}/web from 2 to 4 replicas"
    assert "-spec.replicas: 2" in plan.diff.splitlines()
    assert "+spec.replicas: 4" in plan.diff.splitlines()
    assert result.status is ActionStatus.DRY_RUN
    assert result.diff == plan.diff
    assert cluster.rv("Deployment", "web") == before
    assert cluster.events("Deployment", "web", "AiopsScaled") == []
    if cluster.twin is not None:
        assert cluster.writes() == [("create", "deployments", "")]


def test_a_statefulset_scales_through_its_scale_subresource(cluster):
    cluster.apps.create_namespaced_stateful_set(cluster.ns, statefulset_body("db", replicas=1))
    result = cluster.run(cluster.request("scale", "StatefulSet", "db", {"replicas": 3}))
    assert result.status is ActionStatus.EXECUTED, result.message
    assert replicas(cluster, "db", "StatefulSet") == 3


def test_with_an_hpa_the_floor_is_raised_instead_of_the_replicas_and_restore_puts_it_back(cluster):
    cluster.deployment("web", replicas=2)
    cluster.autoscaling.create_namespaced_horizontal_pod_autoscaler(
        cluster.ns, hpa_body("web", low=2, high=8)
    )
    request = cluster.request("scale", "Deployment", "web", {"replicas": 5})

    result = cluster.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    hpa = cluster.read("HorizontalPodAutoscaler", "web")
    assert hpa["spec"]["minReplicas"] == 5
    held = raise_of(hpa)
    assert held is not None
    assert (held.original, held.set_to, list(held.holders.values())) == (2, 5, [5])
    assert "-spec.minReplicas: 2" in result.diff
    assert "+spec.minReplicas: 5" in result.diff
    assert cluster.run(request).status is ActionStatus.NOOP
    if cluster.twin is not None:
        assert not [w for w in cluster.writes() if w[1] == "deployments/scale"], (
            "replicas written behind the HPA"
        )
        cluster.wait(lambda: replicas(cluster) == 5, "the HPA scaling web up to its new floor")

    action = ACTIONS["scale"]
    assert isinstance(action, ScaleAction)
    restored = action.restore(cluster.ctx(request))

    assert restored.status is ActionStatus.EXECUTED, restored.message
    hpa = cluster.read("HorizontalPodAutoscaler", "web")
    assert hpa["spec"]["minReplicas"] == 2
    assert CAPACITY_RAISE not in (hpa["metadata"].get("annotations") or {})
    assert action.restore(cluster.ctx(request)).status is ActionStatus.NOOP
    assert len(cluster.events("Deployment", "web", "AiopsScaleRestored")) == 1


def test_the_hpa_floor_never_goes_above_its_max_replicas(cluster):
    cluster.deployment("web", replicas=2)
    cluster.autoscaling.create_namespaced_horizontal_pod_autoscaler(
        cluster.ns, hpa_body("web", low=1, high=8)
    )
    result = cluster.run(cluster.request("scale", "Deployment", "web", {"replicas": 20}))
    assert result.status is ActionStatus.EXECUTED, result.message
    assert cluster.read("HorizontalPodAutoscaler", "web")["spec"]["minReplicas"] == 8
    assert "capped at the HPA's maxReplicas 8" in result.message


def test_restore_leaves_a_floor_someone_changed_since(cluster):
    cluster.deployment("web", replicas=2)
    cluster.autoscaling.create_namespaced_horizontal_pod_autoscaler(
        cluster.ns, hpa_body("web", low=2, high=8)
    )
    request = cluster.request("scale", "Deployment", "web", {"replicas": 4})
    assert cluster.run(request).status is ActionStatus.EXECUTED
    cluster.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "web", cluster.ns, {"spec": {"minReplicas": 7}}
    )

    action = ACTIONS["scale"]
    assert isinstance(action, ScaleAction)
    restored = action.restore(cluster.ctx(request))

    assert restored.status is ActionStatus.SKIPPED, restored.message
    hpa = cluster.read("HorizontalPodAutoscaler", "web")
    assert hpa["spec"]["minReplicas"] == 7
    assert CAPACITY_RAISE not in (hpa["metadata"].get("annotations") or {})


def test_scale_of_a_missing_deployment_fails_naming_it(cluster):
    result = cluster.run(cluster.request("scale", "Deployment", "nope", {"replicas": 3}))
    assert result.status is ActionStatus.FAILED
    assert result.error == "NotFoundError"
    assert result.message.startswith(f"get Deployment {cluster.ns}/nope: not found")
    assert not result.retryable


def test_a_namespace_outside_the_allow_list_is_refused_before_any_call(twin):
    twin.deployment("web", replicas=2)
    assert twin.twin is not None
    twin.twin.server.clear_requests()
    request = twin.request(
        "scale", "Deployment", "web", {"replicas": 3}, limits=Limits(namespaces=frozenset({"shop"}))
    )

    result = twin.run(request)

    assert result.status is ActionStatus.FAILED
    assert result.error == "ActionRefused"
    assert f"namespace '{twin.ns}' is not in the allowed namespaces (shop)" in result.message
    assert twin.twin.server.requests == []


def test_a_500_on_the_scale_write_is_retried_and_scales_once(twin):
    twin.deployment("web", replicas=2)
    assert twin.twin is not None
    twin.twin.server.faults.error(500, verb="patch", resource="deployments/scale", count=1)

    result = twin.run(twin.request("scale", "Deployment", "web", {"by": 2}))

    assert result.status is ActionStatus.EXECUTED, result.message
    assert replicas(twin) == 4
    codes = [
        r.code
        for r in twin.twin.server.requests
        if r.info.resource_path == "deployments/scale" and r.info.verb == "patch"
    ]
    assert codes == [500, 200]
    assert twin.clock.waits == [0.5]


def test_a_scale_write_whose_answer_is_lost_is_not_applied_twice(twin_cluster):
    # The first PATCH is slow: the client gives up (read timeout) while the server still applies it.
    # The retry carries the same resourceVersion as the first, so only one of the two can land.
    with open_cluster(twin_cluster, KubeSettings(read_timeout=0.1)) as slow:
        slow.deployment("web", replicas=2)
        twin_cluster.server.faults.latency(0.3, verb="patch", resource="deployments/scale", count=1)

        result = slow.run(slow.request("scale", "Deployment", "web", {"by": 2}))

        assert result.status is ActionStatus.EXECUTED, result.message

        def scale_patches() -> list[int]:
            return [
                r.code
                for r in twin_cluster.server.requests
                if r.info.resource_path == "deployments/scale" and r.info.verb == "patch"
            ]

        slow.wait(lambda: len(scale_patches()) == 2, "both PATCHes answered")
        assert sorted(scale_patches()) == [200, 409]
        assert replicas(slow) == 4
        assert [type(e.error).__name__ for e in slow.retries] == ["ConnectionKubeError"]


def test_two_incidents_raising_one_floor_do_not_undo_each_other(cluster):
    cluster.deployment("web", replicas=2)
    cluster.autoscaling.create_namespaced_horizontal_pod_autoscaler(
        cluster.ns, hpa_body("web", low=2, high=9)
    )
    first = cluster.request("scale", "Deployment", "web", {"replicas": 5}, incident="inc-a")
    second = cluster.request("scale", "Deployment", "web", {"replicas": 7}, incident="inc-b")
    assert cluster.run(first).status is ActionStatus.EXECUTED
    assert cluster.run(second).status is ActionStatus.EXECUTED
    action = ACTIONS["scale"]
    assert isinstance(action, ScaleAction)

    # the first incident resolves: the second still holds 7
    kept = action.restore(cluster.ctx(first))
    assert kept.status is ActionStatus.NOOP, kept.message
    assert "held by inc-b" in kept.message
    assert cluster.read("HorizontalPodAutoscaler", "web")["spec"]["minReplicas"] == 7

    # the second resolves: back to the floor before the first raise
    back = action.restore(cluster.ctx(second))
    assert back.status is ActionStatus.EXECUTED, back.message
    hpa = cluster.read("HorizontalPodAutoscaler", "web")
    assert hpa["spec"]["minReplicas"] == 2
    assert CAPACITY_RAISE not in (hpa["metadata"].get("annotations") or {})


def test_the_second_raise_released_first_drops_to_the_first_raise(cluster):
    cluster.deployment("web", replicas=2)
    cluster.autoscaling.create_namespaced_horizontal_pod_autoscaler(
        cluster.ns, hpa_body("web", low=2, high=9)
    )
    first = cluster.request("scale", "Deployment", "web", {"replicas": 4}, incident="inc-a")
    second = cluster.request("scale", "Deployment", "web", {"replicas": 8}, incident="inc-b")
    cluster.run(first)
    cluster.run(second)
    action = ACTIONS["scale"]
    assert isinstance(action, ScaleAction)
    down = action.restore(cluster.ctx(second))
    assert down.status is ActionStatus.EXECUTED, down.message
    assert cluster.read("HorizontalPodAutoscaler", "web")["spec"]["minReplicas"] == 4
    assert action.restore(cluster.ctx(first)).status is ActionStatus.EXECUTED
    assert cluster.read("HorizontalPodAutoscaler", "web")["spec"]["minReplicas"] == 2


def test_replicas_raised_without_an_hpa_are_put_back_unless_someone_changed_them(cluster):
    cluster.deployment("web", replicas=2)
    request = cluster.request("scale", "Deployment", "web", {"by": 3}, incident="inc-a")
    assert cluster.run(request).status is ActionStatus.EXECUTED
    assert replicas(cluster) == 5
    action = ACTIONS["scale"]
    assert isinstance(action, ScaleAction)
    restored = action.restore(cluster.ctx(request))
    assert restored.status is ActionStatus.EXECUTED, restored.message
    assert replicas(cluster) == 2

    again = cluster.request("scale", "Deployment", "web", {"by": 3}, incident="inc-b")
    assert cluster.run(again).status is ActionStatus.EXECUTED
    cluster.apps.patch_namespaced_deployment_scale("web", cluster.ns, {"spec": {"replicas": 9}})
    left = action.restore(cluster.ctx(again))
    assert left.status is ActionStatus.SKIPPED, left.message
    assert replicas(cluster) == 9
    annotations = cluster.read("Deployment", "web")["metadata"].get("annotations") or {}
    assert CAPACITY_RAISE not in annotations


def test_no_scale_down_while_a_corrective_incident_is_open(cluster):
    cluster.deployment("web", replicas=6)
    request = cluster.request("scale", "Deployment", "web", {"replicas": 3}, limits=Limits(scale_down=False))
    result = cluster.run(request)
    assert result.status is ActionStatus.NOOP, result.message
    assert replicas(cluster) == 6
    up = cluster.request(
        "scale", "Deployment", "web", {"replicas": 8}, incident="inc-2", limits=Limits(scale_down=False)
    )
    assert cluster.run(up).status is ActionStatus.EXECUTED
    assert replicas(cluster) == 8


def forecast(
    cluster: Cluster,
    upper: float,
    incident: str,
    *,
    hold: str = "5m",
    mean: float | None = None,
    observed: float | None = None,
    limits: Limits | None = None,
) -> ActionRequest:
    """A forecast of ``upper`` (point value ``mean``, load observed over its horizon ``observed``)
    for ``web``, 10 per pod, as its own incident, under the guardrails' ``limits``."""
    return cluster.request(
        "scale",
        "Deployment",
        "web",
        {"toForecast": {"capacityPerPod": 10, "hold": hold}},
        incident=incident,
        playbook="ahead",
        signal=SignalFacts(upper, mean, observed=observed),
        limits=limits,
    )


def hpa_floor(cluster: Cluster) -> int:
    return int(cluster.read("HorizontalPodAutoscaler", "web")["spec"]["minReplicas"])


def test_a_forecast_raises_above_the_owner_and_lowers_only_what_it_raised_after_its_hold(twin):
    clock = twin.twin.clock
    twin.clock = clock
    twin.deployment("web", replicas=4)

    def run(value: float, incident: str) -> Any:
        return twin.run(forecast(twin, value, incident, hold="30m"))

    assert run(70.0, "inc-1").status is ActionStatus.EXECUTED
    assert replicas(twin) == 7
    twin.twin.advance(600)
    held = run(30.0, "inc-2")  # within the hold: stays
    assert held.status is ActionStatus.NOOP, held.message
    assert replicas(twin) == 7
    twin.twin.advance(1800)
    lowered = run(10.0, "inc-3")  # after the hold: down, but not below the owner's 4
    assert lowered.status is ActionStatus.EXECUTED, lowered.message
    assert replicas(twin) == 4
    assert "lowered no further than 4" in lowered.message
    assert CAPACITY_RAISE not in (twin.read("Deployment", "web")["metadata"].get("annotations") or {})
    twin.twin.advance(3600)
    never = run(10.0, "inc-4")  # the owner's replicas are not the forecast's to lower
    assert never.status is ActionStatus.NOOP, never.message
    assert replicas(twin) == 4


def test_a_forecast_lowers_the_hpa_floor_it_raised_while_the_hpa_runs_above_it(twin):
    """The HPA's floor is the forecast's knob: judged against the floor, not the replicas the HPA
    runs above it, so a forecast that falls brings the floor back down after its hold (it once
    stayed up for good whenever the HPA had scaled past the floor)."""
    clock = twin.twin.clock
    twin.clock = clock
    twin.deployment("web", replicas=2)
    twin.autoscaling.create_namespaced_horizontal_pod_autoscaler(twin.ns, hpa_body("web", low=2, high=30))

    raised = twin.run(forecast(twin, 80.0, "inc-1"))
    assert raised.status is ActionStatus.EXECUTED, raised.message
    assert hpa_floor(twin) == 8
    # the HPA runs the Deployment above the floor
    twin.apps.patch_namespaced_deployment_scale("web", twin.ns, {"spec": {"replicas": 12}})
    twin.twin.advance(600)
    lowered = twin.run(forecast(twin, 20.0, "inc-2"))
    assert lowered.status is ActionStatus.EXECUTED, lowered.message
    assert hpa_floor(twin) == 3  # 20 / 10 with the 10 % tolerance kept as room
    twin.twin.advance(600)
    back = twin.run(forecast(twin, 5.0, "inc-3"))
    assert back.status is ActionStatus.EXECUTED, back.message
    assert hpa_floor(twin) == 2  # never below the owner's floor


def test_an_hpa_floor_follows_the_point_forecast_and_its_plan_says_what_runs(twin):
    """Under an HPA the forecast's floor is the demand it expects (the HPA scales above it for what
    the forecast misses), not its upper bound; the plan judges the floor exactly as the run does,
    lowering included."""
    clock = twin.twin.clock
    twin.clock = clock
    twin.deployment("web", replicas=2)
    twin.autoscaling.create_namespaced_horizontal_pod_autoscaler(twin.ns, hpa_body("web", low=2, high=30))

    def plan_and_run(upper: float, mean: float, incident: str) -> tuple[Any, Any]:
        request = forecast(twin, upper, incident, mean=mean)
        return ACTIONS["scale"].plan(twin.ctx(request)), twin.run(request)

    plan, raised = plan_and_run(200.0, 60.0, "inc-1")
    assert plan.summary.startswith("raise the floor of HPA web")
    assert "from 2 to 6" in plan.summary
    assert plan.summary.endswith("; forecast 60 at 10 per pod (capacityPerPod)"), plan.summary
    assert raised.details["sizing"] == "forecast 60 at 10 per pod (capacityPerPod)"
    assert raised.status is ActionStatus.EXECUTED, raised.message
    assert hpa_floor(twin) == 6  # 60 / 10, not the bound's 20
    twin.apps.patch_namespaced_deployment_scale("web", twin.ns, {"spec": {"replicas": 14}})
    twin.twin.advance(600)
    plan, lowered = plan_and_run(200.0, 30.0, "inc-2")
    assert plan.changes
    assert "lower the floor of HPA web" in plan.summary, plan.summary
    assert "from 6 to 4" in plan.summary  # 30 / 10 with the 10 % tolerance kept as room
    assert lowered.status is ActionStatus.EXECUTED, lowered.message
    assert hpa_floor(twin) == 4


def test_an_hpa_floor_is_raised_only_past_what_the_hpa_runs_and_lowered_as_far_as_the_load_seen(twin):
    """Floor 2 and the HPA runs 12: a forecast of 80 (8 pods) is served already, so nothing is
    written; one of 150 raises the floor to 15. Later a forecast of 20 would bring it to 3, but the
    load seen over its horizon reached 100: 15 -> 10 frees a third, under twice minLowering, so
    the floor stays (the HPA serves that load). At 80 seen it goes part-way to 8 (almost half);
    once the load agrees with the forecast, to 3."""
    clock = twin.twin.clock
    twin.clock = clock
    twin.deployment("web", replicas=2)
    twin.autoscaling.create_namespaced_horizontal_pod_autoscaler(twin.ns, hpa_body("web", low=2, high=30))
    twin.apps.patch_namespaced_deployment_scale("web", twin.ns, {"spec": {"replicas": 12}})

    served = forecast(twin, 200.0, "inc-1", mean=80.0)
    plan = ACTIONS["scale"].plan(twin.ctx(served))
    assert not plan.changes
    assert plan.summary.endswith("; forecast 80 at 10 per pod (capacityPerPod); the HPA runs 12"), (
        plan.summary
    )
    result = twin.run(served)
    assert result.status is ActionStatus.NOOP, result.message
    assert "the HPA runs 12" in result.message
    assert hpa_floor(twin) == 2
    raised = twin.run(forecast(twin, 200.0, "inc-2", mean=150.0))
    assert raised.status is ActionStatus.EXECUTED, raised.message
    assert hpa_floor(twin) == 15
    twin.twin.advance(600)
    held = twin.run(forecast(twin, 200.0, "inc-3", mean=20.0, observed=100.0))
    assert held.status is ActionStatus.NOOP, held.message
    assert hpa_floor(twin) == 15
    assert held.message.endswith(
        "; observed up to 100; 15 -> 10 frees less than twice minLowering 0.2 (part-way, with an HPA)"
    ), held.message
    part = twin.run(forecast(twin, 200.0, "inc-4", mean=20.0, observed=80.0))
    assert part.status is ActionStatus.EXECUTED, part.message
    assert hpa_floor(twin) == 8
    assert part.message.endswith("; forecast 20 at 10 per pod (capacityPerPod); observed up to 80"), (
        part.message
    )
    twin.twin.advance(600)
    lowered = twin.run(forecast(twin, 200.0, "inc-5", mean=20.0, observed=25.0))
    assert lowered.status is ActionStatus.EXECUTED, lowered.message
    assert hpa_floor(twin) == 3  # 20 / 0.9 / 10 = 2.2 -> 3, the load seen (25: 2.5 -> 3) agrees


def test_an_hpa_floor_comes_down_in_one_step_under_the_step_guardrail(twin):
    """maxStep 5 paces each raise of the floor (2 -> 7 -> 12), but when the forecast falls the
    floor goes from 12 back to 2 in one step: lowering minReplicas removes no pod itself, the
    HPA's scale-down paces the pods that go. The plan says so, as the run does."""
    clock = twin.twin.clock
    twin.clock = clock
    twin.deployment("web", replicas=2)
    twin.autoscaling.create_namespaced_horizontal_pod_autoscaler(twin.ns, hpa_body("web", low=2, high=30))

    def stepped(mean: float, incident: str) -> ActionRequest:
        return forecast(twin, 2 * mean, incident, mean=mean, limits=Limits(max_step=5))

    for incident, floor in (("inc-1", 7), ("inc-2", 12)):
        raised = twin.run(stepped(150.0, incident))
        assert raised.status is ActionStatus.EXECUTED, raised.message
        assert "limited to maxStep 5" in raised.message
        assert hpa_floor(twin) == floor
    twin.twin.advance(600)
    request = stepped(10.0, "inc-3")
    plan = ACTIONS["scale"].plan(twin.ctx(request))
    assert "from 12 to 2" in plan.summary, plan.summary
    lowered = twin.run(request)
    assert lowered.status is ActionStatus.EXECUTED, lowered.message
    assert "not limited to maxStep 5: the HPA paces its own scale-down" in lowered.message
    assert hpa_floor(twin) == 2
