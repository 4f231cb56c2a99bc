"""``rollback`` the way ``kubectl rollout undo`` does it, over HTTP (the twin, or a real cluster)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from remediations import ActionStatus
from remediations.registry import ACTIONS
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


#: These tests are about undo's mechanics, on revisions seconds apart: any earlier revision
#: qualifies. Which revision the default rule picks is tested with the twin's clock below.
ANY_EARLIER = {"healthyFor": 0}


def version_of(template: dict[str, Any]) -> str:
    (env,) = template["spec"]["containers"][0]["env"]
    return str(env["value"])


def three_revisions(cluster: Cluster) -> None:
    cluster.deployment("web", replicas=2, version="1")
    cluster.settle(lambda: len(cluster.replica_sets()) == 1, "revision 1")
    cluster.rollout("web", "2")
    cluster.rollout("web", "3")
    assert {n: version_of(rs["spec"]["template"]) for n, rs in cluster.replica_sets().items()} == {
        1: "1",
        2: "2",
        3: "3",
    }


def test_rollback_after_two_template_changes_restores_the_revision_2_template(cluster):
    three_revisions(cluster)
    request = cluster.request("rollback", "Deployment", "web", ANY_EARLIER)

    result = cluster.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    assert result.message == f"rolled back Deployment/{cluster.ns}/web from revision 3 to revision 2"
    deployment = cluster.read("Deployment", "web")
    template = deployment["spec"]["template"]
    assert version_of(template) == "2"
    assert "pod-template-hash" not in template["metadata"]["labels"]
    assert request.key in json.loads(deployment["metadata"]["annotations"][EXECUTED_KEYS])
    # The controller rolls revision 2's ReplicaSet forward again, as revision 4.
    cluster.settle(lambda: sorted(cluster.replica_sets()) == [1, 3, 4], "revision 4")
    assert version_of(cluster.replica_sets()[4]["spec"]["template"]) == "2"
    (event,) = cluster.events("Deployment", "web", "AiopsRolledBack")
    assert event.involved_object.uid == deployment["metadata"]["uid"]

    again = cluster.run(request)
    assert again.status is ActionStatus.NOOP
    assert version_of(cluster.read("Deployment", "web")["spec"]["template"]) == "2"


def test_rollback_to_revision_1_gives_revision_1s_template(cluster):
    three_revisions(cluster)
    result = cluster.run(cluster.request("rollback", "Deployment", "web", {"toRevision": 1}))
    assert result.status is ActionStatus.EXECUTED, result.message
    assert result.details["to"] == 1
    assert version_of(cluster.read("Deployment", "web")["spec"]["template"]) == "1"


def test_rollback_without_an_earlier_revision_refuses_and_writes_nothing(cluster):
    cluster.deployment("web", replicas=1, settled=True)
    before = cluster.rv("Deployment", "web")

    result = cluster.run(cluster.request("rollback", "Deployment", "web", ANY_EARLIER))

    assert result.status is ActionStatus.FAILED
    assert result.error == "ActionRefused"
    assert result.message == "Deployment web has no earlier revision to roll back to (current revision 1)"
    assert cluster.rv("Deployment", "web") == before


def test_rollback_to_a_revision_not_in_the_history_refuses(cluster):
    three_revisions(cluster)
    result = cluster.run(cluster.request("rollback", "Deployment", "web", {"toRevision": 9}))
    assert result.status is ActionStatus.FAILED
    assert "revision 9 is not in its history (revisions: 1, 2, 3)" in result.message
    assert version_of(cluster.read("Deployment", "web")["spec"]["template"]) == "3"


def test_the_plan_is_the_template_diff_and_writes_nothing(twin):
    three_revisions(twin)
    before = twin.rv("Deployment", "web")
    assert twin.twin is not None
    twin.twin.server.clear_requests()

    plan = ACTIONS["rollback"].plan(twin.ctx(twin.request("rollback", "Deployment", "web", ANY_EARLIER)))

    assert plan.summary == f"roll back Deployment/{twin.ns}/web from revision 3 to revision 2"
    lines = plan.diff.splitlines()
    assert "-spec.template.spec.containers[0].env[0].value: 3" in lines
    assert "+spec.template.spec.containers[0].env[0].value: 2" in lines
    assert twin.rv("Deployment", "web") == before
    assert twin.writes() == []


def test_a_409_on_the_write_rereads_and_rolls_back_once(twin):
    three_revisions(twin)
    assert twin.twin is not None
    twin.twin.server.clear_requests()
    fault = twin.twin.server.faults.error(409, verb="patch", resource="deployments", name="web", count=1)

    result = twin.run(twin.request("rollback", "Deployment", "web", ANY_EARLIER))

    assert result.status is ActionStatus.EXECUTED, result.message
    assert fault.hits == 1
    patches = [
        r.code
        for r in twin.twin.server.requests
        if r.info.verb == "patch" and r.info.resource == "deployments"
    ]
    assert patches == [409, 200]
    reads = [
        r for r in twin.twin.server.requests if r.info.verb == "get" and r.info.resource_path == "deployments"
    ]
    assert len(reads) >= 2, "re-read after the conflict"
    twin.settle(lambda: sorted(twin.replica_sets()) == [1, 3, 4], "one rollback: revision 4")
    assert version_of(twin.read("Deployment", "web")["spec"]["template"]) == "2"


def test_a_concurrent_change_between_read_and_write_is_not_overwritten(twin):
    three_revisions(twin)
    assert twin.twin is not None
    # Someone changes the Deployment (a new image) while the rollback computes its patch: the
    # rollback's write carries the old resourceVersion, gets 409, re-reads and decides again.
    action = ACTIONS["rollback"]
    request = twin.request("rollback", "Deployment", "web", ANY_EARLIER)
    original_get = twin.kube.get
    calls = {"n": 0}

    def racing_get(kind: str, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = original_get(kind, namespace, name)
        if kind == "Deployment" and calls["n"] == 0:
            calls["n"] += 1
            twin.apps.patch_namespaced_deployment(
                "web", twin.ns, {"metadata": {"labels": {"touched": "yes"}}}
            )
        return obj

    twin.kube.get = racing_get
    result = action.execute(twin.ctx(request))

    assert result.status is ActionStatus.EXECUTED, result.message
    deployment = twin.read("Deployment", "web")
    assert deployment["metadata"]["labels"]["touched"] == "yes"
    assert version_of(deployment["spec"]["template"]) == "2"
    patches = [
        r.code
        for r in twin.twin.server.requests
        if r.info.verb == "patch" and r.info.resource == "deployments"
    ]
    assert patches[-2:] == [409, 200], "the stale write was refused, the recomputed one went through"


def test_rollback_of_a_missing_deployment_fails_naming_it(cluster):
    result = cluster.run(cluster.request("rollback", "Deployment", "gone"))
    assert result.status is ActionStatus.FAILED
    assert result.error == "NotFoundError"
    assert f"get Deployment {cluster.ns}/gone: not found" in result.message


@pytest.fixture
def timed(twin: Cluster) -> Cluster:
    """The twin with the actions on its clock: when revisions went live is read on that clock."""
    assert twin.twin is not None
    twin.clock = twin.twin.clock  # type: ignore[assignment]
    return twin


def live(twin: Cluster, seconds: float) -> None:
    """Let ``seconds`` of the twin's time pass (the current revision stays live)."""
    assert twin.twin is not None
    twin.twin.advance(seconds)


