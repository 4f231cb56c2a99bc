"""The machinery every learned streaming detector shares: input hygiene, causal rounds, state.

A learned detector keeps its per-series state in arrays indexed by series id. :class:`SeriesState`
owns those arrays (grown together, exported and restored together). :class:`StreamingDetector`
turns a :class:`~detectors.batch.SampleBatch` into *rounds* of at most one sample per series, in
timestamp order within each series, and hands each round to :meth:`StreamingDetector.step`,
vectorised over the series of the round. So the score of a sample depends only on the samples of
its series at or before it, however the samples are split into batches or interleaved.

Bad input never reaches :meth:`~StreamingDetector.step`; it scores 0 and is counted:
:attr:`~StreamingDetector.invalid` (value or timestamp not finite, or beyond
:data:`MAX_ABS_VALUE` / :data:`MAX_ABS_TIMESTAMP`),
:attr:`~StreamingDetector.out_of_order` (older than the series' newest accepted sample) and
:attr:`~StreamingDetector.duplicates` (same timestamp as the series' newest accepted sample).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorError, grow
from detectors.batch import FloatArray, IdArray, SampleBatch
from detectors.signal import SignalKind

#: Values beyond this magnitude are treated as invalid: no metric is that large, and learned
#: profiles are kept in float32.
MAX_ABS_VALUE = 1e30

#: Timestamps (Unix seconds) beyond this magnitude are invalid (past the year 5000).
MAX_ABS_TIMESTAMP = 1e11

#: Version of the envelope :meth:`StreamingDetector.state_dict` writes.
STATE_VERSION = 1

#: Scores are ``-log10(p) / LOG10_P_AT_ONE`` for a tail probability ``p``: a score of 1 means
#: ``p <= 1e-10``, 0.5 means ``p = 1e-5``, 0.3 means ``p = 1e-3``.
LOG10_P_AT_ONE = 10.0


def p_to_score(p: npt.NDArray[np.floating[Any]]) -> FloatArray:
    """Tail probabilities as scores in ``[0, 1]`` on a log scale (see :data:`LOG10_P_AT_ONE`)."""
    p64 = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -np.log10(np.clip(p64, 1e-300, 1.0)) / LOG10_P_AT_ONE
    return np.clip(np.nan_to_num(s, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def score_to_p(score: float) -> float:
    """The tail probability a score in ``[0, 1]`` stands for (inverse of :func:`p_to_score`)."""
    return float(10.0 ** (-LOG10_P_AT_ONE * score))


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """One per-series state array: name, dtype, initial value and columns per series (0: a vector)."""

    name: str
    dtype: type[np.generic]
    fill: float
    width: int = 0


class SeriesState:
    """Named per-series arrays, grown together and exported together."""

    def __init__(self, specs: Sequence[ArraySpec]) -> None:
        self.specs = {spec.name: spec for spec in specs}
        if len(self.specs) != len(specs):
            msg = "state array names must be unique"
            raise ValueError(msg)
        self.arrays: dict[str, np.ndarray[Any, Any]] = {
            spec.name: np.full((0, spec.width) if spec.width else 0, spec.fill, dtype=spec.dtype)
            for spec in specs
        }
        self.size = 0

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        return self.arrays[name]

    def ensure(self, size: int) -> None:
        """Room for series ids below ``size``."""
        if size <= self.size:
            return
        for name, spec in self.specs.items():
            self.arrays[name] = grow(self.arrays[name], size, spec.fill)
        self.size = min(a.shape[0] for a in self.arrays.values())

    def reset(self, ids: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        """Put the rows of ``ids`` back to their initial values (the series is forgotten)."""
        ids = ids[ids < self.size]
        if ids.size:
            for name, spec in self.specs.items():
                self.arrays[name][ids] = spec.fill

    @property
    def nbytes(self) -> int:
        """Bytes held by the state arrays (allocated capacity)."""
        return sum(int(a.nbytes) for a in self.arrays.values())

    def bytes_per_series(self) -> int:
        """Bytes of state one series costs."""
        total = 0
        for spec in self.specs.values():
            total += np.dtype(spec.dtype).itemsize * max(spec.width, 1)
        return total

    def export(self, used: int) -> dict[str, np.ndarray[Any, Any]]:
        """Copies of the first ``used`` rows of every array."""
        return {name: a[:used].copy() for name, a in self.arrays.items()}

    def restore(self, arrays: Mapping[str, Any], where: str) -> int:
        """Load exported arrays; returns the number of series restored."""
        missing = sorted(set(self.specs) - set(arrays))
        if missing:
            msg = f"{where}: state lacks array(s) {missing}"
            raise DetectorError(msg)
        rows: int | None = None
        loaded: dict[str, np.ndarray[Any, Any]] = {}
        for name, spec in self.specs.items():
            a = np.asarray(arrays[name], dtype=spec.dtype)
            want = (spec.width,) if spec.width else ()
            if a.ndim != 1 + len(want) or a.shape[1:] != want:
                msg = f"{where}: state array {name!r} has shape {a.shape}, expected (n, {want})"
                raise DetectorError(msg)
            if rows is None:
                rows = a.shape[0]
            elif a.shape[0] != rows:
                msg = f"{where}: state arrays differ in length ({name!r} has {a.shape[0]}, others {rows})"
                raise DetectorError(msg)
            loaded[name] = a
        n = rows or 0
        for name, spec in self.specs.items():
            fresh = np.full((n, spec.width) if spec.width else n, spec.fill, dtype=spec.dtype)
            fresh[:n] = loaded[name]
            self.arrays[name] = fresh
        self.size = n
        return n


# ---------------------------------------------------------------- parameter validation


def check_float(
    where: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float within bounds, else a DetectorError naming ``where.name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"{where}.{name}: expected a finite number, got {value!r}"
        raise DetectorError(msg)
    v = float(value)
    if low is not None and (v <= low if low_open else v < low):
        msg = f"{where}.{name}: must be {'>' if low_open else '>='} {low}, got {v}"
        raise DetectorError(msg)
    if high is not None and (v >= high if high_open else v > high):
        msg = f"{where}.{name}: must be {'<' if high_open else '<='} {high}, got {v}"
        raise DetectorError(msg)
    return v


def check_int(where: str, name: str, value: Any, *, low: int, high: int | None = None) -> int:
    """``value`` as an int within ``[low, high]``, else a DetectorError naming ``where.name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{where}.{name}: expected an integer, got {value!r}"
        raise DetectorError(msg)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        msg = f"{where}.{name}: must be {bounds}, got {value}"
        raise DetectorError(msg)
    return int(value)


