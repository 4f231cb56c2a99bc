"""The selecting forecaster: which candidate wins on data whose answer is known, causality, state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import DetectorError, SampleBatch
from detectors.forecast_select import (
    CANDIDATES,
    PERSISTENCE,
    SEASONAL_DAY,
    SelectingForecaster,
    conformal_margins,
)

STEP = 300.0
DAY = 86400.0
PER_DAY = 288
T0 = 1_400_000_000.0 - (1_400_000_000.0 % DAY)  # a midnight, UTC


def _feed(f: SelectingForecaster, ts: np.ndarray, values: np.ndarray, sid: int = 0, chunk: int = 97) -> None:
    for lo in range(0, ts.size, chunk):
        part = slice(lo, lo + chunk)
        f.update(SampleBatch.from_arrays(np.full(ts[part].size, sid), ts[part], values[part]))


def _square_days(days: int, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """100 in the first half of each day, 300 in the second, from midnight."""
    n = days * PER_DAY + extra
    ts = T0 + np.arange(n) * STEP
    values = np.where(np.arange(n) % PER_DAY < PER_DAY // 2, 100.0, 300.0)
    return ts, values


def test_on_a_daily_square_wave_seasonal_naive_wins_with_the_scores_worked_by_hand() -> None:
    # Lead 3 steps. Persistence misses only from the 3 origins before each of the 2 switches a
    # day, each by 2 |300 - 100| / (300 + 100) = 1: 6 of 288 terms. Origins 0 .. 3 * 288 - 1
    # are scored (the last 3 samples resolve the last of them): 18 misses in 864.
    # Seasonal naive a day back first has a value for the target of origin 285 (its bin a day
    # earlier is sample 0): 864 - 285 = 579 forecasts, all exact.
    f = SelectingForecaster(step=STEP, max_horizon=3)
    ts, values = _square_days(3, 3)
    _feed(f, ts, values)
    scores = f.scores([0])
    assert scores["scored"][0, PERSISTENCE] == 864
    assert scores["smape"][0, PERSISTENCE] == pytest.approx(100.0 * 18 / 864)
    assert scores["scored"][0, SEASONAL_DAY] == 579
    assert scores["smape"][0, SEASONAL_DAY] == 0.0
    assert scores["scored"][0, CANDIDATES.index("seasonal_week")] == 0
    assert int(f.chosen([0])[0]) == SEASONAL_DAY
    mean, upper = f.forecast([0], 3)
    # the next three steps are the 4th to 6th samples of a day: 100, as a day earlier
    np.testing.assert_array_equal(mean[0], [100.0, 100.0, 100.0])
    # every residual of seasonal naive's peak is 0, so the conformal margin is 0
    np.testing.assert_allclose(upper[0], mean[0])


def test_on_a_random_walk_persistence_wins() -> None:
    # a random walk's best forecast of any later value is its newest value: every other
    # candidate adds error (the seasonal ones a day or a week of drift, Holt-Winters its lag)
    rng = np.random.default_rng(7)
    n = 4 * PER_DAY
    ts = T0 + np.arange(n) * STEP
    values = 1000.0 + np.cumsum(rng.normal(0.0, 10.0, n))
    # judged with a half-life of a day (the default half-life of 6 hours lets a lucky stretch of
    # the combination win now and then; over the whole run persistence is best)
    f = SelectingForecaster(step=STEP, max_horizon=3, memory=DAY)
    _feed(f, ts, values)
    assert int(f.chosen([0])[0]) == PERSISTENCE
    scores = f.scores([0])["smape"][0]
    assert int(np.nanargmin(scores)) == PERSISTENCE
    assert scores[PERSISTENCE] < scores[SEASONAL_DAY] / 2
    mean, _ = f.forecast([0], 3)
    np.testing.assert_array_equal(mean[0], np.full(3, values[-1]))


def test_until_a_candidate_is_scored_enough_the_forecast_is_persistence_without_a_bound() -> None:
    f = SelectingForecaster(step=STEP, max_horizon=3, min_scored=12)
    ts, values = _square_days(0, 10)
    _feed(f, ts, values + np.arange(10.0))
    assert int(f.chosen([0])[0]) == PERSISTENCE
    mean, upper = f.forecast([0], 2)
    np.testing.assert_array_equal(mean[0], [109.0, 109.0])
    assert np.isnan(upper).all()  # 7 residuals resolved: fewer than the 8 a margin needs
    unknown_mean, unknown_upper = f.forecast([5], 2)
    assert np.isnan(unknown_mean).all()
    assert np.isnan(unknown_upper).all()


def test_conformal_margin_is_the_ceil_n_plus_1_q_th_smallest_residual() -> None:
    # n = 9 residuals 1..9 in a ring of 12: ceil(10 x 0.8) = 8th smallest = 8; at 0.95,
    # ceil(9.5) = 10 > 9, so the largest; 7 residuals are too few
    ring = np.full((3, 12), np.nan)
    ring[0, :9] = np.arange(9.0, 0.0, -1.0)
    ring[1, :9] = np.arange(1.0, 10.0)
    ring[2, :7] = 1.0
    out = conformal_margins(ring, np.array([9, 9, 7]), np.array([0.8, 0.95, 0.8]))
    np.testing.assert_array_equal(out[:2], [8.0, 9.0])
    assert np.isnan(out[2])


def test_horizon_beyond_the_lead_is_refused() -> None:
    f = SelectingForecaster(step=STEP, max_horizon=3)
    with pytest.raises(DetectorError, match="max_horizon"):
        f.forecast([0], 4)


def _small() -> SelectingForecaster:
    # a "day" of 12 steps and a "week" of 24 so every candidate takes part in a short series
    return SelectingForecaster(step=STEP, season=12 * STEP, week=24 * STEP, max_horizon=2)


@settings(max_examples=8, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 1000.0, allow_nan=False), min_size=60, max_size=90),
    cut=st.integers(30, 55),
    change=st.floats(1.0, 500.0),
)
def test_forecasts_never_depend_on_later_samples(values: list[float], cut: int, change: float) -> None:
    """Two series equal up to ``cut`` and different after: every forecast up to ``cut`` is equal."""
    a = np.asarray(values)
    b = a.copy()
    b[cut:] += change
    ts = T0 + np.arange(a.size) * STEP
    f = _small()
    seen: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {0: [], 1: []}
    for i in range(a.size):
        # both series in one batch: series must not leak into each other either
        f.update(SampleBatch.from_arrays([0, 1], [ts[i], ts[i]], [a[i], b[i]]))
        mean, upper = f.forecast([0, 1], 2)
        for sid in (0, 1):
            seen[sid].append((mean[sid], upper[sid]))
    for i in range(cut):
        np.testing.assert_array_equal(seen[0][i][0], seen[1][i][0])
        np.testing.assert_array_equal(seen[0][i][1], seen[1][i][1])
    # and the later samples did change something (the property is not vacuous)
    assert any(not np.array_equal(seen[0][i][0], seen[1][i][0]) for i in range(cut, a.size))


def test_state_round_trip_continues_exactly_as_if_never_interrupted() -> None:
    rng = np.random.default_rng(3)
    n = 3 * PER_DAY
    ts = T0 + np.arange(n) * STEP
    values = 200.0 + 80.0 * np.sin(2 * np.pi * ts / DAY) + rng.normal(0.0, 10.0, n)
    whole = SelectingForecaster(step=STEP, max_horizon=3)
    first = SelectingForecaster(step=STEP, max_horizon=3)
    half = n // 2
    _feed(whole, ts, values)
    _feed(first, ts[:half], values[:half])
    restored = SelectingForecaster(step=STEP, max_horizon=3)
    restored.load_state(first.state_dict())
    _feed(restored, ts[half:], values[half:])
    np.testing.assert_array_equal(restored.forecast([0], 3)[0], whole.forecast([0], 3)[0])
    np.testing.assert_array_equal(restored.forecast([0], 3)[1], whole.forecast([0], 3)[1])
    np.testing.assert_array_equal(restored.scores([0])["smape"], whole.scores([0])["smape"])
    state = whole.state_dict()
    assert (state["kind"], state["version"]) == ("select", 1)
    with pytest.raises(DetectorError, match="calibration"):
        SelectingForecaster(step=STEP, max_horizon=3, calibration=100).load_state(state)
    broken = dict(state)
    broken["regression_state"] = {"kind": "regression", "version": 99}
    untouched = SelectingForecaster(step=STEP, max_horizon=3)
    with pytest.raises(DetectorError):
        untouched.load_state(broken)
    assert untouched.state_dict()["count"].size == 0  # nothing of the refused state was loaded


@pytest.mark.parametrize("lead", [3, 10])
def test_a_burst_every_bound_of_a_lead_missed_moves_the_level_as_one_miss(lead: int) -> None:
    # A constant series is covered by every bound (the level sits at its floor, the quantile).
    # One sample of 3x is the peak of the `lead` bounds published at the origins before it:
    # they all miss it. Judged at 1 / lead each, they raise the level by adapt x quantile once,
    # at any lead (counted as lead misses, the rise was lead times that).
    f = SelectingForecaster(step=STEP, max_horizon=lead, adapt=0.01, quantile=0.9)
    n = PER_DAY + 50
    ts = T0 + np.arange(n + lead) * STEP
    values = np.full(ts.size, 100.0)
    values[n] = 300.0
    _feed(f, ts[:n], values[:n])
    before = float(f._level[0])  # read directly: the level is internal state
    assert before == pytest.approx(0.9)
    _feed(f, ts[n:], values[n:], chunk=1)  # the burst, then until the last bound over it is judged
    rise = float(f._level[0]) - before
    assert rise == pytest.approx(0.01 * 0.9, rel=1e-9)


def test_the_seasonal_bins_are_bounded_before_any_is_allocated() -> None:
    # week / max(step, resolution) bins a series: at most 100000, the bound itself allowed
    assert SelectingForecaster.from_params({"week": 100_000 * 300.0}).bins == 100_000
    with pytest.raises(DetectorError, match=r"select.week: expected at most 100000 slots .* got 30000300.0"):
        SelectingForecaster.from_params({"week": 100_001 * 300.0})
    # 1e12 s of 300-second bins asked numpy for 2.4 TB a series, at the first sample
    with pytest.raises(DetectorError, match=r"select.week: .* = 300 s, i.e. 3e\+07 s, got 1000000000000.0"):
        SelectingForecaster.from_params({"week": 1e12})
    # a finer resolution is the same bound in fewer seconds
    with pytest.raises(DetectorError, match=r"select.week: .* = 1 s, i.e. 100000 s, got 604800"):
        SelectingForecaster.from_params({"step": 1, "resolution": 1})
