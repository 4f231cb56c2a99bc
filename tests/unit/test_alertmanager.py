"""The Alertmanager webhook: payload version 4 to alert Signals; the POST route; into the engine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from agent.clock import ManualClock
from agent.metrics import AgentMetrics
from agent.playbook.engine import PlaybookEngine
from agent.playbook.events import AuditLog
from agent.playbook.loader import load_sources
from agent.playbook.requests import RecordingExecutor
from agent.sources.alertmanager import MAX_BODY, MalformedPayloadError, alertmanager_route, parse_webhook
from detectors.signal import Signal, SignalKind
from remediations.types import Target

NOW = 1_700_000_000.0

PAYLOAD: dict[str, Any] = {
    "receiver": "aiops",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "KubePodCrashLooping",
                "namespace": "shop",
                "deployment": "web",
                "severity": "warning",
            },
            "annotations": {"summary": "web is crash looping"},
            "startsAt": "2023-11-14T22:13:20.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
            "fingerprint": "1a30ba71cca2921f",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "HighLatency", "namespace": "shop", "deployment": "api"},
            "annotations": {},
            "startsAt": "2023-11-14T23:00:00+01:00",
            "endsAt": "2023-11-14T23:10:00.5+01:00",
            "generatorURL": "",
            "fingerprint": "bc97ff14869b13e3",
        },
    ],
    "groupLabels": {"namespace": "shop"},
    "commonLabels": {"namespace": "shop"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "version": "4",
    "groupKey": '{}:{namespace="shop"}',
    "truncatedAlerts": 0,
}


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def test_each_alert_becomes_an_alert_signal() -> None:
    firing, resolved = parse_webhook(body(PAYLOAD), NOW)
    assert firing.kind is SignalKind.ALERT
    assert firing.metric == "KubePodCrashLooping"
    assert firing.labels == {
        "alertname": "KubePodCrashLooping",
        "namespace": "shop",
        "deployment": "web",
        "severity": "warning",
    }
    assert firing.timestamp == pytest.approx(1_700_000_000.123457)  # startsAt, nanoseconds cut to micro
    assert (firing.value, firing.score, firing.detector) == (1.0, 1.0, "alertmanager")
    assert firing.details["status"] == "firing"
    assert firing.details["annotations"] == {"summary": "web is crash looping"}
    assert firing.details["fingerprint"] == "1a30ba71cca2921f"
    assert firing.details["generatorURL"] == "http://prometheus:9090/graph?g0.expr=x"
    assert resolved.metric == "HighLatency"
    assert (resolved.value, resolved.score, resolved.details["status"]) == (0.0, 0.0, "resolved")
    assert resolved.timestamp == 1_699_999_800.5  # endsAt, 23:10:00.5+01:00


def test_a_missing_time_falls_back_to_the_receive_time() -> None:
    payload = {**PAYLOAD, "alerts": [{**PAYLOAD["alerts"][1], "endsAt": "0001-01-01T00:00:00Z"}]}
    (s,) = parse_webhook(body(payload), NOW)
    assert s.timestamp == NOW


def test_unknown_extra_fields_are_ignored() -> None:
    payload = {
        **PAYLOAD,
        "orgId": 1,
        "alerts": [{**PAYLOAD["alerts"][0], "silenceURL": "x", "values": {"B": 1}}],
    }
    assert len(parse_webhook(body(payload), NOW)) == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (body({**PAYLOAD, "version": "3"}), "unsupported payload version '3'"),
        (body({k: v for k, v in PAYLOAD.items() if k != "alerts"}), "alerts: Field required"),
        (body({**PAYLOAD, "status": "pending"}), "status: Input should be 'firing' or 'resolved'"),
        (
            body({**PAYLOAD, "alerts": [{**PAYLOAD["alerts"][0], "labels": {"a": "b"}}]}),
            "needs the label alertname",
        ),
        (body({**PAYLOAD, "alerts": [{**PAYLOAD["alerts"][0], "startsAt": "yesterday"}]}), "RFC 3339"),
        (body({**PAYLOAD, "alerts": [{**PAYLOAD["alerts"][0], "labels": {"alertname": 3}}]}), "valid string"),
        (b"[" * 100_000, "not JSON"),
        (body(PAYLOAD).replace(b'"alertname":', b'"\\udcff": "x", "alertname":'), "not JSON: .*surrogate"),
        (body(PAYLOAD).replace(b"[{", b'[{"value": NaN, ', 1), "not JSON"),
        (b'{"alerts": [\xff]}', "not JSON"),
    ],
)
def test_malformed_payloads_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayloadError, match=reason.replace("(", r"\(")):
        parse_webhook(raw, NOW)


class Collect:
    def __init__(self) -> None:
        self.signals: list[Signal] = []

    def __call__(self, signals: Sequence[Signal]) -> None:
        self.signals.extend(signals)


def test_the_route_answers_200_and_delivers() -> None:
    metrics = AgentMetrics()
    sink = Collect()
    route = alertmanager_route(sink, lambda: NOW, metrics)
    response = route(body(PAYLOAD))
    assert response.status == 200
    assert response.body == b"accepted 2 alert(s)\n"
    assert [s.metric for s in sink.signals] == ["KubePodCrashLooping", "HighLatency"]
    reg = metrics.registry
    assert reg.get_sample_value("aiops_alertmanager_requests_total", {"outcome": "ok"}) == 1
    assert reg.get_sample_value("aiops_alertmanager_alerts_total", {"status": "firing"}) == 1
    assert reg.get_sample_value("aiops_alertmanager_alerts_total", {"status": "resolved"}) == 1


def test_the_route_answers_400_with_the_reason_and_counts_it() -> None:
    metrics = AgentMetrics()
    sink = Collect()
    route = alertmanager_route(sink, lambda: NOW, metrics)
    response = route(body({**PAYLOAD, "version": "3"}))
    assert response.status == 400
    assert b"unsupported payload version '3'" in response.body
    assert route(b"x" * (MAX_BODY + 1)).status == 400
    assert sink.signals == []
    reg = metrics.registry
    assert reg.get_sample_value("aiops_alertmanager_requests_total", {"outcome": "malformed"}) == 1
    assert reg.get_sample_value("aiops_alertmanager_requests_total", {"outcome": "too_large"}) == 1


def test_the_route_answers_503_when_delivery_fails() -> None:
    metrics = AgentMetrics()

    def broken(signals: Sequence[Signal]) -> None:
        raise RuntimeError("engine down")

    assert alertmanager_route(broken, lambda: NOW, metrics)(body(PAYLOAD)).status == 503
    assert (
        metrics.registry.get_sample_value("aiops_alertmanager_requests_total", {"outcome": "unavailable"})
        == 1
    )


PLAYBOOK = """\
apiVersion: aiops/v1
kind: Playbook
metadata: {name: restart-crashlooping}
spec:
  trigger: {signal: alert, metric: KubePodCrashLooping, match: {severity: "warning|critical"}, for: 1m}
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
  actions:
    - restart: {}
  verify: {within: 10m, quiet: 1m}
"""


def test_an_alert_drives_a_playbook_end_to_end() -> None:
    clock = ManualClock(NOW)
    executor = RecordingExecutor()
    audit = AuditLog()
    engine = PlaybookEngine(load_sources([("p.yaml", PLAYBOOK)]), executor, clock, audit)
    route = alertmanager_route(engine.emit, clock.now, AgentMetrics())
    only_firing = {**PAYLOAD, "alerts": [PAYLOAD["alerts"][0]]}
    assert route(body(only_firing)).status == 200
    assert executor.requests == []  # pending: for 1m
    clock.advance(60)
    engine.tick()  # a firing alert holds without being re-sent
    (req,) = executor.requests
    assert (req.action, req.target) == ("restart", Target("Deployment", "shop", "web"))
    resolved = {
        **only_firing,
        "status": "resolved",
        "alerts": [{**PAYLOAD["alerts"][0], "status": "resolved", "endsAt": "2023-11-14T22:15:00Z"}],
    }
    clock.advance(120)
    assert route(body(resolved)).status == 200
    clock.advance(60)
    engine.tick()
    assert [e.state.value for e in audit.incident_events() if e.is_transition][-1] == "resolved"
