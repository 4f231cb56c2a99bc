"""Name, label and metadata validation with the API server's rules and messages."""

from __future__ import annotations

import re
from collections.abc import Callable

from simulations.twin.errors import FieldError, invalid, required
from simulations.twin.objects import Obj

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\." + _LABEL + ")*"
_DNS1035 = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"

_LABEL_RE = re.compile(f"^{_LABEL}$")
_SUBDOMAIN_RE = re.compile(f"^{_SUBDOMAIN}$")
_DNS1035_RE = re.compile(f"^{_DNS1035}$")
_QUALIFIED_RE = re.compile(f"^{_QUALIFIED}$")

NameRule = Callable[[str], list[str]]
"""A name validator: the list of problems, empty when the name is valid."""


def dns1123_label(value: str) -> list[str]:
    """RFC 1123 label: namespaces, container names, label-like names."""
    problems = []
    if len(value) > DNS1123_LABEL_MAX:
        problems.append(f"must be no more than {DNS1123_LABEL_MAX} characters")
    if not _LABEL_RE.match(value):
        problems.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
            "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
            f"validation is '{_LABEL}')"
        )
    return problems


def dns1123_subdomain(value: str) -> list[str]:
    """RFC 1123 subdomain: the name rule of most objects (Deployments, Pods, Jobs, Leases ...)."""
    problems = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        problems.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _SUBDOMAIN_RE.match(value):
        problems.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
            f"validation is '{_SUBDOMAIN}')"
        )
    return problems


def dns1035_label(value: str) -> list[str]:
    """RFC 1035 label (starts with a letter): Services, port names."""
    problems = []
    if len(value) > DNS1123_LABEL_MAX:
        problems.append(f"must be no more than {DNS1123_LABEL_MAX} characters")
    if not _DNS1035_RE.match(value):
        problems.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
            "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
            f"regex used for validation is '{_DNS1035}')"
        )
    return problems


def path_segment_name(value: str) -> list[str]:
    """The loosest rule: anything usable as one URL path segment."""
    if value in {".", ".."}:
        return [f"may not be '{value}'"]
    return [f"may not contain '{bad}'" for bad in ("/", "%") if bad in value]


def max_length(rule: NameRule, limit: int) -> NameRule:
    """``rule`` plus a tighter length limit (CronJob names leave room for the Job suffix)."""

    def check(value: str) -> list[str]:
        problems = rule(value)
        if len(value) > limit:
            problems.append(f"must be no more than {limit} characters")
        return problems

    return check


def qualified_name(value: str) -> list[str]:
    """A label or annotation key: an optional DNS-subdomain prefix and a name of up to 63 characters."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        problems = [f"prefix part {p}" for p in dns1123_subdomain(prefix)]
        if problems:
            return problems
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            f"validation is '{_QUALIFIED}') with an optional DNS subdomain prefix and '/' (e.g. "
            "'example.com/MyName')"
        ]
    if not name:
        return ["name part must be non-empty"]
    problems = []
    if len(name) > QUALIFIED_NAME_MAX:
        problems.append(f"name part must be no more than {QUALIFIED_NAME_MAX} characters")
    if not _QUALIFIED_RE.match(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
            "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            f"validation is '{_QUALIFIED}')"
        )
    return problems


def label_value(value: str) -> list[str]:
    """A label value: empty, or up to 63 characters of the qualified-name alphabet."""
    if value == "":
        return []
    problems = []
    if len(value) > LABEL_VALUE_MAX:
        problems.append(f"must be no more than {LABEL_VALUE_MAX} characters")
    if not _QUALIFIED_RE.match(value):
        problems.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
            f"'12345', regex used for validation is '(({_QUALIFIED})?'"
        )
    return problems


def validate_labels(labels: object, path: str) -> list[FieldError]:
    """Keys and values of a label map."""
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [invalid(path, labels, "must be a map of string keys to string values")]
    errors: list[FieldError] = []
    for key, value in labels.items():
        errors += [invalid(path, key, p) for p in qualified_name(str(key))]
        if not isinstance(value, str):
            errors.append(invalid(f"{path}[{key}]", value, "must be a string"))
        else:
            errors += [invalid(f"{path}[{key}]", value, p) for p in label_value(value)]
    return errors


def validate_annotations(annotations: object, path: str) -> list[FieldError]:
    """Keys of an annotation map (values are free strings)."""
    if annotations is None:
        return []
    if not isinstance(annotations, dict):
        return [invalid(path, annotations, "must be a map of string keys to string values")]
    errors: list[FieldError] = []
    for key, value in annotations.items():
        errors += [invalid(path, key, p) for p in qualified_name(str(key).lower())]
        if not isinstance(value, str):
            errors.append(invalid(f"{path}[{key}]", value, "must be a string"))
    return errors


def validate_object_meta(meta: Obj, name_rule: NameRule, path: str = "metadata") -> list[FieldError]:
    """Name, labels and annotations of an object's metadata."""
    errors: list[FieldError] = []
    name = meta.get("name")
    if not name:
        errors.append(required(f"{path}.name", "name or generateName is required"))
    elif not isinstance(name, str):
        errors.append(invalid(f"{path}.name", name, "must be a string"))
    else:
        errors += [invalid(f"{path}.name", name, p) for p in name_rule(name)]
    errors += validate_labels(meta.get("labels"), f"{path}.labels")
    errors += validate_annotations(meta.get("annotations"), f"{path}.annotations")
    return errors


def validate_template_meta(meta: object, path: str) -> list[FieldError]:
    """The metadata of a pod template: labels and annotations only."""
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return [invalid(path, meta, "must be an object")]
    return validate_labels(meta.get("labels"), f"{path}.labels") + validate_annotations(
        meta.get("annotations"), f"{path}.annotations"
    )


def nonnegative(obj: Obj, key: str, path: str) -> list[FieldError]:
    """An optional integer field that must be >= 0."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool):
        return [invalid(f"{path}.{key}", value, "must be an integer")]
    if value < 0:
        return [invalid(f"{path}.{key}", value, "must be greater than or equal to 0")]
    return []
