"""``delete_pod``: one pod at a time, only the target's pods, at most maxPerWindow per window."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from remediations import ActionStatus
from remediations.delete_pod import DELETIONS
from remediations.registry import ACTIONS
from tests.integration.test_remediation_support import Cluster, deployment_body, open_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(kube_env) -> Iterator[Cluster]:
    with open_cluster(kube_env) as opened:
        yield opened


@pytest.fixture
def twin(twin_cluster) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as opened:
        yield opened


def names(cluster: Cluster, app: str = "web") -> set[str]:
    return {p.metadata.name for p in cluster.pods(app)}


def test_one_pod_per_execution_and_never_more_than_max_per_window(cluster):
    cluster.deployment("web", replicas=3, settled=True)
    params = {"maxPerWindow": 2, "window": "10m", "gracePeriod": 0}
    before = names(cluster)

    first = cluster.run(cluster.request("delete_pod", "Deployment", "web", params, incident="inc-1"))
    assert first.status is ActionStatus.EXECUTED, first.message
    assert first.details["pod"] in before
    assert first.details["pod"] not in names(cluster)
    cluster.clock.advance(60)
    second = cluster.run(cluster.request("delete_pod", "Deployment", "web", params, incident="inc-2"))
    assert second.status is ActionStatus.EXECUTED, second.message
    assert second.details["pod"] != first.details["pod"]
    cluster.clock.advance(60)

    third = cluster.run(cluster.request("delete_pod", "Deployment", "web", params, incident="inc-3"))

    assert third.status is ActionStatus.FAILED
    assert third.error == "ActionRefused"
    assert "delete_pod limit reached" in third.message
    assert "2 pod(s) deleted in the last 600 s (maxPerWindow 2)" in third.message
    recorded = json.loads(cluster.read("Deployment", "web")["metadata"]["annotations"][DELETIONS])
    assert [e["pod"] for e in recorded] == [first.details["pod"], second.details["pod"]]

    cluster.clock.advance(481)  # the first deletion leaves the window
    fourth = cluster.run(cluster.request("delete_pod", "Deployment", "web", params, incident="inc-4"))
    assert fourth.status is ActionStatus.EXECUTED, fourth.message
    assert len(cluster.events("Deployment", "web", "AiopsPodDeleted")) == 3


def test_the_same_request_twice_deletes_one_pod(cluster):
    cluster.deployment("web", replicas=2, settled=True)
    request = cluster.request("delete_pod", "Deployment", "web", {"maxPerWindow": 5, "gracePeriod": 0})

    first, second = cluster.run(request), cluster.run(request)

    assert first.status is ActionStatus.EXECUTED, first.message
    assert second.status is ActionStatus.NOOP, second.message
    recorded = json.loads(cluster.read("Deployment", "web")["metadata"]["annotations"][DELETIONS])
    assert len(recorded) == 1


def test_a_named_pod_of_another_workload_is_never_deleted(cluster):
    cluster.deployment("web", replicas=1, settled=True)
    cluster.deployment("api", replicas=1, settled=True)
    (other,) = names(cluster, "api")

    result = cluster.run(cluster.request("delete_pod", "Deployment", "web", {"pod": other}))

    assert result.status is ActionStatus.FAILED
    assert f"no pod {other} of Deployment/{cluster.ns}/web to delete" in result.message
    assert names(cluster, "api") == {other}


def test_a_pod_matching_the_selector_but_controlled_by_another_workload_is_never_deleted(cluster):
    # web2's pods carry app=web too (overlapping selectors): labels alone would select them.
    cluster.deployment("web", replicas=1, settled=True)
    body = deployment_body("web2", replicas=1)
    body["spec"]["selector"]["matchLabels"] = {"app": "web", "variant": "two"}
    body["spec"]["template"]["metadata"]["labels"] = {"app": "web", "variant": "two"}
    cluster.apps.create_namespaced_deployment(cluster.ns, body)
    cluster.settle(lambda: len(names(cluster)) == 2, "a pod of web2")
    (other,) = {p.metadata.name for p in cluster.pods("web") if p.metadata.labels.get("variant") == "two"}

    result = cluster.run(cluster.request("delete_pod", "Deployment", "web", {"pod": other}))

    assert result.status is ActionStatus.FAILED
    assert f"no pod {other} of Deployment/{cluster.ns}/web" in result.message
    assert other in names(cluster)


def test_a_selector_narrows_the_choice_to_the_targets_matching_pods(cluster):
    cluster.deployment("web", replicas=2, settled=True)
    result = cluster.run(
        cluster.request("delete_pod", "Deployment", "web", {"selector": "app=web,tier=none"})
    )
    assert result.status is ActionStatus.FAILED
    assert "no pod matching app=web,tier=none" in result.message


def test_a_pod_target_is_deleted_and_counted_on_its_deployment(cluster):
    cluster.deployment("web", replicas=2, settled=True)
    pod = sorted(names(cluster))[0]

    result = cluster.run(cluster.request("delete_pod", "Pod", pod, {"gracePeriod": 0}))

    assert result.status is ActionStatus.EXECUTED, result.message
    assert result.details["owner"] == f"Deployment/{cluster.ns}/web"
    assert pod not in names(cluster)
    assert DELETIONS in cluster.read("Deployment", "web")["metadata"]["annotations"]
    assert len(cluster.events("Pod", pod, "AiopsPodDeleted")) == 1


def test_the_plan_names_the_pod_and_deletes_nothing(twin):
    twin.deployment("web", replicas=2, settled=True)
    assert twin.twin is not None
    twin.twin.server.clear_requests()
    before = names(twin)

    plan = ACTIONS["delete_pod"].plan(twin.ctx(twin.request("delete_pod", "Deployment", "web")))

    assert plan.details["pod"] in before
    assert "0 of 1 deletion(s) used in the last 600 s" in plan.summary
    assert "+pod: (deleted; Deployment web creates a replacement)" in plan.diff
    assert twin.writes() == []
    assert names(twin) == before
