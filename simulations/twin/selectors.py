"""Label selectors (string and ``LabelSelector`` forms) and field selectors, as the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from simulations.twin.errors import ApiError, FieldError, invalid, not_supported, required
from simulations.twin.objects import Obj
from simulations.twin.validation import label_value, qualified_name


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector: ``key op values``."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label set satisfies this clause."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in {"=", "in"}:
            return present and value in self.values
        if self.op in {"!=", "notin"}:
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present or value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return "!" + self.key
        if self.op in {"=", "!="}:
            return f"{self.key}{self.op}{self.values[0]}"
        if self.op in {"in", "notin"}:
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        return f"{self.key}{'>' if self.op == 'gt' else '<'}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether ``labels`` are selected."""
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in sorted(self.requirements, key=lambda r: r.key))


EVERYTHING = LabelSelector()
NOTHING = LabelSelector(nothing=True)

_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|>|<|[^\s=!(),<>]+)")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the ``labelSelector`` query parameter (equality- and set-based); 400 BadRequest on errors."""
    tokens = [t for t in _TOKEN.findall(text) if t]
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise ApiError.bad_request(f"unable to parse requirement: invalid label selector: {text!r}")
    reqs: list[Requirement] = []
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def fail(why: str) -> ApiError:
        return ApiError.bad_request(f"unable to parse requirement: {why}")

    while pos < len(tokens):
        negate = False
        if peek() == "!":
            negate = True
            pos += 1
        key = peek()
        if key is None or key in {"=", "==", "!=", "(", ")", ",", "!", ">", "<", "in", "notin"}:
            raise fail(f"found '{key or ''}', expected: identifier")
        pos += 1
        _check_key(key)
        op = peek()
        if negate:
            reqs.append(Requirement(key, "!"))
        elif op in {None, ","}:
            reqs.append(Requirement(key, "exists"))
        elif op in {"=", "==", "!="}:
            pos += 1
            value = peek()
            if value in {None, ","}:
                value = ""
            else:
                pos += 1
            assert value is not None
            _check_value(value)
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
        elif op in {"in", "notin"}:
            pos += 1
            if peek() != "(":
                raise fail(f"found '{peek() or ''}', expected: '('")
            pos += 1
            values: list[str] = []
            while peek() not in {")", None}:
                item = peek()
                assert item is not None
                if item == ",":
                    pos += 1
                    continue
                _check_value(item)
                values.append(item)
                pos += 1
            if peek() != ")":
                raise fail("found '', expected: ')'")
            pos += 1
            reqs.append(Requirement(key, op, tuple(values)))
        elif op in {">", "<"}:
            pos += 1
            value = peek()
            if value is None or not value.lstrip("-").isdigit():
                raise fail(f"for 'Gt', 'Lt' operators, the value must be an integer: {value}")
            pos += 1
            reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
        else:
            raise fail(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")
        if peek() == ",":
            pos += 1
            if peek() is None:
                raise fail("found '', expected: identifier after ','")
        elif peek() is not None:
            raise fail(f"found '{peek()}', expected: ',' or 'end of string'")
    return LabelSelector(tuple(reqs))


def _check_key(key: str) -> None:
    problems = qualified_name(key)
    if problems:
        raise ApiError.bad_request(
            f'unable to parse requirement: invalid label key "{key}": {"; ".join(problems)}'
        )


def _check_value(value: str) -> None:
    problems = label_value(value)
    if problems:
        raise ApiError.bad_request(
            f'unable to parse requirement: invalid label value: "{value}": {"; ".join(problems)}'
        )


_SELECTOR_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def from_label_selector(selector: Obj | None) -> LabelSelector:
    """A ``metav1.LabelSelector`` object as a selector; None selects nothing, ``{}`` everything."""
    if selector is None:
        return NOTHING
    reqs = [Requirement(str(k), "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        op = _SELECTOR_OPS.get(str(expr.get("operator")))
        if op is None:
            return NOTHING
        reqs.append(Requirement(str(expr.get("key")), op, tuple(str(v) for v in expr.get("values") or [])))
    return LabelSelector(tuple(reqs))


def validate_label_selector(selector: object, path: str) -> list[FieldError]:
    """Structural validation of a ``metav1.LabelSelector``."""
    if selector is None:
        return []
    if not isinstance(selector, dict):
        return [invalid(path, selector, "must be an object")]
    errors: list[FieldError] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        errors += [invalid(f"{path}.matchLabels", key, p) for p in qualified_name(str(key))]
        errors += [invalid(f"{path}.matchLabels", value, p) for p in label_value(str(value))]
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        where = f"{path}.matchExpressions[{i}]"
        if not isinstance(expr, dict):
            errors.append(invalid(where, expr, "must be an object"))
            continue
        op = expr.get("operator")
        values = expr.get("values") or []
        if not expr.get("key"):
            errors.append(required(f"{where}.key"))
        if op not in _SELECTOR_OPS:
            errors.append(not_supported(f"{where}.operator", op, list(_SELECTOR_OPS)))
        elif op in {"In", "NotIn"} and not values:
            errors.append(required(f"{where}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in {"Exists", "DoesNotExist"} and values:
            errors.append(
                invalid(
                    f"{where}.values",
                    values,
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            )
    return errors


def selector_string(selector: Obj | None) -> str:
    """The string form of a ``LabelSelector`` (as in a Scale's ``status.selector``)."""
    return str(from_label_selector(selector)) if selector is not None else ""


FieldGetter = Callable[[Obj], str]


def _path_getter(path: str) -> FieldGetter:
    parts = path.split(".")

    def get(obj: Obj) -> str:
        value: object = obj
        for part in parts:
            if not isinstance(value, dict):
                return ""
            value = value.get(part)
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return get


def field_getters(*paths: str) -> dict[str, FieldGetter]:
    """Field-selector getters for the given dotted paths (plus ``metadata.name`` / ``metadata.namespace``)."""
    return {p: _path_getter(p) for p in ("metadata.name", "metadata.namespace", *paths)}


@dataclass(frozen=True)
class FieldSelector:
    """A parsed ``fieldSelector``: terms ``field=value`` / ``field!=value``."""

    terms: tuple[tuple[str, bool, str], ...] = ()

    def matches(self, obj: Obj, getters: Mapping[str, FieldGetter]) -> bool:
        """Whether ``obj`` satisfies every term."""
        return all((getters[field](obj) == value) == equal for field, equal, value in self.terms)


def parse_field_selector(text: str, getters: Mapping[str, FieldGetter]) -> FieldSelector:
    """Parse ``fieldSelector``; an unsupported field is a 400, as on the real server."""
    terms: list[tuple[str, bool, str]] = []
    for raw in _split_unescaped(text, ","):
        term = raw.strip()
        if not term:
            continue
        field, equal, value = _split_term(text, term)
        if field not in getters:
            raise ApiError.bad_request(f"field label not supported: {field}")
        terms.append((field, equal, value))
    return FieldSelector(tuple(terms))


def _split_term(text: str, term: str) -> tuple[str, bool, str]:
    for op, equal in (("!=", False), ("==", True), ("=", True)):
        index = _find_unescaped(term, op)
        if index >= 0:
            return term[:index].strip(), equal, _unescape(term[index + len(op) :].strip())
    raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _find_unescaped(text: str, op: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(op, i):
            return i
        i += 1
    return -1


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)
