"""Alert de-duplication and warm-up: the last stage of a calibrated detector's score.

An anomaly seldom lasts one sample. While an episode goes on, its scores stay high, and a
detector that reports every one of them pages again and again for the same incident (and on a
benchmark such as NAB, which credits only the earliest detection of an anomaly, pays a false
positive for each repeat after the labeled window). :class:`EpisodeStage` keeps, per series, the
peak score of the current alert episode and when it was set:

- a sample scoring above the episode's peak is a new record: its score passes unchanged and it
  becomes the peak (so, whatever threshold is later applied, the *first* sample of an episode to
  cross it always passes: every earlier sample of the episode scored lower);
- a sample at or below the peak, within ``refractory_hours`` of the time the peak was set (series
  time, from the samples' timestamps), is a repeat: its score is multiplied by ``damping``;
- once the peak is older than ``refractory_hours``, the episode is over and the next sample
  starts afresh (a still-running incident is reported again, as an alert re-notifies).

Warm-up: a series seen for less than ``warmup_hours`` (series time, since its first sample) has
not shown a full cycle of its normal yet, so its scores are scaled by the fraction of that time it
has seen. This is on top of the calibrator's own ``warmup`` (a sample count before any score).

The stage changes only what is reported: detectors decide what to learn from before it, on the
undamped tail probability.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from detectors.batch import FloatArray, IdArray
from detectors.streaming import MAX_ABS_TIMESTAMP, ArraySpec, SeriesState, check_float

HOUR = 3600.0

#: ``first_ts`` of a series not seen yet: beyond any accepted timestamp, yet finite.
_UNSEEN = 2.0 * MAX_ABS_TIMESTAMP

#: Episode and warm-up parameters every calibrated detector accepts, with their defaults.
EPISODE_DEFAULTS: dict[str, Any] = {
    "refractory_hours": 6.0,
    "damping": 0.5,
    "warmup_hours": 6.0,
}


def check_episodes(where: str, params: Mapping[str, Any]) -> dict[str, float]:
    """Validated episode parameters from ``params`` (defaults filled in by the caller)."""
    return {
        "refractory_hours": check_float(where, "refractory_hours", params["refractory_hours"], low=0.0),
        "damping": check_float(where, "damping", params["damping"], low=0.0, high=1.0),
        "warmup_hours": check_float(where, "warmup_hours", params["warmup_hours"], low=0.0),
    }


class EpisodeStage:
    """Per-series alert episodes (peak score and its time) and time since the first sample."""

    prefix = "episode_"

    def __init__(self, *, refractory_hours: float, damping: float, warmup_hours: float) -> None:
        self.refractory = refractory_hours * HOUR
        self.damping = damping
        self.warmup = warmup_hours * HOUR
        self._state: SeriesState | None = None

    def array_specs(self) -> list[ArraySpec]:
        """The episode's peak score (0: none) and its time, and the series' first timestamp."""
        p = self.prefix
        return [
            ArraySpec(f"{p}peak", np.float64, 0.0),
            ArraySpec(f"{p}peak_ts", np.float64, 0.0),
            ArraySpec(f"{p}first_ts", np.float64, _UNSEEN),
        ]

    def bind(self, state: SeriesState) -> None:
        """Use the arrays of ``state``."""
        self._state = state

    @property
    def _s(self) -> SeriesState:
        if self._state is None:
            msg = "episode stage used before bind()"
            raise RuntimeError(msg)
        return self._state

    def apply(self, ids: IdArray, ts: FloatArray, scores: FloatArray) -> FloatArray:
        """The reported scores of one round (distinct series, time order), state updated."""
        s = self._s
        p = self.prefix
        out = scores
        if self.warmup > 0.0:
            first = s[f"{p}first_ts"]
            start = first[ids]
            start = np.where(start > MAX_ABS_TIMESTAMP, ts, start)
            first[ids] = start
            out = out * np.clip((ts - start) / self.warmup, 0.0, 1.0)
        if self.refractory > 0.0:
            peak_a, peak_ts_a = s[f"{p}peak"], s[f"{p}peak_ts"]
            peak_ts = peak_ts_a[ids]
            peak = np.where(ts - peak_ts < self.refractory, peak_a[ids], 0.0)
            record = out > peak
            peak_a[ids] = np.where(record, out, peak)
            peak_ts_a[ids] = np.where(record, ts, peak_ts)
            out = np.where(record, out, out * self.damping)
        return out
