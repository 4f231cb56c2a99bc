"""Only the leader executes: leader election on a coordination.k8s.io/v1 Lease.

:class:`LeaseLeader` runs the kubernetes client's own leader election
(``kubernetes.leaderelection``) in a daemon thread and answers :meth:`LeaseLeader.is_leader`.
Two things are added around the library:

- the LeaseLock builds its API object from the client's global default configuration; here it is
  swapped for one on the agent's own ApiClient (the kubeconfig or in-cluster config it was given);
- the library's loops never end; :meth:`LeaseLeader.stop` makes the next lease attempt raise
  inside the election thread, so the thread ends and this replica stops renewing, then releases
  the Lease if it still names this replica (the holder cleared, so another replica takes over at
  its next attempt, within ``retry_period``). A replica that dies without stopping leaves the
  Lease to expire: another takes over within the lease duration.

``is_leader()`` is True only while the last successful renewal is younger than the renew
deadline, so a replica cut off from the API server stops acting before another can take over.
The ``aiops_leader`` gauge follows it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from agent.metrics import AgentMetrics

log = logging.getLogger("aiops.leader")


class LeaderState(Protocol):
    """Whether this replica may act now."""

    def is_leader(self) -> bool:
        """True while this replica leads."""
        ...


class AlwaysLeader:
    """A replica that acts alone (leader election off)."""

    def is_leader(self) -> bool:
        """Always."""
        return True


class StaticLeader:
    """Leadership set by hand (tests, tools)."""

    def __init__(self, leading: bool = True) -> None:
        self.leading = leading

    def is_leader(self) -> bool:
        """As set."""
        return self.leading


def default_identity(environ: Mapping[str, str] | None = None) -> str:
    """This replica's identity: ``$POD_NAME`` (in ``environ``, default the process's), else the
    host name and process id."""
    env = os.environ if environ is None else environ
    return env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class _StoppedError(Exception):
    """Raised inside the election thread to end it."""


class _Election(leaderelection.LeaderElection):
    """The library's election, with a stop switch and a record of the last successful attempt."""

    def __init__(self, config: Any, stop: threading.Event, on_success: Any) -> None:
        super().__init__(config)  # type: ignore[no-untyped-call]
        self._stop = stop
        self._on_success = on_success

    def try_acquire_or_renew(self) -> bool:
        if self._stop.is_set():
            raise _StoppedError
        try:
            ok = bool(super().try_acquire_or_renew())  # type: ignore[no-untyped-call]
        except _StoppedError:
            raise
        except Exception:  # an API error is a failed attempt, never the end of the election
            log.warning("lease attempt failed", exc_info=True)
            ok = False
        if ok:
            record = self.observed_record
            self._on_success(
                record is not None and self.election_config.lock.identity == record.holder_identity
            )
        return ok


class LeaseLeader:
    """Leader election on a Lease, in a thread; :meth:`is_leader` is safe from any thread."""

    def __init__(
        self,
        api_client: Any,
        *,
        name: str,
        namespace: str,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.identity = identity or default_identity()
        self.name = name
        self.namespace = namespace
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.metrics = metrics
        self._api_client = api_client
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._leading = False
        self._renewed = 0.0  # monotonic time of the last successful renewal while leading
        self._thread: threading.Thread | None = None
        self.transitions = 0
        """How many times this replica became leader."""

    # ------------------------------------------------------------ state

    def is_leader(self) -> bool:
        """True while leading and the last renewal is younger than the renew deadline."""
        with self._lock:
            return self._leading and time.monotonic() - self._renewed < self.renew_deadline

    def _success(self, holder: bool) -> None:
        with self._lock:
            if holder:
                self._renewed = time.monotonic()

    def _started(self) -> None:
        with self._lock:
            self._leading = True
            self._renewed = time.monotonic()
            self.transitions += 1
        log.info("%s is the leader of lease %s/%s", self.identity, self.namespace, self.name)
        self._gauge(1)

    def _stopped(self) -> None:
        with self._lock:
            was = self._leading
            self._leading = False
        if was:
            log.warning("%s stopped leading lease %s/%s", self.identity, self.namespace, self.name)
        self._gauge(0)

    def _gauge(self, value: int) -> None:
        if self.metrics is not None:
            self.metrics.leader.set(value)

    # ------------------------------------------------------------ the thread

    def _election(self) -> _Election:
        lock = LeaseLock(self.name, self.namespace, self.identity)  # type: ignore[no-untyped-call]
        lock.api_instance = k8s.CoordinationV1Api(self._api_client)
        config = electionconfig.Config(  # type: ignore[no-untyped-call]
            lock=lock,
            # whole seconds: the library writes leaseDurationSeconds with int(str(value))
            lease_duration=max(2, round(self.lease_duration)),
            renew_deadline=self.renew_deadline,
            retry_period=self.retry_period,
            onstarted_leading=self._started,
            onstopped_leading=self._stopped,
        )
        return _Election(config, self._stop, self._success)

    def run(self) -> None:
        """Campaign, lead, and campaign again after losing the lease, until :meth:`stop`."""
        self._gauge(0)
        while not self._stop.is_set():
            try:
                self._election().run()  # type: ignore[no-untyped-call]
            except _StoppedError:
                pass
            except Exception:  # the election must outlive any one failure
                log.exception("leader election failed; campaigning again")
            finally:
                self._stopped()
            self._stop.wait(self.retry_period)

    def start(self) -> None:
        """Run the election in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="aiops-leader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop campaigning and renewing, wait for the thread, and release the Lease if it is ours.

        Call it once this replica no longer acts: the next holder may start at once."""
        self._stop.set()
        with self._lock:
            self._leading = False
        self._gauge(0)
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._release()

    def _release(self) -> None:
        """Clear the Lease's holder if it names this replica; on any failure it is left to expire."""
        api = k8s.CoordinationV1Api(self._api_client)
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            # the resourceVersion read makes this a compare-and-swap: a newer holder is kept
            api.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception:  # releasing only shortens the wait; the lease expires anyway
            log.warning(
                "could not release lease %s/%s; it expires by itself",
                self.namespace,
                self.name,
                exc_info=True,
            )
            return
        log.info("%s released lease %s/%s", self.identity, self.namespace, self.name)
