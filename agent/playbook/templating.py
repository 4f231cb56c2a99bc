"""Playbook templating: data substitution only.

A template is a string with placeholders ``{{ labels.deployment }}``, ``{{ target.name }}``,
``{{ signal.value }}``, ``{{ incident.id }}`` ... Each placeholder names one variable; there are no
expressions, filters, function calls, loops, shell or code, and no Jinja. Substitution makes one
pass: a substituted value is never scanned again, so a label value that itself contains ``{{``
stays literal text.

Which variables exist depends on where the template is used (:class:`Scope`): the target of a
playbook is resolved from the signal, so it cannot refer to ``target.*`` or ``incident.*``; action
parameters can. Unknown variables are load-time errors.

A value that lands in a Kubernetes name or namespace is checked against the Kubernetes name rules
(DNS-1123) before anything uses it: :func:`render_name`.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

#: ``{{`` ... ``}}`` with anything but braces inside; what is inside is checked separately.
_PLACEHOLDER = re.compile(r"\{\{(?P<inner>[^{}]*)\}\}")
_VARIABLE = re.compile(r"(?P<root>[a-z]+)\.(?P<leaf>[A-Za-z_][A-Za-z0-9_]*)")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Kubernetes name rules (k8s.io/apimachinery/pkg/util/validation): RFC 1123 labels and subdomains.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253


class Scope(enum.Enum):
    """Where a template is evaluated; each scope allows a fixed set of variables."""

    TARGET = "target"
    ACTION = "action"


#: Variables by scope, besides ``labels.<label name>`` which every scope has.
_SCOPE_VARIABLES: dict[Scope, frozenset[str]] = {
    Scope.TARGET: frozenset(
        {
            "signal.kind",
            "signal.metric",
            "signal.value",
            "signal.score",
            "signal.detector",
            "signal.timestamp",
            "playbook.name",
        }
    ),
}
_SCOPE_VARIABLES[Scope.ACTION] = _SCOPE_VARIABLES[Scope.TARGET] | {
    "target.kind",
    "target.namespace",
    "target.name",
    "incident.id",
    "incident.started",
}


def variables(scope: Scope) -> list[str]:
    """The variable names a template in ``scope`` may use (``labels.NAME`` for any label)."""
    return ["labels.NAME", *sorted(_SCOPE_VARIABLES[scope])]


class TemplateError(ValueError):
    """A template is malformed, names an unknown variable, or renders an invalid value."""


@dataclass(frozen=True, slots=True)
class Template:
    """A checked template: literal text and variable names, alternating."""

    source: str
    parts: tuple[str, ...]  # even indexes: literal text; odd indexes: variable names

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables the template uses, in order."""
        return self.parts[1::2]

    @property
    def is_literal(self) -> bool:
        """True when the template has no placeholder."""
        return len(self.parts) == 1

    def render(self, context: Mapping[str, str]) -> str:
        """Substitute each variable from ``context`` in one pass; a missing one is a TemplateError."""
        out = []
        for i, part in enumerate(self.parts):
            if i % 2 == 0:
                out.append(part)
                continue
            value = context.get(part)
            if value is None:
                what = f"label {part[7:]!r}" if part.startswith("labels.") else f"variable {part!r}"
                msg = f"{what} is not set for this signal (template {self.source!r})"
                raise TemplateError(msg)
            out.append(value)
        return "".join(out)


def parse_template(text: str, scope: Scope) -> Template:
    """Check ``text`` as a template in ``scope``; raise TemplateError naming what was expected."""
    parts: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        literal = text[pos : m.start()]
        _check_literal(literal, text)
        parts.extend([literal, _check_variable(m.group("inner").strip(), scope, text)])
        pos = m.end()
    tail = text[pos:]
    _check_literal(tail, text)
    parts.append(tail)
    return Template(text, tuple(parts))


def _check_literal(literal: str, text: str) -> None:
    if "{{" in literal or "}}" in literal:
        msg = (
            f"unbalanced or nested braces in template {text!r}: "
            "write placeholders as {{ labels.NAME }}, one variable between {{ and }}"
        )
        raise TemplateError(msg)


def _check_variable(name: str, scope: Scope, text: str) -> str:
    m = _VARIABLE.fullmatch(name)
    if m is None:
        msg = (
            f"{{{{ {name} }}}} in {text!r} is not a variable: templates substitute data only, "
            f"no expressions, filters or code; expected one of: {', '.join(variables(scope))}"
        )
        raise TemplateError(msg)
    if m.group("root") == "labels":
        return name
    if name not in _SCOPE_VARIABLES[scope]:
        msg = f"unknown template variable {name!r}"
        if scope is Scope.TARGET and m.group("root") in {"target", "incident"}:
            msg += " (a target is resolved from the signal, before target and incident exist)"
        else:
            hint = difflib.get_close_matches(name, sorted(_SCOPE_VARIABLES[scope]), n=1)
            if hint:
                msg += f" (did you mean {hint[0]!r}?)"
        msg += f"; expected one of: {', '.join(variables(scope))}"
        raise TemplateError(msg)
    return name


def is_label_name(name: str) -> bool:
    """Whether ``name`` is a valid Prometheus label name."""
    return _LABEL_NAME.fullmatch(name) is not None


def format_number(value: float) -> str:
    """Numbers as templates print them: short, without exponent noise for ordinary values."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


class NameKind(enum.Enum):
    """Which Kubernetes name rule applies."""

    LABEL = "label"  # namespaces: DNS-1123 label
    SUBDOMAIN = "subdomain"  # most object names: DNS-1123 subdomain


def kubernetes_name_problem(value: str, kind: NameKind = NameKind.SUBDOMAIN) -> str | None:
    """Why ``value`` is not a valid Kubernetes name of ``kind``, or None when it is."""
    if "{{" in value or "}}" in value:
        return "contains template braces; values are substituted once and never expanded again"
    if "/" in value or value in {".", ".."} or ".." in value:
        return "contains a path element ('/' or '..')"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character (newline, tab ...)"
    if not value:
        return "is empty"
    limit = DNS1123_LABEL_MAX if kind is NameKind.LABEL else DNS1123_SUBDOMAIN_MAX
    if len(value) > limit:
        return f"is {len(value)} characters long, more than {limit}"
    rule = _DNS1123_LABEL if kind is NameKind.LABEL else _DNS1123_SUBDOMAIN
    if rule.fullmatch(value) is None:
        allowed = "lowercase letters, digits and '-'" + ("" if kind is NameKind.LABEL else " and '.'")
        return f"is not a valid Kubernetes name: use {allowed}, starting and ending with a letter or digit"
    return None


def render_name(template: Template, context: Mapping[str, str], kind: NameKind, what: str) -> str:
    """Render ``template`` and check the result as a Kubernetes name; TemplateError otherwise."""
    value = template.render(context)
    problem = kubernetes_name_problem(value, kind)
    if problem is not None:
        msg = f"{what} {value!r} (from {template.source!r}) {problem}"
        raise TemplateError(msg)
    return value
