"""Rollouts, rollbacks, pods and Jobs on the twin, driven through the official client over HTTP."""

from __future__ import annotations

import time
from typing import Any, Protocol

import pytest
from kubernetes import client

from agent.clock import WallClock
from simulations.twin import TwinConfig

pytestmark = pytest.mark.integration

REVISION = "deployment.kubernetes.io/revision"


class HasMetadata(Protocol):
    @property
    def metadata(self) -> client.V1ObjectMeta | None: ...


def meta(obj: HasMetadata) -> client.V1ObjectMeta:
    assert obj.metadata is not None, f"{type(obj).__name__} without metadata"
    return obj.metadata


def annotations_of(obj: HasMetadata) -> dict[str, str]:
    found = meta(obj).annotations
    assert found is not None, f"{meta(obj).name} has no annotations"
    return found


def owners(obj: HasMetadata) -> list[client.V1OwnerReference]:
    found = meta(obj).owner_references
    assert found is not None, f"{meta(obj).name} has no owner references"
    return found


def phase(pod: client.V1Pod) -> str | None:
    assert pod.status is not None
    return pod.status.phase


def image_of(rs: client.V1ReplicaSet) -> str | None:
    """The image of the first container in a ReplicaSet's pod template."""
    template = rs.spec.template
    assert template is not None
    assert template.spec is not None
    return template.spec.containers[0].image


def available_replicas(deployment: client.V1Deployment) -> int | None:
    assert deployment.status is not None
    return deployment.status.available_replicas


def job_status(job: client.V1Job) -> client.V1JobStatus:
    assert job.status is not None
    return job.status


def deployment_body(
    name: str = "web", image: str = "web:1", replicas: int = 3, **spec: Any
) -> dict[str, Any]:
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
    return {int(annotations_of(rs)[REVISION]): rs for rs in sets}


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
    assert {phase(p) for p in pods} == {"Pending"}
    assert {owners(p)[0].kind for p in pods} == {"ReplicaSet"}
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
    assert {phase(p) for p in core.list_namespaced_pod(ns, label_selector="app=web").items} == {"Running"}


def test_a_template_change_creates_revision_2_and_scales_the_old_one_to_zero(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    twin_cluster.advance(5)
    set_image(apps, ns, "web:2")
    twin_cluster.advance(30)
    revisions = by_revision(apps, ns)
    assert sorted(revisions) == [1, 2]
    assert image_of(revisions[2]) == "web:2"
    assert revisions[2].spec.replicas == 3
    assert revisions[1].spec.replicas == 0
    assert owners(revisions[2])[0].name == "web"
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
    assert {n: image_of(rs) for n, rs in revisions.items()} == {
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
    assert image_of(revisions[4]) == "web:2"
    assert annotations_of(revisions[4])["deployment.kubernetes.io/revision-history"] == "2"
    assert revisions[4].spec.replicas == 3
    deployment = apps.read_namespaced_deployment("web", ns)
    assert deployment.metadata.annotations[REVISION] == "4"
    assert deployment.spec.template.spec.containers[0].image == "web:2"


def test_rollout_restart_annotation_rolls_new_pods(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    twin_cluster.advance(5)
    old_pods = {
        meta(p).name for p in client.CoreV1Api(twin_cluster.api_client()).list_namespaced_pod(ns).items
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
        meta(p).name for p in client.CoreV1Api(twin_cluster.api_client()).list_namespaced_pod(ns).items
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
        client.V1Job.model_validate(
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
            }
        ),
    )
    twin_cluster.step()
    status = job_status(batch.read_namespaced_job("retrain", ns))
    assert status.active == 1
    assert status.start_time is not None
    twin_cluster.advance(21)
    assert job_status(batch.read_namespaced_job("retrain", ns)).succeeded is None
    twin_cluster.advance(1.5)
    status = job_status(batch.read_namespaced_job("retrain", ns))
    assert status.succeeded == 1
    assert status.completion_time is not None
    assert status.conditions is not None
    assert [c.type for c in status.conditions if c.status == "True"] == ["SuccessCriteriaMet", "Complete"]


def test_background_controllers_converge_on_the_wall_clock(twin_factory):
    env = twin_factory(clock=WallClock(), config=TwinConfig(pod_start_seconds=0.05), background=True)
    apps = client.AppsV1Api(env.api_client())
    apps.create_namespaced_deployment(
        env.namespace, client.V1Deployment.model_validate(deployment_body(replicas=2))
    )
    deadline = time.monotonic() + 5
    while (available_replicas(apps.read_namespaced_deployment("web", env.namespace)) or 0) < 2:
        assert time.monotonic() < deadline, "the deployment never became available"
        time.sleep(0.02)


def test_kube_env_gives_a_namespace_and_clients(kube_env):
    core = client.CoreV1Api(kube_env.api_client())
    namespace = core.read_namespace(kube_env.namespace)
    assert namespace.status is not None
    assert namespace.status.phase == "Active"
