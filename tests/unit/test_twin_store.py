"""The twin's REST semantics in-process (no sockets): metadata, versions, validation, status, lists."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.clock import ManualClock
from simulations.twin import KubeApi, Store
from simulations.twin.errors import ApiError
from simulations.twin.resources.apps import DEPLOYMENTS
from simulations.twin.resources.core import NAMESPACES

START = 1_700_000_000.0


@pytest.fixture
def api() -> KubeApi:
    store = Store(ManualClock(START))
    store.create(NAMESPACES, "", {"metadata": {"name": "default"}})
    return KubeApi(store)


def call(api: KubeApi, method: str, path: str, body=None, content_type: str = "application/json"):
    raw = b"" if body is None else json.dumps(body).encode()
    response = api.handle(method, path, {"Content-Type": content_type}, raw)
    return response.code, response.body


def deployment(name: str = "web", image: str = "web:1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"


def test_create_sets_system_metadata_and_defaults(api):
    code, obj = call(api, "POST", DEPLOYS, deployment())
    assert code == 201
    meta = obj["metadata"]
    assert meta["generation"] == 1
    assert meta["creationTimestamp"] == "2023-11-14T22:13:20Z"
    assert meta["resourceVersion"].isdigit()
    assert len(meta["uid"]) == 36
    assert obj["spec"]["replicas"] == 1
    assert obj["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert obj["spec"]["revisionHistoryLimit"] == 10
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert obj["status"] == {}


def test_generation_moves_on_spec_and_annotation_changes_only(api):
    _, obj = call(api, "POST", DEPLOYS, deployment())
    obj["metadata"]["labels"]["extra"] = "1"
    _, relabelled = call(api, "PUT", f"{DEPLOYS}/web", obj)
    assert relabelled["metadata"]["generation"] == 1
    relabelled["spec"]["replicas"] = 4
    _, scaled = call(api, "PUT", f"{DEPLOYS}/web", relabelled)
    assert scaled["metadata"]["generation"] == 2
    scaled["metadata"]["annotations"] = {"note": "x"}
    _, annotated = call(api, "PUT", f"{DEPLOYS}/web", scaled)
    assert annotated["metadata"]["generation"] == 3


def test_noop_update_keeps_resource_version(api):
    _, obj = call(api, "POST", DEPLOYS, deployment())
    _, same = call(api, "PUT", f"{DEPLOYS}/web", obj)
    assert same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_stale_resource_version_is_a_conflict(api):
    _, obj = call(api, "POST", DEPLOYS, deployment())
    fresh = json.loads(json.dumps(obj))
    fresh["spec"]["replicas"] = 2
    assert call(api, "PUT", f"{DEPLOYS}/web", fresh)[0] == 200
    obj["spec"]["replicas"] = 3
    code, status = call(api, "PUT", f"{DEPLOYS}/web", obj)
    assert code == 409
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert status["details"] == {"name": "web", "group": "apps", "kind": "deployments"}


def test_status_is_separate_from_the_main_resource(api):
    _, obj = call(api, "POST", DEPLOYS, deployment())
    obj["status"] = {"replicas": 7}
    _, updated = call(api, "PUT", f"{DEPLOYS}/web", obj)
    assert updated["status"] == {}
    updated["status"] = {"replicas": 7}
    updated["spec"]["replicas"] = 9
    _, via_status = call(api, "PUT", f"{DEPLOYS}/web/status", updated)
    assert via_status["status"] == {"replicas": 7}
    assert via_status["spec"]["replicas"] == 1
    assert via_status["metadata"]["generation"] == 1


def test_validation_errors_are_422_with_causes(api):
    bad = deployment("Bad_Name")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    bad["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    code, status = call(api, "POST", DEPLOYS, bad)
    assert code == 422
    assert status["reason"] == "Invalid"
    fields = {c["field"] for c in status["details"]["causes"]}
    assert {"metadata.name", "spec.template.spec.containers[0].image"} <= fields
    assert status["details"]["kind"] == "Deployment"
    assert status["message"].startswith(
        'Deployment.apps "Bad_Name" is invalid: [metadata.name: Invalid value: "Bad_Name"'
    )


def test_selector_is_immutable(api):
    _, obj = call(api, "POST", DEPLOYS, deployment())
    obj["spec"]["selector"] = {"matchLabels": {"app": "web", "x": "y"}}
    obj["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    code, status = call(api, "PUT", f"{DEPLOYS}/web", obj)
    assert code == 422
    assert status["details"]["causes"][0]["field"] == "spec.selector"


def test_create_in_missing_namespace_is_404(api):
    code, status = call(api, "POST", "/apis/apps/v1/namespaces/nope/deployments", deployment())
    assert code == 404
    assert status["message"] == 'namespaces "nope" not found'


def test_already_exists(api):
    call(api, "POST", DEPLOYS, deployment())
    code, status = call(api, "POST", DEPLOYS, deployment())
    assert (code, status["reason"]) == (409, "AlreadyExists")


def test_generate_name(api):
    body = deployment()
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "web-"
    _, obj = call(api, "POST", DEPLOYS, body)
    assert obj["metadata"]["name"].startswith("web-")
    assert len(obj["metadata"]["name"]) == len("web-") + 5


def test_list_shape_selectors_and_paging(api):
    for name in ("a", "b", "c"):
        call(api, "POST", DEPLOYS, deployment(name))
    code, listing = call(api, "GET", DEPLOYS + "?labelSelector=app%20in%20(a,c)")
    assert code == 200
    assert listing["kind"] == "DeploymentList"
    assert listing["apiVersion"] == "apps/v1"
    assert listing["metadata"]["resourceVersion"].isdigit()
    assert [i["metadata"]["name"] for i in listing["items"]] == ["a", "c"]
    assert "kind" not in listing["items"][0], "list items carry no kind, as from the real API"
    _, page = call(api, "GET", DEPLOYS + "?limit=2")
    assert [i["metadata"]["name"] for i in page["items"]] == ["a", "b"]
    assert page["metadata"]["remainingItemCount"] == 1
    _, rest = call(api, "GET", DEPLOYS + "?limit=2&continue=" + page["metadata"]["continue"])
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c"]
    _, everywhere = call(api, "GET", "/apis/apps/v1/deployments?fieldSelector=metadata.name%3Db")
    assert [i["metadata"]["name"] for i in everywhere["items"]] == ["b"]


def test_watch_is_refused(api):
    code, status = call(api, "GET", DEPLOYS + "?watch=true")
    assert code == 405
    assert "watch is not supported" in status["message"]


def test_unknown_paths_are_404(api):
    assert call(api, "GET", "/apis/apps/v1/namespaces/default/widgets")[0] == 404
    assert call(api, "GET", "/apis/nope/v1")[0] == 404
    assert call(api, "GET", "/api/v1/namespaces/default/deployments")[0] == 404


def test_discovery(api):
    _, groups = call(api, "GET", "/apis")
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "batch", "autoscaling", "coordination.k8s.io", "events.k8s.io"} <= names
    _, apps = call(api, "GET", "/apis/apps/v1")
    entries = {r["name"]: r for r in apps["resources"]}
    assert entries["deployments/scale"]["kind"] == "Scale"
    assert entries["deployments"]["shortNames"] == ["deploy"]
    _, core = call(api, "GET", "/api")
    assert core["versions"] == ["v1"]


def test_dry_run_writes_nothing(api):
    code, obj = call(api, "POST", DEPLOYS + "?dryRun=All", deployment())
    assert code == 201
    assert obj["metadata"]["name"] == "web"
    assert call(api, "GET", f"{DEPLOYS}/web")[0] == 404


def test_delete_returns_success_status_and_preconditions(api):
    _, obj = call(api, "POST", DEPLOYS, deployment())
    code, status = call(api, "DELETE", f"{DEPLOYS}/web", {"preconditions": {"uid": "other"}})
    assert (code, status["reason"]) == (409, "Conflict")
    code, status = call(api, "DELETE", f"{DEPLOYS}/web")
    assert code == 200
    assert status["status"] == "Success"
    assert status["details"]["uid"] == obj["metadata"]["uid"]
    assert call(api, "DELETE", f"{DEPLOYS}/web")[0] == 404


def test_finalizers_hold_deletion_until_removed(api):
    body = deployment()
    body["metadata"]["finalizers"] = ["example.com/hold"]
    call(api, "POST", DEPLOYS, body)
    code, held = call(api, "DELETE", f"{DEPLOYS}/web")
    assert code == 200
    assert held["metadata"]["deletionTimestamp"]
    held["metadata"]["finalizers"] = []
    call(api, "PUT", f"{DEPLOYS}/web", held)
    assert call(api, "GET", f"{DEPLOYS}/web")[0] == 404


def test_unsupported_patch_types(api):
    call(api, "POST", DEPLOYS, deployment())
    assert call(api, "PATCH", f"{DEPLOYS}/web", {}, "application/apply-patch+yaml")[0] == 415
    assert call(api, "PATCH", f"{DEPLOYS}/web", {}, "text/plain")[0] == 415


def test_internal_errors_become_status(api, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("kaput")

    monkeypatch.setattr(api.store, "list", boom)
    code, status = call(api, "GET", DEPLOYS)
    assert (code, status["reason"]) == (500, "InternalError")


def test_store_errors_name_the_resource():
    store = Store(ManualClock(START))
    with pytest.raises(ApiError) as caught:
        store.get(DEPLOYMENTS, "default", "gone")
    assert caught.value.message == 'deployments.apps "gone" not found'
