"""The novelty component: a value where its series has never been, as a probability."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import DetectorError, SampleBatch
from detectors.calibration import CalibratedDetector, Component
from detectors.registry import build_learned
from detectors.streaming import ArraySpec
from tests.unit.test_detectors_learned import DAY, ONSET, planted

#: Novelty's probabilities are estimates from the samples seen (never below 1 / (N + 2)); on
#: twelve days of five-minute samples a planted excursion reaches p ~ 5e-3.
SEPARATES = 0.2  # p <= 1e-2

#: No episode de-duplication or warm-up scaling: the component's own probabilities.
BARE = {"refractory_hours": 0.0, "warmup_hours": 0.0}


def _scores(values: list[float] | np.ndarray, params: dict[str, object], step: float = 60.0) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    t = 1.7e9 + step * np.arange(x.size)
    det = build_learned("novelty", {**BARE, **params})
    return det.update(SampleBatch.from_arrays(np.zeros(x.size, int), t, x))


def test_probabilities_follow_the_rule_of_succession_and_good_turing_by_hand() -> None:
    # four samples set the lattice: range [0, 4] in four levels of width 1 (bin k: [k, k + 1))
    lattice = [0.0, 4.0, 1.0, 3.0]
    values = [*lattice, *[0.5] * 8, 1.2, 3.5, *[1.1, 3.4] * 5, 2.5, 2.6, -3.0]
    # the level lattice given a billionth of the test: the values' lattice alone (p / (1 - 1e-9))
    params: dict[str, object] = {
        "levels": 4,
        "range_samples": 4,
        "range_hours": 0.0,
        "gap_weight": 0.25,
        "level_weight": 1e-9,
    }
    got = _scores(values, params)

    def beyond(widened: int, total: int) -> float:  # rule of succession, 3/4 of the test
        return -math.log10((widened + 1) / (total + 2) / 0.75) / 10

    def gap(once: int, total: int) -> float:  # Good-Turing, 1/4 of the test
        return -math.log10((once + 1) / (total + 2) / 0.25) / 10

    expected = [
        *[0.0] * 4,  # setting the lattice
        beyond(0, 0),  # 0.5 -> bin 0: the first visit is past everything visited
        *[0.0] * 7,  # bin 0 again: seen (bin 0 seen twice: no bin seen once)
        beyond(1, 8),  # 1.2 -> bin 1 widens the visited bins [0, 0]
        beyond(2, 9),  # 3.5 -> bin 3 widens [0, 1]
        *[0.0] * 10,  # bins 1 and 3 again: seen (now twice each)
        gap(0, 20),  # 2.5 -> bin 2: inside [0, 3], never visited; no bin seen once
        0.0,  # 2.6 -> bin 2: seen
        beyond(3, 22),  # -3.0 -> bin -3 widens [0, 3] downwards
    ]
    assert got.tolist() == pytest.approx(expected, abs=1e-9)


def test_bins_double_in_width_when_the_visited_range_outgrows_max_span() -> None:
    det = build_learned(
        "novelty",
        {
            **BARE,
            "levels": 4,
            "range_samples": 4,
            "range_hours": 0.0,
            "gap_weight": 0.25,
            "max_span": 8,
            "level_weight": 1e-9,
        },
    )
    values = [0.0, 4.0, 1.0, 3.0, 0.5, 1.5, 2.5, 3.5, 8.5, 9.9, 7.0]
    x = np.asarray(values)
    scores = det.update(SampleBatch.from_arrays(np.zeros(x.size, int), 1.7e9 + 60.0 * np.arange(x.size), x))
    details = det.signal_details(0)
    # 8.5 fell in bin 8: bins 0 - 8 are nine, past eight, so pairs merged: bins of width 2, with
    # bins 0 and 1 (0 - 4, each visited twice now) and 4 (8.5, then 9.9); then 7.0 in bin 3
    assert details["novelty_bin_width"] == 2.0
    assert details["novelty_bins_seen"] == 4
    assert scores[9] == 0.0  # 9.9: bin 4 of width 2, seen
    # 7.0: bin 3, a gap; no bin seen once (bin 4 twice now) among six samples since the lattice
    assert scores[10] == pytest.approx(-math.log10((0 + 1) / (6 + 2) / 0.25) / 10, abs=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_level_shift_inside_the_noise_is_found_by_the_level_lattice(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, onset = 20_000, 18_000
    x = 100.0 + rng.uniform(-10.0, 10.0, n)  # the values span [90, 110] from the start
    x[onset:] = 108.0 + rng.uniform(-2.0, 2.0, n - onset)  # still inside it, but the level moved
    scores = _scores(x, {"range_hours": 0.0})
    # the level lattice holds a tenth of the test: p >= 10 (E + 1) / (N + 2) (~6e-3 here); the
    # noise's own level sets records now and then (ever rarer), below the shift's
    during = scores[onset : onset + 60].max()
    assert during >= 0.15
    assert scores[6000:onset].max() < during  # a threshold flags the shift alone
    # the values' lattice alone does not see it: nothing of the values is new
    values_only = _scores(x, {"range_hours": 0.0, "level_weight": 1e-9})
    assert values_only[onset:].max() < 0.05


def test_max_span_must_fit_in_the_bins() -> None:
    with pytest.raises(DetectorError, match=r"max_span \(64\) must not exceed bins \(32\)"):
        build_learned("novelty", {"bins": 32, "max_span": 64})


@pytest.mark.parametrize("kind", ["spike", "shift", "trend", "drift"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_series_leaving_its_range_is_flagged_and_nothing_before(kind: str, seed: int) -> None:
    t, x = planted(kind, seed)
    scores = build_learned("novelty", {}).update(SampleBatch.from_arrays(np.zeros(t.size, int), t, x))
    assert scores[ONSET : ONSET + 12].max() >= SEPARATES
    assert scores[3 * DAY : ONSET].max() < SEPARATES


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_clean_seasonal_series_settles_into_its_range(seed: int) -> None:
    t, x = planted("clean", seed)
    scores = build_learned("novelty", {}).update(SampleBatch.from_arrays(np.zeros(t.size, int), t, x))
    assert scores[3 * DAY :].max() < SEPARATES


def test_a_new_level_is_reported_when_it_happens_not_while_it_lasts() -> None:
    t, x = planted("shift")
    scores = build_learned("novelty", {}).update(SampleBatch.from_arrays(np.zeros(t.size, int), t, x))
    assert scores[ONSET : ONSET + 12].max() >= SEPARATES
    assert scores[ONSET + DAY // 2 :].max() < SEPARATES  # learned on the first visits


def test_a_gap_inside_the_range_is_new_at_the_gap_share_of_the_test() -> None:
    rng = np.random.default_rng(4)
    n = 2000
    square = np.where((np.arange(n) // 50) % 2 == 0, 0.0, 10.0) + rng.uniform(-0.4, 0.4, n)
    square[1500] = 5.0  # never between the two levels before
    scores = _scores(square, {"range_hours": 0.0})
    assert scores[1500] >= SEPARATES
    assert scores[400:1500].max() < SEPARATES
    # with a smaller share of the test a gap is less remarkable: p ten times larger
    smaller = _scores(square, {"range_hours": 0.0, "gap_weight": 0.01})
    assert smaller[1500] == pytest.approx(scores[1500] - 0.1, abs=1e-12)


def test_the_lattice_waits_for_its_samples_and_its_hours() -> None:
    x = np.r_[np.full(300, 5.0) + np.tile([0.0, 1.0], 150), [50.0]]
    # five-minute samples: 150 samples take 12.5 h, past the 6 h floor; the jump is new
    assert _scores(x, {}, step=300.0)[-1] > 0.0
    # 15 s samples: 300 samples are 75 minutes, short of 6 h: no lattice yet, nothing is new
    assert _scores(x, {}, step=15.0).max() == 0.0
    assert _scores(x, {"range_hours": 1.0}, step=15.0)[-1] > 0.0


def test_a_constant_range_gets_a_lattice_and_huge_values_stay_finite() -> None:
    x = np.r_[np.full(200, 3.0), [3.02, 1e12, -1e12, 3.0]]
    scores = _scores(x, {"range_hours": 0.0})
    assert np.isfinite(scores).all()
    # a tenth of 3 across 8 levels (0.0375 each): 3.02 is in the bin of 3, the huge values are new
    assert scores[200] == 0.0
    assert scores[201] > 0.0
    assert scores[202] > 0.0
    assert scores[203] == 0.0


def test_signal_details_name_the_range() -> None:
    det = build_learned("novelty", {"range_hours": 0.0})
    x = np.r_[np.linspace(0.0, 8.0, 150), [4.0, 12.0]]
    det.update(SampleBatch.from_arrays(np.zeros(x.size, int), 1.7e9 + 60.0 * np.arange(x.size), x))
    details = det.signal_details(0)
    assert details["novelty_range"] == [0.0, 8.0]
    assert details["novelty_bins_seen"] == 2
    assert details["novelty_samples"] == 2.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"levels": 0}, "novelty.levels"),
        ({"range_samples": 0}, "novelty.range_samples"),
        ({"range_hours": -1.0}, "novelty.range_hours"),
        ({"bins": 0}, "novelty.bins"),
        ({"gap_weight": 1.0}, "novelty.gap_weight"),
        ({"gap_weight": 0.0}, "novelty.gap_weight"),
        ({"max_span": 1}, "novelty.max_span"),
        ({"level_alpha": 0.0}, "novelty.level_alpha"),
        ({"level_weight": 1.0}, "novelty.level_weight"),
        ({"levles": 8}, "levles"),
    ],
)
def test_parameters_are_validated_with_their_names(params: dict[str, object], message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        build_learned("novelty", params)


# ---------------------------------------------------------------- weighted combination


class _FixedP(Component):
    """A self-calibrated component that reports a fixed probability for every sample."""

    self_calibrated = True

    def __init__(self, prefix: str, p: float) -> None:
        self.prefix = prefix
        self.p = p

    def array_specs(self) -> list[ArraySpec]:
        return []

    def raw(self, ids: np.ndarray, ts: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.full(ids.size, self.p)

    def learn(self, ids: np.ndarray, ts: np.ndarray, values: np.ndarray, flagged: np.ndarray) -> None:
        pass


class _Pair(CalibratedDetector):
    kind = "pair"


@pytest.mark.parametrize(
    ("weights", "expected_p"),
    [
        (None, 2 * 1e-4),  # equal weights: the smallest p times the number of components
        ([1.0, 1.0], 2 * 1e-4),
        ([1.0, 3.0], min(1e-3 * 4 / 1, 1e-4 * 4 / 3)),
        ([99.0, 1.0], min(1e-3 * 100 / 99, 1e-4 * 100)),
    ],
)
def test_weighted_bonferroni_combination(weights: list[float] | None, expected_p: float) -> None:
    params = {
        "tail": 0.03,
        "calibration_rate": 0.002,
        "warmup": 0,
        "flag_score": 0.3,
        **BARE,
        "damping": 0.5,
    }
    det = _Pair([_FixedP("a_", 1e-3), _FixedP("b_", 1e-4)], params, weights=weights)
    scores = det.update(SampleBatch.from_arrays([0, 0], [1.7e9, 1.7e9 + 60], [1.0, 2.0]))
    assert scores.tolist() == pytest.approx([-math.log10(expected_p) / 10] * 2, abs=1e-12)


@pytest.mark.parametrize("weights", [[1.0], [1.0, 0.0], [1.0, -2.0], [1.0, float("nan")]])
def test_weights_must_be_one_positive_number_per_component(weights: list[float]) -> None:
    params = {"tail": 0.03, "calibration_rate": 0.002, "warmup": 0, "flag_score": 0.3, **BARE, "damping": 0.5}
    with pytest.raises(DetectorError, match="weights"):
        _Pair([_FixedP("a_", 1e-3), _FixedP("b_", 1e-4)], params, weights=weights)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"sesonal": 2.0}, r"ensemble.weights: expected a mapping of component names"),
        ([1.0, 2.0], r"ensemble.weights: expected a mapping"),
        ({"seasonal": 0.0}, r"ensemble.weights.seasonal"),
        ({"seasonal": "heavy"}, r"ensemble.weights.seasonal"),
    ],
)
def test_ensemble_weights_are_validated(weights: object, message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        build_learned("ensemble", {"weights": weights})


def test_ensemble_weights_may_name_components_it_does_not_run() -> None:
    det = build_learned("ensemble", {"components": ["seasonal", "cusum"]})  # default names novelty
    assert det.params()["weights"] == {"novelty": 10000.0}
