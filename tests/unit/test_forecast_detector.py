"""The forecast detector: forecasts of a forecaster turned into signals of kind ``forecast``."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from detectors import (
    DetectorBank,
    DetectorError,
    DetectorSpec,
    SampleBatch,
    SeriesKey,
    SeriesRegistry,
    Signal,
    SignalKind,
    build_detector,
    detector_names,
)
from detectors.forecast_detector import ForecastDetector

MEMORY = SeriesKey.of("container_memory_working_set_ratio", {"namespace": "shop", "deployment": "cart"})
REQUESTS = SeriesKey.of("http_requests_per_second", {"namespace": "shop", "deployment": "web"})
#: Holt-Winters with a trend: the forecaster that follows a linear memory leak (see the report).
TRENDING = {"forecaster": "holt_winters", "forecaster_params": {"beta": 0.1, "phi": 1.0}}


def one(sid: int, t: float, v: float) -> SampleBatch:
    return SampleBatch.from_arrays([sid], [t], [v])


def test_registered_as_forecast_but_not_as_anomaly_detector() -> None:
    det = build_detector("forecast", {}, SeriesRegistry())
    assert isinstance(det, ForecastDetector)
    assert det.signal_kind is SignalKind.FORECAST
    assert "forecast" not in detector_names()
    assert det.forecaster.name == "select"
    assert det.horizon_steps == 15  # 900 s of 60 s steps


def test_memory_ramp_signals_before_the_series_reaches_ninety_percent() -> None:
    reg = SeriesRegistry()
    sid = reg.id_for(MEMORY)
    other = reg.id_for(REQUESTS)
    det = ForecastDetector.from_params({"limit": 1.0, **TRENDING})
    bank = DetectorBank(reg, [DetectorSpec(det, 0.9, metrics="container_memory_.*")])
    rng = np.random.default_rng(0)
    minutes = np.arange(12 * 60)
    # flat at 0.4 for an hour, then a leak of 0.1 of the limit per hour
    values = 0.4 + np.clip(minutes / 60 - 1.0, 0.0, None) * 0.1 + 0.005 * rng.standard_normal(minutes.size)
    first = None
    for i, v in enumerate(values.tolist()):
        signals = bank.process(SampleBatch.from_arrays([sid, other], [60.0 * i] * 2, [v, 500.0]))
        if signals:
            first = (i, signals[0])
            break
    assert first is not None
    i, signal = first
    assert values[: i + 1].max() < 0.9
    assert signal.kind is SignalKind.FORECAST
    assert signal.series == MEMORY
    assert signal.value == det.signal_details(sid)["forecast_upper"] >= 0.9
    assert signal.value > values[i]
    assert signal.details["forecaster"] == "holt_winters"
    assert signal.details["horizon_seconds"] == 900.0
    assert signal.details["forecast_mean"] <= signal.value
    assert signal.score == pytest.approx(min(signal.value, 1.0))


def test_default_forecaster_signals_a_memory_ramp_in_time_with_the_same_signal_shape() -> None:
    # the default (select) with no trend model configured: whichever candidate is chosen, the
    # bound is calibrated on the peak over the horizon, which on a ramp includes the climb
    reg = SeriesRegistry()
    sid = reg.id_for(MEMORY)
    det = ForecastDetector.from_params({"limit": 1.0})
    bank = DetectorBank(reg, [DetectorSpec(det, 0.9, metrics="container_memory_.*")])
    rng = np.random.default_rng(0)
    minutes = np.arange(12 * 60)
    values = 0.4 + np.clip(minutes / 60 - 1.0, 0.0, None) * 0.1 + 0.005 * rng.standard_normal(minutes.size)
    first = None
    for i, v in enumerate(values.tolist()):
        signals = bank.process(SampleBatch.from_arrays([sid], [60.0 * i], [v]))
        if signals:
            first = (i, signals[0])
            break
    assert first is not None
    i, signal = first
    # signalled before 0.9 is reached and not while the series was flat (the ramp starts at
    # minute 60). The bound is wider than the 15-minute climb: the peak errors of the ramp's start,
    # scaled by the flat hour's small typical error, stay in the calibration window for hours.
    assert values[: i + 1].max() < 0.9
    assert i > 90
    assert signal.value == det.signal_details(sid)["forecast_upper"] >= 0.9
    assert signal.details["forecaster"] == "select"
    assert set(signal.details) == {
        "forecast_mean",
        "forecast_upper",
        "horizon_seconds",
        "peak_in_seconds",
        "forecaster",
        "limit",
        "observed_peak",
    }
    assert signal.details["observed_peak"] == pytest.approx(values[i - 14 : i + 1].max())


def test_steady_series_signals_once_then_again_only_after_the_level_moves() -> None:
    det = ForecastDetector.from_params({"refresh": 1e9})  # the moves alone (refresh: below)
    rng = np.random.default_rng(2)
    values = np.where(np.arange(700) < 500, 100.0, 130.0) + 0.5 * rng.standard_normal(700)
    hits: list[tuple[int, float, float]] = []
    for i, v in enumerate(values.tolist()):
        score = det.update(one(0, 60.0 * i, v))
        assert score[0] in {0.0, 1.0}
        if score[0] == 1.0:
            value = det.signal_value(0)
            assert value is not None
            hits.append((i, value, det.signal_details(0)["observed_peak"]))
    steady = [h for h in hits if h[0] < 500]
    assert len(steady) == 1
    assert steady[0][1] == pytest.approx(101.0, abs=3.0)
    moved = [h for h in hits if h[0] >= 500]
    # the load seen moves at once (a new observed peak is a signal of its own); the bound follows
    assert moved[0][0] == 500
    assert moved[0][2] >= 1.1 * steady[0][2]
    assert max(u for i, u, _ in moved if i < 530) >= 1.1 * steady[0][1]


def test_a_forecast_that_did_not_move_enough_is_not_signalled_again() -> None:
    det = ForecastDetector.from_params({"forecaster": "holt_winters", "change": 0.5, "refresh": 1e9})
    for i in range(50):
        det.update(one(0, 60.0 * i, 100.0 + (i % 2)))
    # +30 % is less than the configured 50 % change
    scores = [float(det.update(one(0, 60.0 * (50 + i), 130.0))[0]) for i in range(5)]
    assert scores == [0.0] * 5


def test_daily_cycle_signals_track_the_coming_peak() -> None:
    det = ForecastDetector.from_params({"step": 300, "horizon": 3600})
    step, n = 300.0, 3 * 288
    t = np.arange(n) * step
    rng = np.random.default_rng(1)

    def truth(x: np.ndarray) -> np.ndarray:
        return 500.0 + 400.0 * np.sin(2 * np.pi * (x - 6 * 3600) / 86400)  # peak of 900 at noon

    values = truth(t) * (1 + 0.03 * rng.standard_normal(n))
    seen: list[tuple[int, float, float]] = []
    for i in range(n):
        if det.update(one(0, t[i], values[i]))[0] >= 0.8:
            value = det.signal_value(0)
            assert value is not None
            coming = float(truth(t[i] + step * np.arange(1, 13)).max())
            seen.append((i, value, coming))
    last_day = [(i, v, c) for i, v, c in seen if i >= 2 * 288]
    assert len(last_day) >= 10
    for _, value, coming in last_day:
        assert 0.95 * coming <= value <= 1.3 * coming
    # the signals before noon climb towards the peak
    morning = [v for i, v, _ in last_day if 0 <= (i % 288) * step / 3600 < 12]
    assert max(morning) >= 900.0
    assert morning[-1] > morning[0]


def test_only_the_newest_sample_of_a_series_scores_and_only_every_seconds() -> None:
    det = ForecastDetector.from_params({"limit": 10.0, "every": 300, **TRENDING})
    det.update(SampleBatch.from_arrays([0] * 20, np.arange(20) * 60.0, np.full(20, 5.0)))  # forecast at 1140
    batch = SampleBatch.from_arrays([0, 1, 0, 0], [1260.0, 0.0, 1440.0, 1320.0], [5.0, 1.0, 5.0, 5.0])
    scores = det.update(batch)
    assert scores[[0, 3]].tolist() == [0.0, 0.0]  # older samples of series 0
    upper = det.signal_value(0)
    assert upper is not None
    assert scores[2] == pytest.approx(upper / 10.0)
    assert scores[1] == pytest.approx(0.1)  # series 1: Holt-Winters forecasts its one sample's level
    assert det.update(one(0, 1500.0, 5.0))[0] == 0.0  # 60 s after the last forecast
    assert det.update(one(0, 1740.0, 5.0))[0] > 0.0  # 300 s after it


def test_nan_forecast_scores_zero_and_has_no_signal_value() -> None:
    det = ForecastDetector.from_params({"limit": 1.0})
    assert det.update(one(0, 0.0, 0.5)).tolist() == [0.0]
    assert det.signal_value(0) is None
    assert det.signal_value(99) is None
    assert det.signal_details(0) == {}


def test_refused_samples_are_counted_by_the_forecaster() -> None:
    det = ForecastDetector.from_params({"forecaster": "holt_winters"})
    det.update(SampleBatch.from_arrays([0, 0, 0], [60.0, 120.0, 180.0], [1.0, float("nan"), 2.0]))
    scores = det.update(SampleBatch.from_arrays([0, 0], [100.0, 180.0], [1.0, 1.0]))
    assert scores.tolist() == [0.0, 0.0]
    assert (det.invalid, det.out_of_order) == (1, 2)
    assert (det.forecaster.invalid, det.forecaster.out_of_order) == (1, 2)


def test_causal_scores_do_not_depend_on_later_batches() -> None:
    rng = np.random.default_rng(4)
    values = 10.0 + rng.standard_normal(300)
    a = ForecastDetector.from_params({"forecaster": "holt_winters"})
    b = ForecastDetector.from_params({"forecaster": "holt_winters"})
    early = [float(a.update(one(0, 60.0 * i, v))[0]) for i, v in enumerate(values[:200].tolist())]
    full = [float(b.update(one(0, 60.0 * i, v))[0]) for i, v in enumerate(values.tolist())]
    assert early == full[:200]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 1.0, **TRENDING},
        {"forecaster": "regression", "forecaster_params": {"harmonics": 0}},
    ],
)
def test_state_round_trip_gives_identical_scores(params: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    n, ids = 400, np.array([0, 1, 2])
    ramp = 0.3 + np.arange(n)[:, None] * np.array([0.001, 0.0005, 0.0]) + 0.01 * rng.standard_normal((n, 3))
    batches = [SampleBatch.from_arrays(ids, np.full(3, 60.0 * i), ramp[i]) for i in range(n)]
    first = ForecastDetector.from_params(params)
    for batch in batches[:250]:
        first.update(batch)
    second = ForecastDetector.from_params(params)
    second.load_state(first.state_dict())
    a = np.concatenate([first.update(b) for b in batches[250:]])
    b = np.concatenate([second.update(b) for b in batches[250:]])
    np.testing.assert_array_equal(a, b)
    assert a.max() > 0.0
    assert first.signal_details(0) == second.signal_details(0)


def test_load_state_refuses_another_configuration_and_keeps_its_own() -> None:
    det = ForecastDetector.from_params({"forecaster": "holt_winters"})
    for i in range(30):
        det.update(one(0, 60.0 * i, 5.0))
    state = det.state_dict()
    with pytest.raises(DetectorError, match="horizon_steps"):
        ForecastDetector.from_params({"forecaster": "holt_winters", "horizon": 600}).load_state(state)
    with pytest.raises(DetectorError, match="forecaster_state"):
        det.load_state({k: v for k, v in state.items() if k != "forecaster_state"})
    broken = {**state, "forecaster_state": {**state["forecaster_state"], "version": 99}}
    fresh = ForecastDetector.from_params({"forecaster": "holt_winters"})
    with pytest.raises(DetectorError, match="holt_winters"):
        fresh.load_state(broken)
    assert fresh.signal_value(0) is None  # nothing of the refused state was loaded


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"forecaster": "crystal_ball"}, "forecast.forecaster"),
        ({"forecaster_params": [1]}, "forecast.forecaster_params"),
        ({"forecaster_params": {"memory": 0}}, "forecast.forecaster_params: select.memory"),
        (
            {"forecaster_params": {"regression_params": {"lags": 0}}},
            "forecast.forecaster_params: select: regression.lags",
        ),
        ({"forecaster": "regression", "forecaster_params": {"lags": 0}}, "params: regression.lags"),
        ({"forecaster_params": {"step": 30}}, "forecast.forecaster_params.step"),
        ({"step": 0}, "forecast.step"),
        ({"horizon": -1}, "forecast.horizon"),
        ({"horizon": 3600, "forecaster_params": {"max_horizon": 12}}, "forecast.horizon"),
        ({"limit": 0}, "forecast.limit"),
        ({"limit": "high"}, "forecast.limit"),
        ({"change": -0.1}, "forecast.change"),
        ({"limit": 1.0, "change": 0.2}, "forecast.change"),
        ({"refresh": 0}, "forecast.refresh"),
        ({"limit": 1.0, "refresh": 600}, "forecast.refresh"),
        ({"every": -5}, "forecast.every"),
        ({"horizn": 900}, "horizn"),
        # steps are counted as int64 (t / step): 1e-300 overflowed to an IndexError in _see
        ({"step": 1e-300, "horizon": 1e-298}, "forecast.step: expected a number in [1, inf), got 1e-300"),
        ({"step": 0.5}, "forecast.step: expected a number in [1, inf)"),
        # a ring of horizon steps per series, and forecasts as long: bounded for every forecaster
        (
            {"forecaster": "holt_winters", "step": 1, "horizon": 1e9},
            "forecast.horizon: at most 10000 steps of 1 s (10000 s), got 1e+09",
        ),
        (
            {"forecaster": "holt_winters", "forecaster_params": {"season": 1e13}},
            "forecast.forecaster_params: holt_winters.season: expected at most 100000 slots",
        ),
        ({"forecaster_params": {"week": 1e12}}, "forecast.forecaster_params: select.week: expected at most"),
    ],
)
def test_bad_params_name_the_parameter(params: dict[str, Any], named: str) -> None:
    with pytest.raises(DetectorError) as info:
        ForecastDetector.from_params(params)
    assert named in str(info.value)


def test_unregistered_ids_are_refused() -> None:
    det = ForecastDetector.from_params({})
    with pytest.raises(DetectorError, match="unregistered"):
        det.update(one(-1, 0.0, 1.0))
    assert det.update(SampleBatch.empty()).shape == (0,)


def test_a_sample_at_a_time_no_clock_reads_raises_no_forecast_signal() -> None:
    """A sample stamped 1e299 once moved the forecast there and scored 1.0 against the limit."""
    series = SeriesRegistry()
    sid = series.id_for(MEMORY)
    detector = ForecastDetector.from_params({"limit": 100.0})
    bank = DetectorBank(series, [DetectorSpec(detector, min_score=0.9)])
    t0 = 1.78e9
    steps = np.arange(300, dtype=np.float64)
    history = SampleBatch(
        np.full(300, sid),
        (t0 + 60 * steps).astype(np.float64),
        (50 + 5 * np.sin(steps / 10)).astype(np.float64),
    )
    assert bank.process(history) == []
    upper = detector.signal_details(sid)["forecast_upper"]
    assert bank.process(SampleBatch(np.array([sid]), np.array([1e299]), np.array([99.0]))) == []
    assert detector.invalid == 1
    assert detector.signal_details(sid)["forecast_upper"] == pytest.approx(upper, rel=0.05)


class _Recorder:
    """A forecaster that remembers what it learned and forecasts its newest value (flat)."""

    name = "recorder"
    quantile = 0.95

    def __init__(self, step: float) -> None:
        self.step = step
        self.invalid = 0
        self.out_of_order = 0
        self.learned: list[tuple[int, float, float]] = []
        self.newest: dict[int, float] = {}

    def update(self, batch: SampleBatch) -> None:
        for s, t, v in zip(batch.series, batch.timestamps, batch.values, strict=True):
            self.learned.append((int(s), float(t), float(v)))
            self.newest[int(s)] = float(v)

    def forecast(self, series_ids: Any, horizon: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        rows = [[self.newest.get(int(s), np.nan)] * horizon for s in series_ids]
        mean = np.array(rows, dtype=np.float64).reshape(len(rows), horizon)
        return mean, mean * 1.1

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: Any) -> None:
        del state


def test_aggregate_forecasts_the_mean_of_each_step_once_it_is_complete() -> None:
    """With aggregate, 15 s samples reach the forecaster as one mean per minute, timed at the
    minute's end, once a sample of the next minute shows the minute is complete; the forecast's
    score goes on that sample. Late samples of a completed minute are left out."""
    recorder = _Recorder(60.0)
    det = ForecastDetector(recorder, step=60.0, horizon=120.0, change=0.0, every=0.0, aggregate=True)
    t0 = 1_700_000_040.0  # a minute boundary
    values = [10.0, 20.0, 30.0, 40.0, 100.0, 100.0, 100.0, 100.0, 7.0]
    scores = []
    for k, v in enumerate(values):
        scores.append(float(det.update(one(0, t0 + 15.0 * k, v))[0]))
    assert recorder.learned == [(0, t0 + 60.0, 25.0), (0, t0 + 120.0, 100.0)]
    assert scores == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert det.signal_value(0) == pytest.approx(110.0)
    det.update(one(0, t0 + 119.0, 1e6))  # late: its minute is complete
    # several minutes in one batch, two series interleaved and out of order in the batch
    batch = SampleBatch.from_arrays(
        [1, 0, 1, 0, 1], [t0 + 30.0, t0 + 190.0, t0 + 70.0, t0 + 250.0, t0 + 130.0], [1.0, 9.0, 2.0, 5.0, 3.0]
    )
    out = det.update(batch)
    assert recorder.learned[2:] == [
        (0, t0 + 180.0, 7.0),
        (0, t0 + 240.0, 9.0),
        (1, t0 + 60.0, 1.0),
        (1, t0 + 120.0, 2.0),
    ]
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # the newest closing sample of each series
    state = det.state_dict()
    fresh = ForecastDetector(_Recorder(60.0), step=60.0, horizon=120.0, change=0.0, every=0.0, aggregate=True)
    fresh.load_state(state)
    assert fresh._count[0] == 1.0  # the open minute of series 0 (t0 + 250) moved with the state
    assert fresh._sum[0] == 5.0


def test_aggregate_is_a_boolean() -> None:
    with pytest.raises(DetectorError, match="aggregate: expected true or false"):
        ForecastDetector.from_params({"aggregate": "yes"})


class _Fixed:
    """A forecaster of this project's interface whose forecast is given: point and bound peak apart."""

    name = "fixed"
    step = 60.0
    quantile = 0.95
    invalid = 0
    out_of_order = 0

    def update(self, batch: SampleBatch) -> None:
        del batch

    def forecast(self, series_ids: Any, horizon: int) -> tuple[Any, Any]:
        rows = len(series_ids)
        mean = np.tile(np.array([5.0, 9.0, 7.0])[:horizon], (rows, 1))
        upper = np.tile(np.array([20.0, 12.0, 10.0])[:horizon], (rows, 1))
        return mean, upper

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: Any) -> None:
        del state


