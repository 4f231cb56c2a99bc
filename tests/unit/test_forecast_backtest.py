"""The backtest helper: metrics against hand-computed values, causal rolling origins, pair matching."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from detectors import DetectorError, SampleBatch
from detectors.backtest import backtest, coverage, horizon_steps, mape, smape
from detectors.batch import FloatArray, IdArray


def test_smape_against_hand_computation() -> None:
    # 2|f-a|/(|f|+|a|): 2*10/210, 2*50/150, 0 (both zero), 2*1/1 (one zero)
    expected = 100 * (20 / 210 + 100 / 150 + 0.0 + 2.0) / 4
    assert smape([110, 50, 0, 1], [100, 100, 0, 0]) == pytest.approx(expected)


def test_mape_skips_zero_actuals() -> None:
    # |f-a|/|a| over a != 0: 10/100, 50/100, 1/4
    assert mape([110, 50, 3, 5], [100, 100, 0, 4]) == pytest.approx(100 * (0.1 + 0.5 + 0.25) / 3)
    assert math.isnan(mape([1.0], [0.0]))


def test_coverage_counts_actuals_at_or_below_the_bound() -> None:
    assert coverage([10, 10, 10, 10], [9, 10, 11, 12]) == 0.5
    assert math.isnan(coverage([], []))


@pytest.mark.parametrize(
    ("step", "lead", "steps"), [(300, 900, 3), (600, 900, 2), (60, 900, 15), (3600, 900, 1)]
)
def test_horizon_steps_covers_the_lead_time(step: float, lead: float, steps: int) -> None:
    assert horizon_steps(step, lead) == steps


class _Recorder:
    """A forecaster that predicts the newest value it has seen plus one, and records what it saw."""

    name = "recorder"
    step = 10.0
    quantile = 0.9
    invalid = 0
    out_of_order = 0

    def __init__(self) -> None:
        self.seen: list[float] = []

    def update(self, batch: SampleBatch) -> None:
        self.seen.extend(batch.timestamps[np.isfinite(batch.values)].tolist())
        self.last = float(batch.values[-1]) if np.isfinite(batch.values[-1]) else getattr(self, "last", 0.0)

    def forecast(self, series_ids: Sequence[int] | IdArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        mean = np.full((len(series_ids), horizon), self.last + 1.0)
        return mean, mean + 0.5

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        pass


def test_backtest_scores_each_origin_against_the_value_horizon_steps_later() -> None:
    # season of 40 s = 4 steps; values t/10 so the value h steps later is origin value + h
    ts = np.arange(0.0, 200.0, 10.0)
    values = ts / 10.0 + 1.0
    run = backtest(_Recorder(), ts, values, 2, season=40.0)
    r = run.result
    # origins from t=40 (one season) to t=170 (t+20 must exist): 14 pairs
    assert r.pairs == 14
    # forecast = origin + 1, actual = origin + 2, seasonal naive = value at target - 40 = origin - 2
    np.testing.assert_allclose(run.actual - run.forecast, 1.0)
    np.testing.assert_allclose(run.actual - run.naive, 4.0)
    a = run.actual
    assert r.smape == pytest.approx(smape(a - 1, a))
    assert r.mape == pytest.approx(100 * np.mean(1.0 / a))
    assert r.naive_smape == pytest.approx(smape(a - 4, a))
    assert r.coverage == 0.0  # upper = origin + 1.5 < actual = origin + 2
    assert r.smape_ratio == pytest.approx(r.smape / r.naive_smape)


def test_backtest_is_causal_and_skips_targets_without_a_sample() -> None:
    ts = np.r_[np.arange(0.0, 100.0, 10.0), np.arange(200.0, 300.0, 10.0)]  # a 100 s hole
    values = np.arange(ts.size, dtype=float)
    seen_at_forecast: list[int] = []

    class Causal(_Recorder):
        def forecast(
            self, series_ids: Sequence[int] | IdArray, horizon: int
        ) -> tuple[FloatArray, FloatArray]:
            seen_at_forecast.append(len(self.seen))
            return super().forecast(series_ids, horizon)

    run = backtest(Causal(), ts, values, 1, season=40.0)
    assert seen_at_forecast == list(range(1, ts.size + 1))  # the k-th forecast saw k samples
    # no target at 100 s (after 90) nor a seasonal-naive value for targets in [210, 230]
    targets = ts + 10
    has_actual = np.isin(targets, ts)
    has_naive = np.isin(targets - 40, ts)
    assert run.result.pairs == int(np.sum(has_actual & has_naive & (ts >= 40)))


def test_backtest_ignores_bad_rows_as_origins() -> None:
    ts = np.arange(0.0, 100.0, 10.0)
    values = np.arange(10.0)
    values[5] = np.nan
    ts = ts.copy()
    ts[7] = 15.0  # out of order
    run = backtest(_Recorder(), ts, values, 1, season=20.0)
    assert np.all(np.isfinite(run.actual))
    # origins 20 and 30 score; 40's target (50) is NaN, 60's (70) absent, 80's naive value (70) absent
    assert run.result.pairs == 2
    np.testing.assert_array_equal(run.actual, [3.0, 4.0])


def test_backtest_rejects_bad_arguments() -> None:
    with pytest.raises(DetectorError, match="horizon"):
        backtest(_Recorder(), [0.0, 1.0], [1.0, 2.0], 0)
    with pytest.raises(DetectorError, match="equal length"):
        backtest(_Recorder(), [0.0, 1.0], [1.0], 1)
