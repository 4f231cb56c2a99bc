"""Ratios judged with their counts: an error ratio is evidence in proportion to its requests.

``ratio`` scores a ratio series (errors / requests, say) together with the rate of its
denominator, a series of another metric with the same labels (``count_metric``). Each sample
becomes ``k`` events out of ``n`` trials, ``n = rate x the time since the series' previous
sample`` (at most ``max_count_age``) and ``k = ratio x n``. The events and trials of the last
``window`` (exponentially weighted) are scored together by the upper tail of a beta-binomial, so
evidence accumulates over a few scrapes when each holds few requests: how likely ``k`` or more
events are when the rate is the series' learned baseline, with that baseline itself
uncertain (a Beta of concentration at most ``concentration``: real error rates wander). So 2
errors in 75 requests at night on a 1 % baseline is no evidence (p about 0.2), and 12 % of 500
requests is overwhelming.

The score is ``1 - p``, given only to a sample that carries at least ``current_share`` of the
window's excess over the baseline in its own ratio: the window remembers a spike for a minute or
two after it ends, and the samples after it, back at the baseline, are no evidence that errors are
high *now* (a one-scrape blip would otherwise keep signalling long enough to pass a playbook's
``for: 2m``). The baseline is learned from samples whose window is scored below ``learn_below``
only, with an exponential forgetting of ``half_life``, so an incident never becomes the new normal
and a false alarm leaves the detector as armed as before. A sample whose denominator has not been
seen within ``max_count_age`` of it, or that has fewer than ``min_requests`` trials, scores 0: a
ratio without its count is not evidence. Vectorised over the samples of a batch; the per-sample
order within a series is kept by grouping rounds of one sample per series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorError, grow
from detectors.batch import FloatArray, IdArray, SampleBatch
from detectors.forecast import ParamReader, export_state, restore_state
from detectors.series import SeriesKey, SeriesRegistry
from detectors.signal import SignalKind

_STATE_VERSION = 1
#: The most trials one sample may add (its rate x the time it covers): finite whatever it claims.
MAX_TRIALS = 1e15
#: The most trials a tail is computed over (see :func:`tail_counts`): 8 MB and a few ms at most.
TAIL_TRIALS = 1e6
#: The highest baseline concentration: a hundredth of :data:`TAIL_TRIALS`.
MAX_CONCENTRATION = 1e4


class RatioDetector:
    """A ratio series scored by the beta-binomial tail of its counts against its learned rate."""

    name = "ratio"
    signal_kind = SignalKind.ANOMALY
    PARAMS: ClassVar[tuple[str, ...]] = (
        "count_metric",
        "half_life",
        "concentration",
        "prior_rate",
        "prior_weight",
        "min_requests",
        "min_history",
        "learn_below",
        "max_count_age",
        "window",
        "current_share",
    )
    _ARRAYS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("events", 1),
        ("trials", 1),
        ("last", 1),
        ("rate", 1),
        ("rate_time", 1),
        ("recent_events", 1),
        ("recent_trials", 1),
    )

    def __init__(
        self,
        series: SeriesRegistry,
        count_metric: str,
        *,
        half_life: float = 6 * 3600.0,
        concentration: float = 1000.0,
        prior_rate: float = 0.01,
        prior_weight: float = 100.0,
        min_requests: float = 10.0,
        min_history: float = 500.0,
        learn_below: float = 0.999,
        max_count_age: float = 120.0,
        window: float = 60.0,
        current_share: float = 0.5,
    ) -> None:
        self.series = series
        self.count_metric = count_metric
        self.half_life = half_life
        self.concentration = concentration
        self.prior_rate = prior_rate
        self.prior_weight = prior_weight
        self.min_requests = min_requests
        self.min_history = min_history
        self.learn_below = learn_below
        self.max_count_age = max_count_age
        self.window = window
        self.current_share = current_share
        self._recent_events: FloatArray = np.zeros(0)
        self._recent_trials: FloatArray = np.zeros(0)
        self._events: FloatArray = np.zeros(0)
        self._trials: FloatArray = np.zeros(0)
        self._last: FloatArray = np.full(0, np.nan)  # previous ratio sample's time
        self._rate: FloatArray = np.full(0, np.nan)  # the latest count-metric value (a rate per second)
        self._rate_time: FloatArray = np.full(0, np.nan)
        self._partner: IdArray = np.full(0, -2, dtype=np.int64)  # -2 unknown, -1 not a ratio series
        self._details: dict[int, dict[str, Any]] = {}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], series: SeriesRegistry | None = None) -> RatioDetector:
        """Build from configuration; errors name the parameter."""
        if series is None:
            raise DetectorError(f"{cls.name}: needs the series registry")
        p = ParamReader(cls.name, params, cls.PARAMS)
        count = params.get("count_metric")
        if not isinstance(count, str) or not count:
            raise DetectorError(
                f"{cls.name}.count_metric: expected the metric name of the denominator's rate"
            )
        return cls(
            series,
            count,
            half_life=p.number("half_life", 6 * 3600.0, low=60.0, high=30 * 86400.0),
            concentration=p.number("concentration", 1000.0, low=1.0, high=MAX_CONCENTRATION),
            prior_rate=p.number("prior_rate", 0.01, low=0.0, high=1.0, low_open=True, high_open=True),
            prior_weight=p.number("prior_weight", 100.0, low=0.0, low_open=True, high=1e9),
            min_requests=p.number("min_requests", 10.0, low=0.0, high=1e12),
            min_history=p.number("min_history", 500.0, low=0.0, high=1e12),
            learn_below=p.number("learn_below", 0.999, low=0.0, high=1.0),
            max_count_age=p.number("max_count_age", 120.0, low=0.0, high=86400.0),
            window=p.number("window", 60.0, low=0.0, high=3600.0),
            current_share=p.number("current_share", 0.5, low=0.0, high=1.0),
        )

    # ------------------------------------------------------------------ scoring

    def _partners(self, ids: IdArray) -> IdArray:
        """For each id: its count series' id (-1: it is not a ratio series or has no partner yet)."""
        size = int(ids.max()) + 1
        self._partner = grow(self._partner, size, -2)
        for sid in np.unique(ids[self._partner[ids] < 0]).tolist():
            key = self.series.key(sid)
            if key.name == self.count_metric:
                self._partner[sid] = -1
                continue
            partner = self.series.lookup(SeriesKey(self.count_metric, key.labels))
            self._partner[sid] = -2 if partner is None else partner  # look again until it appears
        return self._partner[ids]

    def update(self, batch: SampleBatch) -> FloatArray:
        """Learn from ``batch`` and score each ratio sample (count samples score 0)."""
        n = len(batch)
        scores = np.zeros(n)
        if n == 0:
            return scores
        ids, ts, values = batch.series, batch.timestamps, batch.values
        size = int(ids.max()) + 1
        for key in ("events", "trials", "recent_events", "recent_trials"):
            setattr(self, f"_{key}", grow(getattr(self, f"_{key}"), size, 0.0))
        for key in ("last", "rate", "rate_time"):
            setattr(self, f"_{key}", grow(getattr(self, f"_{key}"), size, np.nan))
        partner = self._partners(ids)
        counts = np.flatnonzero((partner == -1) & np.isfinite(values) & np.isfinite(ts))
        if counts.size:  # the denominators first: a ratio and its count come with the same timestamp
            order = counts[np.lexsort((ts[counts], ids[counts]))]
            newer = ~(ts[order] < self._rate_time[ids[order]])
            order = order[newer]
            self._rate[ids[order]] = np.maximum(values[order], 0.0)
            self._rate_time[ids[order]] = ts[order]
        ratio = np.flatnonzero(partner >= 0)
        if ratio.size == 0:
            return scores
        order = ratio[np.lexsort((ts[ratio], ids[ratio]))]
        sids = ids[order]
        # rounds: the r-th sample of each series in round r, so a series' samples stay in order
        first = np.ones(order.size, dtype=bool)
        first[1:] = sids[1:] != sids[:-1]
        starts = np.flatnonzero(first)
        rank = np.arange(order.size) - np.repeat(starts, np.diff(np.append(starts, order.size)))
        for r in range(int(rank.max()) + 1):
            pos = order[rank == r]
            scores[pos] = self._round(ids[pos], ts[pos], values[pos], partner[pos])
        return scores

    def _round(self, sids: IdArray, ts: FloatArray, values: FloatArray, partner: IdArray) -> FloatArray:
        out = np.zeros(sids.size)
        dt = ts - self._last[sids]
        ok = (
            np.isfinite(values) & np.isfinite(ts) & (values >= 0) & (values <= 1) & np.isfinite(dt) & (dt > 0)
        )
        age = np.abs(ts - self._rate_time[partner])
        ok &= np.isfinite(age) & (age <= self.max_count_age)
        # the ratio covers the time since the previous sample, at most max_count_age (after a gap
        # the ratio is still a recent one, not one over the whole gap)
        span = np.where(ok, np.minimum(dt, self.max_count_age), 0.0)
        # a count is capped where it stays finite whatever a sample says (1e15 requests per second)
        trials = np.where(ok, np.floor(np.minimum(self._rate[partner] * span, MAX_TRIALS) + 0.5), 0.0)
        events = np.floor(values * trials + 0.5)
        fade = np.exp(-span / self.window) if self.window > 0 else np.zeros(sids.size)
        recent_k = np.where(ok, self._recent_events[sids] * fade + events, self._recent_events[sids])
        recent_n = np.where(ok, self._recent_trials[sids] * fade + trials, self._recent_trials[sids])
        self._recent_events[sids] = recent_k
        self._recent_trials[sids] = recent_n
        k_all, n_all = np.floor(recent_k + 0.5), np.floor(recent_n + 0.5)
        judged = ok & (n_all >= self.min_requests) & (self._trials[sids] >= self.min_history)
        window_score = np.zeros(sids.size)
        prior_events = self.prior_rate * self.prior_weight
        base = (self._events[sids] + prior_events) / (self._trials[sids] + self.prior_weight)
        kappa = np.minimum(self._trials[sids] + self.prior_weight, self.concentration)
        if judged.any():
            j = np.flatnonzero(judged)
            a, b = base[j] * kappa[j], (1.0 - base[j]) * kappa[j]
            k, m = tail_counts(k_all[j], n_all[j])
            p = _betabinom_sf(k - 1, m.astype(np.int64), a, b)
            p = np.where(k <= 0, 1.0, np.clip(p, 0.0, 1.0))
            window_score[j] = 1.0 - p
            # the sample's own excess over the baseline against the window's: a sample back at the
            # baseline while the window still remembers a spike is not evidence of errors now
            own = np.divide(events[j], trials[j], out=np.full(j.size, -np.inf), where=trials[j] > 0)
            window = np.divide(k_all[j], n_all[j], out=np.zeros(j.size), where=n_all[j] > 0)
            excess = window - base[j]
            current = own - base[j] >= self.current_share * excess
            out[j] = np.where(current, 1.0 - p, 0.0)
            for i, sid in enumerate(sids[j].tolist()):
                self._details[sid] = {
                    "expected": float(base[j][i]),
                    "seen": float(values[j][i]),
                    "window_ratio": float(k_all[j][i] / n_all[j][i]) if n_all[j][i] else 0.0,
                    "errors": int(k_all[j][i]),
                    "requests": int(n_all[j][i]),
                    "p_value": float(p[i]),
                }
        learn = ok & (window_score < self.learn_below)
        keep = np.where(ok, 0.5 ** (np.where(ok, dt, 0.0) / self.half_life), 1.0)
        self._events[sids] = self._events[sids] * keep + np.where(learn, events, 0.0)
        self._trials[sids] = self._trials[sids] * keep + np.where(learn, trials, 0.0)
        self._last[sids] = np.where(np.isfinite(ts), np.fmax(self._last[sids], ts), self._last[sids])
        return out

    def forget(self, ids: IdArray) -> None:
        """Forget the series of ``ids`` (evicted: the ids will name new series)."""
        ids = ids[ids < self._events.shape[0]]
        for key in ("events", "trials", "recent_events", "recent_trials"):
            getattr(self, f"_{key}")[ids] = 0.0
        for key in ("last", "rate", "rate_time"):
            getattr(self, f"_{key}")[ids] = np.nan
        inside = ids[ids < self._partner.shape[0]]
        self._partner[inside] = -2
        # a series whose partner was evicted looks for it again
        self._partner[np.isin(self._partner, ids)] = -2
        for sid in ids.tolist():
            self._details.pop(sid, None)

    def signal_details(self, series_id: int) -> dict[str, Any]:
        """Expected rate vs the ratio seen, with the counts and the tail probability."""
        return dict(self._details.get(series_id, {}))

    # ------------------------------------------------------------------ state

    def _config(self) -> dict[str, Any]:
        return {
            "count_metric": self.count_metric,
            "half_life": self.half_life,
            "concentration": self.concentration,
            "prior_rate": self.prior_rate,
            "prior_weight": self.prior_weight,
            "window": self.window,
        }

    def state_dict(self) -> dict[str, Any]:
        """Learned counts, last sample times and the latest denominators (copies)."""
        return export_state(self, self.name, _STATE_VERSION, self._ARRAYS, self._config(), ())

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` exported (same configuration); partners are found again."""
        restore_state(
            self,
            state,
            self.name,
            _STATE_VERSION,
            self._ARRAYS,
            self._config(),
            (),
            lambda _key, rows: (rows,),
            (),
        )
        self._partner = np.full(self._events.shape[0], -2, dtype=np.int64)
        self._details.clear()


def tail_counts(k: FloatArray, n: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``k`` events of ``n`` trials, scaled down in proportion to at most :data:`TAIL_TRIALS` trials.

    The beta-binomial tail is a sum over the events (time and memory in ``k``): one sample
    claiming 1e15 requests would ask for petabytes. With the baseline's concentration at most
    :data:`MAX_CONCENTRATION`, a window of more than ``TAIL_TRIALS`` trials is judged as one of
    ``TAIL_TRIALS`` at the same ratio: the spread of the ratio grows by at most
    ``(c + TAIL_TRIALS) / TAIL_TRIALS``, 1 %, so the tail is a little more cautious, never bolder.
    """
    shrink = np.minimum(1.0, TAIL_TRIALS / np.maximum(n, 1.0))
    return np.floor(k * shrink + 0.5), np.floor(n * shrink + 0.5)


def tail(k: int, n: int, rate: float, concentration: float) -> float:
    """P(X >= k) for X ~ BetaBinomial(n, rate x c, (1 - rate) x c): for tests and explanations."""
    if k <= 0:
        return 1.0
    a, b = rate * concentration, (1.0 - rate) * concentration
    ks, ns = tail_counts(np.array([float(k)]), np.array([float(n)]))
    return float(_betabinom_sf(ks[0] - 1, int(ns[0]), a, b)) if math.isfinite(a) else 0.0


def _betabinom_sf(k: Any, n: Any, a: Any, b: Any) -> Any:
    """scipy's beta-binomial survival function, imported when first needed (scipy.stats takes
    most of a second to import, which every ``aiops`` command would pay otherwise)."""
    from scipy import stats  # type: ignore[import-untyped]  # noqa: PLC0415 - no stubs; see above

    return stats.betabinom.sf(k, n, a, b)
