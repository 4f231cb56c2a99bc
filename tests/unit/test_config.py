"""Config loading: defaults, located errors, secrets from the environment, and `aiops config check`."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from agent.cli import EXIT_INVALID, EXIT_OK, main
from agent.commands.detect import register as register_detect
from agent.config import AgentConfig, ConfigError, KafkaConnection, load_config
from agent.durations import parse_duration
from agent.playbook.loader import PlaybookLoadError, load_paths
from detectors import SeriesRegistry, build_detector
from detectors.patterns import compile_pattern
from detectors.registry import ALARM_SCORE, DEFAULT, LEARNED
from detectors.streaming import StreamingDetector
from simulations.replay import SHIPPED_CONFIG, replay_guardrails, shipped_config
from simulations.scenario import Spec

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def only_error(path: Path) -> tuple[int, int, str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.errors) == 1, info.value.errors
    e = info.value.errors[0]
    assert e.location.file == str(path)
    return e.location.line, e.location.column, e.field, e.message


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == AgentConfig()


def test_shipped_config_is_valid() -> None:
    config = load_config(REPO / "k8s" / "agent-config.yaml")
    assert config.sources.prometheus is not None
    assert config.sources.prometheus.interval == 15.0
    assert config.sources.prometheus.backfill == 3600.0
    assert config.kafka_signals_enabled


def test_shipped_config_runs_what_replays_run() -> None:
    """A replay shows what the shipped config would do: the replay reads that very file (its
    detectors and guardrails), and its step is the Prometheus source's interval."""
    config = load_config(REPO / "k8s" / "agent-config.yaml")
    assert SHIPPED_CONFIG.resolve() == (REPO / "k8s" / "agent-config.yaml").resolve()
    assert shipped_config() == config
    guardrails = replay_guardrails(config)
    assert config.playbooks.guardrails.dry_run  # the shipped config starts in dry run ...
    assert not guardrails.dry_run  # ... a replay shows the agent acting, with every other guardrail
    assert guardrails.model_dump(exclude={"dry_run", "approval"}) == config.playbooks.guardrails.model_dump(
        exclude={"dry_run", "approval"}
    )
    assert config.sources.prometheus is not None
    assert config.sources.prometheus.interval == Spec.model_fields["step"].default


def test_the_shipped_anomaly_detector_is_the_default_detector_at_the_alarm_level() -> None:
    """One default everywhere: what `aiops detect` runs is what the cluster and the replays run,
    with the cluster's operating point a threshold on the same score."""
    config = load_config(REPO / "k8s" / "agent-config.yaml")
    parser = argparse.ArgumentParser()
    register_detect(parser.add_subparsers())
    detect = parser.parse_args(["detect", "in.csv", "--output", "out.csv"])
    assert (detect.detector, detect.params) == (DEFAULT, None)
    anomaly = [d for d in config.detectors if d.type in LEARNED]
    assert [(d.type, d.params, d.min_score) for d in anomaly] == [(DEFAULT, {}, ALARM_SCORE)]
    series = SeriesRegistry()
    shipped = build_detector(anomaly[0].type, anomaly[0].params, series)
    default = build_detector(DEFAULT, {}, series)
    assert isinstance(shipped, StreamingDetector)
    assert isinstance(default, StreamingDetector)
    assert shipped.params() == default.params()


