"""Decode Kafka message values into a columnar :class:`~detectors.SampleBatch`, fast.

Three wire formats, each a JSON document per message:

``adapter``
    prometheus-kafka-adapter, one sample per message::

        {"timestamp": "2020-01-01T00:00:00Z", "value": "1.5", "name": "up",
         "labels": {"__name__": "up", "job": "api"}}

``batch``
    a JSON array of such samples (how producers get past the per-message cost of the client),
    or a JSON array of series, each carrying many points as parallel arrays, the columnar form
    that costs the agent least per sample::

        [{"name": "up", "labels": {"job": "api"}, "timestamps": [1767225600, 1767225615],
          "values": [1, 0]}]

``otlp``
    OpenTelemetry OTLP/JSON metrics (``resourceMetrics[].scopeMetrics[].metrics[]``); the data
    points of ``gauge`` and ``sum`` metrics become samples, their labels the resource attributes
    plus the data point attributes (the point wins on a clash). Histograms, exponential
    histograms and summaries are not samples: they are skipped and counted in
    :attr:`SampleDecoder.skipped_points`.

``auto`` picks the format of each message from its shape: an array is ``batch``, an object
with ``resourceMetrics`` is ``otlp``, any other object is ``adapter``.

Values are numbers or numeric strings; ``NaN``, ``+Inf`` and ``-Inf`` are valid samples
(Prometheus emits them, stale markers included). Timestamps are RFC 3339 strings (a missing
offset means UTC) or numbers in seconds, milliseconds, microseconds or nanoseconds since the
epoch, told apart by magnitude (below 1e11 seconds, below 1e14 milliseconds, below 1e17
microseconds, above that nanoseconds). They come out as float Unix seconds.

A message is malformed as a whole when any part of it is invalid; the reason names what and
where, e.g. ``sample 3: field 'value': expected a number, got 'abc'``. Its samples are not
used, and its series are not registered.

Every message is decoded within the budgets of :class:`DecodeLimits`, each checked before the
work it bounds is done: the message's size (before it is parsed), the nesting depth of OTLP
values, the label count and label length of each new series, the label text an OTLP message
may produce (an ``arrayValue`` or ``kvlistValue`` becomes a JSON label, which grows with each
level of nesting), and the window of accepted timestamps around the time given to
:meth:`SampleDecoder.decode`. A message past any of them is malformed, of kind ``over_limit``
(or ``bad_timestamp``), with the limit named in the reason. Adapter and batch messages yield at
most as much label text as their own size, so for them the message size bounds it.

Speed: adapter samples, batched or not, are first read by msgspec into their four fields kept
as JSON text: a series is cached by the text of its name and labels, which orjson parses only
the first time that text is seen, and the values and timestamps of a message are parsed in one
orjson call each. Anything else, or anything that needs a closer look, is parsed by orjson as a
whole, where per sample the decoder does a handful of dict lookups in C-level ``map`` loops and
caches series by ``(name, label names, label values)``. The caches are bounded dicts in front of
:class:`SeriesKey` and :meth:`SeriesRegistry.id_for`, which sort and register keys only the
first time a series is seen; timestamps, often shared by all samples of a batch, are cached the
same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np
import orjson

from detectors.batch import SampleBatch
from detectors.series import DROPPED, SeriesKey, SeriesRegistry

Format = Literal["auto", "adapter", "batch", "otlp"]
FORMATS: tuple[Format, ...] = ("auto", "adapter", "batch", "otlp")

#: Kinds of malformed messages, short and stable: they label the dead-letter metric.
KINDS = (
    "empty",
    "not_json",
    "bad_shape",
    "missing_field",
    "bad_value",
    "bad_timestamp",
    "bad_labels",
    "over_limit",
    "decoder_error",
    "decoder_crash",
)

_TS_CACHE_SIZE = 4096
_PENDING = -2
_NO_VALUE_FLAG = 1  # OTLP DataPointFlags.FLAG_NO_RECORDED_VALUE
_SKIPPED_METRIC_TYPES = ("histogram", "exponentialHistogram", "summary")
_NO_LABELS: dict[str, Any] = {}  # shared, never mutated
_NAME = itemgetter("name")
_LABELS = itemgetter("labels")
_VALUE = itemgetter("value")
_TIMESTAMP = itemgetter("timestamp")
_LABEL_VALUES = dict.values
_FIRST = itemgetter(0)
_SECOND = itemgetter(1)
_THIRD = itemgetter(2)
_NUMBER_TYPES = frozenset({str, float, int})
_STR_ONLY = {str}
_DICT_ONLY = {dict}
_JSON_NUMBER_TYPES = frozenset({float, int})
_SERIES_FIELDS = frozenset({"name", "labels", "timestamps", "values"})


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one message may cost to decode; past any limit it is malformed (``over_limit``).

    Lengths are in characters of decoded text (label names and values), sizes in bytes of the
    message. ``max_future`` and ``max_past`` bound timestamps around the time given to
    :meth:`SampleDecoder.decode` (no bound when None, or when it is given no time).
    """

    max_message_bytes: int = 8 << 20
    max_depth: int = 8
    max_labels: int = 128
    max_label_length: int = 4096
    max_series_length: int = 16384
    max_decoded_bytes: int = 16 << 20
    max_future: float | None = 86_400.0
    max_past: float | None = 30 * 86_400.0

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_depth",
            "max_labels",
            "max_label_length",
            "max_series_length",
            "max_decoded_bytes",
        ):
            if getattr(self, name) < 1:
                msg = f"decode limit {name} must be at least 1, got {getattr(self, name)}"
                raise ValueError(msg)
        for name in ("max_future", "max_past"):
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                msg = (
                    f"decode limit {name} must be a non-negative number of seconds, got {getattr(self, name)}"
                )
                raise ValueError(msg)


