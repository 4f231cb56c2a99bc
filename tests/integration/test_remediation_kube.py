"""The client factory and call wrapper on the twin: retries, Retry-After, errors naming the object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.config.config_exception import ConfigException

from remediations import (
    ConflictError,
    ConnectionKubeError,
    ForbiddenError,
    KubeSettings,
    NotFoundError,
    ServerError,
    TooManyRequestsError,
)
from remediations.kube import PatchType, connect, load_configuration
from tests.integration.test_remediation_support import Cluster, deployment_body, open_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def twin(twin_cluster) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as opened:
        opened.apps.create_namespaced_deployment(opened.ns, deployment_body("web"))
        assert opened.twin is not None
        opened.twin.server.clear_requests()
        yield opened


def codes(cluster: Cluster, verb: str, resource: str = "deployments") -> list[int]:
    assert cluster.twin is not None
    return [
        r.code
        for r in cluster.twin.server.requests
        if r.info.verb == verb and r.info.resource_path == resource
    ]


def test_urllib3_retries_are_off_so_the_wrapper_is_the_only_retry_layer(twin):
    assert twin.kube.api_client.configuration.retries is False
    assert twin.twin is not None
    twin.twin.server.faults.drop(verb="get", resource="deployments", count=1)
    assert twin.kube.get("Deployment", twin.ns, "web")["metadata"]["name"] == "web"
    assert codes(twin, "get") == [0, 200]
    assert [(e.verb, str(e.ref), type(e.error).__name__) for e in twin.retries] == [
        ("get", f"Deployment {twin.ns}/web", "ConnectionKubeError")
    ]


def test_a_500_is_retried_after_backoff_on_the_clock(twin):
    assert twin.twin is not None
    twin.twin.server.faults.error(500, verb="get", resource="deployments", count=2)
    assert twin.kube.get("Deployment", twin.ns, "web")["metadata"]["name"] == "web"
    assert codes(twin, "get") == [500, 500, 200]
    assert twin.clock.waits == [0.5, 1.0]


def test_a_429_waits_retry_after_and_the_patch_lands_once(twin):
    assert twin.twin is not None
    twin.twin.server.faults.throttle(retry_after=4, verb="patch", resource="deployments/scale", count=1)
    twin.kube.patch_scale("Deployment", twin.ns, "web", {"spec": {"replicas": 3}})
    assert codes(twin, "patch", "deployments/scale") == [429, 200]
    assert twin.clock.waits == [4.0]
    assert twin.read("Deployment", "web")["spec"]["replicas"] == 3


def test_persistent_server_errors_give_up_after_the_attempts_naming_verb_and_object(twin):
    assert twin.twin is not None
    twin.twin.server.faults.error(503, verb="patch", resource="deployments")
    with pytest.raises(ServerError) as caught:
        twin.kube.patch("Deployment", twin.ns, "web", {"metadata": {"labels": {"a": "b"}}})
    assert str(caught.value).startswith(f"patch Deployment {twin.ns}/web: server error")
    assert "(HTTP 503 ServiceUnavailable)" in str(caught.value)
    assert caught.value.retryable
    assert codes(twin, "patch") == [503] * 5
    assert twin.clock.waits == [0.5, 1.0, 2.0, 4.0]


def test_throttling_that_never_ends_is_a_too_many_requests_error(twin):
    assert twin.twin is not None
    twin.twin.server.faults.throttle(retry_after=1, verb="list", resource="horizontalpodautoscalers")
    with pytest.raises(TooManyRequestsError) as caught:
        twin.kube.list_objects("HorizontalPodAutoscaler", twin.ns)
    assert caught.value.delay == 1.0
    assert twin.clock.waits == [1.0] * 4


def test_404_and_403_are_not_retried_and_name_the_object_and_verb(twin):
    with pytest.raises(NotFoundError) as missing:
        twin.kube.get("Deployment", twin.ns, "nope")
    assert str(missing.value) == (
        f'get Deployment {twin.ns}/nope: not found: deployments.apps "nope" not found (HTTP 404 NotFound)'
    )
    assert twin.twin is not None
    twin.twin.server.faults.error(
        403,
        verb="patch",
        resource="deployments",
        message='deployments.apps "web" is forbidden: User "agent" cannot patch',
    )
    with pytest.raises(ForbiddenError) as forbidden:
        twin.kube.patch("Deployment", twin.ns, "web", {"spec": {"replicas": 2}})
    assert str(forbidden.value).startswith(f"patch Deployment {twin.ns}/web: forbidden: ")
    assert (forbidden.value.verb, forbidden.value.ref.name, forbidden.value.code) == ("patch", "web", 403)
    assert not forbidden.value.retryable
    assert codes(twin, "patch") == [403]
    assert twin.clock.waits == []


def test_a_stale_write_is_a_conflict_and_read_modify_write_rereads(twin):
    stale = twin.kube.get("Deployment", twin.ns, "web")
    twin.apps.patch_namespaced_deployment("web", twin.ns, {"metadata": {"labels": {"moved": "on"}}})
    body = {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"], "labels": {"x": "1"}}}
    with pytest.raises(ConflictError):
        twin.kube.patch("Deployment", twin.ns, "web", body, PatchType.MERGE)

    reads: list[str] = []

    def read() -> dict[str, Any]:
        obj: dict[str, Any] = twin.kube.get("Deployment", twin.ns, "web")
        reads.append(obj["metadata"]["resourceVersion"])
        if len(reads) == 1:  # someone else writes right after our first read
            twin.apps.patch_namespaced_deployment("web", twin.ns, {"metadata": {"labels": {"race": "1"}}})
        return obj

    _, written = twin.kube.read_modify_write(
        read,
        lambda obj: {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"], "labels": {"x": "1"}}
        },
        lambda _, b: twin.kube.patch("Deployment", twin.ns, "web", b, PatchType.MERGE),
    )
    assert written is not None
    assert len(reads) == 2
    assert reads[0] != reads[1]
    assert written["metadata"]["labels"] == {"app": "web", "moved": "on", "race": "1", "x": "1"}


def test_a_timeout_is_a_connection_error_after_the_attempts(twin):
    assert twin.twin is not None
    twin.twin.server.faults.latency(0.3, verb="get", resource="deployments")
    with (
        open_cluster(twin.env, KubeSettings(read_timeout=0.05, attempts=2)) as impatient,
        pytest.raises(ConnectionKubeError) as caught,
    ):
        impatient.kube.get("Deployment", twin.ns, "web")
    assert str(caught.value).startswith(
        f"get Deployment {twin.ns}/web: no answer from the API server: ReadTimeoutError"
    )


def test_the_factory_takes_an_explicit_path_then_kubeconfig_from_the_environment(twin, tmp_path):
    path = Path(twin.env.kubeconfig)
    explicit = load_configuration(path, environ={})
    assert twin.twin is not None
    assert explicit.host == twin.twin.server.url
    # Not in a pod (no service account token): KUBERNETES_SERVICE_HOST alone falls through to KUBECONFIG.
    from_env = load_configuration(environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBECONFIG": str(path)})
    assert from_env.host == explicit.host
    with pytest.raises(ConfigException, match="does not exist"):
        load_configuration(tmp_path / "missing", environ={})
    with connect(environ={"KUBECONFIG": str(path)}) as kube:
        assert kube.get("Deployment", twin.ns, "web")["metadata"]["name"] == "web"
