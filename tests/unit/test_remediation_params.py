"""Parameters models, Target name rules, idempotency keys and the registry: no cluster needed."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from remediations import (
    ACTIONS,
    PARAMS,
    ActionRefused,
    Limits,
    ParamsError,
    ScaleParams,
    Target,
    idempotency_key,
    make_request,
    parse_params,
)
from remediations.names import check_selector, selector_from_label_selector
from remediations.params import parse_duration
from remediations.retrain import job_name
from remediations.scale import Raise, decide
from remediations.state import EXECUTED_KEYS, MAX_KEYS, executed_keys, stored_key, was_executed, with_key
from remediations.types import SignalFacts

# ---------------------------------------------------------------- Target


@pytest.mark.parametrize(
    ("field", "kind", "namespace", "name", "why"),
    [
        ("target name", "Deployment", "shop", "{{ labels.deployment }}", "not a valid Kubernetes name"),
        ("target name", "Deployment", "shop", "../etc", "not a valid Kubernetes name"),
        ("target name", "Deployment", "shop", "web\n", "not a valid Kubernetes name"),
        ("target name", "Deployment", "shop", "Web", "not a valid Kubernetes name"),
        ("target name", "Deployment", "shop", "a" * 254, "longer than 253 characters"),
        ("target name", "Deployment", "shop", "", "must be a non-empty string"),
        ("target namespace", "Deployment", "a" * 64, "web", "longer than 63 characters"),
        ("target namespace", "Deployment", "shop.eu", "web", "not a valid Kubernetes name"),
        ("target namespace", "Deployment", "../kube-system", "web", "not a valid Kubernetes name"),
        ("target kind", "deployment", "shop", "web", "is not a Kubernetes kind"),
        ("target kind", "Deploy/ment", "shop", "web", "is not a Kubernetes kind"),
    ],
)
def test_target_names_follow_the_kubernetes_rules(field, kind, namespace, name, why):
    with pytest.raises(ValueError, match=why) as caught:
        Target(kind, namespace, name)
    assert str(caught.value).startswith(field)


def test_valid_targets_and_their_string_form():
    assert str(Target("Deployment", "shop", "web-1.v2")) == "Deployment/shop/web-1.v2"
    assert Target("Deployment", "a" * 63, "b" * 253).name == "b" * 253


def test_the_idempotency_key_is_stable_and_names_its_parts():
    target = Target("Deployment", "shop", "web")
    key = idempotency_key("scale-out", target, "inc-42", "actions[0]")
    assert key == "scale-out/Deployment/shop/web/inc-42/actions[0]"
    assert key == idempotency_key("scale-out", Target("Deployment", "shop", "web"), "inc-42", "actions[0]")
    assert key != idempotency_key("scale-out", target, "inc-42", "actions[1]")
    with pytest.raises(ValueError, match="incident must be a non-empty single-line string"):
        idempotency_key("scale-out", target, "inc\n42", "actions[0]")


def test_a_request_is_frozen_and_carries_validated_params():
    request = make_request(
        "scale", Target("Deployment", "shop", "web"), {"by": 2}, playbook="p", incident="i", step="s"
    )
    assert isinstance(request.params, ScaleParams)
    assert request.params.by == 2
    assert len(request.key_digest) == 16
    with pytest.raises(AttributeError):
        request.key = "other"  # type: ignore[misc]
    with pytest.raises(ParamsError):
        make_request("scale", request.target, {"bye": 2}, playbook="p", incident="i", step="s")


# ---------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("action", "raw", "message"),
    [
        ("scale", {}, "scale takes exactly one of replicas, by, factor, toForecast; found none"),
        ("scale", {"replicas": 3, "by": 1}, "found replicas, by"),
        ("scale", {"by": 0}, "scale by 0 does nothing"),
        ("scale", {"replicas": -1}, "scale.replicas: Input should be greater than or equal to 0"),
        ("scale", {"replicas": 3, "maxReplica": 4}, "scale.maxReplica: Extra inputs are not permitted"),
        (
            "scale",
            {"by": 1, "minReplicas": 5, "maxReplicas": 3},
            "minReplicas (5) is greater than maxReplicas (3)",
        ),
        ("scale", {"replicas": 30, "maxReplicas": 20}, "replicas (30) is above maxReplicas (20)"),
        ("scale", {"by": 1, "maxStep": 0}, "scale.maxStep: Input should be greater than or equal to 1"),
        (
            "scale",
            {"toForecast": {"capacityPerPod": 0}},
            "scale.toForecast.capacityPerPod: Value error, expected 'measured' or a number of at least "
            "1e-06, got 0",
        ),
        (
            "scale",
            {"toForecast": {"perReplica": 5}},
            "scale.toForecast.perReplica: Extra inputs are not permitted",
        ),
        ("scale", {"by": 1, "min_replicas": 2}, "scale.min_replicas: Extra inputs are not permitted"),
        ("rollback", {"toRevision": 0}, "rollback.toRevision: Input should be greater than or equal to 1"),
        ("rollback", {"revision": 2}, "rollback.revision: Extra inputs are not permitted"),
        ("restart", {"force": True}, "restart.force: Extra inputs are not permitted"),
        (
            "delete_pod",
            {"pod": "Web_1"},
            "delete_pod.pod: Value error, name 'Web_1' is not a valid Kubernetes name",
        ),
        ("delete_pod", {"pod": "../etc"}, "is not a valid Kubernetes name"),
        ("delete_pod", {"pod": "web", "selector": "app=web"}, "at most one of pod, selector"),
        ("delete_pod", {"selector": "app==web,tier in (a,"}, "is not a label selector requirement"),
        ("delete_pod", {"selector": "app=we b"}, "is not a label selector requirement"),
        (
            "delete_pod",
            {"maxPerWindow": 0},
            "delete_pod.maxPerWindow: Input should be greater than or equal to 1",
        ),
        ("delete_pod", {"window": "ten minutes"}, "is not a duration"),
        (
            "retrain",
            {"cronJob": "Train_Model"},
            "retrain.cronJob: Value error, name 'Train_Model' is not a valid",
        ),
        (
            "retrain",
            {"cronJob": "a", "jobTemplate": {"spec": {"template": {}}}},
            "at most one of cronJob, jobTemplate",
        ),
        (
            "retrain",
            {"jobTemplate": {"spec": {}}},
            "jobTemplate.spec.template (the pod template) is required",
        ),
        (
            "retrain",
            {"jobTemplate": {"metadata": {"name": "x"}, "spec": {"template": {}}}},
            "the agent names the Job",
        ),
        ("retrain", {"topic": "no spaces"}, "is not a Kafka topic name"),
        ("notify", {"message": "hi"}, "notify takes exactly one of webhook, webhookEnv"),
        ("notify", {"webhook": "ftp://x", "message": "hi"}, "notify.webhook: String should match pattern"),
        ("notify", {"webhookEnv": "1BAD", "message": "hi"}, "is not an environment variable name"),
        (
            "notify",
            {"webhookEnv": "HOOK", "message": ""},
            "notify.message: String should have at least 1 character",
        ),
        (
            "notify",
            {"webhookEnv": "HOOK", "message": "hi", "timeout": 0},
            "notify.timeout: Input should be greater than 0",
        ),
        (
            "notify",
            {"webhookEnv": "HOOK", "message": "hi", "headersEnv": {"Bad Header": "X"}},
            "is not an HTTP header name",
        ),
    ],
)
def test_invalid_params_give_errors_naming_the_field(action, raw, message):
    with pytest.raises(ParamsError) as caught:
        parse_params(action, raw)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"invalid parameters for action {action!r}:")


@pytest.mark.parametrize(
    ("action", "raw"),
    [
        ("scale", {"replicas": 3, "minReplicas": 1, "maxReplicas": 5, "maxStep": 2}),
        ("scale", {"by": -2}),
        ("scale", {"factor": 1.5}),
        ("scale", {"toForecast": {"value": "120.5", "capacityPerPod": 50, "headroom": 0.2}}),
        ("rollback", {}),
        ("rollback", {"toRevision": 3}),
        ("restart", {}),
        ("restart", None),
        ("delete_pod", {"selector": "app=web,tier in (a, b),!canary,track!=beta", "window": "1h30m"}),
        ("delete_pod", {"pod": "web-7d4b9-abcde", "maxPerWindow": 3, "gracePeriod": "30s"}),
        ("retrain", {"cronJob": "train-churn", "topic": "aiops.retrain", "model": "churn"}),
        (
            "retrain",
            {"jobTemplate": {"metadata": {"labels": {"a": "b"}}, "spec": {"template": {"spec": {}}}}},
        ),
        (
            "notify",
            {"webhook": "https://hooks.example.com/x", "message": "hi", "timeout": "5s", "retries": 0},
        ),
        (
            "notify",
            {"webhookEnv": "OPS_WEBHOOK", "message": "hi", "tokenEnv": "TOKEN", "headersEnv": {"X-A": "A"}},
        ),
    ],
)
def test_valid_params_load(action, raw):
    params = parse_params(action, raw)
    assert type(params) is PARAMS[action]
    assert params.describe()


def test_params_round_trip_in_playbook_spelling():
    params = parse_params("delete_pod", {"pod": "web-1", "window": "10m", "gracePeriod": 5})
    assert params.to_yaml_dict() == {"pod": "web-1", "maxPerWindow": 1, "window": 600.0, "gracePeriod": 5.0}


def test_durations():
    assert parse_duration("90") == 90.0
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("0.5s") == 0.5
    assert parse_duration(12) == 12
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_the_registry_is_built_once_and_read_only():
    assert list(ACTIONS) == ["scale", "rollback", "restart", "delete_pod", "retrain", "notify"]
    assert isinstance(ACTIONS, MappingProxyType)
    with pytest.raises(TypeError):
        ACTIONS["evil"] = ACTIONS["scale"]  # type: ignore[index]
    for name, action in ACTIONS.items():
        assert action.name == name
        assert PARAMS[name] is action.params_model
        assert action.params_model.model_config["extra"] == "forbid"
    with pytest.raises(ValueError, match="unknown action 'reboot'; the actions are: scale, rollback"):
        parse_params("reboot", {})


# ---------------------------------------------------------------- scale decisions


def request(
    params: dict[str, Any],
    limits: Limits | None = None,
    signal: float | None = None,
    mean: float | None = None,
    capacity: float | None = None,
    observed: float | None = None,
):
    return make_request(
        "scale",
        Target("Deployment", "shop", "web"),
        params,
        playbook="p",
        incident="i",
        step="s",
        limits=limits,
        signal=SignalFacts(signal, mean, capacity, observed),
    )


def test_decide_clamps_then_limits_the_step():
    r = request({"by": 10, "maxReplicas": 9, "maxStep": 3})
    decision = decide(r.params, r, current=2)
    assert (decision.requested, decision.desired) == (12, 5)
    assert decision.explain() == "5 (asked 12; clamped to maxReplicas 9; limited to maxStep 3 from 2)"


def test_decide_takes_the_tighter_of_params_and_guardrails():
    r = request({"by": 10, "maxReplicas": 9}, Limits(max_replicas=6, max_step=10))
    assert decide(r.params, r, current=2).desired == 6
    r = request({"by": 1, "minReplicas": 1}, Limits(min_replicas=4))
    assert decide(r.params, r, current=2).desired == 4


def test_a_relative_scale_computes_from_its_recorded_start():
    r = request({"by": 2, "maxStep": 2})
    assert decide(r.params, r, current=4, base=2).desired == 4
    assert decide(r.params, r, current=2).desired == 4


def test_forecast_replicas_use_the_signal_value_and_round_up():
    r = request({"toForecast": {"capacityPerPod": 50, "headroom": 0.2}}, signal=400.0)
    assert decide(r.params, r, current=1).desired == 10
    r = request({"toForecast": {"value": 100, "capacityPerPod": 50}}, signal=999.0)
    assert decide(r.params, r, current=1).desired == 2
    r = request({"toForecast": {"capacityPerPod": 50}})
    with pytest.raises(ActionRefused, match="toForecast needs a forecast"):
        decide(r.params, r, current=1)


def test_a_forecast_within_the_tolerance_of_what_runs_changes_nothing_headroom_included():
    """The tolerance compares the replicas the forecast needs, headroom included, with the current
    ones (the HPA's desired/current ratio): 241 x 1.25 / 50 = 6.03 replicas is within 10 % of 6.
    Judged without the headroom (4.8 against 6) it was outside, and ceil(6.03) raised 6 to 7."""
    r = request({"toForecast": {"capacityPerPod": 50, "headroom": 0.25}}, signal=241.0)
    assert decide(r.params, r, current=6).desired == 6
    r = request({"toForecast": {"capacityPerPod": 50, "headroom": 0.25}}, signal=270.0)
    assert decide(r.params, r, current=6).desired == 7  # 6.75: 12.5 % over
    r = request({"toForecast": {"capacityPerPod": 50, "headroom": 0.25}}, signal=200.0)
    assert decide(r.params, r, current=6).desired == 6  # 5.0: 17 % under, but raised by no forecast


def test_a_forecast_lowers_only_as_far_as_the_load_observed_over_its_horizon_allows():
    """The forecast raised 3 to 8 (held by it since t=0); a forecast of 100 needs 3 (with the
    tolerance as room: 100 / 0.9 x 1.25 / 50 = 2.8), but the load seen over the last horizon
    reached 300, which needs 300 x 1.25 / 50 = 7.5: kept at 8. Once the peak has left the horizon
    (observed 150: 3.75), both agree on 4."""
    held = Raise(original=3, set_to=8, holders={"forecast:p": 8}, at=0.0)
    params = {"toForecast": {"capacityPerPod": 50, "headroom": 0.25}}
    r = request(params, signal=100.0, observed=300.0)
    assert decide(r.params, r, current=8, record=held, now=600.0).desired == 8
    r = request(params, signal=100.0, observed=150.0)
    decision = decide(r.params, r, current=8, record=held, now=600.0)
    assert decision.desired == 4
    assert decision.sizing == "forecast 100 at 50 per pod (capacityPerPod); observed up to 150"
    assert r.to_dict()["signalObserved"] == 150.0
    r = request(params, signal=100.0, observed=60.0)  # observed below the forecast: the forecast's 3
    assert decide(r.params, r, current=8, record=held, now=600.0).desired == 3
    r = request(params, signal=100.0)  # no observation sent: the forecast alone
    assert decide(r.params, r, current=8, record=held, now=600.0).desired == 3
    off = request(
        {"toForecast": {**params["toForecast"], "lowerWithObserved": False}}, signal=100.0, observed=300.0
    )
    assert decide(off.params, off, current=8, record=held, now=600.0).desired == 3
    # a raise is the forecast's alone: the observed load does not raise the floor
    r = request(params, signal=500.0, observed=900.0)
    assert decide(r.params, r, current=8, record=held, now=600.0).desired == 13


def test_a_forecast_lowers_only_when_that_frees_at_least_min_lowering_of_the_replicas():
    """10 replicas raised by the forecast. A lowering keeps the tolerance as room: a forecast of
    330 lowers to 330 / 0.9 x 1.25 / 50 = 9.2 -> 10, nothing to lower. 300 lowers to 8.3 -> 9: one
    replica, 10 % of them, below the default minLowering 0.2: kept at 10. 270 lowers to 7.5 -> 8:
    20 %, lowered. minLowering 0 lowers by one."""
    held = Raise(original=3, set_to=10, holders={"forecast:p": 10}, at=0.0)
    params = {"toForecast": {"capacityPerPod": 50, "headroom": 0.25}}
    r = request(params, signal=330.0)
    unchanged = decide(r.params, r, current=10, record=held, now=600.0)
    assert unchanged.desired == 10
    assert "minLowering" not in unchanged.sizing
    r = request(params, signal=300.0)
    kept = decide(r.params, r, current=10, record=held, now=600.0)
    assert kept.desired == 10
    assert kept.sizing.endswith("10 -> 9 frees less than minLowering 0.2")
    r = request(params, signal=270.0)
    assert decide(r.params, r, current=10, record=held, now=600.0).desired == 8
    r = request({"toForecast": {**params["toForecast"], "minLowering": 0}}, signal=300.0)
    assert decide(r.params, r, current=10, record=held, now=600.0).desired == 9
    # an HPA's floor alike: 6 -> 5 frees 17 %, 6 -> 4 a third
    floor = Raise(original=3, set_to=6, holders={"forecast:p": 6}, at=0.0)
    r = request(params, signal=900.0, mean=180.0)  # 180 / 0.9 x 1.25 / 50 = 5
    assert decide(r.params, r, current=6, record=floor, now=600.0, hpa=True, running=6).desired == 6
    r = request(params, signal=900.0, mean=120.0)  # 3.3 -> 4
    assert decide(r.params, r, current=6, record=floor, now=600.0, hpa=True, running=6).desired == 4
    with pytest.raises(ParamsError, match="minLowering"):
        request({"toForecast": {"capacityPerPod": 50, "minLowering": 1}})


def test_an_hpa_floor_held_up_by_the_observed_load_comes_down_part_way_only_for_twice_min_lowering():
    """A forecast raised 3 to 10 and now needs 3 (100 / 0.9 x 1.25 / 50 = 2.8), but the load seen
    over the horizon reached 270, which needs 6.75 -> 7. A Deployment's replicas go 10 -> 7 (30 %,
    over minLowering 0.2). An HPA's floor waits: the HPA serves the load it sees, and 30 % is under
    twice minLowering; at 200 observed (5, half of them) it comes down part-way, and once the load
    agrees with the forecast it comes down to the forecast's 3 in one action."""
    held = Raise(original=3, set_to=10, holders={"forecast:p": 10}, at=0.0)
    params = {"toForecast": {"capacityPerPod": 50, "headroom": 0.25}}
    r = request(params, signal=100.0, mean=100.0, observed=270.0)
    assert decide(r.params, r, current=10, record=held, now=600.0).desired == 7
    kept = decide(r.params, r, current=10, record=held, now=600.0, hpa=True, running=10)
    assert kept.desired == 10
    assert kept.sizing.endswith("10 -> 7 frees less than twice minLowering 0.2 (part-way, with an HPA)")
    r = request(params, signal=100.0, mean=100.0, observed=200.0)
    assert decide(r.params, r, current=10, record=held, now=600.0, hpa=True, running=10).desired == 5
    r = request(params, signal=100.0, mean=100.0, observed=90.0)
    assert decide(r.params, r, current=10, record=held, now=600.0, hpa=True, running=10).desired == 3
    # minLowering 0: any part-way lowering, with an HPA too
    r = request(
        {"toForecast": {**params["toForecast"], "minLowering": 0}}, signal=100.0, mean=100.0, observed=270.0
    )
    assert decide(r.params, r, current=10, record=held, now=600.0, hpa=True, running=10).desired == 7
    # the load seen above the forecast's level holds the floor up even where both need 3 replicas
    # (115 x 1.25 / 50 = 2.9, 111 x 1.25 / 50 = 2.8): 4 -> 3 frees a quarter, under twice minLowering
    held = Raise(original=2, set_to=4, holders={"forecast:p": 4}, at=0.0)
    r = request(params, signal=100.0, mean=100.0, observed=115.0)
    assert decide(r.params, r, current=4, record=held, now=600.0, hpa=True, running=4).desired == 4
    r = request(params, signal=100.0, mean=100.0, observed=90.0)
    assert decide(r.params, r, current=4, record=held, now=600.0, hpa=True, running=4).desired == 3


