"""The agent's HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz`` and POST routes (webhooks).

What one client can cost is bounded: a fixed pool of worker threads serves connections from a
bounded queue (a full queue is answered 429 by the accepting thread, without reading the
request, and so is a client address past its ``per_client`` connections, so that one client's
stalled connections cannot starve the kubelet's probes); each connection must deliver its
request within ``read_timeout`` in all (a reaper closes it otherwise: a stalled or trickling
client holds a worker no longer than that); POST
bodies are bounded by ``max_body`` (413, refused from the Content-Length, before the body is
read) and handled ``post_concurrency`` at a time (429 past that), so GETs for probes and
scrapes keep being served while a webhook floods. A :class:`PostRoute` may require an
``Authorization`` (401 otherwise) and a JSON Content-Type (415 otherwise), both checked
before its body is read. GET routes under a path prefix (``/incidents``) get the rest of the
path and the query. Handlers only read state the engine publishes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("aiops.http")

#: The largest request body read by default; larger ones get 413 without being read.
MAX_BODY = 4 * 1024 * 1024
#: At most this much of a refused request's body is read and dropped before the connection
#: closes (closing on unread data resets the connection, and the client may lose the answer).
_DRAIN = 256 * 1024
#: How often the reaper looks for connections past their deadline.
_REAP_EVERY = 0.1


@dataclass(frozen=True, slots=True)
class Response:
    """What a route returns."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


#: A route handler gets the request body (empty for GET) and returns a response.
Route = Callable[[bytes], Response]
#: A GET route under a path prefix gets the rest of the path and the query string.
GetRoute = Callable[[str, str], Response]


