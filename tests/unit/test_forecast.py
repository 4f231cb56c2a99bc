"""The forecasters: accuracy on clean seasonal data, calibrated upper bounds, state, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import DEFAULT_FORECASTER, DetectorError, Forecaster, SampleBatch, build_forecaster
from detectors.backtest import backtest
from detectors.forecast import Transform, order_batch, slot_weights
from detectors.forecasters import FORECASTERS
from detectors.holtwinters import HoltWintersForecaster
from detectors.regression_forecast import RegressionForecaster

STEP = 300.0
DAY = 86400.0
NAMES = sorted(FORECASTERS)
T0 = 1_400_000_000.0 - (1_400_000_000.0 % DAY)  # a midnight, UTC


def _seasonal(
    n: int, *, noise: float = 0.0, seed: int = 0, level: float = 100.0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(n) * STEP
    values = level + 30.0 * np.sin(2 * np.pi * ts / DAY) + 10.0 * np.cos(4 * np.pi * ts / DAY)
    return ts, values + rng.normal(0.0, noise, n)


def _feed(f: Forecaster, sid: int, ts: np.ndarray, values: np.ndarray, chunk: int = 288) -> None:
    for lo in range(0, ts.size, chunk):
        part = slice(lo, lo + chunk)
        f.update(SampleBatch.from_arrays(np.full(ts[part].size, sid), ts[part], values[part]))


@pytest.mark.parametrize("name", NAMES)
def test_every_forecaster_meets_the_protocol(name: str) -> None:
    f = build_forecaster(name, {})
    assert isinstance(f, Forecaster)
    assert f.name == name
    assert DEFAULT_FORECASTER in FORECASTERS


@pytest.mark.parametrize("name", NAMES)
def test_clean_daily_series_is_forecast_within_tolerance(name: str) -> None:
    ts, values = _seasonal(6 * 288)
    f = build_forecaster(name, {"step": STEP})
    _feed(f, 0, ts, values)
    mean, upper = f.forecast([0], 12)
    future = 100.0 + 30.0 * np.sin(2 * np.pi * (ts[-1] + STEP * np.arange(1, 13)) / DAY)
    future += 10.0 * np.cos(4 * np.pi * (ts[-1] + STEP * np.arange(1, 13)) / DAY)
    assert mean.shape == upper.shape == (1, 12)
    np.testing.assert_allclose(mean[0], future, rtol=0.01)
    assert np.all(upper >= mean)


@pytest.mark.parametrize("name", NAMES)
def test_upper_bound_coverage_is_near_the_quantile_on_noisy_data(name: str) -> None:
    ts, values = _seasonal(8 * 288, noise=8.0, seed=1)
    run = backtest(build_forecaster(name, {"step": STEP, "quantile": 0.9}), ts, values, 3)
    assert run.result.pairs > 1500
    if name == "select":
        # calibrated on the peak over the lead, its level never adapted below the quantile:
        # the peak at or a little above the quantile, each step above it
        assert 0.9 <= run.result.peak_coverage <= 0.97
        assert run.result.coverage >= 0.9
    else:
        assert 0.85 <= run.result.coverage <= 0.95
    # and it beats seasonal naive, whose error carries the noise twice
    assert run.result.smape < run.result.naive_smape


@pytest.mark.parametrize("name", NAMES)
def test_series_are_independent_when_interleaved_in_batches(name: str) -> None:
    ts, a = _seasonal(3 * 288, noise=3.0, seed=2)
    _, b = _seasonal(3 * 288, noise=3.0, seed=3, level=500.0)
    alone_a, alone_b, mixed = (build_forecaster(name, {"step": STEP}) for _ in range(3))
    _feed(alone_a, 0, ts, a)
    _feed(alone_b, 1, ts, b)
    for lo in range(0, ts.size, 288):
        part = slice(lo, lo + 288)
        k = ts[part].size
        mixed.update(
            SampleBatch.from_arrays(
                np.r_[np.ones(k, np.int64), np.zeros(k, np.int64)],
                np.r_[ts[part], ts[part]],
                np.r_[b[part], a[part]],
            )
        )
    np.testing.assert_allclose(mixed.forecast([0], 6)[0], alone_a.forecast([0], 6)[0], rtol=1e-9)
    np.testing.assert_allclose(mixed.forecast([1], 6)[1], alone_b.forecast([1], 6)[1], rtol=1e-9)


def test_holt_winters_learns_the_same_whatever_the_batch_size() -> None:
    ts, values = _seasonal(2 * 288, noise=2.0, seed=4)
    one_batch, per_sample = HoltWintersForecaster(step=STEP), HoltWintersForecaster(step=STEP)
    _feed(one_batch, 0, ts, values, chunk=ts.size)
    _feed(per_sample, 0, ts, values, chunk=1)
    assert np.array_equal(one_batch.forecast([0], 5)[0], per_sample.forecast([0], 5)[0])


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_gives_identical_forecasts(name: str) -> None:
    ts, values = _seasonal(3 * 288, noise=4.0, seed=5)
    f = build_forecaster(name, {"step": STEP})
    _feed(f, 2, ts[:400], values[:400], chunk=100)
    clone = build_forecaster(name, {"step": STEP})
    clone.load_state(f.state_dict())
    for g in (f, clone):
        _feed(g, 2, ts[400:], values[400:], chunk=100)
    for got, want in zip(clone.forecast([0, 2], 8), f.forecast([0, 2], 8), strict=True):
        assert np.array_equal(got, want, equal_nan=True)
    assert np.all(np.isnan(f.forecast([0], 8)[0]))  # series 0 was never seen
    other = next(n for n in NAMES if n != name)
    with pytest.raises(DetectorError, match="kind"):
        build_forecaster(other, {"step": STEP}).load_state(f.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_bad_samples_are_counted_not_learned(name: str) -> None:
    ts, values = _seasonal(600, noise=1.0, seed=6)
    values[[10, 20]] = np.nan
    values[30] = np.inf
    ts = ts.copy()
    ts[40] = np.nan
    ts[50] = ts[45]  # older than its predecessor
    f = build_forecaster(name, {"step": STEP})
    _feed(f, 0, ts, values, chunk=64)
    f.update(SampleBatch.from_arrays([0, 0], [ts[-1], ts[-1]], [1.0, 2.0]))  # duplicates of the newest
    f.update(SampleBatch.from_arrays([0], [ts[-1] + STEP], [1e300]))  # a huge outlier
    assert f.invalid == 4
    assert f.out_of_order == 3
    mean, upper = f.forecast([0], 3)
    assert np.all(np.isfinite(mean))
    assert np.all(upper >= mean)


@pytest.mark.parametrize("name", NAMES)
def test_a_constant_series_forecasts_itself(name: str) -> None:
    f = build_forecaster(name, {"step": STEP})
    ts = T0 + np.arange(400) * STEP
    _feed(f, 0, ts, np.full(400, 7.0))
    mean, upper = f.forecast([0], 4)
    np.testing.assert_allclose(mean, 7.0, rtol=1e-9)
    np.testing.assert_allclose(upper, 7.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("holt_winters", {"alhpa": 0.5}, "unknown parameter"),
        ("holt_winters", {"alpha": 0.0}, "holt_winters.alpha"),
        ("holt_winters", {"alpha": "0.5"}, "holt_winters.alpha"),
        ("holt_winters", {"quantile": 1.0}, "holt_winters.quantile"),
        ("holt_winters", {"step": -300}, "holt_winters.step"),
        ("holt_winters", {"step": 60000}, "holt_winters.season"),
        ("holt_winters", {"transform": "log"}, "holt_winters.transform"),
        ("holt_winters", {"huber_k": 0.1}, "holt_winters.huber_k"),
        ("regression", {"window": 10}, "regression.window"),
        ("regression", {"lags": 0}, "regression.lags"),
        ("regression", {"max_horizon": True}, "regression.max_horizon"),
        ("regression", {"min_train": 5000}, "regression.min_train"),
        ("regression", {"ridge_alpha": -1}, "regression.ridge_alpha"),
        # a slot of state per series each: 1e13 s of 1800-second slots would be 40 GiB a series
        (
            "holt_winters",
            {"season": 1e13},
            r"holt_winters.season: expected at most 100000 slots of max\(step, resolution\) = 1800 s",
        ),
        ("holt_winters", {"resolution": 1e-300, "step": 1e-300}, "holt_winters.season: expected at most"),
        (
            "select",
            {"week": 1e12},
            r"select.week: expected at most 100000 slots of .* = 300 s, i.e. 3e\+07 s",
        ),
        ("select", {"resolution": 1e-9, "step": 1e-9}, "select.week: expected at most 100000 slots"),
        (
            "select",
            {"holt_winters_params": {"season": 1e12}},
            "select: holt_winters.season: expected at most",
        ),
        ("prophet", {}, "unknown forecaster"),
    ],
)
def test_bad_parameters_are_named(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        build_forecaster(name, params)


@pytest.mark.parametrize("name", NAMES)
def test_bad_horizons_are_refused(name: str) -> None:
    f = build_forecaster(name, {"step": STEP, "max_horizon": 4} if name == "regression" else {"step": STEP})
    for horizon in (0, -1, 2.5):
        with pytest.raises(DetectorError, match="horizon"):
            f.forecast([0], horizon)  # type: ignore[arg-type]
    if name == "regression":
        with pytest.raises(DetectorError, match="max_horizon"):
            f.forecast([0], 5)


def test_defaults_apply_only_where_a_forecaster_has_the_parameter() -> None:
    hw = build_forecaster("holt_winters", {}, {"step": 60.0, "max_horizon": 30})
    reg = build_forecaster("regression", {"max_horizon": 8}, {"step": 60.0, "max_horizon": 30})
    assert hw.step == 60.0
    assert reg.step == 60.0
    assert isinstance(reg, RegressionForecaster)
    assert reg.max_horizon == 8  # explicit params win over defaults


# ---------------------------------------------------------------- shared helpers


def test_order_batch_sorts_and_counts() -> None:
    batch = SampleBatch.from_arrays([1, 0, 1, 0, 0, 1], [5, 3, 4, 3, 1, np.nan], [1, 2, 3, 4, np.inf, 6])
    last = np.array([0.0, 4.5])
    out = order_batch(batch, last)
    assert out.series.tolist() == [0, 1]
    assert out.timestamps.tolist() == [3.0, 5.0]
    assert out.values.tolist() == [2.0, 1.0]
    assert out.invalid == 2  # inf value, NaN timestamp
    assert out.out_of_order == 2  # duplicate t=3 of series 0, t=4 of series 1 (not newer than 4.5)


def test_slot_weights_interpolate_between_slot_centres() -> None:
    # 4 slots of 6 h, centres at 3 h, 9 h, 15 h, 21 h
    lo, hi, frac = slot_weights(np.array([3 * 3600.0, 6 * 3600.0, 0.0, 22.5 * 3600.0]), DAY, 4)
    assert lo.tolist() == [0, 0, 3, 3]
    assert hi.tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(frac, [0.0, 0.5, 0.5, 0.25])


@pytest.mark.parametrize("kind", ["none", "log1p", "asinh"])
def test_transforms_round_trip(kind: str) -> None:
    values = np.array([0.0, 0.5, 3.0, 1e6])
    t = Transform(kind)
    np.testing.assert_allclose(t.inverse(t.forward(values)), values, rtol=1e-12, atol=1e-12)


def test_regression_fits_each_horizon_alone_when_gaps_leave_no_complete_rows() -> None:
    ts, values = _seasonal(4 * 288)
    keep = np.arange(ts.size) % 4 != 3  # every 4th step missing: no origin has all 4 targets
    f = RegressionForecaster(step=STEP, max_horizon=4)
    _feed(f, 0, ts[keep], values[keep])
    state = f.state_dict()
    assert np.all(np.abs(state["coef"][0]).sum(axis=1) > 0)  # every horizon has a fitted model
    assert np.all(np.isfinite(state["margin"][0]))
    mean, _ = f.forecast([0], 4)
    last = ts[keep][-1]
    k = np.arange(1, 5)
    truth = (
        100
        + 30 * np.sin(2 * np.pi * (last + k * STEP) / DAY)
        + 10 * np.cos(4 * np.pi * (last + k * STEP) / DAY)
    )
    np.testing.assert_allclose(mean[0], truth, rtol=0.01)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=120),
    st.sampled_from(NAMES),
)
def test_arbitrary_floats_never_crash_and_are_all_accounted_for(values: list[float], name: str) -> None:
    f = build_forecaster(name, {}, {"step": STEP, "max_horizon": 3})
    ts = T0 + np.arange(len(values)) * STEP
    _feed(f, 0, ts, np.asarray(values), chunk=17)
    finite = int(np.count_nonzero(np.isfinite(values)))
    assert f.invalid == len(values) - finite
    assert f.out_of_order == 0
    mean, upper = f.forecast([0], 3)
    assert mean.shape == (1, 3)
    if finite:
        assert not np.any(np.isnan(mean))
    assert not np.any(upper < mean)


def test_holt_winters_slots_are_bounded_before_any_is_allocated() -> None:
    assert HoltWintersForecaster.from_params({"season": 100_000 * 1800.0}).slots == 100_000
    with pytest.raises(
        DetectorError, match=r"holt_winters.season: expected at most 100000 slots .* got 180001800.0"
    ):
        HoltWintersForecaster.from_params({"season": 100_001 * 1800.0})
