"""Decoding Kafka message values into sample batches: every format, malformed input, limits."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources.kafka_formats import KINDS, SampleDecoder, decode_messages
from detectors import SeriesKey, SeriesRegistry
from detectors.series import DROPPED

T0 = datetime(2020, 1, 1, tzinfo=UTC).timestamp()


def adapter(
    name: str = "up", value: Any = "1.5", ts: Any = "2020-01-01T00:00:00Z", **labels: str
) -> dict[str, Any]:
    return {"timestamp": ts, "value": value, "name": name, "labels": {"__name__": name, **labels}}


def enc(doc: Any) -> bytes:
    return orjson.dumps(doc)


def otlp(metrics: list[dict[str, Any]], resource: dict[str, str] | None = None) -> dict[str, Any]:
    attrs = [{"key": k, "value": {"stringValue": v}} for k, v in (resource or {}).items()]
    return {"resourceMetrics": [{"resource": {"attributes": attrs}, "scopeMetrics": [{"metrics": metrics}]}]}


def point(
    value: Any, *, kind: str = "asDouble", ns: Any = "1577836800000000000", **attrs: Any
) -> dict[str, Any]:
    attributes = []
    for k, v in attrs.items():
        av: dict[str, Any]
        if isinstance(v, bool):
            av = {"boolValue": v}
        elif isinstance(v, int):
            av = {"intValue": str(v)}
        elif isinstance(v, float):
            av = {"doubleValue": v}
        else:
            av = {"stringValue": v}
        attributes.append({"key": k, "value": av})
    return {"attributes": attributes, "timeUnixNano": ns, kind: value}


def keys_of(registry: SeriesRegistry, batch_series: np.ndarray) -> list[SeriesKey]:
    return [registry.key(int(s)) for s in batch_series]


# ---------------------------------------------------------------------------- adapter format


def test_adapter_sample_decodes_name_labels_time_and_value() -> None:
    reg = SeriesRegistry()
    batch, errors = decode_messages([enc(adapter(job="api", instance="a:1"))], reg)
    assert errors == []
    assert len(batch) == 1
    assert keys_of(reg, batch.series) == [SeriesKey.of("up", {"job": "api", "instance": "a:1"})]
    assert batch.timestamps.tolist() == [T0]
    assert batch.values.tolist() == [1.5]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2020-01-01T00:00:00Z", T0),
        ("2020-01-01T01:00:00+01:00", T0),
        ("2020-01-01T00:00:00.250Z", T0 + 0.25),
        ("2020-01-01T00:00:00.123456789Z", T0 + 0.123456),
        ("2020-01-01T00:00:00", T0),  # no offset: UTC
        (T0, T0),  # seconds
        (int(T0), T0),
        (T0 * 1e3, T0),  # milliseconds
        (int(T0 * 1e3) + 250, T0 + 0.25),
        (int(T0 * 1e6), T0),  # microseconds
        (int(T0 * 1e9), T0),  # nanoseconds
        ("1577836800", T0),  # a number in a string
    ],
)
def test_timestamps_in_every_accepted_form(ts: Any, expected: float) -> None:
    batch, errors = decode_messages([enc(adapter(ts=ts))], SeriesRegistry())
    assert errors == []
    assert batch.timestamps[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.5", 1.5), (2, 2.0), (-0.25, -0.25), ("1e3", 1000.0), ("+Inf", math.inf), ("-Inf", -math.inf)],
)
def test_numeric_values(value: Any, expected: float) -> None:
    batch, errors = decode_messages([enc(adapter(value=value))], SeriesRegistry())
    assert errors == []
    assert batch.values[0] == expected


def test_nan_and_stale_markers_are_samples() -> None:
    batch, errors = decode_messages(
        [enc(adapter(value="NaN")), enc(adapter(value="nan", job="x"))], SeriesRegistry()
    )
    assert errors == []
    assert len(batch) == 2
    assert np.isnan(batch.values).all()


def test_name_may_come_from_labels_only_and_labels_are_optional() -> None:
    reg = SeriesRegistry()
    only_label = {"timestamp": T0, "value": 1, "labels": {"__name__": "up", "job": "a"}}
    no_labels = {"timestamp": T0, "value": 2, "name": "bare"}
    batch, errors = decode_messages([enc(only_label), enc(no_labels)], reg)
    assert errors == []
    assert keys_of(reg, batch.series) == [SeriesKey.of("up", {"job": "a"}), SeriesKey("bare")]


def test_same_series_in_any_label_order_gets_one_id() -> None:
    reg = SeriesRegistry()
    a = {"timestamp": T0, "value": 1, "name": "m", "labels": {"a": "1", "b": "2"}}
    b = {"timestamp": T0, "value": 2, "name": "m", "labels": {"b": "2", "a": "1"}}
    batch, errors = decode_messages([enc([a, b, a])], reg)
    assert errors == []
    assert batch.series.tolist() == [0, 0, 0]
    assert len(reg) == 1


# ---------------------------------------------------------------------------- batch format


def test_batch_message_carries_many_samples_in_order() -> None:
    reg = SeriesRegistry()
    samples = [adapter(value=str(i), pod=f"p{i % 3}") for i in range(10)]
    batch, errors = decode_messages([enc(samples), enc([]), enc(samples[:2])], reg)
    assert errors == []
    assert batch.values.tolist() == [float(i) for i in range(10)] + [0.0, 1.0]
    assert len(reg) == 3
    assert [dict(k.labels)["pod"] for k in keys_of(reg, batch.series[:3])] == ["p0", "p1", "p2"]


def test_decoder_caches_series_across_calls() -> None:
    reg = SeriesRegistry()
    dec = SampleDecoder(reg)
    msg = enc([adapter(pod=f"p{i}") for i in range(50)])
    first, _ = dec.decode([msg])
    second, _ = dec.decode([msg, msg])
    assert len(reg) == 50
    assert second.series.tolist() == first.series.tolist() * 2


def test_new_timestamps_and_series_in_a_known_batch() -> None:
    reg = SeriesRegistry()
    dec = SampleDecoder(reg)
    dec.decode([enc([adapter(pod="a"), adapter(pod="b")])])
    batch, errors = dec.decode(
        [enc([adapter(pod="a", ts="2020-01-01T00:00:10Z"), adapter(pod="c", ts="2020-01-01T00:00:20Z")])]
    )
    assert errors == []
    assert batch.timestamps.tolist() == [T0 + 10, T0 + 20]
    assert [dict(k.labels)["pod"] for k in keys_of(reg, batch.series)] == ["a", "c"]


# ---------------------------------------------------------------------------- OTLP


def test_otlp_gauge_and_sum_with_resource_and_point_attributes() -> None:
    reg = SeriesRegistry()
    doc = otlp(
        [
            {
                "name": "cpu",
                "unit": "1",
                "gauge": {"dataPoints": [point(0.5, pod="a"), point(0.75, pod="b")]},
            },
            {
                "name": "requests_total",
                "sum": {
                    "aggregationTemporality": 2,
                    "isMonotonic": True,
                    "dataPoints": [point("42", kind="asInt", code=200, ok=True, ratio=0.5)],
                },
            },
        ],
        resource={"service.name": "api", "pod": "resource-pod"},
    )
    batch, errors = decode_messages([enc(doc)], reg)
    assert errors == []
    assert batch.values.tolist() == [0.5, 0.75, 42.0]
    assert batch.timestamps.tolist() == [T0, T0, T0]
    keys = keys_of(reg, batch.series)
    # the data point's attributes win over the resource's
    assert keys[0] == SeriesKey.of("cpu", {"service.name": "api", "pod": "a"})
    assert keys[1] == SeriesKey.of("cpu", {"service.name": "api", "pod": "b"})
    assert keys[2] == SeriesKey.of(
        "requests_total",
        {"service.name": "api", "pod": "resource-pod", "code": "200", "ok": "true", "ratio": "0.5"},
    )


def test_otlp_numbers_as_json_numbers_and_special_doubles() -> None:
    doc = otlp(
        [
            {
                "name": "g",
                "gauge": {
                    "dataPoints": [
                        point(7, kind="asInt", ns=int(T0 * 1e9)),
                        point("NaN", ns="1577836801000000000"),
                        point("Infinity", ns="1577836802500000000"),
                    ]
                },
            }
        ]
    )
    batch, errors = decode_messages([enc(doc)], SeriesRegistry())
    assert errors == []
    assert batch.values[0] == 7.0
    assert math.isnan(batch.values[1])
    assert batch.values[2] == math.inf
    assert batch.timestamps.tolist() == [T0, T0 + 1, T0 + 2.5]


def test_otlp_no_recorded_value_flag_is_a_stale_marker() -> None:
    doc = otlp(
        [{"name": "g", "gauge": {"dataPoints": [{"timeUnixNano": "1577836800000000000", "flags": 1}]}}]
    )
    batch, errors = decode_messages([enc(doc)], SeriesRegistry())
    assert errors == []
    assert math.isnan(batch.values[0])


def test_otlp_histograms_and_summaries_are_skipped_and_counted() -> None:
    reg = SeriesRegistry()
    dec = SampleDecoder(reg)
    doc = otlp(
        [
            {"name": "lat", "histogram": {"dataPoints": [{"timeUnixNano": "1", "count": "3"}] * 2}},
            {"name": "q", "summary": {"dataPoints": [{"timeUnixNano": "1"}]}},
            {"name": "g", "gauge": {"dataPoints": [point(1.0)]}},
        ]
    )
    batch, errors = dec.decode([enc(doc)])
    assert errors == []
    assert len(batch) == 1
    assert dec.skipped_points == 3


def test_otlp_complex_attribute_values_are_flattened() -> None:
    reg = SeriesRegistry()
    p = point(1.0)
    p["attributes"] = [
        {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "2"}]}}},
        {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}}},
        {"key": "empty", "value": {}},
    ]
    batch, errors = decode_messages([enc(otlp([{"name": "g", "gauge": {"dataPoints": [p]}}]))], reg)
    assert errors == []
    assert reg.key(int(batch.series[0])).label_dict == {
        "list": '["a","2"]',
        "map": '{"k":"false"}',
        "empty": "",
    }


# ---------------------------------------------------------------------------- auto and fixed formats


def test_auto_detects_each_message_on_its_own() -> None:
    reg = SeriesRegistry()
    msgs = [
        enc(adapter(value=1)),
        enc([adapter(value=2), adapter(value=3, job="b")]),
        enc(otlp([{"name": "g", "gauge": {"dataPoints": [point(4.0)]}}])),
    ]
    batch, errors = decode_messages(msgs, reg, "auto")
    assert errors == []
    assert batch.values.tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("adapter", adapter(), [adapter()]),
        ("batch", [adapter()], adapter()),
        ("otlp", otlp([{"name": "g", "gauge": {"dataPoints": [point(1.0)]}}]), adapter()),
    ],
)
def test_a_fixed_format_rejects_the_others(fmt: Any, good: Any, bad: Any) -> None:
    batch, errors = decode_messages([enc(good), enc(bad)], SeriesRegistry(), fmt)
    assert len(batch) == 1
    assert [(e.position, e.kind) for e in errors] == [(1, "bad_shape" if fmt != "otlp" else "missing_field")]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sample format"):
        SampleDecoder(SeriesRegistry(), "protobuf")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- malformed messages

GOOD = adapter()


@pytest.mark.parametrize(
    ("raw", "kind", "reason"),
    [
        (None, "empty", "empty message (null value)"),
        (b"", "not_json", "not JSON: "),
        (b"{not json", "not_json", "not JSON: "),
        (b"\xff\xfe", "not_json", "not JSON: "),
        (b'"just a string"', "bad_shape", "expected a JSON object (one sample), got string"),
        (b"42", "bad_shape", "expected a JSON object (one sample), got number"),
        (enc({**GOOD, "value": "abc"}), "bad_value", "field 'value': expected a number, got 'abc'"),
        (enc({**GOOD, "value": True}), "bad_value", "field 'value': expected a number, got True"),
        (enc({**GOOD, "value": None}), "bad_value", "field 'value': expected a number, got null"),
        (enc({**GOOD, "value": [1]}), "bad_value", "field 'value': expected a number, got an array"),
        (enc({k: v for k, v in GOOD.items() if k != "value"}), "missing_field", "missing field 'value'"),
        (
            enc({k: v for k, v in GOOD.items() if k != "timestamp"}),
            "missing_field",
            "missing field 'timestamp'",
        ),
        (
            enc({"timestamp": T0, "value": 1, "labels": {"job": "x"}}),
            "missing_field",
            "missing field 'name' (and no labels.__name__)",
        ),
        (enc({**GOOD, "timestamp": "yesterday"}), "bad_timestamp", "field 'timestamp': expected an RFC 3339"),
        (enc({**GOOD, "timestamp": True}), "bad_timestamp", "field 'timestamp': expected an RFC 3339"),
        (enc({**GOOD, "timestamp": {"s": 1}}), "bad_timestamp", "field 'timestamp': expected an RFC 3339"),
        (enc({**GOOD, "name": ""}), "bad_value", "field 'name': expected a non-empty string, got ''"),
        (enc({**GOOD, "name": 5}), "bad_value", "field 'name': expected a non-empty string, got 5"),
        (enc({**GOOD, "labels": ["a"]}), "bad_shape", "field 'labels': expected an object, got array"),
        (
            enc({**GOOD, "labels": {"a": 1}}),
            "bad_labels",
            "field 'labels': label 'a' must map a string to a string, got 1",
        ),
        (
            enc({**GOOD, "labels": {"a": ["x"]}}),
            "bad_labels",
            "field 'labels': label 'a' must map a string to a string",
        ),
    ],
)
def test_malformed_adapter_messages_are_reported_with_a_reason(
    raw: bytes | None, kind: str, reason: str
) -> None:
    reg = SeriesRegistry()
    batch, errors = decode_messages([enc(GOOD), raw, enc(GOOD)], reg)
    assert len(batch) == 2, "the good messages around a bad one still decode"
    assert len(errors) == 1
    assert errors[0].position == 1
    assert errors[0].kind == kind
    assert errors[0].kind in KINDS
    assert errors[0].reason.startswith(reason), errors[0].reason


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        ({**GOOD, "value": "abc"}, "sample 3: field 'value': expected a number, got 'abc'"),
        ("text", "sample 3: expected a JSON object, got string"),
        ({**GOOD, "timestamp": "soon"}, "sample 3: field 'timestamp': expected an RFC 3339"),
        (
            {**GOOD, "labels": {"x": None}},
            "sample 3: field 'labels': label 'x' must map a string to a string",
        ),
    ],
)
def test_one_bad_sample_makes_the_whole_batch_malformed(sample: Any, reason: str) -> None:
    reg = SeriesRegistry()
    samples = [adapter(pod=f"p{i}") for i in range(3)] + [sample] + [adapter(pod="p9")]
    batch, errors = decode_messages([enc(samples)], reg)
    assert len(batch) == 0
    assert len(errors) == 1
    assert errors[0].reason.startswith(reason), errors[0].reason
    assert len(reg) == 0, "a malformed message registers no series"


def test_bad_sample_after_known_series_is_still_caught_on_the_fast_path() -> None:
    reg = SeriesRegistry()
    dec = SampleDecoder(reg)
    good = [adapter(pod=f"p{i}") for i in range(5)]
    dec.decode([enc(good)])
    bad = [*good[:4], {**good[4], "value": False}]
    batch, errors = dec.decode([enc(bad)])
    assert len(batch) == 0
    assert errors[0].reason == "sample 4: field 'value': expected a number, got False"


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"resourceMetrics": {}}, "message.resourceMetrics: expected an array, got object"),
        ({"resourceMetrics": [1]}, "resourceMetrics[0]: expected an object, got number"),
        (
            otlp([{"name": "g", "gauge": {"dataPoints": [point("x", kind="asInt")]}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0]: field 'asInt': "
            "expected an int64, got 'x'",
        ),
        (
            otlp([{"name": "g", "gauge": {"dataPoints": [point("abc")]}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0]: field 'asDouble': "
            "expected a number, got 'abc'",
        ),
        (
            otlp([{"name": "g", "sum": {"dataPoints": [{"timeUnixNano": "1"}]}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].sum.dataPoints[0]: "
            "missing field 'asDouble' or 'asInt'",
        ),
        (
            otlp([{"name": "g", "gauge": {"dataPoints": [{"asDouble": 1.0}]}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0]: missing field 'timeUnixNano'",
        ),
        (
            otlp([{"name": "g", "gauge": {"dataPoints": [point(1.0, ns="soon")]}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0]: field 'timeUnixNano'",
        ),
        (
            otlp([{"gauge": {"dataPoints": []}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0]: field 'name'",
        ),
        (
            otlp([{"name": "g", "gauge": {"dataPoints": [point("9" * 400, kind="asInt")]}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0]: "
            "field 'asInt': expected an int64",
        ),
        (
            otlp([{"name": "g", "gauge": {"dataPoints": [point(1.0, ns="9" * 400)]}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0]: field 'timeUnixNano'",
        ),
        (
            otlp([{"name": "g", "gauge": {"dataPoints": [point(1.0, ns="-5")]}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0]: field 'timeUnixNano'",
        ),
        (
            otlp([{"name": "g"}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0]: expected one of 'gauge', 'sum'",
        ),
        (
            otlp([{"name": "g", "gauge": {"dataPoints": [{**point(1.0), "attributes": [{"key": 1}]}]}}]),
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].attributes[0]: expected",
        ),
    ],
)
def test_malformed_otlp_names_the_path(doc: Any, reason: str) -> None:
    reg = SeriesRegistry()
    good = otlp([{"name": "ok", "gauge": {"dataPoints": [point(1.0)]}}])
    batch, errors = decode_messages([enc(doc), enc(good)], reg, "otlp")
    assert len(batch) == 1
    assert [e.position for e in errors] == [0]
    assert errors[0].reason.startswith(reason), errors[0].reason
    assert len(reg) == 1, "only the good message's series is registered"


def test_otlp_point_after_a_bad_one_does_not_leak_samples() -> None:
    doc = otlp([{"name": "g", "gauge": {"dataPoints": [point(1.0, a="1"), point("bad", a="2")]}}])
    batch, errors = decode_messages([enc(doc)], SeriesRegistry())
    assert len(batch) == 0
    assert len(errors) == 1


# ---------------------------------------------------------------------------- cardinality limit


def test_series_past_the_limit_are_dropped_and_counted_per_sample() -> None:
    reg = SeriesRegistry(limit=2)
    dec = SampleDecoder(reg)
    msg = enc([adapter(pod=f"p{i}") for i in range(4)])
    batch, errors = dec.decode([msg])
    assert errors == []
    assert batch.series.tolist() == [0, 1, DROPPED, DROPPED]
    assert reg.dropped == 2
    batch, _ = dec.decode([msg, msg])
    assert batch.series.tolist() == [0, 1, DROPPED, DROPPED] * 2
    assert reg.dropped == 6, "every refused sample is counted, also on the cached path"
    assert len(reg) == 2
    assert len(batch.without_dropped()) == 4


def test_caches_stay_bounded_whatever_the_cardinality() -> None:
    reg = SeriesRegistry(limit=50)
    dec = SampleDecoder(reg, cache_size=64)
    for round_ in range(10):
        msg = enc([adapter(pod=f"p{round_}-{i}", ts=T0 + round_ * 100 + i) for i in range(100)])
        batch, errors = dec.decode([msg])
        assert errors == []
        assert len(batch) == 100
    assert len(reg) == 50
    assert reg.dropped == 950
    assert len(dec._ids) <= 64
    assert len(dec._refused) <= 64
    # after the caches were cleared, known series still get their ids back
    again, _ = dec.decode([enc([adapter(pod="p0-0", ts=T0)])])
    assert again.series.tolist() == [0]


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        SampleDecoder(SeriesRegistry(), cache_size=0)


# ---------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson can write
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64) | st.none(), max_size=6))
def test_any_bytes_never_raise_and_every_message_is_accounted_for(values: list[bytes | None]) -> None:
    reg = SeriesRegistry(limit=5)
    batch, errors = SampleDecoder(reg).decode(values)
    assert len(batch.series) == len(batch.timestamps) == len(batch.values)
    assert sorted({e.position for e in errors}) == [e.position for e in errors]
    for e in errors:
        assert e.kind in KINDS
        assert e.reason
    for i, v in enumerate(values):
        if v is None:
            assert i in {e.position for e in errors}


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, max_size=5), st.sampled_from(["auto", "adapter", "batch", "otlp"]))
def test_any_json_never_raises(docs: list[Any], fmt: Any) -> None:
    values = [orjson.dumps(d) for d in docs]
    batch, errors = SampleDecoder(SeriesRegistry(limit=5), fmt).decode(values)
    assert len(batch.series) == len(batch.values)
    assert all(e.kind in KINDS for e in errors)
    assert not any(e.reason.startswith("cannot decode") for e in errors), "every reason is a precise one"


sample_fields = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["up", "cpu"]) | json_values,
        "value": st.sampled_from(["1.5", 2, "NaN"]) | json_values,
        "timestamp": st.sampled_from(["2020-01-01T00:00:00Z", T0]) | json_values,
        "labels": st.dictionaries(
            st.sampled_from(["a", "b"]), st.sampled_from(["x", "y"]) | json_values, max_size=2
        ),
    }
)


@settings(max_examples=400, deadline=None)
@given(st.lists(sample_fields, min_size=1, max_size=6))
def test_a_batch_is_all_or_nothing(samples: list[dict[str, Any]]) -> None:
    """A batch decodes to all its samples or is reported: never a part of it."""
    reg = SeriesRegistry()
    dec = SampleDecoder(reg)
    dec.decode([enc(samples[:1])])  # warm the caches so both the fast and the slow path are exercised
    batch, errors = dec.decode([enc(samples)])
    if errors:
        assert len(batch) == 0
        assert errors[0].reason.startswith("sample ")
    else:
        assert len(batch) == len(samples)
        for s, v in zip(samples, batch.values.tolist(), strict=True):
            expected = float(s["value"])
            assert (math.isnan(v) and math.isnan(expected)) or v == expected


numeric_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e400", "-0", " 1", "01", "1_0", "", "true", "null", "1,2"]),
    st.text(alphabet='0123456789.,eE+-[]" {}:', max_size=6),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(numeric_text, min_size=1, max_size=8))
def test_numeric_strings_agree_with_float(values: list[str]) -> None:
    """The orjson shortcut for string values gives what ``float`` gives, or fails when it fails."""
    from agent.sources.kafka_formats import _numeric_strings

    try:
        expected = [float(v) for v in values]
    except ValueError:
        with pytest.raises(ValueError, match="could not convert"):
            _numeric_strings(values)
        return
    got = [float(v) for v in _numeric_strings(values)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert (math.isnan(g) and math.isnan(e)) or g == e


any_value = st.one_of(
    st.fixed_dictionaries({"stringValue": st.text(max_size=4) | json_values}),
    st.fixed_dictionaries({"intValue": st.sampled_from(["7", "9" * 400, "x"]) | json_values}),
    st.fixed_dictionaries({"doubleValue": st.sampled_from([1.5, "NaN", "y"]) | json_values}),
    st.fixed_dictionaries(
        {"arrayValue": st.fixed_dictionaries({"values": st.lists(json_values, max_size=2)})}
    ),
    json_values,
)
attribute = st.fixed_dictionaries({"key": st.sampled_from(["a", "b"]) | json_values, "value": any_value})
data_point = st.fixed_dictionaries(
    {"timeUnixNano": st.sampled_from(["1577836800000000000", "9" * 30, "-1"]) | json_values},
    optional={
        "asDouble": st.sampled_from([1.5, "Infinity"]) | json_values,
        "asInt": st.sampled_from(["3", "9" * 400]) | json_values,
        "attributes": st.lists(attribute, max_size=2) | json_values,
        "flags": st.sampled_from([0, 1]) | json_values,
    },
)
metric = st.fixed_dictionaries(
    {"name": st.sampled_from(["m", ""]) | json_values},
    optional={
        "gauge": st.fixed_dictionaries({"dataPoints": st.lists(data_point, max_size=3) | json_values}),
        "sum": st.fixed_dictionaries({"dataPoints": st.lists(data_point, max_size=3)}) | json_values,
        "histogram": json_values,
    },
)
otlp_doc = st.fixed_dictionaries(
    {
        "resourceMetrics": st.lists(
            st.fixed_dictionaries(
                {
                    "resource": st.fixed_dictionaries({"attributes": st.lists(attribute, max_size=2)})
                    | json_values,
                    "scopeMetrics": st.lists(
                        st.fixed_dictionaries({"metrics": st.lists(metric, max_size=3)}) | json_values,
                        max_size=2,
                    ),
                }
            )
            | json_values,
            max_size=2,
        )
    }
)


@settings(max_examples=400, deadline=None)
@given(st.lists(otlp_doc, min_size=1, max_size=3))
def test_any_otlp_shaped_document_never_raises(docs: list[dict[str, Any]]) -> None:
    reg = SeriesRegistry(limit=10)
    batch, errors = SampleDecoder(reg, "otlp").decode([orjson.dumps(d) for d in docs])
    assert len(batch.series) == len(batch.timestamps) == len(batch.values)
    assert all(e.kind in KINDS for e in errors)
    assert not any(e.reason.startswith("cannot decode") for e in errors), [e.reason for e in errors]


# ---------------------------------------------------------------- columnar batch form


def test_columnar_series_batch_decodes_every_point_in_order() -> None:
    reg = SeriesRegistry()
    doc = [
        {
            "name": "cpu",
            "labels": {"pod": "a"},
            "timestamps": [1767225600, 1767225615],
            "values": [0.5, "0.75"],
        },
        {"name": "cpu", "labels": {"pod": "b"}, "timestamps": ["2026-01-01T00:00:00Z"], "values": ["NaN"]},
        {"labels": {"__name__": "mem", "pod": "a"}, "timestamps": [1767225600000], "values": [3]},
    ]
    batch, errors = SampleDecoder(reg).decode([enc(doc)])
    assert errors == []
    assert keys_of(reg, batch.series) == [
        SeriesKey.of("cpu", {"pod": "a"}),
        SeriesKey.of("cpu", {"pod": "a"}),
        SeriesKey.of("cpu", {"pod": "b"}),
        SeriesKey.of("mem", {"pod": "a"}),
    ]
    assert batch.timestamps.tolist() == [1767225600.0, 1767225615.0, 1767225600.0, 1767225600.0]
    assert batch.values[:2].tolist() == [0.5, 0.75]
    assert math.isnan(batch.values[2])
    assert batch.values[3] == 3.0


@pytest.mark.parametrize(
    ("doc", "kind", "reason"),
    [
        (
            [{"name": "m", "timestamps": [1, 2], "values": [1]}],
            "bad_shape",
            "series 0: 'timestamps' has 2 entries but 'values' has 1",
        ),
        ([{"name": "m", "values": [1]}], "missing_field", "missing field 'timestamps'"),
        (
            [{"name": "m", "timestamps": 5, "values": [1]}],
            "bad_shape",
            "series 0.timestamps: expected an array",
        ),
        ([{"name": "m", "timestamps": [1], "values": ["x"]}], "bad_value", "series 0: values[0]"),
        ([{"name": "m", "timestamps": [1], "values": [True]}], "bad_value", "series 0: values[0]"),
        ([{"name": "m", "timestamps": ["yesterday"], "values": [1]}], "bad_timestamp", "timestamps[0]"),
        (
            [{"name": "m", "timestamps": [1], "values": [1], "unit": "s"}],
            "bad_shape",
            "unknown field(s) ['unit']",
        ),
        ([{"timestamps": [1], "values": [1]}], "missing_field", "missing field 'name'"),
        ([{"name": "m", "labels": {"a": 1}, "timestamps": [1], "values": [1]}], "bad_labels", "label"),
    ],
)
def test_columnar_series_batch_errors_are_located(doc: Any, kind: str, reason: str) -> None:
    reg = SeriesRegistry()
    batch, errors = SampleDecoder(reg).decode([enc(doc)])
    assert len(batch) == 0
    assert len(errors) == 1
    assert errors[0].kind == kind
    assert reason in errors[0].reason
    assert len(reg) == 0  # a malformed message registers nothing


def test_columnar_message_with_one_bad_series_registers_none() -> None:
    reg = SeriesRegistry()
    doc = [
        {"name": "ok", "timestamps": [1], "values": [1]},
        {"name": "bad", "timestamps": [1], "values": [{}]},
    ]
    batch, errors = SampleDecoder(reg).decode([enc(doc)])
    assert len(batch) == 0
    assert errors[0].reason.startswith("series 1: ")
    assert len(reg) == 0


# ---------------------------------------------------------------------------- the raw-text fast path


class _OrjsonOnly(SampleDecoder):
    """The decoder without its msgspec path: every message parsed by orjson as a whole."""

    def _raw_message(
        self, raw: bytes, out_sids: list[int], out_ts: list[float], out_vals: list[float]
    ) -> bool:
        return False


def assert_decoded_alike(values: list[bytes | None], fmt: Any = "auto", limit: int = 100) -> None:
    """The msgspec path gives what parsing each message with orjson gives: samples, ids, reasons."""
    reg, ref_reg = SeriesRegistry(limit=limit), SeriesRegistry(limit=limit)
    dec, ref = SampleDecoder(reg, fmt), _OrjsonOnly(ref_reg, fmt)
    for _ in range(2):  # cold, then with every cache warm
        batch, errors = dec.decode(values)
        want, want_errors = ref.decode(values)
        assert batch.series.tolist() == want.series.tolist()
        np.testing.assert_array_equal(batch.timestamps, want.timestamps)
        np.testing.assert_array_equal(batch.values, want.values)
        assert errors == want_errors
    assert reg.keys() == ref_reg.keys()
    assert reg.dropped == ref_reg.dropped


def test_the_raw_path_takes_batches_and_single_samples() -> None:
    dec = SampleDecoder(SeriesRegistry())
    out: tuple[list[int], list[float], list[float]] = ([], [], [])
    assert dec._raw_message(enc([adapter(pod="a"), adapter(pod="b")]), *out)
    assert dec._raw_message(enc(adapter(pod="c")), *out)
    assert len(out[0]) == 3
    for other in (
        enc([{"name": "m", "timestamps": [1], "values": [1]}]),  # columnar
        enc(otlp([])),
        enc([{**adapter(), "unit": "s"}]),  # a field the adapter does not send
        enc([adapter(name="")]),
        b"[1, 2]",
        b"{not json",
    ):
        assert not dec._raw_message(other, *out)
    assert len(out[0]) == 3, "a message the raw path leaves adds nothing"


@pytest.mark.parametrize(
    "values",
    [
        [enc([adapter(pod="a", value=v) for v in ("1", 2, 2.5, "NaN", "+Inf", "-Inf", "1e3", "-0")])],
        [enc([adapter(pod=p, ts=t) for p in ("a", "b") for t in (T0, T0 * 1000, "2020-01-01T00:00:00.5Z")])],
        [enc([adapter(pod="é", job="日本")]), enc([adapter(job="\u65e5\u672c", pod="\u00e9")])],
        [b'[{"name":"up","labels":{"pod":"a\\u00e9"},"value":"1","timestamp":1}]', enc([adapter(pod="aé")])],
        [
            enc(
                [
                    {"labels": {"b": "2", "a": "1"}, "name": "m", "value": 1, "timestamp": T0},
                    adapter("m", a="1", b="2"),
                ]
            )
        ],
        [enc([{**adapter(), "unit": "s"}]), enc([adapter()])],  # an unknown field: orjson's path
        [b'[{"name":"up","labels":{},"value":"1","value":"2","timestamp":1}]'],  # the last counts
        [b'[{"name":"up","labels":{"a":"\xff"},"value":"1","timestamp":1}]', enc([adapter()])],  # not UTF-8
        [b'[{"name":"up","labels":{"a":"b"},"value":1e400,"timestamp":1}]'],
        [b'[{"name":"up","labels":{"a":"b"},"value":"1","timestamp":123456789012345678901234567890}]'],
        [enc([adapter(pod="new"), adapter(pod="x", value="zz")]), enc([adapter(pod="new")])],
        [enc([adapter(pod="a"), adapter(pod="b", ts=None)]), enc([adapter(pod="b")])],
        [enc([adapter(name=5)]), enc([adapter(pod=["x"])]), enc([adapter(labels_are="ok")])],  # type: ignore[arg-type]
        [enc({**adapter(), "labels": None}), enc([{**adapter(), "labels": [1]}])],
        [enc([adapter(pod=f"p{i}") for i in range(8)]), enc([adapter(pod=f"p{i}") for i in range(4, 12)])],
    ],
)
def test_the_raw_path_decodes_as_orjson_does(values: list[bytes | None]) -> None:
    for fmt in ("auto", "batch", "adapter"):
        assert_decoded_alike(values, fmt)
    assert_decoded_alike(values, limit=3)


raw_samples = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["up", "cpu", "", "é"]) | json_values,
            "value": st.sampled_from(["1.5", 2, "NaN", "x", 1e300]) | json_values,
            "timestamp": st.sampled_from(["2020-01-01T00:00:00Z", T0, T0 * 1e6, "nope"]) | json_values,
            "labels": st.dictionaries(
                st.sampled_from(["a", "b", "__name__", "ü"]),
                st.sampled_from(["x", "y", "up"]) | json_values,
                max_size=3,
            ),
        },
        optional={"extra": json_values},
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(raw_samples | sample_fields, min_size=1, max_size=4), st.integers(1, 4))
def test_any_adapter_batch_decodes_as_orjson_does(batches: list[Any], limit: int) -> None:
    values: list[bytes | None] = [enc(b if isinstance(b, list) else [b]) for b in batches]
    values += [enc(b[0]) for b in batches if isinstance(b, list) and b]  # single samples too
    assert_decoded_alike(values, limit=limit)
