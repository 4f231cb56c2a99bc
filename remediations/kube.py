"""The one Kubernetes client factory, and the call wrapper every action goes through.

:func:`connect` loads the configuration (an explicit kubeconfig path, else the in-cluster service
account, else ``KUBECONFIG``, else ``~/.kube/config``) into a :class:`KubeClients` bundle:
CoreV1Api, AppsV1Api, BatchV1Api, AutoscalingV2Api and CoordinationV1Api over one ApiClient.

Every call goes through :meth:`KubeClients.call`:

- a connect and read timeout on every request;
- raw JSON bodies (``_preload_content=False``): objects are plain dicts, so no field is lost in a
  round trip through the client's models;
- retries with exponential backoff on 429 (honouring ``Retry-After``), 5xx, dropped connections
  and timeouts, waiting on the injected clock. urllib3's own retries are switched off
  (``Configuration.retries = False``), so this is the only retry layer and every retry is logged
  and reported to ``on_retry``;
- failures become the classes of :mod:`remediations.errors`, naming the verb and the object;
- within :func:`deadline` (an action's deadline), no try starts and no retry waits beyond it.

A 409 Conflict is not retried blindly (the same stale body would fail again):
:meth:`KubeClients.read_modify_write` re-reads the object and recomputes the change.

This module is the only one in ``remediations`` that imports the ``kubernetes`` package.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pydantic
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from remediations.errors import (
    AlreadyExistsError,
    ConflictError,
    ConnectionKubeError,
    DeadlineError,
    ForbiddenError,
    InvalidError,
    KubeError,
    NotFoundError,
    ObjectRef,
    PermanentKubeError,
    ServerError,
    TemporaryKubeError,
    TooManyRequestsError,
)
from remediations.jsontext import NestedTooDeep, loads
from remediations.types import Clock, SystemClock

log = logging.getLogger(__name__)

Obj = dict[str, Any]
"""A Kubernetes object as decoded from JSON."""

MERGE_PATCH = "application/merge-patch+json"
Body = TypeVar("Body", Obj, list[Obj])


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """Timeouts and retry policy of the API calls."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    attempts: int = 5
    """Tries per call, the first included, for temporary failures (429, 5xx, connection)."""
    backoff: float = 0.5
    """The first retry's delay; it doubles per retry."""
    backoff_max: float = 10.0
    retry_after_max: float = 60.0
    """A ``Retry-After`` longer than this is cut to it."""
    conflict_attempts: int = 5
    """Re-reads after a 409 Conflict in :meth:`KubeClients.read_modify_write`."""

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            msg = "KubeSettings: timeouts must be > 0"
            raise ValueError(msg)
        if self.attempts < 1 or self.conflict_attempts < 1:
            msg = "KubeSettings: attempts must be >= 1"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One retry the call wrapper made: what failed and how long it waits before the next try."""

    verb: str
    ref: ObjectRef
    attempt: int
    delay: float
    error: KubeError


class PatchType(enum.Enum):
    """How a patch body is sent."""

    STRATEGIC = "strategic"
    """A dict as a strategic merge patch (the client's default for a dict)."""
    MERGE = "merge"
    """A dict as a JSON merge patch (RFC 7386): ``null`` deletes a key."""
    JSON = "json"
    """A list of RFC 6902 operations."""


@dataclass(frozen=True, slots=True)
class _Kind:
    api: str
    suffix: str
    api_version: str
    scalable: bool = False


KINDS: Mapping[str, _Kind] = {
    "Deployment": _Kind("apps", "deployment", "apps/v1", scalable=True),
    "StatefulSet": _Kind("apps", "stateful_set", "apps/v1", scalable=True),
    "ReplicaSet": _Kind("apps", "replica_set", "apps/v1", scalable=True),
    "DaemonSet": _Kind("apps", "daemon_set", "apps/v1"),
    "Pod": _Kind("core", "pod", "v1"),
    "Event": _Kind("core", "event", "v1"),
    "Job": _Kind("batch", "job", "batch/v1"),
    "CronJob": _Kind("batch", "cron_job", "batch/v1"),
    "HorizontalPodAutoscaler": _Kind("autoscaling", "horizontal_pod_autoscaler", "autoscaling/v2"),
    "Lease": _Kind("coordination", "lease", "coordination.k8s.io/v1"),
    "ConfigMap": _Kind("core", "config_map", "v1"),
}
"""The kinds the remediations and the agent's own records address, with their API group version."""


def api_version_of(kind: str) -> str:
    """``apps/v1`` for ``Deployment`` ..., for owner references and Events."""
    return _kind(kind).api_version


def _kind(kind: str) -> _Kind:
    try:
        return KINDS[kind]
    except KeyError:
        msg = f"kind {kind!r} is not one the remediations handle ({', '.join(sorted(KINDS))})"
        raise ValueError(msg) from None


# ---------------------------------------------------------------- configuration


def load_configuration(
    kubeconfig: str | Path | None = None,
    *,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """A ``kubernetes.client.Configuration``: a kubeconfig path, in-cluster, KUBECONFIG or ~/.kube/config.

    An explicit path wins over the in-cluster service account, as in client-go's
    ``BuildConfigFromFlags``: whoever passes ``--kubeconfig`` in a pod means it. ``KUBECONFIG`` may
    list several files separated by ``:``, which the client merges.
    """
    env = os.environ if environ is None else environ
    configuration = k8s.Configuration()
    if kubeconfig is not None:
        path = Path(kubeconfig).expanduser()
        if not path.is_file():
            msg = f"kubeconfig {path} does not exist"
            raise ConfigException(msg)
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), context=context, client_configuration=configuration
        )
        return configuration
    if env.get("KUBERNETES_SERVICE_HOST") and context is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException:
            log.debug("not in a cluster after all (no service account token); trying kubeconfig")
        else:
            return configuration
    files = env.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=files, context=context, client_configuration=configuration
    )
    return configuration