def test_an_hpa_floor_is_raised_only_when_the_forecast_needs_more_than_the_hpa_runs():
    """Floor 3, the HPA runs 8: a forecast that needs 7 is served already (no action on noise
    below what runs); one that needs 10 raises the floor to 10, as it does when what runs is not known."""
    params = {"toForecast": {"capacityPerPod": 50, "headroom": 0.25}}
    r = request(params, signal=900.0, mean=280.0)  # 280 x 1.25 / 50 = 7
    decision = decide(r.params, r, current=3, hpa=True, running=8)
    assert decision.desired == 3
    assert decision.sizing == "forecast 280 at 50 per pod (capacityPerPod); the HPA runs 8"
    r = request(params, signal=900.0, mean=400.0)  # 10
    assert decide(r.params, r, current=3, hpa=True, running=8).desired == 10
    assert decide(r.params, r, current=3, hpa=True).desired == 10


def test_an_hpa_floor_comes_down_in_one_step_where_replicas_go_by_max_step():
    """A forecast raised the floor from 3 to 20 and now needs 3. maxStep 5 limits a raise (of
    the floor or of replicas) and the lowering of a Deployment's replicas, but not the lowering of
    an HPA's floor: that removes no pod itself, and the HPA's scale-down paces the pods that go."""
    held = Raise(original=3, set_to=20, holders={"forecast:p": 20}, at=0.0)
    params = {"toForecast": {"capacityPerPod": 50, "headroom": 0.25}, "maxStep": 5}
    r = request(params, signal=100.0, mean=100.0)
    floor = decide(r.params, r, current=20, record=held, now=600.0, hpa=True, running=20)
    assert floor.desired == 3
    assert "not limited to maxStep 5: the HPA paces its own scale-down" in floor.notes
    assert decide(r.params, r, current=20, record=held, now=600.0).desired == 15  # replicas: 5 at a time
    r = request(params, signal=900.0, mean=900.0)  # 23 wanted: a raise of the floor is limited
    raised = decide(r.params, r, current=3, hpa=True, running=3)
    assert raised.desired == 8
    assert "limited to maxStep 5 from 3" in raised.notes
    fixed = request({"by": -10, "maxStep": 5})  # only a forecast's floor: a relative scale is not
    assert decide(fixed.params, fixed, current=20, hpa=True).desired == 15


