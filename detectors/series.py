"""Series identity: a metric name plus its sorted labels, mapped to dense integer ids."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
    """Maps series keys to dense ids ``0..n-1``, refusing new series past ``limit``.

    Refused series get :data:`DROPPED` and are counted in :attr:`dropped` (once per sample);
    memory never grows past ``limit`` keys, whatever the cardinality of the input.
    """

    limit: int = 100_000
    dropped: int = 0
    _ids: dict[SeriesKey, int] = field(default_factory=dict)
    _keys: list[SeriesKey] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.limit < 1:
            msg = f"series limit must be at least 1, got {self.limit}"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self._keys)

    def id_for(self, key: SeriesKey) -> int:
        """The id of ``key``, registering it if there is room; :data:`DROPPED` otherwise."""
        sid = self._ids.get(key)
        if sid is not None:
            return sid
        if len(self._keys) >= self.limit:
            self.dropped += 1
            return DROPPED
        sid = len(self._keys)
        self._ids[key] = sid
        self._keys.append(key)
        return sid

    def ids_for(self, keys: Iterable[SeriesKey]) -> list[int]:
        """The id of each of ``keys``, registering new ones in order while there is room.

        A key refused at the limit gets :data:`DROPPED` and is *not* counted in :attr:`dropped`:
        the caller counts refused samples (one key may stand for many). Registers in bulk what
        :meth:`id_for` would one by one.
        """
        ids, order, limit = self._ids, self._keys, self.limit
        known, add, lookup = ids.setdefault, order.append, ids.get
        out: list[int] = []
        for key in keys:
            n = len(order)
            if n < limit:
                sid = known(key, n)  # one hash of the key, new or not
                if sid == n:
                    add(key)
            else:
                sid = lookup(key, DROPPED)
            out.append(sid)
        return out

    def lookup(self, key: SeriesKey) -> int | None:
        """The id of an already registered key, or None; never registers."""
        return self._ids.get(key)

    def key(self, sid: int) -> SeriesKey:
        """The key of a registered id."""
        return self._keys[sid]

    def keys(self) -> list[SeriesKey]:
        """All registered keys, in id order."""
        return list(self._keys)