def test_the_point_value_is_the_highest_point_forecast_and_the_value_the_highest_bound() -> None:
    """An HPA's floor is sized on the demand expected at its peak within the horizon: the highest
    point forecast, wherever the bound peaks (the bound is widest at the first step here)."""
    reg = SeriesRegistry()
    sid = reg.id_for(REQUESTS)
    det = ForecastDetector(_Fixed(), step=60.0, horizon=180.0)
    bank = DetectorBank(reg, [DetectorSpec(det, 0.8)])
    signals = bank.process(one(sid, 60.0, 4.0))
    assert len(signals) == 1
    assert signals[0].value == 20.0
    assert signals[0].details["forecast_mean"] == 9.0
    assert signals[0].forecast_mean == 9.0
    assert signals[0].details["peak_in_seconds"] == 60.0


def test_only_a_forecast_signal_has_a_point_forecast() -> None:
    forecast = Signal(SignalKind.FORECAST, REQUESTS, 0.0, 20.0, 1.0, "forecast", {"forecast_mean": 9})
    assert forecast.forecast_mean == 9.0
    assert (
        Signal(SignalKind.ANOMALY, REQUESTS, 0.0, 20.0, 1.0, "x", {"forecast_mean": 9}).forecast_mean is None
    )
    for bad in (float("nan"), float("inf"), "9", True, None):
        assert (
            Signal(SignalKind.FORECAST, REQUESTS, 0.0, 20.0, 1.0, "f", {"forecast_mean": bad}).forecast_mean
            is None
        )


