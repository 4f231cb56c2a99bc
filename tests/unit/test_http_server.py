"""The HTTP endpoint under hostile clients, over real loopback sockets: the Alertmanager webhook
needs credentials (401) and JSON (415); bodies are bounded (413); a flood gets 429 while probes
are still answered; a stalled client is dropped after the read timeout."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import AlertmanagerSourceConfig, BasicAuthConfig
from agent.http import HttpServer, PostRoute, Response, ServerLimits
from agent.metrics import AgentMetrics
from agent.sources.alertmanager import alertmanager_post_route, alertmanager_route
from tests.servers.common import eventually

pytestmark = pytest.mark.timeout(60)

TOKEN = "t0ken-from-a-secret"
JSON = {"Content-Type": "application/json"}


class Hook:
    """A POST handler that records bodies, and can be made to wait."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, body: bytes) -> Response:
        self.gate.wait(10)
        self.bodies.append(body)
        return Response(200, b"ok\n")


def serve(route: Any, limits: ServerLimits | None = None) -> HttpServer:
    server = HttpServer(
        "127.0.0.1", 0, AgentMetrics().registry, lambda: (True, "fine"), lambda: (True, "fine"),
        {"/alertmanager": route}, limits,
    )  # fmt: skip
    server.start()
    return server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def hook() -> Hook:
    return Hook()


@pytest.fixture
def metrics() -> AgentMetrics:
    return AgentMetrics()


@pytest.fixture
def webhook(hook: Hook, token_file: Path, metrics: AgentMetrics) -> Iterator[HttpServer]:
    route = alertmanager_post_route(hook, AlertmanagerSourceConfig(bearer_token_file=token_file), metrics)
    server = serve(
        route, ServerLimits(workers=4, queue=8, read_timeout=1.0, max_body=1024, post_concurrency=1)
    )
    yield server
    hook.gate.set()
    server.close()


def request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body if method == "POST" else None, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {token}"}


def outcome(metrics: AgentMetrics, name: str) -> float:
    return float(metrics.alertmanager_requests.labels(name)._value.get())


# ---------------------------------------------------------------------------- authentication


def test_an_unauthenticated_post_is_refused_before_its_body_is_read(
    webhook: HttpServer, hook: Hook, metrics: AgentMetrics
) -> None:
    status, body = request(webhook.port, "POST", "/alertmanager", b"{}", JSON)
    assert (status, body) == (401, "unauthorized: expected an Authorization header of scheme Bearer\n")
    assert request(webhook.port, "POST", "/alertmanager", b"{}", bearer("guess"))[0] == 401
    assert (
        request(webhook.port, "POST", "/alertmanager", b"{}", {**JSON, "Authorization": "Basic eDp5"})[0]
        == 401
    )
    assert hook.bodies == []
    assert request(webhook.port, "POST", "/alertmanager", b'{"a": 1}', bearer()) == (200, "ok\n")
    assert hook.bodies == [b'{"a": 1}']
    assert outcome(metrics, "unauthorized") == 3


def test_a_rotated_token_file_is_read_again(webhook: HttpServer, token_file: Path) -> None:
    assert request(webhook.port, "POST", "/alertmanager", b"{}", bearer())[0] == 200
    token_file.write_text("the-new-token-is-longer\n")
    assert request(webhook.port, "POST", "/alertmanager", b"{}", bearer())[0] == 401
    assert request(webhook.port, "POST", "/alertmanager", b"{}", bearer("the-new-token-is-longer"))[0] == 200
    token_file.unlink()
    status, body = request(webhook.port, "POST", "/alertmanager", b"{}", bearer("the-new-token-is-longer"))
    assert status == 401
    assert f"cannot read the bearer token file {token_file}" in body


