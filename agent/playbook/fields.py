"""Field types shared by the playbook models: durations, label names, regular expressions.

Each carries its own JSON Schema, so an editor validating against ``playbooks/schema.json``
accepts exactly what the loader accepts (``5m`` as well as ``300`` for a duration).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from agent.durations import parse_duration

#: The longest duration a playbook may name: longer ones are typos (``30d`` for ``30m``).
MAX_DURATION = 30 * 86400.0
#: The longest regular expression accepted in a matcher.
MAX_PATTERN = 512

_DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+$"


def _duration(value: Any) -> float:
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        msg = f"expected a duration up to 30d, got {value!r}"
        raise ValueError(msg)
    return seconds


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        msg = f"expected a duration longer than 0, got {value!r}"
        raise ValueError(msg)
    return seconds


def _duration_schema(minimum: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _DURATION_PATTERN},
                {"type": "number", minimum: 0},
            ],
            "description": "a duration: 30s, 5m, 1h30m, 2d, or a number of seconds",
        }
    )


#: A duration: ``30s``, ``5m``, ``1h30m``, ``2d`` or a number of seconds; held as float seconds.
Duration = Annotated[float, BeforeValidator(_duration), _duration_schema("minimum")]

#: A duration longer than zero.
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration), _duration_schema("exclusiveMinimum")]


def at_most(limit: float) -> AfterValidator:
    """An after-validator refusing durations above ``limit`` seconds (the schema keeps the base form)."""

    def check(seconds: float) -> float:
        if seconds > limit:
            msg = f"expected at most {limit:g} seconds, got {seconds:g}"
            raise ValueError(msg)
        return seconds

    return AfterValidator(check)


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _label_name(value: str) -> str:
    if _LABEL_NAME.fullmatch(value) is None:
        msg = f"{value!r} is not a label name: letters, digits and '_', not starting with a digit"
        raise ValueError(msg)
    return value


#: A Prometheus label name.
LabelName = Annotated[str, AfterValidator(_label_name)]

# A group that is itself repeated and contains a repetition: (a+)+, (a|aa)*, (x*y?){2,} ...
# the shapes that make a backtracking regex engine take exponential time on a crafted input.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}?](?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,)")
_ALTERNATION_REPEATED = re.compile(r"\((?:[^()\\]|\\.)*\|(?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,)")


#: Unbounded repetitions (``*``, ``+``, ``{n,}``, ``{n,m}`` with m > 32) one pattern may hold: each
#: one more can multiply the backtracking work by the input's length (``.*.*.*x`` takes 0.3 s on
#: 1,000 characters, ten ``.*`` take 6 s on 30); two keep it quadratic at worst.
MAX_UNBOUNDED = 2
_ESCAPE_OR_CLASS = re.compile(r"\\.|\[\^?\]?(?:[^\]\\]|\\.)*\]")
_UNBOUNDED = re.compile(r"(?<![*+?}])(?:\*|\+)|\{(\d*),(\d*)\}")


def _unbounded(pattern: str) -> int:
    """How many unbounded repetitions ``pattern`` holds (outside escapes and character classes)."""
    bare = _ESCAPE_OR_CLASS.sub("x", pattern)
    count = 0
    for m in _UNBOUNDED.finditer(bare):
        low, high = m.group(1), m.group(2)
        if m.group(0).startswith("{") and high and int(high) - int(low or 0) <= 32:
            continue
        count += 1
    return count


def _regex(value: str) -> str:
    if len(value) > MAX_PATTERN:
        msg = f"a pattern is limited to {MAX_PATTERN} characters, got {len(value)}"
        raise ValueError(msg)
    try:
        re.compile(value)
    except re.error as exc:
        msg = f"not a valid regular expression: {exc}"
        raise ValueError(msg) from exc
    plain = re.sub(r"\(\?(?:[:>]|P<\w+>|[aiLmsux-]+:)", "(", value)  # non-capturing/named groups
    if _NESTED_QUANTIFIER.search(plain) or _ALTERNATION_REPEATED.search(plain):
        msg = (
            f"{value!r} repeats a group that itself repeats or alternates; such patterns can take "
            "exponential time, write it without the nesting"
        )
        raise ValueError(msg)
    if _unbounded(plain) > MAX_UNBOUNDED:
        msg = (
            f"{value!r} holds {_unbounded(plain)} unbounded repetitions (*, +, {{n,}}), more than "
            f"{MAX_UNBOUNDED}; each one more can multiply the matching time by the value's length"
        )
        raise ValueError(msg)
    return value


#: A regular expression that must match a whole value (anchored at both ends when matched).
Regex = Annotated[
    str,
    AfterValidator(_regex),
    WithJsonSchema(
        {"type": "string", "maxLength": MAX_PATTERN, "description": "a regular expression; matches whole"}
    ),
]
