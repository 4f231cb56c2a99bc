"""Replays of the shipped scenarios, closed loop against the twin cluster over HTTP.

Each scenario's expected outcome is asserted end to end, the same scenario and seed give the same
summary JSON byte for byte, and a replay through the real broker (the agent's Kafka source in a
consumer group) takes the same actions as the in-process one.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from agent.playbook.loader import load_paths
from simulations.replay import ReplayOptions, replay
from simulations.report import dumps_json
from simulations.result import AGENT, HPA, NO_AGENT, STATIC, ScenarioResult
from simulations.runner import SHIPPED_PLAYBOOKS, SHIPPED_SCENARIOS, STATIC_PLAYBOOKS
from simulations.scenario import load_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PLAYBOOKS = load_paths([SHIPPED_PLAYBOOKS])
STATIC_SET = load_paths([STATIC_PLAYBOOKS])


def run(name: str, *policies: str, kafka: str | None = None) -> ScenarioResult:
    scenario = load_scenario(
        SHIPPED_SCENARIOS / f"{name}.yaml", playbook_names=[p.name for p in PLAYBOOKS.playbooks]
    )
    return replay(scenario, ReplayOptions(PLAYBOOKS, STATIC_SET, policies=policies or (AGENT,), kafka=kafka))


@functools.cache
def bad_rollout() -> ScenarioResult:
    """``run("bad-rollout")``, replayed once for the tests that only read it."""
    return run("bad-rollout")


def executed(result: ScenarioResult, policy: str = AGENT) -> list[tuple[str, str]]:
    return [(a.service, a.action) for a in result.runs[policy].actions if a.outcome == "executed"]


def unmet(result: ScenarioResult) -> list[str]:
    return [f"{e.text}: {e.detail}" for e in result.expectations if not e.met]


def test_bad_rollout_is_rolled_back_and_errors_recover() -> None:
    result = run("bad-rollout", AGENT, NO_AGENT, STATIC)
    assert unmet(result) == []
    assert ("checkout", "rollback") in executed(result)
    assert not [a for a in executed(result) if a[0] == "catalog"]
    agent, none, static = (result.runs[p].score for p in (AGENT, NO_AGENT, STATIC))
    assert agent is not None
    assert none is not None
    assert static is not None
    assert none.time_to_mitigate is None  # nobody fixes it without the agent
    assert agent.slo_violation_minutes < static.slo_violation_minutes < none.slo_violation_minutes
    # the rollback happened on the cluster: checkout runs v1 again
    err = result.runs[AGENT].metrics["checkout"]["http_requests_error_ratio"]
    assert err[-40:].max() < 0.02
    # the summary JSON carries the rollback's decision record: why, the diff, the verification
    (record,) = [
        r for r in result.summary()["incidents"][AGENT] if r["playbook"] == "rollback-on-error-spike"
    ]
    assert record["state"] == "resolved"
    assert record["target"]["name"] == "checkout"
    assert "saw" in record["signals"][0]["why"]
    assert "expected" in record["signals"][0]["why"]
    (rollback,) = [a for a in record["actions"] if a["action"] == "rollback"]
    assert rollback["status"] == "executed"
    assert rollback["diff"]
    assert record["verification"]["result"] == "resolved"
    # the fault is removed once no pod runs v2, after the rollback; without the agent never
    (rollback,) = [a for a in result.runs[AGENT].actions if a.action == "rollback"]
    (removed,) = result.runs[AGENT].mitigated
    assert removed is not None
    assert rollback.time < removed < rollback.time + 600
    assert result.runs[NO_AGENT].mitigated == [None]
    # the timeline is causal: the rollback incident's events in the order they happened
    events = result.runs[AGENT].events
    mine = [e for e in events if e.incident == rollback.incident]
    assert [e.state or e.kind for e in mine][:5] == ["pending", "firing", "acting", "action", "action"]
    assert mine[-1].state == "resolved"
    opened = events.index(mine[0])
    assert any(e.kind == "signal" and e.service == "checkout" for e in events[:opened])


def test_noisy_healthy_service_gets_no_action() -> None:
    """Nothing changes on a healthy service. The demand forecast is still acted on when it moves
    (about once an hour here) and once per refresh (its 10-minute horizon) while it stands, and
    each such plan finds the replicas enough: a no-op, audited, no cooldown or budget spent."""
    result = run("noisy-healthy")
    assert unmet(result) == []
    actions = result.runs[AGENT].actions
    assert [a for a in actions if a.outcome != "noop"] == []
    assert all(a.action == "scale" for a in actions)
    assert len(actions) <= 12 * 6 + 12  # 12 hours: one per refresh, and the moves


def test_model_drift_is_retrained_and_accuracy_recovers() -> None:
    result = run("model-drift", AGENT, NO_AGENT)
    assert unmet(result) == []
    assert ("recommender", "retrain") in executed(result)
    accuracy = result.runs[AGENT].metrics["recommender"]["model_accuracy"]
    assert accuracy[-40:].mean() > 0.88
    assert result.runs[NO_AGENT].metrics["recommender"]["model_accuracy"][-40:].mean() < 0.8


def test_memory_leak_is_restarted_before_the_oom_killer() -> None:
    result = run("memory-leak", AGENT, NO_AGENT)
    assert unmet(result) == []
    ooms = [e for e in result.runs[NO_AGENT].events if e.kind == "oom"]
    assert ooms, "without the agent the leak ends in OOM kills"
    assert len([e for e in result.runs[AGENT].events if e.kind == "oom"]) < len(ooms)


def test_traffic_surge_predictive_scaling_against_the_hpa() -> None:
    result = run("traffic-surge", AGENT, HPA)
    agent, hpa = result.runs[AGENT].score, result.runs[HPA].score
    assert agent is not None
    assert hpa is not None
    assert unmet(result) == [], (agent, hpa)
    assert agent.slo_violation_minutes < hpa.slo_violation_minutes
    assert agent.replica_hours <= hpa.replica_hours
    assert ("frontend", "scale") in executed(result)


def test_cpu_saturation_is_scaled_ahead() -> None:
    result = run("cpu-saturation", AGENT, NO_AGENT)
    assert unmet(result) == []


def test_two_faults_each_get_their_fix() -> None:
    result = run("two-faults")
    assert unmet(result) == []
    assert ("checkout", "rollback") in executed(result)
    assert ("cart", "restart") in executed(result)


def test_same_scenario_and_seed_give_identical_summary_json() -> None:
    first = dumps_json(bad_rollout().summary())
    second = dumps_json(run("bad-rollout").summary())  # a replay of its own, not the shared one
    assert first == second


def test_through_the_broker_the_agent_takes_the_same_actions(kafka_bootstrap: str) -> None:
    local = bad_rollout()
    remote = run("bad-rollout", kafka=kafka_bootstrap)
    key = [(a.time, a.service, a.action, a.outcome) for a in local.runs[AGENT].actions]
    assert key == [(a.time, a.service, a.action, a.outcome) for a in remote.runs[AGENT].actions]
    assert dumps_json(local.summary()) == dumps_json(remote.summary())


def test_a_slow_rollout_is_rolled_back_where_more_pods_do_not_help() -> None:
    result = run("slow-rollout", AGENT, HPA)
    assert unmet(result) == []
    assert ("checkout", "rollback") in executed(result)
    assert not [a for a in executed(result) if a[0] == "catalog"]
    agent, hpa = (result.runs[p].score for p in (AGENT, HPA))
    assert agent is not None
    assert hpa is not None
    assert hpa.time_to_mitigate is None  # the HPA adds pods; the version stays slow
    assert agent.slo_violation_minutes * 10 < hpa.slo_violation_minutes


def test_shipped_scenarios_exist() -> None:
    assert len(list(Path(SHIPPED_SCENARIOS).glob("*.yaml"))) >= 7


def test_several_seeds_report_each_policys_mean_and_range(tmp_path: Path) -> None:
    """`aiops replay --seeds 2`: two draws of the noise, a mean and range per policy, and the
    expectations judged on each seed."""
    import io
    import json

    from simulations.runner import RunSettings
    from simulations.runner import run as run_replay

    scenario = tmp_path / "short.yaml"
    scenario.write_text(
        (SHIPPED_SCENARIOS / "bad-rollout.yaml").read_text().replace("duration: 4h", "duration: 2h10m")
    )
    out = io.StringIO()
    settings = RunSettings(
        scenarios=[scenario], policies=[AGENT, NO_AGENT], seeds=2, report=tmp_path / "r", progress=False
    )
    code = run_replay(settings, out, io.StringIO())
    text = out.getvalue()
    assert code == 0, text
    assert "mean (min-max) over seeds" in text
    assert "2/2 seeds met" in text
    (summary,) = json.loads((tmp_path / "r" / "seeds.json").read_text())
    assert summary["seeds"] == [11, 12]
    assert [e["met"] == e["of"] for e in summary["expectations_met"]] == [True, True]
    untreated = summary["policies"][NO_AGENT]["slo_violation_minutes"]
    treated = summary["policies"][AGENT]["slo_violation_minutes"]
    assert untreated["min"] <= untreated["mean"] <= untreated["max"]
    assert untreated["max"] > untreated["min"]  # two seeds, two draws of the noise
    assert treated["max"] < untreated["min"]  # the rollback helps on every seed
