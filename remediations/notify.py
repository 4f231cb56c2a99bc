"""``notify``: post a JSON message to a webhook (Slack-compatible ``text``), with timeouts and retries.

The body is ``{"text": message, "incident": ..., "playbook": ..., "target": {...}, "reason": ...,
"key": ...}``: Slack and Mattermost incoming webhooks read ``text``; other receivers get the rest.
The URL is given (``webhook``) or read from an environment variable (``webhookEnv``, for URLs
that are secrets); a bearer token (``tokenEnv``) and other headers (``headersEnv``) come from
environment variables too, read when the action runs. Secrets never appear in results or logs:
a URL is shown as its scheme and host only, or as the variable it came from.

Every attempt has a timeout; timeouts, connection errors, 429 (honouring ``Retry-After``) and 5xx
are retried with backoff on the clock, up to ``retries`` times; other answers fail at once. The
``Idempotency-Key`` header lets a receiver drop a repeated message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from pydantic import Field, model_validator

from remediations.base import BaseAction
from remediations.diff import render
from remediations.errors import ActionRefused, PermanentError, RemediationError, TemporaryError
from remediations.params import ActionParams, Duration, EnvName, HeaderName
from remediations.types import ActionClass, ActionContext, ActionResult, ActionStatus, Plan

BACKOFF = 0.5
BACKOFF_MAX = 10.0
RETRY_AFTER_MAX = 60.0
USER_AGENT = "aiops-agent"


class NotifyParams(ActionParams):
    """Parameters of ``notify``: where, what, and how patiently."""

    action: ClassVar[str] = "notify"

    webhook: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", max_length=2048, description="the webhook URL (http or https)"
    )
    webhook_env: EnvName | None = Field(
        None, alias="webhookEnv", description="environment variable holding the webhook URL (for secret URLs)"
    )
    message: str = Field(min_length=1, max_length=4000, description="the text; templates allowed")
    timeout: Duration = Field(10.0, gt=0, le=300, description="time per attempt")
    retries: int = Field(3, ge=0, le=10, description="attempts after the first, on timeouts, 429 and 5xx")
    token_env: EnvName | None = Field(
        None,
        alias="tokenEnv",
        description="environment variable holding a bearer token (Authorization header)",
    )
    headers_env: dict[HeaderName, EnvName] = Field(
        default_factory=dict,
        alias="headersEnv",
        max_length=20,
        description="extra headers, each read from an environment variable: {Header-Name: ENV_VAR}",
    )

    @model_validator(mode="after")
    def _one_destination(self) -> NotifyParams:
        if (self.webhook is None) == (self.webhook_env is None):
            msg = "notify takes exactly one of webhook, webhookEnv"
            raise ValueError(msg)
        return self

    def where(self) -> str:
        """The destination without secrets: ``https://hooks.example.com`` or ``$ENV_VAR``."""
        if self.webhook_env is not None:
            return f"the webhook in ${self.webhook_env}"
        return _redacted(self.webhook or "")

    def describe(self) -> str:
        """Plain words."""
        return f"post {self.message!r} to {self.where()}"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(max(0.0, float(value)), RETRY_AFTER_MAX) if value is not None else None
    except ValueError:
        return None


class NotifyAction(BaseAction[NotifyParams]):
    """Post a message to a webhook."""

    name: ClassVar[str] = "notify"
    params_model: ClassVar[type[ActionParams]] = NotifyParams
    target_kinds: ClassVar[frozenset[str]] = frozenset()
    action_class: ClassVar[ActionClass] = ActionClass.NOTIFY

    def body(self, ctx: ActionContext) -> dict[str, Any]:
        """The JSON body posted."""
        request = ctx.request
        return {
            "text": self.params(ctx).message,
            "incident": request.incident,
            "playbook": request.playbook,
            "target": request.target.to_dict(),
            "reason": request.reason,
            "key": request.key,
        }

    def _environ(self, ctx: ActionContext) -> Mapping[str, str]:
        return os.environ if ctx.environ is None else ctx.environ

    def _destination(self, ctx: ActionContext) -> tuple[str, dict[str, str]]:
        params, env = self.params(ctx), self._environ(ctx)

        def secret(name: str, what: str) -> str:
            value = env.get(name, "")
            if not value.strip():
                msg = f"notify: environment variable {name} ({what}) is not set"
                raise ActionRefused(msg)
            return value.strip()

        url = params.webhook or secret(str(params.webhook_env), "the webhook URL")
        if urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).hostname:
            msg = f"notify: {params.where()} is not an http(s) URL"
            raise ActionRefused(msg)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": ctx.request.key_digest,
        }
        if params.token_env is not None:
            headers["Authorization"] = f"Bearer {secret(params.token_env, 'the bearer token')}"
        for header, variable in params.headers_env.items():
            headers[header] = secret(variable, f"header {header}")
        return url, headers

    def _plan(self, ctx: ActionContext) -> Plan:
        params = self.params(ctx)
        self._destination(ctx)
        summary = f"post a message to {params.where()}"
        diff = render(f"POST {params.where()}", {}, {"body": self.body(ctx)})
        return Plan(self.name, ctx.target, summary, diff, details={"webhook": params.where()})

    def _execute(self, ctx: ActionContext) -> ActionResult:
        params = self.params(ctx)
        url, headers = self._destination(ctx)
        body = self.body(ctx)
        attempts = params.retries + 1
        last = ""
        with requests.Session() as session:
            for attempt in range(1, attempts + 1):
                delay: float | None = None
                try:
                    response = session.post(
                        url,
                        json=body,
                        headers=headers,
                        timeout=(params.timeout, params.timeout),
                        allow_redirects=False,
                    )
                except requests.Timeout:
                    last = f"timed out after {params.timeout:g} s"
                except requests.RequestException as error:
                    last = f"could not connect ({type(error).__name__})"
                else:
                    code = response.status_code
                    if 200 <= code < 300:
                        return self._sent(ctx, attempt, code)
                    last = f"answered HTTP {code}"
                    if code != 429 and code < 500:
                        msg = f"notify: {params.where()} {last}; not retried"
                        raise PermanentError(msg)
                    delay = _retry_after(response)
                if attempt < attempts:
                    wait = delay if delay is not None else min(BACKOFF * 2 ** (attempt - 1), BACKOFF_MAX)
                    if ctx.clock.wait(wait, ctx.stop):
                        break
        msg = f"notify: {params.where()} {last} ({attempts} attempt{'s' if attempts != 1 else ''})"
        raise TemporaryError(msg)

    def _sent(self, ctx: ActionContext, attempts: int, code: int) -> ActionResult:
        params = self.params(ctx)
        message = f"posted the message to {params.where()} (HTTP {code}"
        message += f", after {attempts} attempts)" if attempts > 1 else ")"
        details: dict[str, Any] = {"attempts": attempts, "status": code}
        try:
            target = self.read_target(ctx)
        except (RemediationError, ValueError) as error:
            details["event"] = f"failed: {error}"
        else:
            details["event"] = self.event(
                ctx, target, "AiopsNotified", f"posted a message to {params.where()}"
            )
        return self.result(ctx, ActionStatus.EXECUTED, message, details=details)