def test_an_hpa_floor_is_sized_on_the_point_forecast_and_a_bare_target_on_the_bound():
    """Under an HPA the floor covers the demand the forecast expects and the HPA scales above it for
    what the forecast misses; without one, the bound is all the capacity there is."""
    r = request({"toForecast": {"capacityPerPod": 50}}, signal=400.0, mean=150.0)
    assert decide(r.params, r, current=1, hpa=True).desired == 3
    assert decide(r.params, r, current=1).desired == 8
    r = request({"toForecast": {"capacityPerPod": 50, "withHpa": "upper"}}, signal=400.0, mean=150.0)
    assert decide(r.params, r, current=1, hpa=True).desired == 8
    r = request({"toForecast": {"capacityPerPod": 50}}, signal=400.0)  # no point forecast sent
    assert decide(r.params, r, current=1, hpa=True).desired == 8
    r = request({"toForecast": {"value": 100, "capacityPerPod": 50}}, signal=400.0, mean=300.0)
    assert decide(r.params, r, current=1, hpa=True).desired == 2
    with pytest.raises(ParamsError, match="withHpa"):
        request({"toForecast": {"capacityPerPod": 50, "withHpa": "median"}})
    assert r.to_dict()["signalMean"] == 300.0


def test_forecast_replicas_use_the_measured_capacity_per_pod_by_default():
    """No capacityPerPod: the signal's measured capacity; 1000 x 1.25 / 80 = 15.6 -> 16 pods."""
    r = request({"toForecast": {"headroom": 0.25}}, signal=1000.0, capacity=80.0)
    decision = decide(r.params, r, current=4)
    assert decision.desired == 16
    assert decision.sizing == "forecast 1000 at 80 per pod (measured)"
    assert r.to_dict()["signalCapacity"] == 80.0
    assert r.params.describe() == "scale to the forecast at the measured capacity per pod"
    explicit = request(
        {"toForecast": {"capacityPerPod": "measured", "headroom": 0.25}}, signal=1000.0, capacity=20.0
    )
    assert decide(explicit.params, explicit, current=4).desired == 63  # 1250 / 20 = 62.5 -> 63


