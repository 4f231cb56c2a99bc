"""Kubernetes name, label and selector rules, checked before any value reaches an API path.

The rules are those of k8s.io/apimachinery/pkg/util/validation: RFC 1123 labels (namespaces, at
most 63 characters) and subdomains (most object names, at most 253), qualified names for label
keys, and label values. A value that breaks a rule raises :class:`ValueError` naming the field, so
``Deployment name 'Web' is not a valid ...`` says which input was wrong.
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(f"{_LABEL}")
_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_QUALIFIED_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_KIND_RE = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")


def _shown(value: str) -> str:
    # repr() shows newlines and braces as they are, so a template or an injection is visible.
    return repr(value if len(value) <= 80 else value[:77] + "...")


def check_label(field: str, value: object) -> str:
    """``value`` if it is an RFC 1123 label (a namespace name), else a ValueError naming ``field``."""
    if not isinstance(value, str) or not value:
        msg = f"{field} must be a non-empty string"
        raise ValueError(msg)
    if len(value) > DNS1123_LABEL_MAX:
        msg = f"{field} {_shown(value)} is longer than {DNS1123_LABEL_MAX} characters"
        raise ValueError(msg)
    if not _LABEL_RE.fullmatch(value):
        msg = (
            f"{field} {_shown(value)} is not a valid Kubernetes name: lower case letters, digits and '-', "
            "starting and ending with a letter or digit (RFC 1123 label)"
        )
        raise ValueError(msg)
    return value


def check_subdomain(field: str, value: object, limit: int = DNS1123_SUBDOMAIN_MAX) -> str:
    """``value`` if it is an RFC 1123 subdomain (an object name) of at most ``limit`` characters."""
    if not isinstance(value, str) or not value:
        msg = f"{field} must be a non-empty string"
        raise ValueError(msg)
    if len(value) > limit:
        msg = f"{field} {_shown(value)} is longer than {limit} characters"
        raise ValueError(msg)
    if not _SUBDOMAIN_RE.fullmatch(value):
        msg = (
            f"{field} {_shown(value)} is not a valid Kubernetes name: lower case letters, digits, '-' and "
            "'.', starting and ending with a letter or digit (RFC 1123 subdomain)"
        )
        raise ValueError(msg)
    return value


def check_kind(field: str, value: object) -> str:
    """``value`` if it looks like a Kubernetes kind (``Deployment``): CamelCase letters and digits."""
    if not isinstance(value, str) or not _KIND_RE.fullmatch(value):
        msg = f"{field} {_shown(str(value))} is not a Kubernetes kind (CamelCase, e.g. 'Deployment')"
        raise ValueError(msg)
    return value


def check_label_key(field: str, key: str) -> str:
    """A label key: an optional DNS-subdomain prefix and '/', then a qualified name."""
    prefix, _, name = key.rpartition("/")
    if "/" in prefix:
        msg = f"{field}: label key {_shown(key)} has more than one '/'"
        raise ValueError(msg)
    if prefix or key.startswith("/"):
        check_subdomain(f"{field}: the prefix of label key {_shown(key)}", prefix)
    if not name or len(name) > QUALIFIED_NAME_MAX or not _QUALIFIED_RE.fullmatch(name):
        msg = (
            f"{field}: label key {_shown(key)} is not valid: at most {QUALIFIED_NAME_MAX} letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit, after an optional 'prefix/'"
        )
        raise ValueError(msg)
    return key


def check_label_value(field: str, value: str) -> str:
    """A label value: empty, or at most 63 letters, digits, '-', '_', '.' starting and ending alphanumeric."""
    if len(value) > LABEL_VALUE_MAX or not _LABEL_VALUE_RE.fullmatch(value):
        msg = (
            f"{field}: label value {_shown(value)} is not valid: at most {LABEL_VALUE_MAX} letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
        raise ValueError(msg)
    return value


# ---------------------------------------------------------------- label selectors

_REQUIREMENT = re.compile(
    r"""^\s*(?:
        (?P<not>!)\s*(?P<absent>[^\s=!,()]+)                                      # !key
      | (?P<setkey>[^\s=!,()]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)   # key in (a,b)
      | (?P<key>[^\s=!,()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s=!,()]*)          # key=value
      | (?P<exists>[^\s=!,()]+)                                                  # key
    )\s*$""",
    re.VERBOSE,
)


def split_selector(selector: str) -> list[str]:
    """The requirements of a label selector string, split on the commas outside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def check_selector(field: str, selector: str) -> str:
    """``selector`` if it is a valid label selector string (``app=web,tier in (a,b),!canary``)."""
    if not selector.strip():
        msg = f"{field} must not be empty (an empty selector selects everything)"
        raise ValueError(msg)
    for requirement in split_selector(selector):
        match = _REQUIREMENT.match(requirement)
        if match is None:
            msg = f"{field}: {_shown(requirement.strip())} is not a label selector requirement"
            raise ValueError(msg)
        key = match["absent"] or match["setkey"] or match["key"] or match["exists"]
        check_label_key(field, key)
        if match["setkey"]:
            values = [v.strip() for v in match["values"].split(",")]
            if not any(values):
                msg = f"{field}: {_shown(requirement.strip())} needs at least one value"
                raise ValueError(msg)
            for value in values:
                check_label_value(field, value)
        elif match["key"]:
            check_label_value(field, match["value"])
    return selector


def selector_from_label_selector(selector: object) -> str:
    """A ``LabelSelector`` object (``matchLabels``, ``matchExpressions``) as a selector string."""
    if not isinstance(selector, dict):
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key", ""), expression.get("operator", "")
        values = ",".join(sorted(str(v) for v in expression.get("values") or []))
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
