"""The base of every action's parameter model, and the field types the models share.

Parameters are pydantic models with ``extra="forbid"`` and camelCase names, exactly as they are
written in playbook YAML, so a typo (``maxReplica``) is a load-time error that names the field.
The models import nothing that needs a cluster: the playbook loader validates playbooks with them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)

from remediations.names import check_label_key, check_selector, check_subdomain

_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")
_DURATION_PATTERN = r"^(\d+(\.\d+)?h)?(\d+(\.\d+)?m)?(\d+(\.\d+)?s)?$"


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a Go-style duration string (``90``, ``"30s"``, ``"10m"``, ``"1h30m"``)."""
    if isinstance(value, str):
        text = value.strip()
        match = _DURATION.match(text)
        if not text or match is None:
            try:
                return float(text)
            except ValueError:
                msg = f"{value!r} is not a duration: use seconds or a string like '30s', '10m', '1h30m'"
                raise ValueError(msg) from None
        hours, minutes, seconds = (float(match[g] or 0) for g in ("h", "m", "s"))
        return hours * 3600 + minutes * 60 + seconds
    return value


#: A duration in seconds; YAML may say ``600`` or ``"10m"``.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION_PATTERN},
            ],
            "description": "seconds, or a duration like '30s', '10m', '1h30m'",
        }
    ),
]


#: Validation context key: parameters may still hold ``{{ ... }}`` templates (a playbook at load
#: time). Name and selector checks then wait for the rendered value, which is validated again.
TEMPLATES = "templates"


def _templated(value: str, info: ValidationInfo) -> bool:
    context = info.context
    return isinstance(context, dict) and bool(context.get(TEMPLATES)) and "{{" in value


def _name(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str) or _templated(value, info):
        return value
    return check_subdomain("name", value)


def _selector(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str) or _templated(value, info):
        return value
    return check_selector("selector", value)


def _env_name(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        msg = f"{value!r} is not an environment variable name (letters, digits and '_')"
        raise ValueError(msg)
    return value


def _header_name(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", value):
        msg = f"{value!r} is not an HTTP header name"
        raise ValueError(msg)
    return value


#: A Kubernetes object name (RFC 1123 subdomain, at most 253 characters).
KubernetesName = Annotated[str, BeforeValidator(_name), Field(min_length=1, max_length=253)]
#: A label selector string (``app=web,tier in (a,b)``).
LabelSelector = Annotated[str, BeforeValidator(_selector), Field(min_length=1, max_length=1024)]
#: The name of an environment variable (where a secret comes from).
EnvName = Annotated[str, BeforeValidator(_env_name), Field(min_length=1, max_length=128)]
#: An HTTP header name.
HeaderName = Annotated[str, BeforeValidator(_header_name), Field(min_length=1, max_length=128)]
#: A label or annotation key.
LabelKey = Annotated[str, BeforeValidator(lambda v: check_label_key("key", v) if isinstance(v, str) else v)]


class ActionParams(BaseModel):
    """Base of every action's parameters: frozen, no unknown fields, camelCase names as in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_by_name=False)

    #: The action's name in YAML.
    action: ClassVar[str] = ""

    def describe(self) -> str:
        """What the action will do, in plain words."""
        return self.action

    def to_yaml_dict(self) -> dict[str, Any]:
        """The parameters as they would be written in a playbook (camelCase, unset ones left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


P = TypeVar("P", bound=ActionParams)


class ParamsError(ValueError):
    """Parameters that do not fit the action's model; the message lists each field and its problem."""

    def __init__(self, action: str, error: ValidationError) -> None:
        self.action = action
        self.errors = [
            (".".join(str(p) for p in item["loc"]) or "(params)", item["msg"]) for item in error.errors()
        ]
        lines = [
            f"{action}.{where}: {why}" if where != "(params)" else f"{action}: {why}"
            for where, why in self.errors
        ]
        super().__init__(f"invalid parameters for action {action!r}:\n  " + "\n  ".join(lines))


def validate_params(model: type[P], raw: Any) -> P:
    """``raw`` (a mapping from YAML, or a model) validated as ``model``; ParamsError if it does not fit."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as error:
        raise ParamsError(model.action or model.__name__, error) from None
