"""Shared helpers of the remediation integration tests (this module holds no tests itself).

:class:`Cluster` wraps a :class:`~tests.servers.twin.KubeEnv`: the remediations' own clients
(:func:`remediations.kube.connect` through the env's kubeconfig, on a recording virtual clock so
retries and backoff take no wall time), the official typed APIs for checking effects
independently, and builders for workloads, requests and contexts. Bodies use only the pause image
and an env var to tell revisions apart, so the same tests run on a real cluster with
``AIOPS_TEST_KUBECONFIG``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kubernetes import client

from agent.clock import ManualClock
from remediations import (
    ActionContext,
    ActionRequest,
    ActionResult,
    Limits,
    Target,
    make_request,
)
from remediations.kube import KubeClients, KubeSettings, RetryEvent, connect
from remediations.registry import get_action
from remediations.types import RetrainPublisher, SignalFacts
from tests.servers.common import eventually
from tests.servers.twin import KubeEnv, TwinEnv

IMAGE = "registry.k8s.io/pause:3.9"
REVISION = "deployment.kubernetes.io/revision"


class RecordingClock(ManualClock):
    """Virtual time that records every wait (so a test can check backoff and Retry-After)."""

    def __init__(self, start: float | None = None) -> None:
        super().__init__(time.time() if start is None else start)
        self.waits: list[float] = []

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        self.waits.append(seconds)
        return super().wait(seconds, stop)


def pod_template(app: str, version: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "containers": [{"name": "app", "image": IMAGE, "env": [{"name": "VERSION", "value": version}]}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def deployment_body(name: str = "web", replicas: int = 2, version: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, version),
        },
    }


def statefulset_body(name: str = "db", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
        },
    }


def cronjob_body(name: str = "train-model") -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 3 * * *",
            "suspend": True,
            "jobTemplate": {
                "metadata": {"labels": {"team": "ml"}, "annotations": {"owner": "ml-platform"}},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "train", "image": IMAGE, "args": ["--model", "churn"]}],
                        }
                    },
                },
            },
        },
    }


def hpa_body(target: str, low: int = 1, high: int = 10, name: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name or target},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }


class Cluster:
    """A KubeEnv with the remediations' clients, the official APIs, and request/context builders."""

    def __init__(self, env: KubeEnv, settings: KubeSettings | None = None) -> None:
        self.env = env
        self.ns = env.namespace
        self.clock = RecordingClock()
        self.retries: list[RetryEvent] = []
        self.kube: KubeClients = connect(
            env.kubeconfig,
            clock=self.clock,
            settings=settings or KubeSettings(read_timeout=5.0),
            on_retry=self.retries.append,
        )
        api = env.api_client()
        self.api = api
        # The official typed APIs, to check effects independently of the code under test (typed
        # as Any: the tests pass raw dict bodies, which the client accepts).
        self.core: Any = client.CoreV1Api(api)
        self.apps: Any = client.AppsV1Api(api)
        self.batch: Any = client.BatchV1Api(api)
        self.autoscaling: Any = client.AutoscalingV2Api(api)

    @property
    def twin(self) -> TwinEnv | None:
        """The twin, when the env is one (fault injection and the request log are twin-only)."""
        return self.env if isinstance(self.env, TwinEnv) else None

    def close(self) -> None:
        self.kube.close()

    # ------------------------------------------------------------ objects

    def deployment(
        self, name: str = "web", replicas: int = 2, version: str = "1", *, settled: bool = False
    ) -> dict[str, Any]:
        """Create a Deployment; ``settled``: wait until its rollout is complete (no more status writes)."""
        self.apps.create_namespaced_deployment(self.ns, deployment_body(name, replicas, version))
        if settled:
            self.settle(lambda: self.settled("Deployment", name), f"{name} rolled out")
        return self.read("Deployment", name)

    def settled(self, kind: str, name: str) -> bool:
        obj = self.read(kind, name)
        status, wanted = obj.get("status") or {}, obj["spec"].get("replicas", 1)
        return bool(
            status.get("observedGeneration") == obj["metadata"].get("generation")
            and status.get("readyReplicas", 0) == wanted
            and status.get("updatedReplicas", 0) == wanted
            and status.get("availableReplicas", 0) == wanted
            and status.get("replicas", 0) == wanted
        )

    def read(self, kind: str, name: str) -> dict[str, Any]:
        """The object as raw JSON, read with the official client (not the code under test)."""
        method = {
            "Deployment": self.apps.read_namespaced_deployment,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
            "HorizontalPodAutoscaler": self.autoscaling.read_namespaced_horizontal_pod_autoscaler,
            "CronJob": self.batch.read_namespaced_cron_job,
            "Job": self.batch.read_namespaced_job,
            "Pod": self.core.read_namespaced_pod,
        }[kind]
        response = method(name, self.ns, _preload_content=False)
        return dict(json.loads(response.data))

    def rv(self, kind: str, name: str) -> str:
        return str(self.read(kind, name)["metadata"]["resourceVersion"])

    def replica_sets(self, app: str = "web") -> dict[int, dict[str, Any]]:
        """The app's ReplicaSets by revision, as raw JSON."""
        raw = self.apps.list_namespaced_replica_set(
            self.ns, label_selector=f"app={app}", _preload_content=False
        )
        items = json.loads(raw.data)["items"]
        return {int(rs["metadata"]["annotations"][REVISION]): rs for rs in items}

    def pods(self, app: str) -> list[Any]:
        return [
            p
            for p in self.core.list_namespaced_pod(self.ns, label_selector=f"app={app}").items
            if p.metadata.deletion_timestamp is None
        ]

    def events(self, kind: str, name: str, reason: str | None = None) -> list[Any]:
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        if reason:
            selector += f",reason={reason}"
        return list(self.core.list_namespaced_event(self.ns, field_selector=selector).items)

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        eventually(check, timeout=timeout, interval=0.02, what=what)

    def rollout(self, name: str, version: str) -> None:
        """Change the pod template (a new revision) and wait for its ReplicaSet."""
        before = len(self.replica_sets(name))
        self.apps.patch_namespaced_deployment(
            name,
            self.ns,
            {"spec": {"template": pod_template(name, version)}},
        )
        self.settle(lambda: len(self.replica_sets(name)) == before + 1, f"revision {before + 1} of {name}")

    def settle(self, check: Callable[[], bool], what: str) -> None:
        """Run the twin's controllers (ManualClock twin) or wait for them (wall clock / real cluster)."""
        twin = self.twin
        if twin is not None and isinstance(twin.clock, ManualClock):
            twin.advance(5)
            assert check(), what
            return
        self.wait(check, what)

    # ------------------------------------------------------------ requests

    def request(
        self,
        action: str,
        kind: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        incident: str = "inc-1",
        step: str = "actions[0]",
        playbook: str = "pb",
        dry_run: bool = False,
        signal: SignalFacts | None = None,
        limits: Limits | None = None,
        namespace: str | None = None,
    ) -> ActionRequest:
        return make_request(
            action,
            Target(kind, namespace or self.ns, name),
            dict(params or {}),
            playbook=playbook,
            incident=incident,
            step=step,
            dry_run=dry_run,
            reason="test",
            signal=signal,
            limits=limits,
        )

    def ctx(
        self,
        request: ActionRequest,
        *,
        publisher: RetrainPublisher | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ActionContext:
        return ActionContext(
            self.kube, request, self.clock, publisher=publisher, environ=environ, instance="test"
        )

    def run(self, request: ActionRequest, **options: Any) -> ActionResult:
        return get_action(request.action).execute(self.ctx(request, **options))

    def writes(self) -> list[tuple[str, str, str]]:
        """The twin's write requests so far: (verb, resource path, name)."""
        twin = self.twin
        assert twin is not None, "the request log is a twin feature"
        return [
            (r.info.verb, r.info.resource_path, r.info.name)
            for r in twin.server.requests
            if r.info.verb not in {"get", "list", "watch"}
        ]


@contextmanager
def open_cluster(env: KubeEnv, settings: KubeSettings | None = None) -> Iterator[Cluster]:
    cluster = Cluster(env, settings)
    try:
        yield cluster
    finally:
        cluster.close()
