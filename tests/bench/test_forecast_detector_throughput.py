"""Throughput of the forecast detector and the cost of what it keeps per series (make bench).

The detector as ``k8s/agent-config.yaml`` runs it on demand (a minute step, aggregated from
15 s scrapes, a ten-minute horizon), with ``holt_winters`` so that the figure is the detector's
own bookkeeping (step buckets, the observed-peak ring, signals) beside a cheap forecaster, not
the forecaster's. Writes JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from detectors import SampleBatch
from detectors.forecast_detector import ForecastDetector

pytestmark = pytest.mark.bench

OUT = Path("bench-results/forecast_detector.json")
PARAMS = {"step": 60, "horizon": 600, "aggregate": True, "every": 60, "forecaster": "holt_winters"}


def test_forecast_detector_throughput_and_state_per_series() -> None:
    """5,000 series scraped every 15 s for 2.5 hours, one batch per scrape."""
    n, scrapes = 5_000, 600
    rng = np.random.default_rng(0)
    ids = np.arange(n, dtype=np.int64)
    batches = [SampleBatch(ids, np.full(n, 15.0 * k), rng.gamma(2.0, 50.0, n)) for k in range(scrapes)]
    det = ForecastDetector.from_params(PARAMS)
    t0 = time.perf_counter()
    signals = 0
    for batch in batches:
        signals += int(np.count_nonzero(det.update(batch)))
    rate = n * scrapes / (time.perf_counter() - t0)
    state = det.state_dict()
    own = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rows = state["last_ts"].shape[0]
    per_series = sum(a.nbytes for a in own.values()) / rows
    ring = (state["seen_step"].nbytes + state["seen_max"].nbytes) / rows
    print(
        f"\nforecast detector: {rate:,.0f} samples/s over {n} series, {per_series:.0f} bytes of its own "
        f"state per series ({ring:.0f} of them the observed-peak ring), {signals} signals"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "samples_per_s_5000_series": round(rate),
                "detector_state_bytes_per_series": round(per_series),
                "observed_peak_ring_bytes_per_series": round(ring),
                "signals": signals,
            }
        )
    )
    peak = det.observed_peak(0)
    assert peak is not None
    assert peak > 0
    assert signals > 0
    assert rate >= 300_000
    assert ring <= 16 * det.horizon_steps
