"""JSON from outside the process, read one way everywhere.

Python's :func:`json.loads` recurses once per level of nesting, so a document nested a few
thousand levels deep (a few kilobytes of ``[``) raises :class:`RecursionError`, which is no
:class:`ValueError` and passes every handler written for bad JSON. :func:`loads` makes it a
:class:`json.JSONDecodeError` like any other bad JSON (:class:`NestedTooDeep`), so a caller
handles one kind of error. Everything else is :func:`json.loads`' own (``NaN`` and
``Infinity`` are read, as the agent's own records may hold them).

It lives here, the lowest package the agent and the remediations share, so both read with it:
annotations and API answers (remediations), audit and decision files, approval records,
playbook status files, recorded signals, command-line JSON and HTTP answers (agent).
"""

from __future__ import annotations

import json
from typing import Any


class NestedTooDeep(json.JSONDecodeError):
    """JSON nested deeper than the decoder goes; it has no position worth naming."""

    def __init__(self) -> None:
        super().__init__("nested too deep", "", 0)

    def __str__(self) -> str:
        return self.msg

    def __reduce__(self) -> tuple[type[NestedTooDeep], tuple[()]]:
        return NestedTooDeep, ()


def loads(text: str | bytes | bytearray) -> Any:
    """:func:`json.loads`, with nesting past the decoder's depth a :class:`NestedTooDeep`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise NestedTooDeep from None
