"""The twin Kubernetes API: an HTTP server the official ``kubernetes`` client talks to unchanged.

It serves the subset of the API the agent and the simulations need (core/v1 namespaces, pods and
events; apps/v1 deployments, replicasets and statefulsets with ``/scale``; autoscaling/v2 HPAs;
batch/v1 jobs and cronjobs; coordination.k8s.io/v1 leases; events.k8s.io/v1 events) with the real
API's semantics and response shapes, runs simulated controllers on an injected clock, and injects
faults (latency, error codes, 429 with Retry-After, dropped connections) for tests.

    with TwinCluster(ManualClock()) as cluster:
        kubeconfig = cluster.write_kubeconfig(tmp / "kubeconfig")
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        ...
        cluster.advance(30)   # pods start, rollouts progress, Jobs finish
"""

from __future__ import annotations

from simulations.twin.api import KubeApi, RequestInfo, Response
from simulations.twin.cluster import TwinCluster
from simulations.twin.controllers import ControllerManager, PodFate, TwinConfig
from simulations.twin.errors import ApiError
from simulations.twin.faults import Fault, FaultInjector, FaultKind
from simulations.twin.kubeconfig import new_api_client, write_kubeconfig
from simulations.twin.server import RequestRecord, TwinApiServer
from simulations.twin.store import Store

__all__ = [
    "ApiError",
    "ControllerManager",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "KubeApi",
    "PodFate",
    "RequestInfo",
    "RequestRecord",
    "Response",
    "Store",
    "TwinApiServer",
    "TwinCluster",
    "TwinConfig",
    "new_api_client",
    "write_kubeconfig",
]