def v1_live_for(twin: Cluster, seconds: float) -> None:
    """web created at v1 (revision 1), then ``seconds`` of the twin's time with it live."""
    twin.deployment("web", replicas=2, version="1")
    twin.settle(lambda: len(twin.replica_sets()) == 1, "revision 1")
    live(twin, seconds)


def test_a_second_rollback_never_returns_to_the_version_rolled_back_from(timed):
    twin = timed
    v1_live_for(twin, 3600)
    twin.rollout("web", "2")  # the bad version
    live(twin, 300)
    first = twin.run(twin.request("rollback", "Deployment", "web", incident="inc-1"))
    assert first.status is ActionStatus.EXECUTED, first.message
    assert "from revision 2 to revision 1" in first.message
    twin.settle(lambda: sorted(twin.replica_sets()) == [2, 3], "v1 live again as revision 3")
    assert version_of(twin.read("Deployment", "web")["spec"]["template"]) == "1"
    live(twin, 1800)

    # a new error spike on v1: the only earlier revision is v2, which the agent rolled back from
    second = twin.run(twin.request("rollback", "Deployment", "web", incident="inc-2"))

    assert second.status is ActionStatus.FAILED, second.message
    assert second.error == "ActionRefused"
    assert "revision 2 was rolled back from within 24h" in second.message
    assert version_of(twin.read("Deployment", "web")["spec"]["template"]) == "1"


