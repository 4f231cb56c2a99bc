"""``notify``: a webhook on loopback (a test server of our own): body, secrets, retries, timeouts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from remediations import ActionStatus
from remediations.registry import ACTIONS
from tests.integration.test_remediation_support import Cluster, open_cluster

pytestmark = pytest.mark.integration


@dataclass
class Reply:
    code: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class Webhook:
    """A loopback HTTP server answering POSTs from a script of replies (then 200), recording requests."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.received: list[dict[str, Any]] = []
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                hook.received.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                reply = hook.script.pop(0) if hook.script else Reply()
                if reply.hang:
                    hook.release.wait(5)
                    return
                self.send_response(reply.code)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/SECRET"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def cluster(kube_env) -> Iterator[Cluster]:
    with open_cluster(kube_env) as opened:
        opened.deployment("web", replicas=1)
        yield opened


def test_posts_a_slack_compatible_json_body_with_secrets_from_the_environment(cluster, webhook):
    params = {
        "webhookEnv": "OPS_WEBHOOK",
        "message": "Rolled back web",
        "tokenEnv": "OPS_TOKEN",
        "headersEnv": {"X-Team": "OPS_TEAM"},
    }
    environ = {"OPS_WEBHOOK": webhook.url, "OPS_TOKEN": "s3cret", "OPS_TEAM": "payments"}
    request = cluster.request("notify", "Deployment", "web", params, incident="inc-9")

    result = cluster.run(request, environ=environ)

    assert result.status is ActionStatus.EXECUTED, result.message
    assert result.message == "posted the message to the webhook in $OPS_WEBHOOK (HTTP 200)"
    (received,) = webhook.received
    assert received["path"] == "/hooks/T000/SECRET"
    assert received["body"] == {
        "text": "Rolled back web",
        "incident": "inc-9",
        "playbook": "pb",
        "target": {"kind": "Deployment", "namespace": cluster.ns, "name": "web"},
        "reason": "test",
        "key": request.key,
    }
    headers = received["headers"]
    assert headers["Authorization"] == "Bearer s3cret"
    assert (headers["X-Team"], headers["Content-Type"]) == ("payments", "application/json")
    assert headers["Idempotency-Key"] == request.key_digest
    shown = json.dumps(result.to_dict())
    assert "s3cret" not in shown
    assert "SECRET" not in shown
    assert len(cluster.events("Deployment", "web", "AiopsNotified")) == 1


def test_retries_a_500_with_backoff_on_the_clock(cluster, webhook):
    webhook.script = [Reply(500), Reply(503)]
    result = cluster.run(
        cluster.request("notify", "Deployment", "web", {"webhook": webhook.url, "message": "hi"})
    )
    assert result.status is ActionStatus.EXECUTED, result.message
    assert result.details["attempts"] == 3
    assert len(webhook.received) == 3
    assert cluster.clock.waits == [0.5, 1.0]


def test_a_429_waits_its_retry_after(cluster, webhook):
    webhook.script = [Reply(429, {"Retry-After": "7"})]
    result = cluster.run(
        cluster.request("notify", "Deployment", "web", {"webhook": webhook.url, "message": "hi"})
    )
    assert result.status is ActionStatus.EXECUTED, result.message
    assert cluster.clock.waits == [7.0]


def test_a_hanging_webhook_times_out_with_a_clear_failure(cluster, webhook):
    webhook.script = [Reply(hang=True), Reply(hang=True)]
    params = {"webhook": webhook.url, "message": "hi", "timeout": 0.2, "retries": 1}
    started = time.monotonic()

    result = cluster.run(cluster.request("notify", "Deployment", "web", params))

    assert time.monotonic() - started < 1.5
    assert result.status is ActionStatus.FAILED
    assert result.retryable
    port = webhook.server.server_address[1]
    assert result.message == f"notify: http://127.0.0.1:{port} timed out after 0.2 s (2 attempts)"
    assert len(webhook.received) == 2


def test_a_4xx_is_not_retried(cluster, webhook):
    webhook.script = [Reply(404)]
    result = cluster.run(
        cluster.request("notify", "Deployment", "web", {"webhook": webhook.url, "message": "hi"})
    )
    assert result.status is ActionStatus.FAILED
    assert not result.retryable
    assert "answered HTTP 404; not retried" in result.message
    assert len(webhook.received) == 1


def test_a_missing_secret_is_refused_without_a_request(cluster, webhook):
    params = {"webhookEnv": "NOT_SET_ANYWHERE", "message": "hi"}
    result = cluster.run(cluster.request("notify", "Deployment", "web", params), environ={})
    assert result.status is ActionStatus.FAILED
    assert result.message == "notify: environment variable NOT_SET_ANYWHERE (the webhook URL) is not set"
    assert webhook.received == []


def test_a_dry_run_posts_nothing_and_shows_the_body(cluster, webhook):
    request = cluster.request(
        "notify", "Deployment", "web", {"webhook": webhook.url, "message": "hi"}, dry_run=True
    )
    plan = ACTIONS["notify"].plan(cluster.ctx(request))
    result = cluster.run(request)
    assert result.status is ActionStatus.DRY_RUN
    assert "+body.text: hi" in plan.diff.splitlines()
    assert webhook.received == []
