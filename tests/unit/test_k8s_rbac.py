"""RBAC: one table in code (remediations/rbac.py), the action registry, and k8s/rbac.yaml agree.

The table says what each action calls; tests/e2e/test_k8s_rbac_audit.py checks it against the
calls the actions really make on the twin API server. Here: every registered action has an entry
(adding an action without its RBAC fails), the manifest is exactly what ``aiops rbac`` makes of
the shipped config and playbooks, and the rules hold no wildcard and no Secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

import pytest

from agent.config import load_config
from agent.playbook.loader import load_paths
from agent.playbook.models import TargetKind
from agent.rbac import required_access
from remediations import rbac
from remediations.kube import KINDS
from remediations.registry import ACTIONS
from tests.unit.test_k8s_support import K8S, ROOT, Obj, find, load_yaml_documents, render_kustomization


def table_problems(actions: Mapping[str, object], table: Mapping[str, object]) -> list[str]:
    """Actions without RBAC, and RBAC for actions that do not exist."""
    return [
        f"action {a!r} has no RBAC entry in remediations/rbac.py" for a in sorted(set(actions) - set(table))
    ] + [f"RBAC entry {a!r} is for no registered action" for a in sorted(set(table) - set(actions))]


def roles(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in {"Role", "ClusterRole"}]


def test_every_action_has_its_rbac_and_nothing_else_does() -> None:
    assert table_problems(ACTIONS, rbac.ACTION_PERMISSIONS) == []


def test_an_action_without_rbac_is_reported() -> None:
    with_new = {**ACTIONS, "drain_node": object()}
    assert table_problems(with_new, rbac.ACTION_PERMISSIONS) == [
        "action 'drain_node' has no RBAC entry in remediations/rbac.py"
    ]


def test_the_manifest_is_what_the_shipped_config_and_playbooks_need() -> None:
    access = required_access(
        load_config(K8S / "agent-config.yaml"), load_paths([ROOT / "playbooks"]), "aiops"
    )
    assert load_yaml_documents(K8S / "rbac.yaml") == rbac.manifests(access, "aiops"), (
        "k8s/rbac.yaml is stale: run .venv/bin/python k8s/sync.py"
    )
    rendered = render_kustomization(K8S)
    # the shipped config allows every namespace: the playbooks' rights are one ClusterRole
    assert find(rendered, "ClusterRole")["rules"] == rbac.rules(access.cluster)
    leases = find(rendered, "Role", "aiops-agent-leader-election")
    assert leases["rules"] == rbac.rules(rbac.LEADER_ELECTION_PERMISSIONS)
    # the shipped config keeps pending approvals as ConfigMaps in the agent's namespace
    assert access.approvals_namespace == "aiops"
    approvals = find(rendered, "Role", "aiops-agent-approvals")
    assert approvals["rules"] == rbac.rules(rbac.APPROVALS_PERMISSIONS)
    assert approvals["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["create", "delete", "get", "list", "update"],
        }
    ]


def test_rules_are_least_privilege() -> None:
    rendered = render_kustomization(K8S)
    assert roles(rendered), "no Role or ClusterRole rendered"
    for role in roles(rendered):
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, "no nonResourceURLs, no resourceNames"
            for field in ("apiGroups", "resources", "verbs"):
                assert not any("*" in value for value in rule[field]), (
                    f"wildcard in {role['metadata']['name']}"
                )
            assert "secrets" not in rule["resources"]
            assert set(rule["verbs"]) <= rbac.VERBS
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    # leases only in the agent's own namespace, never cluster-wide
    cluster = find(rendered, "ClusterRole")
    assert all("leases" not in rule["resources"] for rule in cluster["rules"])
    # and so are the approval ConfigMaps
    assert all("configmaps" not in rule["resources"] for rule in cluster["rules"])
    assert {r["metadata"]["namespace"] for r in rendered if r["kind"] == "Role"} == {"aiops"}


@pytest.mark.parametrize(
    ("group", "resource", "verbs"),
    [
        ("", "secrets", {"get"}),
        ("apps", "*", {"get"}),
        ("*", "pods", {"get"}),
        ("", "pods", {"*"}),
        ("", "pods", set()),
    ],
)
def test_the_table_refuses_wildcards_and_secrets(group: str, resource: str, verbs: set[str]) -> None:
    with pytest.raises(ValueError, match=r"verbs|no rule"):
        rbac.Permission(group, resource, frozenset(verbs))


def test_each_action_has_rights_for_exactly_the_kinds_it_acts_on() -> None:
    playbook_kinds = set(get_args(TargetKind))
    every = playbook_kinds.union(*(a.target_kinds for a in ACTIONS.values()))
    for name, action in ACTIONS.items():
        kinds = set(rbac.TARGET_PERMISSIONS[name])
        # notify acts on any kind: every kind a playbook may target or another action acts on
        assert kinds == (set(action.target_kinds) or every), name


def test_each_action_may_read_every_kind_it_targets_and_nothing_of_other_kinds() -> None:
    for name, by_kind in rbac.TARGET_PERMISSIONS.items():
        for kind in by_kind:
            group, resource = rbac.RESOURCES[kind]
            assert rbac.allowed(name, group, resource, "get", kind), (
                f"{name} cannot get the {kind} it targets"
            )
    # on a Deployment, restart touches no StatefulSet; on any kind, it does
    assert not rbac.allowed("restart", "apps", "statefulsets", "patch", "Deployment")
    assert rbac.allowed("restart", "apps", "statefulsets", "patch")
    with pytest.raises(ValueError, match="rollback does not act on a StatefulSet"):
        rbac.permissions("rollback", "StatefulSet")


def test_the_union_over_kinds_is_each_actions_whole_entry() -> None:
    for name, by_kind in rbac.TARGET_PERMISSIONS.items():
        assert rbac.grants(rbac.ACTION_PERMISSIONS[name]) == rbac.grants(
            p for ps in by_kind.values() for p in ps
        )


def test_resources_cover_the_kinds_the_client_knows() -> None:
    assert set(rbac.RESOURCES) == set(KINDS)
    for kind, (group, _) in rbac.RESOURCES.items():
        api_version = KINDS[kind].api_version
        assert (api_version.split("/")[0] if "/" in api_version else "") == group, kind


def test_rbac_yaml_says_it_is_generated() -> None:
    assert "Generated by k8s/sync.py" in (K8S / "rbac.yaml").read_text().splitlines()[0]


def test_the_executor_may_record_on_the_target_of_every_workload_changing_playbook() -> None:
    """Every shipped playbook that changes a workload gets patch on its target's kind (the record
    of each action, aiops.dev/actions), and the Lease Role may patch (the agent-wide record)."""
    rendered = load_yaml_documents(K8S / "rbac.yaml")
    cluster = find(rendered, "ClusterRole")
    patched = {r for rule in cluster["rules"] if "patch" in rule["verbs"] for r in rule["resources"]}
    assert {"deployments", "cronjobs"} <= patched, (
        "rollback/restart/scale on Deployments, retrain on CronJobs"
    )
    assert any(p.allows("coordination.k8s.io", "leases", "patch") for p in rbac.LEADER_ELECTION_PERMISSIONS)
