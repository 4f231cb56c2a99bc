"""k8s/: every manifest is valid for a pinned Kubernetes version, offline, and they fit together.

The core kinds are validated with kubernetes-validate against its bundled (strict) schemas of
Kubernetes :data:`KUBERNETES_VERSION`, with the network cut off so a schema can never be fetched.
ServiceMonitor and PrometheusRule are CRDs the core schemas do not have: they are validated against
the minimal schemas below, written from the Prometheus Operator's CRDs (monitoring.coreos.com/v1)
for the fields k8s/ uses, with unknown fields refused.

Everything is checked on the kustomize output (:func:`render_kustomization`, compared with
``kubectl kustomize`` in test_k8s_tools.py where kubectl exists), the way the cluster gets it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from agent.cli import _parser
from agent.config import AgentConfig, load_config
from agent.playbook.loader import load_sources
from tests.unit.test_k8s_support import K8S, ROOT, Obj, find, identity, render_kustomization

#: The Kubernetes version the manifests must be valid for (the oldest one supported).
KUBERNETES_VERSION = "1.33"
NAMESPACE = "aiops"
CONFIG_PATH = "/etc/aiops/config.yaml"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STRINGS,
        "annotations": _STRINGS,
    },
    "additionalProperties": False,
}
_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": _STRINGS, "matchExpressions": {"type": "array"}},
    "additionalProperties": False,
}

#: monitoring.coreos.com/v1 ServiceMonitor, the fields k8s/ may use.
SERVICE_MONITOR_SCHEMA: Obj = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                    "additionalProperties": False,
                },
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

#: monitoring.coreos.com/v1 PrometheusRule, the fields k8s/ may use.
PROMETHEUS_RULE_SCHEMA: Obj = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                                        "record": {"type": "string"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": _DURATION,
                                        "keep_firing_for": _DURATION,
                                        "labels": _STRINGS,
                                        "annotations": _STRINGS,
                                    },
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR_SCHEMA, "PrometheusRule": PROMETHEUS_RULE_SCHEMA}


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    return render_kustomization(K8S)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: any connection attempt fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access during an offline check: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def validate(obj: Obj) -> None:
    """Validate one object: the Kubernetes schemas (strict), or the CRD schemas above."""
    if obj["kind"] in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(CRD_SCHEMAS[obj["kind"]]).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def deployment(rendered: list[Obj]) -> Obj:
    return find(rendered, "Deployment", "aiops-agent")


def pod_spec(rendered: list[Obj]) -> Obj:
    spec: Obj = deployment(rendered)["spec"]["template"]["spec"]
    return spec


def container(rendered: list[Obj]) -> Obj:
    found: Obj = find_named(pod_spec(rendered)["containers"], "agent")
    return found


def find_named(items: list[Obj], name: str) -> Obj:
    matches = [i for i in items if i.get("name") == name]
    assert len(matches) == 1, f"{name}: {len(matches)} found"
    return matches[0]


def configmap_of_volume(rendered: list[Obj], volume: str) -> Obj:
    source = find_named(pod_spec(rendered)["volumes"], volume)["configMap"]["name"]
    return find(rendered, "ConfigMap", source)


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors here"
    return bool(selector["matchLabels"]) and selector["matchLabels"].items() <= labels.items()


def in_cluster_config(rendered: list[Obj], tmp_path: Path) -> AgentConfig:
    """The config the pods get, loaded by the real loader from the ConfigMap's data."""
    data = configmap_of_volume(rendered, "config")["data"]
    path = tmp_path / "config.yaml"
    path.write_text(data["config.yaml"])
    return load_config(path)


# ---------------------------------------------------------------- schemas, offline


def test_the_pinned_version_is_bundled_with_kubernetes_validate() -> None:
    assert any(v.startswith(KUBERNETES_VERSION + ".") for v in kubernetes_validate.utils.all_versions())


