"""The detector state of a set of series, taken out of a bank and put into another one.

What a replica checkpoints for one Kafka partition: the learned state of the series it saw on
that partition, by series *key* (ids are local to a replica), so that another replica's bank can
take them in under its own ids. It relies on one convention every built-in detector keeps (and
the conformance test in tests/unit/test_checkpoint.py checks): every numpy array in a detector's
``state_dict()`` is per series, indexed by series id on its first axis; everything else in it
(kind, version, parameters, counters) is plain data. Taking series out is slicing those arrays
at the series' ids; putting them in is writing the rows at the new ids into the bank's current
state and loading it, then ``forget``-ing the rows that must stay fresh (ids the arrays did not
reach before, and series the detector never saw on the other side).

:func:`encode` and :func:`decode` turn a :class:`SeriesState` into bytes and back: a versioned
envelope (JSON header, arrays in numpy's ``.npy`` format read with ``allow_pickle=False``,
zlib-compressed), refused as a :class:`CheckpointError` when it is of another format or version,
larger than asked, or does not hold together. Nothing in it is executable.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from detectors.base import DetectorError
from detectors.series import DROPPED, SeriesKey, SeriesRegistry

if TYPE_CHECKING:
    from detectors.bank import DetectorBank

#: The envelope's format name and version; anything else is refused.
FORMAT = "aiops.series-state"
VERSION = 1
_MAGIC = b"AIOPSST1"
_HEADER = struct.Struct(">I")
#: Numpy dtype kinds a checkpoint may hold (no objects, no void records).
_KINDS = frozenset("biufcUS")
#: Deepest nesting of dicts and lists a checkpoint header may have (the detectors' states nest a few levels).
MAX_DEPTH = 32
IdArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
Arrays = list[tuple[tuple[str, ...], np.ndarray[Any, Any]]]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class SeriesState:
    """Detector state of ``keys``: per part (a detector or a hold), its state with rows only for
    the series it had, ``rows[part]`` the positions (into ``keys``) of those series.

    ``meta`` is whatever the caller wants kept with it (the Kafka source puts the group, topic,
    partition and offset there).
    """

    keys: list[SeriesKey]
    parts: dict[str, dict[str, Any]]
    rows: dict[str, IdArray]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Restored:
    """What :func:`put_series` did: the new ids of the series, and the parts it could not load."""

    ids: IdArray
    dropped: dict[str, str]
    refused: int = 0


# ---------------------------------------------------------------------------------- state
def _parts(bank: DetectorBank) -> dict[str, Any]:
    """Every stateful part of the bank by a stable name: each detector and each hold."""
    parts: dict[str, Any] = {}
    for i, spec in enumerate(bank.specs):
        parts[f"{i}:{spec.detector.name}"] = spec.detector
        if spec.hold is not None:
            parts[f"{i}:{spec.detector.name}:hold"] = spec.hold
    return parts


def state_arrays(state: Mapping[str, Any], path: tuple[str, ...] = ()) -> Arrays:
    """Every numpy array in a (nested) state dict, with its path of keys."""
    found: Arrays = []
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            found.append(((*path, key), value))
        elif isinstance(value, Mapping):
            found.extend(state_arrays(value, (*path, key)))
    return found


def _replace(state: Mapping[str, Any], path: tuple[str, ...], value: object) -> None:
    inner: Any = state
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = value


def _rows(state: Mapping[str, Any]) -> int:
    """How many series rows every per-series array of ``state`` has (the shortest)."""
    arrays = state_arrays(state)
    return min((a.shape[0] for _, a in arrays if a.ndim >= 1), default=0)


def take_series(bank: DetectorBank, ids: IdArray, meta: Mapping[str, Any] | None = None) -> SeriesState:
    """The state of the (registered) series ``ids`` in every detector and hold of ``bank``."""
    ids = np.asarray(ids, dtype=np.int64)
    keys = [bank.series.key(int(i)) for i in ids.tolist()]
    parts: dict[str, dict[str, Any]] = {}
    rows: dict[str, IdArray] = {}
    for name, part in _parts(bank).items():
        state = part.state_dict()
        n = _rows(state)
        present = np.flatnonzero(ids < n).astype(np.int64)
        taken = ids[present]
        for path, array in state_arrays(state):
            if array.ndim == 0:
                msg = f"{name}: state array {'/'.join(path)} is not per series (a scalar array)"
                raise DetectorError(msg)
            _replace(state, path, np.ascontiguousarray(array[taken]))
        parts[name] = state
        rows[name] = present
    return SeriesState(keys, parts, rows, dict(meta or {}))


def put_series(bank: DetectorBank, state: SeriesState, owner: str | None = None) -> Restored:
    """Register ``state``'s series in ``bank`` and load their rows into its detectors and holds.

    A part whose state its detector refuses (another kind, version or parameters) is left as it
    was and named in :attr:`Restored.dropped`, with the reason; so is a part the bank does not
    have. Series the registry refuses (its limits) are left out and counted.
    """
    registry: SeriesRegistry = bank.series
    wanted = np.asarray(registry.ids_for(state.keys, owner), dtype=np.int64)
    kept = wanted != DROPPED
    refused = int(np.count_nonzero(~kept))
    dropped: dict[str, str] = {}
    ids = wanted
    if ids.size == 0:
        return Restored(ids, dropped, refused)
    parts = _parts(bank)
    for name in sorted(set(state.parts) - set(parts)):
        dropped[name] = "the bank has no such detector (the configuration changed)"
    for name, part in parts.items():
        saved = state.parts.get(name)
        if saved is None:
            part.forget(ids[kept])  # a detector added since: these series start fresh in it
            continue
        try:
            _load_part(name, part, saved, state.rows[name], ids, kept)
        except (DetectorError, KeyError, ValueError, TypeError, IndexError) as exc:
            dropped[name] = str(exc) or type(exc).__name__
            part.forget(ids[kept])
    return Restored(ids, dropped, refused)


def _load_part(
    name: str,
    part: Any,
    saved: Mapping[str, Any],
    present: IdArray,
    ids: IdArray,
    kept: np.ndarray[Any, np.dtype[np.bool_]],
) -> None:
    """Write the saved rows of ``part`` at ``ids`` into its current state and load that."""
    present = np.asarray(present, dtype=np.int64)
    if present.size and (int(present.min()) < 0 or int(present.max()) >= ids.size):
        msg = f"{name}: row positions out of range"
        raise DetectorError(msg)
    use = kept[present]
    targets = ids[present][use]
    current = part.state_dict()
    size = max(_rows(current), int(ids[kept].max()) + 1 if kept.any() else 0)
    merged = _plain_copy(saved)
    before: dict[tuple[str, ...], np.ndarray[Any, Any]] = dict(state_arrays(current))
    for path, rows in state_arrays(saved):
        live = before.get(path)
        if live is None:
            msg = f"{name}: saved array {'/'.join(path)} is not in this detector's state"
            raise DetectorError(msg)
        if rows.shape[0] != present.size or rows.shape[1:] != live.shape[1:]:
            where = "/".join(path)
            msg = (
                f"{name}: saved array {where} has shape {rows.shape}, rows of shape {live.shape[1:]} expected"
            )
            raise DetectorError(msg)
        out = np.zeros((max(size, live.shape[0]), *live.shape[1:]), dtype=live.dtype)
        out[: live.shape[0]] = live
        out[targets] = rows[use].astype(live.dtype, copy=False)
        _replace(merged, path, out)
    missing = sorted("/".join(p) for p in set(before) - {p for p, _ in state_arrays(saved)})
    if missing:
        msg = f"{name}: saved state lacks array(s) {missing}"
        raise DetectorError(msg)
    old_rows = _rows(current)
    try:
        part.load_state(merged)
    except (DetectorError, KeyError, ValueError, TypeError) as exc:
        part.load_state(current)  # leave it as it was
        raise DetectorError(f"{name}: {exc}") from exc
    fresh = np.setdiff1d(np.arange(old_rows, size, dtype=np.int64), targets)
    absent = np.setdiff1d(ids[kept], targets)  # series this detector never saw on the other side
    forget = np.union1d(fresh, absent)
    if forget.size:
        part.forget(forget)


def _plain_copy(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain_copy(v) if isinstance(v, Mapping) else v for k, v in state.items()}


# ---------------------------------------------------------------------------------- bytes
def encode(state: SeriesState, level: int = 1) -> bytes:
    """``state`` as a compressed, versioned envelope (see the module docstring)."""
    blobs: list[bytes] = []

    def array_ref(array: np.ndarray[Any, Any]) -> dict[str, int]:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        blobs.append(buf.getvalue())
        return {"__array__": len(blobs) - 1}

    def plain(value: object) -> object:
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in _KINDS:
                msg = f"cannot checkpoint an array of dtype {value.dtype}"
                raise CheckpointError(msg)
            return array_ref(value)
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return {"__tuple__": [plain(v) for v in value]}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    header = {
        "format": FORMAT,
        "version": VERSION,
        "meta": plain(state.meta),
        "keys": [[k.name, [list(kv) for kv in k.labels]] for k in state.keys],
        "parts": plain(state.parts),
        "rows": {name: array_ref(rows) for name, rows in state.rows.items()},
    }
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    lengths = orjson.dumps([len(b) for b in blobs])
    body = b"".join([_MAGIC, _HEADER.pack(len(head)), head, _HEADER.pack(len(lengths)), lengths, *blobs])
    return zlib.compress(body, level)


def inflate(data: bytes, max_bytes: int, what: str, bound: str = "max_bytes") -> bytes:
    """``data`` decompressed, never past ``max_bytes + 1`` bytes; :class:`CheckpointError` naming
    ``what`` (and the setting ``bound`` that ``max_bytes`` comes from) when it is not zlib data,
    inflates past ``max_bytes`` or ends early."""
    try:
        inflater = zlib.decompressobj()
        body = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise CheckpointError(f"not {what} (not zlib data: {exc})") from exc
    if len(body) > max_bytes or inflater.unconsumed_tail:
        msg = f"{what} inflates past {bound} {max_bytes} (larger than {max_bytes} bytes once decompressed)"
        raise CheckpointError(msg)
    if not inflater.eof:
        raise CheckpointError(f"{what} is truncated (its compressed stream ends early)")
    return body


def decode(data: bytes, max_bytes: int) -> SeriesState:
    """The state :func:`encode` wrote; :class:`CheckpointError` for anything else, or for more
    than ``max_bytes`` once decompressed."""
    body = inflate(data, max_bytes, "a checkpoint")
    if not body.startswith(_MAGIC):
        raise CheckpointError("not a checkpoint (wrong magic)")
    try:
        at = len(_MAGIC)
        (n,) = _HEADER.unpack_from(body, at)
        header = orjson.loads(body[at + 4 : at + 4 + n])
        at += 4 + n
        (m,) = _HEADER.unpack_from(body, at)
        lengths = orjson.loads(body[at + 4 : at + 4 + m])
        at += 4 + m
    except (struct.error, orjson.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint header is damaged: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"not a checkpoint of format {FORMAT!r}")
    if header.get("version") != VERSION:
        msg = f"checkpoint version {header.get('version')!r} is not supported (expected {VERSION})"
        raise CheckpointError(msg)
    if not isinstance(lengths, list) or not all(isinstance(x, int) and x >= 0 for x in lengths):
        raise CheckpointError("checkpoint array table is damaged")
    if at + sum(lengths) != len(body):
        raise CheckpointError("checkpoint arrays do not match their table (truncated or padded)")
    arrays: list[np.ndarray[Any, Any]] = []
    for length in lengths:
        arrays.append(_load_array(body[at : at + length], len(arrays)))
        at += length

    def live(value: object, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise CheckpointError(f"checkpoint header nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            if "__array__" in value:
                index = value["__array__"]
                if not isinstance(index, int) or not 0 <= index < len(arrays):
                    raise CheckpointError(f"checkpoint refers to a missing array {index!r}")
                return arrays[index]
            if "__tuple__" in value:
                return tuple(live(v, depth + 1) for v in value["__tuple__"])
            return {k: live(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [live(v, depth + 1) for v in value]
        return value

    try:
        keys = [
            SeriesKey.of(str(name), [(str(k), str(v)) for k, v in labels]) for name, labels in header["keys"]
        ]
        parts = live(header["parts"])
        rows = {str(k): np.asarray(live(v), dtype=np.int64) for k, v in header["rows"].items()}
        meta = live(header.get("meta") or {})
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: a row past int64
        raise CheckpointError(f"checkpoint header does not hold together: {exc}") from exc
    if not isinstance(parts, dict) or set(parts) != set(rows) or not isinstance(meta, dict):
        raise CheckpointError("checkpoint parts and rows do not match")
    for name, part_rows in rows.items():
        if part_rows.ndim != 1 or (part_rows.size and (part_rows.min() < 0 or part_rows.max() >= len(keys))):
            raise CheckpointError(f"checkpoint rows of {name} are out of range")
    return SeriesState(keys, parts, rows, meta)


def _load_array(blob: bytes, index: int) -> np.ndarray[Any, Any]:
    """Array ``index`` of a checkpoint from its ``.npy`` bytes; :class:`CheckpointError` unless its
    header names an allowed dtype and a shape whose data is exactly the bytes that follow it
    (checked before anything is allocated: a header may claim any shape)."""
    fp = io.BytesIO(blob)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise CheckpointError(f"checkpoint array {index} is in .npy version {version}, not 1.0 or 2.0")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise CheckpointError(f"checkpoint array {index} is damaged: {exc}") from exc
    if dtype.kind not in _KINDS:
        raise CheckpointError(f"checkpoint array {index} has a forbidden type ({dtype})")
    size = dtype.itemsize
    for n in shape:
        size *= n  # Python ints: a claimed shape cannot overflow
    if size != len(blob) - fp.tell():
        msg = (
            f"checkpoint array {index} is damaged: its header claims shape {shape} of {dtype} "
            f"({size} bytes), {len(blob) - fp.tell()} bytes follow it"
        )
        raise CheckpointError(msg)
    fp.seek(0)
    try:
        array = np.load(fp, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CheckpointError(f"checkpoint array {index} is damaged: {exc}") from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind not in _KINDS:
        raise CheckpointError(f"checkpoint array {index} has a forbidden type")
    return array


# ---------------------------------------------------------------------------------- chunks
def split(state: SeriesState, parts: int) -> list[SeriesState]:
    """``state`` in ``parts`` pieces of consecutive series (for messages of bounded size)."""
    n = len(state.keys)
    bounds = np.linspace(0, n, max(1, min(parts, max(n, 1))) + 1).astype(np.int64)
    pieces = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        piece_parts: dict[str, dict[str, Any]] = {}
        piece_rows: dict[str, IdArray] = {}
        for name, part in state.parts.items():
            rows = state.rows[name]
            inside = (rows >= lo) & (rows < hi)
            copy = _plain_copy(part)
            for path, array in state_arrays(part):
                _replace(copy, path, array[inside])
            piece_parts[name] = copy
            piece_rows[name] = (rows[inside] - lo).astype(np.int64)
        pieces.append(SeriesState(state.keys[lo:hi], piece_parts, piece_rows, dict(state.meta)))
    return pieces


def merge(pieces: list[SeriesState]) -> SeriesState:
    """The pieces of :func:`split` (or of any states of the same parts) as one state."""
    if not pieces:
        return SeriesState([], {}, {})
    first = pieces[0]
    names = set(first.parts)
    if any(set(p.parts) != names for p in pieces):
        raise CheckpointError("checkpoint chunks hold different detectors")
    keys: list[SeriesKey] = []
    offsets = []
    for piece in pieces:
        offsets.append(len(keys))
        keys.extend(piece.keys)
    parts: dict[str, dict[str, Any]] = {}
    rows: dict[str, IdArray] = {}
    for name in names:
        merged = _plain_copy(first.parts[name])
        for path, _ in state_arrays(first.parts[name]):
            try:
                joined = np.concatenate([dict(state_arrays(p.parts[name]))[path] for p in pieces])
            except (KeyError, ValueError) as exc:
                raise CheckpointError(f"checkpoint chunks of {name} do not fit together: {exc}") from exc
            _replace(merged, path, joined)
        parts[name] = merged
        rows[name] = np.concatenate([p.rows[name] + off for p, off in zip(pieces, offsets, strict=True)])
    return SeriesState(keys, parts, rows, dict(first.meta))
