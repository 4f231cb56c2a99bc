"""The twin's controllers on virtual time, in-process: rollouts, revisions, pods, Jobs, HPAs, GC."""

from __future__ import annotations

from typing import Any

import pytest

from agent.clock import ManualClock
from simulations.twin import PodFate, TwinCluster, TwinConfig
from simulations.twin.controllers.base import Context, SettledObjects, owned_by
from simulations.twin.controllers.deployment import REVISION, REVISION_HISTORY, without_hash
from simulations.twin.objects import find_condition
from simulations.twin.resources.apps import DEPLOYMENTS, REPLICASETS, STATEFULSETS
from simulations.twin.resources.autoscaling import HORIZONTALPODAUTOSCALERS
from simulations.twin.resources.batch import CRONJOBS, JOBS
from simulations.twin.resources.core import EVENTS, NAMESPACES, PODS

NS = "default"


@pytest.fixture
def twin() -> TwinCluster:
    return TwinCluster(ManualClock(1_700_000_000), TwinConfig(pod_start_seconds=2, job_run_seconds=5))


def deployment(name: str = "web", image: str = "web:1", replicas: int = 4, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            **spec,
        },
    }


def set_image(twin: TwinCluster, image: str, name: str = "web") -> None:
    obj = twin.store.get(DEPLOYMENTS, NS, name)
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = image
    twin.store.update(DEPLOYMENTS, NS, name, obj)


def replica_sets(twin: TwinCluster) -> dict[int, dict[str, Any]]:
    return {int(rs["metadata"]["annotations"][REVISION]): rs for rs in twin.store.list(REPLICASETS, NS)[0]}


