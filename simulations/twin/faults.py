"""Fault injection for the twin API server: latency, error responses, throttling, dropped connections.

A :class:`Fault` matches requests by Kubernetes verb (``get``, ``list``, ``create``, ``update``,
``patch``, ``delete`` ...), resource, namespace and name, and applies to every matching request or
to the next ``count`` of them. A resource without a slash (``deployments``) matches the resource and
its subresources; ``deployments/scale`` matches only that subresource.

Note for tests: urllib3 (under the Kubernetes client) retries a dropped idempotent request (GET,
PUT, DELETE) up to three times by itself, so a drop of ``count=1`` on a GET is invisible to the
caller; POST and PATCH are not retried.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum

from simulations.twin.api import RequestInfo


class FaultKind(Enum):
    """What a fault does to a matching request."""

    LATENCY = "latency"
    """Delay the response (wall-clock time: client timeouts are wall-clock too)."""
    ERROR = "error"
    """Answer with an error ``Status`` instead of serving the request."""
    DROP = "drop"
    """Close the connection without answering."""


@dataclass
class Fault:
    """One injected fault; ``count`` is how many more requests it applies to (None: all)."""

    kind: FaultKind
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    code: int = 500
    message: str | None = None
    retry_after: int | None = None
    delay: float = 0.0
    count: int | None = None
    hits: int = field(default=0, init=False)

    def matches(self, info: RequestInfo) -> bool:
        """Whether this fault applies to a request."""
        if self.count is not None and self.count <= 0:
            return False
        if self.verb is not None and self.verb != info.verb:
            return False
        if self.resource is not None:
            wanted = self.resource
            if "/" in wanted:
                if wanted != info.resource_path:
                    return False
            elif wanted != info.resource:
                return False
        if self.namespace is not None and self.namespace != info.namespace:
            return False
        return self.name is None or self.name == info.name


class FaultInjector:
    """The faults currently armed on a server; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        """Arm a fault; returns it (to :meth:`remove` it or read its ``hits``)."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def latency(
        self,
        seconds: float,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        count: int | None = None,
    ) -> Fault:
        """Delay matching responses by ``seconds``."""
        return self.add(Fault(FaultKind.LATENCY, verb, resource, namespace, name, delay=seconds, count=count))

    def error(
        self,
        code: int = 500,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        count: int | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """Answer matching requests with an error ``Status`` of HTTP ``code`` (default 500 InternalError)."""
        return self.add(
            Fault(FaultKind.ERROR, verb, resource, namespace, name, code, message, retry_after, count=count)
        )

    def throttle(
        self,
        retry_after: int = 1,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        count: int | None = None,
    ) -> Fault:
        """Answer matching requests with 429 TooManyRequests and ``Retry-After``."""
        return self.error(
            429,
            verb=verb,
            resource=resource,
            namespace=namespace,
            name=name,
            count=count,
            retry_after=retry_after,
        )

    def drop(
        self,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        count: int | None = None,
    ) -> Fault:
        """Close matching connections without a response."""
        return self.add(Fault(FaultKind.DROP, verb, resource, namespace, name, count=count))

    def remove(self, fault: Fault) -> None:
        """Disarm one fault."""
        with self._lock:
            self._faults = [f for f in self._faults if f is not fault]

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults = []

    @property
    def armed(self) -> list[Fault]:
        """The faults still armed."""
        with self._lock:
            return list(self._faults)

    def take(self, info: RequestInfo) -> tuple[float, Fault | None]:
        """For one request: the total latency to add, and the error or drop fault to apply (if any).

        Consumes one use of every fault applied; exhausted faults are disarmed.
        """
        delay, outcome = 0.0, None
        with self._lock:
            for fault in self._faults:
                if not fault.matches(info):
                    continue
                if fault.kind is FaultKind.LATENCY:
                    delay += fault.delay
                elif outcome is None:
                    outcome = fault
                else:
                    continue
                fault.hits += 1
                if fault.count is not None:
                    fault.count -= 1
            self._faults = [f for f in self._faults if f.count is None or f.count > 0]
        return delay, outcome
