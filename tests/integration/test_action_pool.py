"""Actions off the engine loop: the daemon's composition with a real broker and the twin over HTTP.

A PATCH that takes 35 s (the twin's latency fault) while the agent runs: samples keep flowing from
Kafka through the detectors, ``/healthz`` stays 200, and the action's outcome comes back to the
playbook engine and is audited. Before, the action ran inside the loop and stopped it.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from kubernetes import client

from agent.app import Agent
from agent.audit import Audit, MemoryAuditSink
from agent.clock import WallClock
from agent.config import AgentConfig, ExecutorConfig
from agent.executor import KubeExecutor
from agent.playbook.events import IncidentEvent
from agent.playbook.requests import Proposal
from agent.pool import ActionPool, PoolSettings
from remediations.kube import connect
from remediations.registry import make_request
from remediations.types import ActionResult, ActionStatus, Target
from tests.servers.common import eventually
from tests.servers.twin import TwinEnv

pytestmark = pytest.mark.integration

LATENCY = 35.0

PLAYBOOK = """
apiVersion: aiops/v1
kind: Playbook
metadata: {name: restart-on-errors}
spec:
  trigger: {signal: threshold, metric: error_ratio, match: {deployment: ".+"}, maxGap: 10m}
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
  actions: [{restart: {}}]
  verify: {clears: false}
  guardrails: {cooldown: 1h}
"""


class Recorder:
    """Collects the engine's incident events (the audit the agent writes goes to a file too)."""

    def __init__(self) -> None:
        self.events: list[IncidentEvent] = []

    def record(self, entry: Any) -> None:
        if isinstance(entry, IncidentEvent):
            self.events.append(entry)


def executor_lines(audit_file: Path) -> list[dict[str, Any]]:
    """The executor's decisions in the audit file (it also holds the incidents' decision records)."""
    lines = [json.loads(line) for line in audit_file.read_text().splitlines()]
    return [r for r in lines if r.get("type") != "decision"]