def image_of(obj: dict[str, Any]) -> str:
    image: str = obj["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The status condition of type ``kind``, which the caller expects to be there."""
    found = find_condition(obj, kind)
    assert found is not None, f"no {kind} condition in {obj.get('status')}"
    return found


def pods(twin: TwinCluster, **labels: str) -> list[dict[str, Any]]:
    return [
        p
        for p in twin.store.list(PODS, NS)[0]
        if all(p["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())
    ]


def test_a_new_deployment_gets_revision_1_and_pods_after_the_start_delay(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment())
    twin.step()
    (rs,) = twin.store.list(REPLICASETS, NS)[0]
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    assert rs["metadata"]["annotations"][REVISION] == "1"
    assert dep["metadata"]["annotations"][REVISION] == "1"
    assert dep["metadata"]["generation"] == 1, "the revision annotation is written through /status"
    hash_label = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{hash_label}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": hash_label}
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert len(pods(twin)) == 4
    assert all(p["status"]["phase"] == "Pending" for p in pods(twin))
    assert "readyReplicas" not in dep["status"], "zero counters are omitted, as Go's omitempty does"
    twin.advance(1.9)
    assert all(p["status"]["phase"] == "Pending" for p in pods(twin))
    twin.advance(0.2)
    assert all(p["status"]["phase"] == "Running" for p in pods(twin))
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    assert dep["status"]["readyReplicas"] == 4
    assert dep["status"]["availableReplicas"] == 4
    assert dep["status"]["observedGeneration"] == 1
    assert condition(dep, "Available")["status"] == "True"
    assert condition(dep, "Progressing")["reason"] == "NewReplicaSetAvailable"


def test_rolling_update_respects_surge_and_unavailability(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(replicas=4))
    twin.advance(5)
    set_image(twin, "web:2")
    twin.step()
    revisions = replica_sets(twin)
    assert set(revisions) == {1, 2}
    # 25% of 4: one extra pod, one unavailable.
    assert revisions[2]["spec"]["replicas"] == 2
    assert revisions[1]["spec"]["replicas"] == 3
    total = len([p for p in pods(twin) if p["status"]["phase"] in {"Pending", "Running"}])
    assert total <= 5
    twin.advance(30)
    revisions = replica_sets(twin)
    assert revisions[2]["spec"]["replicas"] == 4
    assert revisions[1]["spec"]["replicas"] == 0
    assert len(pods(twin)) == 4
    assert {p["spec"]["containers"][0]["image"] for p in pods(twin)} == {"web:2"}
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    assert dep["metadata"]["annotations"][REVISION] == "2"
    assert dep["status"]["updatedReplicas"] == 4


def test_two_template_changes_keep_revisions_1_to_3_with_their_templates(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment())
    twin.advance(10)
    set_image(twin, "web:2")
    twin.advance(30)
    set_image(twin, "web:3")
    twin.advance(30)
    revisions = replica_sets(twin)
    assert {n: image_of(rs) for n, rs in revisions.items()} == {1: "web:1", 2: "web:2", 3: "web:3"}
    assert [revisions[n]["spec"]["replicas"] for n in (1, 2, 3)] == [0, 0, 4]


def test_going_back_to_an_old_template_reuses_its_replica_set_with_the_next_revision(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment())
    twin.advance(10)
    first = replica_sets(twin)[1]
    set_image(twin, "web:2")
    twin.advance(30)
    # What `kubectl rollout undo` does: put revision 1's template back.
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    dep["spec"]["template"] = without_hash(first["spec"]["template"])
    twin.store.update(DEPLOYMENTS, NS, "web", dep)
    twin.advance(30)
    revisions = replica_sets(twin)
    assert set(revisions) == {2, 3}
    assert revisions[3]["metadata"]["name"] == first["metadata"]["name"]
    assert revisions[3]["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert revisions[3]["spec"]["replicas"] == 4
    assert twin.store.get(DEPLOYMENTS, NS, "web")["metadata"]["annotations"][REVISION] == "3"


def test_revision_history_limit_deletes_the_oldest_replica_sets(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(revisionHistoryLimit=1))
    for image in ("web:2", "web:3", "web:4"):
        twin.advance(10)
        set_image(twin, image)
    twin.advance(30)
    assert sorted(replica_sets(twin)) == [3, 4]


def test_recreate_scales_old_pods_away_first(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(strategy={"type": "Recreate"}))
    twin.advance(5)
    set_image(twin, "web:2")
    twin.step()
    revisions = replica_sets(twin)
    assert revisions[1]["spec"]["replicas"] == 0
    assert revisions[2]["spec"]["replicas"] == 4
    assert {p["spec"]["containers"][0]["image"] for p in pods(twin)} == {"web:2"}


def test_a_crash_looping_rollout_stalls_and_passes_its_progress_deadline(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(progressDeadlineSeconds=60))
    twin.advance(5)
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    dep["spec"]["template"]["metadata"]["annotations"] = {"twin.aiops.dev/crash": "true"}
    twin.store.update(DEPLOYMENTS, NS, "web", dep)
    twin.advance(30)
    revisions = replica_sets(twin)
    assert revisions[1]["spec"]["replicas"] == 3, "maxUnavailable keeps three old pods"
    bad = [p for p in pods(twin) if p["metadata"].get("annotations")]
    assert bad
    status = bad[0]["status"]["containerStatuses"][0]
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["restartCount"] >= 2
    assert condition(twin.store.get(DEPLOYMENTS, NS, "web"), "Progressing")["status"] == "True"
    twin.advance(60)
    progressing = condition(twin.store.get(DEPLOYMENTS, NS, "web"), "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert condition(twin.store.get(DEPLOYMENTS, NS, "web"), "Available")["status"] == "True"


def test_a_paused_deployment_scales_but_does_not_roll_out(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(replicas=2))
    twin.advance(5)
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    dep["spec"]["paused"] = True
    dep["spec"]["replicas"] = 3
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"
    twin.store.update(DEPLOYMENTS, NS, "web", dep)
    twin.advance(5)
    (rs,) = twin.store.list(REPLICASETS, NS)[0]
    assert (image_of(rs), rs["spec"]["replicas"]) == ("web:1", 3)
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    dep["spec"]["paused"] = False
    twin.store.update(DEPLOYMENTS, NS, "web", dep)
    twin.advance(30)
    assert sorted(replica_sets(twin)) == [1, 2]


def test_scaling_a_replica_set_deletes_the_newest_unready_pods_first(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(replicas=2))
    twin.advance(5)
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    dep["spec"]["replicas"] = 4
    twin.store.update(DEPLOYMENTS, NS, "web", dep)
    twin.step()
    ready_names = {p["metadata"]["name"] for p in pods(twin) if p["status"]["phase"] == "Running"}
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    dep["spec"]["replicas"] = 2
    twin.store.update(DEPLOYMENTS, NS, "web", dep)
    twin.step()
    assert {p["metadata"]["name"] for p in pods(twin)} == ready_names


def test_deleting_a_pod_brings_a_replacement(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(replicas=2))
    twin.advance(5)
    victim = pods(twin)[0]["metadata"]["name"]
    twin.store.delete(PODS, NS, victim)
    twin.step()
    names = {p["metadata"]["name"] for p in pods(twin)}
    assert victim not in names
    assert len(names) == 2


def test_a_job_completes_after_its_run_time(twin):
    body = {
        "metadata": {"name": "train"},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "trainer:1"}]}
            }
        },
    }
    job = twin.store.create(JOBS, NS, body)
    assert job["spec"]["selector"] == {
        "matchLabels": {"batch.kubernetes.io/controller-uid": job["metadata"]["uid"]}
    }
    assert job["spec"]["template"]["metadata"]["labels"]["job-name"] == "train"
    twin.step()
    job = twin.store.get(JOBS, NS, "train")
    assert job["status"]["active"] == 1
    assert "completionTime" not in job["status"]
    twin.advance(6.9)
    assert "completionTime" not in twin.store.get(JOBS, NS, "train")["status"]
    twin.advance(0.2)
    job = twin.store.get(JOBS, NS, "train")
    assert job["status"]["succeeded"] == 1
    assert "active" not in job["status"]
    assert job["status"]["completionTime"]
    assert condition(job, "Complete")["status"] == "True"
    (pod,) = pods(twin, **{"job-name": "train"})
    assert pod["status"]["phase"] == "Succeeded"


