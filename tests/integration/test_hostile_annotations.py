"""What the agent reads back from objects anyone with edit rights in the namespace may write: its own
records (annotations) made unreadable or forged. Over HTTP against the twin."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.audit import Audit, MemoryAuditSink
from agent.config import ExecutorConfig
from agent.executor import KubeExecutor
from agent.facts import KubeFacts
from agent.leader import StaticLeader
from agent.playbook.requests import Approval, Proposal
from remediations import ActionStatus, Limits
from remediations.delete_pod import DELETIONS
from remediations.registry import ACTIONS as REGISTRY
from remediations.rollback import ROLLBACKS
from remediations.scale import CAPACITY_RAISE, ScaleAction
from remediations.state import ACTIONS, EXECUTED_KEYS, dump_json, stored_key
from remediations.types import Target
from tests.integration.test_remediation_support import Cluster, open_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(twin_cluster: Any) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as opened:
        yield opened


def annotate(cluster: Cluster, name: str, annotations: dict[str, str], kind: str = "Deployment") -> None:
    body = {"metadata": {"annotations": annotations}}
    if kind == "Deployment":
        cluster.apps.patch_namespaced_deployment(name, cluster.ns, body)
    else:
        cluster.autoscaling.patch_namespaced_horizontal_pod_autoscaler(name, cluster.ns, body)


def replicas(cluster: Cluster, name: str = "web") -> int:
    return int(cluster.read("Deployment", name)["spec"]["replicas"])


def warned(caplog: pytest.LogCaptureFixture, annotation: str, name: str = "web") -> bool:
    return any(
        r.levelno == logging.WARNING and annotation in r.getMessage() and f"/{name}" in r.getMessage()
        for r in caplog.records
    )


def test_records_nested_too_deep_are_ignored_with_a_warning_not_an_error(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.deployment("web", replicas=2)
    annotate(
        cluster,
        "web",
        {ACTIONS: "[" * 6000 + "]" * 6000, EXECUTED_KEYS: "[" * 100_000 + "]" * 100_000},
    )
    target = Target("Deployment", cluster.ns, "web")

    # what the engine asks before acting: the per-target cooldowns and budgets
    assert KubeFacts(cluster.kube, cluster.clock).actions_on(target) == []
    assert warned(caplog, ACTIONS)

    executor = KubeExecutor(
        cluster.kube,
        ExecutorConfig(enabled=True, approvals_dir=tmp_path / "approvals", audit_file=None),
        cluster.clock,
        Audit([MemoryAuditSink()]),
        leader=StaticLeader(True),
        instance="t",
    )
    request = cluster.request("scale", "Deployment", "web", {"by": 1})
    result = executor.submit(Proposal(request, cluster.clock.now(), Approval.NONE))
    assert result.status is ActionStatus.EXECUTED, result.message
    assert replicas(cluster) == 3
    assert warned(caplog, EXECUTED_KEYS)
    annotations = cluster.read("Deployment", "web")["metadata"]["annotations"]
    assert json.loads(annotations[EXECUTED_KEYS]) == [request.key]


def test_restoring_a_forged_raise_stays_within_the_bounds(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.deployment("web", replicas=3)
    action = REGISTRY["scale"]
    assert isinstance(action, ScaleAction)
    request = cluster.request("scale", "Deployment", "web", {"by": 1}, limits=Limits(max_replicas=10))

    # a record claiming the value was 5000 before a raise the incident holds
    forged = {"original": 5000, "set": 3, "holders": {request.incident: 3}, "at": 0}
    annotate(cluster, "web", {CAPACITY_RAISE: dump_json(forged)})
    restored = action.restore(cluster.ctx(request))
    assert restored.status is ActionStatus.EXECUTED, restored.message
    assert replicas(cluster) == 10, "never above maxReplicas"
    assert "kept within the bounds at 10" in restored.message

    # counts the API cannot hold and times that are no time: nobody's raise, nothing moves
    for value in (
        {"original": -5, "set": 10, "holders": {request.incident: 10}, "at": 0},
        {"original": 2**40, "set": 10, "holders": {request.incident: 10}, "at": 0},
        {"original": 2, "set": 10, "holders": {request.incident: 10}, "at": math.nan},
        {"original": 2, "set": 10, "holders": {request.incident: 10}, "at": math.inf},
        {"original": 2, "set": 10, "holders": {request.incident: "10"}, "at": 0},
    ):
        caplog.clear()
        annotate(cluster, "web", {CAPACITY_RAISE: json.dumps(value)})
        left = action.restore(cluster.ctx(request))
        assert left.status is ActionStatus.NOOP, (value, left.message)
        assert replicas(cluster) == 10
        assert warned(caplog, CAPACITY_RAISE)


def test_a_forged_deletion_for_the_key_never_deletes_a_pod_the_workload_does_not_control(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.deployment("web", replicas=1, settled=True)
    cluster.deployment("api", replicas=1, settled=True)
    (other,) = cluster.pods("api")
    request = cluster.request("delete_pod", "Deployment", "web", {"gracePeriod": 0})
    entry = {"at": 0, "pod": other.metadata.name, "uid": other.metadata.uid, "key": stored_key(request.key)}
    annotate(cluster, "web", {DELETIONS: dump_json([entry])})

    result = cluster.run(request)

    assert result.status is ActionStatus.FAILED, result.message
    assert result.error == "ActionRefused"
    assert f"names pod {other.metadata.name}" in result.message
    assert [p.metadata.name for p in cluster.pods("api")] == [other.metadata.name]
    assert warned(caplog, DELETIONS)


def test_deletions_dated_far_ahead_do_not_hold_the_window_shut(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.deployment("web", replicas=2, settled=True)
    ahead = [
        {"at": at, "pod": "x", "uid": "u", "key": "k"} for at in (1e300, 1e12, cluster.clock.now() + 3600)
    ]
    annotate(cluster, "web", {DELETIONS: json.dumps([*ahead, {"at": math.inf, "key": "k2"}])})

    result = cluster.run(cluster.request("delete_pod", "Deployment", "web", {"gracePeriod": 0}))

    assert result.status is ActionStatus.EXECUTED, result.message
    assert warned(caplog, DELETIONS)
    kept = json.loads(cluster.read("Deployment", "web")["metadata"]["annotations"][DELETIONS])
    assert [e["pod"] for e in kept] == [result.details["pod"]]


def test_rollbacks_recorded_at_no_time_are_not_the_last_change(cluster: Cluster) -> None:
    cluster.deployment("web", replicas=1, settled=True)
    cluster.rollout("web", "2")  # a rollout: the last change is its ReplicaSet's creation
    annotate(
        cluster,
        "web",
        {ROLLBACKS: '[{"time": Infinity, "from": "a", "to": "b"}, {"time": NaN, "from": "a", "to": "b"}]'},
    )
    facts = KubeFacts(cluster.kube, cluster.clock)
    target = Target("Deployment", cluster.ns, "web")
    assert facts.last_rollback(target) is None
    last = facts.last_rollout(target)
    assert last is not None
    assert math.isfinite(last)
