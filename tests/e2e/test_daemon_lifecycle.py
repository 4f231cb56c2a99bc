"""``aiops run`` as a process: probes, metrics, JSON logs, SIGTERM, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon

pytestmark = pytest.mark.e2e


def test_probes_metrics_and_clean_sigterm(tmp_path: Path) -> None:
    with Daemon(tmp_path, {}, "--log-format", "json") as d:
        assert d.wait_http("/healthz", 200).startswith("ok")
        assert d.wait_http("/readyz", 200).startswith("ok")
        metrics = d.wait_http("/metrics", 200)
        assert "aiops_loop_latency_seconds_bucket" in metrics
        assert "aiops_series_active" in metrics
        code, took = d.terminate()
        assert code == 0
        assert took < 10
        lines = [json.loads(line) for line in d.output().splitlines() if line.strip()]
        messages = [r["message"] for r in lines]
        assert any(m.startswith("received SIGTERM") for m in messages)
        assert any(m.startswith("agent stopped") for m in messages)
        assert all({"time", "level", "logger", "message"} <= set(r) for r in lines)


def test_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine:\n  series_limit: lots\n")
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{bad}:2:17: engine.series_limit:" in result.stderr


def test_missing_secret_exits_2(tmp_path: Path) -> None:
    cfg = {
        "kafka": {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password_env": "AIOPS_TEST_UNSET_SECRET",
        },
        "sources": {"kafka": {"topics": ["x"]}},
    }
    with Daemon(tmp_path, cfg) as d:
        assert d.proc.wait(timeout=60) == 2
        assert "AIOPS_TEST_UNSET_SECRET is not set" in d.output()


def test_executor_without_a_cluster_config_exits_2_saying_so(tmp_path: Path) -> None:
    with Daemon(tmp_path, {"executor": {"enabled": True}}, "--kubeconfig", str(tmp_path / "absent")) as d:
        assert d.proc.wait(timeout=60) == 2
        out = d.output()
        assert "executor: cannot load a Kubernetes configuration" in out
        assert "absent does not exist" in out
        assert "Traceback" not in out