@pytest.fixture
def twin(twin_factory: Callable[..., TwinEnv]) -> TwinEnv:
    """The twin on the wall clock (the fault's latency is real time), with Deployment web."""
    env = twin_factory(clock=WallClock(), background=True)
    apps = env.api_client()
    client.AppsV1Api(apps).create_namespaced_deployment(
        env.namespace,
        client.V1Deployment.model_validate(
            {
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "app", "image": "web:1"}]},
                    },
                },
            }
        ),
    )
    return env


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_a_35s_patch_stalls_neither_ingestion_nor_healthz_and_its_outcome_is_audited(
    tmp_path: Path, twin: TwinEnv, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "restart.yaml").write_text(PLAYBOOK)
    topic = kafka_topic()
    audit_file = tmp_path / "audit.jsonl"
    config = AgentConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": [kafka_bootstrap]},
            "sources": {
                "kafka": {
                    "topics": [topic],
                    "group_id": f"pool-{uuid.uuid4().hex[:8]}",
                    "session_timeout": "2s",
                    "heartbeat_interval": "500ms",
                }
            },
            "detectors": [
                {"type": "threshold", "params": {"rules": [{"metric": "error_ratio", "above": 0.05}]}}
            ],
            "signals": {"kafka": False},
            "http": {"host": "127.0.0.1", "port": 0},
            # a loop stalled for 5 s is unhealthy: the 35 s action must not stall it
            "engine": {"stall_after": "5s"},
            "playbooks": {"directory": str(books), "status_file": str(tmp_path / "status.json")},
            "executor": {
                "enabled": True,
                "leader_election": False,
                "audit_topic": None,
                "audit_file": str(audit_file),
                "approvals_dir": str(tmp_path / "approvals"),
                "actions_record": "aiops-agent-actions",
                "lease_namespace": twin.namespace,
            },
        }
    )
    agent = Agent(config, WallClock(), environ={}, kubeconfig=twin.kubeconfig)
    recorder = Recorder()
    agent.playbooks.engine.audit = _Both(agent.playbooks.engine.audit, recorder)
    port = agent.start_http()
    runner = threading.Thread(target=agent.run, name="agent-under-test", daemon=True)
    producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])

    def send(value: float, deployment: str = "web") -> None:
        labels = {"namespace": twin.namespace, "deployment": deployment}
        sample = {"name": "error_ratio", "labels": labels, "timestamp": time.time(), "value": value}
        producer.send(topic, orjson.dumps([sample]))
        producer.flush(10)

    fault = twin.server.faults.latency(LATENCY, verb="patch", resource="deployments", count=1)
    runner.start()
    try:
        eventually(lambda: agent.ready()[0], timeout=60, what="the Kafka source ready")
        send(0.01)
        eventually(lambda: agent.engine.samples_processed >= 1, timeout=30, what="the first sample")
        send(0.5)  # the threshold breaks: the playbook restarts web, whose first PATCH hangs
        eventually(lambda: fault.hits >= 1, timeout=30, what="the PATCH reaching the twin")
        started = time.monotonic()
        before = agent.engine.samples_processed
        during: list[int] = []
        while time.monotonic() - started < 12.0:  # well inside the 35 s the PATCH takes
            send(0.01, deployment="api")
            time.sleep(0.5)
            during.append(healthz(port))
        assert agent.engine.samples_processed >= before + 10, "samples kept flowing while the action waited"
        assert len(during) >= 10
        assert set(during) == {200}, f"/healthz while the action waited: {during}"
        assert agent.playbooks.pool.pending() == 1, "the action is still in the pool"
        decisions = [r["decision"] for r in executor_lines(audit_file)]
        assert decisions == ["started"], "written ahead; the outcome has not come yet"
        acting = [e for e in recorder.events if e.state.value == "acting"]
        assert acting, "the incident is acting (in flight on its target) while the action waits"

        def outcome() -> bool:
            return any(r["decision"] == "executed" for r in executor_lines(audit_file))

        eventually(outcome, timeout=LATENCY + 30, what="the restart's outcome in the audit")
        eventually(
            lambda: any(e.state.value == "resolved" for e in recorder.events),
            timeout=10,
            what="the outcome reported to the playbook engine",
        )
        assert healthz(port) == 200
        records = executor_lines(audit_file)
        assert [r["decision"] for r in records] == ["started", "executed"]
        assert {r["action"] for r in records} == {"restart"}
    finally:
        producer.close()
        agent.stop.set()
        runner.join(30)
        twin.server.faults.clear()
    assert not runner.is_alive()


class _Both:
    def __init__(self, first: Any, second: Recorder) -> None:
        self.first = first
        self.second = second

    def record(self, entry: Any) -> None:
        self.first.record(entry)
        self.second.record(entry)


def test_an_action_ends_by_its_deadline_and_the_failure_is_reported_and_audited(
    tmp_path: Path, twin: TwinEnv
) -> None:
    """Every PATCH takes 5 s; the action's deadline is 1 s: no try starts and no retry waits past
    it, and the engine gets a retryable failure (it tries again later) within about a second."""
    clock = WallClock()
    memory = MemoryAuditSink()
    config = ExecutorConfig(
        enabled=True, leader_election=False, audit_file=None, audit_topic=None, approvals_dir=tmp_path
    )
    kube = connect(twin.kubeconfig, clock=clock)
    executor = KubeExecutor(kube, config, clock, Audit([memory]), instance="t")
    pool = ActionPool(executor, PoolSettings(workers=1, queue=1, deadline=1.0))
    reported: list[ActionResult] = []
    pool.bind(reported.append)
    twin.server.faults.latency(5.0, verb="patch", resource="deployments")
    request = make_request(
        "restart", Target("Deployment", twin.namespace, "web"), {}, playbook="pb", incident="i", step="s"
    )
    started = time.monotonic()
    try:
        assert pool.submit(Proposal(request, clock.now())).status is ActionStatus.RUNNING
        eventually(lambda: bool(reported), timeout=10, what="the outcome")
        took = time.monotonic() - started
    finally:
        pool.close()
        twin.server.faults.clear()
        kube.close()
    (result,) = reported
    assert result.status is ActionStatus.FAILED
    assert result.retryable
    assert "deadline" in result.message
    assert took < 2.5, f"the action took {took:.1f} s with a 1 s deadline"
    assert memory.decisions() == ["started", "failed"]
