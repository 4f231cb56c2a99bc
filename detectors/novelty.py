"""Novelty: a value, or a recent level, where its series has never been.

Most incidents take a metric where it has not been: a latency no request has had, a CPU level
the pod never reached, a queue depth above every earlier one, a request rate fallen to a level
it never showed. A detector of residuals from a learned baseline sees such a value only as "far
from expected" and pays for it in false alarms on every noisy series; this component asks the
other question, *has this series ever been here?*, and answers with a probability instead of a
distance.

A :class:`Lattice` per series: the first ``range_samples`` samples (and at least ``range_hours``
of series time) set ``levels`` bins across the range they spanned, extending on both sides by the
same width (kept modulo ``bins`` slots, so the state has a fixed size). The lattice follows the
range the series goes on to show: when the bins it has visited span more than ``max_span``, bins
double in width (pairs merge) until they fit, so a series whose first hours were quiet is not
judged forever on bins far finer than its real spread. Every later sample falls in one bin, and a
sample in a bin never visited is new in one of two ways:

- *beyond*: past every bin the series has visited, the range grows. Its probability under the
  series' behaviour so far is estimated by the rule of succession on how often that happened:
  ``(E + 1) / (N + 2)``, with ``E`` the samples that widened the range among ``N`` samples since
  the lattice was set;
- *a gap*: a bin inside the visited range never visited before. Its probability is the
  Good-Turing estimate of an unseen bin, ``(N1 + 1) / (N + 2)``, with ``N1`` the bins visited
  exactly once so far.

The two are one test at a weighted Bonferroni level: a gap is tested at ``gap_weight`` of it and a
widening at the rest, so ``p = p_beyond / (1 - gap_weight)`` or ``p_gap / gap_weight`` (1 for a
bin seen before). Gaps get the small share because a series' range fills in as it is observed
(a bursty series keeps visiting bins between its level and its peaks) while a value beyond
everything seen is the rarer and the more telling event. On a series that has settled, both are
small probabilities; on a series that keeps wandering, ``E`` and ``N1`` grow with every new place
it visits and a new one is unremarkable. Early on, with ``N`` small, ``p`` is large: the lattice's
first visits are not alarms.

Two lattices per series: one over the values, one over their recent level (an exponentially
weighted mean, weight ``level_alpha`` per sample: about ``2 / level_alpha`` samples), which
moves where the values' noise hides it: a sustained shift inside the noisy range. The level's
lattice holds ``level_weight`` of the test, the values' the rest. The result is a tail
probability already, so the component is not calibrated further (:attr:`self_calibrated`); it is
an estimate from the samples seen, never below ``1 / (N + 2)``.

Every sample is learned, flagged or not: a new level visited once is known the second time, so a
level shift is reported when it happens and not for as long as it lasts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from detectors.base import DetectorError
from detectors.batch import FloatArray, IdArray
from detectors.calibration import CALIBRATION_DEFAULTS, BoolArray, CalibratedDetector, Component
from detectors.episodes import HOUR
from detectors.streaming import ArraySpec, SeriesState, check_float, check_int, merge_params

#: Bin indices are computed in float and clipped here first, so a huge value cannot overflow.
_MAX_INDEX = float(2**52)


class Lattice:
    """Bins over one quantity per series (arrays named ``prefix*`` in a SeriesState).

    :meth:`p_new` gives each sample's probability of falling in a new bin and keeps what it found
    for :meth:`learn`, which must follow with the same samples.
    """

    def __init__(
        self,
        prefix: str,
        *,
        levels: int,
        range_samples: int,
        range_seconds: float,
        bins: int,
        gap_weight: float,
        max_span: int,
    ) -> None:
        self.prefix = prefix
        self.levels = levels
        self.range_samples = range_samples
        self.range_seconds = range_seconds
        self.bins = bins
        self.gap_weight = gap_weight
        self.max_span = max_span
        self._state: SeriesState | None = None
        self._slot: IdArray = np.empty(0, dtype=np.int64)
        self._index: FloatArray = np.empty(0)
        self._beyond: BoolArray = np.empty(0, dtype=bool)
        self._count: np.ndarray[Any, np.dtype[np.uint8]] = np.empty(0, dtype=np.uint8)

    def array_specs(self) -> list[ArraySpec]:
        """Range learning (count, first time, min, max), bin width, visited bins, E, N and N1."""
        p = self.prefix
        return [
            ArraySpec(f"{p}n", np.float64, 0.0),
            ArraySpec(f"{p}first", np.float64, 0.0),
            ArraySpec(f"{p}lo", np.float64, 0.0),
            ArraySpec(f"{p}hi", np.float64, 0.0),
            ArraySpec(f"{p}width", np.float64, 0.0),
            ArraySpec(f"{p}total", np.float64, 0.0),
            ArraySpec(f"{p}widened", np.float64, 0.0),
            # The lowest and highest bin index visited (none while total is 0).
            ArraySpec(f"{p}low_bin", np.float64, 0.0),
            ArraySpec(f"{p}high_bin", np.float64, 0.0),
            ArraySpec(f"{p}once", np.float64, 0.0),
            # Visits per bin slot, saturating at 2: unseen, seen once, seen more.
            ArraySpec(f"{p}visits", np.uint8, 0.0, width=self.bins),
        ]

    def bind(self, state: SeriesState) -> None:
        """Use the arrays of ``state``."""
        self._state = state

    @property
    def s(self) -> SeriesState:
        """The bound state."""
        if self._state is None:
            msg = "lattice used before bind()"
            raise RuntimeError(msg)
        return self._state

    def p_new(self, ids: IdArray, x: FloatArray) -> FloatArray:
        """The probability of each sample's bin being new (1 if not new, or no lattice yet)."""
        s, p = self.s, self.prefix
        width = s[f"{p}width"][ids]
        ready = width > 0.0
        position = (x - s[f"{p}lo"][ids]) / np.where(ready, width, 1.0)
        self._index = np.floor(np.clip(np.nan_to_num(position), -_MAX_INDEX, _MAX_INDEX))
        self._slot = np.mod(self._index, self.bins).astype(np.int64)
        self._count = s[f"{p}visits"][ids, self._slot]
        total = s[f"{p}total"][ids]
        # past every bin visited (any bin, before the first visit)
        index = self._index
        beyond = (total == 0.0) | (index < s[f"{p}low_bin"][ids]) | (index > s[f"{p}high_bin"][ids])
        self._beyond = beyond
        p_beyond = (s[f"{p}widened"][ids] + 1.0) / (total + 2.0) / (1.0 - self.gap_weight)
        p_gap = (s[f"{p}once"][ids] + 1.0) / (total + 2.0) / self.gap_weight
        p_new = np.where(beyond, p_beyond, np.where(self._count == 0, p_gap, 1.0))
        out: FloatArray = np.where(ready, np.minimum(p_new, 1.0), 1.0)
        return out

    def learn(self, ids: IdArray, ts: FloatArray, x: FloatArray) -> None:
        """Count the visits :meth:`p_new` found (which bins, which widen the range); series
        without a lattice learn their range."""
        s, p = self.s, self.prefix
        ready = s[f"{p}width"][ids] > 0.0
        if ready.any():
            r_ids, slot, count = ids[ready], self._slot[ready], self._count[ready]
            index, beyond = self._index[ready], self._beyond[ready]
            first = s[f"{p}total"][r_ids] == 0.0
            low = np.where(first, index, np.minimum(s[f"{p}low_bin"][r_ids], index))
            high = np.where(first, index, np.maximum(s[f"{p}high_bin"][r_ids], index))
            wide = high - low + 1.0 > self.max_span
            for series, bin_index in zip(r_ids[wide].tolist(), index[wide].tolist(), strict=True):
                self._coarsen(series, int(bin_index))
            keep = ~wide
            r_ids, slot, count = r_ids[keep], slot[keep], count[keep]
            s[f"{p}widened"][r_ids] += beyond[keep]
            s[f"{p}low_bin"][r_ids], s[f"{p}high_bin"][r_ids] = low[keep], high[keep]
            s[f"{p}visits"][r_ids, slot] = np.minimum(count, 1) + 1
            s[f"{p}total"][r_ids] += 1.0
            s[f"{p}once"][r_ids] += (count == 0).astype(np.float64) - (count == 1)
        if not ready.all():
            self._learn_range(ids[~ready], ts[~ready], x[~ready])

    def _coarsen(self, series: int, index: int) -> None:
        """Visit bin ``index`` of ``series``, which widens its visited range past ``max_span``
        bins: bins double in width (pairs merge) until the range fits again.

        Rare (a series' range must double for it to happen again) and per series: a loop.
        """
        s, p = self.s, self.prefix
        row = s[f"{p}visits"][series]
        low, high = int(s[f"{p}low_bin"][series]), int(s[f"{p}high_bin"][series])
        # the visited range so far spans at most max_span <= bins slots: read back exactly
        counts = {i: int(row[i % self.bins]) for i in range(low, high + 1) if row[i % self.bins]}
        counts[index] = 1  # outside the visited range: a first visit
        width = float(s[f"{p}width"][series])
        while max(counts) - min(counts) + 1 > self.max_span:
            merged: dict[int, int] = {}
            for i, c in counts.items():
                merged[i // 2] = min(merged.get(i // 2, 0) + c, 2)  # // floors: bin k of 2w
            counts, width = merged, 2.0 * width
        row[:] = 0
        for i, c in counts.items():
            row[i % self.bins] = c
        s[f"{p}width"][series] = width
        s[f"{p}low_bin"][series], s[f"{p}high_bin"][series] = min(counts), max(counts)
        s[f"{p}once"][series] = sum(c == 1 for c in counts.values())
        s[f"{p}total"][series] += 1.0
        s[f"{p}widened"][series] += 1.0

    def _learn_range(self, ids: IdArray, ts: FloatArray, x: FloatArray) -> None:
        s, p = self.s, self.prefix
        n = s[f"{p}n"][ids]
        unset = n == 0.0
        first = np.where(unset, ts, s[f"{p}first"][ids])
        lo = np.where(unset, x, np.minimum(s[f"{p}lo"][ids], x))
        hi = np.where(unset, x, np.maximum(s[f"{p}hi"][ids], x))
        n += 1.0
        s[f"{p}n"][ids], s[f"{p}first"][ids] = n, first
        s[f"{p}lo"][ids], s[f"{p}hi"][ids] = lo, hi
        done = (n >= self.range_samples) & (ts - first >= self.range_seconds)
        if done.any():
            span = hi[done] - lo[done]
            magnitude = np.maximum(np.abs(lo[done]), np.abs(hi[done]))
            # A constant range: a tenth of its magnitude (1 around zero) across the levels.
            flat = span <= 1e-9 * magnitude
            span = np.where(flat, np.where(magnitude > 0.0, 0.1 * magnitude, 1.0), span)
            s[f"{p}width"][ids[done]] = span / self.levels

    def details(self, series_id: int) -> dict[str, Any]:
        """The learned range, the bins' width and how many are visited, samples since."""
        s, p = self.s, self.prefix
        out: dict[str, Any] = {f"{p}samples": float(s[f"{p}total"][series_id])}
        if s[f"{p}width"][series_id] > 0.0:
            out[f"{p}range"] = [float(s[f"{p}lo"][series_id]), float(s[f"{p}hi"][series_id])]
            out[f"{p}bin_width"] = float(s[f"{p}width"][series_id])
            out[f"{p}bins_seen"] = int(np.count_nonzero(s[f"{p}visits"][series_id]))
        return out


class NoveltyComponent(Component):
    """Bins over each series' values and over its recent level; the probability of a new one."""

    self_calibrated = True

    def __init__(
        self,
        *,
        levels: int,
        range_samples: int,
        range_hours: float,
        bins: int,
        gap_weight: float,
        max_span: int,
        level_alpha: float,
        level_weight: float,
        prefix: str = "novelty_",
    ) -> None:
        if max_span > bins:
            msg = f"novelty: max_span ({max_span}) must not exceed bins ({bins}): the visited range must fit"
            raise DetectorError(msg)
        self.prefix = prefix
        self.level_alpha = level_alpha
        self.level_weight = level_weight

        def lattice(name: str) -> Lattice:
            return Lattice(
                name,
                levels=levels,
                range_samples=range_samples,
                range_seconds=range_hours * HOUR,
                bins=bins,
                gap_weight=gap_weight,
                max_span=max_span,
            )

        self.values = lattice(prefix)
        self.level = lattice(f"{prefix}level_")
        self._level: FloatArray = np.empty(0)

    def array_specs(self) -> list[ArraySpec]:
        """Both lattices and the recent level (an exponentially weighted mean)."""
        p = self.prefix
        return [
            *self.values.array_specs(),
            *self.level.array_specs(),
            ArraySpec(f"{p}mean", np.float64, 0.0),
            ArraySpec(f"{p}seen", np.float64, 0.0),
        ]

    def bind(self, state: SeriesState) -> None:
        """Use the arrays of ``state``."""
        super().bind(state)
        self.values.bind(state)
        self.level.bind(state)

    def raw(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """The smaller of the two lattices' probabilities, each divided by its share of the test."""
        del ts
        s, p = self.s, self.prefix
        mean = np.where(s[f"{p}seen"][ids] > 0.0, s[f"{p}mean"][ids], values)
        self._level = mean + self.level_alpha * (values - mean)
        p_values = self.values.p_new(ids, values) / (1.0 - self.level_weight)
        p_level = self.level.p_new(ids, self._level) / self.level_weight
        out: FloatArray = np.minimum(np.minimum(p_values, p_level), 1.0)
        return out

    def learn(self, ids: IdArray, ts: FloatArray, values: FloatArray, flagged: BoolArray) -> None:
        """Count the visits (flagged or not); move the level; series without lattices learn ranges."""
        del flagged
        s, p = self.s, self.prefix
        self.values.learn(ids, ts, values)
        self.level.learn(ids, ts, self._level)
        s[f"{p}mean"][ids] = self._level
        s[f"{p}seen"][ids] = 1.0

    def details(self, series_id: int) -> dict[str, Any]:
        """Both lattices' ranges and visited bins, and the recent level."""
        return {
            **self.values.details(series_id),
            **self.level.details(series_id),
            f"{self.prefix}level": float(self.s[f"{self.prefix}mean"][series_id]),
        }


NOVELTY_DEFAULTS: dict[str, Any] = {
    "levels": 8,
    "range_samples": 150,
    "range_hours": 24.0,
    "bins": 128,
    "gap_weight": 0.1,
    "max_span": 32,
    "level_alpha": 0.1,
    "level_weight": 0.1,
    **CALIBRATION_DEFAULTS,
}


def novelty_component(where: str, p: Mapping[str, Any], prefix: str = "novelty_") -> NoveltyComponent:
    """A :class:`NoveltyComponent` from validated parameters (see :data:`NOVELTY_DEFAULTS`)."""
    return NoveltyComponent(
        levels=check_int(where, "levels", p["levels"], low=1, high=1024),
        range_samples=check_int(where, "range_samples", p["range_samples"], low=1),
        range_hours=check_float(where, "range_hours", p["range_hours"], low=0.0),
        bins=check_int(where, "bins", p["bins"], low=1, high=65536),
        gap_weight=check_float(
            where, "gap_weight", p["gap_weight"], low=0.0, high=1.0, low_open=True, high_open=True
        ),
        max_span=check_int(where, "max_span", p["max_span"], low=2),
        level_alpha=check_float(where, "level_alpha", p["level_alpha"], low=0.0, high=1.0, low_open=True),
        level_weight=check_float(
            where, "level_weight", p["level_weight"], low=0.0, high=1.0, low_open=True, high_open=True
        ),
        prefix=prefix,
    )


class NoveltyDetector(CalibratedDetector):
    """The probability of a sample, or its series' recent level, landing where it has never been.

    Parameters: ``levels`` (bins across the learned range, 8), ``range_samples`` (samples that
    set the range, 150), ``range_hours`` (series time that must pass too, 24), ``bins`` (slots of
    the lattice per series, 128), ``gap_weight`` (share of the test for a new bin inside the
    visited range, 0.1), ``max_span`` (bins the visited range may span before bins double in
    width, 32, at most ``bins``), ``level_alpha`` (weight of a sample in the recent level, 0.1),
    ``level_weight`` (share of the test for the level's lattice, 0.1), and the calibration parameters of
    :data:`~detectors.calibration.CALIBRATION_DEFAULTS` (only the flag and episode ones apply).
    """

    kind = "novelty"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> NoveltyDetector:
        """Build from parameters; errors name the parameter."""
        p = merge_params(cls.kind, NOVELTY_DEFAULTS, params)
        return cls([novelty_component(cls.kind, p)], p)