def check_bool(where: str, name: str, value: Any) -> bool:
    """``value`` as a bool, else a DetectorError naming ``where.name``."""
    if not isinstance(value, bool):
        msg = f"{where}.{name}: expected true or false, got {value!r}"
        raise DetectorError(msg)
    return value


def merge_params(where: str, defaults: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``params``; unknown names are an error naming them."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        msg = f"{where}: unknown parameter(s) {unknown}; expected some of {sorted(defaults)}"
        raise DetectorError(msg)
    return {**defaults, **params}


# ---------------------------------------------------------------- rounds


def finish_scores(scores: FloatArray) -> FloatArray:
    """``scores`` with anything not finite made 0 (1 for +inf) and clipped to ``[0, 1]``."""
    np.nan_to_num(scores, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(scores, 0.0, 1.0, out=scores)
    return scores


def rounds(series: IdArray, timestamps: FloatArray, index: IdArray, scratch_size: int) -> list[IdArray]:
    """Split the samples ``index`` into rounds of at most one sample per series.

    Round ``k`` holds the ``k``-th oldest sample of each series (ties keep batch order), so
    running the rounds in order processes every series in timestamp order.
    """
    if index.size == 0:
        return []
    s = series[index]
    # Fast path: every series at most once (the common case for a batch from many series).
    scratch = np.empty(scratch_size, dtype=np.int64)
    positions = np.arange(index.size, dtype=np.int64)
    scratch[s] = positions
    if bool((scratch[s] == positions).all()):
        return [index]
    order = np.lexsort((timestamps[index], s))  # stable: equal timestamps keep batch order
    ss = s[order]
    start = np.ones(order.size, dtype=bool)
    start[1:] = ss[1:] != ss[:-1]
    group_start = np.maximum.accumulate(np.where(start, positions, 0))
    rank = positions - group_start
    by_rank = index[order[np.argsort(rank, kind="stable")]]
    counts = np.bincount(rank)
    return [r.astype(np.int64, copy=False) for r in np.split(by_rank, np.cumsum(counts)[:-1])]


class StreamingDetector(ABC):
    """Base of the learned detectors: one :meth:`step` per round of distinct series.

    Subclasses declare their per-series arrays in :meth:`array_specs`, their configuration in
    :meth:`params`, and score one round in :meth:`step`, which also learns from it.
    """

    #: The configuration name; subclasses set it.
    kind: ClassVar[str] = ""
    signal_kind: SignalKind = SignalKind.ANOMALY

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.kind
        self.invalid = 0
        self.out_of_order = 0
        self.duplicates = 0
        self.state = SeriesState([ArraySpec("last_ts", np.float64, -np.inf), *self.array_specs()])
        self._used = 0

    # -- to implement ------------------------------------------------------------------------

    @abstractmethod
    def array_specs(self) -> list[ArraySpec]:
        """The per-series state arrays this detector learns."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The configuration, as given (after defaults), JSON-ready."""

    @abstractmethod
    def step(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """Score and learn one round: distinct series, finite values, each newer than before."""

    # -- the contract -------------------------------------------------------------------------

    def update(self, batch: SampleBatch) -> FloatArray:
        """Score each sample in ``[0, 1]`` (batch order) and learn from it, causally."""
        scores = np.zeros(len(batch), dtype=np.float64)
        for idx, ids, ts, values in self.accepted_rounds(batch):
            scores[idx] = self.step(ids, ts, values)
        return finish_scores(scores)

    def accepted_rounds(
        self, batch: SampleBatch
    ) -> Iterator[tuple[IdArray, IdArray, FloatArray, FloatArray]]:
        """The batch's usable samples as rounds ``(index, ids, timestamps, values)``.

        Counts what it skips; marks each round's samples as the newest of their series once the
        caller has consumed the round.
        """
        n = len(batch)
        if n == 0:
            return
        if int(batch.series.min()) < 0:
            msg = f"{self.name}: batch holds unregistered series ids; drop them first"
            raise DetectorError(msg)
        size = int(batch.series.max()) + 1
        self.ensure(size)
        finite = (np.abs(batch.values) <= MAX_ABS_VALUE) & (np.abs(batch.timestamps) <= MAX_ABS_TIMESTAMP)
        n_ok = int(np.count_nonzero(finite))
        self.invalid += n - n_ok
        index = np.arange(n, dtype=np.int64) if n_ok == n else np.flatnonzero(finite).astype(np.int64)
        last_ts = self.state["last_ts"]
        for round_index in rounds(batch.series, batch.timestamps, index, size):
            idx = round_index
            ids = batch.series[idx]
            ts = batch.timestamps[idx]
            prev = last_ts[ids]
            fresh = ts > prev
            if not bool(fresh.all()):
                stale = ~fresh
                dup = int(np.count_nonzero(ts[stale] == prev[stale]))
                self.duplicates += dup
                self.out_of_order += int(np.count_nonzero(stale)) - dup
                idx, ids, ts = idx[fresh], ids[fresh], ts[fresh]
                if idx.size == 0:
                    continue
            yield idx, ids, ts, batch.values[idx]
            last_ts[ids] = ts

    def ensure(self, size: int) -> None:
        """Room for series ids below ``size``."""
        self.state.ensure(size)
        self._used = max(self._used, size)

    def forget(self, ids: IdArray) -> None:
        """Forget the series of ``ids``: the next sample under one of them starts a new series."""
        self.state.reset(ids)

    @property
    def skipped(self) -> int:
        """All samples not learned from: invalid, out of order or duplicate."""
        return self.invalid + self.out_of_order + self.duplicates

    def signal_details(self, series_id: int) -> dict[str, Any]:
        """The detector kind; subclasses add what explains their scores."""
        return {"detector": self.kind}

    def state_dict(self) -> dict[str, Any]:
        """A versioned envelope: detector kind, parameters, counters and per-series arrays."""
        return {
            "version": STATE_VERSION,
            "kind": self.kind,
            "params": self.params(),
            "counters": {
                "invalid": self.invalid,
                "out_of_order": self.out_of_order,
                "duplicates": self.duplicates,
            },
            "arrays": self.state.export(self._used),
            "extra": self.extra_state(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output of a detector of the same kind and parameters."""
        where = self.name
        if state.get("version") != STATE_VERSION:
            msg = f"{where}: unsupported state version {state.get('version')!r} (expected {STATE_VERSION})"
            raise DetectorError(msg)
        if state.get("kind") != self.kind:
            msg = f"{where}: state is of detector {state.get('kind')!r}, not {self.kind!r}"
            raise DetectorError(msg)
        if state.get("params") != self.params():
            msg = f"{where}: state was learned with other parameters {state.get('params')!r}"
            raise DetectorError(msg)
        arrays = state.get("arrays")
        if not isinstance(arrays, Mapping):
            msg = f"{where}: state lacks its arrays"
            raise DetectorError(msg)
        self._used = self.state.restore(arrays, where)
        counters = state.get("counters") or {}
        self.invalid = int(counters.get("invalid", 0))
        self.out_of_order = int(counters.get("out_of_order", 0))
        self.duplicates = int(counters.get("duplicates", 0))
        self.load_extra_state(state.get("extra") or {})

    def extra_state(self) -> dict[str, Any]:
        """State that is not per series (a shared model); none by default."""
        return {}

    def load_extra_state(self, extra: Mapping[str, Any]) -> None:
        """Restore :meth:`extra_state` output."""
        del extra

    def state_bytes_per_series(self) -> int:
        """Bytes of per-series state one series costs."""
        return self.state.bytes_per_series()


#: Builds a detector from its parameters.
Factory = Callable[[Mapping[str, Any]], StreamingDetector]