def test_every_shipped_playbook_is_fed_by_the_shipped_config() -> None:
    """Each playbook's trigger (signal kind, metric) is produced by a query and a detector of the
    shipped config: no playbook waits for a signal the daemon never emits."""
    config = load_config(REPO / "k8s" / "agent-config.yaml")
    assert config.sources.prometheus is not None
    queries = [q.name for q in config.sources.prometheus.queries]
    series = SeriesRegistry()
    detectors = [
        (d.metrics, build_detector(d.type, d.params, series).signal_kind.value) for d in config.detectors
    ]
    patterns = [(None if metrics is None else compile_pattern(metrics), kind) for metrics, kind in detectors]
    kinds = {name: {kind for p, kind in patterns if p is None or p.fullmatch(name)} for name in queries}
    playbooks = sorted((REPO / "playbooks").glob("*.yaml"))
    assert len(playbooks) >= 5
    for path in playbooks:
        trigger = yaml.safe_load(path.read_text())["spec"]["trigger"]
        metric = compile_pattern(trigger["metric"])
        fed = [q for q in queries if metric.fullmatch(q) and trigger["signal"] in kinds[q]]
        assert fed, f"{path.name}: no query gives {trigger['metric']!r} a {trigger['signal']} detector"


def test_wrong_type_names_line_column_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  port: eighty\n")
    line, col, field, message = only_error(path)
    assert (line, col, field) == (2, 9, "http.port")
    assert "integer" in message
    assert "'eighty'" in message


def test_unknown_key_points_at_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  kafka:\n    topics: [a]\n    grup_id: x\n")
    assert only_error(path) == (4, 5, "sources.kafka.grup_id", "unknown field")


def test_missing_required_field(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  prometheus:\n    queries:\n      - name: up\n")
    line, _, field, message = only_error(path)
    assert line == 4
    assert field == "sources.prometheus.queries[0].query"
    assert message == "required field is missing"


def test_bad_duration(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  prometheus:\n    interval: 5 minutes\n")
    line, _, field, message = only_error(path)
    assert (line, field) == (3, "sources.prometheus.interval")
    assert "expected a duration like 30s" in message


def test_invalid_yaml_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  port: [8080\n")
    line, _, _, message = only_error(path)
    assert line == 3
    assert message.startswith("invalid YAML")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  port: 1\n  port: 2\n")
    assert only_error(path) == (3, 3, "http.port", "duplicate key (first defined at line 2)")


def test_detector_params_are_checked_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, "detectors:\n  - type: threshold\n    params:\n      rules: [{metric: m}]\n")
    line, _, field, message = only_error(path)
    assert (line, field) == (4, "detectors[0].params")
    assert "at least one of above, below, max_rate" in message


def test_unknown_detector_type(tmp_path: Path) -> None:
    path = write(tmp_path, "detectors:\n  - type: crystal-ball\n")
    line, _, field, message = only_error(path)
    assert (line, field) == (2, "detectors[0].type")
    assert "unknown detector 'crystal-ball'" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert only_error(write(tmp_path, "- a\n- b\n"))[3] == "expected a mapping at the top, got list"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    _, _, _, message = only_error(path)
    assert message == "file not found"


def test_sasl_needs_a_mechanism(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  security_protocol: SASL_SSL\n")
    line, _, field, message = only_error(path)
    assert (line, field) == (2, "kafka")
    assert "needs sasl_mechanism" in message


def test_secrets_come_from_the_environment() -> None:
    conn = KafkaConnection(
        bootstrap_servers=["b:9093"],
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="aiops",
        sasl_password_env="KAFKA_PW",
        ssl_cafile="/ca.pem",
    )
    kwargs = conn.client_kwargs({"KAFKA_PW": "hunter2"})
    assert kwargs["sasl_plain_password"] == "hunter2"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["ssl_cafile"] == "/ca.pem"
    assert "hunter2" not in repr(conn)
    with pytest.raises(ConfigError, match="KAFKA_PW is not set"):
        conn.client_kwargs({})


def test_bootstrap_servers_accepts_a_comma_list() -> None:
    assert KafkaConnection.model_validate({"bootstrap_servers": "a:1, b:2"}).bootstrap_servers == [
        "a:1",
        "b:2",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        (12, 12.0),
        ("2d", 172800.0),
        ("1w2d3h4m5s6ms", 788645.006),
        (" 1.5h ", 5400.0),
        ("5ms5s", 5.005),
        ("3650d", 3650 * 86400.0),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "m5", "5 m", "-1s", True, -3])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_config_check_cli_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "--offline", str(REPO / "k8s" / "agent-config.yaml")]) == EXIT_OK
    assert ": ok (" in capsys.readouterr().out
    # on this machine the pod's playbook directory is missing: said, with its place in the file
    shipped = REPO / "k8s" / "agent-config.yaml"
    assert main(["config", "check", str(shipped)]) == EXIT_INVALID
    line = next(i for i, text in enumerate(shipped.read_text().splitlines(), 1) if "directory: /etc" in text)
    assert capsys.readouterr().err == (
        f"error: {shipped}:{line}:14: playbooks.directory: /etc/aiops/playbooks does not exist\n"
    )


