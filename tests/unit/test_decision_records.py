"""The decision record fold: audit entries of one incident -> its record, bounded; the same offline."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from agent.audit import Audit, AuditRecord, Decision, Entry, executed_keys_in
from agent.cli import main
from agent.clock import ManualClock
from agent.config import AgentConfig
from agent.decisions import (
    DecisionRecord,
    DecisionRecords,
    RecordBounds,
    explain_signal,
    fold,
    incidents_route,
    records_from_lines,
)
from agent.playbook.events import IncidentEvent, IncidentState, LogAudit
from remediations.types import Target
from tests.unit.test_playbook_engine import ERRORS, T0, FakeFreshness, Harness, playbook

TARGET = Target("Deployment", "shop", "checkout")
SIGNAL = {
    "kind": "anomaly",
    "metric": "http_requests_error_ratio",
    "labels": {"namespace": "shop", "deployment": "checkout"},
    "timestamp": 1000.0,
    "value": 0.12,
    "score": 0.9999,
    "detector": "ratio",
    "details": {"expected": 0.005, "band": [0.003, 0.008], "p_value": 2e-9, "novelty_range": [0, 1]},
}
KEY = "rb/Deployment/shop/checkout/inc-1/actions[0]"


def event(t: float, previous: str | None, state: str, reason: str = "why", **extra: Any) -> IncidentEvent:
    details = extra.pop("details", {})
    return IncidentEvent(
        t,
        "inc-1",
        "rb",
        TARGET,
        None if previous is None else IncidentState(previous),
        IncidentState(state),
        reason,
        details=details,
        **extra,
    )


def decision(t: float, what: Decision, message: str = "", **details: Any) -> AuditRecord:
    return AuditRecord(
        t, what, KEY, "rollback", TARGET.to_dict(), message, "rb", "inc-1", "actions[0]", details=details
    )


def signal_at(t: float, value: float = 0.12) -> dict[str, Any]:
    return {**SIGNAL, "timestamp": t, "value": value}


GUARDS = [
    {"name": "cooldown", "limit": 1800.0, "remaining": 0.0, "lastRemediation": None, "ok": True},
    {"name": "maxPerHour", "used": 1, "limit": 2, "class": "corrective", "source": "signals", "ok": True},
]
EXECUTOR_GUARDS = [{"name": "leader", "value": "agent-0", "ok": True}]
EVIDENCE = [{"series": "err", "freshSamples": 4, "need": 3, "lastSeen": 1400.0, "stale": False}]


def a_rollback() -> list[Entry]:
    """The entries of one incident, in the order the engine and the executor audit them."""
    rule = {"rule": {"signal": ["anomaly"], "minScore": 0.99}, "priority": 100, "class": "corrective"}
    return [
        event(
            1000,
            None,
            "pending",
            details={**rule, "source": "signals", "signal": signal_at(1000), "signals": 1},
        ),
        event(
            1005,
            "pending",
            "pending",
            "held by when.rolloutWithin: no rollout known",
            guardrail="when.rolloutWithin",
        ),
        event(1120, "pending", "firing", details={"signal": signal_at(1120), "signals": 9}),
        event(
            1120, "firing", "acting", details={"signal": signal_at(1120), "signals": 9, "guardrails": GUARDS}
        ),
        event(1120, "acting", "acting", "submitted rollback", action="rollback", step="actions[0]", key=KEY),
        decision(1120, Decision.STARTED, "starting", guards=EXECUTOR_GUARDS),
        decision(1121, Decision.EXECUTED, "rolled back", diff="-v: 2\n+v: 1", guards=EXECUTOR_GUARDS),
        event(1121, "acting", "acting", "rollback executed", action="rollback", key=KEY, status="executed"),
        event(1121, "acting", "verifying", details={"signal": signal_at(1120), "signals": 9}),
        event(
            1400,
            "verifying",
            "resolved",
            "cleared",
            details={"signal": signal_at(1120), "evidence": EVIDENCE},
        ),
    ]


def folded(entries: list[Entry], bounds: RecordBounds | None = None) -> tuple[dict[str, Any], list[bool]]:
    record: dict[str, Any] | None = None
    publishes = []
    for e in entries:
        record, publish = fold(record, e.to_dict(), bounds or RecordBounds())
        publishes.append(publish)
    assert record is not None
    return record, publishes


def test_the_entries_of_a_rollback_fold_into_one_record() -> None:
    record, publishes = folded(a_rollback())
    assert record["incident"] == "inc-1"
    assert record["playbook"] == "rb"
    assert record["target"] == {"kind": "Deployment", "namespace": "shop", "name": "checkout"}
    assert record["rule"] == {"signal": ["anomaly"], "minScore": 0.99}
    assert (record["priority"], record["class"], record["source"]) == (100, "corrective", "signals")
    assert (record["state"], record["opened"], record["fired"], record["closed"], record["updated"]) == (
        "resolved",
        1000,
        1120,
        1400,
        1400,
    )
    # two distinct signals (1000 and 1120; the later repeats are the same one), nine matched
    assert [s["time"] for s in record["signals"]] == [1000, 1120]
    assert record["signalsSeen"] == 9
    assert record["window"] == {"from": 1000, "to": 1120}
    first = record["signals"][0]
    assert first["why"] == "expected 0.005 (band 0.003-0.008), saw 0.12, p=2e-9"
    assert first["expected"] == 0.005
    assert "novelty_range" not in first  # only the facts a record keeps
    assert record["guardrails"] == [*GUARDS, *EXECUTOR_GUARDS]
    assert record["holds"] == [
        {
            "time": 1005,
            "guardrail": "when.rolloutWithin",
            "reason": "held by when.rolloutWithin: no rollout known",
        }
    ]
    (action,) = record["actions"]
    assert action["key"] == KEY
    assert action["action"] == "rollback"
    assert action["status"] == "executed"
    assert action["diff"] == "-v: 2\n+v: 1"
    assert [d["decision"] for d in action["decisions"]] == ["started", "executed"]
    assert record["verification"] == {
        "time": 1400,
        "result": "resolved",
        "reason": "cleared",
        "evidence": EVIDENCE,
    }
    assert [t["to"] for t in record["timeline"]] == ["pending", "firing", "acting", "verifying", "resolved"]
    assert record["dropped"] == {}
    # published: at acting, at the engine's outcome of each step, verifying, resolved
    assert publishes == [False, False, False, True, False, False, False, True, True, True]


def test_an_incident_that_never_fired_is_not_published_when_it_expires() -> None:
    sink = Published()
    records = DecisionRecords(publish=[sink])
    records.record(event(1000, None, "pending", details={"signal": signal_at(1000), "signals": 1}))
    records.record(event(1300, "pending", "expired", "no matching signal for 5m"))
    assert sink.entries == []
    record = records.get("inc-1")
    assert record is not None
    assert record["state"] == "expired"
    assert (record["fired"], record["closed"]) == (None, 1300)


def test_a_held_step_keeps_the_executors_guardrail_with_its_value() -> None:
    record, _ = folded(
        [
            event(1000, None, "pending"),
            AuditRecord(
                1001,
                Decision.SKIPPED,
                KEY,
                "rollback",
                TARGET.to_dict(),
                "managed by GitOps (argocd:shop)",
                "rb",
                "inc-1",
                "actions[0]",
                guardrail="gitops",
            ),
        ]
    )
    assert record["guardrails"] == [
        {"name": "gitops", "ok": False, "value": "managed by GitOps (argocd:shop)"}
    ]
    assert record["actions"][0]["decisions"] == [
        {
            "time": 1001,
            "decision": "skipped",
            "message": "managed by GitOps (argocd:shop)",
            "guardrail": "gitops",
        }
    ]


class Published:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def record(self, entry: Entry) -> None:
        self.entries.append(entry.to_dict())


def test_the_live_sink_publishes_records_and_ignores_its_own() -> None:
    sink = Published()
    records = DecisionRecords(publish=[sink])
    for e in a_rollback():
        records.record(e)
    assert [p["state"] for p in sink.entries] == ["acting", "acting", "verifying", "resolved"]
    assert all(p["type"] == "decision" for p in sink.entries)
    records.record(DecisionRecord(sink.entries[0]))  # a record coming back is not folded again
    assert records.get("inc-1") == sink.entries[-1]
    assert records.get("inc-2") is None


def test_an_audit_file_gives_the_same_record_as_the_live_sink() -> None:
    sink = Published()
    live = DecisionRecords(publish=[sink])
    lines: list[str] = ["not json", "[1, 2]", json.dumps({"incident": 7}), "[" * 100_000 + "]" * 100_000]
    for e in a_rollback():
        live.record(e)
        # the file holds the executor's decisions and the published records, not the engine's events
        if isinstance(e, AuditRecord):
            lines.append(json.dumps(e.to_dict()))
        while sink.entries:
            lines.append(json.dumps(sink.entries.pop(0)))
    offline = records_from_lines(lines)
    assert list(offline) == ["inc-1"]
    assert offline["inc-1"] == live.get("inc-1")


def test_entries_after_the_last_published_record_are_folded_on_top_of_it() -> None:
    entries = a_rollback()
    record, _ = folded(entries[:4])  # published at acting
    lines = [json.dumps(record), json.dumps(entries[5].to_dict()), json.dumps(entries[6].to_dict())]
    (offline,) = records_from_lines(lines).values()
    assert offline["state"] == "acting"
    assert offline["actions"][0]["diff"] == "-v: 2\n+v: 1"
    assert [d["decision"] for d in offline["actions"][0]["decisions"]] == ["started", "executed"]


def test_signals_are_bounded_keeping_the_first_and_the_newest() -> None:
    entries: list[Entry] = [event(1000, None, "pending", details={"signal": signal_at(1000), "signals": 1})]
    for k in range(1, 30):
        state = "firing" if k % 2 else "pending"
        previous = "pending" if k % 2 else "firing"
        entries.append(
            event(1000 + 15 * k, previous, state, details={"signal": signal_at(1000 + 15 * k), "signals": k})
        )
    record, _ = folded(entries, RecordBounds(max_signals=5, max_entries=10))
    assert [s["time"] for s in record["signals"]] == [
        1000,
        1000 + 15 * 26,
        1000 + 15 * 27,
        1000 + 15 * 28,
        1000 + 15 * 29,
    ]
    assert record["window"] == {"from": 1000, "to": 1000 + 15 * 29}
    assert len(record["timeline"]) == 10
    assert record["timeline"][0]["to"] == "pending"
    assert record["dropped"] == {"signals": 25, "timeline": 20}


def test_a_record_is_bounded_in_bytes_and_texts() -> None:
    entries: list[Entry] = [event(1000, None, "pending")]
    for k in range(40):
        key = f"rb/Deployment/shop/checkout/inc-1/actions[{k}]"
        entries.append(
            AuditRecord(
                1001 + k,
                Decision.EXECUTED,
                key,
                "scale",
                TARGET.to_dict(),
                "x" * 10_000,
                "rb",
                "inc-1",
                details={"diff": "d" * 10_000},
            )
        )
    bounds = RecordBounds(max_text=1000, max_bytes=20_000)
    record, _ = folded(entries, bounds)
    assert len(json.dumps(record)) <= 20_000
    assert all(len(a["diff"]) <= 1000 for a in record["actions"])
    assert record["actions"][0]["key"].endswith("actions[0]"), "the first action stays"
    assert record["actions"][-1]["key"].endswith("actions[39]"), "the newest action stays"
    assert record["dropped"]["actions"] > 0


def test_records_in_memory_are_bounded_least_recently_updated_first() -> None:
    records = DecisionRecords(bounds=RecordBounds(max_incidents=3))
    for n in range(5):
        records.record(
            IncidentEvent(1000.0 + n, f"inc-{n}", "rb", TARGET, None, IncidentState.PENDING, "first signal")
        )
    assert len(records) == 3
    assert [r["incident"] for r in records.latest()] == ["inc-4", "inc-3", "inc-2"]
    assert records.get("inc-0") is None
    assert [r["incident"] for r in records.latest(limit=1)] == ["inc-4"]


def test_entries_of_no_incident_are_ignored() -> None:
    assert fold(None, {"type": "signal_rejected", "playbook": "rb"}) == (None, False)
    assert fold(None, {"incident": 3}) == (None, False)


@pytest.mark.parametrize(
    ("details", "why"),
    [
        (
            {"expected": 0.005, "band": [0.003, 0.008], "p_value": 2e-9},
            "expected 0.005 (band 0.003-0.008), saw 0.12, p=2e-9",
        ),
        ({"expected": 5.0, "band": [-1.5, 11.5]}, "expected 5 (band -1.5 to 11.5), saw 0.12, score 1"),
        ({"above": 0.05}, "rule: above 0.05, saw 0.12, score 1"),
        ({"forecast_upper": 520.4, "limit": 500}, "forecast up to 520 vs limit 500, saw 0.12, score 1"),
        ({}, "saw 0.12, score 1"),
    ],
)
def test_a_signal_says_what_was_expected_and_what_was_seen(details: dict[str, Any], why: str) -> None:
    assert explain_signal({**SIGNAL, "details": details}) == why


def test_the_incidents_route_lists_bounded_and_refuses_bad_input() -> None:
    records = DecisionRecords()
    for e in a_rollback():
        records.record(e)
    route = incidents_route(records)
    listing = route("", "limit=5")
    assert listing.status == 200
    (row,) = json.loads(listing.body)["incidents"]
    assert row["incident"] == "inc-1"
    assert row["actions"] == ["rollback executed"]
    assert row["why"] == "expected 0.005 (band 0.003-0.008), saw 0.12, p=2e-9"
    assert json.loads(route("inc-1", "").body) == records.get("inc-1")
    for rest, query, status, said in [
        ("", "limit=1000", 400, "limit: expected 1 to 200, got 1000"),
        ("", "limit=many", 400, "limit: expected an integer, got 'many'"),
        ("../etc", "", 400, "not an incident id: '../etc'"),
        ("inc-9", "", 404, "no record of incident inc-9 (records kept: 1)"),
    ]:
        answer = route(rest, query)
        assert (answer.status, json.loads(answer.body)["error"]) == (status, said)


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("served", [True, False])
def test_the_daemon_folds_its_engine_events_and_serves_them_unless_told_not_to(served: bool) -> None:
    config = AgentConfig.model_validate({"http": {"host": "127.0.0.1", "port": 0, "incidents": served}})
    agent = Agent(config, ManualClock(5000.0), environ={})
    port = agent.start_http()
    try:
        agent.playbooks.engine.audit.record(event(1000, None, "pending", details={"signal": signal_at(1000)}))
        status, body = _get(f"http://127.0.0.1:{port}/incidents/inc-1")
        if served:
            assert status == 200
            assert body["signals"][0]["why"] == "expected 0.005 (band 0.003-0.008), saw 0.12, p=2e-9"
            status, listing = _get(f"http://127.0.0.1:{port}/incidents")
            assert [r["incident"] for r in listing["incidents"]] == ["inc-1"]
        else:
            assert status == 404
            assert agent.decisions.get("inc-1") is not None  # still kept for the audit file
    finally:
        assert agent.http is not None
        agent.http.close()


def test_the_log_line_of_a_transition_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiops.playbooks")
    LogAudit().record(event(1120, "pending", "firing", "held for 2m", details={"signal": signal_at(1120)}))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.endswith(
        "pending -> firing: held for 2m "
        "[http_requests_error_ratio: expected 0.005 (band 0.003-0.008), saw 0.12, p=2e-9]"
    )


def test_a_step_waiting_for_approval_keeps_its_plan_and_is_published() -> None:
    plan = "scale Deployment/shop/checkout 4 -> 8\n-replicas: 4\n+replicas: 8"
    entries: list[Entry] = [
        event(1000, None, "pending"),
        event(1000, "pending", "firing"),
        event(1000, "firing", "acting", details={"guardrails": GUARDS}),
        decision(1000, Decision.PENDING_APPROVAL, "waiting for approval a1", approval="a1", plan=plan),
        event(1000, "acting", "acting", "rollback waits for approval", key=KEY, status="pending_approval"),
    ]
    record, publishes = folded(entries)
    (action,) = record["actions"]
    assert (action["status"], action["plan"], action["diff"]) == ("pending_approval", plan, "")
    assert publishes[-1] is True


def test_a_series_gone_silent_leaves_stale_evidence_in_the_escalated_record() -> None:
    fresh = FakeFreshness()
    h = Harness(playbook(trigger={"for": 0}), freshness=fresh)
    records = DecisionRecords()
    h.engine.audit = Audit([h.audit, records])
    fresh.report(ERRORS, *range(-150, 1, 15))
    h.signal(0, details={"expected": 0.01, "band": [0.0, 0.03], "p_value": 1e-7})
    h.run_until(3600)  # the series never reports again
    (record,) = records.latest()
    assert record["state"] == "escalated"
    assert [t["to"] for t in record["timeline"]][-2:] == ["stale", "escalated"]
    verification = record["verification"]
    assert verification["result"] == "escalated"
    assert "did not clear within 10m" in verification["reason"]
    (evidence,) = verification["evidence"]
    assert evidence == {
        "series": str(ERRORS),
        "freshSamples": 0,
        "need": 3,
        "lastSeen": T0,
        "stale": True,
    }
    assert record["signals"][0]["why"] == "expected 0.01 (band 0-0.03), saw 0.3, p=1e-7"
    guards = {g["name"]: g for g in record["guardrails"]}
    assert guards["cooldown"]["ok"] is True
    assert record["actions"][0]["status"] == "executed"


def test_the_incident_commands_read_an_audit_file_and_say_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = Published()
    records = DecisionRecords(publish=[sink])
    for e in a_rollback():
        records.record(e)
    audit = tmp_path / "audit.jsonl"
    audit.write_text("".join(json.dumps(p) + "\n" for p in sink.entries))
    assert main(["incident", "list", "--audit", str(audit)]) == 0
    line = capsys.readouterr().out
    assert line.startswith(
        "inc-1  1970-01-01T00:16:40Z  resolved    rb  Deployment/shop/checkout  rollback executed"
    )
    assert line.rstrip().endswith("expected 0.005 (band 0.003-0.008), saw 0.12, p=2e-9")
    assert main(["incident", "show", "inc-1", "--audit", str(audit)]) == 0
    shown = capsys.readouterr().out
    assert "  ok    maxPerHour: 1 of 2 (corrective, from signals)\n" in shown
    assert "  ok    cooldown: 0s remaining of 1800s\n" in shown
    assert "    diff:\n      -v: 2\n      +v: 1\n" in shown
    assert "  err: 4 fresh samples (3 needed), last seen 1970-01-01T00:23:20Z" in shown
    assert main(["incident", "show", "inc-1", "--audit", str(tmp_path / "none.jsonl")]) == 1
    assert "aiops incident show: --audit " in capsys.readouterr().err
    assert main(["incident", "list", "--url", "ftp://example"]) == 1
    assert "--url: expected http://host:port, got 'ftp://example'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["incident", "list"])  # one of --url and --audit is required
    with pytest.raises(SystemExit):
        main(["incident", "list", "--audit", str(audit), "--limit", "0"])


def test_records_are_published_in_the_order_they_were_folded_across_threads() -> None:
    sink = Published()
    records = DecisionRecords(publish=[sink])
    records.record(event(0, None, "pending"))
    records.record(event(0, "pending", "firing"))

    def outcomes(first: int) -> None:
        for n in range(first, 400, 2):  # each step's outcome publishes the record
            key = f"rb/Deployment/shop/checkout/inc-1/actions[{n}]"
            records.record(event(n + 1, "acting", "acting", "ok", key=key, status="executed"))

    threads = [threading.Thread(target=outcomes, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sink.entries) == 400
    sizes = [len(p["actions"]) + p["dropped"].get("actions", 0) for p in sink.entries]
    assert sizes == list(range(1, 401)), "each published record holds one more outcome than the last"


def test_an_audit_line_nested_too_deep_is_skipped_when_keys_are_recalled() -> None:
    """The executor recalls executed keys from its audit file at start: a damaged line is skipped,
    not a RecursionError that keeps the daemon from starting."""
    good = json.dumps({"decision": "executed", "key": "k1"})
    assert executed_keys_in(["[" * 100_000 + "]" * 100_000, good]) == {"k1"}
