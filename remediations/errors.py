"""The error taxonomy of the remediations: temporary vs permanent, one class per API failure.

Two families, as kopf has them: a :class:`TemporaryError` may succeed if tried again later (the
API server was busy, a connection dropped, another writer won a race); a :class:`PermanentError`
will fail the same way until something changes (the object is missing, RBAC forbids the verb, the
request is invalid, a guardrail refuses). Every Kubernetes failure names the verb and the object it
was about, so an audit line reads ``patch Deployment shop/web: forbidden ...``.

Nothing here imports the Kubernetes client: :mod:`remediations.kube` turns its exceptions into
these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """What an API call addressed, for messages: a kind, a namespace and a name (empty for lists)."""

    kind: str
    namespace: str = ""
    name: str = ""

    def __str__(self) -> str:
        where = "/".join(p for p in (self.namespace, self.name) if p)
        return f"{self.kind} {where}" if where else self.kind


class RemediationError(Exception):
    """Base of every error an action reports."""

    #: Whether trying again later may succeed.
    retryable: bool = False


class TemporaryError(RemediationError):
    """A failure that may go away by itself; ``delay`` suggests when to try again (seconds)."""

    retryable = True

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(RemediationError):
    """A failure that repeats until something changes: trying again is pointless."""


class ActionRefused(PermanentError):  # noqa: N818 - "refused" reads better than "RefusedError" in audit lines
    """The action will not act: a guardrail or a precondition of the action holds it back."""


# ---------------------------------------------------------------- Kubernetes API failures


class KubeError(RemediationError):
    """A Kubernetes API call failed; names the verb, the object, the HTTP code and the API's reason."""

    def __init__(
        self,
        verb: str,
        ref: ObjectRef,
        detail: str,
        *,
        code: int = 0,
        reason: str = "",
    ) -> None:
        self.verb = verb
        self.ref = ref
        self.detail = detail
        self.code = code
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        status = ""
        if self.code:
            status = f" (HTTP {self.code} {self.reason})" if self.reason else f" (HTTP {self.code})"
        return f"{self.verb} {self.ref}: {self.detail}{status}"


class TemporaryKubeError(KubeError, TemporaryError):
    """An API failure worth retrying: throttling, a server error, a lost connection, a conflict."""

    def __init__(
        self,
        verb: str,
        ref: ObjectRef,
        detail: str,
        *,
        code: int = 0,
        reason: str = "",
        delay: float | None = None,
    ) -> None:
        KubeError.__init__(self, verb, ref, detail, code=code, reason=reason)
        self.delay = delay


class PermanentKubeError(KubeError, PermanentError):
    """An API failure that retrying will not fix: missing object, forbidden, invalid request."""


class NotFoundError(PermanentKubeError):
    """404: the object (or its namespace) does not exist."""


class ForbiddenError(PermanentKubeError):
    """403: the agent's service account may not do this verb on this object."""


class InvalidError(PermanentKubeError):
    """400 or 422: the API server rejected the request body."""


class ConflictError(TemporaryKubeError):
    """409 Conflict: someone else changed the object since it was read; re-read and try again."""


class AlreadyExistsError(PermanentKubeError):
    """409 AlreadyExists: a create found an object of that name."""


class TooManyRequestsError(TemporaryKubeError):
    """429: the API server throttles us; ``delay`` is its ``Retry-After``."""


class ServerError(TemporaryKubeError):
    """5xx: the API server (or something behind it) failed."""


class ConnectionKubeError(TemporaryKubeError):
    """No answer: the connection failed, dropped, or a timeout expired."""


class DeadlineError(TemporaryKubeError):
    """The action's deadline passed: no API call starts, or waits to retry, beyond it."""
