"""Incidents handed from one playbook engine to another: what is kept, what is refused, and the wire form."""

from __future__ import annotations

import logging
import zlib
from typing import Any

import orjson
import pytest

from agent.clock import ManualClock
from agent.handover import decode, encode
from agent.metrics import AgentMetrics
from agent.playbook.engine import PlaybookEngine, incident_id
from agent.playbook.events import AuditLog
from agent.playbook.requests import RecordingExecutor, outcome
from detectors.checkpoint import CheckpointError
from detectors.series import SeriesKey
from detectors.signal import Signal, SignalKind
from remediations.types import ActionStatus
from tests.unit.test_playbook_engine import T0, WEB, load, playbook

P = "signals[3]"
SERIES = SeriesKey.of("errors", {"namespace": "shop", "deployment": "web"})


def sig(at: float) -> Signal:
    """An anomaly on web's errors at ``T0 + at``."""
    return Signal(SignalKind.ANOMALY, SERIES, T0 + at, 0.3, 0.99, "test")


def _engine(text: str, clock: ManualClock, executor: RecordingExecutor | None = None) -> PlaybookEngine:
    return PlaybookEngine(
        load(text), executor or RecordingExecutor(), clock, AuditLog(), metrics=AgentMetrics()
    )


def _wire(data: dict[str, Any]) -> dict[str, Any]:
    """Through JSON and back, as the state topic carries it."""
    decoded: dict[str, Any] = orjson.loads(orjson.dumps(data))
    return decoded


def _count(engine: PlaybookEngine, name: str, *labels: str) -> float:
    assert engine.metrics is not None
    metric = getattr(engine.metrics, name)
    return float((metric.labels(*labels) if labels else metric)._value.get())


def test_an_incident_waiting_on_a_step_is_taken_over_with_its_id_window_and_step() -> None:
    """A's restart runs on A's pool (answered ``running``) when A lets the partition go; B asks
    the same step again, under the same idempotency key, and goes on from its result."""
    clock = ManualClock(T0)
    text = playbook()
    a = _engine(text, clock, RecordingExecutor(outcome=ActionStatus.RUNNING))
    a.emit([sig(0)], origin=P)
    clock.set(T0 + 120)
    a.emit([sig(120)], origin=P)
    (submitted,) = a.executor.requests  # type: ignore[attr-defined]
    exported = _wire(a.hand_over(P))
    assert [i["id"] for i in exported["incidents"]] == [submitted.request.incident]
    assert a.incidents() == []
    assert a.export(P)["incidents"] == []

    b_executor = RecordingExecutor(outcome=ActionStatus.RUNNING)
    b = _engine(text, clock, b_executor)
    assert b.take_over(P, exported) == 1
    (again,) = b_executor.requests
    assert again.key == submitted.key
    (inc,) = b.incidents()
    assert (inc["id"], inc["startedAt"], inc["state"]) == (submitted.request.incident, T0, "acting")
    b.report(outcome(again, ActionStatus.EXECUTED, "done"))
    assert b.incidents()[0]["state"] == "verifying"
    assert _count(b, "incidents_restored") == 1
    assert _count(a, "incidents_handed_over") == 1


def test_entries_of_another_version_or_playbook_are_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(T0)
    a = _engine(playbook(), clock)
    a.emit([sig(0)], origin=P)
    good = _wire(a.export(P))["incidents"][0]
    bad = [
        {**good, "v": 2},
        {**good, "playbook": "gone"},
        {**good, "target": {"kind": "Deployment", "namespace": "shop", "name": "Not A Name"}},
        {**good, "startedAt": "yesterday"},
    ]
    changed = _engine(playbook(trigger={"for": "5m"}), clock)
    with caplog.at_level(logging.WARNING, logger="aiops.playbooks"):
        assert changed.take_over(P, {"incidents": [good]}) == 0
        b = _engine(playbook(), clock)
        assert b.take_over(P, {"incidents": [*bad, good, good]}) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("was changed since it started" in m for m in messages)
    assert any("version 2 is not supported" in m for m in messages)
    assert any("playbook 'gone' is not loaded here" in m for m in messages)
    assert any("target name" in m for m in messages)
    assert any("'startedAt' must be a time" in m for m in messages)
    assert any("has an incident open here" in m for m in messages)
    assert _count(b, "incidents_not_restored", "incompatible") == 4
    assert _count(b, "incidents_not_restored", "open") == 1


def test_ids_given_out_on_a_partition_are_not_given_out_again_by_its_next_owner() -> None:
    """An alert re-sent with the same start after its incident ended: the new episode gets the
    next id in sequence, on the new owner as it would have on the old one."""
    clock = ManualClock(T0)
    text = playbook(trigger={"signal": "alert", "metric": "errors", "for": "5m"})
    a = _engine(text, clock)
    firing = Signal(SignalKind.ALERT, SERIES, T0, 1.0, 1.0, "alertmanager", {"status": "firing"})
    resolved = Signal(SignalKind.ALERT, SERIES, T0, 1.0, 1.0, "alertmanager", {"status": "resolved"})
    a.emit([firing], origin=P)
    (first,) = a.incidents()
    a.emit([resolved], origin=P)
    assert first["id"] == incident_id("restart-web", WEB, T0)
    exported = _wire(a.export(P))
    assert first["id"] in exported["ids"]
    b = _engine(text, clock)
    b.take_over(P, exported)
    clock.set(T0 + 60)
    b.emit([firing], origin=P)
    assert [i["id"] for i in b.incidents()] == [f"{first['id']}-2"]


