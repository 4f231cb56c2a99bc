"""Numenta Anomaly Benchmark (NAB v1.1) scoring: windows, profiles, threshold sweep, normalisation.

Pure computation over arrays; reading the corpus is the caller's job. The rules follow the
published NAB scorer (numenta/NAB ``nab/sweeper.py``):

- A file of ``N`` rows has a probationary period of ``min(floor(0.15 N), 750)`` rows. Those rows
  are not scored at all: a detection there is neither a true nor a false positive.
- A window ``[left, right]`` (row indices, both inclusive) of width ``w = right - left + 1`` is
  detected by its earliest detection ``i``, which scores
  ``tpWeight * sigma(-(right - i + 1) / w) / sigma(-1)``: exactly ``tpWeight`` on the window's
  first row, less the later it comes (``sigma(-1 / w) / sigma(-1)``, near 0 for a wide window, on
  its last row). Later detections in the window add nothing.
- A detection outside every window scores ``-fpWeight`` if no window ended before it in the file,
  else ``fpWeight * sigma((i - prev_right) / (prev_w - 1))`` against the window that ended last
  before it (``sigma`` is -1 past 3).
- A window without a detection scores ``-fnWeight``.
- ``sigma(y) = 2 / (1 + exp(5 y)) - 1``.

One threshold per detector and profile is chosen to maximise the raw score summed over all files;
a row is a detection when its anomaly score is at or above the threshold. The normalised score is
``100 (S - S_null) / (S_perfect - S_null)`` with ``S_null = -fnWeight`` and ``S_perfect = tpWeight``
per scored window (one with a row after the probationary period).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.batch import FloatArray

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Share of each file's rows that is probationary, and the cap on that count (NAB: 0.15 * 5000).
PROBATIONARY_FRACTION = 0.15
PROBATIONARY_CAP = 750

_OUTSIDE = -1  # row kind: outside every window


class NabError(ValueError):
    """Windows or scores that cannot be scored (overlapping windows, wrong lengths, ...)."""


@dataclass(frozen=True, slots=True)
class Profile:
    """A NAB application profile: the weights of true positives, false negatives, false positives."""

    name: str
    tp_weight: float
    fn_weight: float
    fp_weight: float


#: The three published NAB profiles, in the order the scoreboard lists them.
PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 1.0, 0.11),
    Profile("reward_low_FP_rate", 1.0, 1.0, 0.22),
    Profile("reward_low_FN_rate", 1.0, 2.0, 0.11),
)


def scaled_sigmoid(y: FloatArray) -> FloatArray:
    """NAB's ``sigma(y) = 2 / (1 + e^(5y)) - 1``, and exactly -1 for ``y > 3``."""
    y = np.asarray(y, dtype=np.float64)
    # 2 / (1 + e^(5y)) - 1 == tanh(-2.5 y), which does not overflow for large |y|.
    return np.where(y > 3.0, -1.0, np.tanh(-2.5 * y))


_MAX_TP = float(scaled_sigmoid(np.array(-1.0)))


def probationary_length(n_rows: int) -> int:
    """How many leading rows of a file of ``n_rows`` rows are not scored."""
    # Same float arithmetic as NAB (floor of 0.15 * N), so boundary cases round the same way.
    return min(math.floor(PROBATIONARY_FRACTION * n_rows), PROBATIONARY_CAP)


