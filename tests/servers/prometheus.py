"""Prometheus fixtures: the real ``prometheus`` server, an exporter the test controls, an HTTP stub.

- ``prometheus_factory``: ``factory(targets=(), history=None, port=None)`` starts Debian's
  ``prometheus`` binary on loopback with a temporary config (scrape_interval 1 s, one job
  ``exporter`` scraping ``targets``) and data dir, optionally pre-loaded with ``history``
  (OpenMetrics text, see :func:`openmetrics`) through ``promtool tsdb create-blocks-from
  openmetrics``. It waits for ``/-/ready``; every server is stopped at teardown. A scraped sample
  is queryable only about 5.5 s after the server starts (target sync); history at once.
  With ``AIOPS_TEST_PROMETHEUS_URL`` set, the factory hands out that server instead, and a test
  that needs its own targets, history or port there is reported unavailable.
- ``exporter``: a tiny ``/metrics`` endpoint (prometheus_client on its own registry) whose gauges
  the test sets.
- ``http_stub``: a local HTTP server whose answers (status, body, delay) the test chooses, for
  failure modes a real Prometheus does not produce on demand (503, a stall past the timeout).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.servers.common import free_port, unavailable

PROMETHEUS_ENV = "AIOPS_TEST_PROMETHEUS_URL"


def openmetrics(
    name: str, labels: Mapping[str, str], points: Iterable[tuple[float, float]], kind: str = "gauge"
) -> str:
    """OpenMetrics text for one series: a ``# TYPE`` line, then ``name{labels} value timestamp`` per point.

    Concatenate several (one ``# TYPE`` per metric name) and pass the result as ``history``;
    the factory adds the closing ``# EOF``.
    """
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    lines = [f"# TYPE {name} {kind}"]
    # promtool silently drops a series' samples that go back in time: write them oldest first
    lines += [f"{name}{{{inner}}} {_om_value(v)} {t!r}" for t, v in sorted(points, key=lambda p: p[0])]
    return "\n".join(lines) + "\n"


def _om_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class PrometheusServer:
    """One Prometheus process on loopback with its own config and data dir; can stop and start again."""

    def __init__(self, workdir: Path, targets: Sequence[str] = (), port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.targets = list(targets)
        self.config_path = workdir / "prometheus.yml"
        self.data_dir = workdir / "data"
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.external = False
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.config_path.write_text(self._config())

    @property
    def url(self) -> str:
        """The base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def _config(self) -> str:
        # JSON is YAML: no YAML writer needed.
        scrape = [
            {
                "job_name": "exporter",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": self.targets}],
            }
        ]
        cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape if self.targets else [],
        }
        return json.dumps(cfg, indent=2) + "\n"

    def load_history(self, text: str) -> None:
        """Write ``text`` (OpenMetrics) into the data dir as TSDB blocks; the server must be stopped."""
        if self.running:
            raise RuntimeError("load history before starting the server")
        promtool = shutil.which("promtool")
        if promtool is None:
            unavailable("promtool (Debian package prometheus) is not installed")
            raise AssertionError("unreachable")
        if not text.rstrip().endswith("# EOF"):
            text = text.rstrip("\n") + "\n# EOF\n"
        source = self.workdir / "history.om"
        source.write_text(text)
        done = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"promtool could not create blocks:\n{done.stdout}\n{done.stderr}")

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Start the process and wait until ``/-/ready`` answers 200."""
        if self.running:
            return self
        binary = shutil.which("prometheus")
        if binary is None:
            unavailable("the prometheus binary (Debian package prometheus) is not installed")
            raise AssertionError("unreachable")
        with self.log_path.open("ab") as log:
            proc = self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while not _ready(self.url):
            if proc.poll() is not None:
                self.stop()
                pytest.fail(f"prometheus exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"prometheus not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); the data dir stays."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class ExternalPrometheus(PrometheusServer):
    """A server the tests do not manage (``AIOPS_TEST_PROMETHEUS_URL``)."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")
        parsed = urllib.parse.urlsplit(self._url)
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.targets = []
        self.process = None
        self.external = True

    @property
    def url(self) -> str:
        """The URL from the environment."""
        return self._url

    @property
    def running(self) -> bool:
        """Assumed up."""
        return True

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Nothing to start."""
        return self

    def stop(self) -> None:
        """Not ours to stop."""


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """``factory(targets=(), history=None, port=None, start=True)``: a Prometheus server, stopped at teardown.

    ``targets`` are ``host:port`` addresses scraped every second by job ``exporter``;
    ``history`` is OpenMetrics text loaded with promtool before the server starts; ``port``
    fixes the listening port (e.g. one a source was already pointed at).
    """
    external = os.environ.get(PROMETHEUS_ENV, "").strip()
    servers: list[PrometheusServer] = []

    def make(
        targets: Sequence[str] = (), history: str | None = None, port: int | None = None, start: bool = True
    ) -> PrometheusServer:
        if external:
            if targets or history is not None or port is not None:
                unavailable(
                    f"{PROMETHEUS_ENV} is set, and its server cannot scrape this test's exporter, "
                    "load its history or listen on its port"
                )
            if not _ready(external.rstrip("/")):
                unavailable(f"{PROMETHEUS_ENV}={external} is not ready")
            return ExternalPrometheus(external)
        server = PrometheusServer(tmp_path / f"prometheus-{len(servers)}", targets, port)
        servers.append(server)
        if history is not None:
            server.load_history(history)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


@dataclass
class Exporter:
    """A ``/metrics`` endpoint on loopback serving the gauges the test creates and sets."""

    registry: CollectorRegistry
    port: int
    _stop: Callable[[], None]
    gauges: dict[str, Gauge] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """``host:port`` for a scrape config (and the ``instance`` label Prometheus adds)."""
        return f"127.0.0.1:{self.port}"

    def gauge(self, name: str, documentation: str = "test gauge", labels: Sequence[str] = ()) -> Gauge:
        """A gauge on this exporter (created once per name)."""
        if name not in self.gauges:
            self.gauges[name] = Gauge(name, documentation, list(labels), registry=self.registry)
        return self.gauges[name]

    def close(self) -> None:
        """Stop serving."""
        self._stop()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    """An exporter run by the test, on a free loopback port, with a registry of its own."""
    registry = CollectorRegistry(auto_describe=True)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    exp = Exporter(registry, int(server.server_port), stop)
    try:
        yield exp
    finally:
        exp.close()


@dataclass(frozen=True)
class StubRequest:
    """What the stub received."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class StubResponse:
    """What the stub answers: after ``delay`` seconds, ``status`` with a JSON or text ``body``,
    written ``trickle`` seconds a byte (0: at once), with its length or (``length=False``) until
    the connection closes."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    trickle: float = 0.0
    length: bool = True


def vector(*series: tuple[Mapping[str, str], float, str]) -> StubResponse:
    """A successful instant-query answer: ``(labels, timestamp, "value")`` per series."""
    result = [{"metric": dict(m), "value": [t, v]} for m, t, v in series]
    return StubResponse(200, {"status": "success", "data": {"resultType": "vector", "result": result}})


class HttpStub:
    """A local HTTP server answering every request with ``handler(request)``; records requests."""

    def __init__(self) -> None:
        self.handler: Callable[[StubRequest], StubResponse] = lambda _req: StubResponse(
            200, {"status": "success", "data": {"resultType": "vector", "result": []}}
        )
        self.requests: list[StubRequest] = []
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(parsed.query))
                if self.command == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    params.update(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                request = StubRequest(self.command, parsed.path, params, dict(self.headers.items()))
                stub.requests.append(request)
                response = stub.handler(request)
                if response.delay and stub.release.wait(response.delay):
                    return
                body = response.body
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                ctype = "text/plain" if isinstance(body, str) else "application/json"
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", ctype)
                    if response.length:
                        self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    if not response.trickle:
                        self.wfile.write(raw)
                    for i in range(len(raw) if response.trickle else 0):
                        self.wfile.write(raw[i : i + 1])
                        self.wfile.flush()
                        if stub.release.wait(response.trickle):
                            return
                except OSError:
                    pass  # the client gave up (timeout) and closed the connection

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="http-stub", daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        """The stub's base URL."""
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        """Stop serving and release any delayed answer."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def http_stub() -> Iterator[HttpStub]:
    """A local HTTP server whose answers the test sets through ``stub.handler``."""
    stub = HttpStub()
    try:
        yield stub
    finally:
        stub.close()
