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
from detectors.patterns import MAX_PATTERN, compile_pattern

#: The longest duration a playbook may name: longer ones are typos (``30d`` for ``30m``).
MAX_DURATION = 30 * 86400.0
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


def _regex(value: str) -> str:
    compile_pattern(value)  # RE2: matched in linear time, whatever the pattern (detectors.patterns)
    return value


#: A regular expression that must match a whole value (anchored at both ends when matched).
Regex = Annotated[
    str,
    AfterValidator(_regex),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": MAX_PATTERN,
            "description": "a regular expression (RE2 syntax: no backreferences, no lookaround); "
            "matches whole",
        }
    ),
]
