"""What operations data does to the default detector: gaps, irregular steps, missing values, a
series first seen mid-stream. None of them is an anomaly by itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors import SampleBatch
from detectors.registry import ALARM_SCORE, DEFAULT, build_learned

DAY = 86_400.0
STEP = 300.0  # five-minute samples
N = 5 * 288  # five days

Array = np.ndarray[Any, Any]


def seasonal(seed: int) -> tuple[Array, Array]:
    """Five days of a strong daily cycle (amplitude 40) with noise of 2: no anomaly."""
    rng = np.random.default_rng(seed)
    ts = 1.7e9 + STEP * np.arange(N)
    return ts, 100 + 40 * np.sin(2 * np.pi * ts / DAY) + 2 * rng.standard_normal(N)


def scores(ts: Array, values: Array, rows: int = 500) -> Array:
    det = build_learned(DEFAULT, {})
    out = [
        det.update(
            SampleBatch.from_arrays(
                np.zeros(ts[k : k + rows].size, dtype=np.int64), ts[k : k + rows], values[k : k + rows]
            )
        )
        for k in range(0, ts.size, rows)
    ]
    return np.concatenate(out)


SEEDS = range(3)


def test_a_gap_does_not_raise_scores() -> None:
    """Six hours missing across the cycle's steepest part on day 4: after the gap the series is
    40 away from where it was, and is judged as every other sample of that time of day."""
    for seed in SEEDS:
        ts, values = seasonal(seed)
        whole = scores(ts, values)
        keep = np.ones(N, dtype=bool)
        gap = 3 * 288 + 36  # 03:00 on day 4 (the cycle crosses its mean rising at 00:00 UTC + 6 h)
        keep[gap : gap + 72] = False
        gapped = scores(ts[keep], values[keep])
        assert gapped.max() <= whole.max()
        after = np.flatnonzero(ts[keep] >= ts[gap + 72])[:48]
        assert gapped[after].max() <= whole[gap + 72 : gap + 120].max() + 0.02


def test_irregular_timestamps_do_not_raise_scores() -> None:
    """Each sample up to two minutes early or late, or half of them missing at random."""
    for seed in SEEDS:
        ts, values = seasonal(seed)
        rng = np.random.default_rng(seed + 100)
        whole = scores(ts, values)
        assert scores(ts + rng.uniform(-120.0, 120.0, N), values).max() <= whole.max() + 0.02
        half = np.sort(rng.choice(N, N // 2, replace=False))
        assert scores(ts[half], values[half]).max() <= whole.max() + 0.02


def test_missing_values_are_absent_samples() -> None:
    """NaN rows score 0 and leave the other rows' scores as if they had not been sent."""
    ts, values = seasonal(0)
    holes = np.zeros(N, dtype=bool)
    holes[700:760] = True
    holes[::37] = True
    with_nan = scores(ts, np.where(holes, np.nan, values))
    np.testing.assert_array_equal(with_nan[~holes], scores(ts[~holes], values[~holes]))
    assert not with_nan[holes].any()


def test_a_series_first_seen_mid_stream_is_not_an_anomaly() -> None:
    """The agent starts at any time of day, at any point of the cycle, with the series far from
    zero: nothing reaches the alarm level, and the first hours (warm-up) score nothing.

    Where the start falls in the cycle moves the largest score a little (0.12 - 0.16 here)."""
    for seed in SEEDS:
        ts, values = seasonal(seed)
        for start in (0, 50, 131, 222):  # 00:00, 04:10, 10:55, 18:30 on day 1
            got = scores(ts[start:], values[start:] + 1e6)
            assert got.max() < ALARM_SCORE
            assert got.max() < 0.2
            assert not got[:30].any()