def window_rows(
    timestamps: FloatArray, windows: Sequence[tuple[float, float]]
) -> tuple[tuple[int, int], ...]:
    """Map ``[start, end]`` timestamp windows to inclusive ``(first_row, last_row)`` index pairs.

    Timestamps are numbers in any one unit (Unix seconds, say) and must not decrease: real NAB
    files repeat a timestamp now and then (clock changes). As in NAB's scorer, a window opens on
    the first row at ``start`` and closes on the first row at ``end``; when ``end`` is not a
    timestamp of the file it closes on the last row before ``end``. Windows must each cover at
    least one row, be in order and not overlap.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.size > 1 and bool(np.any(ts[1:] < ts[:-1])):
        raise NabError("timestamps must not decrease")
    rows: list[tuple[int, int]] = []
    for start, end in windows:
        first = int(np.searchsorted(ts, start, side="left"))
        at_end = int(np.searchsorted(ts, end, side="left"))
        last = at_end if at_end < ts.shape[0] and ts[at_end] == end else at_end - 1
        if last < first:
            raise NabError(f"window [{start}, {end}] covers no row")
        rows.append((first, last))
    return check_windows(rows, ts.shape[0])


def check_windows(windows: Sequence[tuple[int, int]], n_rows: int) -> tuple[tuple[int, int], ...]:
    """``windows`` as a tuple, after checking they are in range, in order and disjoint."""
    previous_last = -1
    for first, last in windows:
        if not 0 <= first <= last < n_rows:
            raise NabError(f"window rows ({first}, {last}) are not within 0..{n_rows - 1}")
        if first <= previous_last:
            raise NabError(f"window rows ({first}, {last}) overlap or precede the previous window")
        previous_last = last
    return tuple((int(a), int(b)) for a, b in windows)


@dataclass(frozen=True, slots=True)
class RowWeights:
    """What a detection on each row of one file is worth, before profile weights.

    ``window[i]`` is the index of the window row ``i`` lies in, or -1 outside every window;
    ``value[i]`` is ``sigma(position) / sigma(-1)`` inside a window (to multiply by tpWeight) and
    the signed false-positive factor outside (to multiply by fpWeight); ``scored[i]`` is false in
    the probationary period.
    """

    window: IntArray
    value: FloatArray
    scored: BoolArray


def row_weights(n_rows: int, windows: Sequence[tuple[int, int]]) -> RowWeights:
    """Per-row detection values of a file of ``n_rows`` rows with the given window rows."""
    windows = check_windows(windows, n_rows)
    rows = np.arange(n_rows, dtype=np.int64)
    window = np.full(n_rows, _OUTSIDE, dtype=np.int64)
    # Outside windows: -1 until the first window ends, then relative to the last window ended.
    value = np.full(n_rows, -1.0)
    for k, (first, last) in enumerate(windows):
        width = last - first + 1
        window[first : last + 1] = k
        inside = rows[first : last + 1]
        value[first : last + 1] = scaled_sigmoid(-(last - inside + 1) / width) / _MAX_TP
        stop = windows[k + 1][0] if k + 1 < len(windows) else n_rows
        after = rows[last + 1 : stop]
        if width > 1:
            value[last + 1 : stop] = scaled_sigmoid((after - last) / (width - 1))
        # A one-row window: NAB divides by zero here; the limit of d / (w - 1) is +inf, i.e. -1.
    scored = rows >= probationary_length(n_rows)
    return RowWeights(window, value, scored)


@dataclass(frozen=True, slots=True)
class NabFile:
    """One scored file: its name, the detector's anomaly score per row, and its windows as rows."""

    name: str
    scores: FloatArray
    windows: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.scores.ndim != 1:
            raise NabError(f"{self.name}: scores must be one-dimensional")
        check_windows(self.windows, self.scores.shape[0])

    @property
    def weights(self) -> RowWeights:
        """The per-row detection values of this file."""
        return row_weights(self.scores.shape[0], self.windows)

    @property
    def scored_windows(self) -> int:
        """Windows with at least one row after the probationary period."""
        start = probationary_length(self.scores.shape[0])
        return sum(1 for _, last in self.windows if last >= start)


@dataclass(frozen=True, slots=True)
class FileScore:
    """The raw NAB score of one file at one threshold, with its detection counts."""

    name: str
    score: float
    detected_windows: int
    missed_windows: int
    false_positives: int


def score_file(nab_file: NabFile, profile: Profile, threshold: float) -> FileScore:
    """Score one file: rows scoring at or above ``threshold`` (and finite) are detections."""
    weights = nab_file.weights
    with np.errstate(invalid="ignore"):
        detected = weights.scored & np.isfinite(nab_file.scores) & (nab_file.scores >= threshold)
    outside = detected & (weights.window == _OUTSIDE)
    total = profile.fp_weight * float(weights.value[outside].sum())
    hit = miss = 0
    for k in range(len(nab_file.windows)):
        in_window = weights.scored & (weights.window == k)
        if not bool(in_window.any()):
            continue  # entirely probationary: NAB does not score it
        rows = np.flatnonzero(detected & (weights.window == k))
        if rows.size:
            hit += 1
            total += profile.tp_weight * float(weights.value[rows[0]])
        else:
            miss += 1
            total -= profile.fn_weight
    return FileScore(nab_file.name, total, hit, miss, int(np.count_nonzero(outside)))


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """A detector's result under one profile: the best threshold and the scores it gives."""

    profile: Profile
    threshold: float
    raw: float
    null: float
    perfect: float

    @property
    def normalised(self) -> float:
        """``100 (S - S_null) / (S_perfect - S_null)``; NaN when there is no window to find."""
        return normalise(self.raw, self.null, self.perfect)


