"""The agent's HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``; later issues add routes.

A ThreadingHTTPServer in a daemon thread; handlers only read state the engine publishes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("aiops.http")

#: The largest request body read; larger ones get 413 without being read.
MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    """What a route returns."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


#: A route handler gets the request body (empty for GET) and returns a response.
Route = Callable[[bytes], Response]


class HttpServer:
    """Serves metrics, liveness and readiness, plus any extra routes given."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        healthy: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        post_routes: dict[str, Route] | None = None,
    ) -> None:
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._post = dict(post_routes or {})
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._respond(self, server._get(self.path.split("?", 1)[0]))

            def do_POST(self) -> None:
                route = server._post.get(self.path.split("?", 1)[0])
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    server._respond(self, Response(400, b"invalid Content-Length\n"))
                    return
                if length > MAX_BODY:
                    server._respond(self, Response(413, f"body over {MAX_BODY} bytes\n".encode()))
                    return
                body = self.rfile.read(length) if length > 0 else b""
                server._respond(self, route(body) if route else Response(404, b"not found\n"))

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        return int(self._httpd.server_address[1])

    def _get(self, path: str) -> Response:
        if path == "/metrics":
            return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        if path in {"/healthz", "/readyz"}:
            ok, why = (self._healthy if path == "/healthz" else self._ready)()
            return Response(200 if ok else 503, f"{'ok' if ok else 'not ok'}: {why}\n".encode())
        return Response(404, b"not found\n")

    @staticmethod
    def _respond(handler: BaseHTTPRequestHandler, response: Response) -> None:
        handler.send_response(response.status)
        handler.send_header("Content-Type", response.content_type)
        handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(response.body)

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