def test_forecast_replicas_use_the_fallback_until_a_capacity_is_measured():
    params = {"toForecast": {"fallbackCapacityPerPod": 50, "headroom": 0.25}}
    r = request(params, signal=1000.0)  # nothing measured yet: 1250 / 50 = 25
    decision = decide(r.params, r, current=4)
    assert decision.desired == 25
    assert decision.sizing == "forecast 1000 at 50 per pod (fallbackCapacityPerPod: not measured yet)"
    measured = request(params, signal=1000.0, capacity=125.0)  # once measured, the fallback is unused
    assert decide(measured.params, measured, current=4).desired == 10
    assert (
        r.params.describe() == "scale to the forecast at the measured capacity per pod (until measured, 50)"
    )


def test_a_fixed_capacity_per_pod_ignores_the_measurement():
    r = request({"toForecast": {"capacityPerPod": 50}}, signal=400.0, capacity=80.0)
    decision = decide(r.params, r, current=1)
    assert decision.desired == 8
    assert decision.sizing == "forecast 400 at 50 per pod (capacityPerPod)"
    assert r.params.describe() == "scale to the forecast at 50 per pod"


def test_a_forecast_without_any_capacity_is_refused_and_says_what_to_set():
    r = request({"toForecast": {"headroom": 0.25}}, signal=1000.0)
    with pytest.raises(ActionRefused, match=r"not measured yet.*fallbackCapacityPerPod"):
        decide(r.params, r, current=4)