# ---------------------------------------------------------------- deadlines


@dataclass(slots=True)
class _Deadline:
    seconds: float
    at: float | None = None  # on the clients' clock, from their first call in the scope


_DEADLINE: ContextVar[_Deadline | None] = ContextVar("aiops_kube_deadline", default=None)


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """API calls made inside (in this thread) end within ``seconds`` of the first of them, on the
    clients' clock: no try starts and no retry waits beyond it, and each request's timeouts are cut
    to the time left (None: no deadline)."""
    token = _DEADLINE.set(None if seconds is None else _Deadline(seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def connect(
    kubeconfig: str | Path | None = None,
    *,
    context: str | None = None,
    settings: KubeSettings | None = None,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
    on_retry: Callable[[RetryEvent], None] | None = None,
) -> KubeClients:
    """The Kubernetes clients, configured as :func:`load_configuration` says; close them when done."""
    configuration = load_configuration(kubeconfig, context=context, environ=environ)
    return KubeClients.from_configuration(
        configuration, settings=settings, clock=clock, stop=stop, on_retry=on_retry
    )


# ---------------------------------------------------------------- errors


def _status_body(error: ApiException) -> Obj:
    try:
        body = loads(error.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(error: ApiException, body: Obj) -> float | None:
    headers = error.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        value = (body.get("details") or {}).get("retryAfterSeconds")
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


_WORDS = {
    400: "bad request",
    401: "unauthorized (check the kubeconfig or the service account token)",
    403: "forbidden",
    404: "not found",
    409: "conflict",
    422: "invalid",
    429: "too many requests",
}


def error_from_api(verb: str, ref: ObjectRef, error: ApiException) -> KubeError:
    """The :mod:`remediations.errors` class for an ``ApiException`` (one class per failure)."""
    code = int(error.status or 0)
    body = _status_body(error)
    reason = str(body.get("reason") or error.reason or "")
    message = str(body.get("message") or error.reason or "")
    if code == 0:
        return ConnectionKubeError(verb, ref, f"no answer from the API server: {message}")
    word = _WORDS.get(code, "server error" if code >= 500 else "failed")
    detail = f"{word}: {message}" if message and message != reason else word
    if code == 404:
        return NotFoundError(verb, ref, detail, code=code, reason=reason)
    if code == 403:
        return ForbiddenError(verb, ref, detail, code=code, reason=reason)
    if code == 409:
        if reason == "AlreadyExists":
            return AlreadyExistsError(verb, ref, f"already exists: {message}", code=code, reason=reason)
        return ConflictError(verb, ref, detail, code=code, reason=reason, delay=0.0)
    if code == 429:
        return TooManyRequestsError(
            verb, ref, detail, code=code, reason=reason, delay=_retry_after(error, body)
        )
    if code >= 500:
        return ServerError(verb, ref, detail, code=code, reason=reason, delay=_retry_after(error, body))
    if code in {400, 422}:
        return InvalidError(verb, ref, detail, code=code, reason=reason)
    return PermanentKubeError(verb, ref, detail, code=code, reason=reason)


# ---------------------------------------------------------------- the bundle


class KubeClients:
    """The typed API objects over one ApiClient, and the call wrapper (timeouts, retries, errors).

    The typed APIs (``core``, ``apps``, ``batch``, ``autoscaling``, ``coordination``) are there for
    callers that want them (leader election uses ``coordination``); the remediations call them
    through :meth:`call` or the helpers below, which return plain dicts.
    """

    def __init__(
        self,
        api_client: Any,
        *,
        settings: KubeSettings | None = None,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        self.api_client = api_client
        self.settings = settings if settings is not None else KubeSettings()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stop = stop
        self.on_retry = on_retry
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.batch = k8s.BatchV1Api(api_client)
        self.autoscaling = k8s.AutoscalingV2Api(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)
        self.retries = 0
        """Retries made so far (all calls)."""

    @classmethod
    def from_configuration(
        cls,
        configuration: Any,
        *,
        settings: KubeSettings | None = None,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> KubeClients:
        """Clients over a ``kubernetes.client.Configuration``, with urllib3's own retries switched off."""
        # urllib3 would otherwise retry GET/PUT/DELETE on drops and timeouts and sleep on
        # Retry-After by itself, out of sight of the clock, the logs and the stop event.
        configuration.retries = False
        return cls(k8s.ApiClient(configuration), settings=settings, clock=clock, stop=stop, on_retry=on_retry)

    def close(self) -> None:
        """Close the connection pool."""
        self.api_client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ the wrapper

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeout of every request."""
        return (self.settings.connect_timeout, self.settings.read_timeout)

    def call(self, verb: str, ref: ObjectRef, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a typed API method; the decoded JSON body, or a :class:`KubeError` naming verb and object.

        Temporary failures (429, 5xx, connection errors, timeouts) are retried with backoff on the
        clock, up to ``settings.attempts`` tries; a 409 Conflict is raised at once for
        :meth:`read_modify_write` to handle.
        """
        attempt = 1
        scope = _DEADLINE.get()
        if scope is not None and scope.at is None:
            scope.at = self.clock.now() + scope.seconds
        at = None if scope is None else scope.at
        while True:
            timeout = self.timeout
            if at is not None:
                left = at - self.clock.now()
                if left <= 0:
                    raise DeadlineError(verb, ref, "the action's deadline passed before the call")
                timeout = (min(timeout[0], left), min(timeout[1], left))
            try:
                response = method(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
                return _decode(response)
            except ApiException as raw:
                error = error_from_api(verb, ref, raw)
            except urllib3.exceptions.HTTPError as raw:
                error = ConnectionKubeError(verb, ref, f"no answer from the API server: {_short(raw)}")
            except pydantic.ValidationError as raw:
                # The typed client checks bodies against its models before sending them.
                raise InvalidError(verb, ref, f"the Kubernetes client rejected the body: {raw}") from None
            if (
                not isinstance(error, TemporaryKubeError)
                or isinstance(error, ConflictError)
                or attempt >= self.settings.attempts
            ):
                raise error
            delay = self._delay(attempt, error)
            if at is not None and self.clock.now() + delay >= at:
                raise DeadlineError(verb, ref, f"the action's deadline passes before a retry: {error}")
            self.retries += 1
            log.warning(
                "kubernetes %s %s failed (%s); retry %d/%d in %.2f s",
                verb,
                ref,
                error,
                attempt,
                self.settings.attempts - 1,
                delay,
            )
            if self.on_retry is not None:
                self.on_retry(RetryEvent(verb, ref, attempt, delay, error))
            if self.clock.wait(delay, self.stop):
                raise error
            attempt += 1

    def _delay(self, attempt: int, error: TemporaryKubeError) -> float:
        if error.delay is not None and isinstance(error, TooManyRequestsError | ServerError):
            return min(error.delay, self.settings.retry_after_max)
        return float(min(self.settings.backoff * 2 ** (attempt - 1), self.settings.backoff_max))

    def read_modify_write(
        self,
        read: Callable[[], Obj],
        change: Callable[[Obj], Body | None],
        write: Callable[[Obj, Body], Obj],
    ) -> tuple[Obj, Obj | None]:
        """Read, compute a change, write it; on a 409 Conflict read again and recompute.

        ``change(current)`` returns the body to write, or None when nothing needs writing;
        ``write(current, body)`` writes it (with ``current``'s resourceVersion as a precondition,
        so a concurrent change gives a 409). Returns the object last read and what the write
        returned (None when nothing was written).
        """
        attempt = 1
        while True:
            current = read()
            body = change(current)
            if body is None:
                return current, None
            try:
                return current, write(current, body)
            except ConflictError as error:
                if attempt >= self.settings.conflict_attempts:
                    raise
                log.info("kubernetes conflict (%s); re-reading, try %d", error, attempt + 1)
                attempt += 1

    # ------------------------------------------------------------ helpers by kind

    def _method(self, kind: str, pattern: str) -> Callable[..., Any]:
        info = _kind(kind)
        return getattr(getattr(self, info.api), pattern.format(info.suffix))  # type: ignore[no-any-return]

    def get(self, kind: str, namespace: str, name: str) -> Obj:
        """GET one object."""
        ref = ObjectRef(kind, namespace, name)
        return self._obj(self.call("get", ref, self._method(kind, "read_namespaced_{}"), name, namespace))

    def list_objects(
        self,
        kind: str,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        """LIST objects in a namespace (every page)."""
        ref = ObjectRef(kind, namespace)
        method = self._method(kind, "list_namespaced_{}")
        items: list[Obj] = []
        token: str | None = None
        while True:
            options: dict[str, Any] = {}
            if label_selector:
                options["label_selector"] = label_selector
            if field_selector:
                options["field_selector"] = field_selector
            if token:
                options["_continue"] = token
            page = self._obj(self.call("list", ref, method, namespace, **options))
            items.extend(i for i in page.get("items") or [] if isinstance(i, dict))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def create(self, kind: str, namespace: str, body: Obj) -> Obj:
        """POST a new object."""
        ref = ObjectRef(kind, namespace, str((body.get("metadata") or {}).get("name") or ""))
        return self._obj(
            self.call("create", ref, self._method(kind, "create_namespaced_{}"), namespace, body)
        )

    def replace(self, kind: str, namespace: str, name: str, body: Obj) -> Obj:
        """PUT an object whole; with ``metadata.resourceVersion`` set, a 409 Conflict when it changed."""
        ref = ObjectRef(kind, namespace, name)
        method = self._method(kind, "replace_namespaced_{}")
        return self._obj(self.call("update", ref, method, name, namespace, body))

    def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: Obj | list[Obj],
        patch: PatchType = PatchType.STRATEGIC,
    ) -> Obj:
        """PATCH an object: strategic merge (dict), merge (dict) or JSON patch (list)."""
        ref = ObjectRef(kind, namespace, name)
        method = self._method(kind, "patch_namespaced_{}")
        return self._obj(
            self.call("patch", ref, method, name, namespace, body, **_patch_options(body, patch))
        )

    def delete(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        grace_period: int | None = None,
    ) -> Obj:
        """DELETE an object, only if it still has ``uid`` / ``resource_version`` (preconditions)."""
        ref = ObjectRef(kind, namespace, name)
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v is not None
        }
        options: dict[str, Any] = {}
        if preconditions:
            options["body"] = {"preconditions": preconditions}
        if grace_period is not None:
            options["grace_period_seconds"] = grace_period
        return self._obj(
            self.call("delete", ref, self._method(kind, "delete_namespaced_{}"), name, namespace, **options)
        )

    def get_scale(self, kind: str, namespace: str, name: str) -> Obj:
        """GET the ``scale`` subresource of a Deployment, StatefulSet or ReplicaSet."""
        self._scalable(kind)
        ref = ObjectRef(f"{kind}/scale", namespace, name)
        return self._obj(
            self.call("get", ref, self._method(kind, "read_namespaced_{}_scale"), name, namespace)
        )

    def patch_scale(self, kind: str, namespace: str, name: str, body: Obj) -> Obj:
        """PATCH the ``scale`` subresource (a merge patch: ``{"spec": {"replicas": n}}``)."""
        self._scalable(kind)
        ref = ObjectRef(f"{kind}/scale", namespace, name)
        method = self._method(kind, "patch_namespaced_{}_scale")
        return self._obj(
            self.call("patch", ref, method, name, namespace, body, **_patch_options(body, PatchType.MERGE))
        )

    @staticmethod
    def _scalable(kind: str) -> None:
        if not _kind(kind).scalable:
            msg = f"{kind} has no scale subresource"
            raise ValueError(msg)

    @staticmethod
    def _obj(value: Any) -> Obj:
        return value if isinstance(value, dict) else {}


def _patch_options(body: Obj | list[Obj], patch: PatchType) -> dict[str, Any]:
    if patch is PatchType.JSON:
        if not isinstance(body, list):
            msg = "a JSON patch is a list of operations"
            raise TypeError(msg)
        return {}
    if not isinstance(body, dict):
        msg = f"a {patch.value} patch is an object"
        raise TypeError(msg)
    return {"_content_type": MERGE_PATCH} if patch is PatchType.MERGE else {}


def _decode(response: Any) -> Any:
    """The JSON body of a raw urllib3 response (None when empty), releasing the connection."""
    try:
        data = response.data
    finally:
        release = getattr(response, "release_conn", None)
        if release is not None:
            release()
    if not data:
        return None
    try:
        return loads(data)
    except NestedTooDeep:
        msg = "the API server's answer is nested too deep to read"
        raise ValueError(msg) from None


def _short(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    text = f"{type(error).__name__}: {reason or error}"
    return text if len(text) <= 300 else text[:297] + "..."