def _brute_peak(times: list[float], values: list[float], step: float, steps: int) -> float | None:
    """The highest value over the steps of the horizon up to the newest sample, by brute force."""
    now = np.floor(times[-1] / step)
    recent = [v for t, v in zip(times, values, strict=True) if np.floor(t / step) > now - steps]
    return max(recent) if recent else None


def test_the_observed_peak_is_the_highest_value_over_the_last_horizon() -> None:
    det = ForecastDetector.from_params({"step": 60, "horizon": 600, "forecaster": "holt_winters"})
    rng = np.random.default_rng(3)
    times: list[float] = []
    values: list[float] = []
    t = 0.0
    for _ in range(40):  # batches of 1-30 samples, 15-200 s apart: within a step and across the ring
        n = int(rng.integers(1, 30))
        gaps = rng.choice([15.0, 30.0, 200.0], size=n)
        ts = (t + np.cumsum(gaps)).tolist()
        vs = rng.gamma(2.0, 50.0, size=n).tolist()
        t = ts[-1]
        det.update(SampleBatch.from_arrays([0] * n, ts, vs))
        times += ts
        values += vs
        assert det.observed_peak(0) == pytest.approx(_brute_peak(times, values, 60.0, 10))
    assert det.signal_details(0)["observed_peak"] == pytest.approx(_brute_peak(times, values, 60.0, 10))


