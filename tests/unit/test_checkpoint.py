"""Series state taken out of one bank and put into another scores exactly as if it had never moved."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from agent.app import detector_bank
from agent.config import DetectorConfig, load_config
from detectors import DetectorBank, SampleBatch, SeriesKey, SeriesRegistry
from detectors.checkpoint import (
    CheckpointError,
    decode,
    encode,
    merge,
    put_series,
    split,
    state_arrays,
    take_series,
)

CONFIG = Path(__file__).parents[2] / "k8s" / "agent-config.yaml"
METRICS = [
    "http_requests_error_ratio",
    "http_requests_per_second",
    "http_request_duration_p99_seconds",
    "container_cpu_usage_ratio",
    "container_memory_working_set_ratio",
    "model_accuracy",
]


def _bank() -> DetectorBank:
    """The shipped cluster config's detectors and a threshold rule, built as the daemon builds them."""
    rule = DetectorConfig(
        type="threshold", params={"rules": [{"metric": "container_cpu_usage_ratio", "above": 0.99}]}
    )
    return detector_bank([*load_config(CONFIG).detectors, rule], SeriesRegistry(limit=1000))


def _keys(pod: str) -> list[SeriesKey]:
    return [SeriesKey.of(m, {"pod": pod}) for m in METRICS]


def _signals(
    bank: DetectorBank, keys: list[SeriesKey], start: int, steps: int, seed: int
) -> list[list[tuple[str, str, float]]]:
    rng = np.random.default_rng(seed)
    ids = np.array([bank.series.id_for(k) for k in keys], dtype=np.int64)
    out = []
    for step in range(start, start + steps):
        t = np.full(ids.size, 1.7e9 + 15.0 * step)
        x = 0.5 + 0.1 * np.sin(step / 40.0) + rng.normal(0, 0.01, ids.size)
        x[step % ids.size] += 3.0 if step % 97 == 0 else 0.0
        signals = bank.process(SampleBatch(ids, t, x))
        out.append(sorted((s.detector, str(s.series), round(s.score, 12)) for s in signals))
    return out


@functools.cache
def _unmoved() -> tuple[DetectorBank, list[list[tuple[str, str, float]]]]:
    """Pod a's series in a bank that keeps them: 300 steps (seed 1), then 250 more (seed 3), and
    the signals of those 250. Shared by the tests below, which only read it."""
    reference = _bank()
    _signals(reference, _keys("a"), 0, 300, seed=1)
    return reference, _signals(reference, _keys("a"), 300, 250, seed=3)


def test_moved_series_score_as_if_they_never_moved() -> None:
    """Series learned in bank A, moved to bank B (which has series of its own under clashing ids),
    signal exactly as in A from then on; B's own series are not disturbed."""
    moved, own = _keys("a"), _keys("b")
    a, b = _bank(), _bank()
    reference, expected = _unmoved()
    _signals(a, moved, 0, 300, seed=1)
    _signals(b, own, 0, 300, seed=2)  # b's ids 0..5 name other series than a's
    ids = np.array([a.series.lookup(k) for k in moved], dtype=np.int64)
    blob = encode(take_series(a, ids, {"partition": 3, "offset": 42}))
    state = decode(blob, max_bytes=64 << 20)
    assert state.meta == {"partition": 3, "offset": 42}
    restored = put_series(b, state)
    assert restored.dropped == {}
    assert [b.series.lookup(k) for k in moved] == restored.ids.tolist()
    assert set(restored.ids.tolist()).isdisjoint({b.series.lookup(k) for k in own})
    got = _signals(b, moved, 300, 250, seed=3)
    assert got == expected
    assert sum(len(s) for s in expected) > 0  # the comparison covers signals, not silence
    # and every detector's learned state of them is the same, row for row, as the unmoved run's
    after = take_series(b, np.array([b.series.lookup(k) for k in moved], dtype=np.int64))
    unmoved = take_series(reference, np.array([reference.series.lookup(k) for k in moved], dtype=np.int64))
    assert set(after.parts) == set(unmoved.parts)
    for name, part in unmoved.parts.items():
        # rows of the series both banks hold (a detector whose arrays stop short of an id holds none)
        common = np.intersect1d(after.rows[name], unmoved.rows[name])
        assert common.size, name
        mine = np.searchsorted(after.rows[name], common)
        theirs = np.searchsorted(unmoved.rows[name], common)
        arrays = dict(state_arrays(part))
        for path, array in state_arrays(after.parts[name]):
            assert np.array_equal(array[mine], arrays[path][theirs], equal_nan=True), (name, path)
    # b's own series go on as they would have without the restore
    alone = _bank()
    _signals(alone, own, 0, 300, seed=2)
    assert _signals(b, own, 300, 200, seed=4) == _signals(alone, own, 300, 200, seed=4)


def test_a_cold_bank_does_not_signal_like_the_restored_one() -> None:
    """Without the state the same samples give other signals: the test above compares something."""
    _, restored = _unmoved()
    assert _signals(_bank(), _keys("a"), 300, 250, seed=3) != restored