def test_a_failing_job_fails_after_its_backoff_limit(twin):
    body = {
        "metadata": {"name": "bad"},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "metadata": {"annotations": {"twin.aiops.dev/exit-code": "2"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "x:1"}]},
            },
        },
    }
    twin.store.create(JOBS, NS, body)
    twin.advance(60)
    job = twin.store.get(JOBS, NS, "bad")
    assert job["status"]["failed"] == 2
    assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"


def test_cronjobs_are_stored_with_defaults(twin):
    body = {
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "x", "image": "x:1"}]}
                    }
                }
            },
        },
    }
    cron = twin.store.create(CRONJOBS, NS, body)
    assert cron["spec"]["concurrencyPolicy"] == "Allow"
    assert cron["spec"]["successfulJobsHistoryLimit"] == 3
    twin.advance(3600)
    assert twin.store.list(JOBS, NS)[0] == [], "the twin does not schedule CronJobs"


def test_statefulset_creates_ordered_pods_and_scales_from_the_top(twin):
    body = deployment("db", replicas=3)
    body["spec"]["serviceName"] = "db"
    twin.store.create(STATEFULSETS, NS, body)
    twin.step()
    assert [p["metadata"]["name"] for p in pods(twin)] == ["db-0"], "OrderedReady waits for db-0"
    twin.advance(10)
    assert [p["metadata"]["name"] for p in pods(twin)] == ["db-0", "db-1", "db-2"]
    sts = twin.store.get(STATEFULSETS, NS, "db")
    assert sts["status"]["readyReplicas"] == 3
    sts["spec"]["replicas"] = 1
    twin.store.update(STATEFULSETS, NS, "db", sts)
    twin.step()
    assert [p["metadata"]["name"] for p in pods(twin)] == ["db-0"]


