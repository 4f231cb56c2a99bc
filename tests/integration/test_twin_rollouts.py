"""Rollouts, rollbacks, pods and Jobs on the twin, driven through the official client over HTTP."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from agent.clock import WallClock
from simulations.twin import TwinConfig

pytestmark = pytest.mark.integration

REVISION = "deployment.kubernetes.io/revision"


def deployment_body(name: str = "web", image: str = "web:1", replicas: int = 3, **spec) -> dict:
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


def set_image(apps: client.AppsV1Api, ns: str, image: str, name: str = "web") -> None:
    apps.patch_namespaced_deployment(
        name, ns, {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    )


def by_revision(apps: client.AppsV1Api, ns: str, app: str = "web") -> dict[int, client.V1ReplicaSet]:
    sets = apps.list_namespaced_replica_set(ns, label_selector=f"app={app}").items
    return {int(rs.metadata.annotations[REVISION]): rs for rs in sets}


@pytest.fixture
def apps(twin_cluster) -> client.AppsV1Api:
    return client.AppsV1Api(twin_cluster.api_client())


def test_pods_appear_after_the_start_delay(twin_cluster, apps):
    core = client.CoreV1Api(twin_cluster.api_client())
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    twin_cluster.step()
    pods = core.list_namespaced_pod(ns, label_selector="app=web").items
    assert len(pods) == 3
    assert {p.status.phase for p in pods} == {"Pending"}
    assert {p.metadata.owner_references[0].kind for p in pods} == {"ReplicaSet"}
    twin_cluster.advance(1.5)
    assert apps.read_namespaced_deployment("web", ns).status.ready_replicas is None
    twin_cluster.advance(1.0)
    status = apps.read_namespaced_deployment("web", ns).status
    assert (status.replicas, status.ready_replicas, status.available_replicas, status.updated_replicas) == (
        3,
        3,
        3,
        3,
    )
    assert {c.type: c.status for c in status.conditions} == {"Available": "True", "Progressing": "True"}
    assert {p.status.phase for p in core.list_namespaced_pod(ns, label_selector="app=web").items} == {
        "Running"
    }


def test_a_template_change_creates_revision_2_and_scales_the_old_one_to_zero(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    twin_cluster.advance(5)
    set_image(apps, ns, "web:2")
    twin_cluster.advance(30)
    revisions = by_revision(apps, ns)
    assert sorted(revisions) == [1, 2]
    assert revisions[2].spec.template.spec.containers[0].image == "web:2"
    assert revisions[2].spec.replicas == 3
    assert revisions[1].spec.replicas == 0
    assert revisions[2].metadata.owner_references[0].name == "web"
    deployment = apps.read_namespaced_deployment("web", ns)
    assert deployment.metadata.annotations[REVISION] == "2"
    assert deployment.status.observed_generation == deployment.metadata.generation


def test_two_template_changes_keep_the_history_and_rollout_undo_restores_the_previous_one(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    for image in ("web:2", "web:3"):
        twin_cluster.advance(5)
        set_image(apps, ns, image)
    twin_cluster.advance(30)
    revisions = by_revision(apps, ns)
    assert {n: rs.spec.template.spec.containers[0].image for n, rs in revisions.items()} == {
        1: "web:1",
        2: "web:2",
        3: "web:3",
    }
    # `kubectl rollout undo`: the previous revision's template (without pod-template-hash) goes back
    # through a JSON patch, together with the deployment's annotations.
    previous = client.ApiClient().sanitize_for_serialization(revisions[2].spec.template)
    del previous["metadata"]["labels"]["pod-template-hash"]
    apps.patch_namespaced_deployment(
        "web", ns, [{"op": "replace", "path": "/spec/template", "value": previous}]
    )
    twin_cluster.advance(30)
    revisions = by_revision(apps, ns)
    assert sorted(revisions) == [1, 3, 4]
    assert revisions[4].spec.template.spec.containers[0].image == "web:2"
    assert revisions[4].metadata.annotations["deployment.kubernetes.io/revision-history"] == "2"
    assert revisions[4].spec.replicas == 3
    deployment = apps.read_namespaced_deployment("web", ns)
    assert deployment.metadata.annotations[REVISION] == "4"
    assert deployment.spec.template.spec.containers[0].image == "web:2"


def test_rollout_restart_annotation_rolls_new_pods(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    twin_cluster.advance(5)
    old_pods = {
        p.metadata.name for p in client.CoreV1Api(twin_cluster.api_client()).list_namespaced_pod(ns).items
    }
    apps.patch_namespaced_deployment(
        "web",
        ns,
        {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T12:00:00Z"}}
                }
            }
        },
    )
    twin_cluster.advance(30)
    new_pods = {
        p.metadata.name for p in client.CoreV1Api(twin_cluster.api_client()).list_namespaced_pod(ns).items
    }
    assert len(new_pods) == 3
    assert not old_pods & new_pods
    assert sorted(by_revision(apps, ns)) == [1, 2]


def test_revision_history_limit_is_honoured(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body(revisionHistoryLimit=2))
    for image in ("web:2", "web:3", "web:4", "web:5"):
        twin_cluster.advance(5)
        set_image(apps, ns, image)
    twin_cluster.advance(30)
    assert sorted(by_revision(apps, ns)) == [3, 4, 5]


def test_a_job_completes_after_its_time(twin_cluster):
    batch = client.BatchV1Api(twin_cluster.api_client())
    ns = twin_cluster.namespace
    batch.create_namespaced_job(
        ns,
        {
            "metadata": {"name": "retrain"},
            "spec": {
                "template": {
                    "metadata": {"annotations": {"twin.aiops.dev/run-seconds": "20"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "train", "image": "trainer:1"}],
                    },
                }
            },
        },
    )
    twin_cluster.step()
    job = batch.read_namespaced_job("retrain", ns)
    assert job.status.active == 1
    assert job.status.start_time is not None
    twin_cluster.advance(21)
    assert batch.read_namespaced_job("retrain", ns).status.succeeded is None
    twin_cluster.advance(1.5)
    job = batch.read_namespaced_job("retrain", ns)
    assert job.status.succeeded == 1
    assert job.status.completion_time is not None
    assert [c.type for c in job.status.conditions if c.status == "True"] == ["SuccessCriteriaMet", "Complete"]


def test_background_controllers_converge_on_the_wall_clock(twin_factory):
    env = twin_factory(clock=WallClock(), config=TwinConfig(pod_start_seconds=0.05), background=True)
    apps = client.AppsV1Api(env.api_client())
    apps.create_namespaced_deployment(env.namespace, deployment_body(replicas=2))
    deadline = time.monotonic() + 5
    while (apps.read_namespaced_deployment("web", env.namespace).status.available_replicas or 0) < 2:
        assert time.monotonic() < deadline, "the deployment never became available"
        time.sleep(0.02)


def test_kube_env_gives_a_namespace_and_clients(kube_env):
    core = client.CoreV1Api(kube_env.api_client())
    assert core.read_namespace(kube_env.namespace).status.phase == "Active"
