"""Leave-one-group-out cross-validation: folds, selection on training files only, held-out scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.crossval import cross_validate, leave_one_group_out, select, summarise
from detectors.nab import PROFILES, NabFile

STANDARD = PROFILES[0]
N = 100  # rows per file: 15 probationary, one window at rows 50..59


def hit(at: int | None, name: str = "f") -> NabFile:
    """A file whose detector scores 1 at row ``at`` (nothing when None) and 0 elsewhere."""
    scores = np.zeros(N)
    if at is not None:
        scores[at] = 1.0
    return NabFile(name, scores, ((50, 59),))


def test_one_fold_per_group_holding_out_exactly_its_files() -> None:
    folds = leave_one_group_out(["a", "b", "a", "c"])
    assert [(f.held_out, f.train, f.test) for f in folds] == [
        ("a", (1, 3), (0, 2)),
        ("b", (0, 2, 3), (1,)),
        ("c", (0, 1, 2), (3,)),
    ]
    with pytest.raises(ValueError, match="two groups"):
        leave_one_group_out(["a", "a"])


def test_selection_takes_the_best_candidate_on_training_and_the_earlier_on_ties() -> None:
    good, bad = [hit(50), hit(50)], [hit(None), hit(None)]
    assert select([bad, good], STANDARD).candidate == 1
    assert select([good, good], STANDARD).candidate == 0
    assert select([good, bad], STANDARD).threshold == 1.0


def test_a_choice_cannot_see_the_held_out_files() -> None:
    """Two candidates: 0 finds the windows of groups a and b, 1 those of group c only. Holding out
    c must choose candidate 0 (best on a and b), and keep choosing it whatever c's files say."""
    groups = ["a", "b", "c"]
    scored = [[hit(50), hit(50), hit(None)], [hit(None), hit(None), hit(50)]]
    results = {r.held_out: r for r in cross_validate(scored, groups, STANDARD)}
    assert results["c"].choice.candidate == 0
    assert results["c"].score == 0.0  # candidate 0 misses c's window: the null score
    assert results["a"].choice.candidate == 0  # b's file still favours candidate 0
    assert results["a"].score == 100.0

    # Rewrite everything the held-out file of c says, for every candidate: the choice for c
    # (candidate and threshold) is unchanged; only its held-out score follows the new data.
    for rewritten in ([hit(55), hit(None)], [hit(20), hit(80)], [hit(None), hit(50)]):
        changed = [[*scored[c][:2], rewritten[c]] for c in range(2)]
        again = {r.held_out: r for r in cross_validate(changed, groups, STANDARD)}
        assert again["c"].choice == results["c"].choice
    moved = [[*scored[0][:2], hit(50)], scored[1]]
    assert {r.held_out: r for r in cross_validate(moved, groups, STANDARD)}["c"].score == 100.0


def test_thresholds_come_from_training_files_only() -> None:
    """The held-out file peaks at 0.5 inside its window; training needs 1.0 to avoid a false
    positive, so the held-out window is missed at the threshold training chose."""
    rows = np.arange(N)
    train_file = NabFile("t", np.where(rows == 30, 0.6, np.where(rows == 50, 1.0, 0.0)), ((50, 59),))
    held = NabFile("h", np.where(rows == 50, 0.5, 0.0), ((50, 59),))
    results = {r.held_out: r for r in cross_validate([[train_file, held]], ["t", "h"], STANDARD)}
    assert results["h"].choice.threshold == 1.0
    assert results["h"].missed == 1
    assert results["h"].score == 0.0


def test_summary_is_the_mean_and_worst_over_groups_with_windows_and_pools_false_positives() -> None:
    quiet = NabFile("q", np.where(np.arange(N) == 70, 1.0, 0.0), ())
    scored = [[hit(50), hit(59), quiet]]
    results = cross_validate(scored, ["a", "b", "q"], STANDARD)
    by = {r.held_out: r for r in results}
    assert math.isnan(by["q"].score)
    assert by["q"].false_positives == 1
    summary = summarise(results)
    assert summary.worst_group == "b"
    assert summary.worst == pytest.approx(by["b"].score)
    assert summary.mean == pytest.approx((by["a"].score + by["b"].score) / 2)
    # pooled: (raw a + raw b - 0.11) over two windows, against null -2 and perfect 2
    assert summary.pooled == pytest.approx(100 * (by["a"].raw + by["b"].raw - 0.11 + 2) / 4)
