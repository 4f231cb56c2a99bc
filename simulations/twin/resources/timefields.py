"""Timestamps in request bodies: parsed like Go's ``metav1.Time`` / ``MicroTime`` and stored normalised."""

from __future__ import annotations

from simulations.twin.errors import ApiError
from simulations.twin.objects import Obj, format_micro_time, format_time, parse_time


def normalise(obj: Obj, path: str, *, micro: bool) -> None:
    """Rewrite the time at dotted ``path`` in UTC (seconds for Time, microseconds for MicroTime).

    A time the API server could not decode (no zone, not RFC 3339) is a 400 BadRequest, as there.
    """
    parts = path.split(".")
    node: object = obj
    for part in parts[:-1]:
        if not isinstance(node, dict):
            return
        node = node.get(part)
    if not isinstance(node, dict):
        return
    value = node.get(parts[-1])
    if value is None:
        return
    if not isinstance(value, str):
        msg = f"json: cannot unmarshal {type(value).__name__} into Go struct field {path} of type string"
        raise ApiError.bad_request(msg)
    try:
        seconds = parse_time(value)
    except ValueError as error:
        raise ApiError.bad_request(f'{path}: parsing time "{value}": {error}') from None
    node[parts[-1]] = format_micro_time(seconds) if micro else format_time(seconds)
