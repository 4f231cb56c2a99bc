"""The engine's check of a request read back from an approval record (agent.playbook.vetting)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agent.playbook.guardrails import GuardrailDefaults, effective
from agent.playbook.loader import load_sources
from agent.playbook.requests import Approval, Proposal
from agent.playbook.templating import Scope, parse_template
from agent.playbook.vetting import _renders_to, vet
from remediations.registry import make_request
from remediations.types import Target

PLAYBOOK = """
apiVersion: aiops/v1
kind: Playbook
metadata: {name: pb}
spec:
  trigger: {signal: anomaly, match: {namespace: ".+", deployment: ".+"}}
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "web-{{ labels.deployment }}"}
  actions:
    - scale: {by: 2}
  onFailure:
    - notify: {webhookEnv: OPS_WEBHOOK, message: "scaled {{ target.name }} (incident {{ incident.id }})"}
  guardrails: {maxReplicas: 6, namespaces: [shop, kube-system]}
"""
PLAYBOOKS = load_sources([("pb.yaml", PLAYBOOK)])


def proposal(
    defaults: GuardrailDefaults,
    namespace: str = "shop",
    name: str = "web-a",
    action: str = "scale",
    params: dict[str, Any] | None = None,
    step: str = "actions[0]",
) -> Proposal:
    loaded = PLAYBOOKS.get("pb")
    assert loaded is not None
    request = make_request(
        action,
        Target("Deployment", namespace, name),
        {"by": 2} if params is None else params,
        playbook="pb",
        incident="inc-1",
        step=step,
        limits=effective(loaded.model.spec.guardrails, defaults).limits(),
    )
    return Proposal(request, 0.0, Approval.REQUIRED)


def test_what_the_engine_would_propose_passes() -> None:
    defaults = GuardrailDefaults()
    assert vet(proposal(defaults), PLAYBOOKS, defaults) is None
    notify = {"webhookEnv": "OPS_WEBHOOK", "message": "scaled web-a (incident inc-1)"}
    assert (
        vet(proposal(defaults, action="notify", params=notify, step="onFailure[0]"), PLAYBOOKS, defaults)
        is None
    )


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        (
            {"namespace": "kube-system"},
            "asks to act on Deployment/kube-system/web-a: namespace 'kube-system' is protected",
        ),
        (
            {"namespace": "other"},
            "asks to act on Deployment/other/web-a: "
            "namespace 'other' is not in the allow-list (kube-system, shop)",
        ),
        ({"name": "api"}, "not a target of playbook pb (Deployment/{{ labels.namespace }}/web-{{ labels"),
        ({"params": {"by": 50}}, "asks for scale with scale.by = 50"),
        ({"action": "restart", "params": {}}, "asks for restart as actions[0] of playbook pb: it has scale"),
        ({"step": "actions[7]"}, "names step 'actions[7]', not a step of playbook pb"),
        (
            {
                "action": "notify",
                "params": {"webhookEnv": "AWS_SECRET", "message": "x"},
                "step": "onFailure[0]",
            },
            "asks for notify with notify.message = 'x'",
        ),
    ],
)
def test_what_the_engine_would_not_propose_is_named(changes: dict[str, Any], why: str) -> None:
    defaults = GuardrailDefaults()
    refused = vet(proposal(defaults, **changes), PLAYBOOKS, defaults)
    assert refused is not None
    assert why in refused


def test_the_agent_wide_guardrails_apply_and_unprotect_lifts_a_protected_namespace() -> None:
    narrow = GuardrailDefaults(namespaces=["kube-system"])
    assert vet(proposal(narrow), PLAYBOOKS, narrow) == (
        "asks to act on Deployment/shop/web-a: namespace 'shop' is not in the allow-list (kube-system)"
    )
    lifted = GuardrailDefaults(unprotect=["kube-system"])
    assert vet(proposal(lifted, namespace="kube-system"), PLAYBOOKS, lifted) is None
    dry = GuardrailDefaults(dry_run=True)
    assert vet(proposal(dry), PLAYBOOKS, dry) == "asks to write, while playbook pb runs in dry run"


def test_a_request_of_no_loaded_playbook_a_foreign_key_or_wider_limits_is_named() -> None:
    defaults = GuardrailDefaults()
    good = proposal(defaults)
    assert vet(good, load_sources([]), defaults) == "names playbook 'pb', which is not loaded"
    foreign = replace(good, request=replace(good.request, key="pb/Deployment/shop/web-b/inc-1/actions[0]"))
    assert "not the key of its own playbook" in str(vet(foreign, PLAYBOOKS, defaults))
    for limits, why in (
        (replace(good.request.limits, max_replicas=None), "maxReplicas none > 6"),
        (replace(good.request.limits, namespaces=None), "namespaces any not within kube-system, shop"),
        (replace(good.request.limits, min_replicas=0), "minReplicas 0 < 1"),
    ):
        wide = replace(good, request=replace(good.request, limits=limits))
        assert vet(wide, PLAYBOOKS, defaults) == f"asks for limits wider than playbook pb allows ({why})"


@pytest.mark.parametrize(
    ("source", "value", "fits"),
    [
        ("web", "web", True),
        ("web", "web2", False),
        ("{{ labels.a }}", "", True),
        ("web-{{ labels.a }}", "web-", True),
        ("web-{{ labels.a }}", "api-x", False),
        ("{{ labels.a }}-{{ labels.b }}.svc", "x-y-z.svc", True),
        ("{{ labels.a }}-{{ labels.b }}.svc", "x.svc", False),
        ("a{{ labels.a }}a", "a", False),  # the prefix and the suffix may not overlap
        ("a{{ labels.a }}a", "aa", True),
        ("{{ labels.a }}x{{ labels.b }}x{{ labels.c }}", "x" * 2 + "y", True),
    ],
)
def test_a_value_fits_a_template_where_its_literals_are(source: str, value: str, fits: bool) -> None:
    assert _renders_to(parse_template(source, Scope.ACTION), value) is fits


def test_many_variables_and_a_long_forged_value_cost_one_scan() -> None:
    """A backtracking match of eight wildcards against 200,000 characters that almost fit would
    not end; the literals are looked for left to right, once."""
    template = parse_template("".join(f"{{{{ labels.v{i} }}}}-" for i in range(8)) + "!", Scope.ACTION)
    assert not _renders_to(template, "-" * 200_000)
    assert _renders_to(template, "-" * 200_000 + "!")
