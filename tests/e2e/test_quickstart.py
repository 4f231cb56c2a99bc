"""The README's quickstart, step by step: ``aiops twin``, ``aiops run`` on it, an alert, a rollback.

Both commands run as processes with the shipped example files (examples/quickstart/); only the
ports and the scratch paths differ, so the test does not collide with anything else running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
import yaml

from tests.e2e.daemon import Daemon
from tests.e2e.test_daemon_playbooks import post
from tests.servers.common import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"


def read_until(stream: IO[str], prefix: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """The first line of ``stream`` that starts with ``prefix`` (without it)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError(f"aiops twin exited ({proc.poll()}) before printing {prefix!r}: {seen}")
        seen.append(line)
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"no {prefix!r} line within {timeout} s: {seen}")


def deployment_image(kubeconfig: Path) -> str:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        found = client.AppsV1Api(api).read_namespaced_deployment("checkout", "shop")
        pod = found.spec.template.spec
        assert pod is not None
        return str(pod.containers[0].image)
    finally:
        api.close()


@pytest.fixture
def twin(tmp_path: Path):
    kubeconfig = tmp_path / "twin.kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "twin", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        printed = read_until(proc.stdout, "kubeconfig: ", proc)
        assert Path(printed) == kubeconfig
        yield kubeconfig, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_twin_serves_the_sample_and_stops_on_ctrl_c(twin: tuple[Path, subprocess.Popen[str]]) -> None:
    kubeconfig, proc = twin
    assert deployment_image(kubeconfig) == "registry.example/shop/checkout:v2"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0


def test_the_quickstart_rolls_back_the_sample_on_an_alert(
    tmp_path: Path, twin: tuple[Path, subprocess.Popen[str]]
) -> None:
    kubeconfig, _ = twin
    config = yaml.safe_load((QUICKSTART / "agent.yaml").read_text())
    # as written, except the scratch paths (the port is the Daemon helper's)
    config["playbooks"]["directory"] = str(QUICKSTART / "playbooks")
    config["playbooks"]["status_file"] = str(tmp_path / "status.json")
    config["executor"]["approvals_dir"] = str(tmp_path / "approvals")
    audit = tmp_path / "audit.jsonl"
    config["executor"]["audit_file"] = str(audit)
    with Daemon(tmp_path, config, "--kubeconfig", str(kubeconfig)) as daemon:
        daemon.wait_http("/readyz", 200)
        status, body = post(
            daemon.port, "/alertmanager", (QUICKSTART / "alert.json").read_bytes(), token=None
        )
        assert status == 200, body
        eventually(
            lambda: deployment_image(kubeconfig) == "registry.example/shop/checkout:v1",
            timeout=60,
            what="the rollback to v1",
        )
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        executed = [r for r in records if r.get("decision") == "executed"]
        assert [(r["action"], r["playbook"], r["target"]["name"]) for r in executed] == [
            ("rollback", "rollback-on-alert", "checkout")
        ]
        code, _ = daemon.terminate()
        assert code == 0


def test_twin_says_when_it_cannot_listen(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from agent.cli import main

    assert main(["twin", "--port", "70000"]) == 2
    assert capsys.readouterr().err == "error: --port: expected 0-65535, got 70000\n"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["twin", "--port", str(port)]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
