"""Durations as people write them in YAML: ``30s``, ``5m``, ``1h30m``, ``2d``, or plain seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
#: A whole duration: one or more parts. Each part ends in a unit (no digit), so a string splits
#: into parts one way only and a match, or its failure, takes one pass over the text.
_DURATION = re.compile(f"(?:{_PART.pattern})+")
#: The longest duration text read: ``1w2d3h4m5s6ms`` is 14 characters; a longer one is a mistake
#: (or an attack on the parser), refused before it is parsed.
MAX_TEXT = 64
#: The longest duration: ten years. No interval, timeout or retention of the agent comes near;
#: past it a value is a typo, and ``now + duration`` stays far inside what datetime holds.
MAX_SECONDS = 3650 * 86400.0
#: How much of a refused value an error message repeats.
_SHOWN = 40

_FORMS = "a duration like 30s, 5m, 1h30m or a number of seconds"


def _shown(value: Any) -> str:
    """``value`` as an error message repeats it: its repr, cut to :data:`_SHOWN` characters."""
    if isinstance(value, str) and len(value) > _SHOWN:
        return f"{value[:_SHOWN]!r}... ({len(value)} characters)"
    if isinstance(value, int) and value.bit_length() > 64:  # repr refuses ints past 4300 digits
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}..."


def _checked(seconds: int | float, value: Any) -> float:
    """``seconds`` as a float, or ValueError when it is not finite, negative or above :data:`MAX_SECONDS`
    (an int is compared as an int: one too large for a float is refused, not an OverflowError)."""
    if isinstance(seconds, float) and not math.isfinite(seconds):
        msg = f"a duration must be a finite number of seconds, got {_shown(value)}"
        raise ValueError(msg)
    if seconds < 0:
        msg = f"a duration cannot be negative, got {_shown(value)}"
        raise ValueError(msg)
    if seconds > MAX_SECONDS:
        msg = f"a duration cannot exceed {MAX_SECONDS:g} seconds (3650d), got {_shown(value)}"
        raise ValueError(msg)
    return float(seconds)


def parse_duration(value: Any) -> float:
    """Seconds in ``value``; raise ValueError naming the accepted forms otherwise."""
    if isinstance(value, bool):
        msg = f"expected {_FORMS}, got {_shown(value)}"
        raise ValueError(msg)
    if isinstance(value, int | float):
        return _checked(value, value)
    text = str(value).strip()
    if len(text) > MAX_TEXT:
        msg = f"expected {_FORMS}, at most {MAX_TEXT} characters, got {_shown(value)}"
        raise ValueError(msg)
    if _DURATION.fullmatch(text) is None:
        msg = f"expected {_FORMS}, got {_shown(value)}"
        raise ValueError(msg)
    total = 0.0
    for m in _PART.finditer(text):  # the parts follow each other: fullmatch said so
        total += float(m.group(1)) * _UNITS[m.group(2)]
    return _checked(total, value)


#: A pydantic field type: accepts ``"5m"`` or ``300`` and holds seconds as a float.
Duration = Annotated[float, BeforeValidator(parse_duration)]
