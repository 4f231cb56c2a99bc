"""Samples/s through 1, 2 and 3 ``aiops run`` replicas on one topic of 6 partitions (make bench).

The same load every time: 6 partitions x 2000 series x 200 points of 15 s (2.4 M samples), in
columnar messages of 50 series x 10 points, keyed so each series stays on its partition, through
the default detector (``ensemble``), detector-state checkpoints off. For each replica count a
fresh topic and consumer group: the replicas start, join and split the 6 partitions, and only
then is the load produced (pre-encoded, so producing is quick). The clock runs from the first
sample any replica processed to the last; each replica's own rate is its samples over its own
first-to-last span. Rates come from the replicas' ``aiops_samples_in_total``, read every 0.2 s.

The ratio to one replica is the figure: on a machine with fewer cores than replicas (each
replica also runs a decode worker process) it cannot be linear, and the printout says how many
cores there were. Writes ``bench-results/replica_scaling.json``.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from tests.e2e.daemon import Daemon
from tests.servers.common import eventually

pytestmark = [pytest.mark.bench, pytest.mark.integration, pytest.mark.timeout(1200)]

OUT = Path("bench-results/replica_scaling.json")
PARTITIONS = 6
SERIES_PER_PARTITION = 2000
POINTS = 200
SERIES_PER_MESSAGE = 50
POINTS_PER_MESSAGE = 10
TOTAL = PARTITIONS * SERIES_PER_PARTITION * POINTS
REPLICAS = (1, 2, 3)
POLL = 0.2


def _messages(start: float) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of the whole load: every series on one partition, its points in order."""
    rng = random.Random(7)
    out = []
    for block in range(POINTS // POINTS_PER_MESSAGE):
        stamps = [start + 15 * (block * POINTS_PER_MESSAGE + k) for k in range(POINTS_PER_MESSAGE)]
        for p in range(PARTITIONS):
            for first in range(0, SERIES_PER_PARTITION, SERIES_PER_MESSAGE):
                rows = [
                    {
                        "name": "latency",
                        "labels": {"p": str(p), "s": str(s), "namespace": f"ns-{s % 20}"},
                        "timestamps": stamps,
                        "values": [round(1.0 + rng.random() / 5, 6) for _ in stamps],
                    }
                    for s in range(first, first + SERIES_PER_MESSAGE)
                ]
                out.append((p, f"{p}/{first}".encode(), orjson.dumps(rows)))
    return out


def _samples(d: Daemon) -> float:
    text = d.wait_http("/metrics", 200)
    found = re.search(r'^aiops_samples_in_total\{source="kafka"\} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


def _rebalances(d: Daemon) -> float:
    text = d.wait_http("/metrics", 200)
    found = re.search(r"^aiops_kafka_rebalances_total (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def _owned(d: Daemon) -> float:
    text = d.wait_http("/metrics", 200)
    return sum(float(m[1]) for m in re.finditer(r"^aiops_kafka_partitions_owned\{[^}]*\} (\S+)$", text, re.M))


def _run(
    tmp: Path,
    bootstrap: str,
    kafka_topic: Callable[..., str],
    replicas: int,
    load: list[tuple[int, bytes, bytes]],
) -> dict[str, Any]:
    topic = kafka_topic(PARTITIONS)
    cfg = {
        "kafka": {"bootstrap_servers": [bootstrap]},
        "sources": {
            "kafka": {
                "topics": [topic],
                "group_id": f"bench-{uuid.uuid4().hex[:8]}",
                "dead_letter_topic": kafka_topic(prefix="dlq"),
                # the defaults: a shorter session drops replicas starved of CPU from the group
                "session_timeout": "10s",
                "heartbeat_interval": "3s",
                "state": {"enabled": False},
            }
        },
        "detectors": [{"type": "ensemble", "min_score": 0.55, "hold": True}],
        "engine": {"series_limit": 2 * PARTITIONS * SERIES_PER_PARTITION},
        "signals": {"kafka": False, "log": False},
        "log": {"format": "json", "level": "WARNING"},
    }
    daemons = []
    for i in range(replicas):
        home = tmp / f"r{replicas}-{i}"
        home.mkdir()
        daemons.append(Daemon(home, cfg))
    try:
        share = PARTITIONS // replicas
        for d in daemons:
            d.wait_http("/readyz", 200, timeout=120)
        eventually(
            lambda: [_owned(d) for d in daemons] == [share] * replicas,
            timeout=120,
            what=f"{share} partitions each",
        )
        rebalances = sum(_rebalances(d) for d in daemons)
        producer = KafkaProducer(
            bootstrap_servers=[bootstrap], linger_ms=20, batch_size=1 << 20, max_request_size=8 << 20
        )
        for p, key, value in load:
            producer.send(topic, value, key=key, partition=p)
        producer.flush(300)
        producer.close(10)
        trace: list[tuple[float, list[float]]] = []
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            counts = [_samples(d) for d in daemons]
            trace.append((time.monotonic(), counts))
            if sum(counts) >= TOTAL:
                break
            time.sleep(POLL)
        assert sum(trace[-1][1]) == TOTAL, f"{sum(trace[-1][1])} of {TOTAL} samples processed"
        assert [_owned(d) for d in daemons] == [share] * replicas
        rebalanced = sum(_rebalances(d) for d in daemons) - rebalances
    finally:
        for d in daemons:
            d.__exit__(None, None, None)
    first = next(t for t, c in trace if sum(c) > 0)
    seconds = trace[-1][0] - first
    per_replica = []
    for i in range(replicas):
        mine = [(t, c[i]) for t, c in trace]
        started = next((t for t, n in mine if n > 0), first)
        finished = next(t for t, n in mine if n == mine[-1][1])
        span = max(POLL, finished - started)
        per_replica.append(
            {"samples": int(mine[-1][1]), "seconds": round(span, 2), "rate": round(mine[-1][1] / span)}
        )
    return {
        "rebalances_during_run": int(rebalanced),
        "replicas": replicas,
        "seconds": round(seconds, 2),
        "rate": round(TOTAL / seconds),
        "per_replica": per_replica,
    }


def test_samples_per_second_through_1_2_and_3_replicas(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    load = _messages(time.time() - 3 * 3600)
    runs = [_run(tmp_path, kafka_bootstrap, kafka_topic, n, load) for n in REPLICAS]
    base = runs[0]["rate"]
    for run in runs:
        run["ratio_to_one"] = round(run["rate"] / base, 2)
    cores = os.cpu_count() or 1
    results = {
        "samples": TOTAL,
        "partitions": PARTITIONS,
        "series": PARTITIONS * SERIES_PER_PARTITION,
        "detector": "ensemble",
        "cores": cores,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "runs": runs,
    }
    print(f"\n{TOTAL:,} samples through 1-3 replicas on {PARTITIONS} partitions, {cores} cores:")
    print(f"{'replicas':>8} {'samples/s':>11} {'ratio':>6}  per replica (samples/s)")
    for run in runs:
        each = ", ".join(f"{r['rate']:,}" for r in run["per_replica"])
        again = (
            f" ({run['rebalances_during_run']} rebalances during the run)"
            if run["rebalances_during_run"]
            else ""
        )
        print(f"{run['replicas']:>8} {run['rate']:>11,} {run['ratio_to_one']:>6}  {each}{again}")
    if cores < max(REPLICAS) * 2:
        print(
            f"Each replica runs its engine and a decode worker process: {max(REPLICAS)} replicas want "
            f"{2 * max(REPLICAS)} cores and this machine has {cores}, shared: the ratios show that "
            "contention, not how replicas scale on separate nodes."
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True))
    assert all(sum(r["samples"] for r in run["per_replica"]) == TOTAL for run in runs)
    assert all(len(run["per_replica"]) == run["replicas"] for run in runs)
