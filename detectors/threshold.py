"""Static threshold and rate-of-change rules per series.

The simplest detector: a rule names a metric (and optionally label matchers) and the limits it
must stay within. A sample outside its series' limits scores 1, any other sample 0. Rules are
resolved once per series, the first time a series is seen; the hot path is numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.base import DetectorError, grow
from detectors.batch import FloatArray, SampleBatch
from detectors.patterns import Pattern, compile_pattern
from detectors.series import SeriesKey, SeriesRegistry
from detectors.signal import SignalKind

_UNRESOLVED = -2
_NO_RULE = -1


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """Limits for the series of one metric whose labels match ``match`` (full-match regexes)."""

    metric: str
    above: float | None = None
    below: float | None = None
    max_rate: float | None = None
    match: tuple[tuple[str, Pattern], ...] = ()

    def applies_to(self, key: SeriesKey) -> bool:
        """Whether this rule governs the series ``key``."""
        if key.name != self.metric:
            return False
        if not self.match:
            return True
        labels = key.label_dict
        return all(pattern.fullmatch(labels.get(name, "")) for name, pattern in self.match)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> ThresholdRule:
        """Validate one rule given as a mapping; errors name ``where`` and the field."""
        known = {"metric", "above", "below", "max_rate", "match"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise DetectorError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")
        metric = raw.get("metric")
        if not isinstance(metric, str) or not metric:
            raise DetectorError(f"{where}.metric: expected a metric name, got {metric!r}")
        limits: dict[str, float | None] = {}
        for name in ("above", "below", "max_rate"):
            value = raw.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            ):
                raise DetectorError(f"{where}.{name}: expected a finite number, got {value!r}")
            limits[name] = None if value is None else float(value)
        if all(v is None for v in limits.values()):
            raise DetectorError(f"{where}: a rule needs at least one of above, below, max_rate")
        if limits["max_rate"] is not None and limits["max_rate"] <= 0:
            raise DetectorError(f"{where}.max_rate: must be positive, got {limits['max_rate']}")
        match_raw = raw.get("match") or {}
        if not isinstance(match_raw, Mapping):
            raise DetectorError(f"{where}.match: expected a mapping of label to regex, got {match_raw!r}")
        match: list[tuple[str, Pattern]] = []
        for label, pattern in sorted(match_raw.items()):
            try:
                match.append((str(label), compile_pattern(str(pattern))))
            except ValueError as exc:
                raise DetectorError(f"{where}.match.{label}: {exc}") from exc
        return cls(metric, limits["above"], limits["below"], limits["max_rate"], tuple(match))


@dataclass(slots=True)
class ThresholdDetector:
    """Per-series static limits (``above`` / ``below``) and a rate-of-change limit (per second).

    The first matching rule governs a series. Series without a rule always score 0.
    Samples that are not finite score 0 and are counted in :attr:`invalid`; samples older than
    their series' newest are scored on their level only and counted in :attr:`out_of_order`.
    """

    rules: Sequence[ThresholdRule]
    series: SeriesRegistry
    name: str = "threshold"
    signal_kind: SignalKind = SignalKind.THRESHOLD
    invalid: int = 0
    out_of_order: int = 0
    _rule: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: np.empty(0, np.int64))
    _last_ts: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))
    _last_val: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))
    _above: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))
    _below: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))
    _rate: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))
    _by_name: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _limits: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # (above, below, max_rate) per rule, an absent limit as the infinity that never breaks it
        self._limits = np.array(
            [
                [
                    np.inf if r.above is None else r.above,
                    -np.inf if r.below is None else r.below,
                    np.inf if r.max_rate is None else r.max_rate,
                ]
                for r in self.rules
            ],
            dtype=np.float64,
        ).reshape(len(self.rules), 3)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], series: SeriesRegistry) -> ThresholdDetector:
        """Build from ``{"rules": [...]}``; every error names the rule index and field."""
        unknown = sorted(set(params) - {"rules"})
        if unknown:
            raise DetectorError(f"threshold: unknown parameter(s) {unknown}; expected 'rules'")
        raw_rules = params.get("rules", [])
        if not isinstance(raw_rules, list):
            raise DetectorError(f"threshold.rules: expected a list of rules, got {type(raw_rules).__name__}")
        rules = []
        for i, raw in enumerate(raw_rules):
            if not isinstance(raw, Mapping):
                raise DetectorError(f"threshold.rules[{i}]: expected a mapping, got {raw!r}")
            rules.append(ThresholdRule.parse(raw, f"threshold.rules[{i}]"))
        return cls(rules, series)

    def _ensure(self, size: int) -> None:
        self._rule = grow(self._rule, size, _UNRESOLVED)
        self._last_ts = grow(self._last_ts, size, -np.inf)
        self._last_val = grow(self._last_val, size, np.nan)
        self._above = grow(self._above, size, np.inf)
        self._below = grow(self._below, size, -np.inf)
        self._rate = grow(self._rate, size, np.inf)

    def forget(self, ids: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        """Forget the series of ``ids`` (its rule is looked up again: the id may mean another series)."""
        ids = ids[ids < self._rule.shape[0]]
        self._rule[ids] = _UNRESOLVED
        self._last_ts[ids] = -np.inf
        self._last_val[ids] = np.nan
        self._above[ids] = np.inf
        self._below[ids] = -np.inf
        self._rate[ids] = np.inf

    def _resolve(self, ids: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        """Find the governing rule of each series of ``ids`` (registered, not resolved yet).

        When no rule naming a series' metric has label matchers, the metric name alone decides
        (memoised per name), so registering many series of one metric costs a dict lookup each.
        """
        index = np.empty(ids.shape[0], dtype=np.int64)
        by_name = self._by_name
        key_of = self.series.key
        for j, sid in enumerate(ids.tolist()):
            key = key_of(sid)
            found = by_name.get(key.name)
            if found is None:
                found = self._first_rule(key)
            index[j] = found
        self._rule[ids] = index
        governed = index >= 0
        if governed.any():
            limits = self._limits[index[governed]]
            gov = ids[governed]
            self._above[gov], self._below[gov], self._rate[gov] = limits[:, 0], limits[:, 1], limits[:, 2]

    def _first_rule(self, key: SeriesKey) -> int:
        """The index of the first rule that governs ``key`` (or _NO_RULE), memoised by name if it can be."""
        candidates = [i for i, r in enumerate(self.rules) if r.metric == key.name]
        if not any(self.rules[i].match for i in candidates):
            found = self._by_name[key.name] = candidates[0] if candidates else _NO_RULE
            return found
        return next((i for i in candidates if self.rules[i].applies_to(key)), _NO_RULE)

    def update(self, batch: SampleBatch) -> FloatArray:
        """Score each sample 1 if it breaks its series' rule, else 0."""
        n = len(batch)
        scores = np.zeros(n, dtype=np.float64)
        if n == 0:
            return scores
        if int(batch.series.min()) < 0:
            raise DetectorError("threshold: batch holds unregistered series ids; drop them first")
        self._ensure(int(batch.series.max()) + 1)
        pending = np.unique(batch.series[self._rule[batch.series] == _UNRESOLVED])
        if pending.size:
            self._resolve(pending)

        finite = np.isfinite(batch.values) & np.isfinite(batch.timestamps)
        self.invalid += int(n - np.count_nonzero(finite))

        # Order by (series, time) to compute per-series differences without a Python loop.
        order = np.lexsort((batch.timestamps, batch.series))
        s = batch.series[order]
        t = batch.timestamps[order]
        v = batch.values[order]
        ok = finite[order]
        first = np.ones(n, dtype=bool)
        first[1:] = s[1:] != s[:-1]
        prev_t = np.empty(n)
        prev_v = np.empty(n)
        prev_t[1:], prev_v[1:] = t[:-1], v[:-1]
        prev_t[first], prev_v[first] = self._last_ts[s[first]], self._last_val[s[first]]
        # A non-finite sample does not become the "previous" of the next one.
        bad_prev = np.zeros(n, dtype=bool)
        bad_prev[1:] = ~ok[:-1] & ~first[1:]
        prev_t[bad_prev], prev_v[bad_prev] = np.nan, np.nan

        dt = t - prev_t
        stale = ok & first & (t <= self._last_ts[s])
        self.out_of_order += int(np.count_nonzero(stale))
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            rate = np.where(dt > 0, np.abs(v - prev_v) / np.where(dt > 0, dt, 1.0), 0.0)
        # no previous sample: no rate; a change too large for a float is past every limit
        rate = np.nan_to_num(rate, nan=0.0, posinf=np.inf)
        broken = ok & ((v > self._above[s]) | (v < self._below[s]) | (rate > self._rate[s]))
        scores[order] = broken.astype(np.float64)

        # Remember the newest finite sample of each series.
        # Within a group the sorted order puts the newest last; take the last finite one.
        idx = np.flatnonzero(ok)
        if idx.size:
            grp_last = np.ones(idx.size, dtype=bool)
            grp_last[:-1] = s[idx[1:]] != s[idx[:-1]]
            take = idx[grp_last]
            newer = t[take] > self._last_ts[s[take]]
            take = take[newer]
            self._last_ts[s[take]] = t[take]
            self._last_val[s[take]] = v[take]
        return scores

    def signal_details(self, series_id: int) -> dict[str, Any]:
        """The limits of the rule that governs ``series_id``."""
        index = int(self._rule[series_id]) if series_id < self._rule.shape[0] else _NO_RULE
        if index < 0:
            return {}
        rule = self.rules[index]
        return {"rule": index, "above": rule.above, "below": rule.below, "max_rate": rule.max_rate}

    def state_dict(self) -> dict[str, Any]:
        """Last timestamp and value per series (rules are configuration, not state)."""
        return {"version": 1, "last_ts": self._last_ts.copy(), "last_val": self._last_val.copy()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` exported."""
        if state.get("version") != 1:
            raise DetectorError(f"threshold: unsupported state version {state.get('version')!r}")
        last_ts = np.asarray(state["last_ts"], dtype=np.float64)
        last_val = np.asarray(state["last_val"], dtype=np.float64)
        if last_ts.shape != last_val.shape:
            raise DetectorError("threshold: state arrays last_ts and last_val differ in length")
        self._ensure(last_ts.shape[0])
        self._last_ts[: last_ts.shape[0]] = last_ts
        self._last_val[: last_val.shape[0]] = last_val