def test_config_check_reports_fields_detectors_and_the_playbook_directory_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "http:\n  port: eighty\n"
        "detectors:\n  - type: nosuch\n  - type: threshold\n    params: {rules: 3}\n"
        f"playbooks:\n  directory: {tmp_path / 'absent'}\n",
    )
    assert main(["config", "check", str(path)]) == EXIT_INVALID
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in err] == [
        "http.port",
        "detectors[0].type",
        "detectors[1].params",
        "playbooks.directory",
    ], err
    assert err[0].startswith(f"error: {path}:2:9: ")
    assert err[1].startswith(f"error: {path}:4:11: ")
    assert err[3] == f"error: {path}:8:14: playbooks.directory: {tmp_path / 'absent'} does not exist"


def test_config_check_loads_the_playbooks_of_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "bad.yaml").write_text(
        "apiVersion: aiops/v1\nkind: Playbook\nmetadata: {name: x}\nspec: {priority: high}\n"
    )
    path = write(tmp_path, f"playbooks:\n  directory: {books}\n")
    assert main(["config", "check", str(path)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert f"error: {books / 'bad.yaml'}:4:" in err
    (books / "bad.yaml").unlink()
    assert main(["config", "check", str(path)]) == EXIT_OK


def test_config_check_cli_reports_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "http:\n  port: -1\nlog:\n  format: xml\n")
    assert main(["config", "check", str(path)]) == EXIT_INVALID
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: {path}:2:9: http.port: ")
    assert err[1].startswith(f"error: {path}:4:11: log.format: ")


def test_config_check_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bogus: 1\n")
    assert main(["config", "check", "--json", str(path)]) == EXIT_INVALID
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False
    assert out["errors"] == [
        {"file": str(path), "line": 1, "column": 1, "field": "bogus", "message": "unknown field"}
    ]


def test_run_with_missing_config_exits_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(tmp_path / "absent.yaml")]) == EXIT_INVALID
    assert "file not found" in capsys.readouterr().err


def test_a_32_mb_config_is_refused_before_it_is_parsed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as fh:  # a valid-looking document whose parse alone took minutes
        fh.write("detectors:\n  - type: threshold\n    params: {rules: [")
        fh.write("{metric: m, above: 1}, " * (32 * 1024 * 1024 // 23))
        fh.write("]}\n")
    assert path.stat().st_size > 32_000_000
    started = time.perf_counter()
    assert main(["config", "check", str(path)]) == EXIT_INVALID
    assert time.perf_counter() - started < 2.0
    out = capsys.readouterr()
    assert f"{path}:1:1: file is 32.0 MiB, larger than the 1.0 MiB limit; refused unread" in out.out + out.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"aiops {version('aiops-agent')}\n"


def test_the_committed_configuration_reference_is_the_generated_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "reference"]) == EXIT_OK
    generated = capsys.readouterr().out
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == generated, (
        "docs/configuration.md is stale: aiops config reference > docs/configuration.md"
    )


