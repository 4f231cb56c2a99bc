"""`aiops playbook validate | explain | test | schema | status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.playbook.schema import schema_text
from agent.playbook.watcher import PlaybookStatus, write_status

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["playbook", "validate", str(PLAYBOOKS)]) == 0
    out = capsys.readouterr().out
    assert "7 playbook(s) valid in 7 file(s)" in out
    assert f"ok: {PLAYBOOKS / 'rollback-on-error-spike.yaml'}:4: rollback-on-error-spike" in out


def test_validate_errors_exit_1_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((PLAYBOOKS / "scale-out-on-latency.yaml").read_text().replace("for: 3m", "for: soon"))
    assert main(["playbook", "validate", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: {bad}:18:10: spec.trigger.for: expected a duration")
    assert err[-1] == "1 error(s)"


def test_validate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["playbook", "validate", "--json", str(PLAYBOOKS / "retrain-on-drift.yaml")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True
    assert out["playbooks"] == [
        {"name": "retrain-on-drift", "file": str(PLAYBOOKS / "retrain-on-drift.yaml"), "line": 4}
    ]
    dup = tmp_path / "dup.yaml"
    dup.write_text((PLAYBOOKS / "retrain-on-drift.yaml").read_text())
    assert main(["playbook", "validate", "--json", str(PLAYBOOKS), str(dup)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False
    assert out["errors"][0]["field"] == "metadata.name"
    assert out["errors"][0]["file"] == str(dup)


def test_explain_in_plain_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["playbook", "explain", str(PLAYBOOKS / "scale-out-on-latency.yaml")]) == 0
    out = capsys.readouterr().out
    assert "When it fires:" in out
    metrics = "http_request_duration_p99_seconds|container_cpu_usage_ratio"
    assert f"on anomaly signals for metric that matches /{metrics}/ (whole value)" in out
    assert "once such signals have lasted 3m (a silence of 5m starts over)" in out
    assert "1. add 2 replicas" in out
    assert "it is resolved once no matching signal has come for 5m, if that happens within 15m" in out
    assert "cooldown 10m between remediations of one target (from this playbook)" in out
    assert "scaling keeps replicas at least 2 and at most 20, changing by at most 4 at a time" in out


def test_explain_shows_where_the_agent_default_is_stricter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("log: {level: INFO}\n")
    assert (
        main(["playbook", "explain", "--config", str(config), str(PLAYBOOKS / "restart-on-memory-leak.yaml")])
        == 0
    )
    out = capsys.readouterr().out
    assert "cooldown 2h between remediations of one target (from this playbook)" in out
    assert "restart the target's pods, rolling" in out


def test_explain_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["playbook", "explain", "--name", "nope", str(PLAYBOOKS / "retrain-on-drift.yaml")]) == 1
    assert "no playbook named 'nope'" in capsys.readouterr().err


def write_signals(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("# recorded\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    return path


ERRORS = {
    "kind": "anomaly",
    "metric": "http_requests_error_ratio",
    "labels": {"namespace": "shop", "deployment": "checkout"},
    "value": 0.2,
    "score": 0.995,
}


def test_test_prints_which_actions_would_run_and_why_others_did_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[dict[str, object]] = [
        {
            "fact": "rollout",
            "target": {"kind": "Deployment", "namespace": "shop", "name": "checkout"},
            "timestamp": "2024-05-01T09:50:00Z",
        }
    ]
    lines += [{**ERRORS, "timestamp": 1714557600 + 30 * i} for i in range(8)]
    latency = {
        "kind": "anomaly",
        "metric": "http_request_duration_p99_seconds",
        "labels": {"namespace": "shop", "deployment": "checkout"},
        "score": 0.999,
    }
    lines += [{**latency, "timestamp": 1714557600 + 60 + 30 * i} for i in range(8)]
    signals = write_signals(tmp_path / "s.jsonl", lines)
    assert main(["playbook", "test", str(PLAYBOOKS), "--signals", str(signals)]) == 0
    out = capsys.readouterr().out
    # the rollback (corrective) and the scale-out (capacity) both act: a capacity playbook is
    # neither suppressed by a fix nor in its way, and its raise is released after it resolves
    assert "actions that would run: 4" in out
    assert (
        '+12m      rollback Deployment/shop/checkout {"avoidWithin": 86400.0, "healthyFor": 900.0}  '
        "(rollback-on-error-spike)"
    ) in out
    assert '+14m      scale Deployment/shop/checkout {"by": 2}  (scale-out-on-latency)' in out
    assert (
        '+29m30s   scale (release what the incident raised) Deployment/shop/checkout {"by": 2}  '
        "(scale-out-on-latency)"
    ) in out
    assert "pending -> firing" in out


def test_test_json_and_a_failing_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[dict[str, object]] = [
        {
            "fact": "rollout",
            "target": {"kind": "Deployment", "namespace": "shop", "name": "checkout"},
            "timestamp": 0,
        }
    ]
    lines += [{**ERRORS, "timestamp": 60 + 30 * i} for i in range(6)]
    signals = write_signals(tmp_path / "s.jsonl", lines)
    assert (
        main(["playbook", "test", str(PLAYBOOKS), "--signals", str(signals), "--json", "--fail", "rollback"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    statuses = [(a["request"]["action"], a["result"]["status"]) for a in out["actions"]]
    assert statuses == [("rollback", "failed"), ("notify", "executed")]
    assert out["actions"][1]["request"]["step"] == "onFailure[0]"
    assert any(e["state"] == "failed" and e.get("previous") == "acting" for e in out["events"])


def test_test_rejects_bad_signal_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signals = tmp_path / "s.jsonl"
    good = '{"kind": "anomaly", "metric": "m", "timestamp": 1}'
    deep = "[" * 100_000 + "]" * 100_000
    signals.write_text(f"{good}\n{good.replace('anomaly', 'guess')}\nnot json\n{deep}\n")
    assert main(["playbook", "test", str(PLAYBOOKS), "--signals", str(signals)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: {signals}:2:1: kind: Input should be 'anomaly'")
    assert err[1] == f"error: {signals}:3:1: invalid JSON: Expecting value"
    assert err[2] == f"error: {signals}:4:1: invalid JSON: nested too deep"


def test_schema_prints_the_committed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["playbook", "schema"]) == 0
    assert capsys.readouterr().out == schema_text() == (PLAYBOOKS / "schema.json").read_text()


def test_status_ok_and_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "status.json"
    status = PlaybookStatus(
        directory="/etc/aiops/playbooks",
        digest="a" * 64,
        loaded_at=1714557600.0,
        playbooks=["one"],
        checked_at=1714557660.0,
    )
    write_status(path, status)
    assert main(["playbook", "status", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "running:   set aaaaaaaaaaaa loaded 2024-05-01T10:00:00Z: 1 playbook(s)" in out
    assert "state:     ok" in out
    status.rejected_digest = "b" * 64
    status.rejected_at = 1714557700.0
    status.errors = [
        {
            "file": "/etc/aiops/playbooks/a.yaml",
            "line": 7,
            "column": 5,
            "field": "spec.actions[0].restrat",
            "message": "unknown action",
        }
    ]
    write_status(path, status)
    assert main(["playbook", "status", "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert "REJECTED set bbbbbbbbbbbb at 2024-05-01T10:01:40Z, 1 error(s):" in out
    assert "  /etc/aiops/playbooks/a.yaml:7:5: spec.actions[0].restrat: unknown action" in out
    assert main(["playbook", "status", "--file", str(path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["healthy"] is False


def test_status_without_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["playbook", "status", "--file", str(tmp_path / "none.json")]) == 1
    assert "cannot read the playbook status" in capsys.readouterr().err


EXAMPLE_SIGNALS = PLAYBOOKS / "examples" / "error-spike-after-rollout.jsonl"


def test_the_shipped_example_signals_roll_back_after_the_rollout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["playbook", "test", str(PLAYBOOKS), "--signals", str(EXAMPLE_SIGNALS), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    actions = [(a["request"]["action"], a["request"]["target"]["name"]) for a in out["actions"]]
    assert actions == [("rollback", "checkout"), ("notify", "checkout")]
    states = [e["state"] for e in out["events"] if e.get("previous") != e["state"]]
    assert states == ["pending", "firing", "acting", "verifying", "resolved"]
    acted = next(e["time"] for e in out["events"] if e["state"] == "acting")
    assert acted - 1714557600 == 120  # the signals began at 10:00; the playbook's for: 2m


def play_example(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[list[tuple[float, str, str]], Any]:
    """``aiops playbook test`` of a shipped example: the actions other than notify, as (seconds
    after 10:00 on its day, playbook, action), and the whole JSON output."""
    signals = PLAYBOOKS / "examples" / name
    assert main(["playbook", "test", str(PLAYBOOKS), "--signals", str(signals), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    acted = [
        (a["request"]["time"] - 1714557600, a["request"]["playbook"], a["request"]["action"])
        for a in out["actions"]
        if a["request"]["action"] != "notify"
    ]
    return acted, out


def test_the_shipped_leak_example_restarts_then_rolls_back_when_the_leak_comes_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    acted, _ = play_example("leak-back-after-restart.jsonl", capsys)
    # the leak from 10:00: restarted after for: 10m; back at 13:00: rolled back after for: 10m
    assert acted == [
        (600, "restart-on-memory-leak", "restart"),
        (3 * 3600 + 600, "rollback-on-recurring-leak", "rollback"),
    ]


def test_the_shipped_slow_rollout_example_waits_out_the_saturation_then_rolls_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    acted, out = play_example("slow-rollout-under-load.jsonl", capsys)
    # latency from 10:00, saturated until 10:04: scaled at 10:03, rolled back 5m after 10:04
    assert acted[:2] == [
        (180, "scale-out-on-latency", "scale"),
        (540, "rollback-on-latency-regression", "rollback"),
    ]
    fix = "rollback-on-latency-regression"
    held = {e.get("guardrail") for e in out["events"] if e.get("playbook") == fix}
    assert held - {None} == {"when.withoutSignal"}


def test_the_example_signals_without_the_rollout_fact_act_on_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [line for line in EXAMPLE_SIGNALS.read_text().splitlines() if '"fact"' not in line]
    signals = tmp_path / "no-rollout.jsonl"
    signals.write_text("\n".join(lines) + "\n")
    assert main(["playbook", "test", str(PLAYBOOKS), "--signals", str(signals)]) == 0
    out = capsys.readouterr().out
    assert "actions that would run: 0" in out
    assert "when.rolloutWithin" in out


def test_validate_warns_of_a_template_label_the_trigger_does_not_require(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        (PLAYBOOKS / "scale-out-on-latency.yaml")
        .read_text()
        .replace("{{ labels.deployment }}", "{{ labels.deploy }}")
    )
    assert main(["playbook", "validate", str(typo)]) == 0
    captured = capsys.readouterr()
    assert "1 playbook(s) valid in 1 file(s), 1 warning(s)" in captured.out
    (warning,) = captured.err.splitlines()
    assert warning.startswith(
        f"warning: {typo}:22:11: spec.target.name: label 'deploy' is not one the trigger "
    )
    assert warning.endswith("did you mean 'deployment'?")
    assert main(["playbook", "validate", "--json", str(typo)]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["warnings"]
    assert (shown["line"], shown["field"]) == (22, "spec.target.name")
    # a label required with a pattern that accepts "" is not required: a missing label matches it
    loose = tmp_path / "loose.yaml"
    loose.write_text(
        (PLAYBOOKS / "scale-out-on-latency.yaml").read_text().replace('deployment: ".+"', 'deployment: ".*"')
    )
    assert main(["playbook", "validate", str(loose)]) == 0
    assert "label 'deployment' is not one the trigger requires (namespace)" in capsys.readouterr().err


def test_the_shipped_playbooks_have_no_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["playbook", "validate", str(PLAYBOOKS), str(REPO / "examples" / "quickstart" / "playbooks")])
        == 0
    )
    captured = capsys.readouterr()
    assert "8 playbook(s) valid in 8 file(s), 0 warning(s)" in captured.out
    assert captured.err == ""
