"""Fuzzing the three Kafka message formats: the decoder never raises, and every message is either
decoded whole or refused whole with a reason of a known kind.

Messages are drawn near each format's shape (adapter samples, batches and columnar series, OTLP
with nested attribute values), with any JSON value in any field, plus raw bytes; the same
messages then go through the decode worker, which must give the same answer.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.sources.kafka_formats import KINDS, DecodeLimits, SampleDecoder
from agent.sources.kafka_worker import DecodeWorker
from detectors import SeriesRegistry

NOW = 1_780_000_000.0
#: Small limits, so that examples reach them.
LIMITS = DecodeLimits(
    max_message_bytes=4096, max_depth=3, max_labels=4, max_label_length=40, max_decoded_bytes=400
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["NaN", "+Inf", "1.5", "2026-05-28T20:26:40Z", str(int(NOW)), "1e299", ""]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
stamps = st.one_of(
    st.floats(min_value=NOW - 40 * 86_400, max_value=NOW + 2 * 86_400),
    st.sampled_from([NOW, NOW * 1000, NOW * 1e9, 1e299, -1.0, "2026-05-28T20:26:40Z", "yesterday"]),
    json_values,
)
labels = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=50) | json_values, max_size=6)


def maybe(field: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(field, json_values)


adapter_samples = st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["up", "cpu", ""])), "labels": maybe(labels)},
    optional={
        "value": maybe(st.floats() | st.sampled_from(["1", "NaN", "x"])),
        "timestamp": stamps,
        "extra": json_values,
    },
)
columnar_series = st.fixed_dictionaries(
    {
        "name": maybe(st.sampled_from(["up", "cpu"])),
        "labels": maybe(labels),
        "timestamps": maybe(st.lists(stamps, max_size=4)),
        "values": maybe(st.lists(st.floats() | st.sampled_from(["1", "NaN"]), max_size=4)),
    }
)


def any_values(depth: int) -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.builds(lambda s: {"stringValue": s}, st.text(max_size=20)),
        st.builds(
            lambda i: {"intValue": i},
            st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=4),
        ),
        st.builds(lambda f: {"doubleValue": f}, st.floats()),
        st.builds(lambda b: {"boolValue": b}, st.booleans()),
        json_values,
    )
    if depth == 0:
        return leaf
    inner = any_values(depth - 1)
    return st.one_of(
        leaf,
        st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(inner, max_size=3)),
        st.builds(
            lambda kvs: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kvs]}},
            st.lists(st.tuples(st.text(max_size=4), inner), max_size=3),
        ),
    )


attributes = st.lists(
    st.builds(lambda k, v: {"key": k, "value": v}, st.text(max_size=6), any_values(5)), max_size=5
)
points = st.fixed_dictionaries(
    {"attributes": maybe(attributes)},
    optional={
        "timeUnixNano": maybe(st.sampled_from([str(int(NOW * 1e9)), str(int(NOW)), "1e299", "-5"])),
        "asDouble": maybe(st.floats()),
        "asInt": maybe(st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=4)),
        "flags": json_values,
    },
)
otlp_docs = st.builds(
    lambda resource, kind, pts: {
        "resourceMetrics": [
            {
                "resource": {"attributes": resource},
                "scopeMetrics": [{"metrics": [{"name": "m", kind: {"dataPoints": pts}}]}],
            }
        ]
    },
    maybe(attributes),
    st.sampled_from(["gauge", "sum", "histogram", "other"]),
    maybe(st.lists(points, max_size=4)),
)
messages = st.one_of(
    st.builds(orjson.dumps, adapter_samples),
    st.builds(orjson.dumps, st.lists(adapter_samples, max_size=4)),
    st.builds(orjson.dumps, st.lists(columnar_series, min_size=1, max_size=3)),
    st.builds(orjson.dumps, otlp_docs),
    st.binary(max_size=64),
    st.builds(orjson.dumps, json_values),
    st.none(),
)


def check(values: list[bytes | None], result: Any, registry: SeriesRegistry) -> None:
    batch, errors = result
    assert all(e.kind in KINDS and e.reason for e in errors)
    assert len({e.position for e in errors}) == len(errors)
    assert all(0 <= e.position < len(values) for e in errors)
    assert all(math.isfinite(t) and NOW - 30 * 86_400 <= t <= NOW + 86_400 for t in batch.timestamps.tolist())
    if len(errors) == len(values):
        assert len(batch) == 0
        assert len(registry) == 0, "a refused message registers no series"
    for key in map(registry.key, range(len(registry))):
        assert len(key.labels) <= LIMITS.max_labels
        assert all(len(v) <= LIMITS.max_label_length for _, v in key.labels)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=4))
def test_the_decoder_never_raises_and_every_message_is_whole_or_refused(values: list[bytes | None]) -> None:
    registry = SeriesRegistry(limit=1000)
    decoder = SampleDecoder(registry, limits=LIMITS)
    check(values, decoder.decode(values, NOW), registry)
    # each message alone: decoded or refused on its own, with the same verdict
    for i, value in enumerate(values):
        alone = SampleDecoder(SeriesRegistry(limit=1000), limits=LIMITS).decode([value], NOW)
        together = [e.reason for e in decoder.decode(values, NOW)[1] if e.position == i]
        assert [e.reason for e in alone[1]] == together


@pytest.fixture(scope="module")
def worker() -> Any:
    w = DecodeWorker(SeriesRegistry(limit=10**6), limits=LIMITS)
    w.start()
    yield w
    w.close(1.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(messages, min_size=1, max_size=4))
def test_the_worker_gives_the_decoders_verdicts_and_survives(
    worker: DecodeWorker, values: list[bytes | None]
) -> None:
    worker.submit(values, NOW)
    result = worker.result()
    assert result is not None
    inline = SampleDecoder(SeriesRegistry(limit=1000), limits=LIMITS).decode(values, NOW)
    assert [(e.position, e.reason, e.kind) for e in result[1]] == [
        (e.position, e.reason, e.kind) for e in inline[1]
    ]
    assert result[0].values.tobytes() == inline[0].values.tobytes()
    assert worker.alive
