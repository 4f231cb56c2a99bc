"""The forecaster contract and the helpers every forecaster family shares.

A forecaster learns many series at once from :class:`~detectors.batch.SampleBatch` es and
predicts each series ``horizon`` steps past its newest sample: a point forecast and an upper
prediction bound at a configured quantile. Steps are ``step`` seconds (the sampling interval the
forecaster is configured for), so step ``k`` of series ``i`` is at ``last_timestamp[i] + k * step``.

Like detectors, forecasters keep per-series state in arrays indexed by series id, are causal
(a forecast depends only on samples already given to :meth:`Forecaster.update`), count the
samples they refuse instead of skipping them silently, and export and restore their state.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorError
from detectors.batch import FloatArray, IdArray, SampleBatch

#: The transforms a forecaster may model its series in; see :class:`Transform`.
TRANSFORMS = ("none", "log1p", "asinh")

#: The most seasonal slots (bins) one series may hold: Holt-Winters' ``season / max(step,
#: resolution)``, seasonal naive's ``week / max(step, resolution)``. Each is an array row per
#: series, allocated when the series is first seen, so the count is bounded before any is made.
#: The defaults need 48 and 2016; a week of 10-second bins is 60480. 100000 slots cost 1.6 MB
#: (Holt-Winters) and 2.4 MB (seasonal naive) per series; a season of 1e12 s would ask for gigabytes.
MAX_SEASON_SLOTS = 100_000

#: The most steps a forecast may reach ahead (``max_horizon``, the forecast detector's horizon,
#: ``aiops forecast --horizon``): the forecasts are arrays of this many steps per series.
MAX_HORIZON_STEPS = 10_000


@runtime_checkable
class Forecaster(Protocol):
    """Forecasts many series at once, ``horizon`` steps of ``step`` seconds ahead."""

    name: str
    step: float
    quantile: float
    #: Samples refused because a value or timestamp was not finite (or the id negative).
    invalid: int
    #: Samples refused because they were not newer than their series' newest.
    out_of_order: int

    def update(self, batch: SampleBatch) -> None:
        """Learn from ``batch`` (any order, any mix of series)."""
        ...

    def forecast(self, series_ids: Sequence[int] | IdArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        """``(mean, upper)``, each of shape ``(len(series_ids), horizon)``.

        ``mean`` is the point forecast and ``upper`` the bound the value stays under with
        probability ``quantile``. Both are NaN for a series that has not been learned yet.
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """The learned state, as plain values and numpy arrays."""
        ...

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore state produced by :meth:`state_dict`."""
        ...


class ParamReader:
    """Reads and validates a forecaster's or detector's parameters; errors name owner and key."""

    def __init__(self, owner: str, raw: Mapping[str, Any], known: Iterable[str]) -> None:
        if not isinstance(raw, Mapping):
            raise DetectorError(f"{owner}: parameters must be a mapping, got {type(raw).__name__}")
        known_set = set(known)
        unknown = sorted(str(k) for k in raw if k not in known_set)
        if unknown:
            raise DetectorError(
                f"{owner}: unknown parameter(s) {unknown}; expected some of {sorted(known_set)}"
            )
        self.owner = owner
        self.raw = raw

    def _fail(self, key: str, expected: str, value: Any) -> DetectorError:
        return DetectorError(f"{self.owner}.{key}: expected {expected}, got {value!r}")

    def number(
        self,
        key: str,
        default: float,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
    ) -> float:
        """A finite number within the given bounds (closed unless ``*_open``)."""
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._fail(key, "a finite number", value)
        out = float(value)
        too_low = low is not None and (out <= low if low_open else out < low)
        too_high = high is not None and (out >= high if high_open else out > high)
        if too_low or too_high:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            left = "(" if low_open or low is None else "["
            right = ")" if high_open or high is None else "]"
            interval = f"{left}{lo}, {hi}{right}"
            raise self._fail(key, f"a number in {interval}", value)
        return out

    def slots(self, key: str, span: float, width: float) -> None:
        """Refuse a ``span`` (seconds) of more than :data:`MAX_SEASON_SLOTS` slots of ``width`` seconds."""
        if not span / width <= MAX_SEASON_SLOTS:
            limit = f"{MAX_SEASON_SLOTS * width:g}"
            raise self._fail(
                key,
                f"at most {MAX_SEASON_SLOTS} slots of max(step, resolution) = {width:g} s, i.e. {limit} s",
                span,
            )

    def optional_number(
        self, key: str, default: float | None, *, low: float, low_open: bool = False
    ) -> float | None:
        """A number at or above ``low``; ``default`` when absent; None when given as null."""
        if key not in self.raw:
            return default
        if self.raw[key] is None:
            return None
        return self.number(key, 0.0, low=low, low_open=low_open)

    def integer(self, key: str, default: int, *, low: int, high: int | None = None) -> int:
        """An integer in ``[low, high]``."""
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, "an integer", value)
        if value < low or (high is not None and value > high):
            raise self._fail(key, f"an integer in [{low}, {'inf' if high is None else high}]", value)
        return int(value)

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        """One of ``choices``."""
        value = self.raw.get(key, default)
        if value not in choices:
            raise self._fail(key, f"one of {list(choices)}", value)
        return str(value)

    def boolean(self, key: str, default: bool) -> bool:
        """True or false."""
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value


@dataclass(frozen=True, slots=True)
class Transform:
    """A monotone transform the series is modelled in; forecasts are mapped back.

    ``asinh`` behaves like a logarithm for large values (demand is multiplicative: noise and
    seasonal swings grow with the level) yet is defined for zero and negative values, so it
    needs no per-series decision. Because the transform is monotone, a quantile of the
    transformed value maps back to the same quantile of the value; the point forecast maps
    back to the median rather than the mean.
    """

    kind: str = "asinh"

    def forward(self, values: FloatArray) -> FloatArray:
        """Values into model space."""
        if self.kind == "asinh":
            return np.arcsinh(values)
        if self.kind == "log1p":
            return np.log1p(np.maximum(values, 0.0))
        return values

    def inverse(self, values: FloatArray) -> FloatArray:
        """Model space back to values (overflow saturates at the largest float)."""
        with np.errstate(over="ignore"):
            if self.kind == "asinh":
                out = np.sinh(values)
            elif self.kind == "log1p":
                out = np.expm1(values)
            else:
                return values
        return np.clip(out, -np.finfo(np.float64).max, np.finfo(np.float64).max)


@dataclass(frozen=True, slots=True)
class OrderedSamples:
    """The usable samples of a batch, sorted by (series, timestamp), with their rank per series."""

    series: IdArray
    timestamps: FloatArray
    values: FloatArray
    rank: IdArray
    invalid: int
    out_of_order: int

    def __len__(self) -> int:
        return int(self.series.shape[0])

    def newest(self) -> npt.NDArray[np.bool_]:
        """True at the last (newest) sample of each series."""
        last = np.ones(len(self), dtype=bool)
        last[:-1] = self.series[1:] != self.series[:-1]
        return last


def order_batch(batch: SampleBatch, last_ts: FloatArray) -> OrderedSamples:
    """Sort ``batch`` by (series, time), dropping and counting unusable samples.

    A sample is invalid when its value or timestamp is not finite or its series id is negative,
    and out of order when it is not newer than its series' newest learned sample (``last_ts``,
    indexed by series id and at least as long as the largest id plus one) or than the previous
    kept sample of its series in the batch (duplicate timestamps count here).
    """
    ok = np.isfinite(batch.values) & np.isfinite(batch.timestamps) & (batch.series >= 0)
    invalid = int(ok.size - np.count_nonzero(ok))
    s, t, v = batch.series[ok], batch.timestamps[ok], batch.values[ok]
    order = np.lexsort((t, s))
    s, t, v = s[order], t[order], v[order]
    first = np.ones(s.size, dtype=bool)
    first[1:] = s[1:] != s[:-1]
    # newer than the series' state, and strictly increasing within the batch
    keep = t > last_ts[s]
    keep[1:] &= first[1:] | (t[1:] > t[:-1])
    out_of_order = int(keep.size - np.count_nonzero(keep))
    s, t, v = s[keep], t[keep], v[keep]
    rank = np.zeros(s.size, dtype=np.int64)
    if s.size:
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        lengths = np.diff(np.r_[starts, s.size])
        rank = np.arange(s.size, dtype=np.int64) - np.repeat(starts, lengths)
    return OrderedSamples(s, t, v, rank, invalid, out_of_order)


def as_ids(series_ids: Sequence[int] | IdArray) -> IdArray:
    """Series ids as a one-dimensional int64 array."""
    ids = np.asarray(series_ids, dtype=np.int64).reshape(-1)
    if ids.size and int(ids.min()) < 0:
        raise DetectorError(f"forecast: series ids must be non-negative, got {int(ids.min())}")
    return ids


def check_horizon(owner: str, horizon: int, limit: int | None = None) -> None:
    """Reject a horizon that is not a positive integer (or exceeds ``limit``)."""
    try:
        steps = operator.index(horizon)
    except TypeError:
        steps = 0
    if isinstance(horizon, bool) or steps < 1:
        raise DetectorError(f"{owner}: horizon must be a positive number of steps, got {horizon!r}")
    if limit is not None and horizon > limit:
        raise DetectorError(f"{owner}: horizon {horizon} exceeds max_horizon {limit}; raise max_horizon")


def daily_slots(season: float, step: float, resolution: float) -> int:
    """The number of seasonal slots: one per ``step``, but no narrower than ``resolution`` seconds.

    A slot per sampling step is the classical season length (``86400 / step`` for a daily
    season); capping the slot count keeps each slot's estimate an average over several samples
    per day, instead of one noisy sample, when the sampling step is short.
    """
    return max(2, round(season / max(step, resolution)))


def slot_weights(timestamps: FloatArray, season: float, slots: int) -> tuple[IdArray, IdArray, FloatArray]:
    """Linear interpolation between the two slot centres around each timestamp's phase.

    Returns ``(lower_slot, upper_slot, upper_weight)``; the lower slot has weight
    ``1 - upper_weight``. Slots are centred in their interval, so the profile is piecewise
    linear in the time of day (or week) and continuous across midnight.
    """
    phase = np.mod(timestamps, season) / season * slots - 0.5
    lower = np.floor(phase)
    frac = phase - lower
    lo = np.mod(lower, slots).astype(np.int64)
    return lo, np.mod(lo + 1, slots), frac


def state_array(state: Mapping[str, Any], key: str, owner: str, ndim: int) -> npt.NDArray[Any]:
    """``state[key]`` as a numpy array of ``ndim`` dimensions; errors name the key."""
    if key not in state:
        raise DetectorError(f"{owner}: state lacks {key!r}")
    array = np.asarray(state[key])
    if array.ndim != ndim:
        raise DetectorError(f"{owner}: state {key!r} must have {ndim} dimension(s), got {array.ndim}")
    return array


def export_state(
    owner: object,
    name: str,
    version: int,
    arrays: Sequence[tuple[str, int]],
    config: Mapping[str, Any],
    counters: Sequence[str],
) -> dict[str, Any]:
    """A versioned checkpoint: kind, version, ``config``, the counters and copies of ``owner._<key>``."""
    state: dict[str, Any] = {"kind": name, "version": version, **config}
    for key in counters:
        state[key] = getattr(owner, key)
    for key, _ in arrays:
        state[key] = getattr(owner, f"_{key}").copy()
    return state


def restore_state(
    owner: object,
    state: Mapping[str, Any],
    name: str,
    version: int,
    arrays: Sequence[tuple[str, int]],
    config: Mapping[str, Any],
    counters: Sequence[str],
    shape: Callable[[str, int], tuple[int, ...]],
    ints: Collection[str],
) -> None:
    """Load what :func:`export_state` wrote, refusing another kind, version, config or shape.

    ``shape(key, rows)`` is the shape array ``key`` must have when the state holds ``rows`` series
    (taken from the first array); arrays named in ``ints`` are restored as int64, others float64.
    """
    check_state_version(state, name, version)
    for key, value in config.items():
        if state.get(key) != value:
            raise DetectorError(f"{name}: state has {key} {state.get(key)!r}, configured {value!r}")
    loaded = {key: state_array(state, key, name, ndim) for key, ndim in arrays}
    rows = loaded[arrays[0][0]].shape[0]
    for key, array in loaded.items():
        want = shape(key, rows)
        if array.shape != want:
            raise DetectorError(f"{name}: state {key!r} has shape {array.shape}, expected {want}")
    for key, array in loaded.items():
        setattr(owner, f"_{key}", np.array(array, dtype=np.int64 if key in ints else np.float64))
    for key in counters:
        setattr(owner, key, int(state.get(key, 0)))


def check_state_version(state: Mapping[str, Any], owner: str, version: int) -> None:
    """Refuse state of another forecaster or version."""
    if state.get("kind") != owner or state.get("version") != version:
        raise DetectorError(
            f"{owner}: cannot load state of kind {state.get('kind')!r} version {state.get('version')!r}; "
            f"expected kind {owner!r} version {version}"
        )
