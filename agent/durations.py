"""Durations as people write them in YAML: ``30s``, ``5m``, ``1h30m``, ``2d``, or plain seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Any) -> float:
    """Seconds in ``value``; raise ValueError naming the accepted forms otherwise."""
    if isinstance(value, bool):
        msg = f"expected a duration like 30s, 5m, 1h30m or a number of seconds, got {value!r}"
        raise ValueError(msg)
    if isinstance(value, int | float):
        if value < 0:
            msg = f"a duration cannot be negative, got {value}"
            raise ValueError(msg)
        return float(value)
    text = str(value).strip()
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        msg = f"expected a duration like 30s, 5m, 1h30m or a number of seconds, got {value!r}"
        raise ValueError(msg)
    return total


#: A pydantic field type: accepts ``"5m"`` or ``300`` and holds seconds as a float.
Duration = Annotated[float, BeforeValidator(parse_duration)]