def test_the_reference_names_every_field_with_its_default() -> None:
    from agent.config import AgentConfig, ExecutorConfig
    from agent.config_reference import reference_markdown

    text = reference_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    fields = {line.split("`")[1] for line in rows}
    for name in AgentConfig.model_fields["http"].annotation.model_fields:  # type: ignore[union-attr]
        assert f"http.{name}" in fields
    for name in ExecutorConfig.model_fields:
        # a nested model (executor.approvals) is a section of its own fields
        assert f"executor.{name}" in fields or any(f.startswith(f"executor.{name}.") for f in fields), name
    assert "executor.approvals.store" in fields
    assert "sources.prometheus.queries[].name" in fields
    assert "| `playbooks.guardrails.cooldown` | duration | `5m` |" in text
    assert "| `log.format` | `human` \\| `json` | `human` |" in text
    assert "| `sources.prometheus.queries[].query` | string | required |" in text
    assert all(not line.endswith("|  |") for line in rows), "every field has a description"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (float("nan"), "must be a finite number of seconds, got nan"),
        (float("inf"), "must be a finite number of seconds, got inf"),
        (1e12, "cannot exceed 3.1536e+08 seconds (3650d), got 1000000000000.0"),
        (10**400, "cannot exceed 3.1536e+08 seconds (3650d), got an integer of 1329 bits"),
        ("9" * 60 + "w", "cannot exceed 3.1536e+08 seconds"),
        ("1" * 65 + "s", "at most 64 characters, got '1111111111111111111111111111111111111111'... (66"),
    ],
)
def test_durations_that_are_not_finite_or_absurdly_long_are_refused(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(bad)


def test_a_long_duration_text_is_refused_at_once_and_not_echoed_whole() -> None:
    # digits without a unit made the part-by-part search quadratic: 52 s for 50 000 characters
    text = "1" * 1_000_000 + "x"
    with pytest.raises(ValueError, match="at most 64 characters") as info:
        parse_duration(text)
    assert len(str(info.value)) < 200
    # the longest text within the limit fails fast too, with the accepted forms named
    with pytest.raises(ValueError, match="expected a duration like 30s"):
        parse_duration("1" * 63 + "x")


def test_a_non_finite_duration_in_a_config_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  prometheus:\n    interval: .nan\n")
    line, _, field, message = only_error(path)
    assert (line, field) == (3, "sources.prometheus.interval")
    assert "a duration must be a finite number of seconds, got nan" in message


def test_a_forecasters_seasonal_memory_is_bounded_at_load(tmp_path: Path) -> None:
    params = "{forecaster: holt_winters, forecaster_params: {season: 1.0e+13}}"
    path = write(tmp_path, f"detectors:\n  - type: forecast\n    params: {params}\n")
    line, _, field, message = only_error(path)
    assert (line, field) == (3, "detectors[0].params")
    assert "holt_winters.season: expected at most 100000 slots" in message


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_config_or_playbook_that_is_a_fifo_or_a_device_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "agent.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        load_config(fifo)
    assert f"{fifo}:0:0: cannot read: a FIFO, not a regular file" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(Path("/dev/zero"))
    assert "/dev/zero:0:0: cannot read: a character device, not a regular file" in str(info.value)
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    os.mkfifo(playbooks / "scale.yaml")
    with pytest.raises(PlaybookLoadError) as pb:
        load_paths([playbooks / "scale.yaml"])
    assert [e.message for e in pb.value.errors] == ["cannot read: a FIFO, not a regular file"]
    assert load_paths([playbooks]).playbooks == (), "in a directory, only files are playbooks"


def test_by_default_one_source_or_one_metric_cannot_fill_the_series_table() -> None:
    engine = AgentConfig().engine
    assert (engine.series_limit, engine.series_per_source, engine.series_per_metric) == (
        100_000,
        80_000,
        20_000,
    )
    shipped = load_config(REPO / "k8s" / "agent-config.yaml").engine
    assert (shipped.series_per_source, shipped.series_per_metric) == (80_000, 20_000)
