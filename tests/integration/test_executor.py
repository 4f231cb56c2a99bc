"""The executor against the twin over HTTP: guardrails, idempotency, dry run, approval, GitOps, audit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.audit import Audit, LogAuditSink, MemoryAuditSink, executed_keys_from_file
from agent.config import ExecutorConfig
from agent.executor import GITOPS_DRIFT, KubeExecutor
from agent.facts import KubeFacts
from agent.leader import StaticLeader
from agent.playbook.requests import Approval, Proposal
from remediations.registry import make_request
from remediations.scale import SCALE_ORIGIN
from remediations.state import ACTIONS, EXECUTED_KEYS, dump_json, stored_key
from remediations.types import ActionResult, ActionStatus, Limits, SignalFacts, Target, key_digest
from tests.integration.test_remediation_support import Cluster, open_cluster


@pytest.fixture
def cluster(twin_cluster: Any) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as c:
        yield c


def request(
    cluster: Cluster,
    action: str = "scale",
    params: dict[str, Any] | None = None,
    *,
    name: str = "web",
    kind: str = "Deployment",
    namespace: str | None = None,
    incident: str = "inc-1",
    step: str = "actions[0]",
    approval: Approval = Approval.NONE,
    dry_run: bool = False,
    limits: Limits | None = None,
) -> Proposal:
    target = Target(kind, namespace or cluster.ns, name)
    req = make_request(
        action,
        target,
        params if params is not None else {"by": 2},
        playbook="pb",
        incident=incident,
        step=step,
        dry_run=dry_run,
        signal=SignalFacts(1.0),
        limits=limits,
    )
    return Proposal(req, cluster.clock.now(), approval)


class Harness:
    def __init__(self, cluster: Cluster, tmp: Path, **config: Any) -> None:
        self.cluster = cluster
        self.memory = MemoryAuditSink()
        self.audit_file = tmp / "audit.jsonl"
        config.setdefault("approvals_dir", tmp / "approvals")
        config.setdefault("audit_file", self.audit_file)
        self.config = ExecutorConfig(enabled=True, **config)
        self.leader = StaticLeader(True)
        self.reported: list[ActionResult] = []
        self.executor = self.new()

    def new(self) -> KubeExecutor:
        audit = Audit([LogAuditSink(self.config.audit_file), self.memory])
        ex = KubeExecutor(
            self.cluster.kube, self.config, self.cluster.clock, audit, leader=self.leader, instance="t"
        )
        ex.bind(self.reported.append, lambda _: None)  # requests of no loaded playbook: no policy check
        return ex

    def decisions(self) -> list[str]:
        return self.memory.decisions()


def replicas(cluster: Cluster, name: str = "web") -> int:
    return int(cluster.read("Deployment", name)["spec"]["replicas"])


def test_executes_once_records_the_key_and_audits(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path)
    req = request(cluster)
    result = h.executor.submit(req)
    assert result.status is ActionStatus.EXECUTED, result
    assert replicas(cluster) == 4
    assert req.key in cluster.read("Deployment", "web")["metadata"]["annotations"][EXECUTED_KEYS]
    assert h.executor.submit(req).status is ActionStatus.SKIPPED
    assert replicas(cluster) == 4
    assert h.decisions() == ["started", "executed", "skipped"]
    assert h.memory.records[2].guardrail == "idempotency"
    assert req.key in executed_keys_from_file(h.audit_file)


def test_a_restarted_executor_does_not_repeat_an_action(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path, audit_file=None)
    req = request(cluster)
    assert h.executor.submit(req).status is ActionStatus.EXECUTED
    restarted = h.new()  # no audit file: only the target's annotation remembers
    twin = cluster.twin
    assert twin is not None
    twin.server.clear_requests()
    result = restarted.submit(req)
    assert result.status is ActionStatus.SKIPPED
    assert "target annotation" in result.message
    assert replicas(cluster) == 4
    assert cluster.writes() == []


def test_non_leader_plans_only(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path)
    h.leader.leading = False
    result = h.executor.submit(request(cluster))
    assert result.status is ActionStatus.SKIPPED
    assert h.memory.records[-1].guardrail == "leader"
    assert replicas(cluster) == 2


def test_namespace_allow_list_holds_and_lets_through(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path)
    result = h.executor.submit(request(cluster, limits=Limits(namespaces=frozenset({"prod"}))))
    assert result.status is ActionStatus.FAILED
    assert result.error == "ActionRefused"
    assert "is not in the allowed namespaces (prod)" in result.message
    assert replicas(cluster) == 2
    allowed = request(cluster, incident="inc-2", limits=Limits(namespaces=frozenset({cluster.ns})))
    assert h.executor.submit(allowed).status is ActionStatus.EXECUTED
    assert replicas(cluster) == 4


def test_replica_bounds_clamp_and_refuse(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path)
    bounds = Limits(max_replicas=3, max_step=5)
    assert (
        h.executor.submit(request(cluster, params={"by": 5}, limits=bounds)).status is ActionStatus.EXECUTED
    )
    assert replicas(cluster) == 3  # clamped to the guardrails' maxReplicas
    refused = h.executor.submit(request(cluster, params={"replicas": 9}, incident="inc-2", limits=bounds))
    assert refused.status is ActionStatus.FAILED
    assert "violates the bounds" in refused.message
    assert replicas(cluster) == 3


def test_dry_run_writes_nothing_but_an_event(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path)
    twin = cluster.twin
    assert twin is not None
    twin.server.clear_requests()
    result = h.executor.submit(request(cluster, dry_run=True))
    assert result.status is ActionStatus.DRY_RUN
    assert replicas(cluster) == 2
    assert {(verb, resource) for verb, resource, _ in cluster.writes()} == {("create", "events")}
    assert cluster.events("Deployment", "web", "AiopsDryRun")
    assert h.decisions() == ["dry_run"]


def test_a_request_whose_plan_changes_nothing_writes_nothing_and_asks_no_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.deployment("web", replicas=4)
    h = Harness(cluster, tmp_path)
    lease = Target("Lease", cluster.ns, "aiops-agent-actions")
    h.executor.agent_record = lease
    twin = cluster.twin
    assert twin is not None
    twin.server.clear_requests()
    result = h.executor.submit(request(cluster, params={"replicas": 4}))
    assert result.status is ActionStatus.NOOP, result
    assert result.message == f"nothing to do: Deployment/{cluster.ns}/web already has 4 replicas"
    assert cluster.writes() == [], "not recorded ahead, not recorded agent-wide, no Event"
    assert h.decisions() == ["noop"], "audited once, with no write-ahead record"
    # with approval required, nobody is asked to approve a change that is not one
    pending = h.executor.submit(
        request(cluster, params={"replicas": 4}, incident="inc-2", approval=Approval.REQUIRED)
    )
    assert pending.status is ActionStatus.NOOP
    assert list(h.executor.approvals.records()) == []
    assert cluster.writes() == []
    # a change goes the whole way: recorded ahead, written, audited as started and executed
    assert h.executor.submit(request(cluster, params={"replicas": 5}, incident="inc-3")).status is (
        ActionStatus.EXECUTED
    )
    assert replicas(cluster) == 5
    assert h.decisions() == ["noop", "noop", "started", "executed"]


def test_a_relative_scale_written_before_a_restart_is_still_recorded_as_executed(
    cluster: Cluster, tmp_path: Path
) -> None:
    # as if an earlier leader recorded the start (2), scaled to 4 and stopped before recording the key:
    # the replicas are as wanted, but executing has something to write (the key)
    cluster.deployment("web", replicas=4)
    h = Harness(cluster, tmp_path)
    req = request(cluster)
    origin = dump_json({"key": stored_key(req.key), "replicas": 2})
    cluster.apps.patch_namespaced_deployment(
        "web", cluster.ns, {"metadata": {"annotations": {SCALE_ORIGIN: origin}}}
    )
    result = h.executor.submit(req)
    assert result.status is ActionStatus.NOOP, result
    assert replicas(cluster) == 4
    notes = cluster.read("Deployment", "web")["metadata"]["annotations"]
    assert SCALE_ORIGIN not in notes
    assert req.key in json.loads(notes[EXECUTED_KEYS])
    assert h.decisions() == ["started", "noop"]


@pytest.mark.parametrize(
    ("mode", "status", "scaled"),
    [
        ("skip", ActionStatus.SKIPPED, False),
        ("annotate", ActionStatus.EXECUTED, True),
        ("act", ActionStatus.EXECUTED, True),
    ],
)
def test_gitops_modes(
    cluster: Cluster, tmp_path: Path, mode: str, status: ActionStatus, scaled: bool
) -> None:
    cluster.deployment("web", replicas=2)
    cluster.apps.patch_namespaced_deployment(
        "web", cluster.ns, {"metadata": {"labels": {"argocd.argoproj.io/instance": "shop"}}}
    )
    h = Harness(cluster, tmp_path, gitops=mode)
    result = h.executor.submit(request(cluster))
    assert result.status is status, result
    assert replicas(cluster) == (4 if scaled else 2)
    annotations = cluster.read("Deployment", "web")["metadata"].get("annotations") or {}
    assert (GITOPS_DRIFT in annotations) is (mode == "annotate")
    if mode == "skip":
        assert h.memory.records[-1].guardrail == "gitops"
        assert "argocd:shop" in result.message


def test_approval_pending_then_approved_executes(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path)
    req = request(cluster, approval=Approval.REQUIRED)
    pending = h.executor.submit(req)
    assert pending.status is ActionStatus.PENDING_APPROVAL
    approval = str(pending.details["approval"])
    assert replicas(cluster) == 2
    h.executor.tick()
    assert h.reported == []
    h.executor.approvals.decide(approval, True, "alice", cluster.clock.now())
    h.executor.tick()
    assert [r.status for r in h.reported] == [ActionStatus.EXECUTED]
    assert replicas(cluster) == 4
    assert h.decisions() == ["pending_approval", "approved", "started", "executed"]
    h.executor.tick()  # done: nothing more
    assert len(h.reported) == 1


def test_approval_rejected_and_expired(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path, approval_ttl=60)
    rejected = h.executor.submit(request(cluster, incident="a", approval=Approval.REQUIRED))
    h.executor.approvals.decide(
        str(rejected.details["approval"]), False, "bob", cluster.clock.now(), "not now"
    )
    h.executor.submit(request(cluster, incident="b", approval=Approval.REQUIRED))
    h.executor.tick()
    cluster.clock.advance(61)
    h.executor.tick()
    assert sorted(r.status.value for r in h.reported) == ["failed", "skipped"]
    assert sorted(h.decisions()) == sorted(["pending_approval", "pending_approval", "rejected", "expired"])
    assert replicas(cluster) == 2


def test_a_missing_target_is_a_clear_failure(cluster: Cluster, tmp_path: Path) -> None:
    h = Harness(cluster, tmp_path)
    result = h.executor.submit(request(cluster, name="missing"))
    assert result.status is ActionStatus.FAILED
    assert h.memory.records[-1].decision.value == "failed"
    assert h.memory.records[-1].error == "NotFoundError"
    assert "missing" in result.message


@pytest.mark.parametrize(
    ("req_kwargs", "error"),
    [
        ({"name": "Bad_Name"}, "not a valid Kubernetes name"),
        ({"params": {"by": 0}}, "scale by 0 does nothing"),
    ],
)
def test_bad_input_never_becomes_a_request(cluster: Cluster, req_kwargs: dict[str, Any], error: str) -> None:
    # names and parameters are validated where the request is made (the engine), so nothing
    # invalid reaches the executor; the engine turns the error into a failed step
    with pytest.raises(ValueError, match=error):
        request(cluster, **req_kwargs)


def test_a_webhook_that_hangs_fails_clearly(cluster: Cluster, tmp_path: Path) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)  # accepts, never answers
    try:
        h = Harness(cluster, tmp_path)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        result = h.executor.submit(
            request(cluster, "notify", {"webhook": url, "message": "hi", "timeout": 0.2, "retries": 0})
        )
    finally:
        sock.close()
    assert result.status is ActionStatus.FAILED
    assert h.memory.records[-1].decision.value == "failed"


@pytest.mark.parametrize("code", [409, 500, 429])
def test_api_faults_retry_without_double_action(cluster: Cluster, tmp_path: Path, code: int) -> None:
    cluster.deployment("web", replicas=2)
    twin = cluster.twin
    assert twin is not None
    twin.server.faults.error(code, verb="patch", resource="deployments", count=1)
    h = Harness(cluster, tmp_path)
    result = h.executor.submit(request(cluster))
    assert result.status is ActionStatus.EXECUTED, result
    assert replicas(cluster) == 4
    assert h.executor.submit(request(cluster)).status is ActionStatus.SKIPPED
    assert replicas(cluster) == 4


def test_audit_lines_reach_the_kafka_topic(
    cluster: Cluster, tmp_path: Path, kafka_bootstrap: str, kafka_topic: Any
) -> None:
    import json

    from agent.audit import KafkaAuditSink
    from agent.config import KafkaConnection
    from agent.kafka_client import ResilientProducer
    from tests.servers.kafka import read_topic

    topic = kafka_topic()
    producer = ResilientProducer(
        KafkaConnection(bootstrap_servers=[kafka_bootstrap]), cluster.clock, name="audit"
    )
    try:
        cluster.deployment("web", replicas=2)
        h = Harness(cluster, tmp_path)
        h.executor.audit.sinks.append(KafkaAuditSink(producer, topic))
        req = request(cluster)
        h.executor.submit(req)
        h.executor.submit(req)
    finally:
        producer.close()
    lines = [json.loads(value) for _, value in read_topic(kafka_bootstrap, topic)]
    assert [(line["key"], line["decision"]) for line in lines] == [
        (req.key, "started"),  # write-ahead
        (req.key, "executed"),
        (req.key, "skipped"),
    ]


def test_each_action_is_recorded_on_its_target_and_agent_wide_before_it_writes(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path, audit_file=None)
    lease = Target("Lease", cluster.ns, "aiops-agent-actions")
    h.executor.agent_record = lease
    facts = KubeFacts(cluster.kube, cluster.clock, ttl=0.0, agent_record=lease)
    assert facts.actions_by_agent() == [], "no record yet: the Lease is made at the first action"
    first = request(cluster)
    assert h.executor.submit(first).status is ActionStatus.EXECUTED
    recorded = facts.actions_on(first.target)
    assert recorded is not None
    (on_target,) = recorded
    assert (on_target.playbook, on_target.action, on_target.action_class, on_target.source) == (
        "pb",
        "scale",
        "capacity",
        "signals",
    )
    assert on_target.key == key_digest(first.key)
    assert on_target.time == cluster.clock.now()
    wide = facts.actions_by_agent()
    assert wide is not None
    (agent_wide,) = wide
    assert agent_wide.target == str(first.target)
    assert agent_wide.key == on_target.key
    # an action that changes nothing leaves no record behind: already at 4 replicas
    noop = request(cluster, params={"replicas": 4}, incident="inc-2")
    assert h.executor.submit(noop).status is ActionStatus.NOOP
    assert [r.key for r in facts.actions_on(first.target) or ()] == [on_target.key]
    assert [r.key for r in facts.actions_by_agent() or ()] == [on_target.key]


def test_an_action_that_cannot_be_recorded_does_not_run(cluster: Cluster, tmp_path: Path) -> None:
    cluster.deployment("web", replicas=2)
    h = Harness(cluster, tmp_path, audit_file=None)
    twin = cluster.twin
    assert twin is not None
    twin.server.faults.error(403, verb="patch", resource="deployments", count=1)
    result = h.executor.submit(request(cluster, "restart", {}))
    assert result.status is ActionStatus.FAILED
    assert "cannot record restart before acting, so nothing was changed" in result.message
    assert not result.retryable
    assert ACTIONS not in cluster.read("Deployment", "web")["metadata"].get("annotations", {})
    assert h.decisions() == ["started", "failed"]
    twin.server.faults.error(503, verb="patch", resource="deployments", count=5)
    result = h.executor.submit(request(cluster, "restart", {}, incident="inc-2"))
    assert result.status is ActionStatus.FAILED
    assert result.retryable, "a busy API server: the engine tries again later"