def test_the_observed_peak_forgets_a_spike_a_horizon_later_and_survives_a_checkpoint() -> None:
    det = ForecastDetector.from_params(
        {"step": 60, "horizon": 300, "aggregate": True, "forecaster": "holt_winters"}
    )
    for minute in range(30):
        value = 900.0 if minute == 20 else 100.0
        det.update(
            SampleBatch.from_arrays([0] * 4, [60.0 * minute + q for q in (0, 15, 30, 45)], [value] * 4)
        )
    # minute 20's mean is timed at its end (21 min) and the newest complete minute ends at 29 min
    assert det.observed_peak(0) == 100.0
    restored = ForecastDetector.from_params(
        {"step": 60, "horizon": 300, "aggregate": True, "forecaster": "holt_winters"}
    )
    restored.load_state(det.state_dict())
    assert restored.observed_peak(0) == 100.0
    for minute in range(30, 33):
        det.update(SampleBatch.from_arrays([0], [60.0 * minute], [500.0]))
        restored.update(SampleBatch.from_arrays([0], [60.0 * minute], [500.0]))
    assert det.observed_peak(0) == restored.observed_peak(0) == 500.0
    det.forget(np.array([0]))
    assert det.observed_peak(0) is None


def test_a_version_3_checkpoint_loads_with_nothing_observed_yet() -> None:
    det = ForecastDetector.from_params({"step": 60, "horizon": 300, "forecaster": "holt_winters"})
    for minute in range(10):
        det.update(one(0, 60.0 * minute, 100.0 + minute))
    old = det.state_dict()
    old["version"] = 3
    del old["seen_step"], old["seen_max"]
    restored = ForecastDetector.from_params({"step": 60, "horizon": 300, "forecaster": "holt_winters"})
    restored.load_state(old)
    assert restored.signal_value(0) == det.signal_value(0)
    assert restored.observed_peak(0) is None
    restored.update(one(0, 600.0, 50.0))
    assert restored.observed_peak(0) == 50.0