@pytest.mark.parametrize(
    ("to_forecast", "why"),
    [
        ({"capacityPerPod": 50, "fallbackCapacityPerPod": 40}, "fallbackCapacityPerPod applies only with"),
        ({"capacityPerPod": "guessed"}, "capacityPerPod"),
        ({"capacityPerPod": -5}, "capacityPerPod"),
        ({"fallbackCapacityPerPod": 0}, "fallbackCapacityPerPod"),
    ],
)
def test_capacity_parameters_are_checked_when_the_playbook_loads(to_forecast: dict[str, Any], why: str):
    with pytest.raises(ParamsError, match=why):
        request({"toForecast": to_forecast})


@pytest.mark.parametrize(
    ("to_forecast", "why"),
    [
        (
            {"capacityPerPod": 5.0e-324},
            "scale.toForecast.capacityPerPod: Value error, expected 'measured' or a number of at least "
            "1e-06, got 5e-324",
        ),
        (
            {"fallbackCapacityPerPod": 1e-9},
            "scale.toForecast.fallbackCapacityPerPod: Input should be greater than or equal to 0.000001",
        ),
        ({"capacityPerPod": float("inf")}, "expected 'measured' or a number of at least 1e-06, got inf"),
    ],
)
def test_a_capacity_that_divides_a_forecast_to_infinity_is_refused_at_load(
    to_forecast: dict[str, Any], why: str
):
    with pytest.raises(ParamsError) as caught:
        request({"toForecast": to_forecast})
    assert why in str(caught.value)


