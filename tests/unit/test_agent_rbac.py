"""``aiops rbac``: the rights the loaded playbooks and the config need, where they need them.

Expected rules are written out by hand from the table in remediations/rbac.py; the e2e audit
(tests/e2e/test_k8s_rbac_audit.py) checks that table against the calls the actions really make.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from agent.cli import main
from agent.config import AgentConfig, ConfigError, load_config
from agent.playbook.loader import LoadedPlaybook, load_sources
from agent.rbac import required_access
from remediations import rbac
from tests.unit.test_k8s_manifests import KUBERNETES_VERSION

Obj = dict[str, Any]


def playbook(
    name: str,
    steps: str,
    *,
    kind: str = "Deployment",
    namespace: str = "{{ labels.namespace }}",
    extra: str = "",
) -> str:
    """One playbook document: ``steps`` is the YAML list under ``actions``."""
    return textwrap.dedent(
        f"""\
        apiVersion: aiops/v1
        kind: Playbook
        metadata: {{name: {name}}}
        spec:
          trigger: {{signal: anomaly, metric: latency}}
          target: {{kind: {kind}, namespace: "{namespace}", name: "{{{{ labels.deployment }}}}"}}
          actions: {steps}
        """
    ) + textwrap.indent(textwrap.dedent(extra), "  ")


def load(*docs: str) -> tuple[LoadedPlaybook, ...]:
    return load_sources([("playbooks.yaml", "---\n".join(docs))]).playbooks


def config(**guardrails: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {"executor": {"enabled": True}, "playbooks": {"guardrails": guardrails}}
    )


def generate(cfg: AgentConfig, *docs: str) -> list[Obj]:
    return rbac.manifests(required_access(cfg, load(*docs), "aiops"), "aiops")


def kinds(objects: list[Obj]) -> list[tuple[str, str, str]]:
    return [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects]


def rules_of(objects: list[Obj], kind: str, namespace: str = "") -> list[dict[str, list[str]]]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"].get("namespace", "") == namespace]
    assert len(found) == 1, kinds(objects)
    rules: list[dict[str, list[str]]] = found[0]["rules"]
    return rules


def granted(rules: list[dict[str, list[str]]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


LEASE = [
    ("Role", "aiops", "aiops-agent-leader-election"),
    ("RoleBinding", "aiops", "aiops-agent-leader-election"),
]

SCALE = playbook("scale-out", "[{scale: {by: 2}}]")
ROLLBACK = playbook("roll-back", "[{rollback: {}}]")


def test_a_scale_only_set_gets_what_scaling_needs_and_nothing_else() -> None:
    objects = generate(config(), SCALE)
    assert kinds(objects) == [
        ("ClusterRole", "", "aiops-agent"),
        ("ClusterRoleBinding", "", "aiops-agent"),
        *LEASE,
    ]
    assert rules_of(objects, "ClusterRole") == [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "get"]},
        # the target is a Deployment: nothing on StatefulSets
        {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "patch"]},
        {
            "apiGroups": ["autoscaling"],
            "resources": ["horizontalpodautoscalers"],
            "verbs": ["get", "list", "patch"],
        },
    ]
    everything = granted(rules_of(objects, "ClusterRole"))
    assert not {r for _, r, _ in everything} & {"pods", "replicasets", "daemonsets", "jobs", "cronjobs"}
    assert not any(verb == "delete" for _, _, verb in everything)
    assert {(g, r) for g, r, verb in everything if verb == "create"} == {("", "events")}


def test_rollback_and_pod_deletion_add_their_verbs_only_when_a_playbook_uses_them() -> None:
    scale = granted(rules_of(generate(config(), SCALE), "ClusterRole"))
    both = granted(
        rules_of(generate(config(), SCALE, ROLLBACK, playbook("kill", "[{delete_pod: {}}]")), "ClusterRole")
    )
    assert both - scale == {
        ("apps", "replicasets", "list"),  # rollback: the history; delete_pod: the pods of a Deployment
        ("", "pods", "list"),
        ("", "pods", "delete"),
    }


def test_the_rights_follow_the_targets_kind() -> None:
    on_statefulsets = playbook("scale-db", "[{scale: {by: 1}}]", kind="StatefulSet")
    rights = granted(rules_of(generate(config(), on_statefulsets), "ClusterRole"))
    assert {r for _, r, _ in rights} == {
        "events",
        "statefulsets",
        "statefulsets/scale",
        "horizontalpodautoscalers",
    }
    # a Pod target: the pod, and its controller, whichever workload that is
    pods = playbook("kill", "[{delete_pod: {}}]", kind="Pod", extra="")
    rights = granted(rules_of(generate(config(), pods), "ClusterRole"))
    assert {(r, v) for _, r, v in rights if r == "pods"} == {("pods", "get"), ("pods", "delete")}
    assert {r for _, r, v in rights if v == "patch"} == {
        "deployments",
        "statefulsets",
        "replicasets",
        "daemonsets",
    }


def test_a_namespace_allow_list_gives_roles_there_and_no_cluster_role() -> None:
    objects = generate(config(namespaces=["a", "b"]), SCALE, ROLLBACK)
    assert kinds(objects) == [
        ("Role", "a", "aiops-agent"),
        ("RoleBinding", "a", "aiops-agent"),
        ("Role", "b", "aiops-agent"),
        ("RoleBinding", "b", "aiops-agent"),
        *LEASE,
    ]
    assert rules_of(objects, "Role", "a") == rules_of(objects, "Role", "b")
    assert ("apps", "replicasets", "list") in granted(rules_of(objects, "Role", "a"))
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "aiops-agent", "namespace": "aiops"}
        ]
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]


def test_protected_namespaces_get_no_role_unless_the_config_lifts_them() -> None:
    # the agent's own namespace is protected like kube-system
    held = generate(config(namespaces=["a", "kube-system", "aiops"]), SCALE)
    assert [(k, ns) for k, ns, _ in kinds(held) if k == "Role"] == [("Role", "a"), ("Role", "aiops")]
    assert [
        o["metadata"]["name"] for o in held if o["kind"] == "Role" and o["metadata"]["namespace"] == "aiops"
    ] == ["aiops-agent-leader-election"]
    lifted = generate(config(namespaces=["a", "kube-system"], unprotect=["kube-system"]), SCALE)
    assert ("Role", "kube-system", "aiops-agent") in kinds(lifted)


def test_each_namespace_gets_only_the_playbooks_that_may_act_there() -> None:
    rollback_in_a = playbook("roll-back", "[{rollback: {}}]", extra="guardrails: {namespaces: [a]}\n")
    objects = generate(config(namespaces=["a", "b"]), SCALE, rollback_in_a)
    only_a = granted(rules_of(objects, "Role", "a")) - granted(rules_of(objects, "Role", "b"))
    assert only_a == {("apps", "replicasets", "list")}


def test_a_literal_target_namespace_needs_no_cluster_role() -> None:
    pinned = playbook("pinned", "[{rollback: {}}]", namespace="shop")
    assert [(k, ns) for k, ns, _ in kinds(generate(config(), pinned))] == [
        ("Role", "shop"),
        ("RoleBinding", "shop"),
        ("Role", "aiops"),
        ("RoleBinding", "aiops"),
    ]
    # outside the allow-list, or protected: it never acts, so it gets nothing
    assert kinds(generate(config(namespaces=["a"]), pinned)) == LEASE
    assert kinds(generate(config(), playbook("sys", "[{rollback: {}}]", namespace="kube-system"))) == LEASE


def test_a_role_does_not_repeat_what_the_cluster_role_grants() -> None:
    pinned = playbook("pinned", "[{rollback: {}}]", namespace="shop")
    objects = generate(config(), SCALE, pinned)
    # rollback's get and patch on deployments come with scaling, everywhere
    assert rules_of(objects, "Role", "shop") == [
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]}
    ]


def test_conditions_and_gitops_annotations_add_their_reads_and_writes() -> None:
    restart = playbook("restart", "[{restart: {}}]", extra="when: [{rolloutWithin: 30m}]\n")
    history = granted(rules_of(generate(config(), restart), "ClusterRole"))
    assert ("apps", "replicasets", "list") in history  # the rollout history behind rolloutWithin
    retrain = playbook("retrain", "[{retrain: {}}]", kind="CronJob")
    plain = granted(rules_of(generate(config(), retrain), "ClusterRole"))
    annotating = AgentConfig.model_validate({"executor": {"enabled": True, "gitops": "annotate"}})
    assert granted(rules_of(generate(annotating, retrain), "ClusterRole")) - plain == {
        ("batch", "cronjobs", "patch")
    }
    # a notification changes nothing, so nothing is annotated
    notify = playbook("tell", "[{notify: {webhook: 'https://hooks.example.com/x', message: m}}]")
    assert granted(rules_of(generate(annotating, notify), "ClusterRole")) == granted(
        rules_of(generate(config(), notify), "ClusterRole")
    )


def test_without_the_executor_nothing_and_without_election_no_lease() -> None:
    assert generate(AgentConfig(), SCALE) == []
    no_election = AgentConfig.model_validate({"executor": {"enabled": True, "leader_election": False}})
    assert [k for k, _, _ in kinds(generate(no_election, SCALE))] == ["ClusterRole", "ClusterRoleBinding"]
    elsewhere = AgentConfig.model_validate({"executor": {"enabled": True, "lease_namespace": "ops"}})
    assert ("Role", "ops", "aiops-agent-leader-election") in kinds(generate(elsewhere, SCALE))


def test_a_namespace_that_is_not_a_name_is_refused_where_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("playbooks:\n  guardrails:\n    namespaces: [shop, Bad_NS]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (error,) = caught.value.errors
    assert error.location.line == 3
    assert "'Bad_NS' is not a valid Kubernetes name" in error.message
    with pytest.raises(ValueError, match="namespace 'x y' is not a valid"):
        rbac.Access(namespaces={"x y": rbac.AGENT_PERMISSIONS})


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_command_prints_valid_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(
        tmp_path, "executor: {enabled: true}\nplaybooks: {guardrails: {namespaces: [a, b]}}\n", "c.yaml"
    )
    books = tmp_path / "books"
    books.mkdir()
    write(books, SCALE, "scale.yaml")
    assert main(["rbac", "--config", str(cfg), "--playbooks", str(books), "--namespace", "ops"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Generated by `aiops rbac`")
    objects = [d for d in yaml.safe_load_all(out) if d is not None]
    assert objects == rbac.manifests(
        required_access(config(namespaces=["a", "b"]), load(SCALE), "ops"), "ops"
    )
    assert [(k, ns) for k, ns, _ in kinds(objects)] == [
        ("Role", "a"),
        ("RoleBinding", "a"),
        ("Role", "b"),
        ("RoleBinding", "b"),
        ("Role", "ops"),
        ("RoleBinding", "ops"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_command_reads_the_configs_playbook_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    write(books, ROLLBACK, "rollback.yaml")
    cfg = write(tmp_path, f"executor: {{enabled: true}}\nplaybooks: {{directory: {books}}}\n", "c.yaml")
    assert main(["rbac", "--config", str(cfg)]) == 0
    objects = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d is not None]
    assert ("apps", "replicasets", "list") in granted(rules_of(objects, "ClusterRole"))


def test_the_command_reports_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, "executor: {enabled: true}\n", "c.yaml")
    books = tmp_path / "books"
    books.mkdir()
    good = write(books, SCALE, "scale.yaml")
    bad = write(tmp_path, SCALE.replace("scale: {by: 2}", "scale: {by: two}"), "bad.yaml")
    assert main(["rbac", "--config", str(cfg), "--playbooks", str(bad)]) == 2
    assert f"{bad}:" in capsys.readouterr().err
    assert main(["rbac", "--config", str(cfg), "--playbooks", str(tmp_path / "missing")]) == 2
    assert "file not found" in capsys.readouterr().err
    elsewhere = write(
        tmp_path, f"executor: {{enabled: true}}\nplaybooks: {{directory: {tmp_path / 'nope'}}}\n", "e.yaml"
    )
    assert main(["rbac", "--config", str(elsewhere)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'nope'}:0:0: file not found",
        "(the config's playbooks.directory; --playbooks reads others)",
    ]
    assert main(["rbac", "--config", str(cfg), "--playbooks", str(good), "--namespace", "Not_A_Name"]) == 2
    assert "'Not_A_Name' is not a valid Kubernetes name" in capsys.readouterr().err
    off = write(tmp_path, "executor: {enabled: false}\n", "off.yaml")
    assert main(["rbac", "--config", str(off), "--playbooks", str(good)]) == 0
    out = capsys.readouterr().out
    assert "no rights" in out
    assert [d for d in yaml.safe_load_all(out) if d is not None] == []