def test_a_spike_leaving_the_horizon_is_signalled_even_when_the_forecast_stays() -> None:
    """A floor held up by the load seen must hear when that load has passed: the detector signals
    when the observed peak moves by ``change``, not only when the forecast's bound does."""
    params = {"step": 60, "horizon": 300, "forecaster": "holt_winters", "refresh": 1e9}
    det = ForecastDetector.from_params(params)
    rng = np.random.default_rng(5)
    signalled: list[tuple[int, float, float]] = []
    for minute in range(240):
        value = 400.0 if minute == 200 else 100.0 + rng.normal(0.0, 2.0)
        if det.update(one(0, 60.0 * minute, value))[0] == 1.0:
            signalled.append((minute, det.signal_value(0) or 0.0, det.signal_details(0)["observed_peak"]))
    after = [(m, u, seen) for m, u, seen in signalled if m >= 200]
    assert after[0][:1] + after[0][2:] == (200, 400.0)  # the spike is seen at once
    gone = [(m, u, seen) for m, u, seen in after if m >= 205]
    assert gone, signalled
    minute, upper, seen = gone[0]
    assert minute == 205  # the minute the spike left the five-minute horizon
    assert seen == pytest.approx(100.0, abs=10.0)
    before = [u for m, u, _ in signalled if m < minute][-1]
    assert abs(upper - before) < 0.1 * before  # the bound alone would not have signalled


