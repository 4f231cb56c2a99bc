"""Remediations: the only code that changes workloads.

One module per action (:mod:`~remediations.scale`, :mod:`~remediations.rollback`,
:mod:`~remediations.restart`, :mod:`~remediations.delete_pod`, :mod:`~remediations.retrain`,
:mod:`~remediations.notify`), each with its parameters model; the values they share in
:mod:`~remediations.types`; the one Kubernetes client factory and call wrapper in
:mod:`~remediations.kube`; the error taxonomy in :mod:`~remediations.errors`; Events in
:mod:`~remediations.events`; the registry by name in :mod:`~remediations.registry`.

Every action is idempotent per request key, plans before it writes (dry-run and approval show the
plan), writes only to its target (and what the target owns), and writes an Event on the target.
"""

from __future__ import annotations

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
