"""Several seeds of one scenario: the seeds used, the spread of each score, and the verdict."""

from __future__ import annotations

import pytest

from simulations.result import Expectation, PolicyRun, ScenarioResult, Score
from simulations.runner import SHIPPED_SCENARIOS
from simulations.scenario import load_scenario
from simulations.seeds import SeedSummary, format_seeds, seeds_of, with_seed


def result(seed: int, slo: float, met: bool) -> ScenarioResult:
    run = PolicyRun.__new__(PolicyRun)
    object.__setattr__(run, "score", Score(None, None, slo, 0.1, 0, 2, 10.0 + seed))
    return ScenarioResult(
        "s", "", seed, 0.0, 60.0, 15.0, ["web"], [], {"agent": run}, [Expectation("x", met, "")]
    )


def test_seeds_are_the_scenarios_own_and_the_next_ones() -> None:
    scenario = load_scenario(SHIPPED_SCENARIOS / "bad-rollout.yaml")
    assert seeds_of(scenario, 3) == [11, 12, 13]
    other = with_seed(scenario, 12)
    assert other.spec.seed == 12
    assert other.spec.services == scenario.spec.services
    with pytest.raises(ValueError, match="expected 1 to 1000, got 0"):
        seeds_of(scenario, 0)
    with pytest.raises(ValueError, match="expected 1 to 1000, got 1001"):
        seeds_of(scenario, 1001)
    assert len(seeds_of(scenario, 1000)) == 1000


def test_a_scenario_passes_only_when_every_seed_does() -> None:
    summary = SeedSummary([result(1, 2.0, True), result(2, 4.0, False), result(3, 6.0, True)])
    assert not summary.passed
    assert SeedSummary([result(1, 2.0, True)]).passed
    slo = summary.figures("agent")["slo_violation_minutes"]
    assert slo == {"mean": 4.0, "sd": 2.0, "min": 2.0, "max": 6.0}
    assert summary.as_dict()["expectations_met"][1] == {"seed": 2, "met": 0, "of": 1}
    table = format_seeds([summary])
    assert "4.0 (2.0-6.0)" in table
    assert "2/3 seeds met" in table
