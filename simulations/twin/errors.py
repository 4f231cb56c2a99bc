"""API errors as the Kubernetes API server reports them: ``Status`` bodies with reason, code and details."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from simulations.twin.objects import Obj


@dataclass(frozen=True)
class FieldError:
    """One cause of a 422 Invalid: the field path, a ``FieldValue*`` reason and the message."""

    reason: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def show(value: Any) -> str:
    """A value as Go's ``%q`` / ``%v`` would print it in a field error (JSON is close enough)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def invalid(field: str, value: Any, detail: str) -> FieldError:
    """``field.Invalid``."""
    return FieldError("FieldValueInvalid", field, f"Invalid value: {show(value)}: {detail}")


def required(field: str, detail: str = "") -> FieldError:
    """``field.Required``."""
    return FieldError("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def not_supported(field: str, value: Any, supported: list[str]) -> FieldError:
    """``field.NotSupported``."""
    values = ", ".join(show(v) for v in supported)
    return FieldError(
        "FieldValueNotSupported", field, f"Unsupported value: {show(value)}: supported values: {values}"
    )


def duplicate(field: str, value: Any) -> FieldError:
    """``field.Duplicate``."""
    return FieldError("FieldValueDuplicate", field, f"Duplicate value: {show(value)}")


def forbidden(field: str, detail: str) -> FieldError:
    """``field.Forbidden``."""
    return FieldError("FieldValueForbidden", field, f"Forbidden: {detail}")


def too_long(field: str, limit: int) -> FieldError:
    """``field.TooLong``."""
    return FieldError("FieldValueTooLong", field, f"Too long: may not be more than {limit} bytes")


def immutable(field: str, value: Any) -> FieldError:
    """``field.Invalid`` for a field that may not change after creation."""
    return invalid(field, value, "field is immutable")


class ApiError(Exception):
    """An error response of the API: becomes a ``Status`` body with the HTTP ``code``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Obj | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> Obj:
        """The ``Status`` object sent as the response body."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body

    # The constructors below mirror k8s.io/apimachinery/pkg/api/errors.

    @classmethod
    def not_found(cls, group: str, resource: str, name: str) -> ApiError:
        """404 NotFound for a named object."""
        return cls(
            404,
            "NotFound",
            f'{qualified(group, resource)} "{name}" not found',
            _details(group, resource, name),
        )

    @classmethod
    def already_exists(cls, group: str, resource: str, name: str) -> ApiError:
        """409 AlreadyExists on create."""
        return cls(
            409,
            "AlreadyExists",
            f'{qualified(group, resource)} "{name}" already exists',
            _details(group, resource, name),
        )

    @classmethod
    def conflict(cls, group: str, resource: str, name: str, why: str) -> ApiError:
        """409 Conflict: an update lost the optimistic-concurrency race, or a precondition failed."""
        message = f'Operation cannot be fulfilled on {qualified(group, resource)} "{name}": {why}'
        return cls(409, "Conflict", message, _details(group, resource, name))

    @classmethod
    def stale(cls, group: str, resource: str, name: str) -> ApiError:
        """409 Conflict for a write carrying an old ``resourceVersion``."""
        why = "the object has been modified; please apply your changes to the latest version and try again"
        return cls.conflict(group, resource, name, why)

    @classmethod
    def invalid(cls, group: str, kind: str, name: str, causes: list[FieldError]) -> ApiError:
        """422 Invalid with one cause per field error."""
        listed = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(str(c) for c in causes) + "]"
        details: Obj = {"name": name}
        if group:
            details["group"] = group
        details["kind"] = kind
        details["causes"] = [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]
        return cls(422, "Invalid", f'{qualified(group, kind)} "{name}" is invalid: {listed}', details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        """400 BadRequest."""
        return cls(400, "BadRequest", message)

    @classmethod
    def forbidden(cls, group: str, resource: str, name: str, why: str) -> ApiError:
        """403 Forbidden."""
        target = f'{qualified(group, resource)} "{name}"' if name else qualified(group, resource)
        return cls(403, "Forbidden", f"{target} is forbidden: {why}", _details(group, resource, name))

    @classmethod
    def method_not_allowed(cls, why: str = "") -> ApiError:
        """405 MethodNotAllowed."""
        message = "the server does not allow this method on the requested resource"
        return cls(405, "MethodNotAllowed", message + (f": {why}" if why else ""), {})

    @classmethod
    def path_not_found(cls) -> ApiError:
        """404 for a path the server does not serve."""
        return cls(404, "NotFound", "the server could not find the requested resource", {})

    @classmethod
    def unsupported_media_type(cls, content_type: str, accepted: list[str]) -> ApiError:
        """415 UnsupportedMediaType for a body format the server does not take."""
        message = (
            f"the body of the request was in an unknown format ({content_type or 'none'}) - "
            f"accepted media types include: {', '.join(accepted)}"
        )
        return cls(415, "UnsupportedMediaType", message, {})

    @classmethod
    def too_many_requests(cls, retry_after: int) -> ApiError:
        """429 TooManyRequests with ``Retry-After``, as API priority and fairness sends it."""
        return cls(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            {"retryAfterSeconds": retry_after},
            {"Retry-After": str(retry_after)},
        )

    @classmethod
    def internal(cls, message: str) -> ApiError:
        """500 InternalError."""
        return cls(
            500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]}
        )

    @classmethod
    def from_code(cls, code: int, message: str | None = None, retry_after: int | None = None) -> ApiError:
        """An error for an arbitrary HTTP code, with the reason the API server gives it."""
        if code == 429:
            return cls.too_many_requests(retry_after if retry_after is not None else 1)
        reason, default = _GENERIC.get(
            code, ("InternalError", "an error on the server has prevented the request")
        )
        if code == 500:
            return cls.internal(message or "injected fault")
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        details = {"retryAfterSeconds": retry_after} if retry_after is not None else {}
        return cls(code, reason, message or default, details, headers)


_GENERIC: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    409: ("Conflict", "the server reported a conflict"),
    410: ("Expired", "the resource version is too old"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    502: ("InternalError", "the server received an invalid response from an upstream server"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted"),
}


def qualified(group: str, resource: str) -> str:
    """``deployments.apps`` / ``pods``: a resource (or kind) qualified by its group."""
    return f"{resource}.{group}" if group else resource


def _details(group: str, resource: str, name: str) -> Obj:
    details: Obj = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = resource
    return details
