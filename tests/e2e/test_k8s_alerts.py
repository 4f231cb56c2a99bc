"""The agent's alerts behave: promtool checks the PromQL and runs each alert on made-up series.

``promtool check rules`` parses every expression of the PrometheusRule (and of the dashboard,
as recording rules); ``promtool test rules`` evaluates each alert on series where it must fire and
on series where it must not. promtool is Debian's ``prometheus`` package, as for the integration
tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers.common import unavailable
from tests.unit.test_k8s_support import K8S, find, render_kustomization

pytestmark = pytest.mark.e2e

JOB = 'job="aiops-agent", namespace="aiops"'
PARTITION = 'topic="aiops.metrics", partition="0"'


@dataclass(frozen=True)
class Case:
    """Series, and whether (with which labels and value) an alert fires at ``at``."""

    alert: str
    series: dict[str, str]
    fires: dict[str, str] | None = None
    value: str = ""
    at: str = "20m"
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("AiopsAgentDown", {"aiops_series_active": "1x30"}, {"job": "aiops-agent"}),
    Case("AiopsAgentDown", {f'aiops_loop_last_turn_timestamp_seconds{{{JOB}, pod="a"}}': "0+60x30"}),
    Case(
        "AiopsAgentNoLeader",
        {f'aiops_leader{{{JOB}, pod="a"}}': "0x30", f'aiops_leader{{{JOB}, pod="b"}}': "0x30"},
        {"namespace": "aiops"},
    ),
    Case(
        "AiopsAgentNoLeader",
        {f'aiops_leader{{{JOB}, pod="a"}}': "1x30", f'aiops_leader{{{JOB}, pod="b"}}': "0x30"},
    ),
    Case(
        "AiopsAgentSplitBrain",
        {f'aiops_leader{{{JOB}, pod="a"}}': "1x30", f'aiops_leader{{{JOB}, pod="b"}}': "1x30"},
        {"namespace": "aiops"},
        value="2",
    ),
    Case(
        # the holder died and no replica took the Lease over: nobody polls
        "AiopsAgentPrometheusNotPolled",
        {
            f'aiops_prometheus_source_active{{{JOB}, pod="a"}}': "1x5",
            f'aiops_prometheus_source_active{{{JOB}, pod="b"}}': "0x30",
            f'aiops_source_ready{{{JOB}, pod="b", source="prometheus"}}': "0x30",
        },
        {"namespace": "aiops"},
        value="0",
    ),
    Case(
        # the standby took over within a minute
        "AiopsAgentPrometheusNotPolled",
        {
            f'aiops_prometheus_source_active{{{JOB}, pod="a"}}': "1x5",
            f'aiops_prometheus_source_active{{{JOB}, pod="b"}}': "0x6 1x24",
            f'aiops_source_ready{{{JOB}, pod="b", source="prometheus"}}': "0x6 1x24",
        },
    ),
    Case(
        # no Prometheus source configured: the gauge is 0 everywhere and means nothing
        "AiopsAgentPrometheusNotPolled",
        {
            f'aiops_prometheus_source_active{{{JOB}, pod="a"}}': "0x30",
            f'aiops_source_ready{{{JOB}, pod="a", source="kafka"}}': "1x30",
        },
    ),
    Case(
        "AiopsAgentLoopStalled",
        {f'aiops_loop_last_turn_timestamp_seconds{{{JOB}, pod="a"}}': "0x30"},
        {"job": "aiops-agent", "namespace": "aiops", "pod": "a"},
    ),
    Case("AiopsAgentLoopStalled", {f'aiops_loop_last_turn_timestamp_seconds{{{JOB}, pod="a"}}': "0+60x30"}),
    Case(
        "AiopsAgentActionsFailing",
        {f'aiops_actions_total{{{JOB}, pod="a", action="scale", outcome="failed"}}': "0x15 1x15"},
        {"namespace": "aiops", "action": "scale"},
    ),
    Case(
        "AiopsAgentActionsFailing",
        {
            f'aiops_actions_total{{{JOB}, pod="a", action="scale", outcome="executed"}}': "0+1x30",
            f'aiops_actions_total{{{JOB}, pod="a", action="scale", outcome="failed"}}': "0x30",
        },
    ),
    Case(
        "AiopsAgentDeadLetters",
        {f'aiops_dead_lettered_total{{{JOB}, pod="a", source="kafka", reason="json"}}': "0+12x30"},
        {"namespace": "aiops", "source": "kafka", "reason": "json"},
    ),
    Case(
        "AiopsAgentDeadLetters",
        {f'aiops_dead_lettered_total{{{JOB}, pod="a", source="kafka", reason="json"}}': "0+3x30"},
    ),
    Case(
        "AiopsAgentConsumerLag",
        {
            # both replicas report partition 0 (one of them stale after a rebalance): counted once
            f'aiops_consumer_lag_messages{{{JOB}, pod="{pod}", {PARTITION}}}': "150000x30"
            for pod in ("a", "b")
        },
        {"namespace": "aiops", "topic": "aiops.metrics"},
        value="150000",
    ),
    Case(
        "AiopsAgentConsumerLag",
        {f'aiops_consumer_lag_messages{{{JOB}, pod="a", {PARTITION}}}': "60000x30"},
    ),
    Case(
        "AiopsAgentSourceNotReady",
        {f'aiops_source_ready{{{JOB}, pod="a", source="kafka"}}': "0x30"},
        {"namespace": "aiops", "source": "kafka"},
    ),
    Case(
        "AiopsAgentSourceNotReady",
        {
            f'aiops_source_ready{{{JOB}, pod="a", source="kafka"}}': "0x30",
            f'aiops_source_ready{{{JOB}, pod="b", source="kafka"}}': "1x30",
        },
    ),
    Case(
        "AiopsAgentKafkaPartitionStuck",
        {f'aiops_kafka_partition_stuck{{{JOB}, pod="a", {PARTITION}}}': "0x5 1x25"},
        {"namespace": "aiops", "topic": "aiops.metrics", "partition": "0"},
    ),
    Case(
        # stuck for a minute, then the poison message was dead-lettered: no alert
        "AiopsAgentKafkaPartitionStuck",
        {f'aiops_kafka_partition_stuck{{{JOB}, pod="a", {PARTITION}}}': "0x17 1 0x12"},
    ),
    Case(
        # one replica died and the other did not take its partitions over
        "AiopsAgentKafkaPartitionUnowned",
        {
            f'aiops_kafka_topic_partitions{{{JOB}, pod="b", topic="aiops.metrics"}}': "6x30",
            f'aiops_kafka_partitions_owned{{{JOB}, pod="a", topic="aiops.metrics"}}': "3x5",
            f'aiops_kafka_partitions_owned{{{JOB}, pod="b", topic="aiops.metrics"}}': "3x30",
        },
        {"namespace": "aiops", "topic": "aiops.metrics"},
        value="6",
    ),
    Case(
        # the survivor took them over within two minutes
        "AiopsAgentKafkaPartitionUnowned",
        {
            f'aiops_kafka_topic_partitions{{{JOB}, pod="b", topic="aiops.metrics"}}': "6x30",
            f'aiops_kafka_partitions_owned{{{JOB}, pod="a", topic="aiops.metrics"}}': "3x5",
            f'aiops_kafka_partitions_owned{{{JOB}, pod="b", topic="aiops.metrics"}}': "3x6 6x24",
        },
    ),
    Case(
        "AiopsAgentCheckpointStale",
        {f'aiops_state_checkpoint_timestamp_seconds{{{JOB}, pod="a", {PARTITION}}}': "0+60x3 180x27"},
        {"namespace": "aiops", "topic": "aiops.metrics", "partition": "0"},
    ),
    Case(
        # written or found current every minute
        "AiopsAgentCheckpointStale",
        {f'aiops_state_checkpoint_timestamp_seconds{{{JOB}, pod="a", {PARTITION}}}': "0+60x30"},
    ),
    Case(
        "AiopsAgentDecodeWorkerCrashing",
        {f'aiops_source_errors_total{{{JOB}, pod="a", source="kafka", kind="decode_worker"}}': "0x10 0+1x20"},
        {"namespace": "aiops", "pod": "a"},
        value="9",
    ),
    Case(
        # two deaths (one message, killed twice, then dead-lettered): expected, no alert
        "AiopsAgentDecodeWorkerCrashing",
        {f'aiops_source_errors_total{{{JOB}, pod="a", source="kafka", kind="decode_worker"}}': "0x10 1 2x19"},
    ),
    Case(
        "AiopsAgentPlaybooksRejected",
        {f'aiops_playbook_errors{{{JOB}, pod="a"}}': "3x30"},
        {"namespace": "aiops"},
        value="3",
    ),
    Case(
        "AiopsAgentSeriesDropped",
        {f'aiops_series_dropped_total{{{JOB}, pod="a"}}': "0+100x40"},
        {"namespace": "aiops"},
        at="30m",
    ),
    Case(
        "AiopsAgentSeriesSourceLimit",
        {f'aiops_series_refused_total{{{JOB}, pod="a", source="kafka"}}': "0+100x40"},
        {"namespace": "aiops", "source": "kafka"},
        at="30m",
    ),
    Case(
        # refused for 5 minutes, then room again after an eviction
        "AiopsAgentSeriesSourceLimit",
        {f'aiops_series_refused_total{{{JOB}, pod="a", source="kafka"}}': "0+100x5 500x35"},
        at="30m",
    ),
    Case(
        "AiopsAgentSeriesChurn",
        {f'aiops_series_evicted_total{{{JOB}, pod="a"}}': "0+2000x70"},
        {"namespace": "aiops", "pod": "a"},
        value="120000",
        at="70m",
    ),
    Case(
        # a steady few evictions: pods coming and going
        "AiopsAgentSeriesChurn",
        {f'aiops_series_evicted_total{{{JOB}, pod="a"}}': "0+10x70"},
        at="70m",
    ),
    Case(
        "AiopsAgentSinkErrors",
        {f'aiops_sink_errors_total{{{JOB}, pod="a", sink="kafka"}}': "0+1x30"},
        {"namespace": "aiops", "sink": "kafka"},
    ),
]


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool is not installed (Debian's prometheus package)")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = find(render_kustomization(K8S), "PrometheusRule")["spec"]["groups"]
    return groups


def run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


def test_rule_expressions_parse(promtool: str, rules: list[dict[str, Any]], tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
    result = run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    dashboard = json.loads((K8S / "dashboards" / "aiops-agent.json").read_text())
    variables = {"$__rate_interval": "5m", "$namespace": "aiops", "$pod": ".+"}
    records = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"a variable the check does not know in {target['expr']}"
            records.append({"record": f"dashboard:panel{panel['id']}_{target['refId']}", "expr": expr})
    assert records
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]})
    )
    result = run(promtool, "check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _annotations(rule: dict[str, Any], labels: dict[str, str], value: str) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for ``labels`` and ``value``."""

    def render(text: str) -> str:
        text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text)
        return re.sub(r"\{\{\s*\$value\s*\}\}", value, text)

    return {k: render(v) for k, v in rule.get("annotations", {}).items()}


