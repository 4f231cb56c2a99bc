"""The twin API server over HTTP: a ``ThreadingHTTPServer`` in a background thread on loopback.

The official ``kubernetes`` client talks to it unchanged through a kubeconfig
(:func:`simulations.twin.kubeconfig.write_kubeconfig`). Responses are JSON; HTTP/1.1 keep-alive
is on, as the client's connection pool expects; faults from :class:`FaultInjector` apply before a
request is served, and every request is recorded in :attr:`TwinApiServer.requests`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from simulations.twin.api import KubeApi, RequestInfo, Response, classify
from simulations.twin.errors import ApiError
from simulations.twin.faults import FaultInjector, FaultKind

log = logging.getLogger(__name__)

IDLE_CONNECTION_SECONDS = 30.0


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received: what it addressed and the HTTP code it got (0: dropped)."""

    method: str
    path: str
    info: RequestInfo
    code: int
    content_type: str


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], twin: TwinApiServer) -> None:
        self.twin = twin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response (timeouts, dropped-connection tests) is normal here.
        log.debug("twin API: connection from %s failed", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "twin-apiserver/1"
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers (~40 ms per request on Linux loopback)
    disable_nagle_algorithm = True
    timeout = IDLE_CONNECTION_SECONDS
    server: _HttpServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("twin API %s - " + format, self.address_string(), *args)

    def _serve(self) -> None:
        twin = self.server.twin
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        info = classify(self.command, self.path)
        content_type = self.headers.get("Content-Type", "")
        delay, fault = twin.faults.take(info)
        if delay > 0 and twin.stopping.wait(delay):
            fault = None
        if fault is not None and fault.kind is FaultKind.DROP:
            twin.record(RequestRecord(self.command, self.path, info, 0, content_type))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None:
            error = ApiError.from_code(fault.code, fault.message, fault.retry_after)
            response = Response(error.code, error.status(), dict(error.headers))
        else:
            response = twin.api.handle(self.command, self.path, dict(self.headers.items()), body)
        twin.record(RequestRecord(self.command, self.path, info, response.code, content_type))
        payload, payload_type = response.encode()
        self.send_response(response.code)
        self.send_header("Content-Type", payload_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout): nothing left to tell it


class TwinApiServer:
    """Serves a :class:`~simulations.twin.api.KubeApi` over HTTP on ``host:port`` (port 0: any free one)."""

    def __init__(
        self, api: KubeApi, faults: FaultInjector | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.api = api
        self.faults = faults if faults is not None else FaultInjector()
        self.stopping = threading.Event()
        self._address = (host, port)
        self._http: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[RequestRecord] = []
        self._requests_lock = threading.Lock()
        api.server_address = lambda: f"{self.host}:{self.port}"

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._address[0]

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        if self._http is None:
            return self._address[1]
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``server`` of a kubeconfig cluster."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Bind and serve in a daemon thread."""
        if self._http is not None:
            return self
        self.stopping.clear()
        self._http = _HttpServer(self._address, self)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="twin-apiserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and the socket."""
        if self._http is None:
            return
        self.stopping.set()
        self._http.shutdown()
        self._http.close_connections()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._http = None
        self._thread = None

    def record(self, entry: RequestRecord) -> None:
        """Append to the request log."""
        with self._requests_lock:
            self._requests.append(entry)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request served so far (a copy), oldest first."""
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._requests_lock:
            self._requests = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
