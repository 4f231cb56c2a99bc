"""What each learned detector catches on planted anomalies, and what it leaves alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import DetectorBank, DetectorSpec, SampleBatch, SeriesKey, SeriesRegistry, build_detector
from detectors.calibration import TailCalibrator
from detectors.registry import build_learned
from detectors.streaming import ArraySpec, SeriesState, p_to_score, rounds, score_to_p

STEP = 300.0  # five-minute samples
DAY = 288
ONSET = 9 * DAY + 37
ALARM = 0.5  # p <= 1e-5


def planted(kind: str, seed: int = 1, days: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A noisy daily curve with one planted anomaly starting at ONSET."""
    rng = np.random.default_rng(seed)
    n = days * DAY
    t = 1.7e9 + STEP * np.arange(n)
    x = 100 + 20 * np.sin(2 * np.pi * np.arange(n) / DAY) + rng.normal(0, 2, n)
    after = np.arange(n - ONSET, dtype=float)
    if kind == "spike":
        x[ONSET] += 60
    elif kind == "shift":
        x[ONSET:] += 15
    elif kind == "trend":  # the slope turns steep: +4 noise sd per sample
        x[ONSET:] += 8 * after
    elif kind == "drift":  # a slow move to a new level over two hours
        x[ONSET:] += np.minimum(after, 24) * 2.5
    elif kind == "erratic":  # two hours of noise five times as wide
        x[ONSET : ONSET + 24] += rng.normal(0, 10, 24)
    return t, x


def scores_of(name: str, kind: str, seed: int = 1) -> np.ndarray:
    t, x = planted(kind, seed)
    return build_learned(name, {}).update(SampleBatch.from_arrays(np.zeros(t.size, int), t, x))


CATCHES = {
    "ensemble": ["spike", "shift", "trend", "drift", "erratic"],
    "seasonal": ["spike", "shift", "trend", "drift", "erratic"],
    "ewma": ["spike", "trend"],
    "robust_z": ["spike", "trend"],
    "cusum": ["shift", "drift"],
    "pyod_iforest": ["spike", "trend"],
}

#: Known gaps (see the issue note): the calibrator's tail widens while a ramp is flagged, so
#: ramps and slow drifts peak below the alarm level, and the calibrated CUSUM is too weak; on a
#: strongly seasonal series, two hours of wider noise peak just below it in the ensemble (its
#: residual components share the test, a ten-thousandth of it by default; seasonal alone
#: reaches it). The default ensemble's novelty component flags the trend and the drift within the
#: hour when they leave the range, at its own probabilities (~5e-3 here), not at the alarm level
#: (test_the_default_flags_each_planted_change_above_its_clean_days). Tried: a run of widenings
#: as one event (a Markov chain of widenings) reaches the alarm level on the trend, but costs
#: 0.5 - 1 NAB points in false alarms on real series.
GAPS = {
    ("ensemble", "trend"),
    ("ensemble", "drift"),
    ("ensemble", "erratic"),  # p ~ 3e-5: seen at NAB's thresholds (~1e-2), not at the 1e-5 alarm
    ("seasonal", "trend"),
    ("seasonal", "drift"),
    ("ewma", "trend"),
    ("robust_z", "trend"),
    ("cusum", "shift"),
    ("cusum", "drift"),
    ("pyod_iforest", "trend"),
}


def _cases() -> list[object]:
    return [
        pytest.param(n, k, marks=pytest.mark.xfail(reason="known gap", strict=True))
        if (n, k) in GAPS
        else (n, k)
        for n, kinds in CATCHES.items()
        for k in kinds
    ]


@pytest.mark.parametrize(("name", "kind"), _cases())
def test_planted_anomaly_is_caught_within_an_hour(name: str, kind: str) -> None:
    scores = scores_of(name, kind)
    assert scores[ONSET : ONSET + 12].max() >= ALARM
    assert scores[3 * DAY : ONSET].max() < ALARM  # and nothing before it


