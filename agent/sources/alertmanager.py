"""Alertmanager as a source: its webhook (payload version 4) turned into ``alert`` Signals.

Existing Prometheus alert rules can trigger playbooks this way. Point an Alertmanager receiver at
the daemon::

    receivers:
      - name: aiops
        webhook_configs:
          - url: http://aiops-agent.aiops.svc:8080/alertmanager
            send_resolved: true

Each alert of a notification becomes one Signal of kind ``alert``: the metric is the alert's
``alertname``, the labels are the alert's labels, the timestamp is ``startsAt`` for a firing
alert and ``endsAt`` for a resolved one, the value and score are 1 for firing and 0 for resolved,
and the details carry status, annotations, fingerprint and generatorURL. The playbook engine
treats a firing alert as a condition that holds until its resolved notification arrives (so
``send_resolved: true`` matters).

A malformed payload gets a 400 with the reason and is counted in
``aiops_alertmanager_requests{outcome="malformed"}``; nothing of it is used.

Only Alertmanager may post: :class:`WebhookAuth` checks the ``Authorization`` header against the
credentials its ``http_config`` sends, read from files (a mounted Secret, re-read when it
changes), before the body is read::

    webhook_configs:
      - url: http://aiops-agent.aiops.svc:8080/alertmanager
        http_config:
          authorization:
            credentials_file: /etc/alertmanager/secrets/aiops-webhook/token

Without credentials configured every webhook is refused, unless ``sources.alertmanager.insecure``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from email.message import Message
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.config import AlertmanagerSourceConfig
from agent.http import PostRoute, Response, Route
from agent.metrics import AgentMetrics
from detectors.series import SeriesKey
from detectors.signal import Signal, SignalKind

log = logging.getLogger("aiops.sources.alertmanager")

#: The largest payload accepted (Alertmanager truncates groups at max_alerts; 1000 alerts is ~1 MB).
MAX_BODY = 4 << 20
#: The payload version this parser understands.
VERSION = "4"
DETECTOR = "alertmanager"

#: The longest credentials file read (a token or password is far shorter).
MAX_SECRET_BYTES = 4096

# Go's zero time, which Alertmanager sends as endsAt of alerts with no known end.
_ZERO_TIME_PREFIX = "0001-01-01"


class MalformedPayloadError(ValueError):
    """The body is not an Alertmanager version 4 webhook payload; the message says why."""


def _time(value: str) -> float | None:
    """RFC 3339 to epoch seconds; None for Go's zero time. Nanoseconds are cut to microseconds."""
    if value.startswith(_ZERO_TIME_PREFIX):
        return None
    text = value.replace("Z", "+00:00")
    # Go writes up to nine fractional digits; Python parses six
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        msg = f"time {value!r} has no timezone"
        raise ValueError(msg)
    return parsed.timestamp()


class _Model(BaseModel):
    # Alertmanager and compatible senders (Grafana) add fields over time: unknown fields are ignored
    model_config = ConfigDict(extra="ignore", frozen=True)


