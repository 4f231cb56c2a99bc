"""Readable diffs for plans: the fields an action changes, flattened to ``path: value`` lines.

    --- Deployment shop/web (now)
    +++ Deployment shop/web (planned)
    -spec.replicas: 2
    +spec.replicas: 4

Nested objects become dotted paths and list items ``[i]``, so a pod-template change shows as
``spec.template.spec.containers[0].image: web:3`` against ``web:2``; only changed lines and their
neighbours are shown.
"""

from __future__ import annotations

import difflib
import json
from typing import Any


def flatten(value: Any, prefix: str = "") -> list[str]:
    """``path: value`` lines for a JSON value, in a stable order."""
    if isinstance(value, dict):
        if not value:
            return [f"{prefix}: {{}}"] if prefix else []
        lines: list[str] = []
        for key in sorted(value):
            lines += flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return lines
    if isinstance(value, list):
        if not value:
            return [f"{prefix}: []"]
        lines = []
        for i, item in enumerate(value):
            lines += flatten(item, f"{prefix}[{i}]")
        return lines
    shown = value if isinstance(value, str) else json.dumps(value)
    return [f"{prefix}: {shown}"]


def render(title: str, before: Any, after: Any, *, context: int = 2) -> str:
    """A unified diff of ``before`` and ``after`` (flattened); empty when they are equal."""
    lines = difflib.unified_diff(
        flatten(before),
        flatten(after),
        fromfile=f"{title} (now)",
        tofile=f"{title} (planned)",
        n=context,
        lineterm="",
    )
    return "\n".join(lines)
