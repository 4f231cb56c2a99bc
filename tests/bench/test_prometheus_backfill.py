"""What a Prometheus failover costs, against the real Prometheus (make bench).

A standby takes the Lease over and backfills the detectors' warm-up window before it polls:
failover time = the Lease's expiry + the backfill's range queries + the detectors learning what
they brought. A warm standby (polling too, without publishing) would save the last two at the
price of every round's queries twice. This bench measures both sides on one server: for 100,
1000 and 5000 series with an hour of history at 15 s, the backfill of that hour (range queries,
then the default detector learning it) and one round of instant queries (what a warm standby
would repeat every interval). Writes ``bench-results/prometheus_backfill.json``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.app import detector_bank
from agent.clock import ManualClock, WallClock
from agent.config import DetectorConfig, PrometheusQuery, PrometheusSourceConfig
from agent.metrics import AgentMetrics
from agent.sources.prometheus import PrometheusSource
from detectors import SampleBatch, SeriesKey, SeriesRegistry
from tests.servers.prometheus import PrometheusServer

pytestmark = [pytest.mark.bench, pytest.mark.integration, pytest.mark.timeout(900)]

OUT = Path("bench-results/prometheus_backfill.json")
SERIES = (100, 1000, 5000)
INTERVAL = 15.0
HOUR = 3600.0
ROUNDS = 5


def _history(series: int, end: float) -> str:
    stamps = [end - INTERVAL * k for k in range(int(HOUR / INTERVAL), -1, -1)]
    lines = ["# TYPE bench_load gauge"]
    for s in range(series):
        labels = f'deployment="d{s}",namespace="ns-{s % 20}"'
        lines += [
            f"bench_load{{{labels}}} {1.0 + (s % 7) / 7 + (k % 5) / 50} {t!r}" for k, t in enumerate(stamps)
        ]
    return "\n".join(lines) + "\n"


def _source(
    url: str, clock: ManualClock | WallClock, series: SeriesRegistry, backfill: float = HOUR
) -> PrometheusSource:
    config = PrometheusSourceConfig(
        url=url,
        queries=[PrometheusQuery(name="load", query="bench_load")],
        interval=INTERVAL,
        timeout=60.0,
        backfill=backfill,
    )
    return PrometheusSource(config, series, AgentMetrics(), clock, threading.Event(), environ={})


def test_backfill_and_round_cost(tmp_path: Path, prometheus_factory: Callable[..., PrometheusServer]) -> None:
    # the detectors' first use compiles them (numba): timed apart, as a standby pays it at takeover
    warm = SeriesRegistry(limit=10)
    warm_bank = detector_bank([DetectorConfig(type="ensemble", min_score=0.55, hold=True)], warm)
    sid = warm.id_for(SeriesKey.of("warm", {}), "bench")
    started = time.perf_counter()
    warm_bank.process(SampleBatch(np.full(3, sid, np.int64), np.arange(3.0), np.ones(3)))
    first_use = time.perf_counter() - started
    rows = []
    for n in SERIES:
        end = float(int(time.time()) // int(INTERVAL) * int(INTERVAL))
        prom = prometheus_factory(history=_history(n, end))
        series = SeriesRegistry(limit=2 * n)
        bank = detector_bank([DetectorConfig(type="ensemble", min_score=0.55, hold=True)], series)
        source = _source(prom.url, WallClock(), series)
        source.start()
        started = time.perf_counter()
        polled = source.poll(0.0)
        queried = time.perf_counter() - started
        assert polled is not None
        samples = len(polled.samples)
        started = time.perf_counter()
        bank.series.touch(polled.samples.series, end)
        bank.process(polled.samples)
        learned = time.perf_counter() - started
        source.close()
        # one round of instant queries, several times (the first one of a fresh source validates)
        rounds = []
        clock = ManualClock(end)
        again = _source(prom.url, clock, SeriesRegistry(limit=2 * n), backfill=0.0)
        again.start()
        for _ in range(ROUNDS):
            started = time.perf_counter()
            got = again.poll(0.0)
            rounds.append(time.perf_counter() - started)
            assert got is not None
            assert len(got.samples) == n
            clock.advance(INTERVAL)
        again.close()
        prom.stop()
        rows.append(
            {
                "series": n,
                "backfill_samples": samples,
                "backfill_query_seconds": round(queried, 3),
                "backfill_learn_seconds": round(learned, 3),
                "round_query_seconds": round(sorted(rounds)[len(rounds) // 2], 4),
            }
        )
        assert samples == n * (int(HOUR / INTERVAL) + 1)
    print(
        f"\nPrometheus backfill of {HOUR / 3600:.0f} h at {INTERVAL:.0f} s, "
        f"and one round (median of {ROUNDS}):"
    )
    print(f"{'series':>7} {'samples':>9} {'query s':>8} {'learn s':>8} {'round s':>8}")
    for r in rows:
        print(
            f"{r['series']:>7} {r['backfill_samples']:>9,} {r['backfill_query_seconds']:>8} "
            f"{r['backfill_learn_seconds']:>8} {r['round_query_seconds']:>8}"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    print(f"the detectors' first use in a process (compilation): {first_use:.2f} s")
    results = {
        "interval": INTERVAL,
        "backfill": HOUR,
        "detector": "ensemble",
        "detector_first_use_seconds": round(first_use, 2),
        "rows": rows,
    }
    OUT.write_text(json.dumps(results, indent=2))
