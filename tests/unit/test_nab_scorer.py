"""The NAB scorer on hand-computed cases, and its threshold sweep against a brute-force search."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.nab import (
    PROFILES,
    NabError,
    NabFile,
    Profile,
    evaluate,
    normalise,
    optimise_threshold,
    probationary_length,
    score_file,
    window_rows,
)

STANDARD, LOW_FP, LOW_FN = PROFILES

# One file of 100 rows: rows 0..14 are probationary (floor(0.15 * 100) = 15); one window, rows
# 40..49 (width 10).
N = 100
WINDOW = ((40, 49),)


def sigma(y: float) -> float:
    """The README's scaled sigmoid, written out independently of the module's tanh form."""
    return -1.0 if y > 3 else 2 / (1 + math.exp(5 * y)) - 1


def detect_at(*rows: int, n: int = N, windows: tuple[tuple[int, int], ...] = WINDOW) -> NabFile:
    scores = np.zeros(n)
    scores[list(rows)] = 1.0
    return NabFile("f.csv", scores, windows)


def raw(f: NabFile, profile: Profile = STANDARD) -> float:
    return score_file(f, profile, threshold=1.0).score


# ---------------------------------------------------------------- hand-computed values


def test_the_scaled_sigmoid_values_the_rules_rest_on() -> None:
    assert sigma(-1.0) == pytest.approx(0.986614, abs=1e-6)
    assert sigma(-0.5) == pytest.approx(0.848284, abs=1e-6)
    assert sigma(0.0) == 0.0
    assert sigma(3.5) == -1.0


def test_detection_on_the_first_row_of_a_window_scores_the_full_tp_weight() -> None:
    # position -(49 - 40 + 1) / 10 = -1, and sigma(-1) / sigma(-1) = 1
    assert raw(detect_at(40)) == pytest.approx(1.0)


def test_detection_in_the_middle_of_a_window() -> None:
    # row 45: position -(49 - 45 + 1) / 10 = -0.5 -> 0.848284 / 0.986614 = 0.859793
    assert raw(detect_at(45)) == pytest.approx(0.859793, abs=1e-6)
    assert raw(detect_at(45)) == pytest.approx(sigma(-0.5) / sigma(-1.0))


def test_late_detection_on_the_last_row_of_a_window() -> None:
    # row 49: position -(49 - 49 + 1) / 10 = -0.1 -> 0.244919 / 0.986614 = 0.248242
    assert raw(detect_at(49)) == pytest.approx(0.248242, abs=1e-6)


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    assert raw(detect_at(45, 46, 49)) == pytest.approx(raw(detect_at(45)))
    result = score_file(detect_at(45, 46, 49), STANDARD, 1.0)
    assert (result.detected_windows, result.missed_windows, result.false_positives) == (1, 0, 0)


def test_a_missed_window_costs_the_fn_weight() -> None:
    assert raw(detect_at()) == -1.0
    assert raw(detect_at(), LOW_FN) == -2.0
    assert score_file(detect_at(), STANDARD, 1.0).missed_windows == 1


def test_false_positive_before_any_window_costs_the_full_fp_weight() -> None:
    # row 39 is just before the window's left edge: outside it, and no window came before
    assert raw(detect_at(20)) == pytest.approx(-1.0 - 0.11)
    assert raw(detect_at(39)) == pytest.approx(-1.0 - 0.11)
    assert score_file(detect_at(20, 39), STANDARD, 1.0).false_positives == 2


def test_false_positive_after_a_window_is_scored_by_its_distance() -> None:
    # row 52: 3 rows past the last row (49) of a window of width 10 -> sigma(3 / 9) = -0.682262
    assert raw(detect_at(40, 52)) == pytest.approx(1.0 + 0.11 * -0.682262, abs=1e-6)
    # row 50, right past the edge: sigma(1 / 9) = -0.270847
    assert raw(detect_at(40, 50)) == pytest.approx(1.0 + 0.11 * sigma(1 / 9))
    assert sigma(1 / 9) == pytest.approx(-0.270847, abs=1e-6)
    # row 90: 41 / 9 > 3 -> -1
    assert raw(detect_at(40, 90)) == pytest.approx(1.0 - 0.11)


def test_false_positive_is_scored_against_the_window_that_ended_last() -> None:
    # windows 20..29 (width 10) and 60..64 (width 5); row 67 is 3 rows past the second
    windows = ((20, 29), (60, 64))
    got = raw(detect_at(20, 60, 67, windows=windows))
    assert got == pytest.approx(1.0 + 1.0 + 0.11 * sigma(3 / 4))
    # row 35 lies between them: scored against the first window
    got = raw(detect_at(20, 35, 60, windows=windows))
    assert got == pytest.approx(2.0 + 0.11 * sigma(6 / 9))


def test_the_probationary_period_is_not_scored() -> None:
    assert probationary_length(100) == 15
    assert probationary_length(4032) == 604
    assert probationary_length(10_000) == 750  # the cap
    # detections in rows 0..14 are neither false nor true positives
    assert raw(detect_at(0, 7, 14, 40)) == pytest.approx(1.0)
    assert raw(detect_at(15, 40)) == pytest.approx(1.0 - 0.11)
    # a window inside the probationary period is not scored at all
    f = detect_at(windows=((5, 9), (40, 49)))
    assert raw(f) == -1.0
    assert f.scored_windows == 1


def test_each_profile_weights_the_same_detections_differently() -> None:
    f = detect_at(20, 45, 52)  # one FP before the window, a TP at -0.5, one FP 3 rows past it
    tp = sigma(-0.5) / sigma(-1.0)
    fps = -1.0 + sigma(3 / 9)
    assert raw(f, STANDARD) == pytest.approx(tp + 0.11 * fps)
    assert raw(f, LOW_FP) == pytest.approx(tp + 0.22 * fps)
    assert raw(f, LOW_FN) == pytest.approx(tp + 0.11 * fps)
    missed = detect_at(20)
    assert raw(missed, STANDARD) == pytest.approx(-1.0 - 0.11)
    assert raw(missed, LOW_FP) == pytest.approx(-1.0 - 0.22)
    assert raw(missed, LOW_FN) == pytest.approx(-2.0 - 0.11)
    assert [p.name for p in PROFILES] == ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
    assert [(p.tp_weight, p.fn_weight, p.fp_weight) for p in PROFILES] == [
        (1.0, 1.0, 0.11),
        (1.0, 1.0, 0.22),
        (1.0, 2.0, 0.11),
    ]


def test_a_detection_is_a_score_at_or_above_the_threshold() -> None:
    scores = np.zeros(N)
    scores[45] = 0.7
    f = NabFile("f.csv", scores, WINDOW)
    assert score_file(f, STANDARD, 0.7).detected_windows == 1
    assert score_file(f, STANDARD, 0.7000001).detected_windows == 0


def test_non_finite_scores_are_never_detections() -> None:
    scores = np.zeros(N)
    scores[[20, 30]] = np.nan
    scores[45] = 1.0
    f = NabFile("f.csv", scores, WINDOW)
    assert score_file(f, STANDARD, 0.0).false_positives == N - 15 - 10 - 2
    result = optimise_threshold([f], STANDARD)
    assert result.threshold == 1.0
    assert result.raw == pytest.approx(sigma(-0.5) / sigma(-1.0))


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_the_null_detector_scores_0_and_the_perfect_detector_100(profile: Profile) -> None:
    windows = [((30, 39), (70, 79)), ((50, 59),), ()]
    null_files = [NabFile(f"{i}.csv", np.zeros(N), w) for i, w in enumerate(windows)]
    perfect_files = [detect_at(*(a for a, _ in w), windows=w) for w in windows]
    null = optimise_threshold(null_files, profile)
    perfect = optimise_threshold(perfect_files, profile)
    assert null.raw == -3 * profile.fn_weight
    assert null.threshold == math.inf  # never detecting is the best a constant score can do
    assert null.normalised == 0.0
    assert perfect.raw == pytest.approx(3 * profile.tp_weight)
    assert perfect.threshold == 1.0
    assert perfect.normalised == pytest.approx(100.0)


def test_normalise_is_a_linear_map_from_null_to_perfect() -> None:
    assert normalise(-64.0, -64.0, 64.0) == 0.0
    assert normalise(64.0, -64.0, 64.0) == 100.0
    assert normalise(0.0, -64.0, 64.0) == 50.0
    assert math.isnan(normalise(0.0, 0.0, 0.0))  # no window: nothing to normalise against


# ---------------------------------------------------------------- the threshold sweep


def naive_file_score(scores: np.ndarray, windows: list[tuple[int, int]], p: Profile, t: float) -> float:
    """The README rules, one row at a time."""
    n = len(scores)
    start = min(math.floor(0.15 * n), 750)
    total = 0.0
    for left, right in windows:
        if right < start:
            continue
        width = right - left + 1
        hits = [i for i in range(max(left, start), right + 1) if scores[i] >= t]
        if hits:
            total += p.tp_weight * sigma(-(right - hits[0] + 1) / width) / sigma(-1.0)
        else:
            total -= p.fn_weight
    for i in range(start, n):
        if not scores[i] >= t or any(a <= i <= b for a, b in windows):
            continue
        before = [(a, b) for a, b in windows if b < i]
        if not before:
            total -= p.fp_weight
        else:
            a, b = before[-1]
            total += p.fp_weight * (sigma((i - b) / (b - a)) if b > a else -1.0)
    return total


@pytest.mark.parametrize("seed", range(8))
def test_the_sweep_finds_the_same_best_threshold_as_trying_every_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    files = []
    for k in range(4):
        n = int(rng.integers(40, 160))
        # few distinct values, so ties between rows are common
        scores = rng.choice(
            [0.0, 0.1, 0.25, 0.5, 0.8, 0.9, 1.0], size=n, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.03, 0.02]
        )
        cuts = sorted(rng.choice(np.arange(n), size=4, replace=False).tolist())
        windows = [(cuts[0], cuts[1])] if k % 2 else [(cuts[0], cuts[1]), (cuts[2] + 1, cuts[3])]
        windows = [(a, b) for a, b in windows if a <= b]
        files.append((scores, windows))
    nab_files = [NabFile(str(i), s, tuple(w)) for i, (s, w) in enumerate(files)]
    for profile in PROFILES:
        candidates = [math.inf, *sorted({float(x) for s, _ in files for x in s}, reverse=True)]
        totals = [sum(naive_file_score(s, w, profile, t) for s, w in files) for t in candidates]
        best = optimise_threshold(nab_files, profile)
        assert best.raw == pytest.approx(max(totals))
        assert best.threshold == candidates[int(np.argmax(totals))]  # the highest of equal bests
        at_best = sum(score_file(f, profile, best.threshold).score for f in nab_files)
        assert at_best == pytest.approx(best.raw)


def test_evaluate_scores_every_profile() -> None:
    results = evaluate([detect_at(45)])
    assert [r.profile for r in results] == list(PROFILES)


# ---------------------------------------------------------------- windows to rows


def test_window_timestamps_map_to_inclusive_rows() -> None:
    ts = np.arange(0.0, 100.0, 10.0)  # rows 0..9 at 0, 10, ..., 90
    assert window_rows(ts, [(20.0, 40.0), (60.0, 60.0)]) == ((2, 4), (6, 6))
    # an end between two timestamps closes on the row before it
    assert window_rows(ts, [(20.0, 45.0)]) == ((2, 4),)


def test_a_repeated_timestamp_opens_and_closes_windows_on_its_first_row() -> None:
    ts = np.array([0.0, 10.0, 20.0, 20.0, 30.0, 40.0, 40.0, 50.0])
    assert window_rows(ts, [(20.0, 40.0)]) == ((2, 5),)


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ([(25.0, 28.0)], "covers no row"),
        ([(20.0, 50.0), (40.0, 60.0)], "overlap"),
        ([(60.0, 70.0), (20.0, 30.0)], "overlap or precede"),
    ],
)
def test_bad_windows_are_refused(windows: list[tuple[float, float]], message: str) -> None:
    with pytest.raises(NabError, match=message):
        window_rows(np.arange(0.0, 100.0, 10.0), windows)


def test_decreasing_timestamps_are_refused() -> None:
    with pytest.raises(NabError, match="must not decrease"):
        window_rows(np.array([0.0, 10.0, 5.0]), [])
