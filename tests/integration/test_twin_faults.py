"""Each injected fault as the official client sees it: 500, 429 with Retry-After, latency, drops."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client import ApiException

pytestmark = pytest.mark.integration


def deployment_body(name: str = "web") -> client.V1Deployment:
    return client.V1Deployment.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "web:1"}]},
                },
            },
        }
    )


def status_body(error: ApiException) -> dict[str, Any]:
    """The Status object the server sent with an error response."""
    assert error.body is not None
    body: dict[str, Any] = json.loads(error.body)
    return body


@pytest.fixture
def apps(twin_cluster) -> client.AppsV1Api:
    api = client.AppsV1Api(twin_cluster.api_client())
    api.create_namespaced_deployment(twin_cluster.namespace, deployment_body())
    return api


def test_500_for_the_next_request_only(twin_cluster, apps):
    fault = twin_cluster.server.faults.error(500, verb="get", resource="deployments", count=1)
    with pytest.raises(ApiException) as caught:
        apps.read_namespaced_deployment("web", twin_cluster.namespace)
    assert caught.value.status == 500
    body = status_body(caught.value)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "InternalError", 500)
    assert fault.hits == 1
    assert apps.read_namespaced_deployment("web", twin_cluster.namespace).metadata.name == "web"


def test_faults_match_verb_and_resource(twin_cluster, apps):
    twin_cluster.server.faults.error(503, verb="patch", resource="deployments/scale")
    assert apps.read_namespaced_deployment_scale("web", twin_cluster.namespace).spec.replicas == 1
    apps.patch_namespaced_deployment("web", twin_cluster.namespace, {"metadata": {"labels": {"x": "y"}}})
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("web", twin_cluster.namespace, {"spec": {"replicas": 2}})
    assert caught.value.status == 503
    twin_cluster.server.faults.clear()
    assert (
        apps.patch_namespaced_deployment_scale(
            "web", twin_cluster.namespace, {"spec": {"replicas": 2}}
        ).spec.replicas
        == 2
    )


def test_429_carries_retry_after(twin_cluster, apps):
    twin_cluster.server.faults.throttle(retry_after=3, verb="patch", count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            apps.patch_namespaced_deployment("web", twin_cluster.namespace, {"spec": {"replicas": 2}})
        assert caught.value.status == 429
        assert caught.value.headers is not None
        assert caught.value.headers["Retry-After"] == "3"
        body = status_body(caught.value)
        assert (body["reason"], body["details"]["retryAfterSeconds"]) == ("TooManyRequests", 3)
    assert (
        apps.patch_namespaced_deployment(
            "web", twin_cluster.namespace, {"spec": {"replicas": 2}}
        ).spec.replicas
        == 2
    )


def test_urllib3_retries_an_idempotent_429_after_retry_after(twin_cluster, apps):
    # urllib3's default Retry honours Retry-After on 413/429/503 for GET, PUT and DELETE: callers
    # see the throttling only as delay, until its three retries run out.
    fault = twin_cluster.server.faults.throttle(retry_after=0, verb="list", count=1)
    assert len(apps.list_namespaced_deployment(twin_cluster.namespace).items) == 1
    assert fault.hits == 1
    twin_cluster.server.faults.throttle(retry_after=0, verb="list")
    with pytest.raises(ApiException) as caught:
        apps.list_namespaced_deployment(twin_cluster.namespace)
    assert caught.value.status == 429
    assert [r.code for r in twin_cluster.server.requests if r.info.verb == "list"] == [
        429,
        200,
        429,
        429,
        429,
        429,
    ]


def test_latency_trips_a_client_timeout(twin_cluster, apps):
    twin_cluster.server.faults.latency(0.5, verb="patch", count=1)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        apps.patch_namespaced_deployment(
            "web", twin_cluster.namespace, {"spec": {"replicas": 2}}, _request_timeout=(1, 0.1)
        )
    assert time.monotonic() - started < 0.45
    # A GET that times out is retried by urllib3 (three times) before it gives up.
    twin_cluster.server.faults.latency(0.3, verb="get")
    with pytest.raises(urllib3.exceptions.MaxRetryError) as caught:
        apps.read_namespaced_deployment("web", twin_cluster.namespace, _request_timeout=(1, 0.05))
    assert isinstance(caught.value.reason, urllib3.exceptions.ReadTimeoutError)
    twin_cluster.server.faults.clear()
    twin_cluster.server.faults.latency(0.2, verb="get", count=1)
    started = time.monotonic()
    apps.read_namespaced_deployment("web", twin_cluster.namespace, _request_timeout=(1, 2))
    assert time.monotonic() - started >= 0.2


def test_dropped_connection_is_a_urllib3_error(twin_cluster, apps):
    fault = twin_cluster.server.faults.drop(verb="patch", resource="deployments", count=1)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        apps.patch_namespaced_deployment("web", twin_cluster.namespace, {"spec": {"replicas": 2}})
    assert fault.hits == 1
    assert apps.read_namespaced_deployment("web", twin_cluster.namespace).spec.replicas == 1, (
        "nothing was written"
    )
    assert [r.code for r in twin_cluster.server.requests if r.info.verb == "patch"] == [0]


def test_urllib3_retries_a_dropped_get_by_itself(twin_cluster, apps):
    twin_cluster.server.faults.drop(verb="get", resource="deployments", count=1)
    assert apps.read_namespaced_deployment("web", twin_cluster.namespace).metadata.name == "web"
    twin_cluster.server.faults.drop(verb="get", resource="deployments")
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        apps.read_namespaced_deployment("web", twin_cluster.namespace)


def test_request_log_names_verbs_and_resources(twin_cluster, apps):
    twin_cluster.server.clear_requests()
    apps.patch_namespaced_deployment_scale("web", twin_cluster.namespace, {"spec": {"replicas": 3}})
    (record,) = twin_cluster.server.requests
    assert (record.info.verb, record.info.resource_path, record.info.name, record.code) == (
        "patch",
        "deployments/scale",
        "web",
        200,
    )