def test_hpa_min_replicas_floor_scales_the_target(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(replicas=2))
    hpa = {
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 10,
        },
    }
    twin.store.create(HORIZONTALPODAUTOSCALERS, NS, hpa)
    twin.advance(5)
    hpa = twin.store.get(HORIZONTALPODAUTOSCALERS, NS, "web")
    assert hpa["status"]["currentReplicas"] == 2
    hpa["spec"]["minReplicas"] = 6
    twin.store.update(HORIZONTALPODAUTOSCALERS, NS, "web", hpa)
    twin.step()
    assert twin.store.get(DEPLOYMENTS, NS, "web")["spec"]["replicas"] == 6
    assert condition(twin.store.get(HORIZONTALPODAUTOSCALERS, NS, "web"), "ScalingLimited")["reason"] == (
        "TooFewReplicas"
    )


def test_hpa_recommendation_hook_on_the_resync_period():
    twin = TwinCluster(
        ManualClock(0), TwinConfig(hpa_sync_seconds=15, hpa_recommendation=lambda hpa, target: 9)
    )
    twin.store.create(DEPLOYMENTS, NS, deployment(replicas=2))
    twin.store.create(
        HORIZONTALPODAUTOSCALERS,
        NS,
        {
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5},
        },
    )
    twin.step()
    assert twin.store.get(DEPLOYMENTS, NS, "web")["spec"]["replicas"] == 5


def test_deleting_a_deployment_collects_its_replica_sets_and_pods(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment())
    twin.advance(5)
    twin.store.delete(DEPLOYMENTS, NS, "web")
    twin.step()
    assert twin.store.list(REPLICASETS, NS)[0] == []
    assert pods(twin) == []


def test_orphan_propagation_keeps_dependents(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment())
    twin.advance(5)
    twin.store.delete(DEPLOYMENTS, NS, "web", propagation="Orphan")
    twin.step()
    (rs,) = twin.store.list(REPLICASETS, NS)[0]
    assert "ownerReferences" not in rs["metadata"]


def test_namespace_deletion_terminates_then_removes_content(twin):
    twin.create_namespace("team")
    twin.store.create(DEPLOYMENTS, "team", deployment())
    twin.step()
    ns = twin.store.delete(NAMESPACES, "", "team")
    assert ns["status"]["phase"] == "Terminating"
    with pytest.raises(Exception, match="being terminated"):
        twin.store.create(DEPLOYMENTS, "team", deployment("other"))
    twin.step()
    assert twin.store.find(NAMESPACES, "", "team") is None
    assert twin.store.list(DEPLOYMENTS, "team")[0] == []


def test_controllers_record_events(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment())
    twin.step()
    reasons = {e["reason"] for e in twin.store.list(EVENTS, NS)[0]}
    assert {"ScalingReplicaSet", "SuccessfulCreate"} <= reasons


def test_events_expire_an_hour_after_they_were_created_unless_the_ttl_is_off():
    def events_at(ttl: float | None) -> tuple[list[str], list[list[str]]]:
        """The Events of a scale at 0 s, and those at 3599, 3610, 5399 and 5410 s after one at 1800 s."""
        twin = TwinCluster(ManualClock(0), TwinConfig(event_ttl_seconds=ttl))
        twin.store.create(DEPLOYMENTS, NS, deployment(replicas=1))
        twin.advance(1800)
        first = sorted(e["metadata"]["name"] for e in twin.store.list(EVENTS, NS)[0])
        obj = twin.store.get(DEPLOYMENTS, NS, "web")
        obj["spec"]["replicas"] = 2
        twin.store.update(DEPLOYMENTS, NS, "web", obj)
        # an Event written through the API (as the agent writes them) expires the same way
        involved = {"kind": "Deployment", "namespace": NS, "name": "web"}
        twin.store.create(EVENTS, NS, {"metadata": {"name": "agent.1"}, "involvedObject": involved})
        seen = []
        for until in (3599, 3610, 5399, 5410):
            twin.advance(until - twin.clock.now())
            seen.append(sorted(e["metadata"]["name"] for e in twin.store.list(EVENTS, NS)[0]))
        return first, seen

    first, kept = events_at(None)
    assert first
    assert all(names == kept[0] for names in kept), "without a TTL every Event stays"
    assert set(first) < set(kept[0])
    assert "agent.1" in kept[0]
    first, (before_hour, after_hour, before_second, after_second) = events_at(3600)
    assert before_hour == kept[0]
    assert after_hour == sorted(set(kept[0]) - set(first)), "the first scale's Events go an hour after it"
    assert "agent.1" in after_hour
    assert before_second == after_hour
    assert after_second == [], "the second scale's Events and the agent's go an hour after them"


