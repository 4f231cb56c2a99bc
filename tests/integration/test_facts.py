"""KubeFacts: the last rollout of a Deployment, read from its ReplicaSets over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from agent.clock import ManualClock
from agent.facts import KubeFacts
from remediations.types import Target
from tests.integration.test_remediation_support import Cluster, open_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(kube_env) -> Iterator[Cluster]:
    with open_cluster(kube_env) as opened:
        yield opened


def _created(rs: dict[str, object]) -> float:
    stamp = str(rs["metadata"]["creationTimestamp"])  # type: ignore[index]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_last_rollout_is_the_newest_replicaset_and_follows_a_new_rollout(cluster: Cluster) -> None:
    cluster.deployment("web", replicas=1, settled=True)
    clock = ManualClock(1_000.0)
    facts = KubeFacts(cluster.kube, clock, ttl=30.0)
    target = Target("Deployment", cluster.ns, "web")
    # revision 1 is the Deployment's creation: no rollout, nothing to roll back to
    assert facts.last_rollout(target) is None
    clock.advance(31)
    cluster.rollout("web", "2")
    cluster.settle(lambda: sorted(cluster.replica_sets()) == [1, 2], "revision 2")

    first = facts.last_rollout(target)
    assert first == _created(cluster.replica_sets()[2])

    twin = cluster.twin
    if twin is not None and isinstance(twin.clock, ManualClock):
        twin.advance(60)  # the new ReplicaSet is created a minute later in event time
    else:
        time.sleep(1.5)  # creationTimestamp has one-second resolution
    cluster.rollout("web", "3")
    cluster.settle(lambda: sorted(cluster.replica_sets()) == [1, 2, 3], "revision 3")
    assert facts.last_rollout(target) == first  # cached within the ttl
    clock.advance(31)
    second = facts.last_rollout(target)
    assert second == _created(cluster.replica_sets()[3])
    assert first is not None
    assert second is not None
    assert second > first


def test_unknown_for_other_kinds_and_missing_objects(cluster: Cluster) -> None:
    facts = KubeFacts(cluster.kube, ManualClock())
    assert facts.last_rollout(Target("StatefulSet", cluster.ns, "db")) is None
    assert facts.last_rollout(Target("Deployment", cluster.ns, "absent")) is None


def rolled_out_then_later(cluster: Cluster) -> tuple[KubeFacts, Target, float]:
    """web at revision 2, and a while later: the facts (no cache), the target and its rollout."""
    cluster.deployment("web", replicas=1, settled=True)
    cluster.rollout("web", "2")
    cluster.settle(lambda: sorted(cluster.replica_sets()) == [1, 2], "revision 2")
    facts = KubeFacts(cluster.kube, ManualClock(1_000.0), ttl=0.0)
    target = Target("Deployment", cluster.ns, "web")
    rolled_out = facts.last_rollout(target)
    assert rolled_out == _created(cluster.replica_sets()[2])
    # what follows comes a while after the rollout: creationTimestamp has one-second resolution
    twin = cluster.twin
    if twin is not None and isinstance(twin.clock, ManualClock):
        twin.advance(60)
    else:
        time.sleep(1.5)
        # the agent's clock is virtual (it stood still since the fixture was built): it reads
        # the time the cluster's timestamps are in, as a deployed agent's does
        cluster.clock.set(time.time())
    return facts, target, rolled_out


def test_a_rollback_by_the_agent_counts_as_a_change(cluster: Cluster) -> None:
    facts, target, before = rolled_out_then_later(cluster)
    request = cluster.request("rollback", "Deployment", "web", {"healthyFor": 0})
    result = cluster.run(request)
    assert result.status.value == "executed", result.message
    rolled_back_at = cluster.clock.now()
    # a rollback re-uses the old ReplicaSet (no new creationTimestamp), yet it is a change
    assert facts.last_rollout(target) == pytest.approx(rolled_back_at, abs=1.0)
    assert rolled_back_at > before
    assert facts.last_rollback(target) == pytest.approx(rolled_back_at, abs=1.0)
    assert facts.last_rollback(Target("StatefulSet", cluster.ns, "web")) is None


def test_a_restart_is_not_a_rollout(cluster: Cluster) -> None:
    facts, target, rolled_out = rolled_out_then_later(cluster)
    restarted = cluster.run(cluster.request("restart", "Deployment", "web"))
    assert restarted.status.value == "executed", restarted.message
    cluster.settle(lambda: sorted(cluster.replica_sets()) == [1, 2, 3], "the restart's revision 3")
    assert _created(cluster.replica_sets()[3]) > _created(cluster.replica_sets()[2])
    # new pods of the same version: the version last changed at the rollout
    assert facts.last_rollout(target) == rolled_out