def test_a_changed_detector_is_dropped_with_its_reason_and_the_rest_loads() -> None:
    a = _bank()
    _signals(a, _keys("a"), 0, 50, seed=1)
    ids = np.array([a.series.lookup(k) for k in _keys("a")], dtype=np.int64)
    state = decode(encode(take_series(a, ids)), max_bytes=64 << 20)
    ratio = next(name for name in state.parts if name.endswith(":ratio"))
    state.parts[ratio]["half_life"] = 1.0  # learned with other parameters
    b = _bank()
    restored = put_series(b, state)
    assert set(restored.dropped) == {ratio}
    assert "half_life" in restored.dropped[ratio]
    assert len(restored.ids) == len(METRICS)


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"not zlib", "not zlib"),
        (zlib.compress(b"JSON{}"), "wrong magic"),
        (zlib.compress(b"\0" * 2000), "wrong magic"),
    ],
)
def test_foreign_bytes_are_refused_with_a_reason(blob: bytes, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        decode(blob, max_bytes=1 << 20)


def test_a_checkpoint_over_the_size_bound_is_refused_before_it_is_inflated() -> None:
    a = _bank()
    _signals(a, _keys("a"), 0, 20, seed=1)
    ids = np.array([a.series.lookup(k) for k in _keys("a")], dtype=np.int64)
    blob = encode(take_series(a, ids))
    with pytest.raises(CheckpointError, match="larger than 1000 bytes"):
        decode(blob, max_bytes=1000)


def test_truncated_and_flipped_checkpoints_are_refused() -> None:
    a = _bank()
    _signals(a, _keys("a"), 0, 20, seed=1)
    ids = np.array([a.series.lookup(k) for k in _keys("a")], dtype=np.int64)
    body = zlib.decompress(encode(take_series(a, ids)))
    with pytest.raises(CheckpointError, match="truncated or padded"):
        decode(zlib.compress(body[:-10]), max_bytes=64 << 20)
    with pytest.raises(CheckpointError, match="compressed stream ends early"):
        decode(zlib.compress(body)[:-10], max_bytes=64 << 20)
    other_version = body.replace(b'"version":1', b'"version":9', 1)
    with pytest.raises(CheckpointError, match="version 9 is not supported"):
        decode(zlib.compress(other_version), max_bytes=64 << 20)


def test_split_and_merge_give_back_the_same_state() -> None:
    a = _bank()
    _signals(a, _keys("a") + _keys("b"), 0, 30, seed=1)
    ids = np.array([a.series.lookup(k) for k in _keys("a") + _keys("b")], dtype=np.int64)
    whole = take_series(a, ids)
    pieces = [decode(encode(p), max_bytes=64 << 20) for p in split(whole, 5)]
    assert len(pieces) == 5
    assert sum(len(p.keys) for p in pieces) == len(whole.keys)
    again = merge(pieces)
    assert again.keys == whole.keys
    for name, part in whole.parts.items():
        assert np.array_equal(again.rows[name], whole.rows[name])
        theirs = dict(state_arrays(again.parts[name]))
        for path, array in state_arrays(part):
            assert np.array_equal(array, theirs[path], equal_nan=True), (name, path)


def _envelope(header: bytes, blobs: list[bytes]) -> bytes:
    """A checkpoint body around ``header`` (JSON) and ``blobs``, as :func:`encode` lays it out."""
    lengths = orjson.dumps([len(b) for b in blobs])
    size = struct.Struct(">I")
    return zlib.compress(
        b"AIOPSST1" + size.pack(len(header)) + header + size.pack(len(lengths)) + lengths + b"".join(blobs)
    )


def _npy(shape: tuple[int, ...], descr: str = "<f8", data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def _header(parts: str, rows: str = '{"p": {"__array__": 0}}', meta: str = "{}") -> bytes:
    text = f'{{"format": "aiops.series-state", "version": 1, "meta": {meta}, "keys": [["m", []]], '
    return f'{text}"parts": {parts}, "rows": {rows}}}'.encode()


@pytest.mark.parametrize(
    ("header", "blobs", "why"),
    [
        (
            _header('{"p": {"x": {"__array__": 1}}}'),
            [_npy((1,), "<i8", bytes(8)), _npy((10**12,))],
            "claims shape",
        ),
        (
            _header('{"p": {"x": {"__array__": 1}}}'),
            [_npy((1,), "<i8", bytes(8)), _npy((10**6,), "<U1000000")],
            "claims shape",
        ),
        (
            _header('{"p": {"x": {"__array__": 1}}}'),
            [_npy((1,), "<i8", bytes(8)), _npy((2**62, 2**62))],
            "claims shape",
        ),
        (
            _header('{"p": ' + '{"a": ' * 600 + "1" + "}" * 600 + "}"),
            [_npy((1,), "<i8", bytes(8))],
            "deeper than",
        ),
        (
            _header("{}", meta='{"m": ' + "[" * 600 + "]" * 600 + "}"),
            [_npy((1,), "<i8", bytes(8))],
            "deeper than",
        ),
        (_header('{"p": {}}', rows='{"p": [9223372036854775813]}'), [], "does not hold together"),
        (_header('{"p": {}}', rows='{"p": [1e300]}'), [], "does not hold together"),
    ],
    ids=[
        "shape-1e12",
        "unicode-4TB",
        "shape-overflow",
        "deep-parts",
        "deep-meta",
        "row-past-int64",
        "row-1e300",
    ],
)
def test_a_hostile_envelope_is_refused_before_it_costs_anything(
    header: bytes, blobs: list[bytes], why: str
) -> None:
    """Headers that claim more than their bytes hold, nest past any detector's state, or hold rows
    no int64 holds are refused as damaged: never a MemoryError, RecursionError or OverflowError
    escaping to the consumer that restores them."""
    with pytest.raises(CheckpointError, match=why):
        decode(_envelope(header, blobs), 1 << 20)