#: What the series cache is keyed by: the name, the label names and the label values, each in
#: the message's order (cheaper to build and hash per sample than a tuple of label pairs).
RawKey = tuple[str, tuple[str, ...], tuple[str, ...]]


def _raw_key(name: Any, labels: dict[str, Any]) -> RawKey:
    return (name, tuple(labels), tuple(labels.values()))


#: Label names, or label values, in the order of the other.
Names = tuple[str, ...]


class _LabelOrder(NamedTuple):
    """How to put the labels of a key with given label names in :class:`SeriesKey` order."""

    names: Names  # sorted, without __name__
    pick: Callable[[Names], Names]  # the label values in that order


def _label_order(names: Names) -> _LabelOrder:
    keep = sorted((i for i, n in enumerate(names) if n != "__name__"), key=names.__getitem__)
    if len(keep) >= 2:
        pick: Callable[[Names], Names] = itemgetter(*keep)
    elif keep:
        only = keep[0]

        def pick(values: Names) -> Names:
            return (values[only],)
    else:

        def pick(values: Names) -> Names:
            return ()

    return _LabelOrder(tuple(names[i] for i in keep), pick)


class _RawSample(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An adapter sample whose fields are kept as their JSON text, for :meth:`SampleDecoder._raw_samples`.

    msgspec checks the message's JSON syntax and shape without building a Python object per
    label; the text of each field is parsed by orjson, as the rest of this module parses JSON.
    """

    name: msgspec.Raw
    labels: msgspec.Raw
    value: msgspec.Raw
    timestamp: msgspec.Raw


_RAW_BATCH = msgspec.json.Decoder(list[_RawSample])
_RAW_ONE = msgspec.json.Decoder(_RawSample)
_RAW_NAME = attrgetter("name")
_RAW_LABELS = attrgetter("labels")
_RAW_VALUE = attrgetter("value")
_RAW_TIMESTAMP = attrgetter("timestamp")
_JOIN = b"".join
_COMMA = b",".join


def _json_array(parts: list[Any]) -> Any:
    """orjson's reading of JSON values given as text, all at once."""
    return orjson.loads(b"[" + _COMMA(parts) + b"]")


def _floats(values: list[Any]) -> list[float] | None:
    """Sample values as floats (numbers or numeric strings, NaN and infinities included); None
    when any is not one (the checking path then names it)."""
    value_types = set(map(type, values))
    try:
        if value_types == _STR_ONLY:
            return _numeric_strings(values)
        if _NUMBER_TYPES.issuperset(value_types):
            return list(map(float, values))
    except (ValueError, OverflowError):
        pass
    return None


class Malformed(NamedTuple):
    """A message that could not be decoded: its position in the input, why, and a short kind."""

    position: int
    reason: str
    kind: str


class _Bad(Exception):  # noqa: N818 - internal control flow, never escapes this module
    """One message is malformed."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _show(value: Any, limit: int = 60) -> str:
    """A short repr of a JSON value for error messages."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "number"


def _number(value: Any, where: str, field: str) -> float:
    """A sample value: a JSON number or a numeric string (NaN and infinities included)."""
    t = type(value)
    if t is float:
        return float(value)
    if t is int:
        try:
            return float(value)
        except OverflowError:
            pass
    elif t is str:
        try:
            return float(value)  # also "NaN", "+Inf", "-Inf"
        except ValueError:
            pass
    raise _Bad("bad_value", f"{where}field {field!r}: expected a number, got {_show(value)}")


def _numeric_strings(values: Sequence[str]) -> list[float]:
    """``[float(v) for v in values]``, about five times faster for the common case.

    Values that are JSON numbers (``"1.5"``, ``"2"``, ``"1e3"``) are parsed in one go by orjson
    from ``"[v1,v2,...]"``: that text is a flat array of exactly ``len(values)`` numbers only
    when every value is a JSON number (any comma, bracket or quote inside a value changes the
    count or the element types). Anything else (``"NaN"``, ``"+Inf"``) goes through ``float``,
    which raises ``ValueError`` for a value that is not a number at all.
    """
    try:
        numbers = orjson.loads("[" + ",".join(values) + "]")
    except orjson.JSONDecodeError:
        numbers = None
    if (
        type(numbers) is list
        and len(numbers) == len(values)
        and _JSON_NUMBER_TYPES.issuperset(set(map(type, numbers)))
    ):
        return numbers  # ints among them are converted when the batch becomes a float array
    return list(map(float, values))


def _scale_seconds(x: float) -> float:
    """Epoch seconds from a number in seconds, milliseconds, microseconds or nanoseconds."""
    a = abs(x)
    if a < 1e11:
        return x
    if a < 1e14:
        return x / 1e3
    if a < 1e17:
        return x / 1e6
    return x / 1e9


def _timestamp(value: Any, where: str, field: str = "timestamp") -> float:
    """Epoch seconds from an RFC 3339 string or a number (unit told by magnitude)."""
    t = type(value)
    result: float | None = None
    if t is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            try:
                result = _scale_seconds(float(value))
            except ValueError:
                result = None
        else:
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            result = dt.timestamp()
    elif t is int or t is float:
        try:
            result = _scale_seconds(float(value))
        except OverflowError:
            result = None
    if result is None or not math.isfinite(result):
        raise _Bad(
            "bad_timestamp",
            f"{where}field {field!r}: expected an RFC 3339 time or epoch number, got {_show(value)}",
        )
    return result


def _series_length(name: str, names: Iterable[str], values: Iterable[str]) -> int:
    """What ``max_series_length`` counts: the characters of a series' name, label names and values."""
    return len(name) + sum(map(len, names)) + sum(map(len, values))


def _check_series(
    name: Any, names: Sequence[Any], values: Sequence[Any], where: str, limits: DecodeLimits
) -> None:
    """Validate a series name and its labels, given as names and values (only done the first time
    a series is seen): their types, then the label count and lengths against ``limits``."""
    if type(name) is not str or not name:
        raise _Bad("bad_value", f"{where}field 'name': expected a non-empty string, got {_show(name)}")
    longest = limits.max_label_length
    if len(name) > longest:
        raise _Bad(
            "over_limit", f"{where}field 'name': {len(name)} characters, over max_label_length {longest}"
        )
    if len(names) > limits.max_labels:
        raise _Bad(
            "over_limit", f"{where}field 'labels': {len(names)} labels, over max_labels {limits.max_labels}"
        )
    for k, v in zip(names, values, strict=True):
        if type(k) is not str or type(v) is not str:
            raise _Bad(
                "bad_labels",
                f"{where}field 'labels': label {_show(k)} must map a string to a string, got {_show(v)}",
            )
        if len(k) > longest or len(v) > longest:
            raise _Bad(
                "over_limit",
                f"{where}field 'labels': label {_show(k)} is {max(len(k), len(v))} characters long, "
                f"over max_label_length {longest}",
            )
    total = _series_length(name, names, values)
    if total > limits.max_series_length:
        raise _Bad(
            "over_limit",
            f"{where}field 'labels': the name and labels are {total} characters in all, "
            f"over max_series_length {limits.max_series_length}",
        )


class _Budget:
    """What is left of one OTLP message's label text (``max_decoded_bytes``), and its limits."""

    __slots__ = ("left", "limits")

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.left = limits.max_decoded_bytes

    def spend(self, text: str, where: str) -> str:
        """``text``, once its length is checked against the label length and the message's budget."""
        n = len(text)
        if n > self.limits.max_label_length:
            raise _Bad(
                "over_limit", f"{where}: {n} characters, over max_label_length {self.limits.max_label_length}"
            )
        self.charge(n, where)
        return text

    def charge(self, n: int, where: str) -> None:
        """Take ``n`` characters of label text off the message's budget."""
        self.left -= n
        if self.left < 0:
            raise _Bad(
                "over_limit",
                f"{where}: the message's labels exceed max_decoded_bytes {self.limits.max_decoded_bytes}",
            )

    def joined(self, parts: Sequence[str], where: str) -> None:
        """Refuse parts whose JSON text would be longer than a label may be, before it is built."""
        if sum(map(len, parts)) + len(parts) > self.limits.max_label_length:
            raise _Bad(
                "over_limit",
                f"{where}: its parts are longer than max_label_length {self.limits.max_label_length}",
            )


def _any_value(value: Any, where: str, budget: _Budget, depth: int) -> str:
    """An OTLP AnyValue as a label string; ``depth`` is its nesting level (1 for an attribute's value)."""
    if depth > budget.limits.max_depth:
        raise _Bad(
            "over_limit", f"{where}: values nested {depth} deep, over max_depth {budget.limits.max_depth}"
        )
    if type(value) is not dict:
        raise _Bad("bad_labels", f"{where}: expected an AnyValue object, got {_show(value)}")
    if not value:
        return ""
    (kind, inner), *rest = value.items()
    if rest:
        raise _Bad("bad_labels", f"{where}: an AnyValue holds one field, got {sorted(value)}")
    if kind == "stringValue" and type(inner) is str:
        return str(inner)
    if kind == "intValue":
        if type(inner) is int:
            return str(inner)
        if type(inner) is str:
            try:
                return str(int(inner))
            except ValueError:
                pass
    elif kind == "doubleValue":
        if type(inner) in (int, float, str):
            return repr(_number(inner, f"{where}: ", "doubleValue"))
    elif kind == "boolValue" and type(inner) is bool:
        return "true" if inner else "false"
    elif kind == "bytesValue" and type(inner) is str:
        return str(inner)
    elif kind == "arrayValue" and type(inner) is dict:
        items = inner.get("values", [])
        if type(items) is list:
            flat = [
                _any_value(v, f"{where}.arrayValue.values[{i}]", budget, depth + 1)
                for i, v in enumerate(items)
            ]
            budget.joined(flat, f"{where}.arrayValue")
            return budget.spend(orjson.dumps(flat).decode(), f"{where}.arrayValue")
    elif kind == "kvlistValue" and type(inner) is dict:
        items = inner.get("values", [])
        if type(items) is list:
            pairs = _attributes(items, f"{where}.kvlistValue", budget, depth)
            budget.joined([text for pair in pairs for text in pair], f"{where}.kvlistValue")
            return budget.spend(orjson.dumps(dict(pairs)).decode(), f"{where}.kvlistValue")
    raise _Bad("bad_labels", f"{where}: unsupported or invalid AnyValue {{{kind!r}: {_show(inner)}}}")


def _attributes(attrs: Any, where: str, budget: _Budget, depth: int = 0) -> list[tuple[str, str]]:
    """OTLP ``attributes`` (a list of ``{"key", "value"}``) as label pairs, within ``budget``;
    ``depth`` is the nesting level of the list (0 for a resource's or a data point's)."""
    if type(attrs) is not list:
        raise _Bad("bad_shape", f"{where}.attributes: expected an array, got {_show(attrs)}")
    if len(attrs) > budget.limits.max_labels:
        raise _Bad(
            "over_limit",
            f"{where}.attributes: {len(attrs)} attributes, over max_labels {budget.limits.max_labels}",
        )
    out: list[tuple[str, str]] = []
    for i, a in enumerate(attrs):
        if type(a) is not dict or type(a.get("key")) is not str:
            raise _Bad("bad_labels", f"{where}.attributes[{i}]: expected {{'key': string, 'value': ...}}")
        v = a.get("value")
        sv = v.get("stringValue") if type(v) is dict and len(v) == 1 else None
        out.append(
            (
                a["key"],
                sv if type(sv) is str else _any_value(v, f"{where}.attributes[{i}].value", budget, depth + 1),
            )
        )
    return out


def _list(obj: dict[str, Any], field: str, where: str, required: bool = True) -> list[Any]:
    value = obj.get(field)
    if value is None and not required:
        return []
    if type(value) is not list:
        if value is None:
            raise _Bad("missing_field", f"{where}: missing field {field!r}")
        raise _Bad("bad_shape", f"{where}.{field}: expected an array, got {_json_type(value)}")
    return value


def checked_settings(registry: SeriesRegistry, format: str, cache_size: int | None) -> int:
    """Check a decoder's ``format``; return its series-cache size (``cache_size`` or the default).

    The default is twice the registry's limit, at least 1024 and at most one million entries.
    """
    if format not in FORMATS:
        msg = f"unknown sample format {format!r}; expected one of {FORMATS}"
        raise ValueError(msg)
    size = cache_size if cache_size is not None else min(1_000_000, max(1024, 2 * registry.limit))
    if size < 1:
        msg = f"cache_size must be at least 1, got {size}"
        raise ValueError(msg)
    return size


class SampleDecoder:
    """Decodes message values into samples, with series ids cached across calls.

    One decoder per source: it is not thread-safe. ``cache_size`` bounds the series cache
    (default: twice the registry's limit, at least 1024 and at most one million entries);
    when it is full it starts over, so memory stays bounded whatever the input. ``limits``
    bound what each message may cost (see :class:`DecodeLimits`).
    """

    def __init__(
        self,
        registry: SeriesRegistry,
        format: Format = "auto",
        cache_size: int | None = None,
        limits: DecodeLimits | None = None,
        owner: str | None = None,
    ) -> None:
        self.registry = registry
        #: The source new series are registered for (its share of the table is bounded).
        self.owner = owner
        self.format: Format = format
        self.cache_size = checked_settings(registry, format, cache_size)
        self.limits = limits if limits is not None else DecodeLimits()
        self.skipped_points = 0
        # the accepted timestamps, [_earliest, _latest], set by decode() from the time it is given
        self._earliest = -math.inf
        self._latest = math.inf
        self._now: float | None = None
        self._window_minute: float | None = None
        # keyed by RawKey, or by the JSON text of a sample's name and labels (_raw_samples)
        self._ids: dict[RawKey | bytes, int] = {}
        self._refused: dict[RawKey | bytes, SeriesKey] = {}
        self._ts: dict[str, float] = {}
        self._orders: dict[Names, _LabelOrder] = {}
        self._ns: dict[str, float] = {}

    # ------------------------------------------------------------------ entry point
    def decode(
        self,
        values: Sequence[bytes | None],
        now: float | None = None,
        progress: memoryview | None = None,
    ) -> tuple[SampleBatch, list[Malformed]]:
        """Decode every message; return the samples of the good ones and the bad ones' reasons.

        Samples keep message order. Samples of series refused by the registry's cardinality
        limit carry :data:`~detectors.series.DROPPED` (the registry counts them). ``now`` (epoch
        seconds, from the caller's clock) centres the window of accepted timestamps; without it
        any finite time is accepted. ``progress`` (a one-element ``q`` memoryview), when given,
        holds the position of the message being decoded, and ``len(values)`` once all are: what
        a process watching a decoder that crashed reads to tell which message did it.
        """
        self._set_window(now)
        sids: list[int] = []
        times: list[float] = []
        vals: list[float] = []
        errors: list[Malformed] = []
        loads = orjson.loads
        fmt = self.format
        max_bytes = self.limits.max_message_bytes
        for i, raw in enumerate(values):
            if progress is not None:
                progress[0] = i
            if raw is None:
                errors.append(Malformed(i, "empty message (null value)", "empty"))
                continue
            if len(raw) > max_bytes:
                errors.append(
                    Malformed(
                        i, f"message of {len(raw)} bytes is over max_message_bytes {max_bytes}", "over_limit"
                    )
                )
                continue
            start = len(sids)
            try:
                if self._raw_message(raw, sids, times, vals):
                    continue
                try:
                    doc = loads(raw)
                except orjson.JSONDecodeError as exc:
                    errors.append(Malformed(i, f"not JSON: {exc}", "not_json"))
                    continue
                kind = fmt
                if kind == "auto":
                    if type(doc) is list:
                        kind = "batch"
                    elif type(doc) is dict and "resourceMetrics" in doc:
                        kind = "otlp"
                    else:
                        kind = "adapter"
                if kind == "batch":
                    if type(doc) is not list:
                        raise _Bad("bad_shape", f"expected a JSON array of samples, got {_json_type(doc)}")
                    if doc and type(doc[0]) is dict and "values" in doc[0]:
                        self._series_columns(doc, sids, times, vals)
                    elif not self._fast_samples(doc, sids, times, vals):
                        self._samples(doc, "sample ", sids, times, vals)
                elif kind == "adapter":
                    if type(doc) is not dict:
                        raise _Bad("bad_shape", f"expected a JSON object (one sample), got {_json_type(doc)}")
                    self._samples([doc], "", sids, times, vals)
                else:
                    self._otlp(doc, sids, times, vals)
            except _Bad as exc:
                del sids[start:], times[start:], vals[start:]
                errors.append(Malformed(i, exc.reason, exc.kind))
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a safety net
                del sids[start:], times[start:], vals[start:]
                errors.append(Malformed(i, f"cannot decode: {type(exc).__name__}: {exc}", "bad_value"))
            except Exception as exc:  # a decoder bug (or MemoryError): this message, not the source, fails
                del sids[start:], times[start:], vals[start:]
                errors.append(
                    Malformed(
                        i,
                        f"the decoder failed: {type(exc).__name__}: {_show(str(exc), 200)}",
                        "decoder_error",
                    )
                )
        if progress is not None:
            progress[0] = len(values)
        batch = SampleBatch(
            np.array(sids, dtype=np.int64),
            np.array(times, dtype=np.float64),
            np.array(vals, dtype=np.float64),
        )
        return batch, errors

    def forget_series(self) -> None:
        """Drop the cached series ids: the registry evicted series, so an id may name another now."""
        self._ids.clear()
        self._refused.clear()

    def _set_window(self, now: float | None) -> None:
        """Accept timestamps from ``now - max_past`` to ``now + max_future`` (any, without ``now``).

        Timestamps converted once are cached; the caches start over when the window moves by a
        minute, so a cached timestamp is judged against a window at most a minute old.
        """
        if now is None or not math.isfinite(now):
            self._now = None
            self._earliest, self._latest = -math.inf, math.inf
            minute = None
        else:
            limits = self.limits
            self._now = now
            self._earliest = -math.inf if limits.max_past is None else now - limits.max_past
            self._latest = math.inf if limits.max_future is None else now + limits.max_future
            minute = now // 60
        if minute != self._window_minute:
            self._window_minute = minute
            self._ts.clear()
            self._ns.clear()

    def _outside(self, seconds: float, where: str, field: str) -> _Bad:
        """The error for a timestamp outside the accepted window."""
        now = self._now if self._now is not None else 0.0
        if seconds > self._latest:
            how = f"{seconds - now:.6g} s after the agent's clock, over max_future {self.limits.max_future} s"
        else:
            how = f"{now - seconds:.6g} s before the agent's clock, over max_past {self.limits.max_past} s"
        return _Bad("bad_timestamp", f"{where}field {field!r}: {seconds:.6g} is {how}")

    # ------------------------------------------------------------------ series ids
    def _resolve(self, cache_key: RawKey | bytes, name: str, names: Names, values: Names) -> int:
        """The id of a series the fast cache does not know under ``cache_key``: register it (its
        labels given as names and values, in any order), or count a refused sample."""
        ids = self._ids
        sid = ids.get(cache_key)  # a series new to a batch may be in it twice
        if sid is not None:
            return sid
        refused = self._refused.get(cache_key)
        if refused is not None:
            return self.registry.id_for(refused, self.owner)  # counts the dropped sample
        order = self._orders.get(names)
        if order is None:  # worked out once per set of label names
            if len(self._orders) >= _TS_CACHE_SIZE:
                self._orders.clear()
            order = self._orders[names] = _label_order(names)
        sid, series_key = self._new_series(name, order.names, order.pick(values))
        if series_key is not None:  # refused
            if len(self._refused) >= self.cache_size:
                self._refused.clear()
            self._refused[cache_key] = series_key
        else:
            if len(ids) >= self.cache_size:
                ids.clear()
            ids[cache_key] = sid
        return sid

    def _new_series(self, name: str, names: Names, values: Names) -> tuple[int, SeriesKey | None]:
        """Register a series the cache does not know; ``names`` and ``values`` are its labels as
        :class:`SeriesKey` keeps them (sorted by name, without ``__name__``).

        Returns its id, or :data:`DROPPED` and the key to count its later samples against when
        the registry refused it. The decode worker (kafka_worker.py) keeps local ids instead.
        """
        key = SeriesKey(name, tuple(zip(names, values, strict=True)))
        sid = self.registry.id_for(key, self.owner)
        return sid, (key if sid == DROPPED else None)

    def _commit(
        self,
        sids: list[int],
        pending: list[tuple[int, RawKey]],
        out: list[int],
    ) -> None:
        """Resolve the series first seen in a valid message and append its ids to ``out``."""
        for pos, key in pending:
            sids[pos] = self._resolve(key, *key)
        out.extend(sids)

    def _time(self, value: Any, where: str, field: str = "timestamp") -> float:
        """Seconds from a sample's timestamp, inside the window; strings are cached (a batch often
        shares one)."""
        result = _timestamp(value, where, field)
        if not self._earliest <= result <= self._latest:
            raise self._outside(result, where, field)
        if type(value) is str:
            ts_cache = self._ts
            if len(ts_cache) >= _TS_CACHE_SIZE:
                ts_cache.clear()
            ts_cache[value] = result
        return result

    # ------------------------------------------------------------------ adapter and batch
    def _raw_message(
        self, raw: bytes, out_sids: list[int], out_ts: list[float], out_vals: list[float]
    ) -> bool:
        """Adapter samples (a batch, or one) through :meth:`_raw_samples`; False when the message is
        anything else or anything in it needs a closer look: the orjson path then decodes it (or
        names what is wrong) from scratch."""
        if type(raw) is not bytes:  # what Kafka gives; anything else orjson reads takes its path
            return False
        fmt = self.format
        head = raw[:1]
        try:
            if head == b"[" and fmt in ("auto", "batch"):
                items = _RAW_BATCH.decode(raw)
            elif head == b"{" and fmt in ("auto", "adapter"):
                items = [_RAW_ONE.decode(raw)]
            else:
                return False
            if not raw.isascii():
                str(raw, "utf-8")  # msgspec does not check the UTF-8 of the text it keeps raw; orjson does
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            return False
        return self._raw_samples(items, out_sids, out_ts, out_vals)

    def _raw_samples(
        self, items: list[_RawSample], out_sids: list[int], out_ts: list[float], out_vals: list[float]
    ) -> bool:
        """Adapter samples with fields as JSON text: series are cached by the text of their name and
        labels, which are parsed only the first time that text is seen; values and timestamps are
        parsed in one orjson call each. False (nothing added) when anything is not as expected.

        What is accepted decodes exactly as on the orjson path, since each field is orjson's
        reading of the same text. (A field given twice in one sample counts once, the last one,
        as orjson does; the earlier one is checked by msgspec only.)
        """
        if not items:
            return True
        try:
            names = list(map(_RAW_NAME, items))
            labels = list(map(_RAW_LABELS, items))
            keys = list(map(_JOIN, zip(names, labels, strict=True)))
            sids = list(map(self._ids.get, keys, repeat(_PENDING)))
            values = _json_array(list(map(_RAW_VALUE, items)))
            stamps = _json_array(list(map(_RAW_TIMESTAMP, items)))
        except orjson.JSONDecodeError:
            return False
        if len(values) != len(items) or len(stamps) != len(items):  # pragma: no cover - one value each
            return False
        vals = _floats(values)
        times = self._times(stamps)
        if vals is None or times is None:
            return False
        if _PENDING in sids:
            pending = [k for k, sid in enumerate(sids) if sid == _PENDING]
            try:  # every new series is checked before any is registered
                new_names = _json_array([names[k] for k in pending])
                new_labels = _json_array([labels[k] for k in pending])
            except orjson.JSONDecodeError:
                return False
            if set(map(type, new_names)) != _STR_ONLY or "" in new_names:
                return False
            if set(map(type, new_labels)) != _DICT_ONLY:
                return False
            if set(map(type, chain.from_iterable(map(_LABEL_VALUES, new_labels)))) - _STR_ONLY:
                return False  # (JSON object keys are strings)
            if not self._within_limits(new_names, new_labels):
                return False
            resolve = self._resolve
            for k, name, lab in zip(pending, new_names, new_labels, strict=True):
                sids[k] = resolve(keys[k], name, tuple(lab), tuple(lab.values()))
        out_sids.extend(sids)
        out_ts.extend(times)
        out_vals.extend(vals)
        return True

    def _times(self, stamps: list[Any]) -> list[float] | None:
        """Timestamps as float seconds, each distinct one converted once (a batch shares a few; an
        int and a float of equal value share an entry, and their time); None when any is invalid."""
        if not _NUMBER_TYPES.issuperset(set(map(type, stamps))):
            return None
        ts_get = self._ts.get
        try:
            distinct: dict[Any, float] = dict.fromkeys(stamps, 0.0)
            for stamp in distinct:
                t = ts_get(stamp) if type(stamp) is str else None
                distinct[stamp] = t if t is not None else self._time(stamp, "")
        except _Bad:
            return None
        return list(map(distinct.__getitem__, stamps))

    def _within_limits(self, names: list[str], labels: list[dict[str, str]]) -> bool:
        """Whether new series (names, and labels as dicts of strings) are within the label limits."""
        limits = self.limits
        if max(map(len, labels)) > limits.max_labels:
            return False
        longest = limits.max_label_length
        within = (
            max(
                map(
                    len,
                    chain(
                        names, chain.from_iterable(labels), chain.from_iterable(map(_LABEL_VALUES, labels))
                    ),
                )
            )
            <= longest
        )
        return within and all(
            _series_length(n, d, d.values()) <= limits.max_series_length
            for n, d in zip(names, labels, strict=True)
        )

    def _keys_within_limits(self, keys: list[RawKey]) -> bool:
        """Whether new series (as cache keys of strings) are within the label limits."""
        limits = self.limits
        if max(map(len, map(_SECOND, keys))) > limits.max_labels:
            return False
        texts = chain(
            map(_FIRST, keys), chain.from_iterable(map(_SECOND, keys)), chain.from_iterable(map(_THIRD, keys))
        )
        if max(map(len, texts)) > limits.max_label_length:
            return False
        return all(_series_length(*k) <= limits.max_series_length for k in keys)

    def _fast_samples(
        self, items: list[Any], out_sids: list[int], out_ts: list[float], out_vals: list[float]
    ) -> bool:
        """A batch column by column, in C-level loops; False sends it to the checking slow path.

        Taken when every sample has all four fields with well-typed values, which is what
        producers send; anything else goes to :meth:`_samples`, which checks sample by sample
        and names the first problem. New series and new timestamps are resolved here, after the
        values passed, so a malformed message never registers a series.
        """
        if not items:
            return True
        try:
            labels = list(map(_LABELS, items))
            keys = list(
                zip(
                    map(_NAME, items), map(tuple, labels), map(tuple, map(_LABEL_VALUES, labels)), strict=True
                )
            )
            sids = list(map(self._ids.get, keys, repeat(_PENDING)))
            vals = _floats(list(map(_VALUE, items)))
            times = self._times(list(map(_TIMESTAMP, items)))
        except (KeyError, TypeError):
            return False
        if vals is None or times is None:
            return False
        try:
            if _PENDING in sids:
                pending = [k for k, sid in enumerate(sids) if sid == _PENDING]
                new = [keys[k] for k in pending]
                # names non-empty strings, label values strings (JSON object keys always are)
                names = set(map(_FIRST, new))
                if set(map(type, names)) != _STR_ONLY or "" in names:
                    return False
                if set(map(type, chain.from_iterable(map(_THIRD, new)))) - _STR_ONLY:
                    return False
                if not self._keys_within_limits(new):
                    return False
                resolve = self._resolve
                for k, key in zip(pending, new, strict=True):
                    sids[k] = resolve(key, *key)
        except _Bad:
            return False
        out_sids.extend(sids)
        out_ts.extend(times)
        out_vals.extend(vals)
        return True

    def _samples(
        self, items: list[Any], prefix: str, out_sids: list[int], out_ts: list[float], out_vals: list[float]
    ) -> None:
        """prometheus-kafka-adapter samples; all valid or :class:`_Bad` naming the first problem."""
        ids = self._ids
        ts_cache = self._ts
        sids: list[int] = []
        times: list[float] = []
        vals: list[float] = []
        pending: list[tuple[int, RawKey]] = []
        j = 0
        try:
            for j, s in enumerate(items):
                labels = s.get("labels", _NO_LABELS)
                name = s.get("name")
                if name is None:
                    name = labels.get("__name__")
                key = _raw_key(name, labels)
                sid = ids.get(key)
                if sid is None:
                    where = f"{prefix}{j}: " if prefix else ""
                    if type(labels) is not dict:
                        raise _Bad(
                            "bad_shape",
                            f"{where}field 'labels': expected an object, got {_json_type(labels)}",
                        )
                    if name is None:
                        raise _Bad("missing_field", f"{where}missing field 'name' (and no labels.__name__)")
                    _check_series(name, key[1], key[2], where, self.limits)
                    pending.append((len(sids), key))
                    sid = _PENDING
                v = s["value"]
                t = type(v)
                if t is str:
                    v = float(v)
                elif t is not float:
                    if t is not int:
                        raise TypeError(v)
                    v = float(v)
                ts = s["timestamp"]
                tsf = ts_cache.get(ts) if type(ts) is str else None
                if tsf is None:
                    tsf = self._time(ts, f"{prefix}{j}: " if prefix else "")
                sids.append(sid)
                times.append(tsf)
                vals.append(v)
        except _Bad:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            self._explain_sample(items[j], f"{prefix}{j}: " if prefix else "")
        self._commit(sids, pending, out_sids)
        out_ts.extend(times)
        out_vals.extend(vals)

    def _series_columns(
        self, items: list[Any], out_sids: list[int], out_ts: list[float], out_vals: list[float]
    ) -> None:
        """The columnar batch form: series with parallel ``timestamps`` and ``values`` arrays.

        All valid or :class:`_Bad` naming the first problem; series are registered only after
        the whole message passed. Numbers are converted and checked once per message with
        numpy; only a message that fails that is walked point by point to name the culprit.
        """
        ids_get = self._ids.get
        keys: list[RawKey] = []
        counts: list[int] = []
        ts_all: list[Any] = []
        val_all: list[Any] = []
        for j, s in enumerate(items):
            if type(s) is not dict:
                raise _Bad("bad_shape", f"series {j}: expected an object, got {_json_type(s)}")
            if not s.keys() <= _SERIES_FIELDS:
                raise _Bad("bad_shape", f"series {j}: unknown field(s) {sorted(set(s) - _SERIES_FIELDS)}")
            labels = s.get("labels", _NO_LABELS)
            if type(labels) is not dict:
                raise _Bad(
                    "bad_shape", f"series {j}: field 'labels': expected an object, got {_json_type(labels)}"
                )
            name: Any = s.get("name") or labels.get("__name__")
            key = _raw_key(name, labels)
            if ids_get(key) is None:
                if name is None:
                    raise _Bad("missing_field", f"series {j}: missing field 'name' (and no labels.__name__)")
                _check_series(name, key[1], key[2], f"series {j}: ", self.limits)
            ts_raw: Any = s.get("timestamps")
            val_raw: Any = s.get("values")
            if type(ts_raw) is not list or type(val_raw) is not list:
                _list(s, "timestamps", f"series {j}")
                _list(s, "values", f"series {j}")
            if len(ts_raw) != len(val_raw):
                raise _Bad(
                    "bad_shape",
                    f"series {j}: 'timestamps' has {len(ts_raw)} entries but 'values' has {len(val_raw)}",
                )
            keys.append(key)
            counts.append(len(ts_raw))
            ts_all += ts_raw
            val_all += val_raw
        values = self._column_values(val_all, items)
        stamps = self._column_times(ts_all, items)
        for key, n in zip(keys, counts, strict=True):
            sid = ids_get(key)
            out_sids.extend(repeat(sid if sid is not None else self._resolve(key, *key), n))
        out_ts.extend(stamps)
        out_vals.extend(values)

    def _column_values(self, raw: list[Any], items: list[Any]) -> list[float]:
        types = set(map(type, raw))
        if types <= _JSON_NUMBER_TYPES:
            try:
                return np.asarray(raw, dtype=np.float64).tolist()  # type: ignore[no-any-return]
            except OverflowError:
                pass
        elif types == _STR_ONLY:
            try:
                return _numeric_strings(raw)
            except ValueError:
                pass
        for j, s in enumerate(items):  # name the first bad value
            for k, v in enumerate(s["values"]):
                _number(v, f"series {j}: values[{k}]", "value")
        return list(map(float, raw))  # unreachable in practice: _number raised above

    def _column_times(self, raw: list[Any], items: list[Any]) -> list[float]:
        if set(map(type, raw)) <= _JSON_NUMBER_TYPES:
            try:
                t = np.asarray(raw, dtype=np.float64)
            except OverflowError:
                t = np.full(1, np.nan)
            a = np.abs(t)
            t = np.where(a < 1e11, t, np.where(a < 1e14, t / 1e3, np.where(a < 1e17, t / 1e6, t / 1e9)))
            # (NaN fails both comparisons; so does any time outside the window)
            if t.size == 0:
                return []
            lo, hi = float(t.min()), float(t.max())
            if math.isfinite(lo) and math.isfinite(hi) and lo >= self._earliest and hi <= self._latest:
                return t.tolist()  # type: ignore[no-any-return]
        for j, s in enumerate(items):  # strings, or name the first bad timestamp
            for k, v in enumerate(s["timestamps"]):
                self._time(v, f"series {j}: timestamps[{k}]: ")
        return [self._time(v, "") for v in raw]

    def _explain_sample(self, s: Any, where: str) -> None:
        """Raise :class:`_Bad` with a precise reason for a sample the fast path rejected."""
        if type(s) is not dict:
            raise _Bad("bad_shape", f"{where}expected a JSON object, got {_json_type(s)}")
        labels = s.get("labels", _NO_LABELS)
        if type(labels) is not dict:
            raise _Bad("bad_shape", f"{where}field 'labels': expected an object, got {_json_type(labels)}")
        for field in ("value", "timestamp"):
            if field not in s:
                raise _Bad("missing_field", f"{where}missing field {field!r}")
        _number(s["value"], where, "value")
        self._time(s["timestamp"], where)
        # The fast path failed for a reason the checks above do not name; say what it was.
        name = s.get("name", labels.get("__name__"))
        _check_series(name, tuple(labels), tuple(labels.values()), where, self.limits)
        raise _Bad("bad_value", f"{where}invalid sample")  # pragma: no cover - defensive

    # ------------------------------------------------------------------ OTLP
    def _otlp(self, doc: Any, out_sids: list[int], out_ts: list[float], out_vals: list[float]) -> None:
        if type(doc) is not dict:
            raise _Bad(
                "bad_shape", f"expected an OTLP/JSON object with 'resourceMetrics', got {_json_type(doc)}"
            )
        ids = self._ids
        sids: list[int] = []
        times: list[float] = []
        vals: list[float] = []
        pending: list[tuple[int, RawKey]] = []
        skipped = 0
        budget = _Budget(self.limits)
        for r, rm in enumerate(_list(doc, "resourceMetrics", "message")):
            rwhere = f"resourceMetrics[{r}]"
            if type(rm) is not dict:
                raise _Bad("bad_shape", f"{rwhere}: expected an object, got {_json_type(rm)}")
            resource = rm.get("resource") or {}
            if type(resource) is not dict:
                raise _Bad("bad_shape", f"{rwhere}.resource: expected an object, got {_json_type(resource)}")
            base = dict(_attributes(resource.get("attributes", []), f"{rwhere}.resource", budget))
            for s, sm in enumerate(_list(rm, "scopeMetrics", rwhere, required=False)):
                swhere = f"{rwhere}.scopeMetrics[{s}]"
                if type(sm) is not dict:
                    raise _Bad("bad_shape", f"{swhere}: expected an object, got {_json_type(sm)}")
                for m, metric in enumerate(_list(sm, "metrics", swhere, required=False)):
                    mwhere = f"{swhere}.metrics[{m}]"
                    if type(metric) is not dict:
                        raise _Bad("bad_shape", f"{mwhere}: expected an object, got {_json_type(metric)}")
                    name = metric.get("name")
                    if type(name) is not str or not name:
                        raise _Bad(
                            "missing_field" if name is None else "bad_value",
                            f"{mwhere}: field 'name': expected a non-empty string, got {_show(name)}",
                        )
                    data = metric.get("gauge")
                    dkind = "gauge"
                    if data is None:
                        data = metric.get("sum")
                        dkind = "sum"
                    if data is None:
                        for other in _SKIPPED_METRIC_TYPES:
                            body = metric.get(other)
                            if type(body) is dict and type(body.get("dataPoints")) is list:
                                skipped += len(body["dataPoints"])
                                break
                        else:
                            raise _Bad(
                                "missing_field",
                                f"{mwhere}: expected one of 'gauge', 'sum', 'histogram', "
                                "'exponentialHistogram', 'summary'",
                            )
                        continue
                    if type(data) is not dict:
                        raise _Bad(
                            "bad_shape", f"{mwhere}.{dkind}: expected an object, got {_json_type(data)}"
                        )
                    dwhere = f"{mwhere}.{dkind}"
                    for p, point in enumerate(_list(data, "dataPoints", dwhere)):
                        pwhere = f"{dwhere}.dataPoints[{p}]"
                        if type(point) is not dict:
                            raise _Bad("bad_shape", f"{pwhere}: expected an object, got {_json_type(point)}")
                        attrs = point.get("attributes")
                        if attrs:
                            labels = dict(base)
                            labels.update(_attributes(attrs, pwhere, budget))
                        else:
                            labels = base
                        key = _raw_key(name, labels)
                        sid = ids.get(key)
                        if sid is None:
                            _check_series(name, key[1], key[2], f"{pwhere}: ", self.limits)
                            pending.append((len(sids), key))
                            sid = _PENDING
                        ts = point.get("timeUnixNano")
                        if ts is None:
                            raise _Bad("missing_field", f"{pwhere}: missing field 'timeUnixNano'")
                        tsf = self._otlp_time(ts, pwhere)
                        if "asDouble" in point:
                            value = _number(point["asDouble"], f"{pwhere}: ", "asDouble")
                        elif "asInt" in point:
                            value = self._otlp_int(point["asInt"], pwhere)
                        elif type(point.get("flags")) is int and point["flags"] & _NO_VALUE_FLAG:
                            value = math.nan
                        else:
                            raise _Bad("missing_field", f"{pwhere}: missing field 'asDouble' or 'asInt'")
                        sids.append(sid)
                        times.append(tsf)
                        vals.append(value)
        self.skipped_points += skipped
        self._commit(sids, pending, out_sids)
        out_ts.extend(times)
        out_vals.extend(vals)

    def _otlp_time(self, value: Any, where: str) -> float:
        """Seconds from ``timeUnixNano`` (an integer, as a JSON string or number)."""
        t = type(value)
        if t is str:
            cached = self._ns.get(value)
            if cached is not None:
                return cached
            try:
                nanos = int(value)
            except ValueError:
                nanos = -1
        else:
            nanos = int(value) if t is int else -1
        if not 0 <= nanos < 2**64:
            raise _Bad(
                "bad_timestamp",
                f"{where}: field 'timeUnixNano': expected nanoseconds since the epoch, got {_show(value)}",
            )
        result = nanos / 1_000_000_000
        if not self._earliest <= result <= self._latest:
            raise self._outside(result, f"{where}: ", "timeUnixNano")
        if t is str:
            if len(self._ns) >= _TS_CACHE_SIZE:
                self._ns.clear()
            self._ns[value] = result
        return result

    @staticmethod
    def _otlp_int(value: Any, where: str) -> float:
        if type(value) is int:
            return float(value)
        if type(value) is str:
            try:
                return float(int(value))
            except (ValueError, OverflowError):
                pass
        raise _Bad("bad_value", f"{where}: field 'asInt': expected an int64, got {_show(value)}")


def decode_messages(
    values: Sequence[bytes | None], registry: SeriesRegistry, format: Format = "auto"
) -> tuple[SampleBatch, list[Malformed]]:
    """Decode ``values`` once with a fresh :class:`SampleDecoder` (sources keep one instead)."""
    return SampleDecoder(registry, format).decode(values)
