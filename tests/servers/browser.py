"""A headless Chromium driven over the DevTools protocol, for tests that must see a page rendered.

Debian's ``chromium`` (``make setup`` installs it as root) is started with a private profile and
``--remote-debugging-port=0``; the port it picked is read from ``DevToolsActivePort`` in the
profile. The protocol is spoken over a WebSocket with ``websocket-client`` (which the
``kubernetes`` client already depends on): navigate, wait for the load event, evaluate a script.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.common import unavailable

BINARIES = ("chromium", "chromium-browser", "google-chrome")


class Browser:
    """One page of a headless Chromium; :meth:`open` a URL, :meth:`evaluate` JavaScript in it."""

    def __init__(self, binary: str) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="aiops-chromium-"))
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--user-data-dir={self.profile}",
                "--window-size=1400,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._next = 0
        try:
            port = self._port(timeout=30.0)
            targets = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read()
            )
            page = next(t for t in targets if t.get("type") == "page")
            import websocket

            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        except BaseException:
            self.close()
            raise

    def _port(self, timeout: float) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode} before listening")
            if marker.exists():
                first = marker.read_text().splitlines()[:1]
                if first and first[0].isdigit():
                    return int(first[0])
            time.sleep(0.05)
        raise TimeoutError(f"chromium did not write {marker} within {timeout} s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command; return its result (events that arrive meanwhile are dropped)."""
        self._next += 1
        ident = self._next
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event (every image decoded or failed)."""
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Page.loadEventFired":
                return
        raise TimeoutError(f"{url} did not load within {timeout} s")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-like values)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium page; skipped (failed under AIOPS_REQUIRE_INTEGRATION=1) without one."""
    binary = next((found for name in BINARIES if (found := shutil.which(name))), None)
    if binary is None:
        unavailable("no chromium on PATH (make setup installs Debian's chromium as root)")
    assert binary is not None
    session = Browser(binary)
    try:
        yield session
    finally:
        session.close()