@pytest.mark.parametrize(
    ("params", "signal", "capacity"),
    [
        ({"capacityPerPod": "measured"}, 400.0, 5e-324),  # a measurement the playbook cannot bound
        ({"capacityPerPod": 1e-6, "headroom": 10}, 1e303, None),  # a forecast near the float limit
        ({"value": 1.7e308, "capacityPerPod": 1e-6}, None, None),
    ],
)
def test_a_forecast_needing_infinitely_many_replicas_is_a_refused_action(
    params: dict[str, Any], signal: float | None, capacity: float | None
):
    r = request({"toForecast": params}, signal=signal, capacity=capacity)
    with pytest.raises(ActionRefused, match="per pod is not a finite number of replicas"):
        decide(r.params, r, current=2)


def test_contradicting_bounds_and_absolute_counts_outside_them_are_refused():
    r = request({"by": 1, "minReplicas": 5}, Limits(max_replicas=3))
    with pytest.raises(ActionRefused, match="minReplicas 5 > maxReplicas 3"):
        decide(r.params, r, current=2)
    r = request({"replicas": 1}, Limits(min_replicas=2))
    with pytest.raises(ActionRefused, match="refused, not clamped"):
        decide(r.params, r, current=2)
    with pytest.raises(ValueError, match="max_step must be >= 1"):
        Limits(max_step=0)


