"""Decoding within budgets: every format refuses, with a reason, a message past a DecodeLimits limit.

Each limit is checked before the work it bounds grows: the nested-kvlist message below (1.6 KB,
28 levels) re-encoded a label that doubled per level, 536 MB at depth 27, and crashed the decode
worker; here it is refused in well under a second, whichever limit is the first to see it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from agent.sources.kafka_formats import KINDS, DecodeLimits, Malformed, SampleDecoder
from agent.sources.kafka_worker import DecodeWorker, DecodeWorkerError
from detectors import SeriesRegistry

NOW = 1_780_000_000.0
DAY = 86_400.0


def nested_kvlist(depth: int) -> dict[str, Any]:
    """An AnyValue holding a kvlist holding a kvlist ... ``depth`` levels, a quoted string at the bottom."""
    value: dict[str, Any] = {"stringValue": '"q"'}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


def otlp(*points: dict[str, Any], resource: list[dict[str, Any]] | None = None, name: str = "m") -> bytes:
    metric = {"name": name, "gauge": {"dataPoints": list(points)}}
    rm = {"resource": {"attributes": resource or []}, "scopeMetrics": [{"metrics": [metric]}]}
    return orjson.dumps({"resourceMetrics": [rm]})


def point(
    ts: float = NOW, value: float = 1.0, attrs: dict[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    attrs = {**(attrs or {}), **more}
    return {
        "timeUnixNano": str(int(ts * 1e9)),
        "asDouble": value,
        "attributes": [
            {"key": k, "value": v if isinstance(v, dict) else {"stringValue": v}} for k, v in attrs.items()
        ],
    }


def adapter(
    ts: Any = NOW, value: float = 1.0, name: str = "m", labels: dict[str, str] | None = None, **more: str
) -> dict[str, Any]:
    labels = {"__name__": name, **(labels or {}), **more}
    return {"name": name, "labels": labels, "value": str(value), "timestamp": ts}


def columnar(
    ts: list[Any], name: str = "m", labels: dict[str, str] | None = None, **more: str
) -> dict[str, Any]:
    labels = {**(labels or {}), **more}
    return {"name": name, "labels": labels, "timestamps": ts, "values": [1.0] * len(ts)}


def decode(values: list[bytes], limits: DecodeLimits | None = None, now: float | None = NOW) -> Any:
    registry = SeriesRegistry(limit=1000)
    batch, errors = SampleDecoder(registry, limits=limits).decode(values, now)
    return batch, errors, registry


POISON = otlp(point(k=nested_kvlist(28)))


def test_the_nested_kvlist_poison_is_refused_at_the_depth_limit_at_once() -> None:
    assert len(POISON) < 1700
    started = time.perf_counter()
    batch, errors, registry = decode([POISON, otlp(point(k="fine"))])
    assert time.perf_counter() - started < 0.5
    assert batch.values.tolist() == [1.0]  # the message after it decodes
    assert [(e.position, e.kind) for e in errors] == [(0, "over_limit")]
    assert errors[0].reason.endswith("values nested 9 deep, over max_depth 8")
    assert "attributes[0].value.kvlistValue" in errors[0].reason
    assert len(registry) == 1


def test_without_the_depth_limit_the_label_length_limit_stops_the_doubling() -> None:
    _, errors, _ = decode([POISON], DecodeLimits(max_depth=100))
    assert errors[0].kind == "over_limit"
    assert "over max_label_length 4096" in errors[0].reason


def test_without_depth_and_length_limits_the_message_budget_stops_the_doubling() -> None:
    started = time.perf_counter()
    _, errors, _ = decode([POISON], DecodeLimits(max_depth=100, max_label_length=1 << 40))
    assert time.perf_counter() - started < 2.0
    assert errors[0].kind == "over_limit"
    assert "exceed max_decoded_bytes 16777216" in errors[0].reason


def test_a_nested_value_within_the_limits_still_decodes() -> None:
    batch, errors, registry = decode([otlp(point(k=nested_kvlist(3)))])
    assert errors == []
    assert len(batch) == 1
    (key,) = [registry.key(i) for i in range(len(registry))]
    assert (
        key.label_dict["k"]
        == orjson.dumps({"k": orjson.dumps({"k": orjson.dumps({"k": '"q"'}).decode()}).decode()}).decode()
    )


# ---------------------------------------------------------------------------- label count and length

MANY = {f"l{i}": "v" for i in range(129)}
LONG = "x" * 4097


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            orjson.dumps(adapter(labels=MANY)),
            "field 'labels': 130 labels, over max_labels 128",
        ),  # __name__ too
        (
            orjson.dumps([adapter(), adapter(labels=MANY)]),
            "sample 1: field 'labels': 130 labels, over max_labels 128",
        ),
        (
            orjson.dumps([columnar([NOW], labels=MANY)]),
            "series 0: field 'labels': 129 labels, over max_labels 128",
        ),
        (otlp(point(attrs=MANY)), "attributes: 129 attributes, over max_labels 128"),
        (
            otlp(
                point(attrs=dict(list(MANY.items())[:64])),
                resource=point(attrs=dict(list(MANY.items())[64:]))["attributes"],
            ),
            "dataPoints[0]: field 'labels': 129 labels, over max_labels 128",
        ),
        (orjson.dumps(adapter(job=LONG)), "label 'job' is 4097 characters long, over max_label_length 4096"),
        (
            orjson.dumps([adapter(job=LONG)]),
            "label 'job' is 4097 characters long, over max_label_length 4096",
        ),
        (
            orjson.dumps([columnar([NOW], job=LONG)]),
            "label 'job' is 4097 characters long, over max_label_length 4096",
        ),
        (orjson.dumps(adapter(name=LONG)), "field 'name': 4097 characters, over max_label_length 4096"),
        (
            otlp(point(job=LONG)),
            "dataPoints[0]: field 'labels': label 'job' is 4097 characters long, over max_label_length 4096",
        ),
        (otlp(point(), name=LONG), "field 'name': 4097 characters, over max_label_length 4096"),
    ],
    ids=[
        "adapter-count",
        "batch-count",
        "columnar-count",
        "otlp-count",
        "otlp-with-resource-count",
        "adapter-length",
        "batch-length",
        "columnar-length",
        "adapter-name-length",
        "otlp-length",
        "otlp-name-length",
    ],
)
def test_label_count_and_length_limits(message: bytes, expected: str) -> None:
    batch, errors, registry = decode([message, orjson.dumps(adapter(job="ok"))])
    assert [(e.position, e.kind) for e in errors] == [(0, "over_limit")]
    assert expected in errors[0].reason
    assert len(batch) == 1
    assert len(registry) == 1  # only the good message's series


def test_a_series_at_the_limits_is_accepted() -> None:
    labels = {f"l{i:03d}": "v" * 90 for i in range(126)}  # 127 labels and __name__
    labels["long"] = "v" * 4096  # 15,954 characters in all, with the name: under 16,384
    _, errors, _ = decode([orjson.dumps(adapter(labels=labels))])
    assert errors == []


#: 100 labels of 200 characters: each within max_label_length, 20,390 characters in all.
WIDE = {f"l{i:02d}": "v" * 200 for i in range(100)}


@pytest.mark.parametrize(
    "message",
    [
        orjson.dumps(adapter(labels=WIDE)),
        orjson.dumps([adapter(), adapter(labels=WIDE)]),
        orjson.dumps([columnar([NOW], labels=WIDE)]),
        otlp(point(attrs=WIDE)),
    ],
    ids=["adapter", "batch", "columnar", "otlp"],
)
def test_a_series_longer_in_all_than_max_series_length_is_refused(message: bytes) -> None:
    # 600 series of 120 labels of 4 KB each passed every other limit: 490 KB kept per series
    batch, errors, registry = decode([message, orjson.dumps(adapter(job="ok"))])
    assert [(e.position, e.kind) for e in errors] == [(0, "over_limit")]
    assert "characters in all, over max_series_length 16384" in errors[0].reason
    assert len(batch) == 1
    assert len(registry) == 1


def test_message_size_is_checked_before_parsing() -> None:
    huge = b"[" + b"1," * (1 << 20) + b"1]"  # 2 MB that would parse
    _, errors, _ = decode([huge, b"not json either"], DecodeLimits(max_message_bytes=1 << 20))
    assert errors[0] == Malformed(
        0, f"message of {len(huge)} bytes is over max_message_bytes 1048576", "over_limit"
    )
    assert errors[1].kind == "not_json"


# ---------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("stamp", "words"),
    [
        (1e299, "after the agent's clock, over max_future 86400.0 s"),
        (NOW + DAY + 1, "1 s after"),
        ("2026-04-01T00:00:00Z", "before the agent's clock, over max_past 2592000.0 s"),
        (NOW - 30 * DAY - 1, "before the agent's clock"),
        ((NOW + 2 * DAY) * 1000, "after the agent's clock"),  # milliseconds
    ],
)
def test_timestamps_outside_the_window_are_refused_in_every_format(stamp: Any, words: str) -> None:
    ns = stamp if isinstance(stamp, str) else None
    messages = [
        orjson.dumps(adapter(ts=stamp)),
        orjson.dumps([adapter(), adapter(ts=stamp)]),
        orjson.dumps([columnar([NOW, stamp])]),
    ]
    if ns is None and stamp < 1e17:
        seconds = stamp / 1000 if stamp > 1e11 else stamp
        messages.append(otlp(point(ts=seconds)))
    batch, errors, registry = decode([*messages, orjson.dumps(adapter(ts=NOW - DAY))])
    assert [e.kind for e in errors] == ["bad_timestamp"] * len(messages)
    for e in errors:
        assert words in e.reason, e.reason
    assert batch.timestamps.tolist() == [NOW - DAY]
    assert len(registry) == 1


def test_the_window_edges_are_inside() -> None:
    batch, errors, _ = decode([orjson.dumps([adapter(ts=NOW + DAY), adapter(ts=NOW - 30 * DAY)])])
    assert errors == []
    assert batch.timestamps.tolist() == [NOW + DAY, NOW - 30 * DAY]


def test_the_window_is_configurable_and_can_be_off() -> None:
    msg = orjson.dumps(adapter(ts=NOW + 2 * DAY))
    assert decode([msg], DecodeLimits(max_future=3 * DAY))[1] == []
    assert decode([msg], DecodeLimits(max_future=None))[1] == []
    assert decode([msg], now=None)[1] == []  # no clock reading: no window
    assert decode([msg], DecodeLimits(max_future=60))[1][0].kind == "bad_timestamp"


def test_a_cached_timestamp_is_judged_again_when_the_clock_moves() -> None:
    decoder = SampleDecoder(SeriesRegistry(), limits=DecodeLimits(max_past=60))
    msg = orjson.dumps(adapter(ts="2026-05-28T20:26:40Z"))  # NOW
    assert decoder.decode([msg], NOW)[1] == []
    assert decoder.decode([msg], NOW + 30)[1] == []
    assert decoder.decode([msg], NOW + 600)[1][0].kind == "bad_timestamp"


# ---------------------------------------------------------------------------- a decoder bug


def test_an_unexpected_error_fails_the_message_not_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> None:
        raise MemoryError("no room")

    monkeypatch.setattr(SampleDecoder, "_otlp", boom)
    batch, errors, _ = decode([orjson.dumps(adapter(value=1)), otlp(point()), orjson.dumps(adapter(value=2))])
    assert batch.values.tolist() == [1.0, 2.0]
    assert errors == [Malformed(1, "the decoder failed: MemoryError: 'no room'", "decoder_error")]
    assert {"over_limit", "decoder_error", "decoder_crash"} <= set(KINDS)


# ---------------------------------------------------------------------------- the worker


@pytest.fixture
def worker() -> Iterator[DecodeWorker]:
    w = DecodeWorker(SeriesRegistry())
    w.start()
    try:
        yield w
    finally:
        w.close(1.0)


def test_the_worker_decodes_within_the_same_limits(worker: DecodeWorker) -> None:
    worker.submit([POISON, orjson.dumps(adapter(ts=1e299)), orjson.dumps(adapter())], NOW)
    result = worker.result()
    assert result is not None
    batch, errors = result
    assert [e.kind for e in errors] == ["over_limit", "bad_timestamp"]
    assert len(batch) == 1
    assert worker.alive


def slow_message(points: int = 20_000) -> bytes:
    """A valid OTLP message that takes the decoder about a second: many new series with array labels."""
    return otlp(
        *(point(value=i, k={"arrayValue": {"values": [{"intValue": i}]}}, p=str(i)) for i in range(points))
    )


def test_a_worker_killed_while_decoding_names_the_message(worker: DecodeWorker) -> None:
    values = [orjson.dumps(adapter()), slow_message(), orjson.dumps(adapter())]
    worker.submit(values, NOW)
    assert worker.pid is not None
    deadline = time.monotonic() + 10
    while worker.decoding != 1:  # the child says which message it is on
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(worker.pid, signal.SIGSEGV)
    with pytest.raises(DecodeWorkerError, match="exited with code -11"):
        worker.result()
    assert worker.crashed_at == 1


def test_a_worker_that_answered_names_no_message(worker: DecodeWorker) -> None:
    worker.submit([orjson.dumps(adapter())], NOW)
    assert worker.result() is not None
    assert worker.crashed_at is None
    assert worker.decoding is None
