"""The playbook engine: incident lifecycle, priority, one remediation per target, guardrails, audit."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest
import yaml

from agent.clock import ManualClock
from agent.metrics import AgentMetrics
from agent.playbook.engine import NoFacts, PlaybookEngine, RecordedFacts, incident_id
from agent.playbook.events import AuditLog, IncidentEvent, IncidentState, SignalRejected
from agent.playbook.guardrails import GuardrailDefaults
from agent.playbook.loader import PlaybookSet, load_sources
from agent.playbook.requests import Proposal, RecordingExecutor
from detectors.freshness import Seen
from detectors.series import SeriesKey
from detectors.signal import Signal, SignalKind
from remediations.registry import make_request
from remediations.state import RecordedAction
from remediations.types import ActionResult, ActionStatus, SignalFacts, Target

T0 = 1_700_000_000.0
WEB = Target("Deployment", "shop", "web")

BASE: dict[str, Any] = {
    "apiVersion": "aiops/v1",
    "kind": "Playbook",
    "metadata": {"name": "restart-web"},
    "spec": {
        "trigger": {
            "signal": "anomaly",
            "metric": "errors",
            "match": {"deployment": ".+"},
            "minScore": 0.9,
            "for": "2m",
        },
        "target": {
            "kind": "Deployment",
            "namespace": "{{ labels.namespace }}",
            "name": "{{ labels.deployment }}",
        },
        "actions": [{"restart": {}}],
        "verify": {"within": "10m", "quiet": "2m"},
        "onFailure": [
            {"notify": {"webhook": "https://hooks.example/x", "message": "failed {{ target.name }}"}}
        ],
        "guardrails": {"cooldown": "30m"},
    },
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def playbook(name: str = "restart-web", **spec: Any) -> str:
    return yaml.safe_dump(merge(BASE, {"metadata": {"name": name}, "spec": spec}), sort_keys=False)


def load(*texts: str) -> PlaybookSet:
    return load_sources([(f"p{i}.yaml", t) for i, t in enumerate(texts)])


class FakeFreshness:
    """Samples of series reported by hand: times after T0, one sample per call."""

    def __init__(self) -> None:
        self.samples: dict[SeriesKey, list[float]] = {}

    def report(self, key: SeriesKey, *times: float) -> None:
        self.samples.setdefault(key, []).extend(T0 + t for t in times)

    def seen(self, key: SeriesKey) -> Seen | None:
        times = self.samples.get(key)
        if not times:
            return None
        interval = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
        return Seen(times[-1], len(times), interval)


class Harness:
    """An engine on a ManualClock; times are seconds after T0."""

    def __init__(
        self,
        *texts: str,
        defaults: GuardrailDefaults | None = None,
        fail: frozenset[str] = frozenset(),
        metrics: AgentMetrics | None = None,
        freshness: FakeFreshness | None = None,
    ) -> None:
        self.clock = ManualClock(T0)
        self.executor = RecordingExecutor(fail=fail)
        self.audit = AuditLog()
        self.facts = RecordedFacts()
        self.engine = PlaybookEngine(
            load(*texts),
            self.executor,
            self.clock,
            self.audit,
            defaults=defaults,
            facts=self.facts,
            metrics=metrics,
            freshness=freshness,
        )

    def run_until(self, at: float) -> None:
        while (d := self.engine.next_deadline()) is not None and d <= T0 + at:
            self.clock.set(d)
            self.engine.tick()
        self.clock.set(T0 + at)

    def signal(
        self,
        at: float,
        *,
        metric: str = "errors",
        score: float = 0.99,
        value: float = 0.3,
        kind: SignalKind = SignalKind.ANOMALY,
        timestamp: float | None = None,
        details: dict[str, Any] | None = None,
        **labels: str,
    ) -> None:
        self.run_until(at)
        labels = {"namespace": "shop", "deployment": "web", **labels}
        ts = T0 + at if timestamp is None else timestamp
        sig = Signal(kind, SeriesKey.of(metric, labels), ts, value, score, "test", details or {})
        self.engine.emit([sig])

    def every(self, start: float, stop: float, step: float = 30.0, **kw: Any) -> None:
        t = start
        while t <= stop:
            self.signal(t, **kw)
            t += step

    def transitions(self, playbook: str | None = None, *, first: bool = False) -> list[tuple[float, str]]:
        events = [
            e
            for e in self.audit.incident_events()
            if e.is_transition and (playbook is None or e.playbook == playbook)
        ]
        if first and events:
            events = [e for e in events if e.incident == events[0].incident]
        return [(e.time - T0, e.state.value) for e in events]

    def requests(self) -> list[tuple[float, str, str]]:
        return [(r.time - T0, r.playbook, r.action) for r in self.executor.requests]

    def held(self) -> list[IncidentEvent]:
        return [e for e in self.audit.incident_events() if e.guardrail is not None]


def test_lifecycle_pending_firing_acting_verifying_resolved() -> None:
    h = Harness(playbook())
    h.every(0, 150)
    h.run_until(3600)
    assert h.transitions() == [
        (0, "pending"),
        (120, "firing"),
        (120, "acting"),
        (120, "verifying"),
        (270, "resolved"),  # last signal at 150, then 2m quiet
    ]
    (req,) = h.executor.requests
    assert (req.action, req.target, req.request.step, req.time) == ("restart", WEB, "actions[0]", T0 + 120)
    assert req.key == f"restart-web/Deployment/shop/web/{req.incident}/actions[0]"
    assert req.incident == incident_id("restart-web", WEB, T0)


@pytest.mark.parametrize(("since", "first"), [(-60.0, -60.0), (-700.0, 0.0), (30.0, 0.0), ("x", 0.0)])
def test_a_signal_standing_for_a_batch_opens_the_incident_of_its_oldest_sample(
    since: object, first: float
) -> None:
    """A breach signalled once for a batch of samples (a backfill, a replay from a checkpoint)
    gets the id it got sample by sample: from ``since``, within ``maxGap`` (5m) before the signal
    and not after it; anything else is ignored."""
    h = Harness(playbook())
    h.signal(0, details={"since": T0 + since if isinstance(since, float) else since})
    (inc,) = h.engine.incidents()
    assert inc["id"] == incident_id("restart-web", WEB, T0 + first)


def test_every_event_has_a_reason_and_the_clock_time() -> None:
    h = Harness(playbook())
    h.every(0, 150)
    h.run_until(3600)
    events = h.audit.incident_events()
    assert events
    assert all(e.reason for e in events)
    resolved = [e for e in events if e.state is IncidentState.RESOLVED]
    assert resolved[0].time == T0 + 270
    assert "no matching signal for 2m" in resolved[0].reason


def test_pending_expires_when_signals_stop_before_for() -> None:
    h = Harness(playbook())
    h.signal(0)
    h.signal(30)  # for: 2m has not elapsed when the signals stop
    h.run_until(3600)
    assert h.transitions() == [(0, "pending"), (330, "expired")]  # maxGap 5m after the last
    assert h.executor.requests == []
    assert "before for: 2m elapsed" in h.audit.incident_events()[-1].reason


def test_firing_needs_a_signal_after_for_has_elapsed() -> None:
    h = Harness(playbook())
    h.signal(0)
    h.signal(90)
    h.run_until(200)
    assert h.transitions() == [(0, "pending")]  # nothing seen since the window ended at 120
    h.signal(200)
    assert h.transitions()[:2] == [(0, "pending"), (200, "firing")]


def test_for_zero_fires_at_the_first_signal() -> None:
    h = Harness(playbook(trigger={"for": 0}))
    h.signal(5)
    assert h.transitions()[:3] == [(5, "pending"), (5, "firing"), (5, "acting")]
    assert h.requests() == [(5, "restart-web", "restart")]


def test_scores_below_min_score_and_other_metrics_do_not_match() -> None:
    h = Harness(playbook(trigger={"for": 0}))
    h.signal(0, score=0.5)
    h.signal(1, metric="latency")
    h.signal(2, deployment="")  # match: deployment .+ needs a value
    assert h.audit.events == []


def test_escalates_and_runs_on_failure_when_the_condition_persists() -> None:
    h = Harness(playbook())
    h.every(0, 1200)
    h.run_until(1300)
    assert (720, "escalated") in h.transitions()  # acted at 120, within 10m
    assert h.requests()[:2] == [(120, "restart-web", "restart"), (720, "restart-web", "notify")]
    notify = h.executor.requests[1]
    assert notify.request.params.to_yaml_dict()["message"] == "failed web"
    assert notify.request.step == "onFailure[0]"
    escalated = next(e for e in h.audit.incident_events() if e.state is IncidentState.ESCALATED)
    assert "did not clear within 10m" in escalated.reason


def test_a_failed_action_ends_failed_and_runs_on_failure() -> None:
    h = Harness(playbook(), fail=frozenset({"restart"}))
    h.every(0, 150)
    h.run_until(3600)
    assert h.transitions(first=True) == [(0, "pending"), (120, "firing"), (120, "acting"), (120, "failed")]
    assert [r.action for r in h.executor.requests] == ["restart", "notify"]
    failed = next(e for e in h.audit.incident_events() if e.state is IncidentState.FAILED and e.is_transition)
    assert "actions[0] (restart) failed" in failed.reason


def test_priority_decides_and_the_other_playbook_is_suppressed() -> None:
    high = playbook("rollback-web", priority=100, actions=[{"rollback": {}}])
    low = playbook("restart-web", priority=10)
    h = Harness(high, low)
    h.every(0, 150)
    h.run_until(3600)
    assert h.requests() == [(120, "rollback-web", "rollback")]
    assert h.transitions("restart-web") == [(0, "pending"), (120, "firing"), (120, "suppressed")]
    (supp,) = [e for e in h.held() if e.playbook == "restart-web"]
    assert supp.guardrail == "priority"
    assert "rollback-web (priority 100" in supp.reason


def test_a_suppressed_incident_stays_muted_until_its_condition_clears() -> None:
    h = Harness(playbook("rollback-web", priority=100, actions=[{"rollback": {}}]), playbook("restart-web"))
    h.every(0, 600)  # keeps both conditions alive; the winner escalates at 720
    assert [s for _, s in h.transitions("restart-web")].count("pending") == 1
    h.run_until(1000)  # silence since 600 > maxGap: the mute lifts
    h.signal(1000)
    assert [s for _, s in h.transitions("restart-web")].count("pending") == 2


def test_one_remediation_in_flight_per_target_and_class_a_higher_priority_waits() -> None:
    low = playbook(
        "delete-web-pods",
        priority=10,
        trigger={"metric": "cpu", "for": 0},
        actions=[{"delete_pod": {"selector": "app=web"}}],
        verify={"within": "10m", "quiet": "5m"},
    )
    high = playbook("restart-web", priority=100)
    h = Harness(low, high)
    h.signal(0, metric="cpu")  # delete-web-pods acts at 0 and verifies until 300
    h.every(10, 400)  # restart-web fires at 130, waits for the target
    h.run_until(3600)
    assert h.requests() == [(0, "delete-web-pods", "delete_pod"), (300, "restart-web", "restart")]
    (wait,) = [e for e in h.held() if e.playbook == "restart-web"]
    assert wait.guardrail == "targetBusy"
    assert wait.time == T0 + 130


def test_a_fix_never_waits_for_a_capacity_incident_and_its_raise_is_released() -> None:
    low = playbook(
        "scale-web",
        priority=10,
        trigger={"metric": "cpu", "for": 0},
        actions=[{"scale": {"by": 1}}],
        verify={"within": "10m", "quiet": "5m"},
    )
    high = playbook("restart-web", priority=100)
    h = Harness(low, high)
    h.signal(0, metric="cpu")  # scale-web acts at 0 and verifies until 300
    h.every(10, 400)  # restart-web fires at 130: a fix, it does not wait for the scale
    h.run_until(3600)
    # scale-web resolved at 300; its raise is released 10 min later
    assert h.requests() == [
        (0, "scale-web", "scale"),
        (130, "restart-web", "restart"),
        (900, "scale-web", "scale"),
    ]
    assert h.executor.requests[-1].request.restore
    assert not [e for e in h.held() if e.playbook == "restart-web" and e.guardrail == "targetBusy"]


def test_cooldown_holds_a_new_incident_then_lets_it_act() -> None:
    h = Harness(playbook())
    h.every(0, 2100)
    # first remediation at 120, escalated at 720; the next incident opens with the signal at 720,
    # fires at 840, and the cooldown (30m from 120) holds it until 1920
    assert h.requests() == [
        (120, "restart-web", "restart"),
        (720, "restart-web", "notify"),
        (1920, "restart-web", "restart"),
    ]
    cooldown = [e for e in h.held() if e.guardrail == "cooldown"]
    assert len(cooldown) == 1  # one event per hold, not one per signal
    assert cooldown[0].time == T0 + 840
    assert "cooldown 30m" in cooldown[0].reason


def test_the_agent_default_is_stricter_than_the_playbook() -> None:
    defaults = GuardrailDefaults(cooldown=3600.0)
    h = Harness(playbook(), defaults=defaults)
    h.every(0, 3800)
    restarts = [t for t, _, a in h.requests() if a == "restart"]
    assert restarts == [120, 3720]


def test_max_per_hour_per_target() -> None:
    h = Harness(
        playbook(trigger={"for": 0}, guardrails={"cooldown": 0, "maxPerHour": 2}),
        defaults=GuardrailDefaults(cooldown=0, repeat_window=0),  # the rate limit alone
    )
    h.signal(0)  # two short incidents, each resolved before the next
    h.signal(600)
    h.every(1200, 3700, step=60)  # a third, long one
    restarts = [t for t, _, a in h.requests() if a == "restart"]
    assert restarts == [0, 600, 3600]  # the third waited for the first to leave the hour
    (rate,) = [e for e in h.held() if e.guardrail == "maxPerHour"]
    assert "2 corrective actions in the last hour on this target, limit 2" in rate.reason


def test_namespace_outside_the_allow_list_is_suppressed() -> None:
    h = Harness(playbook(trigger={"for": 0}), defaults=GuardrailDefaults(namespaces=["shop"]))
    h.signal(0, namespace="kube-system")
    assert h.executor.requests == []
    (e,) = h.held()
    assert (e.state, e.guardrail) == (IncidentState.SUPPRESSED, "namespaces")
    assert "'kube-system' is not in the allow-list (shop)" in e.reason


def test_when_condition_holds_until_a_rollout_is_known() -> None:
    h = Harness(playbook(trigger={"for": 0}, when=[{"rolloutWithin": "30m"}]))
    h.signal(0)
    assert h.executor.requests == []
    (e,) = h.held()
    assert e.guardrail == "when.rolloutWithin"
    assert "no rollout known" in e.reason
    h.facts.record_rollout(WEB, T0 - 60)
    h.signal(30)
    assert h.requests() == [(30, "restart-web", "restart")]


def restart_then_rollback(when: list[dict[str, str]]) -> Harness:
    """restart-web (priority 80) and rollback-web (90, held by ``when``) on one signal, no cooldowns."""
    restart = playbook(trigger={"for": 0}, priority=80, guardrails={"cooldown": 0})
    rollback = playbook(
        "rollback-web",
        trigger={"for": 0},
        priority=90,
        when=when,
        actions=[{"rollback": {}}],
        guardrails={"cooldown": 0},
    )
    return Harness(rollback, restart, defaults=GuardrailDefaults(cooldown=0))


def test_a_condition_that_comes_back_after_a_restart_is_rolled_back_not_restarted_again() -> None:
    # restart first; the same condition back after that restart: the higher-priority rollback,
    # held the first time (no restart before its incident began), now acts instead
    h = restart_then_rollback([{"restartedWithin": "24h"}, {"rolloutWithin": "24h"}])
    h.facts.record_rollout(WEB, T0 - 3600)
    h.every(0, 60)  # the restart acts at 0; the rollback stays held through the episode
    h.run_until(1000)
    assert h.requests() == [(0, "restart-web", "restart")]
    reasons = [e.reason for e in h.held() if e.playbook == "rollback-web"]
    assert reasons
    assert "when.restartedWithin" in {e.guardrail for e in h.held() if e.playbook == "rollback-web"}
    assert "no restart by the agent known" in reasons[0]
    assert all("restart" in r for r in reasons)
    h.signal(3 * 3600)  # back three hours later
    assert h.requests() == [(0, "restart-web", "restart"), (3 * 3600, "rollback-web", "rollback")]
    assert [s for _, s in h.transitions("restart-web")][-1] == "suppressed"
    acting = next(
        e for e in h.audit.incident_events() if e.playbook == "rollback-web" and e.state.value == "acting"
    )
    assert "restarted 3h ago by the agent" in acting.reason


def test_restarted_within_counts_only_restarts_before_the_incident_and_within_the_limit() -> None:
    h = restart_then_rollback([{"restartedWithin": "1h"}])
    h.signal(0)
    h.run_until(1000)
    h.signal(3 * 3600)  # back, but the restart was 3 h before: a second restart, for a person
    assert [a for _, _, a in h.requests()] == ["restart", "restart"]
    held = [e for e in h.held() if e.playbook == "rollback-web"]
    assert any("last restart 3h before it" in e.reason for e in held)


SATURATION = {"withoutSignal": {"signal": "threshold", "metric": "cpu", "within": "5m"}}


def test_without_signal_holds_while_the_target_saw_such_a_signal_and_acts_once_it_is_past() -> None:
    h = Harness(playbook(trigger={"for": 0}, when=[SATURATION]))
    h.signal(0, metric="cpu", kind=SignalKind.THRESHOLD, score=0.5)  # any score: a kind, not a bar
    h.signal(0, metric="cpu", kind=SignalKind.THRESHOLD, score=1.0, deployment="api")  # another target
    h.signal(60)
    assert h.executor.requests == []
    (e,) = h.held()
    assert e.guardrail == "when.withoutSignal"
    why = "no threshold signal on cpu for the target within the last 5m does not hold (the last one 1m ago)"
    assert why in e.reason
    h.every(90, 330)  # the condition goes on; the saturation signal is 5m old at 300
    assert h.requests() == [(300, "restart-web", "restart")]
    acting = next(e for e in h.audit.incident_events() if e.state.value == "acting")
    assert "no such signal within 5m" in acting.reason
    checked = {"name": "when.withoutSignal", "limit": 300.0, "lastSignal": None, "ok": True}
    assert checked in acting.details["guardrails"]  # the decision record has what was checked


def test_without_signal_reads_only_its_kind_and_metric_on_the_incident_target() -> None:
    h = Harness(playbook(trigger={"for": 0}, when=[SATURATION]))
    h.signal(0, metric="cpu", kind=SignalKind.ANOMALY)  # another kind
    h.signal(0, metric="cpu_seconds", kind=SignalKind.THRESHOLD)  # the metric matches whole names
    h.signal(0, metric="cpu", kind=SignalKind.THRESHOLD, namespace="other")  # another target
    h.signal(0, metric="cpu", kind=SignalKind.THRESHOLD, timestamp=T0 - 400)  # older than 5m
    h.signal(10)
    assert h.requests() == [(10, "restart-web", "restart")]


def test_without_signal_counts_a_future_stamp_from_now_and_forgets_entries_past_their_window() -> None:
    h = Harness(playbook(trigger={"for": 0}, when=[SATURATION]))
    h.signal(0, metric="cpu", kind=SignalKind.THRESHOLD, timestamp=T0 + 86400)  # a clock far ahead
    h.signal(60)
    assert h.executor.requests == []
    h.signal(301)  # 5m after the saturation signal arrived, not after its stamp
    assert h.requests() == [(301, "restart-web", "restart")]
    assert h.engine._absent == {}


def test_without_signal_memory_survives_a_reload_only_while_the_condition_is_the_same() -> None:
    h = Harness(playbook(trigger={"for": 0}, when=[SATURATION]))
    h.signal(0, metric="cpu", kind=SignalKind.THRESHOLD)
    h.engine.replace_playbooks(load(playbook(trigger={"for": 0}, when=[SATURATION], priority=7)))
    h.signal(30)
    assert h.executor.requests == []  # the same condition: the saturation 30 s ago still holds it
    other = {"withoutSignal": {"signal": "threshold", "metric": "cpu", "within": "2m"}}
    h.engine.replace_playbooks(load(playbook(trigger={"for": 0}, when=[other])))
    h.signal(60)
    assert h.requests() == [(60, "restart-web", "restart")]  # a changed condition starts afresh


def test_approval_pauses_the_incident_until_the_result_is_reported() -> None:
    pb = playbook(
        trigger={"for": 0},
        actions=[{"restart": {}}, {"notify": {"webhook": "https://hooks.example/x", "message": "done"}}],
        guardrails={"approval": "required"},
    )
    h = Harness(pb)
    h.signal(0)
    (req,) = h.executor.requests
    assert h.executor.results[0].status is ActionStatus.PENDING_APPROVAL
    assert h.transitions()[-1] == (0, "acting")
    h.run_until(100)
    h.engine.report(ActionResult(ActionStatus.EXECUTED, "approved by ops", req.action, req.key, req.target))
    assert [r.action for r in h.executor.requests] == ["restart", "notify"]
    assert h.transitions()[-1] == (100, "verifying")


def test_dry_run_reaches_the_executor() -> None:
    h = Harness(playbook(trigger={"for": 0}, guardrails={"dryRun": True}))
    h.signal(0)
    (req,) = h.executor.requests
    assert req.request.dry_run
    assert h.executor.results[0].status is ActionStatus.DRY_RUN


@pytest.mark.parametrize(
    ("label", "value", "problem"),
    [
        ("deployment", "{{ labels.secret }}", "template braces"),
        ("deployment", "../kube-system", "path element"),
        ("namespace", "shop\nkube-system", "control character"),
        ("deployment", "Web", "not a valid Kubernetes name"),
        ("namespace", "a.b", "not a valid Kubernetes name"),  # a namespace is a DNS label: no dots
    ],
)
def test_a_label_that_is_not_a_name_is_rejected_never_expanded(label: str, value: str, problem: str) -> None:
    h = Harness(playbook(trigger={"for": 0}))
    labels: dict[str, Any] = {label: value, "secret": "oops"}
    h.signal(0, **labels)
    assert h.executor.requests == []
    (e,) = h.audit.events
    assert isinstance(e, SignalRejected)
    assert problem in e.reason
    assert "oops" not in e.reason


def test_a_label_with_braces_in_a_message_stays_literal() -> None:
    pb = playbook(
        trigger={"for": 0},
        actions=[{"notify": {"webhook": "https://hooks.example/x", "message": "note: {{ labels.note }}"}}],
    )
    h = Harness(pb)
    h.signal(0, note="{{ incident.id }}")
    assert h.executor.requests[0].request.params.to_yaml_dict()["message"] == "note: {{ incident.id }}"


def test_stale_signals_open_nothing() -> None:
    h = Harness(playbook(trigger={"for": 0}))
    h.signal(3600, timestamp=T0)  # an hour old on arrival: a backfill, a lagging consumer
    assert h.audit.events == []


def test_an_alert_holds_until_resolved_then_verification_counts_quiet() -> None:
    alert = playbook(trigger={"signal": "alert", "metric": "HighErrorRate", "for": 0})
    h = Harness(alert)
    firing = {"status": "firing", "fingerprint": "abc"}
    h.signal(0, kind=SignalKind.ALERT, metric="HighErrorRate", score=1.0, details=firing)
    h.run_until(400)
    assert h.transitions()[-1] == (0, "verifying")  # no notification since, but the alert still fires
    h.signal(
        400,
        kind=SignalKind.ALERT,
        metric="HighErrorRate",
        score=0.0,
        details={**firing, "status": "resolved"},
    )
    h.run_until(3600)
    assert h.transitions()[-1] == (520, "resolved")  # 2m quiet after the resolve, within 10m


def test_an_alert_still_firing_at_the_deadline_escalates() -> None:
    h = Harness(playbook(trigger={"signal": "alert", "metric": "HighErrorRate", "for": 0}))
    h.signal(
        0,
        kind=SignalKind.ALERT,
        metric="HighErrorRate",
        score=1.0,
        details={"status": "firing", "fingerprint": "f"},
    )
    h.run_until(3600)
    assert (600, "escalated") in h.transitions()
    assert "an alert is still firing" in next(
        e.reason for e in h.audit.incident_events() if e.state is IncidentState.ESCALATED
    )


def test_a_resolved_alert_ends_a_pending_incident() -> None:
    h = Harness(playbook(trigger={"signal": "alert", "metric": "HighErrorRate", "for": "5m"}))
    details = {"status": "firing", "fingerprint": "f"}
    h.signal(0, kind=SignalKind.ALERT, metric="HighErrorRate", score=1.0, details=details)
    h.signal(
        60,
        kind=SignalKind.ALERT,
        metric="HighErrorRate",
        score=0.0,
        details={**details, "status": "resolved"},
    )
    assert h.transitions() == [(0, "pending"), (60, "expired")]


def test_the_same_signals_give_the_same_keys_after_a_restart() -> None:
    keys = []
    for _ in range(2):
        h = Harness(playbook())
        h.every(0, 150)
        keys.append([r.key for r in h.executor.requests])
    assert keys[0] == keys[1]
    assert keys[0]


def test_a_reload_expires_waiting_incidents_of_changed_playbooks_and_keeps_acting_ones() -> None:
    h = Harness(
        playbook("restart-web"), playbook("slow-web", trigger={"for": "10m"}, actions=[{"rollback": {}}])
    )
    h.every(0, 150)  # restart-web is verifying at 150, slow-web pending
    h.engine.replace_playbooks(
        load(
            playbook("restart-web"), playbook("slow-web", trigger={"for": "20m"}, actions=[{"rollback": {}}])
        )
    )
    assert h.transitions("slow-web") == [(0, "pending"), (150, "expired")]
    expired = [e for e in h.audit.incident_events() if e.playbook == "slow-web"][-1]
    assert expired.reason == "playbook changed by a reload"
    h.run_until(3600)
    assert h.transitions("restart-web")[-1] == (270, "resolved")


def test_metrics_count_transitions_actions_and_open_incidents() -> None:
    metrics = AgentMetrics()
    h = Harness(playbook(), metrics=metrics)
    h.every(0, 150)
    reg = metrics.registry
    assert (
        reg.get_sample_value(
            "aiops_incident_transitions_total", {"playbook": "restart-web", "state": "acting"}
        )
        == 1
    )
    assert (
        reg.get_sample_value(
            "aiops_playbook_actions_total",
            {"playbook": "restart-web", "action": "restart", "status": "executed"},
        )
        == 1
    )
    assert reg.get_sample_value("aiops_incidents_open") == 1
    h.run_until(3600)
    assert reg.get_sample_value("aiops_incidents_open") == 0


def test_an_executor_that_raises_fails_the_step_not_the_engine() -> None:
    class Broken:
        def submit(self, request: Any) -> ActionResult:
            raise RuntimeError("boom")

    clock = ManualClock(T0)
    audit = AuditLog()
    engine = PlaybookEngine(load(playbook(trigger={"for": 0})), Broken(), clock, audit)
    engine.emit(
        [
            Signal(
                SignalKind.ANOMALY,
                SeriesKey.of("errors", {"namespace": "shop", "deployment": "web"}),
                T0,
                1,
                1,
                "t",
            )
        ]
    )
    states = [e.state for e in audit.incident_events() if e.is_transition]
    assert states[-1] is IncidentState.FAILED
    assert any("executor error: boom" in e.reason for e in audit.incident_events())


def test_open_incidents_are_bounded() -> None:
    clock = ManualClock(T0)
    audit = AuditLog()
    engine = PlaybookEngine(load(playbook()), RecordingExecutor(), clock, audit, max_incidents=3)
    engine.emit(
        [
            Signal(
                SignalKind.ANOMALY,
                SeriesKey.of("errors", {"namespace": "shop", "deployment": f"w{i}"}),
                T0,
                1,
                1,
                "t",
            )
            for i in range(10)
        ]
    )
    assert len(engine.incidents()) == 3
    rejected = [e for e in audit.events if isinstance(e, SignalRejected)]
    assert rejected
    assert "3 incidents from signals open" in rejected[0].reason


def test_a_targets_incident_history_forgets_what_ended_a_day_ago() -> None:
    h = Harness(playbook(), defaults=GuardrailDefaults(repeat_window=3600))  # each restart runs
    for start in (0.0, 40_000.0, 90_000.0):
        h.every(start, start + 150)
        h.run_until(start + 3600)
    spans = [tuple(t - T0 for t in span) for span in h.executor.requests[-1].request.unhealthy]
    # the first incident (fired 120, resolved 270) ended more than a day before the third fired
    assert spans == [(40_120, 40_270), (90_120, 90_120)]


# ---------------------------------------------------------------- classes, budgets, repeats


def scale_playbook(name: str = "scale-web", **spec: Any) -> str:
    return playbook(
        name,
        priority=10,
        trigger={"metric": "rps", "for": 0},
        actions=[{"scale": {"by": 1}}],
        verify={"clears": False},
        guardrails={"cooldown": 0},
        **spec,
    )


def test_capacity_actions_never_spend_the_budget_a_fix_needs() -> None:
    defaults = GuardrailDefaults(cooldown=0, max_per_hour=2, max_per_hour_total=2)
    h = Harness(scale_playbook(), playbook(trigger={"for": 0}), defaults=defaults)
    for t in (0, 60, 120, 180):  # the forecast scales every minute: held after two
        h.signal(t, metric="rps")
    h.signal(200)  # the fix
    actions = [(t, a) for t, _, a in h.requests()]
    assert actions == [(0, "scale"), (60, "scale"), (200, "restart")]
    held = [e for e in h.held() if e.playbook == "scale-web"]
    assert held
    assert {e.guardrail for e in held} <= {"maxPerHour", "agent.max_per_hour_total"}
    assert "capacity actions in the last hour" in held[0].reason
    assert not [e for e in h.held() if e.playbook == "restart-web"]


def test_a_routine_floor_is_no_incident_in_the_health_a_rollback_reads() -> None:
    # the forecast sets the floor every few minutes (verify.clears: false): routine, not trouble;
    # counted, no revision would ever have been a quarter of an hour without an incident
    defaults = GuardrailDefaults(cooldown=0)
    rollback = playbook("rollback-web", trigger={"for": 0}, actions=[{"rollback": {}}])
    h = Harness(
        scale_playbook(),
        playbook("restart-web", trigger={"metric": "mem", "for": 0}),
        rollback,
        defaults=defaults,
    )
    for t in range(0, 3600, 300):
        h.signal(t, metric="rps")
    h.signal(4000, metric="mem")  # a real incident: a restart, verified within 10m
    h.run_until(5000)
    h.signal(6000)  # the error spike: the rollback reads when the target was in trouble
    (request,) = [r.request for r in h.executor.requests if r.action == "rollback"]
    spans = [tuple(t - T0 for t in span) for span in request.unhealthy]
    assert len([r for r in h.executor.requests if r.action == "scale"]) >= 6  # every hour's budget
    assert spans == [(4000, spans[0][1]), (6000, 6000)]
    assert 4000 < spans[0][1] <= 4600


def test_while_a_fix_is_open_capacity_may_scale_up_not_down() -> None:
    h = Harness(scale_playbook(), playbook(trigger={"for": 0}))
    h.signal(0)  # restart-web acts and verifies for 10 minutes
    h.signal(30, metric="rps")
    scale = next(r for r in h.executor.requests if r.action == "scale")
    assert scale.request.limits.scale_down is False
    h.run_until(3600)  # the fix resolved
    h.signal(3600, metric="rps")
    later = [r for r in h.executor.requests if r.action == "scale" and not r.request.restore][-1]
    assert later.request.limits.scale_down is True


def test_a_second_fix_of_the_same_kind_within_the_window_waits_for_a_person() -> None:
    h = Harness(
        playbook(trigger={"for": 0}, guardrails={"cooldown": 0}), defaults=GuardrailDefaults(cooldown=0)
    )
    h.signal(0)
    h.run_until(1000)  # resolved
    h.signal(2000)  # a new spike: a second restart within 24h
    first, second = [r for r in h.executor.requests if r.action == "restart"]
    assert first.approval.value == "none"
    assert second.approval.value == "required"
    (repeat,) = [e for e in h.held() if e.guardrail == "repeat"]
    assert "restart already ran on Deployment/shop/web 33m20s ago" in repeat.reason
    assert [r.status for r in h.executor.results if r.key == second.key] == [ActionStatus.PENDING_APPROVAL]


def test_a_skip_for_a_key_already_executed_starts_no_cooldown() -> None:
    h = Harness(playbook(trigger={"for": 0}, guardrails={"cooldown": "30m"}))
    sig_ts = T0 - 5.0
    h.signal(0, timestamp=sig_ts)
    h.run_until(1000)
    # the same incident id after a restart: a fresh engine, an executor that executed the key
    restarted = Harness(playbook(trigger={"for": 0}, guardrails={"cooldown": "30m"}))
    restarted.executor = h.executor
    restarted.engine.executor = h.executor
    restarted.signal(0, timestamp=sig_ts)
    (skip,) = [r for r in h.executor.results if r.status is ActionStatus.SKIPPED]
    assert skip.key == h.executor.requests[0].key
    assert restarted.engine.ledger.last_remediation("restart-web", WEB) is None
    assert restarted.engine.ledger.actions_since(0.0) == []


# ---------------------------------------------------------------- incident identity


def test_a_resent_alert_joins_its_open_incident_and_a_new_episode_gets_a_new_id() -> None:
    alert = playbook(
        trigger={"signal": "alert", "metric": "HighErrorRate", "for": 0}, guardrails={"cooldown": 0}
    )
    h = Harness(alert, defaults=GuardrailDefaults(cooldown=0, repeat_window=0))
    firing = {"status": "firing", "fingerprint": "abc"}
    started = T0 - 60.0  # the alert's startsAt
    kw: dict[str, Any] = {"kind": SignalKind.ALERT, "metric": "HighErrorRate", "timestamp": started}
    h.signal(0, score=1.0, details=firing, **kw)
    h.signal(60, score=1.0, details=firing, **kw)  # re-sent while firing: the same incident
    assert len({r.incident for r in h.executor.requests}) == 1
    h.signal(120, score=0.0, details={**firing, "status": "resolved"}, **kw)
    h.run_until(1000)
    assert h.transitions()[-1][1] == "resolved"
    h.signal(1200, score=1.0, details=firing, **kw)  # the same startsAt, a new episode
    ids = [r.incident for r in h.executor.requests if r.action == "restart"]
    assert len(ids) == 2
    assert ids[0] != ids[1]
    assert ids[1] == f"{ids[0]}-2"
    statuses = [r.status for r in h.executor.results if r.key.endswith("actions[0]")]
    assert statuses == [ActionStatus.EXECUTED, ActionStatus.EXECUTED]


# ---------------------------------------------------------------- fresh evidence


ERRORS = SeriesKey.of("errors", {"namespace": "shop", "deployment": "web"})


def test_silence_is_not_recovery_a_series_that_stops_reporting_goes_stale_then_escalates() -> None:
    fresh = FakeFreshness()
    h = Harness(playbook(trigger={"for": 0}), freshness=fresh)
    fresh.report(ERRORS, *range(-150, 1, 15))
    h.signal(0)  # acts at 0, verifies for 10m with 2m quiet
    h.run_until(3600)  # the series never reports again
    states = [st for _, st in h.transitions()]
    assert "resolved" not in states
    assert states[-2:] == ["stale", "escalated"]
    stale = [e for e in h.audit.incident_events() if e.state is IncidentState.STALE and e.is_transition]
    assert stale[0].time == T0 + 120  # the quiet period ends with a series 120 s silent at a 15 s interval
    assert "silence is not recovery" in stale[0].reason


def test_resolved_only_on_fresh_samples_under_the_bar() -> None:
    fresh = FakeFreshness()
    h = Harness(playbook(trigger={"for": 0}), freshness=fresh)
    fresh.report(ERRORS, *range(-150, 1, 15))
    h.signal(0)
    for t in range(15, 400, 15):  # the series keeps reporting, no signal: under the bar
        h.run_until(t)
        fresh.report(ERRORS, t)
    h.run_until(3600)
    assert h.transitions()[-1] == (120, "resolved")


def test_a_stale_incident_comes_back_when_samples_return() -> None:
    fresh = FakeFreshness()
    h = Harness(playbook(trigger={"for": 0}), freshness=fresh)
    fresh.report(ERRORS, *range(-150, 1, 15))
    h.signal(0)
    h.run_until(200)  # stale since 120: nothing came
    for t in range(210, 600, 15):
        h.run_until(t)
        fresh.report(ERRORS, t)
    h.run_until(3600)
    states = [st for _, st in h.transitions()]
    assert states[-3:] == ["stale", "verifying", "resolved"]


# ---------------------------------------------------------------- retries


class FlakyExecutor(RecordingExecutor):
    """Fails the first ``failures`` requests with a retryable error, then succeeds."""

    def __init__(self, failures: int, retry_after: float | None) -> None:
        super().__init__()
        self.failures = failures
        self.retry_after = retry_after

    def submit(self, proposal: Proposal) -> ActionResult:
        self.requests.append(proposal)
        if self.failures > 0:
            self.failures -= 1
            return ActionResult(
                ActionStatus.FAILED,
                "409 conflict",
                proposal.action,
                proposal.key,
                retryable=True,
                retry_after=self.retry_after,
            )
        return ActionResult(ActionStatus.EXECUTED, "ok", proposal.action, proposal.key)


def test_a_retryable_failure_is_tried_again_after_the_delay_the_action_gave() -> None:
    h = Harness(playbook(trigger={"for": 0}))
    h.executor = FlakyExecutor(failures=2, retry_after=20.0)
    h.engine.executor = h.executor
    h.signal(0)
    h.run_until(3600)
    assert [t for t, _, a in h.requests() if a == "restart"] == [0, 20, 40]
    assert h.transitions()[-1][1] == "resolved"


def test_retries_stop_at_the_incident_deadline() -> None:
    h = Harness(playbook(trigger={"for": 0}))
    h.executor = FlakyExecutor(failures=1000, retry_after=None)
    h.engine.executor = h.executor
    h.signal(0)
    h.run_until(3600)
    restarts = [t for t, _, a in h.requests() if a == "restart"]
    assert restarts == list(range(0, 601, 30))  # every 30 s until verify.within (10m)
    assert "failed" in [st for _, st in h.transitions()]


# ---------------------------------------------------------------- protected namespaces


def test_a_playbook_aimed_at_kube_system_is_refused_and_audited() -> None:
    h = Harness(playbook(trigger={"for": 0}))
    h.signal(0, namespace="kube-system", deployment="coredns")
    assert h.executor.requests == []
    (e,) = h.held()
    assert (e.state, e.guardrail) == (IncidentState.SUPPRESSED, "protected")
    assert "namespace 'kube-system' is protected" in e.reason


def test_only_an_explicit_entry_lifts_the_protection() -> None:
    defaults = GuardrailDefaults(unprotect=["kube-system"])
    h = Harness(playbook(trigger={"for": 0}), defaults=defaults)
    h.signal(0, namespace="kube-system", deployment="coredns")
    assert [r.target.namespace for r in h.executor.requests] == ["kube-system"]
    other = Harness(playbook(trigger={"for": 0}), defaults=GuardrailDefaults(namespaces=None))
    other.signal(0, namespace="kube-public", deployment="x")
    assert other.executor.requests == [], "an allow-list of all namespaces does not lift it"


def test_a_flood_of_alerts_cannot_take_the_slots_or_budgets_a_detected_incident_needs() -> None:
    alert = playbook(
        "restart-on-alert",
        trigger={"signal": "alert", "metric": "Crash", "for": 0},
        guardrails={"cooldown": 0},
    )
    h = Harness(alert, playbook(trigger={"for": 0}), defaults=GuardrailDefaults(cooldown=0))
    h.engine.max_alert_incidents = 50
    firing = {"status": "firing"}
    alerts = [
        Signal(
            SignalKind.ALERT,
            SeriesKey.of("Crash", {"namespace": "shop", "deployment": f"d{i}"}),
            T0,
            1.0,
            1.0,
            "alertmanager",
            {**firing, "fingerprint": f"f{i}"},
        )
        for i in range(10_000)
    ]
    h.engine.emit(alerts)  # one POST of 10,000 alerts
    restarts = [r for r in h.executor.requests if r.playbook == "restart-on-alert"]
    assert len(restarts) == 30  # the alerts' own agent-wide budget (max_per_hour_total 30)
    rejected = [e for e in h.audit.events if isinstance(e, SignalRejected)]
    assert rejected
    assert "50 incidents from alerts open" in rejected[0].reason
    h.signal(10)  # a real anomaly on web: its restart runs at once
    assert [r.target.name for r in h.executor.requests if r.playbook == "restart-web"] == ["web"]


def test_two_playbooks_never_act_on_one_target_at_the_same_instant() -> None:
    def capacity(name: str, priority: int, step: dict[str, Any]) -> str:
        return playbook(
            name,
            priority=priority,
            trigger={"metric": "cpu", "for": 0},
            actions=[{"scale": step}],
            verify={"clears": False},
            guardrails={"cooldown": 0},
        )

    h = Harness(capacity("scale-a", 50, {"by": 1}), capacity("scale-b", 40, {"by": 3}))
    h.signal(0, metric="cpu")  # both match, both could finish at once (clears: false)
    assert [r.playbook for r in h.executor.requests] == ["scale-a"]
    (suppressed,) = [e for e in h.held() if e.playbook == "scale-b"]
    assert (suppressed.state, suppressed.guardrail) == (IncidentState.SUPPRESSED, "priority")


class UnreadableRecords(NoFacts):
    """The target's actions record cannot be read (an API error), until ``readable``."""

    def __init__(self) -> None:
        self.readable = False

    def last_rollout(self, target: Target) -> float | None:
        return None

    def actions_on(self, target: Target) -> Sequence[RecordedAction] | None:
        return () if self.readable else None