@dataclass(frozen=True, slots=True)
class PostRoute:
    """A POST handler with the checks made before its body is read.

    ``authorize`` gets the request headers and returns None when the request may proceed, or
    the reason it may not (answered 401). ``json_only`` requires ``Content-Type:
    application/json`` (415 otherwise). ``refused`` is told the status of each request answered
    without being handled.
    """

    handler: Route
    authorize: Callable[[Message], str | None] | None = None
    json_only: bool = False
    refused: Callable[[int], None] | None = None


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What the server spends on clients (see the module docstring)."""

    workers: int = 8
    queue: int = 64
    read_timeout: float = 10.0
    max_body: int = MAX_BODY
    post_concurrency: int = 2
    per_client: int | None = None
    """Connections one client address may hold, queued or served; past it: 429 at once (None: any)."""

    def __post_init__(self) -> None:
        for name in ("workers", "queue", "max_body", "post_concurrency"):
            if getattr(self, name) < 1:
                msg = f"http limit {name} must be at least 1, got {getattr(self, name)}"
                raise ValueError(msg)
        if not self.read_timeout > 0:
            msg = f"http read_timeout must be positive, got {self.read_timeout}"
            raise ValueError(msg)
        if self.per_client is not None and self.per_client < 1:
            msg = f"http limit per_client must be at least 1, got {self.per_client}"
            raise ValueError(msg)


_BUSY_BODY = b"too many requests; retry\n"
_TOO_BUSY = (
    b"HTTP/1.0 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
    + f"Content-Length: {len(_BUSY_BODY)}\r\nConnection: close\r\n\r\n".encode()
    + _BUSY_BODY
)


class _PooledServer(HTTPServer):
    """An HTTPServer whose connections are served by a fixed pool from a bounded queue."""

    request_queue_size = 128  # the listen backlog (HTTPServer's default is 5)

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limits: ServerLimits
    ) -> None:
        super().__init__(address, handler)
        self.limits = limits
        self._queue: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue(maxsize=limits.queue)
        self._deadlines: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.rejected = 0  # connections answered 429 because the queue was full, or their client's share
        self._by_client: dict[str, int] = {}  # connections queued or served, per client address
        self.reaped = 0  # connections closed for not delivering their request in time
        self._threads = [
            threading.Thread(target=self._work, name=f"aiops-http-{i}", daemon=True)
            for i in range(limits.workers)
        ]
        self._threads.append(threading.Thread(target=self._reap, name="aiops-http-reaper", daemon=True))
        for t in self._threads:
            t.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Queue the connection for a worker, or answer 429 at once when the queue is full or its
        client already holds ``per_client`` connections (so that one client's stalled connections
        cannot take every worker and queue slot from the kubelet's probes)."""
        client = _client_of(client_address)
        with self._lock:
            held = self._by_client.get(client, 0)
            admitted = self.limits.per_client is None or held < self.limits.per_client
            if admitted:
                try:
                    self._queue.put_nowait((request, client_address))
                except queue.Full:
                    admitted = False
                else:
                    self._by_client[client] = held + 1
        if admitted:
            return
        self.rejected += 1
        with contextlib.suppress(OSError):
            request.settimeout(0.2)
            request.sendall(_TOO_BUSY)
            _drain_socket(request)
        self.shutdown_request(request)

    def _release(self, client_address: Any) -> None:
        client = _client_of(client_address)
        with self._lock:
            left = self._by_client.get(client, 1) - 1
            if left > 0:
                self._by_client[client] = left
            else:
                self._by_client.pop(client, None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, address = item
            self.start_deadline(request)
            try:
                self.finish_request(request, address)
            except Exception:
                self.handle_error(request, address)
            finally:
                self.end_deadline(request)
                self.shutdown_request(request)
                self._release(address)

    def start_deadline(self, conn: socket.socket) -> None:
        """The request on ``conn`` must be read within ``read_timeout`` from now."""
        with self._lock:
            self._deadlines[conn] = time.monotonic() + self.limits.read_timeout

    def end_deadline(self, conn: socket.socket) -> None:
        """The request on ``conn`` was read (or the connection is done): no deadline any more."""
        with self._lock:
            self._deadlines.pop(conn, None)

    def _reap(self) -> None:
        while not self._closing.wait(_REAP_EVERY):
            now = time.monotonic()
            with self._lock:
                late = [c for c, deadline in self._deadlines.items() if deadline < now]
                for conn in late:
                    del self._deadlines[conn]
            for conn in late:
                self.reaped += 1
                log.debug("http: closing a connection that did not deliver its request in time")
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed connection is logged, quietly when the client went away (or was closed)."""
        log.debug("http: error serving %s", client_address, exc_info=True)

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()
        for _ in range(self.limits.workers):
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)


def _client_of(address: Any) -> str:
    """The client's address without its port (IPv4 or IPv6)."""
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


def _drain_socket(conn: socket.socket) -> None:
    """Read what the client already sent (up to _DRAIN bytes, without waiting) so that closing does
    not reset the connection before it read the answer."""
    conn.setblocking(False)
    left = _DRAIN
    with contextlib.suppress(OSError):
        while left > 0:
            chunk = conn.recv(min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class HttpServer:
    """Serves metrics, liveness and readiness, plus any POST routes given, within ``limits``."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        healthy: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        post_routes: Mapping[str, Route | PostRoute] | None = None,
        limits: ServerLimits | None = None,
        get_routes: Mapping[str, GetRoute] | None = None,
    ) -> None:
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._post = {
            path: r if isinstance(r, PostRoute) else PostRoute(r) for path, r in (post_routes or {}).items()
        }
        self._get_routes = dict(get_routes or {})
        self.limits = limits if limits is not None else ServerLimits()
        self._post_slots = threading.BoundedSemaphore(self.limits.post_concurrency)
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = self.limits.read_timeout  # each read; the reaper bounds the whole request

            def do_GET(self) -> None:
                server._done_reading(self)
                server._respond(self, server._get(self.path))

            def do_POST(self) -> None:
                server._post_request(self)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        self._httpd = _PooledServer((host, port), Handler, self.limits)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        return int(self._httpd.server_address[1])

    @property
    def rejected(self) -> int:
        """Connections answered 429 because every worker was busy and the queue full."""
        return self._httpd.rejected

    @property
    def reaped(self) -> int:
        """Connections closed because they did not deliver their request within ``read_timeout``."""
        return self._httpd.reaped

    def _get(self, raw: str) -> Response:
        path, _, query = raw.partition("?")
        for prefix, route in self._get_routes.items():
            if path == prefix or path.startswith(prefix + "/"):
                return route(path[len(prefix) :].lstrip("/"), query)
        if path == "/metrics":
            return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        if path in {"/healthz", "/readyz"}:
            ok, why = (self._healthy if path == "/healthz" else self._ready)()
            return Response(200 if ok else 503, f"{'ok' if ok else 'not ok'}: {why}\n".encode())
        return Response(404, b"not found\n")

    def _done_reading(self, handler: BaseHTTPRequestHandler) -> None:
        self._httpd.end_deadline(handler.connection)

    def _refuse(
        self, handler: BaseHTTPRequestHandler, response: Response, length: int, route: PostRoute | None = None
    ) -> None:
        """Answer without handling; drop what is left of a small body first (see _DRAIN)."""
        if route is not None and route.refused is not None:
            route.refused(response.status)
        if 0 < length <= _DRAIN:
            with contextlib.suppress(OSError, ValueError):
                handler.rfile.read(length)
        self._done_reading(handler)
        self._respond(handler, response)

    def _post_request(self, handler: BaseHTTPRequestHandler) -> None:
        route = self._post.get(handler.path.split("?", 1)[0])
        raw_length = handler.headers.get("Content-Length")
        try:
            length = int(raw_length) if raw_length is not None else -1
        except ValueError:
            length = -2
        if route is None:
            self._refuse(handler, Response(404, b"not found\n"), length)
            return
        if route.authorize is not None:
            why = route.authorize(handler.headers)
            if why is not None:
                challenge = (("WWW-Authenticate", 'Bearer realm="aiops-agent"'),)
                self._refuse(
                    handler,
                    Response(401, f"unauthorized: {why}\n".encode(), headers=challenge),
                    length,
                    route,
                )
                return
        if route.json_only and not _is_json(handler.headers.get("Content-Type")):
            got = handler.headers.get("Content-Type") or "none"
            self._refuse(
                handler,
                Response(415, f"expected Content-Type application/json, got {got}\n".encode()),
                length,
                route,
            )
            return
        if length == -1:
            self._refuse(handler, Response(411, b"Content-Length required\n"), 0, route)
            return
        if length < 0:
            self._refuse(
                handler, Response(400, f"invalid Content-Length {raw_length!r}\n".encode()), 0, route
            )
            return
        if length > self.limits.max_body:
            self._refuse(
                handler, Response(413, f"body over {self.limits.max_body} bytes\n".encode()), 0, route
            )
            return
        if not self._post_slots.acquire(blocking=False):
            busy = Response(429, _BUSY_BODY, headers=(("Retry-After", "1"),))
            self._refuse(handler, busy, length, route)
            return
        try:
            try:
                body = handler.rfile.read(length) if length > 0 else b""
            except OSError:  # the reaper closed it, or the client went away
                return
            if len(body) < length:
                return  # the client closed (or was closed) before sending its body: nobody to answer
            self._done_reading(handler)
            response = route.handler(body)
        finally:
            self._post_slots.release()
        self._respond(handler, response)

    @staticmethod
    def _respond(handler: BaseHTTPRequestHandler, response: Response) -> None:
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(response.body)
        except OSError:  # the client went away
            log.debug("http: client gone before its %d answer", response.status)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="aiops-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
