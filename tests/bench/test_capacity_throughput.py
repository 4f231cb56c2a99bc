"""Throughput and memory of the capacity-per-pod measurement (make bench); writes JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from detectors import SampleBatch, SeriesKey, SeriesRegistry
from detectors.capacity import CapacityEstimator

pytestmark = pytest.mark.bench

OUT = Path("bench-results/capacity.json")
METRICS = ("http_requests_per_second", "container_cpu_usage_ratio", "kube_deployment_status_replicas_ready")


def test_capacity_throughput_and_memory_per_series() -> None:
    """10,000 workloads (30,000 series) scraped every 15 s for two hours, one batch per scrape."""
    workloads, scrapes = 10_000, 480
    registry = SeriesRegistry(limit=100_000)
    ids = np.array(
        [
            [registry.id_for(SeriesKey.of(m, {"deployment": f"d{i}"})) for m in METRICS]
            for i in range(workloads)
        ]
    ).T.ravel()
    estimator = CapacityEstimator(registry, METRICS[1], METRICS[2])
    rng = np.random.default_rng(0)
    ready = np.full(workloads, 8.0)
    batches = []
    for k in range(scrapes):
        demand = 300.0 + 30.0 * rng.standard_normal(workloads)
        values = np.concatenate([demand, demand / (ready * 60.0), ready])
        batches.append(SampleBatch.from_arrays(ids, np.full(ids.size, 15.0 * k), values))
    t0 = time.perf_counter()
    for batch in batches:
        estimator.update(batch)
    rate = ids.size * scrapes / (time.perf_counter() - t0)
    state = estimator.state_dict()
    rows = state["last"].shape[0]
    per_series = sum(a.nbytes for a in state.values() if isinstance(a, np.ndarray)) / rows
    print(f"\ncapacity: {rate:,.0f} samples/s, {per_series:.0f} bytes of state per series")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"samples_per_s_30000_series": round(rate), "state_bytes_per_series": round(per_series)})
    )
    assert estimator.value(int(ids[0])) == pytest.approx(60.0, rel=0.01)
    assert rate >= 1_000_000
    assert per_series <= 512
