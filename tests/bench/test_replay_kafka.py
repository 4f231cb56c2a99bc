"""Replay through the broker: the lock-step round trip of one step's samples via the agent's Kafka source.

``aiops replay --kafka`` publishes each step's samples and waits until its KafkaSource has read
them back before the next step. 200 steps of 20 samples (a scenario's few services) go through a
:class:`~simulations.bus.KafkaBus` on the test broker, each committed as the replay commits it.

Target: a median round trip under 50 ms (a broker that holds a waiting fetch for kafka-python's
default 500 ms made it ~250 ms). Writes ``bench-results/replay_kafka.json``. Run with ``make bench``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from detectors import SampleBatch, SeriesKey, SeriesRegistry
from simulations.bus import KafkaBus

pytestmark = [pytest.mark.bench, pytest.mark.integration, pytest.mark.timeout(300)]

RESULTS = Path("bench-results") / "replay_kafka.json"
STEPS = 200
SERIES = 20
TARGET_MEDIAN_SECONDS = 0.05


def test_replay_round_trip_per_step(kafka_bootstrap: str) -> None:
    series = SeriesRegistry()
    ids = [series.id_for(SeriesKey.of("requests", {"service": f"svc-{i}"})) for i in range(SERIES)]
    bus = KafkaBus(kafka_bootstrap, series)
    took: list[float] = []
    try:
        for step in range(STEPS):
            t = 1_700_000_000.0 + 15.0 * step
            batch = SampleBatch.from_arrays(ids, [t] * SERIES, np.arange(SERIES, dtype=np.float64) + step)
            started = time.perf_counter()
            got = bus.roundtrip(batch)
            for _, polled in got:
                bus.commit(polled)
            took.append(time.perf_counter() - started)
            assert sum(len(samples) for samples, _ in got) == SERIES
    finally:
        bus.close()
    steady = took[5:]  # the first ones include the consumer joining its group
    median = statistics.median(steady)
    figures = {
        "steps": STEPS,
        "samples_per_step": SERIES,
        "first_step_seconds": round(took[0], 3),
        "median_seconds": round(median, 4),
        "p90_seconds": round(float(np.quantile(steady, 0.9)), 4),
        "target_median_seconds": TARGET_MEDIAN_SECONDS,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nreplay --kafka: a step's round trip {median * 1000:.1f} ms median (target < 50 ms)")
    assert bus.received == bus.sent == STEPS * SERIES
    assert median < TARGET_MEDIAN_SECONDS
