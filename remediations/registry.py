"""The actions by their playbook name, built once and read-only, and the way to make a request.

request = make_request("scale", Target("Deployment", "shop", "web"), {"by": 2},
                       playbook="scale-out", incident="inc-1", step="actions[0]")
result = ACTIONS[request.action].execute(ActionContext(kube, request, clock))
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from remediations.delete_pod import DeletePodAction
from remediations.notify import NotifyAction
from remediations.params import ActionParams, validate_params
from remediations.restart import RestartAction
from remediations.retrain import RetrainAction
from remediations.rollback import RollbackAction
from remediations.scale import ScaleAction
from remediations.types import Action, ActionRequest, Limits, SignalFacts, Target, idempotency_key

_ALL: tuple[Action, ...] = (
    ScaleAction(),
    RollbackAction(),
    RestartAction(),
    DeletePodAction(),
    RetrainAction(),
    NotifyAction(),
)

#: Every action by its name in playbooks; read-only.
ACTIONS: Mapping[str, Action] = MappingProxyType({action.name: action for action in _ALL})

#: Every action's parameters model by the action's name; read-only (for the playbook loader).
PARAMS: Mapping[str, type[ActionParams]] = MappingProxyType({a.name: a.params_model for a in _ALL})


def get_action(name: str) -> Action:
    """The action called ``name``; a ValueError listing the known ones otherwise."""
    try:
        return ACTIONS[name]
    except KeyError:
        msg = f"unknown action {name!r}; the actions are: {', '.join(ACTIONS)}"
        raise ValueError(msg) from None


def parse_params(action: str, raw: Any) -> ActionParams:
    """``raw`` (a mapping from YAML) validated by the action's model; ParamsError naming each bad field."""
    return validate_params(get_action(action).params_model, raw)


def make_request(
    action: str,
    target: Target,
    params: Any,
    *,
    playbook: str,
    incident: str,
    step: str,
    dry_run: bool = False,
    reason: str = "",
    signal: SignalFacts | None = None,
    limits: Limits | None = None,
) -> ActionRequest:
    """A validated :class:`ActionRequest` with its idempotency key (playbook, target, incident, step)."""
    return ActionRequest(
        action=action,
        target=target,
        params=parse_params(action, params),
        key=idempotency_key(playbook, target, incident, step),
        incident=incident,
        playbook=playbook,
        step=step,
        dry_run=dry_run,
        reason=reason,
        signal=signal if signal is not None else SignalFacts(),
        limits=limits if limits is not None else Limits(),
    )
