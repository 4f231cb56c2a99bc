"""Series identity: a metric name plus its sorted labels, mapped to dense integer ids."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_new = object.__new__
_set = object.__setattr__  # what the frozen dataclass's __init__ calls, without its checks

#: The id given to samples whose series could not be registered (cardinality limit reached).
DROPPED = -1


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """A metric name and its labels, sorted by label name so equal series compare equal."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, name: str, labels: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> SeriesKey:
        """Build a key from a name and labels in any order; ``__name__`` is not kept as a label."""
        items = labels.items() if isinstance(labels, Mapping) else labels
        return cls(name, tuple(sorted((str(k), str(v)) for k, v in items if k != "__name__")))

    @classmethod
    def presorted(cls, name: str, labels: tuple[tuple[str, str], ...]) -> SeriesKey:
        """A key from labels already as :meth:`of` leaves them (sorted by name, strings, no
        ``__name__``), without the dataclass ``__init__``: for decoders that register many
        series at once (about a third faster)."""
        key = _new(cls)
        _set(key, "name", name)
        _set(key, "labels", labels)
        return key

    @property
    def label_dict(self) -> dict[str, str]:
        """The labels as a fresh dict."""
        return dict(self.labels)

    def __str__(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.name}{{{inner}}}"


@dataclass(slots=True)
class SeriesRegistry:
    """Maps series keys to dense ids, refusing new series past ``limit`` (or past ``per_owner``
    for one owner, the source that registers it, or past ``per_metric`` for one metric name).

    Refused series get :data:`DROPPED` and are counted in :attr:`dropped` (once per sample), and
    per owner in :attr:`refused_by_owner`; memory never grows past ``limit`` keys, whatever the
    cardinality of the input. Series not seen since a time can be evicted
    (:meth:`touch` records when each was last seen, :meth:`evict_idle` frees them): their ids
    are handed to the next new series, and :attr:`generation` of the id is bumped so that
    whoever keeps per-id state (detectors: ``forget``) can tell the id means another series now.
    """

    limit: int = 100_000
    per_owner: int | None = None
    per_metric: int | None = None
    dropped: int = 0
    evicted: int = 0
    refused_by_owner: dict[str, int] = field(default_factory=dict)
    _ids: dict[SeriesKey, int] = field(default_factory=dict)
    _keys: list[SeriesKey | None] = field(default_factory=list)
    _free: list[int] = field(default_factory=list)
    _owner_of: list[str | None] = field(default_factory=list)
    _owned: dict[str, int] = field(default_factory=dict)
    _per_name: dict[str, int] = field(default_factory=dict)
    _seen: np.ndarray[Any, np.dtype[np.float64]] = field(default_factory=lambda: np.zeros(0, np.float64))
    _generation: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if self.limit < 1:
            msg = f"series limit must be at least 1, got {self.limit}"
            raise ValueError(msg)
        if self.per_owner is not None and self.per_owner < 1:
            msg = f"series limit per owner must be at least 1, got {self.per_owner}"
            raise ValueError(msg)
        if self.per_metric is not None and self.per_metric < 1:
            msg = f"series limit per metric must be at least 1, got {self.per_metric}"
            raise ValueError(msg)

    def __len__(self) -> int:
        """How many series are registered now."""
        return len(self._ids)

    @property
    def capacity(self) -> int:
        """One more than the highest id ever given (ids of evicted series included)."""
        return len(self._keys)

    @property
    def generation(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Per id, how many times it was freed by an eviction (read-only view)."""
        view = self._generation[: len(self._keys)]
        view.flags.writeable = False
        return view

    def owned(self, owner: str) -> int:
        """How many registered series ``owner`` registered."""
        return self._owned.get(owner, 0)

    def _refuse(self, owner: str | None) -> int:
        if owner is not None:
            self.refused_by_owner[owner] = self.refused_by_owner.get(owner, 0) + 1
        return DROPPED

    def _room(self, owner: str | None, key: SeriesKey) -> bool:
        if len(self._ids) >= self.limit:
            return False
        if self.per_metric is not None and self._per_name.get(key.name, 0) >= self.per_metric:
            return False
        return owner is None or self.per_owner is None or self._owned.get(owner, 0) < self.per_owner

    def _add(self, key: SeriesKey, owner: str | None) -> int:
        if self._free:
            sid = self._free.pop()
            self._keys[sid] = key
            self._owner_of[sid] = owner
        else:
            sid = len(self._keys)
            self._keys.append(key)
            self._owner_of.append(owner)
        self._ids[key] = sid
        if owner is not None:
            self._owned[owner] = self._owned.get(owner, 0) + 1
        if self.per_metric is not None:
            self._per_name[key.name] = self._per_name.get(key.name, 0) + 1
        return sid

    def id_for(self, key: SeriesKey, owner: str | None = None) -> int:
        """The id of ``key``, registering it (for ``owner``) if there is room; :data:`DROPPED` otherwise."""
        sid = self._ids.get(key)
        if sid is not None:
            return sid
        if not self._room(owner, key):
            self.dropped += 1
            return self._refuse(owner)
        return self._add(key, owner)

    def ids_for(self, keys: Iterable[SeriesKey], owner: str | None = None) -> list[int]:
        """The id of each of ``keys``, registering new ones in order while there is room.

        A key refused at the limit gets :data:`DROPPED` and is *not* counted in :attr:`dropped`:
        the caller counts refused samples (one key may stand for many). Registers in bulk what
        :meth:`id_for` would one by one.
        """
        ids, order = self._ids, self._keys
        if self._free or (self.per_owner is not None and owner is not None) or self.per_metric is not None:
            out = []
            for key in keys:
                sid = ids.get(key)
                if sid is None:
                    sid = self._add(key, owner) if self._room(owner, key) else self._refuse(owner)
                out.append(sid)
            return out
        known, add, lookup, limit = ids.setdefault, order.append, ids.get, self.limit
        grew = len(order)
        out = []
        for key in keys:
            n = len(order)
            if n < limit:
                sid = known(key, n)  # one hash of the key, new or not
                if sid == n:
                    add(key)
            else:
                sid = lookup(key, DROPPED)
            out.append(sid)
        added = len(order) - grew
        self._owner_of.extend([owner] * added)
        if owner is not None and added:
            self._owned[owner] = self._owned.get(owner, 0) + added
        if owner is not None and len(order) >= limit:
            refused = out.count(DROPPED)
            if refused:
                self.refused_by_owner[owner] = self.refused_by_owner.get(owner, 0) + refused
        return out

    def lookup(self, key: SeriesKey) -> int | None:
        """The id of an already registered key, or None; never registers."""
        return self._ids.get(key)

    def key(self, sid: int) -> SeriesKey:
        """The key of a registered id; KeyError for an id that is free."""
        key = self._keys[sid]
        if key is None:
            msg = f"series id {sid} is not registered (evicted)"
            raise KeyError(msg)
        return key

    def keys(self) -> list[SeriesKey]:
        """All registered keys, in id order."""
        return [k for k in self._keys if k is not None]

    # ------------------------------------------------------------------ eviction
    def touch(self, ids: np.ndarray[Any, np.dtype[np.int64]], now: float) -> None:
        """Record that the series of ``ids`` (DROPPED ones skipped) were seen at ``now``."""
        n = len(self._keys)
        if self._seen.shape[0] < n:
            grown = np.full(max(n, 2 * self._seen.shape[0], 64), np.nan)
            grown[: self._seen.shape[0]] = self._seen
            self._seen = grown
        if ids.size:
            self._seen[ids[ids >= 0]] = now

    def evict_idle(self, before: float) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Free every series last seen before ``before`` (one never touched counts as seen when
        first evicted from); return their ids, which new series will get."""
        n = len(self._keys)
        self.touch(np.zeros(0, np.int64), before)  # size the arrays
        seen = self._seen[:n]
        registered = np.fromiter((k is not None for k in self._keys), dtype=bool, count=n)
        never = registered & np.isnan(seen)
        seen[never] = before  # from now on they age
        idle = np.flatnonzero(registered & (seen < before))
        return self.evict(idle.astype(np.int64))

    def evict(self, ids: np.ndarray[Any, np.dtype[np.int64]]) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Free the registered series of ``ids`` (free ids are skipped); return the ids freed.

        What :meth:`evict_idle` does to idle series; the Kafka source does it to the series of
        the partitions it gave up.
        """
        n = len(self._keys)
        self.touch(np.zeros(0, np.int64), 0.0)  # size the arrays
        ids = np.unique(ids[(ids >= 0) & (ids < n)])
        idle = np.array([sid for sid in ids.tolist() if self._keys[sid] is not None], dtype=np.int64)
        if idle.size == 0:
            return idle
        if self._generation.shape[0] < n:
            grown = np.zeros(max(n, 2 * self._generation.shape[0], 64), np.int64)
            grown[: self._generation.shape[0]] = self._generation
            self._generation = grown
        for sid in idle.tolist():
            key = self._keys[sid]
            assert key is not None  # registered, above
            del self._ids[key]
            self._keys[sid] = None
            owner = self._owner_of[sid]
            if owner is not None:
                self._owned[owner] -= 1
            if self.per_metric is not None:
                self._per_name[key.name] -= 1
            self._owner_of[sid] = None
        self._free.extend(reversed(idle.tolist()))  # the lowest ids are reused first
        self._generation[idle] += 1
        self._seen[idle] = np.nan
        self.evicted += int(idle.size)
        return idle.astype(np.int64)
