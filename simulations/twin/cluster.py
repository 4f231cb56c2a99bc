"""The twin cluster: store, API server, controllers and clock wired together.

Virtual time (a :class:`~agent.clock.ManualClock`): call :meth:`TwinCluster.step` after changing
something, or :meth:`TwinCluster.advance` to move the clock, running every timed event on the way
(pods becoming ready, Jobs finishing) at its own time. Wall time (:class:`~agent.clock.WallClock`):
:meth:`TwinCluster.start` also runs the controllers in a background thread, so HTTP clients see
the cluster converge by itself.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.clock import Clock, ManualClock, WallClock
from simulations.twin.api import KubeApi
from simulations.twin.controllers import ControllerManager, TwinConfig
from simulations.twin.faults import FaultInjector
from simulations.twin.kubeconfig import new_api_client, write_kubeconfig
from simulations.twin.objects import Obj
from simulations.twin.resources.core import NAMESPACES
from simulations.twin.server import TwinApiServer
from simulations.twin.store import Store

BACKGROUND_INTERVAL = 0.02
log = logging.getLogger(__name__)


class TwinCluster:
    """A simulated Kubernetes cluster with an HTTP API the official client can use unchanged."""

    def __init__(
        self,
        clock: Clock | None = None,
        config: TwinConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.clock: Clock = clock if clock is not None else WallClock()
        self.config = config if config is not None else TwinConfig()
        self.store = Store(self.clock, self.config.seed)
        self.api = KubeApi(self.store)
        self.faults = FaultInjector()
        self.server = TwinApiServer(self.api, self.faults, host, port)
        self.controllers = ControllerManager(self.store, self.clock, self.config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for name in self.config.namespaces:
            self.store.create(NAMESPACES, "", {"metadata": {"name": name}})

    # ------------------------------------------------------------ lifecycle

    def start(self, *, background: bool | None = None) -> Self:
        """Serve HTTP; with ``background`` (default: on a wall clock) reconcile in a thread too."""
        self.server.start()
        if background is None:
            background = isinstance(self.clock, WallClock)
        if background and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._reconcile_forever, name="twin-controllers", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the controllers' thread and the server."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ time

    def step(self) -> int:
        """Reconcile until the cluster is settled at the current time; returns the passes run."""
        return self.controllers.step()

    reconcile = step

    def advance(self, seconds: float) -> None:
        """Move a :class:`ManualClock` forward, reconciling at every timed event on the way."""
        clock = self.clock
        if not isinstance(clock, ManualClock):
            msg = "advance() needs a ManualClock; a wall clock advances by itself"
            raise TypeError(msg)
        target = clock.now() + seconds
        self.step()
        while True:
            due = self.controllers.next_due()
            if due is None or due > target:
                break
            clock.set(due)
            self.step()
        clock.set(target)
        self.step()

    def _reconcile_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                # A controller bug must not silently freeze the cluster for the rest of a test run.
                log.exception("twin controllers: reconcile pass failed")
            self._stop.wait(BACKGROUND_INTERVAL)

    # ------------------------------------------------------------ clients

    @property
    def url(self) -> str:
        """The API server's URL."""
        return self.server.url

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this cluster (start the cluster first)."""
        return write_kubeconfig(path, self.url, namespace)

    def api_client(self, kubeconfig: str | Path) -> Any:
        """A ``kubernetes.client.ApiClient`` through ``kubeconfig`` (close it when done)."""
        return new_api_client(kubeconfig)

    def create_namespace(self, name: str) -> Obj:
        """Create a namespace directly in the store."""
        return self.store.create(NAMESPACES, "", {"metadata": {"name": name}})