# ---------------------------------------------------------------- state, names


def test_executed_keys_are_bounded_and_long_keys_stored_as_digests():
    obj: dict[str, Any] = {"metadata": {"annotations": {}}}
    for i in range(MAX_KEYS + 5):
        obj["metadata"]["annotations"][EXECUTED_KEYS] = with_key(obj, f"k{i}")
    assert executed_keys(obj) == [f"k{i}" for i in range(5, MAX_KEYS + 5)]
    assert not was_executed(obj, "k0")
    long_key = "x" * 1000
    assert stored_key(long_key).startswith("sha256:")
    obj["metadata"]["annotations"][EXECUTED_KEYS] = with_key(obj, long_key)
    assert was_executed(obj, long_key)
    assert executed_keys({"metadata": {"annotations": {EXECUTED_KEYS: "not json"}}}) == []


def test_label_selectors():
    assert (
        check_selector("s", "app=web, tier in (a,b), !canary, env") == "app=web, tier in (a,b), !canary, env"
    )
    with pytest.raises(ValueError, match="needs at least one value"):
        check_selector("s", "tier in ()")
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "t", "operator": "In", "values": ["b", "a"]}],
    }
    assert selector_from_label_selector(selector) == "app=web,t in (a,b)"


def test_job_names_fit_63_characters():
    name = job_name("a" * 52, "0123456789abcdef")
    assert name == "a" * 48 + "-aiops-01234567"
    assert len(name) == 63
    assert job_name("train.x-", "ffffffff") == "train.x-aiops-ffffffff"


def test_api_failures_map_to_one_class_each():
    from kubernetes.client.exceptions import ApiException

    from remediations import AlreadyExistsError, ConflictError, InvalidError, ObjectRef, ServerError
    from remediations.kube import error_from_api

    def api_error(code: int, reason: str, headers: dict[str, str] | None = None) -> ApiException:
        error = ApiException(status=code, reason=reason)
        error.body = f'{{"kind":"Status","reason":"{reason}","message":"m"}}'
        error.headers = headers or {}
        return error

    ref = ObjectRef("Job", "ml", "train")
    assert isinstance(error_from_api("create", ref, api_error(409, "AlreadyExists")), AlreadyExistsError)
    conflict = error_from_api("patch", ref, api_error(409, "Conflict"))
    assert isinstance(conflict, ConflictError)
    assert conflict.retryable
    assert isinstance(error_from_api("create", ref, api_error(422, "Invalid")), InvalidError)
    busy = error_from_api("get", ref, api_error(503, "ServiceUnavailable", {"Retry-After": "2"}))
    assert isinstance(busy, ServerError)
    assert busy.delay == 2.0
    assert str(busy) == "get Job ml/train: server error: m (HTTP 503 ServiceUnavailable)"