def normalise(raw: float, null: float, perfect: float) -> float:
    """NAB's normalised score: 0 for the null detector, 100 for the perfect one."""
    if perfect == null:
        return math.nan
    return 100.0 * (raw - null) / (perfect - null)


def null_score(files: Sequence[NabFile], profile: Profile) -> float:
    """The raw score of a detector that never detects: ``-fnWeight`` per scored window."""
    return -profile.fn_weight * sum(f.scored_windows for f in files)


def perfect_score(files: Sequence[NabFile], profile: Profile) -> float:
    """The raw score of a detector that detects each window on its first row: ``tpWeight`` each.

    Like :func:`null_score` it counts scored windows only. NAB counts every labelled window, but
    its labeller deletes windows that overlap the probationary period, so the two agree on NAB data.
    """
    return profile.tp_weight * sum(f.scored_windows for f in files)


def optimise_threshold(files: Sequence[NabFile], profile: Profile) -> ProfileResult:
    """The threshold maximising the raw score summed over ``files``, and that score.

    Every distinct finite anomaly score is a candidate (a threshold between two of them detects
    the same rows as the higher one), plus "no detection" (threshold ``inf``), which wins ties so
    the chosen threshold is the highest among equally good ones. The sweep sorts all scored rows
    once by descending anomaly score; lowering the threshold past a row adds that row's false
    positive value, or raises its window's score to that row's value if it beats the best row of
    the window found so far. A cumulative sum then gives the score at every candidate at once.
    """
    null = null_score(files, profile)
    perfect = perfect_score(files, profile)
    scores_parts: list[FloatArray] = []
    window_parts: list[IntArray] = []
    value_parts: list[FloatArray] = []
    window_offset = 0
    for f in files:
        w = f.weights
        keep = w.scored & np.isfinite(f.scores)
        scores_parts.append(f.scores[keep])
        window_parts.append(np.where(w.window[keep] >= 0, w.window[keep] + window_offset, _OUTSIDE))
        value_parts.append(w.value[keep])
        window_offset += len(f.windows)
    if not scores_parts or sum(p.size for p in scores_parts) == 0:
        return ProfileResult(profile, math.inf, null, null, perfect)

    order = np.argsort(-np.concatenate(scores_parts), kind="stable")
    score = np.concatenate(scores_parts)[order]
    window = np.concatenate(window_parts)[order]
    value = np.concatenate(value_parts)[order]

    gain = np.where(window == _OUTSIDE, profile.fp_weight * value, 0.0)
    inside = np.flatnonzero(window != _OUTSIDE)
    if inside.size:
        # Group the in-window rows by window, keeping descending-score order within each group.
        grouped = inside[np.argsort(window[inside], kind="stable")]
        bounds = np.flatnonzero(np.diff(window[grouped])) + 1
        for group in np.split(grouped, bounds):
            best = np.maximum.accumulate(
                np.concatenate(([-profile.fn_weight], profile.tp_weight * value[group]))
            )
            gain[group] = np.diff(best)

    total = null + np.cumsum(gain)
    # Only the last row of each run of equal scores is a threshold's complete state.
    ends = np.flatnonzero(np.append(score[1:] != score[:-1], True))
    candidates = total[ends]
    best_index = int(np.argmax(candidates))
    if float(candidates[best_index]) <= null:
        return ProfileResult(profile, math.inf, null, null, perfect)
    return ProfileResult(
        profile, float(score[ends[best_index]]), float(candidates[best_index]), null, perfect
    )


def evaluate(files: Sequence[NabFile], profiles: Sequence[Profile] = PROFILES) -> list[ProfileResult]:
    """Optimise the threshold and score ``files`` under each profile."""
    return [optimise_threshold(files, profile) for profile in profiles]
