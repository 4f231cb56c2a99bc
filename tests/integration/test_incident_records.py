"""Decision records end to end: a bad rollout rolled back on the twin, its record over HTTP and in the CLI.

The shipped playbooks, the engine, the executor and the twin API server over HTTP, as in
``test_decisions.py``; the records are folded by the daemon's own sink, served by the daemon's own
HTTP server, written to an audit file and read back by ``aiops incident show``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.audit import Audit, AuditSink, KafkaAuditSink, LogAuditSink
from agent.cli import main
from agent.config import ExecutorConfig, KafkaConnection
from agent.decisions import DecisionRecords, incidents_route
from agent.executor import KubeExecutor
from agent.facts import KubeFacts
from agent.http import HttpServer
from agent.kafka_client import ResilientProducer
from agent.leader import StaticLeader
from agent.playbook.engine import PlaybookEngine
from agent.playbook.events import AuditLog
from agent.playbook.guardrails import GuardrailDefaults
from agent.playbook.loader import load_paths
from detectors import SampleBatch, SeriesKey, SeriesRegistry, Signal
from detectors.freshness import SeriesFreshness
from detectors.signal import SignalKind
from simulations.pager import Pager
from tests.integration.test_remediation_support import Cluster, open_cluster
from tests.servers.kafka import read_topic

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "playbooks"
STEP = 15.0
#: What a ratio detector says of a 5xx ratio of 0.2 where 0.005 is usual.
WHY = {"expected": 0.005, "band": [0.003, 0.008], "p_value": 2e-9}


@pytest.fixture
def cluster(twin_cluster: Any) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as opened:
        yield opened


def _version(cluster: Cluster) -> str:
    (env,) = cluster.read("Deployment", "checkout")["spec"]["template"]["spec"]["containers"][0]["env"]
    return str(env["value"])


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def roll_back_a_bad_rollout(
    cluster: Cluster, tmp_path: Path, publish: list[AuditSink] | None = None
) -> tuple[DecisionRecords, Path]:
    """v1 live for two hours, v2 rolled out with a 5xx ratio of 0.2; the shipped playbooks act.

    Returns the records (published to an audit file and ``publish``) and the audit file."""
    assert cluster.twin is not None
    twin = cluster.twin.twin
    clock = twin.clock
    series = SeriesRegistry()
    freshness = SeriesFreshness(series)
    audit_file = tmp_path / "audit.jsonl"
    file_sink = LogAuditSink(audit_file)
    records = DecisionRecords(publish=[file_sink, *(publish or [])])
    pager = Pager()
    executor = KubeExecutor(
        cluster.kube,
        ExecutorConfig(enabled=True, approvals_dir=tmp_path / "approvals", audit_file=audit_file),
        clock,
        Audit([file_sink, records]),
        leader=StaticLeader(True),
        instance="agent-0",
        environ=pager.environ(),
    )
    engine = PlaybookEngine(
        load_paths([SHIPPED]),
        executor,
        clock,
        Audit([AuditLog(), records]),
        defaults=GuardrailDefaults(),
        facts=KubeFacts(cluster.kube, clock, ttl=0.0),
        freshness=freshness,
    )
    executor.bind(engine.report, engine.vet)
    try:
        cluster.deployment("checkout", replicas=4, version="1")
        twin.advance(2 * 3600)
        cluster.rollout("checkout", "2")
        errors = SeriesKey.of(
            "http_requests_error_ratio", {"namespace": cluster.ns, "deployment": "checkout"}
        )
        sid = series.id_for(errors)
        for _ in range(60):  # 15 minutes: errors while v2 is live, then clean samples
            twin.advance(STEP)
            now = clock.now()
            bad = _version(cluster) == "2"
            freshness.observe(SampleBatch.from_arrays([sid], [now], [0.2 if bad else 0.004]))
            if bad:
                engine.emit([Signal(SignalKind.ANOMALY, errors, now, 0.2, 0.9999, "ratio", dict(WHY))])
            engine.tick()
            executor.tick()
    finally:
        pager.close()
    assert _version(cluster) == "1", "rolled back to the healthy version"
    return records, audit_file


def test_a_rolled_back_rollout_leaves_a_record_that_says_why(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records, audit_file = roll_back_a_bad_rollout(cluster, tmp_path)
    errors = SeriesKey.of("http_requests_error_ratio", {"namespace": cluster.ns, "deployment": "checkout"})
    server = HttpServer(
        "127.0.0.1",
        0,
        CollectorRegistry(),
        lambda: (True, "ok"),
        lambda: (True, "ok"),
        get_routes={"/incidents": incidents_route(records)},
    )
    server.start()
    try:
        (listed,) = [r for r in records.latest() if r["playbook"] == "rollback-on-error-spike"]
        ident = listed["incident"]
        record = records.get(ident)
        assert record is not None
        assert record["state"] == "resolved"
        assert record["target"] == {"kind": "Deployment", "namespace": cluster.ns, "name": "checkout"}
        assert record["rule"]["metric"] == "http_requests_error_ratio"
        assert record["rule"]["minScore"] == 0.99
        # the signal: expected vs seen, with the tail probability
        first = record["signals"][0]
        assert first["detector"] == "ratio"
        assert first["why"] == "expected 0.005 (band 0.003-0.008), saw 0.2, p=2e-9"
        assert record["signalsSeen"] >= 8  # for: 2m of 15 s samples before it fired
        assert record["window"]["to"] - record["window"]["from"] >= 120.0
        # every guardrail, with its value
        guards = {g["name"]: g for g in record["guardrails"]}
        assert guards["cooldown"]["limit"] == 1800.0
        assert guards["cooldown"]["remaining"] == 0.0
        assert guards["maxPerHour"]["used"] == 0
        assert guards["maxPerHour"]["limit"] == 2
        assert guards["maxPerHour"]["class"] == "corrective"
        assert guards["agent.max_per_hour_total"]["limit"] == 30
        assert guards["protected"]["ok"] is True
        assert guards["approval"]["value"] == "none"
        assert guards["dryRun"]["value"] is False
        assert guards["leader"]["value"] == "agent-0"
        assert guards["gitops"]["value"] == "none"
        assert guards["when.rolloutWithin"]["ok"] is True
        assert all(g["ok"] for g in record["guardrails"])
        # the plan with its diff, and the outcome
        rollback = next(a for a in record["actions"] if a["action"] == "rollback")
        assert rollback["status"] == "executed"
        assert rollback["diff"], "the rollback's diff is in the record"
        assert "revision" in rollback["diff"] or "template" in rollback["diff"]
        assert [d["decision"] for d in rollback["decisions"]] == ["started", "executed"]
        notify = next(a for a in record["actions"] if a["action"] == "notify")
        assert notify["status"] == "executed"
        # the verification evidence: fresh samples cleared it
        verification = record["verification"]
        assert verification["result"] == "resolved"
        (evidence,) = verification["evidence"]
        assert evidence["series"] == str(errors)
        assert evidence["freshSamples"] >= evidence["need"] >= 1
        assert evidence["stale"] is False
        (acting,) = [t["reason"] for t in record["timeline"] if t["to"] == "acting"]
        assert re.fullmatch(
            rf"guardrails passed \(namespace {re.escape(cluster.ns)} allowed, not protected, "
            r"cooldown 30m \(none yet\), "
            r"maxPerHour 0/2, maxPerHourTotal 0/-, agent.max_per_hour_total 0/30, dryRun False, "
            r"approval none, rollout \d+m(\d+s)? ago \(within 30m\); corrective budgets from signals, "
            r"no other remediation of the target\); running 2 step\(s\)",
            acting,
        ), acting
        states = [t["to"] for t in record["timeline"]]
        assert states == ["pending", "firing", "acting", "verifying", "resolved"]

        # the Kubernetes Event on the Deployment carries the why
        (event,) = cluster.events("Deployment", "checkout", "AiopsRolledBack")
        assert "expected 0.005 (band 0.003-0.008), saw 0.2, p=2e-9" in event.message

        # GET /incidents lists it, newest first; /incidents/ID serves the whole record
        base = f"http://127.0.0.1:{server.port}"
        status, listing = _get(f"{base}/incidents")
        assert status == 200
        assert ident in [r["incident"] for r in listing["incidents"]]
        opened = [r["opened"] for r in listing["incidents"]]
        assert opened == sorted(opened, reverse=True)
        status, served = _get(f"{base}/incidents/{ident}")
        assert status == 200
        assert served == json.loads(json.dumps(record))
        assert _get(f"{base}/incidents/inc-000000000000")[0] == 404
        assert _get(f"{base}/incidents/a%20b")[0] == 400
        assert _get(f"{base}/incidents?limit=0")[0] == 400

        # the audit file holds the published record: the CLI shows the same from either source
        published = [json.loads(line) for line in audit_file.read_text().splitlines()]
        assert any(p.get("type") == "decision" and p["incident"] == ident for p in published)
        for source in (["--url", base], ["--audit", str(audit_file)]):
            assert main(["incident", "show", ident, *source]) == 0
            text = capsys.readouterr().out
            assert f"incident {ident}: rollback-on-error-spike on Deployment/{cluster.ns}/checkout" in text
            assert "expected 0.005 (band 0.003-0.008), saw 0.2, p=2e-9" in text
            assert "ok    cooldown: 0s remaining of 1800s" in text
            assert "rollback: executed" in text
            assert "verification: resolved" in text
            assert main(["incident", "show", ident, "--json", *source]) == 0
            shown = json.loads(capsys.readouterr().out)
            assert shown["actions"] == record["actions"]
            assert shown["verification"] == record["verification"]
            assert main(["incident", "list", *source]) == 0
            assert ident in capsys.readouterr().out
        assert main(["incident", "show", "inc-nothing", "--audit", str(audit_file)]) == 1
        assert "no record of incident inc-nothing" in capsys.readouterr().err
    finally:
        server.close()


def test_the_record_reaches_the_audit_topic_keyed_by_incident(
    cluster: Cluster, tmp_path: Path, kafka_bootstrap: str, kafka_topic: Any
) -> None:
    topic = kafka_topic()
    producer = ResilientProducer(
        KafkaConnection(bootstrap_servers=[kafka_bootstrap]), cluster.clock, name="audit"
    )
    try:
        records, _ = roll_back_a_bad_rollout(cluster, tmp_path, [KafkaAuditSink(producer, topic)])
    finally:
        producer.close()
    messages = [(key or b"", json.loads(value)) for key, value in read_topic(kafka_bootstrap, topic)]
    (ident,) = {r["incident"] for r in records.latest() if r["playbook"] == "rollback-on-error-spike"}
    published = [value for key, value in messages if key == ident.encode()]
    assert [p["state"] for p in published] == ["acting", "acting", "acting", "verifying", "resolved"]
    assert all(p["type"] == "decision" for p in published)
    assert published[-1] == json.loads(json.dumps(records.get(ident)))
