"""``restart``: the restartedAt pod-template annotation, once per key, over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from remediations import ActionStatus
from remediations.events import timestamp
from remediations.registry import ACTIONS
from remediations.restart import RESTARTED_AT
from remediations.state import EXECUTED_KEYS
from tests.integration.test_remediation_support import Cluster, open_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(kube_env) -> Iterator[Cluster]:
    with open_cluster(kube_env) as opened:
        yield opened


@pytest.fixture
def twin(twin_cluster) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as opened:
        yield opened


def test_restart_sets_restarted_at_and_the_controller_rolls_a_new_replicaset(cluster):
    cluster.deployment("web", replicas=2, settled=True)
    request = cluster.request("restart", "Deployment", "web")

    result = cluster.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    deployment = cluster.read("Deployment", "web")
    when = deployment["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert when == timestamp(cluster.clock.now())
    assert request.key in json.loads(deployment["metadata"]["annotations"][EXECUTED_KEYS])
    cluster.settle(lambda: sorted(cluster.replica_sets()) == [1, 2], "a new ReplicaSet for the restart")
    assert cluster.replica_sets()[2]["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == when
    assert len(cluster.events("Deployment", "web", "AiopsRestarted")) == 1

    again = cluster.run(request)
    assert again.status is ActionStatus.NOOP
    assert (
        cluster.read("Deployment", "web")["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == when
    )


def test_another_incident_restarts_again(cluster):
    cluster.deployment("web", replicas=1, settled=True)
    first = cluster.run(cluster.request("restart", "Deployment", "web", incident="inc-1"))
    cluster.clock.advance(60)
    second = cluster.run(cluster.request("restart", "Deployment", "web", incident="inc-2"))
    assert (first.status, second.status) == (ActionStatus.EXECUTED, ActionStatus.EXECUTED)
    keys = json.loads(cluster.read("Deployment", "web")["metadata"]["annotations"][EXECUTED_KEYS])
    assert [k.split("/")[-2] for k in keys] == ["inc-1", "inc-2"]


def test_the_plan_shows_the_annotation_and_writes_nothing(twin):
    twin.deployment("web", replicas=1, settled=True)
    before = twin.rv("Deployment", "web")
    assert twin.twin is not None
    twin.twin.server.clear_requests()

    plan = ACTIONS["restart"].plan(twin.ctx(twin.request("restart", "Deployment", "web")))

    assert f"-spec.template.metadata.annotations.{RESTARTED_AT}: (unset)" in plan.diff.splitlines()
    assert f"+spec.template.metadata.annotations.{RESTARTED_AT}: {timestamp(twin.clock.now())}" in plan.diff
    assert twin.rv("Deployment", "web") == before
    assert twin.writes() == []


def test_a_429_with_retry_after_is_waited_out_on_the_clock_and_restarts_once(twin):
    twin.deployment("web", replicas=1, settled=True)
    assert twin.twin is not None
    twin.twin.server.faults.throttle(retry_after=3, verb="patch", resource="deployments", count=2)

    result = twin.run(twin.request("restart", "Deployment", "web"))

    assert result.status is ActionStatus.EXECUTED, result.message
    assert twin.clock.waits == [3.0, 3.0]
    patches = [r.code for r in twin.twin.server.requests if r.info.verb == "patch"]
    assert patches == [429, 429, 200]
    twin.settle(lambda: sorted(twin.replica_sets()) == [1, 2], "exactly one new ReplicaSet")


def test_restart_of_a_kind_it_does_not_handle_is_refused(cluster):
    result = cluster.run(cluster.request("restart", "CronJob", "nightly"))
    assert result.status is ActionStatus.FAILED
    assert (
        result.message == "restart does not act on a CronJob (it acts on: DaemonSet, Deployment, StatefulSet)"
    )
