"""Counters as rates: resets, gaps, missing values, batches; a counter reset is not an anomaly."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import DetectorBank, DetectorSpec, SampleBatch, SeriesKey, SeriesRegistry, build_detector
from detectors.counters import CounterRates


def rated(ids: list[int], ts: list[float], values: list[float]) -> list[tuple[int, float, float]]:
    out = CounterRates().rates(SampleBatch.from_arrays(ids, ts, values))
    return list(zip(out.series.tolist(), out.timestamps.tolist(), out.values.tolist(), strict=True))


def test_rates_per_second_and_a_reset_gives_none() -> None:
    # 60 per minute; the process restarts between 120 and 180 and has counted 10 since
    got = rated([0] * 5, [0, 60, 120, 180, 240], [100, 160, 220, 10, 70])
    assert got == [(0, 60, 1.0), (0, 120, 1.0), (0, 240, 1.0)]


def test_a_gap_or_a_missing_value_gives_the_average_rate_over_it() -> None:
    assert rated([0] * 3, [0, 60, 420], [0, 60, 420]) == [(0, 60, 1.0), (0, 420, 1.0)]
    assert rated([0] * 3, [0, 60, 120], [0, math.nan, 120]) == [(0, 120, 1.0)]


def test_stale_samples_are_left_out_and_keep_the_reference() -> None:
    rates = CounterRates()
    rates.rates(SampleBatch.from_arrays([0, 0], [0, 60], [0, 60]))
    # a repeat of 60 s, then one older than it: no rate; 120 s is judged against 60 s
    later = rates.rates(SampleBatch.from_arrays([0, 0, 0], [60, 30, 120], [999, 5, 120]))
    assert (later.timestamps.tolist(), later.values.tolist()) == ([120.0], [1.0])
    # within one batch samples are taken in time order, as the detectors take them
    assert rated([0, 0, 0], [0, 60, 30], [0, 60, 15]) == [(0, 60, 1.5), (0, 30, 0.5)]


def test_series_are_separate_and_batch_order_is_kept() -> None:
    got = rated([1, 0, 1, 0, 1], [0, 0, 60, 60, 120], [0, 500, 120, 530, 240])
    assert got == [(1, 60, 2.0), (0, 60, 0.5), (1, 120, 2.0)]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=25), min_size=1, max_size=10),
    st.integers(min_value=0, max_value=2**16),
)
def test_any_batching_gives_the_same_rates(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 120
    ids = rng.integers(0, 3, n)
    ts = np.arange(n, dtype=np.float64) * 10.0
    values = np.cumsum(rng.integers(0, 50, n)).astype(np.float64)
    values[rng.random(n) < 0.05] = 0.0  # resets
    values[rng.random(n) < 0.05] = np.nan  # missing
    whole = CounterRates().rates(SampleBatch.from_arrays(ids, ts, values))
    rates = CounterRates()
    bounds = np.minimum(np.cumsum([0, *sizes, n]), n)
    parts = [
        rates.rates(SampleBatch.from_arrays(ids[a:b], ts[a:b], values[a:b]))
        for a, b in itertools.pairwise(bounds)
    ]
    joined = SampleBatch.concat(parts)
    np.testing.assert_array_equal(joined.series, whole.series)
    np.testing.assert_array_equal(joined.timestamps, whole.timestamps)
    np.testing.assert_array_equal(joined.values, whole.values)


def _reset_signals(name: str) -> list[float]:
    """Minutes after a counter's reset of the default detector's signals at score 0.1 (far
    below the alarm level), within the hour after it: three days of ~100 requests/s."""
    rng = np.random.default_rng(4)
    n = 3 * 1440
    ts = 1.7e9 + 60.0 * np.arange(n)
    counter = np.cumsum(rng.poisson(6000, n)).astype(np.float64)
    reset = 2 * 1440 + 300
    counter[reset:] -= counter[reset - 1]
    series = SeriesRegistry()
    sid = series.id_for(SeriesKey.of(name, {"pod": "a"}))
    bank = DetectorBank(series, [DetectorSpec(build_detector("ensemble", {}, series), min_score=0.1)])
    signals = []
    for k in range(0, n, 60):
        signals += bank.process(
            SampleBatch.from_arrays(np.full(60, sid), ts[k : k + 60], counter[k : k + 60])
        )
    return [(s.timestamp - ts[reset]) / 60 for s in signals if 0 <= s.timestamp - ts[reset] < 3600]


def test_a_counter_reset_is_not_an_anomaly() -> None:
    assert _reset_signals("http_requests_total") == []
    # the same numbers read as a gauge: the fall to zero is where the series has never been
    as_gauge = _reset_signals("http_requests_cumulative")
    assert as_gauge
    assert as_gauge[0] <= 1.0