def test_every_rendered_object_validates_offline(rendered: list[Obj], offline: None) -> None:
    kinds = {o["kind"] for o in rendered}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "Role", "Deployment", "Service"} <= kinds
    assert {"PodDisruptionBudget", "NetworkPolicy", "ConfigMap", *CRD_KINDS} <= kinds
    for obj in rendered:
        try:
            validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(f"{identity(obj)}: {error}")


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        ("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(livenessProbes={})),
        ("Deployment", lambda o: o["spec"].update(replicas="two")),
        ("NetworkPolicy", lambda o: o["spec"]["egress"][0]["ports"][0].update(port=["53"])),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(interval="30 seconds")),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update(fro="5m")),
    ],
)
def test_validation_catches_a_broken_object(
    rendered: list[Obj], kind: str, break_it: Any, offline: None
) -> None:
    broken = json.loads(json.dumps(find(rendered, kind)))
    break_it(broken)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(broken)


def test_every_manifest_file_is_in_the_kustomization() -> None:
    resources = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "agent-config.yaml"}
    assert manifests <= resources
    assert "playbooks" in resources


def test_namespaced_objects_live_in_the_agents_namespace(rendered: list[Obj]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in rendered:
        namespace = identity(obj)[1]
        assert namespace == ("" if obj["kind"] in cluster_scoped else NAMESPACE), identity(obj)
    assert find(rendered, "Namespace")["metadata"]["name"] == NAMESPACE


# ---------------------------------------------------------------- the Deployment


def test_deployment_runs_two_replicas_with_leader_election_identity(rendered: list[Obj]) -> None:
    spec = deployment(rendered)["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    env = {e["name"]: e for e in container(rendered)["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    pdb = find(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"], spec["template"]["metadata"]["labels"])


def test_deployment_command_is_the_cli_with_the_mounted_config(rendered: list[Obj], tmp_path: Path) -> None:
    agent = container(rendered)
    argv = [*agent["command"], *agent["args"]]
    assert argv[0] == "aiops"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["aiops"] == "agent.cli:console"
    args: argparse.Namespace = _parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.config == Path(CONFIG_PATH)
    mount = next(m for m in agent["volumeMounts"] if m["mountPath"] == CONFIG_PATH)
    assert mount["readOnly"] is True
    assert mount["subPath"] in configmap_of_volume(rendered, mount["name"])["data"]
    config = in_cluster_config(rendered, tmp_path)
    assert config.kafka_source_enabled


def test_config_paths_and_ports_match_the_pod(rendered: list[Obj], tmp_path: Path) -> None:
    config = in_cluster_config(rendered, tmp_path)
    agent = container(rendered)
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(rendered)["volumes"]}
    # playbooks: the directory is the mount of the playbooks ConfigMap, as a directory (no subPath)
    books = mounts[str(config.playbooks.directory)]
    assert "subPath" not in books
    assert books["readOnly"] is True
    assert volumes[books["name"]]["configMap"]["name"] == "aiops-playbooks"
    # the status file and the caches live on the /tmp emptyDir, the one writable path
    tmp = mounts["/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    assert config.playbooks.status_file.parent == Path(tmp["mountPath"])
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env.get("HOME", "/tmp").startswith("/tmp")
    # the HTTP port: container port, probes, Service, ServiceMonitor, NetworkPolicy ingress
    port = find_named(agent["ports"], "http")
    assert port["containerPort"] == config.http.port == 8080
    assert config.http.host == "0.0.0.0"
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert agent["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # SIGTERM: the agent's clean shutdown bound fits in the grace period
    assert pod_spec(rendered)["terminationGracePeriodSeconds"] > config.engine.shutdown_timeout
    # liveness must not kill a loop before the agent itself calls it stalled
    probe = agent["livenessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= config.engine.stall_after


def test_the_shipped_config_starts_in_dry_run(rendered: list[Obj], tmp_path: Path) -> None:
    guardrails = in_cluster_config(rendered, tmp_path).playbooks.guardrails
    assert guardrails.dry_run is True


def test_pod_is_locked_down(rendered: list[Obj]) -> None:
    """The restricted Pod Security Standard, and the rest the brief asks."""
    pod = pod_spec(rendered)
    agent = container(rendered)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = agent["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx.get("privileged", False) is False
    assert ctx["runAsUser"] == pod["securityContext"]["runAsUser"]
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), host
    assert all("hostPath" not in v for v in pod["volumes"])
    labels = find(rendered, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    resources = agent["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert agent["imagePullPolicy"] == "IfNotPresent"


def test_the_image_is_the_projects_version(rendered: list[Obj]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container(rendered)["image"].endswith(f"aiops-agent:{version}")


def test_the_service_account_is_the_one_bound(rendered: list[Obj]) -> None:
    account = pod_spec(rendered)["serviceAccountName"]
    find(rendered, "ServiceAccount", account)
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for binding in (o for o in rendered if o["kind"] == kind):
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
            ]
            find(rendered, binding["roleRef"]["kind"], binding["roleRef"]["name"])


# ---------------------------------------------------------------- Service, monitoring, network


def test_service_and_service_monitor_reach_the_pods(rendered: list[Obj]) -> None:
    labels = deployment(rendered)["spec"]["template"]["metadata"]["labels"]
    service = find(rendered, "Service", "aiops-agent")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True
    port = find_named(service["spec"]["ports"], "http")
    assert port["targetPort"] == "http"
    monitor = find(rendered, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # no jobLabel: the job label is the Service's name, which the alerts select on
    assert "jobLabel" not in monitor["spec"]
    for group in find(rendered, "PrometheusRule")["spec"]["groups"]:
        for rule in group["rules"]:
            assert f'job="{service["metadata"]["name"]}"' in rule["expr"], rule["alert"]


def _port_of(url_or_host: str, default: int) -> int:
    split = urlsplit(url_or_host if "//" in url_or_host else f"//{url_or_host}")
    return split.port or default


#: Addresses the agent must never reach through an ipBlock rule other than the API server's: the
#: private ranges (pods, services, nodes), carrier-grade NAT, link-local (the cloud metadata
#: service) and loopback.
INTERNAL = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
    )
)


def _ip_peers(policy: Obj) -> list[tuple[Obj, set[tuple[str, int]]]]:
    """Each ipBlock of the egress rules, with the (protocol, port)s its rule allows."""
    return [
        (peer["ipBlock"], {(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]})
        for rule in policy["spec"]["egress"]
        for peer in rule["to"]
        if "ipBlock" in peer
    ]


def egress_allows(policy: Obj, address: str, port: int, protocol: str = "TCP") -> bool:
    """Whether an ipBlock rule of ``policy`` lets the pods reach ``address:port``."""
    ip = ipaddress.ip_address(address)
    for block, ports in _ip_peers(policy):
        inside = ip in ipaddress.ip_network(block["cidr"])
        excepted = any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
        if inside and not excepted and (protocol, port) in ports:
            return True
    return False


def test_network_policy_allows_only_dns_api_kafka_prometheus_and_webhooks(
    rendered: list[Obj], tmp_path: Path
) -> None:
    policy = find(rendered, "NetworkPolicy")
    labels = deployment(rendered)["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"], labels)
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    config = in_cluster_config(rendered, tmp_path)
    assert config.sources.prometheus is not None
    kafka_ports = {_port_of(s, 9092) for s in config.kafka.bootstrap_servers}
    prometheus_port = _port_of(config.sources.prometheus.url, 80)
    allowed: dict[str, set[tuple[str, int]]] = {}
    for rule in policy["spec"]["egress"]:
        assert rule.get("to"), "an egress rule without `to` allows every destination"
        assert rule.get("ports"), "an egress rule without `ports` allows every port"
        ports = {(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]}
        for peer in rule["to"]:
            if "ipBlock" in peer:
                block = peer["ipBlock"]
                key = f"ip:{block['cidr']}" + "".join(f" -{e}" for e in block.get("except", []))
            else:
                key = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            allowed.setdefault(key, set()).update(ports)
    api = {("TCP", 443), ("TCP", 6443)}
    assert allowed == {
        "kube-system": {("UDP", 53), ("TCP", 53)},  # DNS
        # the API server's ports, on the private ranges until narrowed to its endpoints
        "ip:10.0.0.0/8": api,
        "ip:172.16.0.0/12": api,
        "ip:192.168.0.0/16": api,
        "kafka": {("TCP", port) for port in kafka_ports},
        "monitoring": {("TCP", prometheus_port)},
        # notify webhooks: HTTPS to public addresses only
        "ip:0.0.0.0/0" + "".join(f" -{n}" for n in INTERNAL): {("TCP", 443)},
    }
    for rule in policy["spec"]["ingress"]:
        assert [p["port"] for p in rule["ports"]] == ["http"]


def test_egress_by_address_reaches_the_api_server_and_public_https_only(rendered: list[Obj]) -> None:
    policy = find(rendered, "NetworkPolicy")
    for block, ports in _ip_peers(policy):
        network = ipaddress.IPv4Network(block["cidr"])  # IPv4 only: the shipped policy has no IPv6 rule
        if ports == {("TCP", 443), ("TCP", 6443)}:  # the API server's rule: private addresses only
            assert network.is_private, block
            assert "except" not in block, block
        else:  # any other: no way into the cluster's or the node's networks
            assert ports == {("TCP", 443)}, block
            excepted = [ipaddress.IPv4Network(e) for e in block.get("except", [])]
            for internal in INTERNAL:
                assert not network.overlaps(internal) or any(internal.subnet_of(e) for e in excepted), (
                    f"{block['cidr']} reaches {internal}"
                )
    # worked examples: the API server on kind (6443) and EKS (443), a webhook, the metadata service
    assert egress_allows(policy, "172.18.0.2", 6443)
    assert egress_allows(policy, "10.0.12.7", 443)
    assert egress_allows(policy, "203.0.113.9", 443)
    assert not egress_allows(policy, "203.0.113.9", 6443)
    assert not egress_allows(policy, "203.0.113.9", 80)
    assert not egress_allows(policy, "169.254.169.254", 80)
    assert not egress_allows(policy, "169.254.169.254", 443)
    assert not egress_allows(policy, "100.64.0.10", 443)
    assert not egress_allows(policy, "10.0.12.7", 5432)
    assert not egress_allows(policy, "127.0.0.1", 443)


def test_dashboard_is_shipped_as_a_grafana_configmap(rendered: list[Obj]) -> None:
    configmap = find(rendered, "ConfigMap", "aiops-agent-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    text = (K8S / "dashboards" / "aiops-agent.json").read_text()
    assert configmap["data"] == {"aiops-agent.json": text}
    dashboard = json.loads(text)
    assert dashboard["uid"] == "aiops-agent"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        covered = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] != "row":
            assert panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"]
            assert all(t["expr"] for t in panel["targets"])


# ---------------------------------------------------------------- the ConfigMaps from playbooks/


def test_playbooks_configmap_is_the_shipped_playbooks(rendered: list[Obj]) -> None:
    data = configmap_of_volume(rendered, "playbooks")["data"]
    shipped = {
        p.name: p.read_text() for p in sorted((ROOT / "playbooks").iterdir()) if p.suffix in {".yaml", ".yml"}
    }
    assert data == shipped, "k8s/playbooks is stale: run .venv/bin/python k8s/sync.py"
    loaded = load_sources(sorted(data.items()))
    assert len(loaded.playbooks) == len(shipped)
    assert sum(len(v.encode()) for v in data.values()) < 1024 * 1024  # a ConfigMap's size limit


def test_sync_script_reports_no_drift() -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "sync.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"run .venv/bin/python k8s/sync.py:\n{result.stdout}{result.stderr}"