def test_a_standing_forecast_is_signalled_again_once_a_refresh_has_passed() -> None:
    """A forecast that stands still is signalled again every ``refresh`` seconds (default: the
    horizon), so a target whose replicas changed under it is brought back to what it needs; a
    move in between restarts the count."""
    det = ForecastDetector.from_params({"step": 60, "horizon": 600, "forecaster": "holt_winters"})
    assert det.refresh == 600.0
    minutes = []
    for minute in range(120):
        value = 100.0 if minute < 75 else 200.0
        if det.update(one(0, 60.0 * minute, value))[0] == 1.0:
            minutes.append(minute)
    first = minutes[0]
    steady = [m for m in minutes if m < 75]
    assert steady == list(range(first, 75, 10))  # the first forecast, then every 10 minutes
    assert 75 in minutes  # the level moved: at once
    later = [m for m in minutes if m > 75]
    assert all(b - a <= 10 for a, b in zip([75, *later], later, strict=False))
    custom = ForecastDetector.from_params({"step": 60, "horizon": 600, "refresh": 1800})
    hits = [m for m in range(120) if custom.update(one(0, 60.0 * m, 100.0))[0] == 1.0]
    assert [b - a for a, b in itertools.pairwise(hits)] == [30] * (len(hits) - 1)
    assert len(hits) >= 3


def test_a_version_4_checkpoint_signals_at_its_next_forecast() -> None:
    """A checkpoint from before ``refresh`` keeps what was signalled, and signals at the next
    forecast: after a restart the agent looks at the floor again, even if the forecast stands."""
    params = {"step": 60, "horizon": 300, "forecaster": "holt_winters", "refresh": 1e9}
    det = ForecastDetector.from_params(params)
    for minute in range(30):
        det.update(one(0, 60.0 * minute, 100.0))
    old = det.state_dict()
    old["version"] = 4
    del old["signalled_ts"]
    restored = ForecastDetector.from_params(params)
    restored.load_state(old)
    assert restored.signal_value(0) == det.signal_value(0)
    assert float(det.update(one(0, 1800.0, 100.0))[0]) == 0.0
    assert float(restored.update(one(0, 1800.0, 100.0))[0]) == 1.0
    assert float(restored.update(one(0, 1860.0, 100.0))[0]) == 0.0