def test_pod_fate_hook_decides_readiness():
    config = TwinConfig(pod_fate=lambda pod: PodFate(start_seconds=1, ready=False))
    twin = TwinCluster(ManualClock(0), config)
    twin.store.create(DEPLOYMENTS, NS, deployment(replicas=1))
    twin.advance(10)
    (pod,) = pods(twin)
    assert pod["status"]["phase"] == "Running"
    assert condition(pod, "Ready")["status"] == "False"
    assert "availableReplicas" not in twin.store.get(DEPLOYMENTS, NS, "web")["status"]


def test_replays_are_deterministic():
    def run() -> list[str]:
        twin = TwinCluster(ManualClock(0), TwinConfig(seed=7))
        twin.store.create(DEPLOYMENTS, NS, deployment())
        twin.advance(10)
        return sorted(p["metadata"]["name"] + p["metadata"]["uid"] for p in pods(twin))

    assert run() == run()


def test_advance_needs_a_manual_clock():
    from agent.clock import WallClock

    with pytest.raises(TypeError):
        TwinCluster(WallClock()).advance(1)


def test_crash_loop_back_off_doubles_up_to_five_minutes():
    from simulations.twin.controllers.kubelet import crash_restarts

    assert crash_restarts(0, 10) == (1, 0, 10)
    assert crash_restarts(10, 10) == (2, 10, 30)
    assert crash_restarts(35, 10) == (3, 30, 70)
    count, since, upcoming = crash_restarts(3600, 10)
    assert upcoming - since == 300
    assert (count, since) == (16, 3310), "restarts at 10, 30, 70, 150, 310, then every 300 s"


def test_min_ready_seconds_makes_pods_available_later_with_settled_objects_skipped(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(replicas=2, minReadySeconds=10))
    twin.step()
    twin.advance(2.5)  # pods ready at +2 s, available at +12 s
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    assert dep["status"]["readyReplicas"] == 2
    assert "availableReplicas" not in dep["status"]
    twin.advance(9.0)
    assert "availableReplicas" not in twin.store.get(DEPLOYMENTS, NS, "web")["status"]
    twin.advance(1.0)
    dep = twin.store.get(DEPLOYMENTS, NS, "web")
    assert dep["status"]["availableReplicas"] == 2
    assert condition(dep, "Available")["status"] == "True"


def test_settled_objects_are_skipped_until_they_or_what_they_own_change(twin):
    twin.store.create(DEPLOYMENTS, NS, deployment(replicas=2))
    twin.advance(5.0)
    synced: list[str] = []
    settled = SettledObjects()

    def run(until: float | None = None) -> list[str]:
        synced.clear()
        ctx = Context(twin.store, twin.clock, twin.config, now=twin.clock.now())
        settled.sync_all(
            ctx,
            REPLICASETS,
            twin.store.peek(REPLICASETS),
            owned_by(twin.store.peek(PODS)),
            lambda rs, pods: synced.append(f"{rs['metadata']['name']}:{len(pods)}"),
            lambda rs, pods: until,
        )
        return list(synced)

    (rs,) = twin.store.list(REPLICASETS, NS)[0]
    name = rs["metadata"]["name"]
    assert run() == [f"{name}:2"], "the first pass syncs"
    assert run() == [], "nothing changed and the sync wrote nothing: skipped"
    pod = pods(twin)[0]
    twin.store.delete(PODS, NS, pod["metadata"]["name"])  # an owned object changes
    assert run(until=twin.clock.now() + 5) == [f"{name}:1"]
    assert run() == []
    twin.clock.set(twin.clock.now() + 4)
    assert run() == [], "before its deadline: still settled"
    twin.clock.set(twin.clock.now() + 2)
    assert run() == [f"{name}:1"], "its deadline passed: synced again"
