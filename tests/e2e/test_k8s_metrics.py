"""The alerts and the dashboard ask only for metrics a running agent exports.

A real ``aiops run`` starts with the in-cluster config exactly as the ConfigMap carries it and
the playbooks ConfigMap as its directory, only re-pointed at this machine: Kafka and Prometheus at
closed local ports (both sources come up, retry, and report not ready) and the status file in a
temporary directory. Its ``/metrics`` is the list of known names; every metric name in every
PrometheusRule expression and every dashboard query must be on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.daemon import Daemon
from tests.servers.common import free_port
from tests.unit.test_k8s_support import (
    K8S,
    exported_metric_names,
    find,
    grafana_query_metric_names,
    promql_metric_names,
    render_kustomization,
)

pytestmark = pytest.mark.e2e

#: Metrics the alerts and the dashboard may use before the agent exports them: known by name and
#: type only. Empty: every metric the rules and the dashboard use must be in a real scrape.
PENDING_METRICS: dict[str, str] = {}


def _rule_exprs() -> dict[str, str]:
    rule = find(render_kustomization(K8S), "PrometheusRule")
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}


def _dashboard_queries() -> dict[str, str]:
    dashboard = json.loads((K8S / "dashboards" / "aiops-agent.json").read_text())
    queries = {
        f"{p['title']}/{t['refId']}": t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
    }
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            queries[f"${var['name']}"] = var["query"]["query"]
    return queries


def _in_cluster_config(tmp: Path) -> dict[str, Any]:
    """The ConfigMap's config, with the playbooks ConfigMap written out as the pod would see it."""
    rendered = render_kustomization(K8S)
    pod = find(rendered, "Deployment", "aiops-agent")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    config: dict[str, Any] = yaml.safe_load(
        find(rendered, "ConfigMap", volume["configMap"]["name"])["data"]["config.yaml"]
    )
    books = tmp / "playbooks"
    books.mkdir()
    for name, text in find(rendered, "ConfigMap", "aiops-playbooks")["data"].items():
        (books / name).write_text(text)
    closed = free_port()
    config["kafka"]["bootstrap_servers"] = [f"127.0.0.1:{closed}"]
    config["kafka"]["request_timeout"] = "2s"
    config["sources"]["prometheus"]["url"] = f"http://127.0.0.1:{closed}"
    config["executor"]["enabled"] = False  # no cluster here: the executor's metrics exist regardless
    config["playbooks"]["directory"] = str(books)
    config["playbooks"]["status_file"] = str(tmp / "status.json")
    return config


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("k8s-agent")
    with Daemon(tmp, _in_cluster_config(tmp)) as daemon:
        daemon.wait_http("/healthz", 200)
        status, why = daemon.get("/readyz")
        assert status == 503, f"sources at closed ports cannot be ready: {status} {why}"
        text = daemon.wait_http("/metrics", 200)
        daemon.terminate()
    names = exported_metric_names(text)
    assert names.get("aiops_playbooks_loaded") == "gauge"
    assert "aiops_playbooks_loaded 7.0" in text, "the shipped playbooks load in the agent"
    return names


def _unknown(queries: dict[str, str], exported: dict[str, str], grafana: bool) -> list[str]:
    known = set(exported) | set(PENDING_METRICS)
    problems = []
    for where, query in queries.items():
        names = grafana_query_metric_names(query) if grafana else promql_metric_names(query)
        assert names, f"{where} selects no metric: {query}"
        problems += [f"{where}: {name}" for name in sorted(names - known)]
    return problems


def test_alert_expressions_use_only_exported_metrics(exported: dict[str, str]) -> None:
    exprs = _rule_exprs()
    required = {
        "AiopsAgentNoLeader",
        "AiopsAgentDeadLetters",
        "AiopsAgentConsumerLag",
        "AiopsAgentLoopStalled",
        "AiopsAgentActionsFailing",
    }
    assert required <= set(exprs)
    assert _unknown(exprs, exported, grafana=False) == []


def test_dashboard_queries_use_only_exported_metrics(exported: dict[str, str]) -> None:
    assert _unknown(_dashboard_queries(), exported, grafana=True) == []


def test_executor_metrics_have_the_types_the_rules_expect(exported: dict[str, str]) -> None:
    assert exported.get("aiops_leader") == "gauge"
    assert exported.get("aiops_actions_total") == "counter"


def test_a_misspelled_metric_is_caught(exported: dict[str, str]) -> None:
    """The check can fail: a name the agent does not export is reported."""
    queries = {"typo": "rate(aiops_dead_letered_total[5m])", "ok": "aiops_series_active"}
    assert _unknown(queries, exported, grafana=False) == ["typo: aiops_dead_letered_total"]
