"""Leader election on a Lease in the twin: one leader; when it stops renewing the other takes over
within the lease duration, and the executor there does not repeat an executed key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.audit import Audit, MemoryAuditSink
from agent.config import ExecutorConfig
from agent.executor import KubeExecutor
from agent.leader import LeaseLeader
from agent.metrics import AgentMetrics
from agent.playbook.requests import Proposal
from remediations.registry import make_request
from remediations.types import ActionStatus, Target
from tests.integration.test_remediation_support import open_cluster
from tests.servers.common import eventually

LEASE = 3.0


def _two_leaders(kube_env: Any, name: str, namespace: str, lease: float, renew: float) -> list[LeaseLeader]:
    """Two replicas ``r0`` and ``r1`` campaigning for one Lease (not started)."""
    return [
        LeaseLeader(
            kube_env.api_client(),
            name=name,
            namespace=namespace,
            identity=f"r{i}",
            lease_duration=lease,
            renew_deadline=renew,
            retry_period=1.0,
            metrics=AgentMetrics(),
        )
        for i in range(2)
    ]


def test_only_the_leader_acts_and_the_other_takes_over(kube_env: Any, tmp_path: Path) -> None:
    with open_cluster(kube_env) as cluster:
        cluster.deployment("web", replicas=2)
        leaders = _two_leaders(kube_env, "aiops-test", cluster.ns, LEASE, 2.0)
        config = ExecutorConfig(enabled=True, approvals_dir=tmp_path / "a")
        executors = [
            KubeExecutor(cluster.kube, config, cluster.clock, Audit([MemoryAuditSink()]), leader=leader)
            for leader in leaders
        ]
        target = Target("Deployment", cluster.ns, "web")
        req = Proposal(
            make_request("scale", target, {"by": 2}, playbook="pb", incident="inc", step="actions[0]"), 0.0
        )
        for leader in leaders:
            leader.start()
        try:
            eventually(lambda: any(le.is_leader() for le in leaders), timeout=10)
            first = next(i for i, le in enumerate(leaders) if le.is_leader())
            other = 1 - first
            assert not leaders[other].is_leader()
            assert executors[other].submit(req).status is ActionStatus.SKIPPED
            assert executors[first].submit(req).status is ActionStatus.EXECUTED
            metrics = leaders[first].metrics
            assert metrics is not None
            assert metrics.leader._value.get() == 1
            stopped = time.monotonic()
            leaders[first].stop()
            eventually(leaders[other].is_leader, timeout=LEASE + 5)
            assert time.monotonic() - stopped < LEASE + 3.0
            result = executors[other].submit(req)
            assert result.status is ActionStatus.SKIPPED
            assert "annotation" in result.message
            spec = cluster.read("Deployment", "web")["spec"]
            assert spec["replicas"] == 4
        finally:
            for leader in leaders:
                leader.stop()


def test_a_stopped_leader_releases_the_lease_and_the_other_takes_over_at_once(kube_env: Any) -> None:
    """A leader stopped cleanly (SIGTERM, a rolling update) clears the Lease's holder: the other
    replica leads at its next attempt, long before the lease duration would have run out."""
    lease = 20.0
    leaders = _two_leaders(kube_env, "aiops-release", kube_env.namespace, lease, 10.0)
    for leader in leaders:
        leader.start()
    try:
        eventually(lambda: any(le.is_leader() for le in leaders), timeout=10)
        first = next(i for i, le in enumerate(leaders) if le.is_leader())
        other = leaders[1 - first]
        stopped = time.monotonic()
        leaders[first].stop()
        eventually(other.is_leader, timeout=lease)
        assert time.monotonic() - stopped < 5.0, "taken over at the next attempt, not at expiry"
        leaders[first].stop()  # twice: the Lease is another's now, and stays so
        assert other.is_leader()
    finally:
        for leader in leaders:
            leader.stop()