def test_basic_auth_as_alertmanager_sends_it(tmp_path: Path, hook: Hook, metrics: AgentMetrics) -> None:
    (tmp_path / "password").write_text("pa:ss\n")
    config = AlertmanagerSourceConfig(
        basic_auth=BasicAuthConfig(username="am", password_file=tmp_path / "password")
    )
    server = serve(alertmanager_post_route(hook, config, metrics))
    try:

        def basic(user: str, password: str) -> dict[str, str]:
            return {
                **JSON,
                "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            }

        assert request(server.port, "POST", "/alertmanager", b"{}", basic("am", "pa:ss"))[0] == 200
        assert request(server.port, "POST", "/alertmanager", b"{}", basic("am", "pa"))[0] == 401
        assert request(server.port, "POST", "/alertmanager", b"{}", basic("root", "pa:ss"))[0] == 401
        assert (
            request(server.port, "POST", "/alertmanager", b"{}", {**JSON, "Authorization": "Basic !!"})[0]
            == 401
        )
    finally:
        server.close()


def test_without_credentials_every_webhook_is_refused_unless_insecure(
    hook: Hook, metrics: AgentMetrics
) -> None:
    closed = serve(alertmanager_post_route(hook, AlertmanagerSourceConfig(), metrics))
    open_ = serve(alertmanager_post_route(hook, AlertmanagerSourceConfig(insecure=True), metrics))
    try:
        status, body = request(closed.port, "POST", "/alertmanager", b"{}", bearer())
        assert (status, body) == (
            401,
            "unauthorized: no webhook credentials are configured (sources.alertmanager)\n",
        )
        assert request(open_.port, "POST", "/alertmanager", b"{}", JSON)[0] == 200
    finally:
        closed.close()
        open_.close()
    with pytest.raises(ValueError, match="insecure: true with credentials configured"):
        AlertmanagerSourceConfig(insecure=True, bearer_token_file=Path("/x"))


# ---------------------------------------------------------------------------- content type and size


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_post_that_is_not_json_gets_415(webhook: HttpServer, hook: Hook, content_type: str | None) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    status, body = request(webhook.port, "POST", "/alertmanager", b"{}", headers)
    assert status == 415
    assert body == f"expected Content-Type application/json, got {content_type or 'none'}\n"
    assert hook.bodies == []
    ok = {**bearer(), "Content-Type": "application/json; charset=utf-8"}
    assert request(webhook.port, "POST", "/alertmanager", b"{}", ok)[0] == 200


def test_an_oversize_post_gets_413_unread(webhook: HttpServer, hook: Hook, metrics: AgentMetrics) -> None:
    status, body = request(webhook.port, "POST", "/alertmanager", b"x" * 1025, bearer())
    assert (status, body) == (413, "body over 1024 bytes\n")
    # a client that announces 1 GB is refused from the header alone
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as s:
        s.sendall(
            b"POST /alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000000000\r\n\r\n".encode()
        )
        assert s.recv(100).startswith(b"HTTP/1.0 413 ")
    assert hook.bodies == []
    assert outcome(metrics, "too_large") == 2


# ---------------------------------------------------------------------------- floods and stalls


def test_a_flood_gets_429_and_probes_are_still_answered(webhook: HttpServer, hook: Hook) -> None:
    hook.gate.clear()  # the one POST slot is held by a slow delivery
    first = threading.Thread(target=request, args=(webhook.port, "POST", "/alertmanager", b"{}", bearer()))
    first.start()
    eventually(lambda: webhook._post_slots._value == 0, timeout=5, what="the POST slot taken")
    statuses: list[int | str] = []

    def flood() -> None:
        try:
            statuses.append(request(webhook.port, "POST", "/alertmanager", b"{}", bearer())[0])
        except (BrokenPipeError, ConnectionResetError):
            # a full queue is answered 429 by the accepting thread without waiting for the body:
            # a client still sending it when the socket closes sees the connection refused
            statuses.append("closed")

    floods = [threading.Thread(target=flood) for _ in range(40)]
    for t in floods:
        t.start()
    probes = [request(webhook.port, "GET", "/healthz")[0] for _ in range(5)]
    for t in floods:
        t.join(10)
    assert probes == [200] * 5
    assert len(statuses) == 40
    assert set(statuses) <= {429, "closed"}, statuses
    assert statuses.count("closed") <= webhook.rejected  # only the full queue closes unread
    hook.gate.set()
    first.join(10)
    assert hook.bodies == [b"{}"]
    assert request(webhook.port, "POST", "/alertmanager", b"{}", bearer())[0] == 200


def test_stalled_clients_are_dropped_after_the_read_timeout_and_the_server_stays_responsive(
    webhook: HttpServer,
) -> None:
    """4 workers, a queue of 8, a read timeout of 1 s: 30 clients that connect and send nothing
    (or half a request) fill it; new connections get 429 at once; after the timeout every stalled
    client has been closed and the server answers again."""
    stalled = []
    for i in range(30):
        s = socket.create_connection(("127.0.0.1", webhook.port), timeout=5)
        if i % 2:
            s.sendall(b"POST /alertmanager HTTP/1.1\r\nContent-Length: 100\r\n")  # never finished
        stalled.append(s)
    try:
        eventually(lambda: webhook.rejected > 0, timeout=5, what="connections past the queue refused")
        started = time.monotonic()
        for s in stalled:  # every stalled connection is closed by the server (EOF, or a 429)
            s.settimeout(5)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            assert data in (b"",) or data.startswith(b"HTTP/1.0 429 "), data[:40]
        assert time.monotonic() - started < 4.0, "held no longer than a few read timeouts"
        assert request(webhook.port, "GET", "/healthz") == (200, "ok: fine\n")
    finally:
        for s in stalled:
            s.close()


def test_a_client_trickling_its_request_is_dropped_at_the_deadline(webhook: HttpServer) -> None:
    """One byte every 50 ms keeps each read within its timeout; the whole request is not in by 1 s."""
    closed = False
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as s:
        s.settimeout(None)  # blocking, so that the peek below does not wait
        started = time.monotonic()
        for ch in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            try:
                s.sendall(bytes([ch]))
                time.sleep(0.05)
                if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    closed = True
                    break
            except BlockingIOError:  # nothing to read: still open
                continue
            except OSError:
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed
    assert 0.9 < elapsed < 2.5
    assert webhook.reaped == 1, (elapsed, webhook.rejected)


def test_plain_routes_keep_working_without_checks() -> None:
    seen: list[bytes] = []

    def route(body: bytes) -> Response:
        seen.append(body)
        return Response(202, b"ok")

    server = serve(PostRoute(route))
    try:
        assert request(server.port, "POST", "/alertmanager", json.dumps([1]).encode()) == (202, "ok")
        assert request(server.port, "POST", "/nope", b"{}")[0] == 404
        assert seen == [b"[1]"]
    finally:
        server.close()


# ---------------------------------------------------------------------------- fuzzing the webhook

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
_alert = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved", "pending"]) | _json,
        "labels": st.dictionaries(st.sampled_from(["alertname", "namespace", "x"]), st.text(max_size=5))
        | _json,
        "startsAt": st.sampled_from(["2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "yesterday"]) | _json,
        "endsAt": st.sampled_from(["2026-01-01T00:10:00.123456789+01:00", ""]) | _json,
        "annotations": _json,
    },
)
_payloads = st.one_of(
    st.fixed_dictionaries(
        {
            "version": st.sampled_from(["4", "3"]) | _json,
            "status": st.sampled_from(["firing", "resolved"]) | _json,
        },
        optional={"alerts": st.lists(_alert, max_size=4) | _json, "truncatedAlerts": _json},
    ).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
    _json.map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=400, deadline=None)
@given(_payloads)
def test_the_webhook_never_fails_on_any_body(body: bytes) -> None:
    """Any body is either accepted (200) or refused with a reason (400); nothing raises."""
    delivered: list[Any] = []
    route = alertmanager_route(delivered.extend, lambda: 1.78e9, AgentMetrics())
    response = route(body)
    assert response.status in (200, 400)
    if response.status == 400:
        assert response.body.startswith(b"malformed Alertmanager payload: ")
        assert len(response.body) > len(b"malformed Alertmanager payload: \n")
        assert delivered == []
    else:
        assert all(s.series.name for s in delivered)


def test_one_clients_stalled_connections_cannot_starve_another_clients_probe(hook: Hook) -> None:
    """4 workers, a queue of 8, 3 connections a client: 20 stalled connections from one address
    hold 3 places; the rest get 429 at once, and a probe from another address is answered."""
    server = serve(
        lambda _body: Response(200, b"ok\n"),
        ServerLimits(workers=4, queue=8, read_timeout=30.0, post_concurrency=1, per_client=3),
    )
    stalled = []
    try:
        for _ in range(20):
            s = socket.create_connection(
                ("127.0.0.1", server.port), timeout=5, source_address=("127.0.0.2", 0)
            )
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            stalled.append(s)
        eventually(lambda: server.rejected == 17, timeout=5, what="the client's connections past 3 refused")
        started = time.monotonic()
        assert request(server.port, "GET", "/healthz") == (200, "ok: fine\n")
        assert time.monotonic() - started < 2.0, "answered at once, not after the stalled ones' timeout"
        refused = 0
        for s in stalled:
            s.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                refused += s.recv(64).startswith(b"HTTP/1.0 429 ")
        assert refused == 17
    finally:
        for s in stalled:
            s.close()
        server.close()