@pytest.mark.parametrize("kind", ["spike", "shift", "trend", "drift"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_default_flags_each_planted_change_above_its_clean_days(kind: str, seed: int) -> None:
    # below the alarm level for the trend and the drift (GAPS), but at a level the clean days
    # before never reach: novelty's first sample off the range (p ~ 5e-3 on twelve days)
    scores = scores_of("ensemble", kind, seed)
    clean = scores_of("ensemble", "clean", seed)
    during = scores[ONSET : ONSET + 12].max()
    assert during >= 0.2
    assert scores[3 * DAY : ONSET].max() < during
    assert clean[3 * DAY :].max() < 0.2


@pytest.mark.parametrize("name", ["ensemble", "seasonal", "ewma", "robust_z", "cusum", "pyod_iforest"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_seasonal_series_is_not_flagged(name: str, seed: int) -> None:
    scores = scores_of(name, "clean", seed)
    assert scores[DAY:].max() < ALARM


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_burst_scores_a_series_turning_erratic_above_its_usual_noise(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6 * DAY
    t = 1.7e9 + STEP * np.arange(n)
    x = 50 + rng.normal(0, 2, n)  # a level with noise, no daily cycle
    onset = 4 * DAY + 11
    x[onset : onset + 36] += rng.normal(0, 10, 36)  # three hours of noise five times as wide
    scores = build_learned("burst", {}).update(SampleBatch.from_arrays(np.zeros(n, int), t, x))
    during = scores[onset : onset + 36].max()
    assert during >= 0.3  # p <= 1e-3
    assert scores[2 * DAY : onset].max() < during  # a threshold catches it without a false alarm
    assert scores[2 * DAY : onset].max() < 0.3


def test_burst_reports_its_short_term_spread() -> None:
    det = build_learned("burst", {})
    t = 1.7e9 + STEP * np.arange(400)
    x = np.r_[np.tile([10.0, 12.0], 190), np.tile([0.0, 22.0], 10)]  # the swings grow tenfold
    det.update(SampleBatch.from_arrays(np.zeros(t.size, int), t, x))
    details = det.signal_details(0)
    assert details["burst_mean"] == pytest.approx(11.0, abs=0.5)
    assert details["burst_spread"] > 2.0  # in baseline spreads; 1 while the series is as usual


def test_persistent_shift_is_relearned_not_alarmed_forever() -> None:
    scores = scores_of("ensemble", "shift")
    assert scores[ONSET : ONSET + 3].max() >= ALARM
    assert scores[ONSET + DAY // 2 :].max() < ALARM


#: The residual components alone, equally weighted: what the in-cluster configuration runs.
RESIDUAL: dict[str, object] = {"components": ["seasonal", "cusum", "burst"]}


def _outage_scores(params: dict[str, object]) -> np.ndarray:
    t, x = planted("clean")
    x[ONSET : ONSET + 6] = 0.0  # half an hour of zeros
    # what the detector learns, seen without the alert de-duplication of repeats (tested below)
    det = build_learned("ensemble", {**params, "refractory_hours": 0.0})
    return det.update(SampleBatch.from_arrays(np.zeros(t.size, int), t, x))


def test_an_outage_does_not_become_the_new_normal() -> None:
    scores = _outage_scores(RESIDUAL)
    assert scores[ONSET : ONSET + 4].min() >= ALARM  # flagged, not learned as normal
    assert scores[ONSET + 12 : ONSET + DAY].max() < ALARM  # back to normal without a relapse


def test_the_default_learns_an_outage_as_the_residual_components_do_and_reports_it_at_their_share() -> None:
    residual, default = _outage_scores(RESIDUAL), _outage_scores({})
    assert default[ONSET] >= ALARM
    # what is flagged (and so not learned) is decided with equal shares, so the residual
    # components learn exactly as they do alone; their share of the default's test is
    # 1 / 10003 instead of 1 / 3, so the same probabilities score log10(10003 / 3) / 10 lower
    shift = math.log10(10003 / 3) / 10
    assert default[ONSET + 1 : ONSET + 5] == pytest.approx(residual[ONSET + 1 : ONSET + 5] - shift, abs=1e-9)
    # the sixth sample of zeros takes the recent level below any level seen since the lattice
    # was set (a day in): novelty reports it at its own, larger share; the default's p is the
    # smallest of its components', so it never scores below the residual components' share
    assert default[ONSET + 5] > residual[ONSET + 5] - shift + 0.01
    assert default[ONSET + 12 : ONSET + DAY].max() < ALARM


def test_an_alert_episode_is_reported_once_per_refractory_period() -> None:
    t, x = planted("clean")
    x[ONSET : ONSET + 6] = 0.0  # the same outage, reported with the default de-duplication
    det = build_learned("ensemble", {})
    assert det.params()["refractory_hours"] == 6.0
    scores = det.update(SampleBatch.from_arrays(np.zeros(t.size, int), t, x))
    undamped = build_learned("ensemble", {"refractory_hours": 0.0}).update(
        SampleBatch.from_arrays(np.zeros(t.size, int), t, x)
    )
    assert scores[ONSET] == undamped[ONSET] >= ALARM  # the first sample of the episode passes
    repeats = slice(ONSET + 1, ONSET + 6)
    np.testing.assert_allclose(scores[repeats], 0.5 * undamped[repeats])  # repeats are damped
    assert scores[ONSET + 1 : ONSET + 6].max() < ALARM


def test_episode_stage_passes_records_and_renotifies_after_the_refractory_period() -> None:
    from detectors.episodes import EpisodeStage

    state = SeriesState([ArraySpec("last_ts", np.float64, -np.inf)])
    stage = EpisodeStage(refractory_hours=1.0, damping=0.5, warmup_hours=0.0)
    state.specs.update({s.name: s for s in stage.array_specs()})
    state.arrays.update({s.name: np.full(0, s.fill, s.dtype) for s in stage.array_specs()})
    stage.bind(state)
    state.ensure(1)
    ids = np.array([0])
    got = [
        float(stage.apply(ids, np.array([ts]), np.array([score]))[0])
        for ts, score in [(0, 0.6), (600, 0.6), (1200, 0.4), (1800, 0.8), (3600, 0.7), (5400, 0.7)]
    ]
    # first passes; a repeat and a lower score are damped; a more extreme one passes and becomes
    # the peak; an hour after that peak the episode is over and the next high score passes again
    assert got == pytest.approx([0.6, 0.3, 0.2, 0.8, 0.35, 0.7])


def test_scores_ramp_up_over_the_warmup_hours() -> None:
    from detectors.episodes import EpisodeStage

    state = SeriesState([ArraySpec("last_ts", np.float64, -np.inf)])
    stage = EpisodeStage(refractory_hours=0.0, damping=0.5, warmup_hours=2.0)
    state.specs.update({s.name: s for s in stage.array_specs()})
    state.arrays.update({s.name: np.full(0, s.fill, s.dtype) for s in stage.array_specs()})
    stage.bind(state)
    state.ensure(2)
    out = [
        stage.apply(np.array([0, 1]), np.array([ts, ts + 9e3]), np.ones(2)).tolist() for ts in (0.0, 3600.0)
    ]
    assert out == [[0.0, 0.0], [0.5, 0.5]]
    assert stage.apply(np.array([0]), np.array([7200.0]), np.ones(1)).tolist() == [1.0]


def test_weekly_profile_learns_a_busy_weekday() -> None:
    # every Monday 09:00-12:00 UTC carries +30; four weeks to learn, then the fifth is normal
    n = 35 * DAY
    t = 1_700_438_400.0 + STEP * np.arange(n)  # 2023-11-20, a Monday, 00:00 UTC
    rng = np.random.default_rng(0)
    x = 50 + rng.normal(0, 1, n)
    dow = ((t // 86_400 + 3) % 7).astype(int)  # 0 = Monday
    hour = (t % 86_400) // 3600
    x[(dow == 0) & (hour >= 9) & (hour < 12)] += 30
    weekly = build_learned("seasonal", {"weekly": True})
    daily = build_learned("seasonal", {})
    batch = SampleBatch.from_arrays(np.zeros(n, int), t, x)
    last_monday = slice(28 * DAY, 29 * DAY)
    assert weekly.update(batch)[last_monday].max() < ALARM
    assert daily.update(batch)[last_monday].max() >= ALARM


def test_rounds_hold_each_series_once_in_time_order() -> None:
    series = np.array([1, 0, 1, 1, 0, 2])
    ts = np.array([3.0, 1.0, 1.0, 2.0, 2.0, 9.0])
    out = rounds(series, ts, np.arange(6), 3)
    assert [r.tolist() for r in out] == [[1, 2, 5], [4, 3], [0]]
    assert [r.tolist() for r in rounds(np.array([2, 0]), np.array([1.0, 1.0]), np.arange(2), 3)] == [[0, 1]]


def test_scores_are_log_tail_probabilities() -> None:
    assert p_to_score(np.array([1.0, 1e-5, 1e-10, 1e-30, 0.0])).tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert score_to_p(0.3) == pytest.approx(1e-3)


def test_calibrator_makes_one_threshold_mean_the_same_on_different_scales() -> None:
    # two series whose raw scores differ by a factor of 100 get the same tail probabilities
    rng = np.random.default_rng(0)
    state = SeriesState([ArraySpec("x", np.float32, 0.0)])
    cal = TailCalibrator("c_", tail=0.05, rate=0.002, prior_q=2.0, prior_e=1.0, warmup=10)
    state.specs.update({s.name: s for s in cal.array_specs()})
    state.arrays.update({s.name: np.full(0, s.fill, s.dtype) for s in cal.array_specs()})
    cal.bind(state)
    state.ensure(2)
    ids = np.array([0, 1])
    exceed = np.zeros(2)
    for i in range(6000):
        z = np.abs(rng.normal(size=1))[0]
        raw = np.array([z, 100 * z])
        p = cal.p_value(ids, raw)
        if i >= 1000:  # after the prior has faded
            exceed += p <= 0.01
        cal.learn(ids, raw, p <= 1e-3, 1e-3)
    rates = exceed / 5000
    assert rates[0] == pytest.approx(rates[1], abs=0.003)
    assert 0.003 < rates[0] < 0.03  # p <= 1% happens about 1% of the time


def test_a_signal_of_a_learned_detector_carries_expected_band_and_tail_probability() -> None:
    rng = np.random.default_rng(3)
    n = 3 * DAY
    t = 1.7e9 + STEP * np.arange(n)
    x = 5.0 + rng.normal(0, 0.5, n)  # a level of 5 with noise of 0.5
    x[-1] = 40.0
    series = SeriesRegistry()
    key = SeriesKey.of("latency", {"deployment": "web"})
    ids = np.full(n, series.id_for(key))
    bank = DetectorBank(series, [DetectorSpec(build_detector("ewma", {}, series), 0.3)])
    bank.process(SampleBatch.from_arrays(ids[:-1], t[:-1], x[:-1]))
    (signal,) = bank.process(SampleBatch.from_arrays(ids[-1:], t[-1:], x[-1:]))
    details = signal.details
    # the baseline learned a clipped tenth of the spike at most: still about 5, spread about 0.5
    assert details["expected"] == pytest.approx(5.0, abs=0.5)
    low, high = details["band"]
    assert high - details["expected"] == pytest.approx(details["expected"] - low)
    assert (high - low) / 6 == pytest.approx(0.5, rel=0.4)  # three spreads either side
    assert details["p_value"] == pytest.approx(score_to_p(signal.score))
    assert details["p_value"] < 1e-3
    assert signal.value == 40.0


def test_the_default_expects_the_value_for_the_time_of_day() -> None:
    rng = np.random.default_rng(1)
    n = 8 * DAY
    t = 1.7e9 + STEP * np.arange(n)
    x = 100 + 50 * np.sin(2 * np.pi * t / 86400) + rng.normal(0, 3, n)  # a daily cycle
    usual = 100 + 50 * np.sin(2 * np.pi * t[-1] / 86400)  # about 77 at the last sample's time
    x[-1] = usual + 60
    series = SeriesRegistry()
    ids = np.full(n, series.id_for(SeriesKey.of("rps", {"deployment": "web"})))
    bank = DetectorBank(series, [DetectorSpec(build_detector("ensemble", {}, series), 0.3)])
    bank.process(SampleBatch.from_arrays(ids[:-1], t[:-1], x[:-1]))
    (signal,) = bank.process(SampleBatch.from_arrays(ids[-1:], t[-1:], x[-1:]))
    # the seasonal profile's value at that time of day, not the daily mean of 100
    assert signal.details["expected"] == pytest.approx(usual, abs=5.0)
    low, high = signal.details["band"]
    assert low < usual < high < x[-1]
