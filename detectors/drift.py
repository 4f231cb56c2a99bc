"""Drift of ML models: a current window of a series against its reference window.

Per series, a *reference* window (its first ``reference_size`` samples, or those in a
configured period ``[reference_start, reference_end)``) is frozen, and a *current* window of
the last ``window`` samples after it slides on. Each time a series has ``test_every`` new
samples and a full current window, one test compares the two:

- ``test: distribution`` (a feature or a prediction score): the **population stability
  index** over ``bins`` equal-frequency bins of the reference, and the two-sample
  **Kolmogorov-Smirnov** test (statistic and asymptotic p-value, as ``scipy.stats.ks_2samp``
  with ``method="asymp"``). ``tests`` chooses which of the two can flag.
- ``test: error_rate`` or ``test: accuracy`` (per-prediction outcomes in ``[0, 1]``, e.g. 1 for
  an error): a one-sided two-proportion **z-test** that the current error rate is higher
  (accuracy lower) than the reference's.

**Scores.** A p-value ``p`` maps to ``0.5 * log(p) / log(alpha)`` and a PSI to
``0.5 * psi / psi_threshold``, each clipped to ``[0, 1]``; a series' score is the larger of its
enabled tests. So a score of at least 0.5 (the DetectorBank's default ``min_score``) means
exactly "significant at ``alpha``" or "PSI at or above ``psi_threshold``", 1.0 means ``p <=
alpha**2`` or twice the PSI threshold, and the scale is the same on every series. The newest
sample of a tested series carries the new score; other samples carry their series' latest
earlier result (so scores stay causal), and reference samples score 0. Signals raised from it
are of kind ``drift`` and their details name the test and its figures.

A test on overlapping sliding windows repeated over time is not a single test: the false
alarm rate per test is ``alpha``, per series and day it is larger. Raise ``test_every`` to the
window length for disjoint windows.

State per series lives in fixed-size arrays (``reference_size + window`` values plus a few
figures: 12 KiB at the defaults), so memory is bounded whatever the stream.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorError, grow
from detectors.batch import FloatArray, IdArray, SampleBatch
from detectors.forecast import ParamReader, export_state, order_batch, restore_state
from detectors.signal import SignalKind

_COUNTERS = ("invalid", "out_of_order", "unreferenced", "tests_run")
_STATE_VERSION = 1
#: Bin fractions are floored at this before the PSI's logarithm (an empty bin would be infinite).
PSI_FLOOR = 1e-4
TESTS = ("distribution", "error_rate", "accuracy")
DISTRIBUTION_TESTS = ("ks", "psi")

_COLLECTING, _FROZEN, _UNUSABLE = 0, 1, 2
_NO_TEST, _KS, _PSI, _PROPORTION = 0, 1, 2, 3
#: Series tested at once; bounds the temporary (series x window x bins) comparison array.
_CHUNK = 512


def _stats() -> Any:
    """``scipy.stats``, imported on first use: it takes about half a second to import."""
    from scipy import stats  # type: ignore[import-untyped]  # noqa: PLC0415 - no stubs; slow import

    return stats


def psi(reference_fractions: npt.ArrayLike, current_fractions: npt.ArrayLike) -> FloatArray:
    """Population stability index ``sum((c - r) * ln(c / r))`` over the last axis, fractions floored."""
    r = np.maximum(np.asarray(reference_fractions, dtype=np.float64), PSI_FLOOR)
    c = np.maximum(np.asarray(current_fractions, dtype=np.float64), PSI_FLOOR)
    return np.asarray(np.sum((c - r) * np.log(c / r), axis=-1), dtype=np.float64)


def ks_two_sample(
    reference: FloatArray, ref_count: IdArray, current: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Two-sample KS statistic and asymptotic two-sided p-value, row by row.

    ``reference`` is ``(k, N)`` with the first ``ref_count[i]`` entries of row ``i`` used;
    ``current`` is ``(k, M)``, all used. Ties are handled as ``scipy.stats.ks_2samp`` does.
    """
    k, n_cols = reference.shape
    m = current.shape[1]
    used = np.arange(n_cols)[None, :] < ref_count[:, None]
    vals = np.concatenate([np.where(used, reference, np.inf), current], axis=1)
    weights = np.concatenate(
        [np.where(used, 1.0 / np.maximum(ref_count, 1)[:, None], 0.0), np.full((k, m), -1.0 / m)], axis=1
    )
    order = np.argsort(vals, axis=1, kind="stable")
    sv = np.take_along_axis(vals, order, axis=1)
    cdf_gap = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    # the ECDFs only jump after the last of equal values
    end_of_tie = np.ones_like(sv, dtype=bool)
    end_of_tie[:, :-1] = sv[:, 1:] != sv[:, :-1]
    d = np.max(np.where(end_of_tie, np.abs(cdf_gap), 0.0), axis=1)
    n = ref_count.astype(np.float64)
    en = np.round(n * m / (n + m))
    # d is a difference of two ECDF steps, i / n - j / m: rounded, the float noise of the sums
    # does not make the same statistic a cache miss
    p = np.array([_kolmogorov_sf(round(float(di), 12), float(ei)) for di, ei in zip(d, en, strict=True)])
    return d, p


