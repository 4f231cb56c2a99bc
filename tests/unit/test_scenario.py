"""Scenario files: the shipped ones are valid; bad ones get located errors before anything runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.playbook.loader import load_paths
from agent.yamlloc import YamlValidationError
from simulations.replay import autoscaled_services
from simulations.result import AGENT, HPA, NO_AGENT, POLICIES, STATIC
from simulations.runner import SHIPPED_PLAYBOOKS, SHIPPED_SCENARIOS, RunSettings, load_all
from simulations.scenario import SurgeFault, load_scenario, parse_scenario
from simulations.workload import offered_load, surge_factor

RNG = np.random.default_rng(0)

PLAYBOOKS = [p.name for p in load_paths([SHIPPED_PLAYBOOKS]).playbooks]

BASE = """\
apiVersion: aiops/v1
kind: Scenario
metadata: {name: s}
spec:
  duration: 2h
  playbooks: [rollback-on-error-spike]
  services:
    - name: checkout
      traffic: {base: 100}
    - name: recommender
      model: {name: ranker}
  faults:
FAULTS
"""


def errors_of(text: str, tmp: Path | None = None) -> list[str]:
    with pytest.raises(YamlValidationError) as info:
        parse_scenario(text, "s.yaml", base=tmp, playbook_names=PLAYBOOKS)
    return [str(e) for e in info.value.errors]


def with_faults(*lines: str) -> str:
    return BASE.replace("FAULTS", "\n".join(f"    - {line}" for line in lines) or "    []")


def test_every_shipped_scenario_is_valid() -> None:
    paths = sorted(SHIPPED_SCENARIOS.glob("*.yaml"))
    assert len(paths) >= 7
    kinds: set[str] = set()
    for path in paths:
        scenario = load_scenario(path, playbook_names=PLAYBOOKS)
        assert scenario.spec.services
        kinds |= {f.type for f in scenario.spec.faults}
    assert kinds == {"rollout", "surge", "drift"}


@pytest.mark.parametrize("value", ["0", "101", "70.5", "high"])
def test_a_services_hpa_target_is_a_whole_percentage(value: str) -> None:
    text = BASE.replace("FAULTS", "    []").replace(
        "- name: checkout\n", f"- name: checkout\n      hpaTargetCPU: {value}\n"
    )
    (error,) = errors_of(text)
    assert "s.yaml:9" in error
    assert "hpaTargetCPU" in error


def test_a_valid_scenario_parses() -> None:
    scenario = parse_scenario(
        with_faults("{type: rollout, service: checkout, at: 1h, version: v2, errorRatio: 0.1}"),
        "s.yaml",
        playbook_names=PLAYBOOKS,
    )
    assert scenario.spec.duration == 7200.0
    assert scenario.spec.faults[0].at == 3600.0


def test_a_service_has_an_hpa_under_the_agent_unless_it_says_hpa_false() -> None:
    """A Deployment that serves requests has an HPA in most clusters; a scenario says when not."""
    model = "      model: {name: ranker}"
    text = with_faults().replace(model, model + "\n      hpa: false")
    services = parse_scenario(text, "s.yaml", playbook_names=PLAYBOOKS).spec.services
    assert [s.hpa for s in services] == [True, False]
    autoscaled = {policy: [s.name for s in autoscaled_services(services, policy)] for policy in POLICIES}
    assert autoscaled == {
        AGENT: ["checkout"],
        STATIC: ["checkout"],
        HPA: ["checkout", "recommender"],
        NO_AGENT: [],
    }


def test_unknown_service_is_located() -> None:
    errors = errors_of(with_faults("{type: rollout, service: nope, at: 1h, version: v2}"))
    assert errors == [
        "s.yaml:13:32: spec.faults[0].service: unknown service 'nope'; known: ['checkout', 'recommender']"
    ]


def test_unknown_fault_type_is_located() -> None:
    (error,) = errors_of(with_faults("{type: meteor, service: checkout, at: 1h}"))
    assert error.startswith("s.yaml:13:7: spec.faults[0]")
    assert "meteor" in error


def test_unknown_playbook_is_located() -> None:
    text = with_faults("{type: surge, service: checkout, at: 1h, factor: 2}").replace(
        "[rollback-on-error-spike]", "[rollback-on-error-spike, no-such-playbook]"
    )
    (error,) = errors_of(text)
    assert error.startswith("s.yaml:6:40: spec.playbooks[1]: unknown playbook 'no-such-playbook'")


def test_two_rollouts_of_one_service_at_once_collide() -> None:
    (error,) = errors_of(
        with_faults(
            "{type: rollout, service: checkout, at: 1h, version: v2}",
            "{type: rollout, service: checkout, at: 1h, version: v3}",
        )
    )
    assert error == (
        "s.yaml:14:46: spec.faults[1].at: overlaps faults[0]: two rollouts of checkout at the same time"
    )


def test_overlapping_surges_and_drifts_collide() -> None:
    errors = errors_of(
        with_faults(
            "{type: surge, service: checkout, at: 1h, factor: 2, rise: 10m, hold: 30m}",
            "{type: surge, service: checkout, at: 1h20m, factor: 3}",
            "{type: drift, service: recommender, at: 10m}",
            "{type: drift, service: recommender, at: 50m}",
            "{type: drift, service: checkout, at: 50m}",
        )
    )
    assert any("spec.faults[1].at: overlaps faults[0]: one surge at a time" in e for e in errors)
    assert any(
        "spec.faults[3].at: overlaps faults[2]: recommender's inputs already drift" in e for e in errors
    )
    assert any("spec.faults[4].service: checkout serves no model to drift" in e for e in errors)


def test_fault_after_the_end_and_bad_fields() -> None:
    errors = errors_of(with_faults("{type: surge, service: checkout, at: 3h, factor: 0.5, color: red}"))
    assert any("spec.faults[0].factor" in e and "greater than 1" in e for e in errors)
    assert any("spec.faults[0].color: unknown field" in e for e in errors)


def trace_scenario(traffic: str = "{trace: trace.csv}", warmup: str = "0s") -> str:
    text = with_faults().replace("traffic: {base: 100}", f"traffic: {traffic}")
    return text.replace("  duration: 2h\n", f"  duration: 2h\n  warmup: {warmup}\n")


def test_trace_with_a_gap_is_located(tmp_path: Path) -> None:
    rows = [f"{t},{100 + t % 7}" for t in range(0, 7200 + 15, 15) if not 3000 <= t < 3600]
    (tmp_path / "trace.csv").write_text("seconds,rps\n" + "\n".join(rows) + "\n")
    (error,) = errors_of(trace_scenario(), tmp_path)
    assert error.startswith(
        "s.yaml:10:24: spec.services[0].traffic.trace: trace 'trace.csv' has a gap of 615 s after row 200 "
        "(more than twice its typical interval of 15 s and more than 300 s) within the warm-up and the run"
    )


def test_a_gap_where_the_replay_does_not_read_the_trace_is_no_error(tmp_path: Path) -> None:
    """Rows missing an hour before the warm-up starts do not refuse the trace; the same hole
    inside the warm-up does."""
    rows = [f"{t},{100 + t % 7}" for t in range(0, 4 * 3600 + 15, 15) if not 600 <= t < 4200]
    (tmp_path / "trace.csv").write_text("\n".join(rows) + "\n")
    text = trace_scenario("{trace: {file: trace.csv, start: 1h30m}}", warmup="20m")
    scenario = parse_scenario(text, "s.yaml", base=tmp_path, playbook_names=PLAYBOOKS)
    times, _ = scenario.traces["checkout"]
    assert times[0] == -5400.0
    (error,) = errors_of(trace_scenario("{trace: {file: trace.csv, start: 1h30m}}", warmup="1h"), tmp_path)
    assert "has a gap of 3615 s after row 40 " in error


def test_a_per_second_trace_missing_a_few_minutes_is_interpolated(tmp_path: Path) -> None:
    """Up to 300 s of missing rows (Prometheus' default lookback) are read across, even where that
    is far more than twice the trace's own interval; 301 s is not."""
    for hole, refused in ((300, False), (301, True)):
        rows = [f"{t},{t // 60}" for t in range(0, 7300) if not 1000 < t < 1000 + hole]
        (tmp_path / "trace.csv").write_text("\n".join(rows) + "\n")
        if refused:
            (error,) = errors_of(trace_scenario(), tmp_path)
            assert (
                f"has a gap of {hole} s after row 1001 (more than twice its typical interval of 1 s" in error
            )
            continue
        scenario = parse_scenario(trace_scenario(), "s.yaml", base=tmp_path, playbook_names=PLAYBOOKS)
        times, values = scenario.traces["checkout"]
        assert np.interp(1150.0, times, values) == pytest.approx(16 + (21 - 16) * 150 / 300)


def test_trace_is_read(tmp_path: Path) -> None:
    rows = [f"{t},{100 + t % 7}" for t in range(0, 7200 + 15, 15)]
    (tmp_path / "trace.csv").write_text("\n".join(rows) + "\n")
    scenario = parse_scenario(trace_scenario(), "s.yaml", base=tmp_path, playbook_names=PLAYBOOKS)
    times, values = scenario.traces["checkout"]
    assert times.size == 481
    assert values[1] == 100 + 15 % 7


def test_a_per_minute_trace_with_timestamps_is_scaled_and_its_past_is_the_warm_up(tmp_path: Path) -> None:
    """Rows as coarse as the data (per minute, ISO times), scaled to requests/s; the warm-up is the
    rows before the start, never the scenario's own future."""
    rows = [f"2024-11-15 {h:02d}:{m:02d}:00,{h * 60 + m}" for h in range(24) for m in range(60)]
    (tmp_path / "trace.csv").write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    text = trace_scenario("{trace: {file: trace.csv, start: 10h, scale: 0.5}}", warmup="6h")
    scenario = parse_scenario(text, "s.yaml", base=tmp_path, playbook_names=PLAYBOOKS)
    times, values = scenario.traces["checkout"]
    assert times[0] == -36000.0  # seconds from the start
    assert times[-1] == 14 * 3600 - 60
    start = int(np.searchsorted(times, 0.0))
    assert values[start] == 0.5 * 600  # the row at 10:00, scaled
    service = scenario.spec.services[0]
    load = offered_load(service, scenario, scenario.start + np.array([-6 * 3600.0, -30.0, 90.0]), RNG)
    # no noise in this check: noise 0.04 is the default, so compare within it
    np.testing.assert_allclose(load, [0.5 * 240, 0.5 * 599.5, 0.5 * 601.5], rtol=0.2)


def test_a_trace_too_short_for_the_warm_up_names_the_rows_missing(tmp_path: Path) -> None:
    rows = [f"{t},{100}" for t in range(0, 7200 + 60, 60)]
    (tmp_path / "trace.csv").write_text("\n".join(rows) + "\n")
    (error,) = errors_of(trace_scenario("{trace: {file: trace.csv, start: 30m}}", warmup="1h"), tmp_path)
    assert "the warm-up needs -3600..0 s: about 30 rows missing before its first row" in error
    (error,) = errors_of(trace_scenario("{trace: {file: trace.csv, start: 1h}}", warmup="1h"), tmp_path)
    assert "the run needs 0..7200 s: about 60 rows missing after its last row" in error


def test_missing_trace_and_bad_rows(tmp_path: Path) -> None:
    text = trace_scenario("{trace: none.csv}")
    (error,) = errors_of(text, tmp_path)
    assert "cannot read trace 'none.csv'" in error
    (tmp_path / "bad.csv").write_text("0,1\n15,x\n")
    (error,) = errors_of(text.replace("none.csv", "bad.csv"), tmp_path)
    assert "bad.csv:2: expected time,value" in error


def test_run_refuses_every_bad_file_before_replaying(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(with_faults())
    bad = tmp_path / "bad.yaml"
    bad.write_text(with_faults("{type: rollout, service: ghost, at: 1h, version: v2}"))
    import io

    err = io.StringIO()
    assert load_all(RunSettings(scenarios=[good, bad]), err) is None
    assert "bad.yaml:13:32: spec.faults[0].service: unknown service 'ghost'" in err.getvalue()
    err = io.StringIO()
    assert load_all(RunSettings(scenarios=[good], policies=["agent", "magic"]), err) is None
    assert "unknown ['magic']" in err.getvalue()


def test_surge_factor_shape() -> None:
    fault = SurgeFault(type="surge", service="x", at=100.0, factor=3.0, rise=100.0, hold=100.0, fall=100.0)
    t = np.array([0.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0, 400.0, 500.0])
    assert surge_factor(fault, t).tolist() == [1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 2.0, 1.0, 1.0]
    daily = fault.model_copy(update={"daily": True})
    assert surge_factor(daily, t - 86400.0).tolist() == surge_factor(fault, t).tolist()


def test_a_shipped_scenario_is_named_by_its_name_and_an_unknown_name_lists_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main
    from simulations.runner import scenario_paths, shipped_scenarios

    monkeypatch.chdir(tmp_path)  # no file called bad-rollout here
    assert scenario_paths([Path("bad-rollout")]) == [SHIPPED_SCENARIOS / "bad-rollout.yaml"]
    names = shipped_scenarios()
    assert "bad-rollout" in names
    assert names == sorted(p.stem for p in SHIPPED_SCENARIOS.glob("*.yaml"))
    # a file of that name in the working directory wins over the shipped one
    (tmp_path / "bad-rollout").write_text("")
    assert scenario_paths([Path("bad-rollout")]) == [Path("bad-rollout")]
    assert main(["replay", "bad-rolout", "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        "error: bad-rolout: no such scenario file, and no shipped scenario of that name; "
        f"shipped: {', '.join(names)}\n"
    )
