"""Alertmanager webhook throughput over loopback: requests/s and latency at 1, 10 and 100 clients.

The agent's HTTP server runs in a child process (its own GIL) with the shipped defaults (8
workers, a queue of 64, 2 webhooks at a time, 4 MiB bodies), the real route (bearer token,
JSON check, payload parsing into signals, delivered to a list). Each client thread posts a
10-alert notification over a new connection (the server speaks HTTP/1.0), one after the other,
for ``SECONDS``. Every answer counts: 200s (accepted) and 429s (refused as too busy); status 0 is a
connection reset by a refusal sent before the client finished sending (a refused body is not
read); latency percentiles are of the 200s. Then the memory at the limit: 20 clients posting bodies of just
under ``max_body``, the child's peak RSS (VmHWM) before and after. Results:
``bench-results/webhook.json``.
"""

from __future__ import annotations

import http.client
import json
import platform
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

RESULTS = Path("bench-results") / "webhook.json"
CLIENTS = (1, 10, 100)
SECONDS = 5.0
TOKEN = "bench-token"
REPO = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from agent.clock import WallClock
    from agent.config import AlertmanagerSourceConfig
    from agent.http import HttpServer
    from agent.metrics import AgentMetrics
    from agent.sources.alertmanager import alertmanager_post_route, alertmanager_route
    metrics = AgentMetrics()
    route = alertmanager_route(lambda signals: None, WallClock().now, metrics)  # delivered, then dropped
    config = AlertmanagerSourceConfig(bearer_token_file=Path({token_file!r}))
    server = HttpServer("127.0.0.1", 0, metrics.registry, lambda: (True, ""), lambda: (True, ""),
                        {{"/alertmanager": alertmanager_post_route(route, config, metrics)}})
    server.start()
    print(server.port, flush=True)
    sys.stdin.read()  # until the bench closes it
    server.close()
    """
)


def notification(alerts: int, pad: int = 0) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "aiops",
            "groupKey": "{}:{}",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": f"d{i}"},
                    "annotations": {"summary": "x" * pad},
                    "startsAt": "2026-01-01T00:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                }
                for i in range(alerts)
            ],
        }
    ).encode()


def post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/alertmanager",
            body=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def load(port: int, clients: int, body: bytes, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client() -> None:
        mine: list[float] = []
        counts: dict[int, int] = {}
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                status = post(port, body)
            except OSError:
                status = 0
            if status == 200:
                mine.append(time.perf_counter() - started)
            counts[status] = counts.get(status, 0) + 1
        with lock:
            latencies.extend(mine)
            for k, v in counts.items():
                statuses[k] = statuses.get(k, 0) + v

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    lat = np.array(latencies) * 1000
    answered = sum(v for k, v in statuses.items() if k)
    return {
        "clients": clients,
        "requests_per_s": round(answered / elapsed, 1),
        "accepted_per_s": round(statuses.get(200, 0) / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
    }


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_webhook_throughput(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(repo=str(REPO), token_file=str(token_file))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        body = notification(10)
        assert post(port, body) == 200
        rows = [load(port, clients, body, SECONDS) for clients in CLIENTS]
        for r in rows:
            print(
                f"{r['clients']:>4} clients: {r['requests_per_s']:>8.1f} answers/s, "
                f"{r['accepted_per_s']:>8.1f} accepted/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                f"{r['statuses']}"
            )
        before = peak_rss_kib(child.pid)
        big = notification(1, pad=(4 << 20) - 1000)
        assert len(big) < 4 << 20
        at_limit = load(port, 20, big, SECONDS)
        after = peak_rss_kib(child.pid)
        print(f"max-size bodies, 20 clients: {at_limit}; peak RSS {before} KiB -> {after} KiB")
        responsive = post(port, body)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bench": "webhook",
                "python": platform.python_version(),
                "seconds_per_case": SECONDS,
                "alerts_per_request": 10,
                "results": rows,
                "at_limit": {
                    **at_limit,
                    "body_bytes": len(big),
                    "peak_rss_kib_before": before,
                    "peak_rss_kib_after": after,
                },
            },
            indent=2,
        )
        + "\n"
    )
    assert responsive == 200
    assert all(r["accepted_per_s"] > 0 for r in rows)
    assert after - before < 256 * 1024, "bodies at the limit cost bounded memory"