def test_an_incident_is_held_while_the_records_of_past_actions_cannot_be_read() -> None:
    h = Harness(playbook(trigger={"for": 0}))
    facts = UnreadableRecords()
    h.engine.facts = facts
    h.signal(0)
    h.signal(20)
    assert h.executor.requests == []
    (held,) = h.held()
    assert held.guardrail == "records"
    assert "the actions recorded on Deployment/shop/web cannot be read" in held.reason
    facts.readable = True
    h.signal(40)
    assert h.requests() == [(40, "restart-web", "restart")]


def test_a_forecast_signals_measured_capacity_reaches_the_request_and_survives_a_stored_proposal() -> None:
    """Signal details -> Signal.capacity_per_pod -> ActionRequest.signal.capacity -> an approval
    record (Proposal.to_dict / from_dict), like forecast_mean -> signal.mean."""
    details = {"forecast_mean": 400.0, "capacity_per_pod": 80.0, "observed_peak": 350.0}
    signal = Signal(SignalKind.FORECAST, SeriesKey.of("rps", {}), 0.0, 600.0, 1.0, "forecast", details)
    assert (signal.forecast_mean, signal.capacity_per_pod, signal.observed_peak) == (400.0, 80.0, 350.0)
    for bad in (0.0, -3.0, float("nan"), True, "80"):
        odd = Signal(
            SignalKind.FORECAST, SeriesKey.of("rps", {}), 0.0, 1.0, 1.0, "f", {"capacity_per_pod": bad}
        )
        assert odd.capacity_per_pod is None, bad
    anomaly = Signal(SignalKind.ANOMALY, SeriesKey.of("rps", {}), 0.0, 1.0, 1.0, "f", details)
    assert anomaly.capacity_per_pod is None  # only a forecast carries one
    request = make_request(
        "scale",
        Target("Deployment", "shop", "web"),
        {"toForecast": {}},
        playbook="p",
        incident="i",
        step="s",
        signal=SignalFacts(signal.value, signal.forecast_mean, signal.capacity_per_pod, signal.observed_peak),
    )
    stored = Proposal.from_dict(Proposal(request, 0.0).to_dict())
    assert (stored.request.signal.mean, stored.request.signal.capacity) == (400.0, 80.0)
    assert stored.request.signal.observed == 350.0
    assert anomaly.observed_peak is None