def test_each_alert_fires_when_it_should_and_only_then(
    promtool: str, rules: list[dict[str, Any]], tmp_path: Path
) -> None:
    by_name = {r["alert"]: r for g in rules for r in g["rules"]}
    assert {c.alert for c in CASES} == set(by_name), "every alert has its cases"
    assert {c.alert for c in CASES if c.fires is not None} == set(by_name), "every alert fires in a case"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
    tests = []
    for case in CASES:
        rule = by_name[case.alert]
        expected = []
        if case.fires is not None:
            labels = {**case.fires, **rule.get("labels", {})}
            expected.append({"exp_labels": labels, "exp_annotations": _annotations(rule, labels, case.value)})
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [{"eval_time": case.at, "alertname": case.alert, "exp_alerts": expected}],
            }
        )
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails(promtool: str, rules: list[dict[str, Any]], tmp_path: Path) -> None:
    """promtool really evaluates: an alert expected where it cannot fire is reported."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
    spec = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": f'aiops_leader{{{JOB}, pod="a"}}', "values": "1x30"}],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "AiopsAgentNoLeader",
                        "exp_alerts": [{"exp_labels": {"namespace": "aiops"}}],
                    }
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(spec))
    assert run(promtool, "test", "rules", "tests.yaml", cwd=tmp_path).returncode != 0
