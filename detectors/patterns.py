"""Regular expressions written in configuration, matched in time linear in what they are matched on.

A playbook's trigger (``metric``, ``match``), a threshold detector's label ``match`` and a detector
group's ``metrics`` are patterns an operator writes; what they are matched on (metric names, label
values) arrives with the samples and signals, so anyone who can name a Deployment or a metric picks
it. Python's ``re`` backtracks: ``((a)+)+`` against thirty ``a`` and a ``-`` takes minutes, and no
syntactic check catches every such pattern. These patterns are compiled with RE2 instead, whose
automaton matches in time linear in the input whatever the pattern; RE2 has no backreferences or
lookaround, and a pattern using them is refused with RE2's reason. A pattern also has a length limit
(:data:`MAX_PATTERN`) and RE2 bounds the memory its program may take, so compiling one is bounded too.

:func:`compile_pattern` is the one way in: it returns a :class:`Pattern` or raises a ``ValueError``
that says what is wrong with the pattern.
"""

from __future__ import annotations

from typing import Any

import re2

#: The longest pattern accepted (characters).
MAX_PATTERN = 512
#: Memory RE2 may use for one compiled pattern (bytes): a pattern whose program needs more (a counted
#: repetition of a counted repetition, ``(a{100}){100}``) is refused when compiled.
MAX_PATTERN_MEMORY = 1 << 20

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the reason is raised, not printed on stderr
_OPTIONS.max_mem = MAX_PATTERN_MEMORY


class Pattern:
    """A compiled pattern; :meth:`fullmatch` tells whether it matches a whole string."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, compiled: Any) -> None:
        self.pattern = pattern
        self._compiled = compiled

    def fullmatch(self, text: str) -> bool:
        """Whether the pattern matches all of ``text`` (time linear in ``len(text)``)."""
        return self._compiled.fullmatch(text) is not None

    def __repr__(self) -> str:
        return f"Pattern({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


def compile_pattern(pattern: str) -> Pattern:
    """``pattern`` compiled; a ValueError naming the problem when it is too long or not one RE2 takes."""
    if len(pattern) > MAX_PATTERN:
        msg = f"a pattern is limited to {MAX_PATTERN} characters, got {len(pattern)}"
        raise ValueError(msg)
    try:
        compiled = re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        msg = f"not a valid regular expression (RE2 syntax: no backreferences or lookaround): {reason}"
        raise ValueError(msg) from exc
    return Pattern(pattern, compiled)
