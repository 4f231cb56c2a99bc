"""Drift detection: PSI and KS between a reference and a current window, and the degradation test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats  # type: ignore[import-untyped]  # no stubs installed

from detectors import (
    DetectorBank,
    DetectorError,
    DetectorSpec,
    SampleBatch,
    SeriesKey,
    SeriesRegistry,
    SignalKind,
    build_detector,
)
from detectors.drift import DriftDetector, ks_two_sample, proportion_z_test, psi


def _stream(det: DriftDetector, values: np.ndarray, *, start: float = 0.0, chunk: int = 250) -> np.ndarray:
    """Feed a (series x samples) array in time order, ``chunk`` samples per series per batch."""
    n_series, n = values.shape
    scores = []
    for lo in range(0, n, chunk):
        block = values[:, lo : lo + chunk]
        width = block.shape[1]
        sid = np.repeat(np.arange(n_series), width)
        ts = np.tile(start + np.arange(lo, lo + width, dtype=float) * 60.0, n_series)
        scores.append(det.update(SampleBatch.from_arrays(sid, ts, block.ravel())).reshape(n_series, width))
    return np.concatenate(scores, axis=1)


def _flag_rate(det: DriftDetector, ids: np.ndarray) -> float:
    return float(np.mean([det.signal_details(int(i))["p_value"] < det.alpha for i in ids]))


# ---------------------------------------------------------------- the statistics


def test_psi_matches_a_hand_computed_value() -> None:
    # sum (c - r) ln(c / r) for r = 1/4 each, c = .1 .2 .3 .4
    expected = (
        (0.1 - 0.25) * math.log(0.4)
        + (0.2 - 0.25) * math.log(0.8)
        + (0.3 - 0.25) * math.log(1.2)
        + (0.4 - 0.25) * math.log(1.6)
    )
    assert expected == pytest.approx(0.228218, abs=1e-6)
    assert float(psi([0.25] * 4, [0.1, 0.2, 0.3, 0.4])) == pytest.approx(expected, rel=1e-12)


def test_detector_psi_uses_reference_quartiles_as_bins() -> None:
    det = DriftDetector.from_params({"reference_size": 12, "min_reference": 12, "window": 10, "bins": 4})
    # reference 1..12: quartile edges 3.75, 6.5, 9.25 -> bins {1-3}, {4-6}, {7-9}, {10-12}, 1/4 each
    reference = np.arange(1.0, 13.0)
    current = np.array([2.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 12.0])  # .1 .2 .3 .4
    det.update(SampleBatch.from_arrays([0] * 22, np.arange(22.0), np.r_[reference, current]))
    details = det.signal_details(0)
    assert details["psi"] == pytest.approx(float(psi([0.25] * 4, [0.1, 0.2, 0.3, 0.4])), rel=1e-12)
    expected = stats.ks_2samp(reference, current, method="asymp")
    assert details["ks_statistic"] == pytest.approx(expected.statistic)
    assert details["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)


def test_ks_matches_scipy_with_ties_and_padded_references() -> None:
    rng = np.random.default_rng(3)
    ref = np.sort(np.round(rng.normal(size=(5, 400)), 1), axis=1)  # rounded: many ties
    counts = np.array([400, 350, 100, 57, 400])
    cur = np.round(rng.normal(0.2, 1.1, size=(5, 200)), 1)
    d, p = ks_two_sample(ref, counts, cur)
    for i in range(5):
        expected = stats.ks_2samp(ref[i, : counts[i]], cur[i], method="asymp")
        assert d[i] == pytest.approx(expected.statistic, abs=1e-12)
        assert p[i] == pytest.approx(expected.pvalue, rel=1e-9)


def test_proportion_z_test_against_hand_computation() -> None:
    # 50 errors in 1000, then 50 in 500: pooled 100/1500
    pooled = 100 / 1500
    se = math.sqrt(pooled * (1 - pooled) * (1 / 1000 + 1 / 500))
    z_expected = (0.10 - 0.05) / se
    z, p = proportion_z_test(np.array([0.05]), np.array([1000.0]), np.array([0.10]), np.array([500.0]))
    assert z[0] == pytest.approx(z_expected, rel=1e-12)
    assert p[0] == pytest.approx(0.5 * math.erfc(z_expected / math.sqrt(2)), rel=1e-9)


# ---------------------------------------------------------------- detection and false alarms


def test_shifted_distribution_is_flagged_and_raises_a_drift_signal() -> None:
    rng = np.random.default_rng(0)
    reg = SeriesRegistry()
    a, b = (
        reg.id_for(SeriesKey.of("score", {"model": "a"})),
        reg.id_for(SeriesKey.of("score", {"model": "b"})),
    )
    det = DriftDetector.from_params({"reference_size": 1000, "window": 500, "alpha": 0.01})
    bank = DetectorBank(reg, [DetectorSpec(det)])
    ref = rng.normal(size=(2, 1000))
    bank.process(SampleBatch.from_arrays(np.repeat([a, b], 1000), np.tile(np.arange(1000.0), 2), ref.ravel()))
    cur = np.vstack([rng.normal(0.5, 1.0, 500), rng.normal(0.0, 1.0, 500)])  # a shifts by half a sd
    signals = bank.process(
        SampleBatch.from_arrays(np.repeat([a, b], 500), np.tile(1000.0 + np.arange(500.0), 2), cur.ravel())
    )
    assert [s.series for s in signals] == [reg.key(a)]
    signal = signals[0]
    assert signal.kind is SignalKind.DRIFT
    assert signal.score >= 0.5
    assert signal.details["test"] in {"ks", "psi"}
    assert signal.details["p_value"] < 0.01
    assert signal.details["psi"] > 0.1
    assert det.signal_details(b)["p_value"] > 0.01


def test_false_positive_rate_stays_near_alpha_and_power_is_high() -> None:
    rng = np.random.default_rng(12345)
    n_series, alpha = 600, 0.05
    det = DriftDetector.from_params({"reference_size": 500, "window": 300, "alpha": alpha, "tests": ["ks"]})
    same = rng.normal(size=(n_series, 800))
    scores = _stream(det, same, chunk=800)
    rate = _flag_rate(det, np.arange(n_series))
    # binomial(600, 0.05): sd 0.9 percentage points; the asymptotic KS p-value is a little conservative
    assert 0.02 <= rate <= 0.08
    # score >= 0.5 is exactly "significant at alpha"
    assert np.mean(scores[:, -1] >= 0.5) == pytest.approx(rate)

    shifted = DriftDetector.from_params(
        {"reference_size": 500, "window": 300, "alpha": alpha, "tests": ["ks"]}
    )
    data = rng.normal(size=(200, 800))
    data[:, 500:] += 0.4
    _stream(shifted, data, chunk=800)
    assert _flag_rate(shifted, np.arange(200)) > 0.95


def test_psi_alone_ignores_sampling_noise_but_flags_a_real_shift() -> None:
    rng = np.random.default_rng(7)
    det = DriftDetector.from_params({"reference_size": 1000, "window": 500, "tests": ["psi"]})
    data = rng.normal(size=(100, 1500))
    data[50:, 1000:] = rng.normal(1.0, 1.0, size=(50, 500))
    scores = _stream(det, data)
    assert np.all(scores[:50, -1] < 0.5)
    assert np.all(scores[50:, -1] >= 0.5)
    assert det.signal_details(60)["test"] == "psi"


def test_reference_period_is_used_when_configured() -> None:
    det = DriftDetector.from_params(
        {
            "reference_start": 100.0,
            "reference_end": 200.0,
            "reference_size": 500,
            "window": 20,
            "min_reference": 10,
        }
    )
    rng = np.random.default_rng(1)
    ts = np.arange(0.0, 400.0)
    values = np.where((ts >= 100) & (ts < 200), rng.normal(size=ts.size), rng.normal(3.0, 1.0, ts.size))
    scores = det.update(SampleBatch.from_arrays(np.zeros(ts.size, np.int64), ts, values))
    assert det.unreferenced == 100  # samples before the period
    assert int(det.state_dict()["ref_n"][0]) == 100
    assert np.all(scores[ts < 200] == 0.0)
    assert scores[-1] == 1.0
    # a series first seen after the period has no reference: counted, never scored
    late = det.update(SampleBatch.from_arrays([1] * 5, [500.0, 501, 502, 503, 504], [1.0] * 5))
    assert late.tolist() == [0.0] * 5
    assert det.unreferenced == 105


def test_scores_stay_causal_within_a_batch() -> None:
    rng = np.random.default_rng(2)
    det = DriftDetector.from_params({"reference_size": 100, "window": 50, "tests": ["ks"]})
    det.update(SampleBatch.from_arrays([0] * 100, np.arange(100.0), rng.normal(size=100)))
    first = det.update(SampleBatch.from_arrays([0] * 50, 100 + np.arange(50.0), rng.normal(5.0, 1.0, 50)))
    assert first[:-1].tolist() == [0.0] * 49  # earlier samples carry the previous (absent) result
    assert first[-1] == 1.0
    again = det.update(SampleBatch.from_arrays([0] * 3, [200.0, 201, 202], [5.0, 5.0, 5.0]))
    assert again.tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------- degradation


def _outcomes(rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
    return (rng.random(n) < rate).astype(float)


def test_error_rate_increase_is_flagged_and_a_decrease_is_not() -> None:
    rng = np.random.default_rng(5)
    det = DriftDetector.from_params(
        {"test": "error_rate", "reference_size": 2000, "window": 1000, "alpha": 0.01}
    )
    worse = np.r_[_outcomes(rng, 0.05, 2000), _outcomes(rng, 0.10, 1000)]
    better = np.r_[_outcomes(rng, 0.10, 2000), _outcomes(rng, 0.05, 1000)]
    scores = _stream(det, np.vstack([worse, better]), chunk=3000)
    assert scores[0, -1] >= 0.5
    assert scores[1, -1] < 0.01  # p near 1
    details = det.signal_details(0)
    assert details["test"] == "error_rate"
    z, p = proportion_z_test(
        np.array([worse[:2000].mean()]),
        np.array([2000.0]),
        np.array([worse[2000:].mean()]),
        np.array([1000.0]),
    )
    assert details["z"] == pytest.approx(float(z[0]))
    assert details["p_value"] == pytest.approx(float(p[0]))
    assert details["p_value"] < 0.01


def test_accuracy_drop_is_flagged() -> None:
    rng = np.random.default_rng(6)
    det = DriftDetector.from_params(
        {"test": "accuracy", "reference_size": 1000, "window": 500, "alpha": 0.01}
    )
    drop = np.r_[_outcomes(rng, 0.9, 1000), _outcomes(rng, 0.8, 500)]
    rise = np.r_[_outcomes(rng, 0.8, 1000), _outcomes(rng, 0.9, 500)]
    scores = _stream(det, np.vstack([drop, rise]), chunk=1500)
    assert scores[0, -1] >= 0.5
    assert scores[1, -1] < 0.5
    assert det.signal_details(0)["current_mean"] < det.signal_details(0)["reference_mean"]


def test_degradation_false_positive_rate_near_alpha() -> None:
    rng = np.random.default_rng(11)
    alpha = 0.05
    det = DriftDetector.from_params(
        {"test": "error_rate", "reference_size": 1000, "window": 500, "alpha": alpha}
    )
    data = (rng.random((600, 1500)) < 0.1).astype(float)
    _stream(det, data, chunk=1500)
    assert 0.02 <= _flag_rate(det, np.arange(600)) <= 0.08


def test_outcomes_outside_unit_interval_are_counted() -> None:
    det = DriftDetector.from_params(
        {"test": "error_rate", "reference_size": 10, "window": 10, "min_reference": 10}
    )
    scores = det.update(SampleBatch.from_arrays([0] * 4, [1.0, 2, 3, 4], [0.0, 2.0, -1.0, 1.0]))
    assert scores.tolist() == [0.0] * 4
    assert det.invalid == 2


# ---------------------------------------------------------------- robustness, parameters, state


def test_bad_samples_are_counted_and_scores_stay_in_range() -> None:
    rng = np.random.default_rng(9)
    det = DriftDetector.from_params({"reference_size": 20, "window": 10, "min_reference": 20})
    values = rng.normal(size=60)
    values[[3, 30]] = np.nan
    values[40] = np.inf
    ts = np.arange(60.0)
    ts[50] = 10.0  # older than the series' newest
    scores = det.update(SampleBatch.from_arrays([0] * 60, ts, values))
    scores2 = det.update(SampleBatch.from_arrays([0, 0, 1], [59.0, 70.0, 5.0], [1.0, 1e300, 1.0]))  # dup ts
    assert det.invalid == 3
    assert det.out_of_order == 2
    for s in (scores, scores2):
        assert np.all(np.isfinite(s))
        assert np.all((s >= 0) & (s <= 1))
    # a constant reference and current: no drift, no NaN
    const = DriftDetector.from_params({"reference_size": 20, "window": 10, "min_reference": 20})
    out = const.update(SampleBatch.from_arrays([0] * 30, np.arange(30.0), np.ones(30)))
    assert out.tolist() == [0.0] * 30


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpah": 0.1}, "unknown parameter"),
        ({"alpha": 0.0}, "drift.alpha"),
        ({"alpha": 0.9}, "drift.alpha"),
        ({"window": 5}, "drift.window"),
        ({"reference_size": 10.5}, "drift.reference_size"),
        ({"bins": 1}, "drift.bins"),
        ({"tests": ["ks", "chi2"]}, "drift.tests"),
        ({"tests": []}, "drift.tests"),
        ({"test": "error_rate", "tests": ["ks"]}, "drift.tests"),
        ({"test": "mse"}, "drift.test"),
        ({"reference_start": 10.0, "reference_end": 5.0}, "drift.reference_end"),
        ({"psi_threshold": -1}, "drift.psi_threshold"),
        ({"min_reference": 5000}, "drift.min_reference"),
    ],
)
def test_bad_parameters_are_named(params: dict[str, object], message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        DriftDetector.from_params(params)


def test_state_round_trip_gives_identical_scores() -> None:
    rng = np.random.default_rng(4)
    params = {"reference_size": 200, "window": 100}
    det = DriftDetector.from_params(params)
    data = rng.normal(size=(3, 400))
    _stream(det, data[:, :250], chunk=50)
    clone = DriftDetector.from_params(params)
    clone.load_state(det.state_dict())
    tail = data[:, 250:] + np.linspace(0, 2, 150)
    a = _stream(det, tail, start=250 * 60.0, chunk=30)
    b = _stream(clone, tail, start=250 * 60.0, chunk=30)
    assert np.array_equal(a, b)
    assert a[:, -1].max() > 0.5
    assert det.signal_details(1) == clone.signal_details(1)
    with pytest.raises(DetectorError, match="window"):
        DriftDetector.from_params({"reference_size": 200, "window": 99}).load_state(det.state_dict())
    with pytest.raises(DetectorError, match="kind"):
        det.load_state({"kind": "holt_winters", "version": 1})


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=200),
    st.sampled_from(["distribution", "error_rate"]),
)
def test_scores_stay_in_unit_interval_on_arbitrary_floats(values: list[float], test: str) -> None:
    det = DriftDetector.from_params({"test": test, "reference_size": 20, "window": 10, "min_reference": 10})
    arr = np.asarray(values)
    scores = np.concatenate(
        [
            det.update(SampleBatch.from_arrays(np.zeros(part.size, np.int64), ts, part))
            for part, ts in zip(
                np.array_split(arr, 3), np.array_split(np.arange(arr.size, dtype=float), 3), strict=True
            )
            if part.size
        ]
    )
    assert scores.shape == arr.shape
    assert np.all(np.isfinite(scores))
    assert np.all((scores >= 0) & (scores <= 1))


def test_degradation_without_variance_is_decided_not_nan() -> None:
    det = DriftDetector.from_params(
        {"test": "error_rate", "reference_size": 10, "window": 10, "min_reference": 10}
    )
    clean, broken = np.zeros(20), np.r_[np.zeros(10), np.ones(10)]
    scores = _stream(det, np.vstack([clean, broken]), chunk=20)
    assert scores[0, -1] < 0.5
    assert scores[1, -1] == 1.0
    assert det.signal_details(0)["z"] == 0.0
    assert det.signal_details(0)["p_value"] == 0.5


def test_registered_in_the_detector_bank_by_name() -> None:
    det = build_detector("drift", {"window": 50}, SeriesRegistry())
    assert isinstance(det, DriftDetector)
    assert det.signal_kind is SignalKind.DRIFT
    assert det.window == 50
    with pytest.raises(DetectorError, match="drift: unknown parameter"):
        build_detector("drift", {"windows": 50}, SeriesRegistry())