def test_the_wire_form_is_chunked_bounded_and_versioned() -> None:
    exported = {
        "incidents": [{"id": f"inc-{i}", "pad": "x" * 300} for i in range(20)],
        "releases": [],
        "ids": {f"inc-{i}": T0 + i for i in range(20)},
    }
    blobs, left_out = encode(
        {**exported, "incidents": [*exported["incidents"], {"pad": "y" * 5000}]}, "c1", 2048
    )
    assert left_out == [("incidents", len(orjson.dumps({"pad": "y" * 5000})) + 1)]
    assert len(blobs) > 3
    merged: dict[str, Any] = {"incidents": [], "ids": {}}
    for i, blob in enumerate(blobs):
        chunk = decode(blob, 1 << 20)
        assert (chunk["id"], chunk["chunk"]) == ("c1", i)
        assert len(zlib.decompress(blob)) <= 2048
        merged["incidents"] += chunk["incidents"]
        merged["ids"].update(chunk["ids"])
    assert merged == {"incidents": exported["incidents"], "ids": exported["ids"]}
    with pytest.raises(CheckpointError, match="not zlib"):
        decode(b"plain", 1 << 20)
    with pytest.raises(CheckpointError, match="inflates past max_inflated_bytes 100"):
        decode(blobs[0], 100)
    with pytest.raises(CheckpointError, match=r"format .aiops\.incidents. expected"):
        decode(zlib.compress(orjson.dumps({"format": "other"})), 1 << 20)
    with pytest.raises(CheckpointError, match="'incidents' is not a list"):
        decode(
            zlib.compress(orjson.dumps({"format": "aiops.incidents", "version": 1, "incidents": {}})), 1 << 20
        )


def test_a_raise_still_to_be_released_goes_with_its_partition() -> None:
    """scale-web raised at 0 and resolved at 5m; its raise is due back at 15m (restore_after 10m).
    A lets the partition go at 6m40: B puts the raise back at 15m, A never does."""
    clock = ManualClock(T0)
    text = playbook(
        "scale-web",
        trigger={"metric": "cpu", "for": 0},
        actions=[{"scale": {"by": 1}}],
        verify={"within": "10m", "quiet": "5m"},
    )
    a = _engine(text, clock)
    cpu = SeriesKey.of("cpu", {"namespace": "shop", "deployment": "web"})
    a.emit([Signal(SignalKind.ANOMALY, cpu, T0, 0.9, 0.99, "test")], origin=P)
    clock.set(T0 + 300)
    a.tick()
    assert a.incidents() == []  # resolved
    clock.set(T0 + 400)
    exported = _wire(a.hand_over(P))
    assert [r["due"] for r in exported["releases"]] == [T0 + 900]
    b_executor = RecordingExecutor()
    b = _engine(text, clock, b_executor)
    b.take_over(P, exported)
    clock.set(T0 + 900)
    a.tick()
    b.tick()
    assert [(p.time, p.request.restore) for p in b_executor.requests] == [(T0 + 900, True)]
    assert [p.request.restore for p in a.executor.requests] == [False]  # type: ignore[attr-defined]


def test_a_handed_incident_acts_nowhere_a_signal_could_not_make_it_act(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A record from the state topic is an input like a signal: an incident whose target is not the
    one its playbook names for its signal, or in a namespace the guardrails keep the agent out of,
    is dropped with a warning, and no step of it is asked."""
    clock = ManualClock(T0)
    a = _engine(playbook(), clock, RecordingExecutor(outcome=ActionStatus.RUNNING))
    a.emit([sig(0)], origin=P)
    clock.set(T0 + 120)
    a.emit([sig(120)], origin=P)
    good = _wire(a.hand_over(P))["incidents"][0]
    assert good["state"] == "acting"

    def forged(kind: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
        target = {"kind": kind, "namespace": namespace, "name": "coredns"}
        return {
            **good,
            "id": f"inc-{kind}-{namespace}",
            "target": target,
            "signal": {**good["signal"], "labels": labels},
        }

    kube = {"namespace": "kube-system", "deployment": "coredns"}
    records = [
        forged("Deployment", "kube-system", kube),  # consistent with its signal, but protected
        forged("StatefulSet", "shop", {"namespace": "shop", "deployment": "coredns"}),  # another kind
        forged(
            "Deployment", "kube-system", {"namespace": "shop", "deployment": "coredns"}
        ),  # not its signal's
    ]
    executor = RecordingExecutor(outcome=ActionStatus.RUNNING)
    b = _engine(playbook(), clock, executor)
    with caplog.at_level(logging.WARNING, logger="aiops.playbooks"):
        assert b.take_over(P, {"incidents": records}) == 0
    assert executor.requests == []
    assert b.incidents() == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("namespace 'kube-system' is protected" in m for m in messages)
    assert any("target StatefulSet/shop/coredns is not Deployment/shop/coredns" in m for m in messages)
    assert any("target Deployment/kube-system/coredns is not Deployment/shop/coredns" in m for m in messages)
    assert _count(b, "incidents_not_restored", "incompatible") == 3