class Alert(_Model):
    """One alert of a notification."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str = Field(alias="startsAt")
    ends_at: str = Field("", alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        if value:
            try:
                _time(value)
            except ValueError as exc:
                msg = f"expected an RFC 3339 time, got {value!r}"
                raise ValueError(msg) from exc
        return value

    @field_validator("labels")
    @classmethod
    def _alertname(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("alertname"):
            msg = "an alert needs the label alertname"
            raise ValueError(msg)
        return value


class WebhookPayload(_Model):
    """The body Alertmanager posts to a webhook receiver (version 4)."""

    version: str
    group_key: str = Field("", alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[Alert] = Field(max_length=100_000)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value != VERSION:
            msg = f"unsupported payload version {value!r}; this receiver understands version {VERSION}"
            raise ValueError(msg)
        return value


def alert_signal(alert: Alert, received: float) -> Signal:
    """The Signal for one alert; ``received`` stands in for a missing or zero time."""
    firing = alert.status == "firing"
    started = _time(alert.starts_at) if alert.starts_at else None
    ended = _time(alert.ends_at) if alert.ends_at else None
    if firing:
        timestamp = started if started is not None else received
    else:
        timestamp = ended if ended is not None else received
    return Signal(
        kind=SignalKind.ALERT,
        series=SeriesKey.of(alert.labels["alertname"], alert.labels),
        timestamp=timestamp,
        value=1.0 if firing else 0.0,
        score=1.0 if firing else 0.0,
        detector=DETECTOR,
        details={
            "status": alert.status,
            "annotations": dict(alert.annotations),
            "fingerprint": alert.fingerprint,
            "generatorURL": alert.generator_url,
            "startsAt": alert.starts_at,
            "endsAt": alert.ends_at,
        },
    )


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_webhook(body: bytes, received: float) -> list[Signal]:
    """The Signals of one webhook body; raise :class:`MalformedPayloadError` with the reason otherwise."""
    if len(body) > MAX_BODY:
        msg = f"body of {len(body)} bytes is larger than {MAX_BODY}"
        raise MalformedPayloadError(msg)
    try:
        # orjson, not json: it also refuses a lone surrogate (\udcff, which no JSON log line or
        # Kafka message can carry on), NaN and Infinity, and nesting past 1024 levels
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        msg = f"not JSON: {exc}"
        raise MalformedPayloadError(msg) from exc
    if not isinstance(data, dict):
        msg = f"expected a JSON object, got {type(data).__name__}"
        raise MalformedPayloadError(msg)
    try:
        payload = WebhookPayload.model_validate(data)
    except ValidationError as exc:
        raise MalformedPayloadError(_reason(exc)) from exc
    if payload.truncated_alerts:
        log.warning(
            "alertmanager group %s truncated %d alerts (raise max_alerts)",
            payload.group_key,
            payload.truncated_alerts,
        )
    return [alert_signal(a, received) for a in payload.alerts]


def alertmanager_route(
    deliver: Callable[[Sequence[Signal]], None], clock_now: Callable[[], float], metrics: AgentMetrics
) -> Route:
    """The handler of ``POST /alertmanager``: parse, hand the signals to ``deliver``, answer.

    200 when every alert was delivered; 400 with the reason for a malformed payload; 503 when
    ``deliver`` fails (Alertmanager retries the notification).
    """

    def handle(body: bytes) -> Response:
        try:
            signals = parse_webhook(body, clock_now())
        except MalformedPayloadError as exc:
            outcome = "too_large" if len(body) > MAX_BODY else "malformed"
            metrics.alertmanager_requests.labels(outcome).inc()
            log.warning("malformed alertmanager payload: %s", exc)
            return Response(400, f"malformed Alertmanager payload: {exc}\n".encode())
        try:
            deliver(signals)
        except Exception:
            metrics.alertmanager_requests.labels("unavailable").inc()
            log.exception("could not deliver %d alert signal(s)", len(signals))
            return Response(503, b"could not deliver the alerts; retry\n")
        metrics.alertmanager_requests.labels("ok").inc()
        for s in signals:
            metrics.alertmanager_alerts.labels(str(s.details["status"])).inc()
        return Response(200, f"accepted {len(signals)} alert(s)\n".encode())

    return handle


class _SecretFile:
    """A credential kept in a file, read again whenever the file changes (a rotated Secret)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._stamp: tuple[int, int, int] | None = None
        self._value: bytes | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def read(self) -> tuple[bytes | None, str | None]:
        """The credential, or None and why it cannot be had."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError as exc:
            return None, self._failed(f"cannot read the {self.what} file {self.path}: {exc.strerror}")
        with self._lock:
            if stamp == self._stamp:
                return self._value, self._error
            if st.st_size > MAX_SECRET_BYTES:
                value, error = None, f"the {self.what} file {self.path} is over {MAX_SECRET_BYTES} bytes"
            else:
                try:
                    value, error = self.path.read_bytes().strip(), None
                except OSError as exc:
                    value, error = None, f"cannot read the {self.what} file {self.path}: {exc.strerror}"
                if value == b"":
                    value, error = None, f"the {self.what} file {self.path} is empty"
            self._stamp, self._value, self._error = stamp, value, error
        if error is not None:
            log.error("alertmanager webhook: %s; every webhook is refused", error)
        return value, error

    def _failed(self, error: str) -> str:
        with self._lock:
            if self._error != error:
                log.error("alertmanager webhook: %s; every webhook is refused", error)
            self._stamp, self._value, self._error = None, None, error
        return error


class WebhookAuth:
    """Checks a webhook's ``Authorization`` header: a bearer token or basic auth, as configured.

    Returns None for a request that may proceed, else the reason it may not (answered 401). With
    no credentials configured every request is refused; with ``insecure`` none is checked.
    """

    def __init__(self, config: AlertmanagerSourceConfig) -> None:
        self.insecure = config.insecure
        self._token = (
            _SecretFile(config.bearer_token_file, "bearer token")
            if config.bearer_token_file is not None
            else None
        )
        basic = config.basic_auth
        self._username = basic.username.encode() if basic is not None else None
        self._password = (
            _SecretFile(basic.password_file, "basic auth password") if basic is not None else None
        )
        if not self.insecure and self._token is None and self._password is None:
            log.warning(
                "alertmanager webhook: no credentials configured (sources.alertmanager.bearer_token_file or "
                "basic_auth); every webhook is refused until they are, or insecure: true"
            )

    def __call__(self, headers: Message) -> str | None:
        if self.insecure:
            return None
        if self._token is None and self._password is None:
            return "no webhook credentials are configured (sources.alertmanager)"
        scheme, _, credentials = (headers.get("Authorization") or "").strip().partition(" ")
        scheme = scheme.lower()
        given = credentials.strip().encode()
        if scheme == "bearer" and self._token is not None:
            token, error = self._token.read()
            if token is None:
                return error
            return None if hmac.compare_digest(given, token) else "wrong bearer token"
        if scheme == "basic" and self._password is not None and self._username is not None:
            password, error = self._password.read()
            if password is None:
                return error
            try:
                user, sep, secret = base64.b64decode(given, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return "malformed basic credentials"
            ok = bool(sep) & hmac.compare_digest(user, self._username) & hmac.compare_digest(secret, password)
            return None if ok else "wrong username or password"
        accepted = " or ".join(
            name for name, have in (("Bearer", self._token), ("Basic", self._password)) if have is not None
        )
        return f"expected an Authorization header of scheme {accepted}"


#: The outcome label a status refused by the HTTP layer is counted under.
_REFUSED = {
    401: "unauthorized",
    411: "malformed",
    400: "malformed",
    413: "too_large",
    415: "wrong_content_type",
    429: "busy",
}


def alertmanager_post_route(
    route: Route, config: AlertmanagerSourceConfig, metrics: AgentMetrics
) -> PostRoute:
    """``route`` behind the webhook's checks: credentials (401), JSON (415), each refusal counted."""
    return PostRoute(
        route,
        authorize=WebhookAuth(config),
        json_only=True,
        refused=lambda status: metrics.alertmanager_requests.labels(_REFUSED.get(status, "refused")).inc(),
    )
