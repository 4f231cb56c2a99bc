"""Whether the engine would have proposed a request: the check of a request read back from a record.

An approved request is rebuilt from its approval record (:mod:`agent.approvals`), which anyone who
may write the records can change or make up. Before the executor runs one, :func:`vet` checks it
against the agent's own policy, as the engine applied it when it proposed: the target's namespace
not protected and within the allow-lists, the playbook loaded, the step one of its steps with that
action, the target and the parameters what its templates can render to, the idempotency key its
own, and the limits and dry run no looser than its guardrails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agent.playbook.actions import action_class
from agent.playbook.guardrails import EffectiveGuardrails, GuardrailDefaults, effective, namespace_closed
from agent.playbook.loader import LoadedPlaybook, PlaybookSet
from agent.playbook.models import ActionStep
from agent.playbook.requests import Proposal
from agent.playbook.templating import Scope, Template, TemplateError, parse_template
from remediations.types import ActionClass, Limits, idempotency_key

_STEP = re.compile(r"(?P<phase>actions|onFailure)\[(?P<index>\d{1,3})\]")


def vet(proposal: Proposal, playbooks: PlaybookSet, defaults: GuardrailDefaults) -> str | None:
    """Why the engine, with ``playbooks`` and the agent's guardrails ``defaults``, would not have
    proposed ``proposal`` (a phrase: ``names step 'actions[7]', not a step of playbook pb``); None
    when it would have. The namespace is judged by :func:`namespace_closed`, as the engine judges
    what it proposes."""
    request = proposal.request
    target = request.target
    namespace = target.namespace
    loaded = playbooks.get(request.playbook)
    if loaded is None:
        return f"names playbook {request.playbook!r}, which is not loaded"
    g = effective(loaded.model.spec.guardrails, defaults)
    closed = namespace_closed(g, namespace)  # the engine's own check (check_action)
    if closed is not None:
        return f"asks to act on {target}: {closed.reason}"
    if request.key != idempotency_key(request.playbook, target, request.incident, request.step):
        return f"carries key {request.key!r}, not the key of its own playbook, target, incident and step"
    spec = loaded.model.spec.target
    if target.kind != spec.kind or not (
        _renders_to(loaded.target_namespace, namespace) and _renders_to(loaded.target_name, target.name)
    ):
        return (
            f"asks to act on {target}, not a target of playbook {loaded.name} "
            f"({spec.kind}/{spec.namespace}/{spec.name})"
        )
    step = _step(loaded, request.step, restore=request.restore)
    if step is None:
        return f"names step {request.step!r}, not a step of playbook {loaded.name}"
    if step.action != request.action:
        return f"asks for {request.action} as {request.step} of playbook {loaded.name}: it has {step.action}"
    wrong = _params_differ(step.params.to_yaml_dict(), request.params.to_yaml_dict(), request.action)
    if wrong is not None:
        return f"asks for {request.action} with {wrong}, which playbook {loaded.name} does not give"
    wider = _wider(request.limits, g)
    if wider is not None:
        return f"asks for limits wider than playbook {loaded.name} allows ({wider})"
    if g.dry_run and not request.dry_run:
        return f"asks to write, while playbook {loaded.name} runs in dry run"
    return None


def _step(loaded: LoadedPlaybook, label: str, *, restore: bool) -> ActionStep | None:
    """The playbook's step a request's step label names (``actions[0]``, ``onFailure[1]``, or
    ``restore``: the first capacity step, put back), or None."""
    spec = loaded.model.spec
    if restore or label == "restore":
        if not (restore and label == "restore"):
            return None
        return next((s for s in spec.actions if action_class(s.params) is ActionClass.CAPACITY), None)
    m = _STEP.fullmatch(label)
    if m is None:
        return None
    steps: Sequence[ActionStep] = spec.actions if m["phase"] == "actions" else spec.on_failure
    index = int(m["index"])
    return steps[index] if index < len(steps) else None


def _renders_to(template: Template, value: str) -> bool:
    """Whether some values of its variables render ``template`` to ``value``: its literal text is
    where it is, each variable stands for any text. The literals are looked for left to right (the
    leftmost fit leaves the most room for the rest), so the time is linear in ``value``, whatever
    a forged value or the template's number of variables."""
    literals = list(template.parts[0::2])
    if len(template.parts) % 2 == 0:  # ends with a variable
        literals.append("")
    if len(literals) == 1:
        return value == literals[0]
    first, *middle, last = literals
    end = len(value) - len(last)
    if end < len(first) or not value.startswith(first) or not value.endswith(last):
        return False
    at = len(first)
    for literal in middle:
        found = value.find(literal, at, end)
        if found < 0:
            return False
        at = found + len(literal)
    return True


def _params_differ(given: Any, asked: Any, where: str) -> str | None:
    """The first parameter (``where``: its path) whose asked value the given one (a playbook step's,
    templates unrendered) cannot render to, as ``name = value``; None when every one fits."""
    if isinstance(given, str) and "{{" in given:
        try:
            template = parse_template(given, Scope.ACTION)
        except TemplateError:
            template = Template(given, (given,))
        if isinstance(asked, str) and _renders_to(template, asked):
            return None
        return f"{where} = {asked!r}"
    if isinstance(given, dict) and isinstance(asked, dict):
        for name in sorted(set(given) | set(asked)):
            wrong = _params_differ(given.get(name), asked.get(name), f"{where}.{name}")
            if wrong is not None:
                return wrong
        return None
    if isinstance(given, list) and isinstance(asked, list) and len(given) == len(asked):
        for i, (a, b) in enumerate(zip(given, asked, strict=True)):
            wrong = _params_differ(a, b, f"{where}[{i}]")
            if wrong is not None:
                return wrong
        return None
    return None if given == asked and type(given) is type(asked) else f"{where} = {asked!r}"


def _wider(asked: Limits, g: EffectiveGuardrails) -> str | None:
    """The first of ``asked``'s limits looser than the guardrails ``g`` give, in words; or None."""
    if (asked.min_replicas or 0) < g.min_replicas:
        return f"minReplicas {asked.min_replicas} < {g.min_replicas}"
    for name, mine, theirs in (
        ("maxReplicas", g.max_replicas, asked.max_replicas),
        ("maxStep", g.max_step, asked.max_step),
    ):
        if mine is not None and (theirs is None or theirs > mine):
            return f"{name} {'none' if theirs is None else theirs} > {mine}"
    if g.namespaces is not None and (asked.namespaces is None or not asked.namespaces <= g.namespaces):
        asked_text = "any" if asked.namespaces is None else ", ".join(sorted(asked.namespaces))
        return f"namespaces {asked_text} not within {', '.join(sorted(g.namespaces)) or 'none'}"
    return None
