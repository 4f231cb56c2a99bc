"""``aiops twin``: a local Kubernetes API to try the agent on, with a sample workload.

It serves the twin API server (:mod:`simulations.twin`) on a wall clock, its controllers running
in the background, writes a kubeconfig for it, and creates the sample: namespace ``shop`` with the
Deployment ``checkout`` at ``v1``, then rolled out to ``v2`` once ``v1`` is ready, so a rollback
has a healthy revision to go back to and ``rolloutWithin`` holds. It runs until interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

#: The sample workload.
NAMESPACE = "shop"
DEPLOYMENT = "checkout"
IMAGE = "registry.example/shop/checkout"
#: How long to wait for the sample's first version to be ready before rolling out the second.
READY_TIMEOUT = 30.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``twin`` subcommand."""
    p = subparsers.add_parser(
        "twin",
        help="serve a local simulated Kubernetes API with a sample Deployment, until interrupted",
        description=(
            "Start the twin Kubernetes API server with the namespace 'shop' and the Deployment "
            "'checkout' (v1, then rolled out to v2), write a kubeconfig for it and print its path. "
            "Point `aiops run` at it with executor.kubeconfig or --kubeconfig. Stop with Ctrl-C."
        ),
    )
    p.add_argument("--port", type=int, default=0, metavar="N", help="listen on this port (default: any free)")
    p.add_argument("--host", default="127.0.0.1", help="listen on this address (default: 127.0.0.1)")
    p.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="write the kubeconfig here (default: a new temporary directory)",
    )
    p.set_defaults(func=run)


def sample_deployment(version: str) -> dict[str, Any]:
    """The sample Deployment at ``version`` (two replicas)."""
    labels = {"app": DEPLOYMENT}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": DEPLOYMENT, "image": f"{IMAGE}:{version}"}]},
            },
        },
    }


def run(args: argparse.Namespace) -> int:
    """Execute ``aiops twin``; returns the exit code (0 after an interrupt, 2 on bad usage)."""
    from agent.clock import WallClock  # noqa: PLC0415 - heavy imports only for this command
    from simulations.twin import TwinCluster  # noqa: PLC0415
    from simulations.twin.resources.apps import DEPLOYMENTS  # noqa: PLC0415

    if not 0 <= args.port <= 65535:
        print(f"error: --port: expected 0-65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        cluster = TwinCluster(WallClock(), host=args.host, port=args.port).start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    kubeconfig: Path = args.kubeconfig or Path(tempfile.mkdtemp(prefix="aiops-twin-")) / "kubeconfig"
    stop = threading.Event()

    def interrupted(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cluster.create_namespace(NAMESPACE)
        cluster.store.create(DEPLOYMENTS, NAMESPACE, sample_deployment("v1"))
        deadline = time.monotonic() + READY_TIMEOUT
        while not stop.is_set() and time.monotonic() < deadline:
            status = cluster.store.get(DEPLOYMENTS, NAMESPACE, DEPLOYMENT).get("status") or {}
            if status.get("updatedReplicas") == 2 and status.get("availableReplicas") == 2:
                break
            stop.wait(0.1)
        cluster.store.update(DEPLOYMENTS, NAMESPACE, DEPLOYMENT, sample_deployment("v2"))
        path = cluster.write_kubeconfig(kubeconfig, NAMESPACE)
        print(f"twin Kubernetes API at {cluster.url}", flush=True)
        print(f"kubeconfig: {path}", flush=True)
        print(f"sample: Deployment {NAMESPACE}/{DEPLOYMENT}, v1 rolled out to v2 just now", flush=True)
        print("Ctrl-C to stop", flush=True)
        stop.wait()
    finally:
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