@functools.lru_cache(maxsize=1 << 16)
def _kolmogorov_sf(d: float, n: float) -> float:
    """``kstwo.sf(d, n)``, memoised: with fixed window sizes ``d`` takes few distinct values.

    scipy computes it exactly, which costs about a millisecond a call; a streaming test asks for
    the same few hundred values over and over.
    """
    return min(1.0, max(0.0, float(_stats().kstwo.sf(d, n))))


def proportion_z_test(
    ref_rate: FloatArray, ref_n: FloatArray, cur_rate: FloatArray, cur_n: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """One-sided pooled two-proportion z-test that the current rate exceeds the reference rate."""
    pooled = (ref_rate * ref_n + cur_rate * cur_n) / (ref_n + cur_n)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / ref_n + 1.0 / cur_n))
    diff = cur_rate - ref_rate
    with np.errstate(divide="ignore", invalid="ignore"):
        # no variance: both windows all 0 or all 1; a difference is then certain, none is no evidence
        z = np.where(
            se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.sign(diff) * np.inf)
        )
    return z, np.asarray(_stats().norm.sf(z), dtype=np.float64)


class DriftDetector:
    """Reference-versus-current drift tests per series (PSI, KS, or a degradation z-test).

    Counters: :attr:`invalid` (not finite, or outside ``[0, 1]`` for the proportion tests),
    :attr:`out_of_order`, :attr:`unreferenced` (samples of series whose reference period
    ended with fewer than ``min_reference`` samples, and samples before the period).
    """

    name = "drift"
    signal_kind = SignalKind.DRIFT
    PARAMS: ClassVar[frozenset[str]] = frozenset(
        {
            "test",
            "tests",
            "reference_size",
            "reference_start",
            "reference_end",
            "min_reference",
            "window",
            "alpha",
            "psi_threshold",
            "bins",
            "test_every",
        }
    )

    def __init__(
        self,
        *,
        test: str = "distribution",
        tests: tuple[str, ...] = DISTRIBUTION_TESTS,
        reference_size: int = 1000,
        reference_start: float | None = None,
        reference_end: float | None = None,
        min_reference: int = 50,
        window: int = 500,
        alpha: float = 0.01,
        psi_threshold: float = 0.25,
        bins: int = 10,
        test_every: int = 1,
    ) -> None:
        self.test = test
        self.tests = tests
        self.reference_size = reference_size
        self.reference_start = -math.inf if reference_start is None else reference_start
        self.reference_end = math.inf if reference_end is None else reference_end
        self.min_reference = min_reference
        self.window = window
        self.alpha = alpha
        self.psi_threshold = psi_threshold
        self.bins = bins
        self.test_every = test_every
        self.invalid = 0
        self.out_of_order = 0
        self.unreferenced = 0
        self.tests_run = 0
        n, m, b = reference_size, window, bins
        self._ref = np.zeros((0, n), np.float64)
        self._ref_n = np.zeros(0, np.int64)
        self._ref_state = np.zeros(0, np.int64)
        self._edges = np.zeros((0, b - 1), np.float64)
        self._ref_frac = np.zeros((0, b), np.float64)
        self._cur = np.zeros((0, m), np.float64)
        self._cur_pos = np.zeros(0, np.int64)
        self._cur_n = np.zeros(0, np.int64)
        self._last_ts = np.zeros(0, np.float64)
        self._since = np.zeros(0, np.int64)
        self._score = np.zeros(0, np.float64)
        self._which = np.zeros(0, np.int64)
        self._psi = np.zeros(0, np.float64)
        self._stat = np.zeros(0, np.float64)
        self._pvalue = np.zeros(0, np.float64)
        self._cur_mean = np.zeros(0, np.float64)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], series: object = None) -> DriftDetector:
        """Build from a parameter mapping; every error names the parameter.

        ``series`` (the registry) is accepted for symmetry with the other detectors and unused.
        """
        del series
        p = ParamReader(cls.name, params, cls.PARAMS)
        test = p.choice("test", "distribution", TESTS)
        raw_tests = params.get("tests", list(DISTRIBUTION_TESTS))
        if (
            not isinstance(raw_tests, list | tuple)
            or not raw_tests
            or any(t not in DISTRIBUTION_TESTS for t in raw_tests)
        ):
            raise DetectorError(
                f"drift.tests: expected a non-empty list of {list(DISTRIBUTION_TESTS)}, got {raw_tests!r}"
            )
        if test != "distribution" and "tests" in params:
            raise DetectorError(f"drift.tests: applies to test 'distribution' only, not {test!r}")
        reference_size = p.integer("reference_size", 1000, low=10, high=1_000_000)
        window = p.integer("window", 500, low=10, high=1_000_000)
        min_reference = p.integer("min_reference", min(50, reference_size), low=10, high=reference_size)
        start = p.optional_number("reference_start", None, low=-math.inf)
        end = p.optional_number("reference_end", None, low=-math.inf)
        if start is not None and end is not None and end <= start:
            raise DetectorError(
                f"drift.reference_end: must be after reference_start ({start:g}), got {end:g}"
            )
        return cls(
            test=test,
            tests=tuple(dict.fromkeys(str(t) for t in raw_tests)),
            reference_size=reference_size,
            reference_start=start,
            reference_end=end,
            min_reference=min_reference,
            window=window,
            alpha=p.number("alpha", 0.01, low=0.0, high=0.5, low_open=True),
            psi_threshold=p.number("psi_threshold", 0.25, low=0.0, low_open=True),
            bins=p.integer("bins", 10, low=2, high=100),
            test_every=p.integer("test_every", 1, low=1),
        )

    # ------------------------------------------------------------------ state arrays

    def forget(self, ids: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        """Forget the series of ``ids``: the next sample under one of them starts a new reference."""
        ids = ids[ids < self._ref_n.shape[0]]
        for attr in ("_ref_n", "_cur_pos", "_cur_n", "_since"):
            getattr(self, attr)[ids] = 0
        self._ref_state[ids] = _COLLECTING
        self._last_ts[ids] = -np.inf
        self._score[ids] = 0.0
        self._which[ids] = _NO_TEST
        for attr in ("_psi", "_stat", "_pvalue", "_cur_mean"):
            getattr(self, attr)[ids] = np.nan
        for attr in ("_ref", "_edges", "_ref_frac", "_cur"):
            getattr(self, attr)[ids] = 0.0

    def _ensure(self, size: int) -> None:
        if size <= self._ref_n.shape[0]:
            return
        self._ref_n = grow(self._ref_n, size, 0)
        rows = self._ref_n.shape[0]
        self._ref_state = grow(self._ref_state, rows, _COLLECTING)
        self._cur_pos = grow(self._cur_pos, rows, 0)
        self._cur_n = grow(self._cur_n, rows, 0)
        self._last_ts = grow(self._last_ts, rows, -np.inf)
        self._since = grow(self._since, rows, 0)
        self._score = grow(self._score, rows, 0.0)
        self._which = grow(self._which, rows, _NO_TEST)
        self._psi = grow(self._psi, rows, np.nan)
        self._stat = grow(self._stat, rows, np.nan)
        self._pvalue = grow(self._pvalue, rows, np.nan)
        self._cur_mean = grow(self._cur_mean, rows, np.nan)
        for attr in ("_ref", "_edges", "_ref_frac", "_cur"):
            old = getattr(self, attr)
            new = np.zeros((rows, old.shape[1]), np.float64)
            new[: old.shape[0]] = old
            setattr(self, attr, new)

    # ------------------------------------------------------------------ streaming

    def update(self, batch: SampleBatch) -> FloatArray:
        """Learn ``batch`` and score each sample with its series' latest drift result."""
        scores = np.zeros(len(batch), dtype=np.float64)
        if len(batch) == 0:
            return scores
        if int(batch.series.min()) < 0:
            raise DetectorError("drift: batch holds unregistered series ids; drop them first")
        self._ensure(int(batch.series.max()) + 1)

        # order_batch drops; keep the batch positions to scatter scores back
        positions = np.arange(len(batch), dtype=np.float64)
        tagged = SampleBatch(
            batch.series, batch.timestamps, np.where(np.isfinite(batch.values), positions, np.nan)
        )
        samples = order_batch(tagged, self._last_ts)
        self.invalid += samples.invalid
        self.out_of_order += samples.out_of_order
        pos = samples.values.astype(np.int64)
        s, t, v = samples.series, samples.timestamps, batch.values[pos]
        scores[pos] = self._score[s]  # the latest earlier result, until a new test says otherwise
        if self.test != "distribution":
            ok = (v >= 0.0) & (v <= 1.0)
            self.invalid += int(ok.size - np.count_nonzero(ok))
            scores[pos[~ok]] = 0.0
            s, t, v, pos = s[ok], t[ok], v[ok], pos[ok]
        if s.size == 0:
            return scores
        newest = np.ones(s.size, dtype=bool)
        newest[:-1] = s[1:] != s[:-1]
        self._last_ts[s[newest]] = t[newest]

        to_cur = self._fill_reference(s, t, v)
        scores[pos[~to_cur]] = 0.0
        self._fill_current(s[to_cur], v[to_cur])
        self._run_tests(np.unique(s[to_cur]))
        # the newest sample of each series carries the result computed with it
        last_cur = to_cur & newest
        scores[pos[last_cur]] = self._score[s[last_cur]]
        return scores

    def _group_cumsum(self, s: IdArray, flags: npt.NDArray[np.bool_]) -> IdArray:
        """Running count of ``flags`` within each run of equal series ids (inclusive)."""
        c = np.cumsum(flags.astype(np.int64))
        starts = np.r_[True, s[1:] != s[:-1]]
        base = np.maximum.accumulate(np.where(starts, c - flags, 0))
        return c - base

    def _fill_reference(self, s: IdArray, t: FloatArray, v: FloatArray) -> npt.NDArray[np.bool_]:
        """Put reference samples in place, freeze finished references; True where a sample is current."""
        collecting: npt.NDArray[np.bool_] = np.asarray(self._ref_state[s] == _COLLECTING, dtype=bool)
        before = collecting & (t < self.reference_start)
        in_period = collecting & ~before & (t < self.reference_end)
        slot = self._ref_n[s] + self._group_cumsum(s, in_period) - 1
        to_ref = in_period & (slot < self.reference_size)
        self._ref[s[to_ref], slot[to_ref]] = v[to_ref]
        np.add.at(self._ref_n, s[to_ref], 1)
        # a reference ends when full or when a sample at or past the period's end arrives
        ended = collecting & ~before & ~to_ref
        done = np.unique(np.concatenate([s[ended], s[to_ref][self._ref_n[s[to_ref]] >= self.reference_size]]))
        self._freeze(done)
        unusable: npt.NDArray[np.bool_] = np.asarray(self._ref_state[s] == _UNUSABLE, dtype=bool)
        self.unreferenced += int(np.count_nonzero(before | (unusable & ~to_ref)))
        return ~before & ~to_ref & ~unusable

    def _freeze(self, ids: IdArray) -> None:
        if ids.size == 0:
            return
        small = self._ref_n[ids] < self.min_reference
        self._ref_state[ids[small]] = _UNUSABLE
        ok = ids[~small]
        self._ref_state[ok] = _FROZEN
        qs = np.arange(1, self.bins) / self.bins
        for sid in ok.tolist():
            n = int(self._ref_n[sid])
            with np.errstate(over="ignore", invalid="ignore"):
                self._freeze_row(sid, n, qs)

    def _freeze_row(self, sid: int, n: int, qs: FloatArray) -> None:
        row = np.sort(self._ref[sid, :n])
        self._ref[sid, :n] = row
        self._edges[sid] = np.quantile(row, qs)
        self._ref_frac[sid] = self._fractions(row[None, :], self._edges[sid][None, :])[0]

    def _fractions(self, values: FloatArray, edges: FloatArray) -> FloatArray:
        """Share of each row's values per bin; bin ``i`` is ``(edges[i-1], edges[i]]``."""
        k, m = values.shape
        idx = np.sum(values[:, :, None] > edges[:, None, :], axis=2)
        flat = (np.arange(k)[:, None] * self.bins + idx).ravel()
        counts = np.bincount(flat, minlength=k * self.bins).reshape(k, self.bins)
        return np.asarray(counts / m, dtype=np.float64)

    def _fill_current(self, s: IdArray, v: FloatArray) -> None:
        if s.size == 0:
            return
        rank = self._group_cumsum(s, np.ones(s.size, dtype=bool)) - 1
        per_series = np.zeros(self._cur_n.shape[0], np.int64)
        np.add.at(per_series, s, 1)
        keep = rank >= per_series[s] - self.window
        offset = np.maximum(per_series[s] - self.window, 0)
        slot = (self._cur_pos[s] + rank - offset) % self.window
        self._cur[s[keep], slot[keep]] = v[keep]
        touched = np.unique(s)
        added = np.minimum(per_series[touched], self.window)
        self._cur_pos[touched] = (self._cur_pos[touched] + added) % self.window
        self._cur_n[touched] = np.minimum(self._cur_n[touched] + added, self.window)
        self._since[touched] += per_series[touched]

    def _p_score(self, p: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):
            return np.clip(0.5 * np.log(p) / math.log(self.alpha), 0.0, 1.0)

    def _run_tests(self, touched: IdArray) -> None:
        due = touched[
            (self._ref_state[touched] == _FROZEN)
            & (self._cur_n[touched] >= self.window)
            & (self._since[touched] >= self.test_every)
        ]
        for start in range(0, due.size, _CHUNK):
            ids = due[start : start + _CHUNK]
            self._since[ids] = 0
            self.tests_run += int(ids.size)
            cur = self._cur[ids]
            # values near the float limits overflow sums and quantile interpolation: inf, not a crash
            with np.errstate(over="ignore", invalid="ignore"):
                self._cur_mean[ids] = cur.mean(axis=1)
                if self.test == "distribution":
                    self._test_distribution(ids, cur)
                else:
                    self._test_proportion(ids, cur)

    def _test_distribution(self, ids: IdArray, cur: FloatArray) -> None:
        value = psi(self._ref_frac[ids], self._fractions(cur, self._edges[ids]))
        d, p = ks_two_sample(self._ref[ids], self._ref_n[ids], cur)
        self._psi[ids], self._stat[ids], self._pvalue[ids] = value, d, p
        ks_score = self._p_score(p) if "ks" in self.tests else np.zeros(ids.size)
        psi_score = (
            np.clip(0.5 * value / self.psi_threshold, 0.0, 1.0) if "psi" in self.tests else np.zeros(ids.size)
        )
        self._score[ids] = np.maximum(ks_score, psi_score)
        self._which[ids] = np.where(psi_score > ks_score, _PSI, _KS)

    def _test_proportion(self, ids: IdArray, cur: FloatArray) -> None:
        n_ref = self._ref_n[ids].astype(np.float64)
        used = np.arange(self.reference_size)[None, :] < self._ref_n[ids][:, None]
        ref_rate = np.where(used, self._ref[ids], 0.0).sum(axis=1) / n_ref
        cur_rate = cur.mean(axis=1)
        if self.test == "accuracy":  # degradation is the error rate 1 - accuracy going up
            ref_rate, cur_rate = 1.0 - ref_rate, 1.0 - cur_rate
        z, p = proportion_z_test(ref_rate, n_ref, cur_rate, np.full(ids.size, float(self.window)))
        self._stat[ids] = z
        self._pvalue[ids] = p
        self._score[ids] = self._p_score(p)
        self._which[ids] = _PROPORTION

    # ------------------------------------------------------------------ signals and checkpoints

    def signal_details(self, series_id: int) -> dict[str, Any]:
        """The test that decided the latest score of ``series_id`` and its figures."""
        if series_id >= self._which.shape[0] or self._which[series_id] == _NO_TEST:
            return {}
        which = int(self._which[series_id])
        n_ref = int(self._ref_n[series_id])
        details: dict[str, Any] = {
            "alpha": self.alpha,
            "p_value": float(self._pvalue[series_id]),
            "reference_size": n_ref,
            "window": self.window,
        }
        if which == _PROPORTION:
            ref_mean = float(np.mean(self._ref[series_id, :n_ref]))
            details |= {
                "test": self.test,
                "z": float(self._stat[series_id]),
                "reference_mean": ref_mean,
                "current_mean": float(self._cur_mean[series_id]),
            }
        else:
            details |= {
                "test": "psi" if which == _PSI else "ks",
                "psi": float(self._psi[series_id]),
                "psi_threshold": self.psi_threshold,
                "ks_statistic": float(self._stat[series_id]),
            }
        return details

    _ARRAYS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("ref", 2),
        ("ref_n", 1),
        ("ref_state", 1),
        ("edges", 2),
        ("ref_frac", 2),
        ("cur", 2),
        ("cur_pos", 1),
        ("cur_n", 1),
        ("last_ts", 1),
        ("since", 1),
        ("score", 1),
        ("which", 1),
        ("psi", 1),
        ("stat", 1),
        ("pvalue", 1),
        ("cur_mean", 1),
    )
    _INTS: ClassVar[frozenset[str]] = frozenset({"ref_n", "ref_state", "cur_pos", "cur_n", "since", "which"})

    def _config(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "reference_size": self.reference_size,
            "window": self.window,
            "bins": self.bins,
        }

    def _shape(self, key: str, rows: int) -> tuple[int, ...]:
        widths = {
            "ref": self.reference_size,
            "edges": self.bins - 1,
            "ref_frac": self.bins,
            "cur": self.window,
        }
        return (rows, widths[key]) if key in widths else (rows,)

    def state_dict(self) -> dict[str, Any]:
        """Reference and current windows, bins and the latest results per series (copies)."""
        return export_state(self, self.name, _STATE_VERSION, self._ARRAYS, self._config(), _COUNTERS)

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` exported, for the same test, sizes and bins."""
        restore_state(
            self,
            state,
            self.name,
            _STATE_VERSION,
            self._ARRAYS,
            self._config(),
            _COUNTERS,
            self._shape,
            self._INTS,
        )
