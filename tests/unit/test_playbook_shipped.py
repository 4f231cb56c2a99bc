"""Each shipped playbook, rehearsed on recorded signals the way `aiops playbook test` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.playbook.actions import ScaleParams
from agent.playbook.events import IncidentEvent
from agent.playbook.loader import PlaybookSet, load_paths
from agent.playbook.rehearsal import Record, RecordedFact, RecordedSignal, Rehearsal, rehearse
from remediations.types import Target

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def shipped() -> PlaybookSet:
    return load_paths([PLAYBOOKS])


def sig(
    at: float,
    kind: str,
    metric: str,
    score: float = 0.995,
    value: float = 1.0,
    details: dict[str, Any] | None = None,
    **labels: str,
) -> RecordedSignal:
    return RecordedSignal.model_validate(
        {
            "kind": kind,
            "metric": metric,
            "labels": labels,
            "timestamp": T0 + at,
            "score": score,
            "value": value,
            "details": details or {},
        }
    )


def series(start: float, stop: float, step: float, **kw: Any) -> list[Record]:
    out: list[Record] = []
    t = start
    while t <= stop:
        out.append(sig(t, **kw))
        t += step
    return out


def rollout(at: float, namespace: str, name: str) -> RecordedFact:
    return RecordedFact.model_validate(
        {
            "fact": "rollout",
            "target": {"kind": "Deployment", "namespace": namespace, "name": name},
            "timestamp": T0 + at,
        }
    )


def ran(r: Rehearsal) -> list[tuple[float, str, str, Target]]:
    return [(q.time - T0, q.playbook, q.action, q.target) for q in r.ran()]


CHECKOUT = Target("Deployment", "shop", "checkout")
ERRORS = {
    "kind": "anomaly",
    "metric": "http_requests_error_ratio",
    "namespace": "shop",
    "deployment": "checkout",
}


def test_rollback_on_an_error_spike_after_a_rollout(shipped: PlaybookSet) -> None:
    records = [rollout(-600, "shop", "checkout"), *series(0, 240, 30, **ERRORS, value=0.2)]
    r = rehearse(shipped, records)
    assert ran(r) == [
        (120, "rollback-on-error-spike", "rollback", CHECKOUT),
        (120, "rollback-on-error-spike", "notify", CHECKOUT),
    ]
    notify = r.ran()[1]
    assert notify.request.params.to_yaml_dict()["webhookEnv"] == "AIOPS_OPS_WEBHOOK"
    assert (
        "Rolled back shop/checkout: error ratio 0.2 after a rollout"
        in notify.request.params.to_yaml_dict()["message"]
    )
    states = [e.state.value for e in r.events if isinstance(e, IncidentEvent) and e.is_transition]
    assert states[-1] == "resolved"


def test_no_rollback_without_a_recent_rollout(shipped: PlaybookSet) -> None:
    r = rehearse(shipped, [rollout(-7200, "shop", "checkout"), *series(0, 240, 30, **ERRORS)])
    assert ran(r) == []
    (held,) = r.held()
    assert held.guardrail == "when.rolloutWithin"
    assert "last rollout 2h2m ago" in held.reason


def test_restart_on_a_memory_leak_before_oom(shipped: PlaybookSet) -> None:
    leak = {
        "kind": "forecast",
        "metric": "container_memory_working_set_ratio",
        "namespace": "shop",
        "deployment": "cart",
        "score": 0.95,
    }
    r = rehearse(shipped, series(0, 900, 60, **leak, value=1.04))
    assert ran(r) == [
        (600, "restart-on-memory-leak", "restart", Target("Deployment", "shop", "cart")),
        (600, "restart-on-memory-leak", "notify", Target("Deployment", "shop", "cart")),
    ]
    assert "forecast 1.04 of the limit" in r.ran()[1].request.params.to_yaml_dict()["message"]


def test_a_short_memory_spike_is_not_a_leak(shipped: PlaybookSet) -> None:
    spike = {
        "kind": "forecast",
        "metric": "container_memory_working_set_ratio",
        "namespace": "shop",
        "deployment": "cart",
    }
    assert ran(rehearse(shipped, series(0, 240, 60, **spike))) == []


@pytest.mark.parametrize("metric", ["http_request_duration_p99_seconds", "container_cpu_usage_ratio"])
def test_scale_out_on_a_latency_or_cpu_anomaly(shipped: PlaybookSet, metric: str) -> None:
    r = rehearse(
        shipped, series(0, 300, 30, kind="anomaly", metric=metric, namespace="shop", deployment="search")
    )
    search = Target("Deployment", "shop", "search")
    # scaled at 180; the last signal at 300, 5m quiet: resolved at 600, the raise released 10m later
    assert ran(r) == [
        (180, "scale-out-on-latency", "scale", search),
        (1200, "scale-out-on-latency", "scale", search),
    ]
    req, release = r.ran()
    assert req.request.params.to_yaml_dict() == {"by": 2}
    assert (req.request.restore, release.request.restore) == (False, True)
    g = req.request.limits
    assert (g.min_replicas, g.max_replicas, g.max_step) == (2, 20, 4)


def test_scale_ahead_of_forecast_demand(shipped: PlaybookSet) -> None:
    demand = {
        "kind": "forecast",
        "metric": "http_requests_per_second",
        "namespace": "shop",
        "deployment": "web",
    }
    details = {"forecast_mean": 400.0, "capacity_per_pod": 50.0}
    r = rehearse(shipped, [sig(0, **demand, score=0.9, value=600.0, details=details)])
    assert ran(r) == [(0, "scale-ahead-of-forecast", "scale", Target("Deployment", "shop", "web"))]
    req = r.ran()[0]
    assert (req.request.signal.value, req.request.signal.mean) == (600.0, 400.0)
    assert req.request.signal.capacity == 50.0  # measured by the forecast detector, not in the playbook
    params = req.request.params
    assert isinstance(params, ScaleParams)
    assert params.to_forecast is not None
    assert params.to_forecast.capacity(req.request) == (50.0, "50 per pod (measured)")
    assert (
        params.to_forecast.replicas(600.0, 50.0) == 15
    )  # ceil(600 x 1.25 / 50): at most 80 % busy at the bound
    assert params.to_forecast.sized_on(req.request, hpa=False) == 600.0  # alone: the bound
    assert params.to_forecast.sized_on(req.request, hpa=True) == 400.0  # under an HPA: the point forecast
    states = [e.state.value for e in r.events if isinstance(e, IncidentEvent) and e.is_transition]
    assert states == ["pending", "firing", "acting", "resolved"]  # verify.clears: false


def test_retrain_a_model_on_drift(shipped: PlaybookSet) -> None:
    drift = {
        "kind": "drift",
        "metric": "model_prediction_psi",
        "namespace": "ml",
        "model": "churn",
        "score": 0.99,
    }
    r = rehearse(shipped, series(0, 1500, 300, **drift))
    assert ran(r)[0] == (900, "retrain-on-drift", "retrain", Target("CronJob", "ml", "train-churn"))
    assert r.ran()[0].request.params.to_yaml_dict() == {"model": "churn"}
    assert [q.action for q in r.ran()] == ["retrain", "notify"]


def test_retrain_on_an_accuracy_drop(shipped: PlaybookSet) -> None:
    drop = {"kind": "drift", "metric": "model_accuracy", "namespace": "ml", "model": "fraud", "score": 0.999}
    r = rehearse(shipped, series(0, 1200, 300, **drop))
    assert ran(r)[0] == (900, "retrain-on-drift", "retrain", Target("CronJob", "ml", "train-fraud"))


def test_a_model_label_that_is_not_a_name_never_reaches_a_job(shipped: PlaybookSet) -> None:
    bad = {
        "kind": "drift",
        "metric": "model_accuracy",
        "namespace": "ml",
        "model": "../../etc",
        "score": 0.999,
    }
    r = rehearse(shipped, series(0, 1200, 300, **bad))
    assert ran(r) == []  # the trigger's matcher only accepts name-shaped model labels


def test_the_rollback_acts_and_scale_out_may_only_scale_up_meanwhile(shipped: PlaybookSet) -> None:
    latency = {
        "kind": "anomaly",
        "metric": "http_request_duration_p99_seconds",
        "namespace": "shop",
        "deployment": "checkout",
    }
    records = [
        rollout(-600, "shop", "checkout"),
        *series(0, 400, 30, **ERRORS),
        *series(60, 400, 30, **latency),
    ]
    r = rehearse(shipped, records)
    acted = [(t, p, a) for t, p, a, _ in ran(r)]
    assert acted[:3] == [
        (120, "rollback-on-error-spike", "rollback"),
        (120, "rollback-on-error-spike", "notify"),
        (240, "scale-out-on-latency", "scale"),
    ]
    scale = r.ran()[2]
    assert scale.request.limits.scale_down is False, "a fix is open on the target: capacity only goes up"
    assert not [e for e in r.held() if e.playbook == "rollback-on-error-spike"]


LATENCY = {
    "kind": "anomaly",
    "metric": "http_request_duration_p99_seconds",
    "namespace": "shop",
    "deployment": "checkout",
}
SATURATED = {
    "kind": "threshold",
    "metric": "container_cpu_usage_ratio",
    "namespace": "shop",
    "deployment": "checkout",
    "score": 1.0,
}


def test_rollback_on_a_latency_regression_after_a_rollout(shipped: PlaybookSet) -> None:
    records = [rollout(-600, "shop", "checkout"), *series(0, 300, 30, **LATENCY, value=0.9)]
    r = rehearse(shipped, records)
    fixes = [x for x in ran(r) if x[1] == "rollback-on-latency-regression"]
    assert fixes == [
        (180, "rollback-on-latency-regression", "rollback", CHECKOUT),
        (180, "rollback-on-latency-regression", "notify", CHECKOUT),
    ]
    notify = next(
        q for q in r.ran() if (q.playbook, q.action) == ("rollback-on-latency-regression", "notify")
    )
    message = notify.request.params.to_yaml_dict()["message"]
    assert "p99 latency 0.9s after a rollout, with the pods not saturated" in message


def test_latency_while_the_pods_are_saturated_is_the_load_not_the_version(shipped: PlaybookSet) -> None:
    # saturated until 240: the rollback waits for 5 minutes without saturation; scaling does not
    # (its raise is released once its incident resolved, at 1500)
    records = [
        rollout(-600, "shop", "checkout"),
        *series(0, 600, 30, **LATENCY),
        *series(0, 240, 30, **SATURATED),
    ]
    r = rehearse(shipped, sorted(records, key=lambda x: x.timestamp))
    assert [x for x in ran(r) if x[2] != "notify"] == [
        (180, "scale-out-on-latency", "scale", CHECKOUT),
        (540, "rollback-on-latency-regression", "rollback", CHECKOUT),
        (1500, "scale-out-on-latency", "scale", CHECKOUT),
    ]
    held = [e for e in r.held() if e.playbook == "rollback-on-latency-regression"]
    assert [e.guardrail for e in held] == ["when.withoutSignal"]
    assert "no threshold signal on container_cpu_usage_ratio for the target" in held[0].reason


def test_saturation_that_outlasts_the_latency_means_no_rollback(shipped: PlaybookSet) -> None:
    records = [
        rollout(-600, "shop", "checkout"),
        *series(0, 300, 30, **LATENCY),
        *series(0, 300, 30, **SATURATED),
    ]
    r = rehearse(shipped, sorted(records, key=lambda x: x.timestamp))
    assert "rollback" not in {x[2] for x in ran(r)}
