"""Kubernetes fixtures: the twin API server from simulations/twin, or a real cluster.

- ``twin_cluster``: a fresh :class:`~simulations.twin.TwinCluster` per test on a
  :class:`~agent.clock.ManualClock`, served on 127.0.0.1 (port 0) through a generated kubeconfig.
  Controllers run only when the test calls ``step()`` / ``advance()``, so timing takes no wall time.
  The yielded :class:`TwinEnv` carries the kubeconfig path, the namespace, an ``api_client()``
  factory (clients are closed at teardown), the cluster, its server (``faults``, ``requests``) and
  the clock.
- ``twin_factory``: start twins with another clock or :class:`~simulations.twin.TwinConfig`, e.g. a
  ``WallClock`` with controllers in a background thread.
- ``kube_env``: the minimal interface remediation tests need (``kubeconfig``, ``namespace``,
  ``api_client()``): the twin on the wall clock with background controllers, or with
  ``AIOPS_TEST_KUBECONFIG=/path`` a real cluster (kind, k3d, cloud) and a fresh namespace that is
  deleted at teardown.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.clock import Clock, ManualClock, WallClock
from simulations.twin import TwinApiServer, TwinCluster, TwinConfig, new_api_client

KUBECONFIG_ENV = "AIOPS_TEST_KUBECONFIG"
TWIN_START = 1_700_000_000.0
"""The ManualClock's start: a plausible epoch time, so timestamps look real."""


@dataclass
class KubeEnv:
    """Where a test talks to Kubernetes: a kubeconfig and a namespace of its own."""

    kubeconfig: Path
    namespace: str
    _clients: list[Any] = field(default_factory=list, repr=False)

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` from the kubeconfig (closed at teardown)."""
        client = new_api_client(self.kubeconfig)
        self._clients.append(client)
        return client

    def close(self) -> None:
        """Close every client handed out."""
        for client in self._clients:
            client.close()
        self._clients.clear()


@dataclass
class TwinEnv(KubeEnv):
    """A :class:`KubeEnv` on the twin, with the twin's controls."""

    cluster: TwinCluster | None = None

    @property
    def twin(self) -> TwinCluster:
        """The twin cluster."""
        assert self.cluster is not None
        return self.cluster

    @property
    def server(self) -> TwinApiServer:
        """The HTTP server (``faults``, ``requests``)."""
        return self.twin.server

    @property
    def clock(self) -> Clock:
        """The twin's clock."""
        return self.twin.clock

    def step(self) -> int:
        """Run the controllers until the cluster settles at the current time."""
        return self.twin.step()

    def advance(self, seconds: float) -> None:
        """Move the ManualClock forward, running every timed event on the way."""
        self.twin.advance(seconds)


TwinFactory = Callable[..., TwinEnv]


@pytest.fixture
def twin_factory(tmp_path: Path) -> Iterator[TwinFactory]:
    """Start twins: ``twin_factory(clock=None, config=None, namespace="default", background=None)``."""
    started: list[TwinEnv] = []

    def start(
        clock: Clock | None = None,
        config: TwinConfig | None = None,
        namespace: str = "default",
        background: bool | None = None,
    ) -> TwinEnv:
        cluster = TwinCluster(clock if clock is not None else ManualClock(TWIN_START), config)
        cluster.start(background=background)
        if namespace not in cluster.config.namespaces:
            cluster.create_namespace(namespace)
        path = cluster.write_kubeconfig(tmp_path / f"kubeconfig-{len(started)}", namespace)
        env = TwinEnv(kubeconfig=path, namespace=namespace, cluster=cluster)
        started.append(env)
        return env

    yield start
    for env in started:
        env.close()
        env.twin.stop()


@pytest.fixture
def twin_cluster(twin_factory: TwinFactory) -> TwinEnv:
    """A twin on a ManualClock (pods start 2 s after creation, Jobs run 5 s)."""
    return twin_factory()


@pytest.fixture
def kube_env(twin_factory: TwinFactory) -> Iterator[KubeEnv]:
    """The twin on the wall clock (fast pods), or a real cluster with ``AIOPS_TEST_KUBECONFIG``."""
    path = os.environ.get(KUBECONFIG_ENV)
    if not path:
        config = TwinConfig(pod_start_seconds=0.05, job_run_seconds=0.2, hpa_sync_seconds=0.5)
        yield twin_factory(clock=WallClock(), config=config, namespace="aiops-test", background=True)
        return
    from kubernetes import client

    env = KubeEnv(kubeconfig=Path(path), namespace=f"aiops-test-{uuid.uuid4().hex[:8]}")
    core = client.CoreV1Api(env.api_client())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=env.namespace)))
    try:
        yield env
    finally:
        core.delete_namespace(env.namespace)
        env.close()
