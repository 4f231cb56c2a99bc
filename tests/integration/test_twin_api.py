"""The official kubernetes client, unchanged, against the twin API server over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest
from kubernetes import client
from kubernetes.client import ApiException

pytestmark = pytest.mark.integration


class HasMetadata(Protocol):
    @property
    def metadata(self) -> client.V1ObjectMeta | None: ...


def meta(obj: HasMetadata) -> client.V1ObjectMeta:
    assert obj.metadata is not None, f"{type(obj).__name__} without metadata"
    return obj.metadata


def name_of(obj: HasMetadata) -> str:
    name = meta(obj).name
    assert name is not None
    return name


def lease_spec(lease: client.V1Lease) -> client.V1LeaseSpec:
    assert lease.spec is not None
    return lease.spec


def status_body(error: ApiException) -> dict[str, Any]:
    """The Status object the server sent with an error response."""
    assert error.body is not None
    body: dict[str, Any] = json.loads(error.body)
    return body


def deployment_body(name: str = "web", image: str = "web:1", replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name, "tier": "front"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "app", "image": image, "env": [{"name": "MODE", "value": "a"}]}]
                },
            },
        },
    }


@pytest.fixture
def apps(twin_cluster) -> client.AppsV1Api:
    return client.AppsV1Api(twin_cluster.api_client())


@pytest.fixture
def core(twin_cluster) -> client.CoreV1Api:
    return client.CoreV1Api(twin_cluster.api_client())


def test_create_get_list_replace_delete_deployment(twin_cluster, apps):
    ns = twin_cluster.namespace
    created = apps.create_namespaced_deployment(ns, deployment_body())
    assert created.metadata.uid
    assert created.metadata.generation == 1
    assert created.spec.strategy.rolling_update.max_surge == "25%"
    got = apps.read_namespaced_deployment("web", ns)
    assert got.metadata.resource_version == created.metadata.resource_version
    assert isinstance(got.metadata.creation_timestamp, datetime)
    apps.create_namespaced_deployment(ns, deployment_body("api"))
    listing = apps.list_namespaced_deployment(ns, label_selector="app in (web,db),tier=front")
    assert [d.metadata.name for d in listing.items] == ["web"]
    assert listing.metadata.resource_version
    everywhere = apps.list_deployment_for_all_namespaces(field_selector="metadata.name=api")
    assert [d.metadata.name for d in everywhere.items] == ["api"]
    got.spec.replicas = 5
    replaced = apps.replace_namespaced_deployment("web", ns, got)
    assert replaced.spec.replicas == 5
    assert replaced.metadata.generation == 2
    status = apps.delete_namespaced_deployment("web", ns)
    # Client v37 types this response as a plain object: the Status arrives as a dict.
    assert status["kind"] == "Status"
    assert status["status"] == "Success"
    with pytest.raises(ApiException) as caught:
        apps.read_namespaced_deployment("web", ns)
    assert caught.value.status == 404


def test_not_found_status_body(twin_cluster, apps):
    with pytest.raises(ApiException) as caught:
        apps.read_namespaced_deployment("missing", twin_cluster.namespace)
    error = caught.value
    assert error.status == 404
    assert error.reason == "Not Found"
    body = status_body(error)
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "missing" not found',
        "reason": "NotFound",
        "details": {"name": "missing", "group": "apps", "kind": "deployments"},
        "code": 404,
    }
    assert error.headers is not None
    assert error.headers["Content-Type"] == "application/json"


def test_stale_resource_version_is_409(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    first = apps.read_namespaced_deployment("web", ns)
    second = apps.read_namespaced_deployment("web", ns)
    first.spec.replicas = 3
    apps.replace_namespaced_deployment("web", ns, first)
    second.spec.replicas = 4
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("web", ns, second)
    assert caught.value.status == 409
    assert status_body(caught.value)["reason"] == "Conflict"


def test_already_exists_is_409(twin_cluster, apps):
    apps.create_namespaced_deployment(twin_cluster.namespace, deployment_body())
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment(twin_cluster.namespace, deployment_body())
    assert caught.value.status == 409
    assert status_body(caught.value)["reason"] == "AlreadyExists"


def test_invalid_name_is_422(twin_cluster, apps):
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment(twin_cluster.namespace, deployment_body("Not_A_Name"))
    assert caught.value.status == 422
    body = status_body(caught.value)
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert "RFC 1123 subdomain" in body["message"]


def test_missing_required_fields_are_422(twin_cluster, apps):
    # The v37 client validates typed bodies itself, so take fields away with a patch instead.
    apps.create_namespaced_deployment(twin_cluster.namespace, deployment_body())
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment(
            "web",
            twin_cluster.namespace,
            [
                {"op": "remove", "path": "/spec/selector"},
                {"op": "remove", "path": "/spec/template/spec/containers/0/image"},
            ],
        )
    assert caught.value.status == 422
    causes = status_body(caught.value)["details"]["causes"]
    assert {(c["field"], c["reason"]) for c in causes} >= {
        ("spec.selector", "FieldValueRequired"),
        ("spec.template.spec.containers[0].image", "FieldValueRequired"),
    }


def test_strategic_merge_patch_is_the_default_for_a_dict(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    patched = apps.patch_namespaced_deployment(
        "web",
        ns,
        {
            "spec": {
                "template": {
                    "metadata": {
                        "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}
                    },
                    "spec": {"containers": [{"name": "app", "env": [{"name": "EXTRA", "value": "1"}]}]},
                }
            }
        },
    )
    container = patched.spec.template.spec.containers[0]
    assert container.image == "web:1", "containers merge by name"
    assert [e.name for e in container.env] == ["MODE", "EXTRA"], "env merges by name"
    assert patched.spec.template.metadata.annotations == {
        "kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"
    }
    assert patched.metadata.generation == 2
    request = twin_cluster.server.requests[-1]
    assert request.content_type == "application/strategic-merge-patch+json"


def test_merge_patch_replaces_lists(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    patched = apps.patch_namespaced_deployment(
        "web",
        ns,
        {
            "metadata": {"labels": {"tier": None}},
            "spec": {"template": {"spec": {"containers": [{"name": "new", "image": "n:1"}]}}},
        },
        _content_type="application/merge-patch+json",
    )
    assert [c.name for c in patched.spec.template.spec.containers] == ["new"]
    assert "tier" not in patched.metadata.labels


def test_json_patch_for_a_list_body(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    patched = apps.patch_namespaced_deployment(
        "web",
        ns,
        [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:9"},
            {"op": "add", "path": "/metadata/annotations", "value": {"owner": "me"}},
        ],
    )
    assert patched.spec.template.spec.containers[0].image == "web:9"
    assert patched.metadata.annotations["owner"] == "me"
    assert twin_cluster.server.requests[-1].content_type == "application/json-patch+json"
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment("web", ns, [{"op": "test", "path": "/spec/replicas", "value": 7}])
    assert caught.value.status == 422


def test_patch_with_stale_resource_version_is_409(twin_cluster, apps):
    ns = twin_cluster.namespace
    created = apps.create_namespaced_deployment(ns, deployment_body())
    apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 3}})
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment(
            "web",
            ns,
            {"metadata": {"resourceVersion": created.metadata.resource_version}, "spec": {"replicas": 4}},
        )
    assert caught.value.status == 409


def test_scale_subresource(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body(replicas=2))
    twin_cluster.advance(5)
    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert (scale.kind, scale.api_version) == ("Scale", "autoscaling/v1")
    assert scale.spec.replicas == 2
    assert scale.status.replicas == 2
    assert scale.status.selector == "app=web"
    scale.spec.replicas = 4
    replaced = apps.replace_namespaced_deployment_scale("web", ns, scale)
    assert replaced.spec.replicas == 4
    patched = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 6}})
    assert patched.spec.replicas == 6
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 6
    twin_cluster.advance(5)
    assert apps.read_namespaced_deployment_scale("web", ns).status.replicas == 6
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment_scale("web", ns, scale)
    assert caught.value.status == 409, "the Scale carries the old resourceVersion"
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": -1}})
    assert caught.value.status == 422
    zero = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 0}})
    assert zero.spec.replicas is None, "zero replicas are omitted from a Scale, as from the real API"


def test_statefulset_scale(twin_cluster, apps):
    ns = twin_cluster.namespace
    body = deployment_body("db", replicas=1)
    body["kind"] = "StatefulSet"
    body["spec"]["serviceName"] = "db"
    apps.create_namespaced_stateful_set(ns, body)
    apps.patch_namespaced_stateful_set_scale("db", ns, {"spec": {"replicas": 3}})
    twin_cluster.advance(10)
    pods = client.CoreV1Api(twin_cluster.api_client()).list_namespaced_pod(ns, label_selector="app=db")
    assert sorted(name_of(p) for p in pods.items) == ["db-0", "db-1", "db-2"]
    assert apps.read_namespaced_stateful_set_scale("db", ns).status.replicas == 3


def test_namespaces_and_pods(twin_cluster, core):
    core.create_namespace({"metadata": {"name": "team-a"}})
    ns = core.read_namespace("team-a")
    assert ns.status.phase == "Active"
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": "team-a"}
    assert "team-a" in [n.metadata.name for n in core.list_namespace().items]
    pod = core.create_namespaced_pod(
        "team-a", {"metadata": {"name": "solo"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    )
    assert pod.status.phase == "Pending"
    twin_cluster.advance(3)
    running = core.list_namespaced_pod("team-a", field_selector="status.phase=Running")
    assert [p.metadata.name for p in running.items] == ["solo"]
    assert running.items[0].spec.node_name
    assert running.items[0].status.container_statuses[0].ready is True
    deleted = core.delete_namespaced_pod("solo", "team-a")
    assert deleted.metadata.name == "solo", "deleting a pod returns the pod"
    core.delete_namespace("team-a")
    twin_cluster.step()
    with pytest.raises(ApiException) as caught:
        core.read_namespace("team-a")
    assert caught.value.status == 404


def test_events_created_and_listed_by_involved_object(twin_cluster, core):
    ns = twin_cluster.namespace
    now = datetime.now(UTC)
    for name, reason in (("web", "Scaled"), ("api", "Restarted"), ("web", "RolledBack")):
        core.create_namespaced_event(
            ns,
            client.CoreV1Event(
                metadata=client.V1ObjectMeta(generate_name=f"{name}."),
                involved_object=client.V1ObjectReference(
                    kind="Deployment", name=name, namespace=ns, api_version="apps/v1"
                ),
                reason=reason,
                message=f"aiops {reason}",
                type="Normal",
                source=client.V1EventSource(component="aiops-agent"),
                first_timestamp=now,
                last_timestamp=now,
                count=1,
            ),
        )
    listed = core.list_namespaced_event(
        ns, field_selector="involvedObject.name=web,involvedObject.kind=Deployment"
    )
    assert sorted(e.reason for e in listed.items) == ["RolledBack", "Scaled"]
    assert listed.items[0].last_timestamp.microsecond == 0, "metav1.Time has whole seconds"
    by_source = core.list_namespaced_event(ns, field_selector="source=aiops-agent,reason=Restarted")
    assert [e.involved_object.name for e in by_source.items] == ["api"]
    events_v1 = client.EventsV1Api(twin_cluster.api_client())
    created = events_v1.create_namespaced_event(
        ns,
        client.EventsV1Event.model_validate(
            {
                "metadata": {"name": "web.v1"},
                "eventTime": now.isoformat(),
                "regarding": {"kind": "Deployment", "name": "web", "namespace": ns},
                "reason": "Verified",
                "note": "ok",
                "type": "Normal",
                "action": "Verify",
                "reportingController": "aiops.dev/agent",
                "reportingInstance": "agent-0",
            }
        ),
    )
    assert created.regarding is not None
    assert created.regarding.name == "web"
    core_view = core.read_namespaced_event("web.v1", ns)
    assert (core_view.message, core_view.involved_object.name) == ("ok", "web")
    with pytest.raises(ApiException) as caught:
        # Valid for the client's model; the server requires reason, action and the reporting fields.
        events_v1.create_namespaced_event(
            ns,
            client.EventsV1Event.model_validate(
                {"metadata": {"name": "bad"}, "eventTime": now.isoformat(), "type": "Normal"}
            ),
        )
    assert caught.value.status == 422


def test_leases_with_optimistic_concurrency(twin_cluster):
    coordination = client.CoordinationV1Api(twin_cluster.api_client())
    ns = twin_cluster.namespace
    now = datetime.now(UTC)
    lease = coordination.create_namespaced_lease(
        ns,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="aiops-leader"),
            spec=client.V1LeaseSpec(
                holder_identity="a", lease_duration_seconds=15, acquire_time=now, renew_time=now
            ),
        ),
    )
    assert lease_spec(lease).renew_time == now, "MicroTime keeps microseconds"
    mine = coordination.read_namespaced_lease("aiops-leader", ns)
    theirs = coordination.read_namespaced_lease("aiops-leader", ns)
    lease_spec(mine).holder_identity = "b"
    lease_spec(mine).lease_transitions = 1
    updated = coordination.replace_namespaced_lease("aiops-leader", ns, mine)
    assert lease_spec(updated).holder_identity == "b"
    assert meta(updated).generation is None, "leases have no generation"
    lease_spec(theirs).holder_identity = "c"
    with pytest.raises(ApiException) as caught:
        coordination.replace_namespaced_lease("aiops-leader", ns, theirs)
    assert caught.value.status == 409
    bad = coordination.read_namespaced_lease("aiops-leader", ns)
    lease_spec(bad).renew_time = None
    body = client.ApiClient().sanitize_for_serialization(bad)
    body["spec"]["renewTime"] = "2024-01-01T00:00:00"
    with pytest.raises(ApiException) as caught:
        coordination.replace_namespaced_lease("aiops-leader", ns, body)
    assert caught.value.status == 400, "a time without a zone does not decode, as on the real server"


def test_the_client_leader_election_lease_lock_round_trips(twin_cluster):
    from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    lock = LeaseLock("aiops-agent", twin_cluster.namespace, "agent-0")
    lock.api_instance = client.CoordinationV1Api(twin_cluster.api_client())
    found, _ = lock.get("aiops-agent", twin_cluster.namespace)
    assert not found
    stamp = "2024-05-01 12:00:00.250000"
    record = LeaderElectionRecord("agent-0", "15", stamp, stamp)
    assert lock.create("aiops-agent", twin_cluster.namespace, record)
    found, read = lock.get("aiops-agent", twin_cluster.namespace)
    assert found
    assert read.holder_identity == "agent-0"
    assert lock.update(
        "aiops-agent", twin_cluster.namespace, LeaderElectionRecord("agent-0", "15", stamp, stamp)
    )


def test_hpa_v2_and_jobs_and_cronjobs(twin_cluster, apps):
    ns = twin_cluster.namespace
    apps.create_namespaced_deployment(ns, deployment_body())
    autoscaling = client.AutoscalingV2Api(twin_cluster.api_client())
    hpa = autoscaling.create_namespaced_horizontal_pod_autoscaler(
        ns,
        client.V2HorizontalPodAutoscaler.model_validate(
            {
                "metadata": {"name": "web"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "maxReplicas": 8,
                },
            }
        ),
    )
    assert hpa.spec.min_replicas == 1
    assert hpa.status is not None
    assert hpa.status.desired_replicas == 0
    autoscaling.patch_namespaced_horizontal_pod_autoscaler("web", ns, {"spec": {"minReplicas": 4}})
    twin_cluster.step()
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 4
    with pytest.raises(ApiException) as caught:
        autoscaling.patch_namespaced_horizontal_pod_autoscaler("web", ns, {"spec": {"minReplicas": 9}})
    assert caught.value.status == 422
    batch = client.BatchV1Api(twin_cluster.api_client())
    cron = batch.create_namespaced_cron_job(
        ns,
        client.V1CronJob.model_validate(
            {
                "metadata": {"name": "retrain"},
                "spec": {
                    "schedule": "0 3 * * *",
                    "jobTemplate": {
                        "metadata": {"labels": {"app": "retrain"}},
                        "spec": {
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [{"name": "t", "image": "t:1"}],
                                }
                            }
                        },
                    },
                },
            }
        ),
    )
    # What `kubectl create job --from=cronjob/retrain` sends.
    job = batch.create_namespaced_job(
        ns,
        client.V1Job.model_validate(
            {
                "metadata": {
                    "name": "retrain-manual",
                    "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                    "labels": meta(cron.spec.job_template).labels,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "CronJob",
                            "name": "retrain",
                            "uid": meta(cron).uid,
                            "controller": True,
                        }
                    ],
                },
                "spec": client.ApiClient().sanitize_for_serialization(cron.spec.job_template.spec),
            }
        ),
    )
    assert job.spec is not None
    assert job.spec.backoff_limit == 6
    with pytest.raises(ApiException) as caught:
        # Valid for the client's model; the server rejects the defaulted restartPolicy Always.
        batch.create_namespaced_job(
            ns,
            client.V1Job.model_validate(
                {
                    "metadata": {"name": "always"},
                    "spec": {"template": {"spec": {"containers": [{"name": "t", "image": "t:1"}]}}},
                }
            ),
        )
    assert caught.value.status == 422, "Jobs may not restart Always"


def test_dynamic_client_discovers_the_twin(twin_cluster):
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(twin_cluster.api_client())
    deployments = dynamic.resources.get(api_version="apps/v1", kind="Deployment")
    dynamic_body = deployment_body("dyn")
    deployments.create(body=dynamic_body, namespace=twin_cluster.namespace)
    got = deployments.get(name="dyn", namespace=twin_cluster.namespace)
    assert got.spec.replicas == 2
    version = client.VersionApi(twin_cluster.api_client()).get_code()
    assert version.major == "1"


def configmap_body(name: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **extra}, "data": data}


def test_configmaps_with_labels_and_optimistic_concurrency(twin_cluster, core):
    ns = twin_cluster.namespace
    labels = {"aiops.dev/approval": "true"}
    created = core.create_namespaced_config_map(ns, configmap_body("a-1", {"record": "{}"}, labels=labels))
    assert meta(created).resource_version
    assert meta(created).generation is None, "configmaps have no generation"
    core.create_namespaced_config_map(ns, configmap_body("other", {"x": "1"}))
    core.create_namespaced_config_map(ns, {**configmap_body("bin", {}), "binaryData": {"blob": "AAEC"}})
    listed = core.list_namespaced_config_map(ns, label_selector="aiops.dev/approval=true")
    assert [name_of(cm) for cm in listed.items] == ["a-1"]
    mine = core.read_namespaced_config_map("a-1", ns)
    theirs = core.read_namespaced_config_map("a-1", ns)
    mine.data = {"record": '{"state": "approved"}'}
    updated = core.replace_namespaced_config_map("a-1", ns, mine)
    assert updated.data == {"record": '{"state": "approved"}'}
    theirs.data = {"record": '{"state": "expired"}'}
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_config_map("a-1", ns, theirs)
    assert caught.value.status == 409
    assert status_body(caught.value)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("a-1", ns).data == {"record": '{"state": "approved"}'}
    stale = meta(theirs).resource_version
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_config_map(
            "a-1",
            ns,
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=stale)),
        )
    assert caught.value.status == 409
    core.delete_namespaced_config_map("a-1", ns)
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_config_map("a-1", ns)
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (configmap_body("k", {"no/slash": "x"}), "data[no/slash]", "FieldValueInvalid"),
        (configmap_body("k", {"..hidden": "x"}), "data[..hidden]", "FieldValueInvalid"),
        (configmap_body("k", {"big": "x" * (1024 * 1024 + 1)}), "data", "FieldValueTooLong"),
        ({**configmap_body("k", {"a": "x"}), "binaryData": {"a": "AAEC"}}, "data[a]", "FieldValueInvalid"),
        (
            {**configmap_body("k", {}), "binaryData": {"b": "not base64!"}},
            "binaryData[b]",
            "FieldValueInvalid",
        ),
        (configmap_body("Not_A_Name", {}), "metadata.name", "FieldValueInvalid"),
    ],
)
def test_invalid_configmaps_are_422_naming_the_field(twin_cluster, core, body, field, reason):
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map(twin_cluster.namespace, body)
    assert caught.value.status == 422
    causes = status_body(caught.value)["details"]["causes"]
    assert (field, reason) in {(c["field"], c["reason"]) for c in causes}


def test_an_immutable_configmap_keeps_its_data(twin_cluster, core):
    ns = twin_cluster.namespace
    core.create_namespaced_config_map(ns, {**configmap_body("frozen", {"a": "1"}), "immutable": True})
    frozen = core.read_namespaced_config_map("frozen", ns)
    frozen.data = {"a": "2"}
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_config_map("frozen", ns, frozen)
    assert caught.value.status == 422
    assert status_body(caught.value)["details"]["causes"][0]["field"] == "data"
    assert core.read_namespaced_config_map("frozen", ns).data == {"a": "1"}
