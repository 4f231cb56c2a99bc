"""The actions a playbook can name, each with the model of its parameters.

The set is closed: ``scale``, ``rollback``, ``restart``, ``delete_pod``, ``retrain``, ``notify``.
The parameter models are the remediations' own (:mod:`remediations.registry` ``PARAMS``): the
code that executes an action owns what it accepts, and a playbook is validated against exactly
that when it loads, never during the incident.

String parameters may hold templates (see :mod:`agent.playbook.templating`). At load time the
models are validated with the context ``{"templates": True}`` (:data:`LOAD_CONTEXT`), so a name
like ``{{ labels.pod }}`` passes; the parameters an action lists in :func:`kubernetes_names` are
Kubernetes object names whose rendered values are checked against the name rules before the
action runs, and the executor validates the rendered parameters with the same models again.

What only the playbook needs (which kinds an action acts on, whether it changes the workload,
which parameters are names) is read here through small functions, so the models stay the
remediations'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

from remediations.delete_pod import DeletePodParams
from remediations.notify import NotifyParams
from remediations.params import TEMPLATES, ActionParams
from remediations.registry import ACTIONS as _IMPLEMENTATIONS
from remediations.registry import PARAMS
from remediations.restart import RestartParams
from remediations.retrain import RetrainParams
from remediations.rollback import RollbackParams
from remediations.scale import ForecastTarget, ScaleParams
from remediations.types import ActionClass

__all__ = [
    "ACTIONS",
    "LOAD_CONTEXT",
    "ActionName",
    "ActionParams",
    "DeletePodParams",
    "ForecastTarget",
    "NotifyParams",
    "RestartParams",
    "RetrainParams",
    "RollbackParams",
    "ScaleParams",
    "action_class",
    "changes_workload",
    "kubernetes_names",
    "playbook_class",
    "target_kinds",
]

#: Every action's parameters model by its YAML name; read-only (the remediations' registry).
ACTIONS: Mapping[str, type[ActionParams]] = PARAMS

#: The validation context for parameters that may still hold templates (playbooks at load time).
LOAD_CONTEXT: Final[Mapping[str, Any]] = MappingProxyType({TEMPLATES: True})

#: The action names as a Literal, for places that need the type.
ActionName = Literal["scale", "rollback", "restart", "delete_pod", "retrain", "notify"]

#: Parameters (YAML names) whose rendered value must be a Kubernetes object name.
_KUBERNETES_NAMES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {"delete_pod": ("pod",), "retrain": ("cronJob",)}
)


def _name(params: ActionParams | type[ActionParams]) -> str:
    return params.action


def target_kinds(params: ActionParams | type[ActionParams]) -> frozenset[str] | None:
    """The kinds of target the action acts on (the implementation's); None means any."""
    kinds = _IMPLEMENTATIONS[_name(params)].target_kinds
    return kinds or None


def changes_workload(params: ActionParams | type[ActionParams]) -> bool:
    """Whether the action changes the workload (counted by rate limits); ``notify`` does not."""
    return action_class(params) is not ActionClass.NOTIFY


def action_class(params: ActionParams | type[ActionParams]) -> ActionClass:
    """Capacity, corrective or notify (the implementation's): which budgets the action spends."""
    return _IMPLEMENTATIONS[_name(params)].action_class


def playbook_class(steps: Iterable[ActionParams]) -> ActionClass:
    """A playbook's class: corrective if any step is, else capacity if any step scales, else notify."""
    classes = {action_class(p) for p in steps}
    for cls in (ActionClass.CORRECTIVE, ActionClass.CAPACITY):
        if cls in classes:
            return cls
    return ActionClass.NOTIFY


def kubernetes_names(params: ActionParams | type[ActionParams]) -> tuple[str, ...]:
    """The parameters (YAML names) whose rendered value must be a Kubernetes object name."""
    return _KUBERNETES_NAMES.get(_name(params), ())
