"""The simulated control plane: controllers that reconcile the twin's store on the injected clock.

:class:`ControllerManager.step` runs every controller in passes until a pass writes nothing (a
fixpoint at the current time); :meth:`ControllerManager.next_due` says when timed work comes next
(a pod starting, a Job finishing, a progress deadline), so virtual time can jump straight there.
"""

from __future__ import annotations

from agent.clock import Clock
from simulations.twin.controllers.base import Context, Controller, PodFate, TwinConfig
from simulations.twin.controllers.deployment import DeploymentController
from simulations.twin.controllers.garbage import EventExpiry, GarbageCollector, NamespaceController
from simulations.twin.controllers.hpa import HorizontalPodAutoscalerController
from simulations.twin.controllers.job import JobController
from simulations.twin.controllers.kubelet import Kubelet
from simulations.twin.controllers.replicaset import ReplicaSetController
from simulations.twin.controllers.statefulset import StatefulSetController
from simulations.twin.store import Store

MAX_PASSES = 100


class ControllerManager:
    """Runs the twin's controllers in a fixed order, like one kube-controller-manager plus a kubelet."""

    def __init__(self, store: Store, clock: Clock, config: TwinConfig) -> None:
        self.context = Context(store, clock, config)
        self.controllers: list[Controller] = [
            NamespaceController(),
            GarbageCollector(),
            EventExpiry(),
            HorizontalPodAutoscalerController(),
            DeploymentController(),
            ReplicaSetController(),
            StatefulSetController(),
            JobController(),
            Kubelet(),
        ]
        self._settled: tuple[int, float | None] | None = None
        """(store revision, next due time) at the last fixpoint."""

    def step(self) -> int:
        """Reconcile until nothing changes at the current time; returns the number of passes.

        A cluster that is settled (nothing written since the last fixpoint) and has no timed work
        due yet is left alone: a pass would change nothing, and long replays call this often.
        """
        store = self.context.store
        with store.lock:
            if self._settled is not None and store.revision == self._settled[0]:
                due = self._settled[1]
                if due is None or self.context.clock.now() < due:
                    return 0
            passes = MAX_PASSES
            for n in range(1, MAX_PASSES + 1):
                before = store.revision
                self.context.now = self.context.clock.now()
                for controller in self.controllers:
                    controller.sync(self.context)
                if store.revision == before:
                    passes = n
                    break
            self._settled = None
            self._settled = (store.revision, self.next_due()) if passes < MAX_PASSES else None
        return passes

    def next_due(self) -> float | None:
        """The earliest future time at which some controller has timed work."""
        with self.context.store.lock:
            if self._settled is not None and self.context.store.revision == self._settled[0]:
                return self._settled[1]
            self.context.now = self.context.clock.now()
            due = [d for c in self.controllers if (d := c.next_due(self.context)) is not None]
        return min(due) if due else None


__all__ = ["Context", "Controller", "ControllerManager", "PodFate", "TwinConfig"]
