"""Remediations: the only code that changes workloads.

One module per action (:mod:`~remediations.scale`, :mod:`~remediations.rollback`,
:mod:`~remediations.restart`, :mod:`~remediations.delete_pod`, :mod:`~remediations.retrain`,
:mod:`~remediations.notify`), each with its parameters model; the values they share in
:mod:`~remediations.types`; the one Kubernetes client factory and call wrapper in
:mod:`~remediations.kube`; the error taxonomy in :mod:`~remediations.errors`; Events in
:mod:`~remediations.events`; the registry by name in :mod:`~remediations.registry`.

Every action is idempotent per request key, plans before it writes (dry-run and approval show the
plan), writes only to its target (and what the target owns), and writes an Event on the target.

The names below are loaded when first used (PEP 562): importing one module of the package (the
JSON loader, the record state) does not load the Kubernetes client behind the actions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Each public name, and the module of the package that defines it.
_WHERE = {
    "ACTIONS": "registry",
    "Action": "types",
    "ActionContext": "types",
    "ActionParams": "params",
    "ActionRefused": "errors",
    "ActionRequest": "types",
    "ActionResult": "types",
    "ActionStatus": "types",
    "AlreadyExistsError": "errors",
    "Clock": "types",
    "ConflictError": "errors",
    "ConnectionKubeError": "errors",
    "DeletePodParams": "delete_pod",
    "ForbiddenError": "errors",
    "InvalidError": "errors",
    "KubeClients": "kube",
    "KubeError": "errors",
    "KubeSettings": "kube",
    "Limits": "types",
    "NotFoundError": "errors",
    "NotifyParams": "notify",
    "ObjectRef": "errors",
    "PARAMS": "registry",
    "ParamsError": "params",
    "PermanentError": "errors",
    "PermanentKubeError": "errors",
    "Plan": "types",
    "RemediationError": "errors",
    "RestartParams": "restart",
    "RetrainParams": "retrain",
    "RetrainPublisher": "types",
    "RollbackParams": "rollback",
    "ScaleAction": "scale",
    "ScaleParams": "scale",
    "ServerError": "errors",
    "SignalFacts": "types",
    "SystemClock": "types",
    "Target": "types",
    "TemporaryError": "errors",
    "TemporaryKubeError": "errors",
    "TooManyRequestsError": "errors",
    "connect": "kube",
    "get_action": "registry",
    "idempotency_key": "types",
    "make_request": "registry",
    "parse_params": "registry",
}

__all__ = [
    "ACTIONS",
    "PARAMS",
    "Action",
    "ActionContext",
    "ActionParams",
    "ActionRefused",
    "ActionRequest",
    "ActionResult",
    "ActionStatus",
    "AlreadyExistsError",
    "Clock",
    "ConflictError",
    "ConnectionKubeError",
    "DeletePodParams",
    "ForbiddenError",
    "InvalidError",
    "KubeClients",
    "KubeError",
    "KubeSettings",
    "Limits",
    "NotFoundError",
    "NotifyParams",
    "ObjectRef",
    "ParamsError",
    "PermanentError",
    "PermanentKubeError",
    "Plan",
    "RemediationError",
    "RestartParams",
    "RetrainParams",
    "RetrainPublisher",
    "RollbackParams",
    "ScaleAction",
    "ScaleParams",
    "ServerError",
    "SignalFacts",
    "SystemClock",
    "Target",
    "TemporaryError",
    "TemporaryKubeError",
    "TooManyRequestsError",
    "connect",
    "get_action",
    "idempotency_key",
    "make_request",
    "parse_params",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        msg = f"module 'remediations' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"remediations.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


if TYPE_CHECKING:
    from remediations.delete_pod import DeletePodParams
    from remediations.errors import (
        ActionRefused,
        AlreadyExistsError,
        ConflictError,
        ConnectionKubeError,
        ForbiddenError,
        InvalidError,
        KubeError,
        NotFoundError,
        ObjectRef,
        PermanentError,
        PermanentKubeError,
        RemediationError,
        ServerError,
        TemporaryError,
        TemporaryKubeError,
        TooManyRequestsError,
    )
    from remediations.kube import KubeClients, KubeSettings, connect
    from remediations.notify import NotifyParams
    from remediations.params import ActionParams, ParamsError
    from remediations.registry import ACTIONS, PARAMS, get_action, make_request, parse_params
    from remediations.restart import RestartParams
    from remediations.retrain import RetrainParams
    from remediations.rollback import RollbackParams
    from remediations.scale import ScaleAction, ScaleParams
    from remediations.types import (
        Action,
        ActionContext,
        ActionRequest,
        ActionResult,
        ActionStatus,
        Clock,
        Limits,
        Plan,
        RetrainPublisher,
        SignalFacts,
        SystemClock,
        Target,
        idempotency_key,
    )
