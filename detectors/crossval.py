"""Leave-one-group-out cross-validation of a detector's parameters and NAB threshold.

A detector's defaults are honest only if they were chosen without looking at the data that
reports them. :func:`cross_validate` holds out one group of files at a time (a NAB category),
chooses, on the other groups alone, both the parameter candidate and the NAB threshold that
maximise the normalised score there, and scores the held-out group with that choice. The
selection step, :func:`select`, is given the training files only, so nothing about a held-out
file can reach the choice made for it.

Pure computation over already-scored files: ``scored[c][i]`` is file ``i`` scored by parameter
candidate ``c`` (every candidate scores the same files, in the same order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from detectors.nab import (
    NabFile,
    Profile,
    normalise,
    null_score,
    optimise_threshold,
    perfect_score,
    score_file,
)


@dataclass(frozen=True, slots=True)
class Fold:
    """One split: the held-out group's name and the file indices to train on and to test on."""

    held_out: str
    train: tuple[int, ...]
    test: tuple[int, ...]


def leave_one_group_out(groups: Sequence[str]) -> list[Fold]:
    """One fold per distinct group (in order of first appearance): that group's files held out."""
    names = list(dict.fromkeys(groups))
    if len(names) < 2:
        msg = f"cross-validation needs at least two groups, got {names}"
        raise ValueError(msg)
    return [
        Fold(
            name,
            tuple(i for i, g in enumerate(groups) if g != name),
            tuple(i for i, g in enumerate(groups) if g == name),
        )
        for name in names
    ]


@dataclass(frozen=True, slots=True)
class Choice:
    """What training chose: a candidate index, its threshold and its normalised training score."""

    candidate: int
    threshold: float
    train_score: float


def select(train: Sequence[Sequence[NabFile]], profile: Profile) -> Choice:
    """The candidate (and its best threshold) with the highest normalised score on ``train``.

    ``train[c]`` holds the training files as scored by candidate ``c``. Ties go to the earlier
    candidate, so listing the current default first keeps it unless another one does better.
    """
    best: Choice | None = None
    for c, files in enumerate(train):
        result = optimise_threshold(files, profile)
        score = result.normalised
        if best is None or (math.isfinite(score) and not score <= best.train_score):
            best = Choice(c, result.threshold, score)
    if best is None:
        msg = "select: no candidates"
        raise ValueError(msg)
    return best


@dataclass(frozen=True, slots=True)
class FoldResult:
    """A fold's choice and its held-out result (``score`` is NaN when the group has no window)."""

    held_out: str
    choice: Choice
    raw: float
    null: float
    perfect: float
    detected: int
    missed: int
    false_positives: int

    @property
    def score(self) -> float:
        """The held-out files' normalised NAB score at the chosen candidate and threshold."""
        return normalise(self.raw, self.null, self.perfect)


def score_at(files: Sequence[NabFile], profile: Profile, threshold: float) -> tuple[float, int, int, int]:
    """Raw score, detected windows, missed windows and false positives of ``files`` at ``threshold``."""
    raw = 0.0
    detected = missed = fps = 0
    for f in files:
        s = score_file(f, profile, threshold)
        raw += s.score
        detected += s.detected_windows
        missed += s.missed_windows
        fps += s.false_positives
    return raw, detected, missed, fps


def cross_validate(
    scored: Sequence[Sequence[NabFile]], groups: Sequence[str], profile: Profile
) -> list[FoldResult]:
    """Leave-one-group-out: per fold, :func:`select` on the other groups, score the held-out one."""
    if not scored:
        msg = "cross_validate: no candidates"
        raise ValueError(msg)
    if any(len(files) != len(groups) for files in scored):
        msg = "cross_validate: every candidate must score every file once"
        raise ValueError(msg)
    out: list[FoldResult] = []
    for fold in leave_one_group_out(groups):
        choice = select([[files[i] for i in fold.train] for files in scored], profile)
        test = [scored[choice.candidate][i] for i in fold.test]
        raw, detected, missed, fps = score_at(test, profile, choice.threshold)
        out.append(
            FoldResult(
                fold.held_out,
                choice,
                raw,
                null_score(test, profile),
                perfect_score(test, profile),
                detected,
                missed,
                fps,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean and worst held-out score over the folds that have windows, and the pooled score.

    ``pooled`` normalises the sum of every fold's held-out raw score (false positives on groups
    without windows included) by the whole corpus' null and perfect scores.
    """

    mean: float
    worst: float
    worst_group: str
    pooled: float


def summarise(results: Sequence[FoldResult]) -> Summary:
    """The :class:`Summary` of fold results."""
    scored = [r for r in results if math.isfinite(r.score)]
    if not scored:
        return Summary(math.nan, math.nan, "", math.nan)
    worst = min(scored, key=lambda r: r.score)
    pooled = normalise(
        sum(r.raw for r in results), sum(r.null for r in results), sum(r.perfect for r in results)
    )
    return Summary(sum(r.score for r in scored) / len(scored), worst.score, worst.held_out, pooled)
