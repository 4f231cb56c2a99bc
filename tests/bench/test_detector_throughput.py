"""Throughput and memory of the learned detectors (make bench); prints figures, writes JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors import SampleBatch
from detectors.registry import DEFAULT, build_learned

pytestmark = pytest.mark.bench

BATCH = 10_000
RESULTS: dict[str, Any] = {}
OUT = Path("bench-results/detectors.json")


def _batches(n_series: int, count: int, start: int) -> list[SampleBatch]:
    rng = np.random.default_rng(start)
    out = []
    for k in range(start, start + count):
        pos = np.arange(BATCH) + k * BATCH
        ids = pos % n_series
        ts = 1.7e9 + 60.0 * (pos // n_series)
        out.append(SampleBatch.from_arrays(ids, ts, 100 + 10 * rng.standard_normal(BATCH)))
    return out


#: Samples per series before timing the default detector: past novelty's range learning (150
#: samples and 6 h; 400 one-minute samples), so its lattices are what is measured.
STEADY = 400


def _rate(name: str, params: dict[str, Any], n_series: int, samples: int, warm_per_series: int = 2) -> float:
    det = build_learned(name, params)
    warm = max(warm_per_series * n_series // BATCH, 2)
    for b in _batches(n_series, warm, 0):  # every series seen, state arrays grown
        det.update(b)
    batches = _batches(n_series, samples // BATCH, warm)
    t0 = time.perf_counter()
    for b in batches:
        det.update(b)
    return samples / (time.perf_counter() - t0)


def _save(key: str, value: Any) -> None:
    RESULTS[key] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    OUT.write_text(json.dumps({**previous, **RESULTS}, indent=2, sort_keys=True))


@pytest.mark.parametrize("n_series", [10_000, 100_000])
def test_default_detector_throughput(n_series: int) -> None:
    rate = _rate(DEFAULT, {}, n_series, 300_000, warm_per_series=STEADY)
    print(f"\n{DEFAULT}: {n_series} series, batches of {BATCH}: {rate:,.0f} samples/s")
    _save(f"{DEFAULT}_samples_per_s_{n_series}_series", round(rate))
    assert rate >= 1_000_000


def test_default_detector_memory_per_series() -> None:
    det = build_learned(DEFAULT, {})
    n = 100_000
    for b in _batches(n, n // BATCH, 0):
        det.update(b)
    per_series = det.state.nbytes / det.state.size  # allocated arrays, capacity included
    print(f"\n{DEFAULT}: {per_series:.0f} bytes of state per series at {n} series")
    _save(f"{DEFAULT}_state_bytes_per_series", round(per_series))
    assert det.state_bytes_per_series() <= 2048
    assert per_series <= 2048


@pytest.mark.parametrize("model", ["IForest", "ECOD", "COPOD", "HBOS", "LODA"])
def test_pyod_detector_throughput(model: str) -> None:
    build_learned("pyod", {"model": model}).update(_batches(1000, 1, 0)[0])  # compile numba kernels
    rate = _rate("pyod", {"model": model}, 10_000, 100_000)
    print(f"\npyod {model}: 10000 series, batches of {BATCH}, refits included: {rate:,.0f} samples/s")
    _save(f"pyod_{model.lower()}_samples_per_s_10000_series", round(rate))
    assert rate >= 50_000


#: One long history: the samples of one series, fed as ``aiops detect`` feeds a file.
LONG = 100_000
LONG_BATCH = 1024


def test_default_detector_on_one_long_series() -> None:
    """One series of 100k one-minute samples in batches of 1024 rows, after one warm-up call
    (loading the compiled loop)."""
    rng = np.random.default_rng(0)
    ts = 1.7e9 + 60.0 * np.arange(LONG)
    values = 100 + 10 * rng.standard_normal(LONG)
    det = build_learned(DEFAULT, {})
    det.update(SampleBatch.from_arrays([0], [ts[0] - 60.0], [values[0]]))
    batches = [
        SampleBatch.from_arrays(
            np.zeros(min(LONG_BATCH, LONG - k), dtype=np.int64),
            ts[k : k + LONG_BATCH],
            values[k : k + LONG_BATCH],
        )
        for k in range(0, LONG, LONG_BATCH)
    ]
    t0 = time.perf_counter()
    for b in batches:
        det.update(b)
    rate = LONG / (time.perf_counter() - t0)
    print(f"\n{DEFAULT}: one series of {LONG} samples, batches of {LONG_BATCH}: {rate:,.0f} samples/s")
    _save(f"{DEFAULT}_samples_per_s_one_series_{LONG}", round(rate))
    assert rate >= 100_000
