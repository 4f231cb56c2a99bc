"""A webhook receiver standing in for the on-call pager and chat during a replay.

The playbooks' ``notify`` steps post to the URLs in ``AIOPS_OPS_WEBHOOK`` and
``AIOPS_ML_WEBHOOK``; in a replay those point here (loopback, an ephemeral port), so notifications
are real HTTP posts and show up in the timeline instead of failing for want of a URL.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from remediations.jsontext import loads as loads_json

MAX_BODY = 1 << 20
WEBHOOK_VARIABLES = ("AIOPS_OPS_WEBHOOK", "AIOPS_ML_WEBHOOK")


class Pager:
    """Collects the JSON bodies posted to it, in order."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        pager = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
                raw = self.rfile.read(length)
                try:
                    body = loads_json(raw or b"{}")
                except ValueError:
                    body = {"text": raw.decode("utf-8", "replace")}
                with pager._lock:
                    pager.received.append(body if isinstance(body, dict) else {"body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="replay-pager", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where to post."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/notify"

    def environ(self) -> dict[str, str]:
        """The webhook variables of the shipped playbooks, all pointing here."""
        return dict.fromkeys(WEBHOOK_VARIABLES, self.url)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
