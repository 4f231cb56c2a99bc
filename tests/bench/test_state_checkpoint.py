"""Partition checkpoints (make bench): bytes per series, and the time to take, encode, decode and
restore the state of 100k series; writes bench-results/state.json."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors import DetectorBank, DetectorSpec, SampleBatch, SeriesKey, SeriesRegistry, build_detector
from detectors.checkpoint import decode, encode, put_series, state_arrays, take_series
from detectors.hold import AlarmHold

pytestmark = pytest.mark.bench

OUT = Path("bench-results/state.json")
SERIES = 100_000
WARM = 400  # samples per series before the checkpoint (past novelty's range learning, as detectors.json)


def _bank(limit: int) -> DetectorBank:
    """The default detector (the calibrated ensemble with its alarm hold), as k8s/ runs it on latency."""
    registry = SeriesRegistry(limit=limit)
    spec = DetectorSpec(build_detector("ensemble", {}, registry), 0.55, hold=AlarmHold())
    return DetectorBank(registry, [spec])


def _warm(bank: DetectorBank, n: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    ids = np.array([bank.series.id_for(SeriesKey.of("latency", {"pod": f"p{i}"})) for i in range(n)])
    rng = np.random.default_rng(0)
    for step in range(WARM):
        t = np.full(n, 1.7e9 + 60.0 * step)
        bank.process(SampleBatch(ids.astype(np.int64), t, 1.0 + 0.1 * rng.standard_normal(n)))
    return ids.astype(np.int64)


def test_checkpoint_bytes_and_restore_time_of_100k_series() -> None:
    bank = _bank(SERIES)
    ids = _warm(bank, SERIES)
    t0 = time.perf_counter()
    state = take_series(bank, ids, {"partition": 0, "offset": 1})
    t1 = time.perf_counter()
    blob = encode(state)
    t2 = time.perf_counter()
    decoded = decode(blob, max_bytes=1 << 31)
    t3 = time.perf_counter()
    fresh = _bank(SERIES)
    restored = put_series(fresh, decoded)
    t4 = time.perf_counter()
    assert restored.dropped == {}
    assert int(np.count_nonzero(restored.ids >= 0)) == SERIES
    raw = sum(a.nbytes for part in state.parts.values() for a in _arrays(part))
    results: dict[str, Any] = {
        "series": SERIES,
        "detector": "ensemble + hold",
        "state_bytes_per_series": round(raw / SERIES, 1),
        "checkpoint_bytes_per_series": round(len(blob) / SERIES, 1),
        "take_seconds": round(t1 - t0, 3),
        "encode_seconds": round(t2 - t1, 3),
        "decode_seconds": round(t3 - t2, 3),
        "restore_seconds": round(t4 - t3, 3),
        "series_per_900kB_message": int(900_000 // (len(blob) / SERIES)),
    }
    print(json.dumps(results, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True))


def _arrays(part: dict[str, Any]) -> list[np.ndarray[Any, Any]]:
    return [a for _, a in state_arrays(part)]