def test_the_newest_revision_live_without_an_incident_is_chosen(timed):
    twin = timed
    clock = twin.clock
    v1_live_for(twin, 3600)
    twin.rollout("web", "2")
    v2_live = clock.now()
    live(twin, 1200)  # 20 min of v2, but an incident covered most of it
    twin.rollout("web", "3")
    live(twin, 300)
    unhealthy = ((v2_live + 300, v2_live + 1100),)
    request = twin.request("rollback", "Deployment", "web")
    request = dataclasses.replace(request, unhealthy=unhealthy)

    result = twin.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    assert "from revision 3 to revision 1" in result.message
    assert version_of(twin.read("Deployment", "web")["spec"]["template"]) == "1"


def test_a_revision_live_less_than_healthy_for_does_not_qualify(timed):
    twin = timed
    v1_live_for(twin, 600)  # ten minutes: less than the default 15
    twin.rollout("web", "2")
    result = twin.run(twin.request("rollback", "Deployment", "web"))
    assert result.status is ActionStatus.FAILED
    assert "revision 1 was live without an incident for 6" in result.message
    assert "(needs 900 s)" in result.message


def restart(twin: Cluster, incident: str) -> None:
    """A rolling restart of web by the agent, settled: a new revision of the same version."""
    revisions = len(twin.replica_sets())
    restarted = twin.run(twin.request("restart", "Deployment", "web", incident=incident))
    assert restarted.status is ActionStatus.EXECUTED, restarted.message
    twin.settle(lambda: len(twin.replica_sets()) == revisions + 1, "the restart's revision")


def test_after_a_restart_the_rollback_goes_past_the_same_version_to_the_one_before(timed):
    # v2 leaks: healthy for an hour, restarted, leaking again. The revision before the restart is
    # v2 too (only restartedAt differs); going back to it would restart the leak, not undo it.
    twin = timed
    v1_live_for(twin, 3600)
    twin.rollout("web", "2")
    live(twin, 3600)
    restart(twin, "inc-leak-1")
    live(twin, 3600)

    result = twin.run(twin.request("rollback", "Deployment", "web", incident="inc-leak-2"))

    assert result.status is ActionStatus.EXECUTED, result.message
    assert "from revision 3 to revision 1" in result.message
    assert version_of(twin.read("Deployment", "web")["spec"]["template"]) == "1"


def test_a_rollback_refuses_when_the_only_earlier_revision_is_the_same_version(timed):
    twin = timed
    v1_live_for(twin, 3600)
    restart(twin, "inc-1")
    live(twin, 600)

    result = twin.run(twin.request("rollback", "Deployment", "web", incident="inc-2"))

    assert result.status is ActionStatus.FAILED, result.message
    assert "revision 1 is the current version before a restart" in result.message
