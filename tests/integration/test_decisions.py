"""Decisions end to end over HTTP: every shipped playbook, the engine, the executor and the twin.

Each test replays one sequence that made the agent act wrongly or not at all: a rollback back to
the bad version, fixes starved by capacity actions, a series going silent, a re-sent alert, a
raised floor never put back. Signals are given by hand (the detectors have their own tests);
samples are counted by the same freshness tracker the daemon's detector bank keeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from agent.audit import Audit, MemoryAuditSink
from agent.config import ExecutorConfig
from agent.executor import KubeExecutor
from agent.facts import KubeFacts
from agent.leader import StaticLeader
from agent.playbook.engine import PlaybookEngine
from agent.playbook.events import AuditLog, IncidentEvent
from agent.playbook.guardrails import GuardrailDefaults
from agent.playbook.loader import PlaybookSet, load_paths, load_sources
from detectors import SampleBatch, SeriesKey, SeriesRegistry, Signal
from detectors.freshness import SeriesFreshness
from detectors.signal import SignalKind
from remediations.scale import raise_of
from remediations.state import RecordedAction, recorded_actions
from remediations.types import Target
from simulations.pager import Pager
from simulations.twin import TwinCluster
from tests.integration.test_remediation_support import Cluster, hpa_body, open_cluster

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "playbooks"
STEP = 15.0
CAPACITY_PER_POD = 50.0


@pytest.fixture
def cluster(twin_cluster: Any) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _close_pagers() -> Iterator[None]:
    yield
    for loop in Loop.opened:
        loop.pager.close()
    Loop.opened.clear()


class Loop:
    """The daemon's decision half on the twin's clock: engine, executor, audit, freshness."""

    opened: ClassVar[list[Loop]] = []

    def __init__(
        self,
        cluster: Cluster,
        tmp: Path,
        playbooks: PlaybookSet | None = None,
        defaults: GuardrailDefaults | None = None,
        agent_record: Target | None = None,
    ) -> None:
        assert cluster.twin is not None
        self.cluster = cluster
        self.twin: TwinCluster = cluster.twin.twin
        self.clock = self.twin.clock
        self.series = SeriesRegistry()
        self.freshness = SeriesFreshness(self.series)
        self.pager = Pager()  # the notify steps' webhook, on loopback
        self.decisions = MemoryAuditSink()
        self.audit = AuditLog()
        config = ExecutorConfig(
            enabled=True, approvals_dir=tmp / "approvals", audit_file=None, audit_topic=None
        )
        self.executor = KubeExecutor(
            cluster.kube,
            config,
            self.clock,
            Audit([self.decisions]),
            leader=StaticLeader(True),
            instance="test",
            environ=self.pager.environ(),
            agent_record=agent_record,
        )
        self.engine = PlaybookEngine(
            playbooks if playbooks is not None else load_paths([SHIPPED]),
            self.executor,
            self.clock,
            self.audit,
            defaults=defaults or GuardrailDefaults(),
            facts=KubeFacts(cluster.kube, self.clock, ttl=0.0, agent_record=agent_record),
            freshness=self.freshness,
        )
        self.executor.bind(self.engine.report, self.engine.vet)
        Loop.opened.append(self)

    def key(self, metric: str, deployment: str) -> SeriesKey:
        return SeriesKey.of(metric, {"namespace": self.cluster.ns, "deployment": deployment})

    def step(
        self,
        samples: dict[SeriesKey, float] | None = None,
        signals: list[tuple[SeriesKey, SignalKind, float, float]] | None = None,
    ) -> None:
        """One scrape interval: the clock moves, samples arrive, signals (key, kind, value, score)."""
        self.twin.advance(STEP)
        now = self.clock.now()
        if samples:
            ids = [self.series.id_for(k) for k in samples]
            self.freshness.observe(SampleBatch.from_arrays(ids, [now] * len(ids), list(samples.values())))
        if signals:
            self.engine.emit(
                [
                    Signal(kind, key, now, value, score, "test", details(kind))
                    for key, kind, value, score in signals
                ]
            )
        self.engine.tick()
        self.executor.tick()

    def executed(self, action: str | None = None) -> list[tuple[str, str]]:
        """(action, message) of each executed decision."""
        return [
            (r.action, r.message)
            for r in self.decisions.records
            if r.decision.value == "executed" and (action is None or r.action == action)
        ]

    def transitions(self, playbook: str) -> list[str]:
        return [
            e.state.value for e in self.audit.incident_events() if e.is_transition and e.playbook == playbook
        ]

    def held(self, playbook: str) -> list[IncidentEvent]:
        return [e for e in self.audit.incident_events() if e.playbook == playbook and e.guardrail is not None]


def details(kind: SignalKind) -> dict[str, float]:
    """A forecast signal carries the capacity per pod its detector measured (the shipped
    scale-ahead-of-forecast playbook sizes on it); here 50 requests/s per pod."""
    return {"capacity_per_pod": CAPACITY_PER_POD} if kind is SignalKind.FORECAST else {}


def version(cluster: Cluster, name: str = "checkout") -> str:
    (env,) = cluster.read("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["env"]
    return str(env["value"])


def good_then_bad(cluster: Cluster, loop: Loop, name: str = "checkout") -> None:
    """v1 live and healthy for two hours, then v2 rolled out."""
    cluster.deployment(name, replicas=4, version="1")
    loop.twin.advance(2 * 3600)
    cluster.rollout(name, "2")


def test_a_bad_rollout_is_rolled_back_while_the_forecast_scales_every_few_minutes(
    cluster: Cluster, tmp_path: Path
) -> None:
    loop = Loop(cluster, tmp_path)
    good_then_bad(cluster, loop)
    errors, rps = (
        loop.key("http_requests_error_ratio", "checkout"),
        loop.key("http_requests_per_second", "checkout"),
    )
    demand = 200.0
    for k in range(120):  # 30 minutes; the forecast keeps rising, errors from minute 10
        demand += 5.0
        signals = [(rps, SignalKind.FORECAST, demand, 0.9)] if k % 4 == 0 else []
        bad = k >= 40 and version(cluster) == "2"
        if bad:
            signals.append((errors, SignalKind.ANOMALY, 0.2, 0.9999))
        loop.step({errors: 0.2 if bad else 0.01, rps: demand / 2}, signals)
    scales = loop.executed("scale")
    assert len(scales) >= 4, "the forecast playbook kept scaling"
    (rollback,) = loop.executed("rollback")
    assert "from revision 2 to revision 1" in rollback[1]
    assert version(cluster) == "1"
    assert not [
        e for e in loop.held("rollback-on-error-spike") if (e.guardrail or "").startswith("maxPerHour")
    ]


def test_a_second_error_spike_after_a_rollback_escalates_and_never_returns_to_the_bad_version(
    cluster: Cluster, tmp_path: Path
) -> None:
    # with the shipped 30m cooldown the second spike would wait out rolloutWithin; a team that
    # shortens the cooldown still never goes back to the bad version
    text = (SHIPPED / "rollback-on-error-spike.yaml").read_text().replace("cooldown: 30m", "cooldown: 5m")
    assert "cooldown: 5m" in text
    loop = Loop(cluster, tmp_path, load_sources([("rollback.yaml", text)]))
    good_then_bad(cluster, loop)
    errors = loop.key("http_requests_error_ratio", "checkout")
    for _ in range(60):  # the first spike: rolled back to v1
        bad = version(cluster) == "2"
        loop.step({errors: 0.2 if bad else 0.01}, [(errors, SignalKind.ANOMALY, 0.2, 0.9999)] if bad else [])
    assert version(cluster) == "1"
    assert loop.transitions("rollback-on-error-spike")[-1] == "resolved"
    for _ in range(40):  # a second spike on v1, within rolloutWithin of the rollback
        loop.step({errors: 0.2}, [(errors, SignalKind.ANOMALY, 0.2, 0.9999)])
    assert version(cluster) == "1", "never back to the version rolled back from"
    assert len(loop.executed("rollback")) == 1
    rollbacks = [
        r for r in loop.decisions.records if r.action == "rollback" and r.decision.value != "started"
    ]
    assert rollbacks[0].decision.value == "executed"
    # each later attempt escalates to a person, and has nothing safe to offer: the only earlier
    # revision is the one rolled back from, so the plan for approval is refused with the reason
    assert len(rollbacks) > 1
    for later in rollbacks[1:]:
        assert later.decision.value == "failed"
        assert "revision 2 was rolled back from within 24h" in later.message
    repeats = [e for e in loop.held("rollback-on-error-spike") if e.guardrail == "repeat"]
    assert len(repeats) == len(rollbacks) - 1
    assert "escalated to a person" in repeats[0].reason


def test_a_memory_leak_is_restarted_while_the_forecast_scales(cluster: Cluster, tmp_path: Path) -> None:
    loop = Loop(cluster, tmp_path)
    cluster.deployment("cart", replicas=3, version="1")
    loop.twin.advance(3600)
    memory, rps = (
        loop.key("container_memory_working_set_ratio", "cart"),
        loop.key("http_requests_per_second", "cart"),
    )
    for k in range(80):
        signals = [(memory, SignalKind.FORECAST, 1.05, 0.95)]
        if k % 8 == 0:
            signals.append((rps, SignalKind.FORECAST, 300.0 + 30 * k, 0.9))
        loop.step({memory: 0.8 + 0.002 * k, rps: 100.0}, signals)
    assert len(loop.executed("scale")) >= 3
    assert len(loop.executed("restart")) == 1
    assert not [
        e for e in loop.held("restart-on-memory-leak") if (e.guardrail or "").startswith("maxPerHour")
    ]


def test_a_leak_back_after_the_restart_rolls_the_version_back_even_after_the_agent_restarted(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = Loop(cluster, tmp_path / "first")
    good_then_bad(cluster, first, "cart")  # v2 leaks
    memory = first.key("container_memory_working_set_ratio", "cart")
    leaking = [(memory, SignalKind.FORECAST, 1.05, 0.95)]
    for _ in range(60):  # the leak's first episode: restarted after `for: 10m`
        first.step({memory: 0.8}, leaking)
    for _ in range(60):  # memory back down: the restart is verified
        first.step({memory: 0.3})
    assert [a for a, _ in first.executed() if a != "notify"] == ["restart"]
    assert version(cluster, "cart") == "2"
    held = first.held("rollback-on-recurring-leak")
    assert held
    assert held[0].guardrail == "when.restartedWithin"
    first.twin.advance(3 * 3600)
    # the agent restarts: the restart is known only from the Deployment's record
    second = Loop(cluster, tmp_path / "second")
    for _ in range(60):  # the leak is back
        second.step({memory: 0.8}, leaking)
    assert [a for a, _ in second.executed() if a != "notify"] == ["rollback"]
    assert version(cluster, "cart") == "1", "back to the version before the leak, not v2 before its restart"
    assert "suppressed" in second.transitions("restart-on-memory-leak")
    assert not [e for e in second.held("restart-on-memory-leak") if e.guardrail == "repeat"]


def test_a_series_that_goes_silent_makes_the_incident_stale_never_resolved(
    cluster: Cluster, tmp_path: Path
) -> None:
    loop = Loop(cluster, tmp_path)
    good_then_bad(cluster, loop)
    errors = loop.key("http_requests_error_ratio", "checkout")
    for _ in range(12):  # 3 minutes of errors: the rollback runs
        loop.step({errors: 0.2}, [(errors, SignalKind.ANOMALY, 0.2, 0.9999)])
    assert len(loop.executed("rollback")) == 1
    for _ in range(80):  # the series stops reporting (the last value seen was still bad)
        loop.step()
    states = loop.transitions("rollback-on-error-spike")
    assert "resolved" not in states
    assert "stale" in states
    assert states[-1] == "escalated"


def test_a_resolved_series_needs_fresh_samples_under_the_bar(cluster: Cluster, tmp_path: Path) -> None:
    loop = Loop(cluster, tmp_path)
    good_then_bad(cluster, loop)
    errors = loop.key("http_requests_error_ratio", "checkout")
    for _ in range(12):
        loop.step({errors: 0.2}, [(errors, SignalKind.ANOMALY, 0.2, 0.9999)])
    for _ in range(40):  # fresh samples, under the bar: resolved
        loop.step({errors: 0.01})
    assert loop.transitions("rollback-on-error-spike")[-1] == "resolved"


ALERT_RESTART = """
apiVersion: aiops/v1
kind: Playbook
metadata: {name: restart-on-alert}
spec:
  trigger: {signal: alert, metric: PodsCrashLooping, match: {deployment: ".+"}}
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
  actions: [{restart: {}}]
  verify: {within: 10m, quiet: 2m}
  guardrails: {cooldown: 0s}
"""


def test_a_resent_alert_after_resolution_is_a_new_incident_that_acts(
    cluster: Cluster, tmp_path: Path
) -> None:
    loop = Loop(
        cluster,
        tmp_path,
        load_sources([("alert.yaml", ALERT_RESTART)]),
        GuardrailDefaults(cooldown=0, repeat_window=0),
    )
    cluster.deployment("web", replicas=2)
    key = loop.key("PodsCrashLooping", "web")
    starts_at = loop.clock.now()

    def alert(status: str) -> None:
        details = {"status": status, "fingerprint": "f1"}
        loop.twin.advance(STEP)
        loop.engine.emit([Signal(SignalKind.ALERT, key, starts_at, 1.0, 1.0, "alertmanager", details)])
        loop.engine.tick()

    alert("firing")
    alert("firing")  # re-sent while open: joins the incident
    alert("resolved")
    for _ in range(20):
        loop.step()
    alert("firing")  # the same startsAt, after resolution: a new episode
    restarts = [r for r in loop.decisions.records if r.action == "restart"]
    assert [r.decision.value for r in restarts] == ["started", "executed", "started", "executed"]
    assert restarts[1].incident != restarts[3].incident


def test_a_raised_floor_is_put_back_after_the_incident_resolves(cluster: Cluster, tmp_path: Path) -> None:
    loop = Loop(cluster, tmp_path)
    cluster.deployment("search", replicas=2)
    cluster.autoscaling.create_namespaced_horizontal_pod_autoscaler(
        cluster.ns, hpa_body("search", low=2, high=20)
    )
    p99 = loop.key("http_request_duration_p99_seconds", "search")
    for _ in range(16):  # 4 minutes of latency: scale-out-on-latency raises the floor by 2
        loop.step({p99: 2.0}, [(p99, SignalKind.ANOMALY, 2.0, 0.999)])
    hpa = cluster.read("HorizontalPodAutoscaler", "search")
    assert hpa["spec"]["minReplicas"] == 4
    for _ in range(4 * 20):  # latency back to normal for 20 minutes: resolved, then released
        loop.step({p99: 0.2})
    assert loop.transitions("scale-out-on-latency")[-1] == "resolved"
    hpa = cluster.read("HorizontalPodAutoscaler", "search")
    assert hpa["spec"]["minReplicas"] == 2
    assert raise_of(hpa) is None


def test_a_floor_someone_changed_meanwhile_is_left_and_said_so(cluster: Cluster, tmp_path: Path) -> None:
    loop = Loop(cluster, tmp_path)
    cluster.deployment("search", replicas=2)
    cluster.autoscaling.create_namespaced_horizontal_pod_autoscaler(
        cluster.ns, hpa_body("search", low=2, high=20)
    )
    p99 = loop.key("http_request_duration_p99_seconds", "search")
    for _ in range(16):
        loop.step({p99: 2.0}, [(p99, SignalKind.ANOMALY, 2.0, 0.999)])
    cluster.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "search", cluster.ns, {"spec": {"minReplicas": 6}}
    )
    for _ in range(4 * 20):
        loop.step({p99: 0.2})
    assert cluster.read("HorizontalPodAutoscaler", "search")["spec"]["minReplicas"] == 6
    releases = [e for e in loop.audit.incident_events() if e.step == "restore" and e.status is not None]
    assert releases
    assert "changed to 6" in releases[-1].reason


def test_the_error_ratio_detector_catches_a_step_after_a_night_false_alarm(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Diurnal traffic with low counts at night, through the shipped detector and playbooks."""
    from simulations.replay import shipped_config  # the configuration the daemon runs

    (ratio_config,) = [d for d in shipped_config().detectors if d.type == "ratio"]
    from detectors import DetectorBank, DetectorSpec, build_detector

    loop = Loop(cluster, tmp_path)
    bank = DetectorBank(
        loop.series,
        [DetectorSpec(build_detector("ratio", ratio_config.params, loop.series), ratio_config.min_score)],
    )
    loop.freshness = bank.freshness
    loop.engine.freshness = bank.freshness
    cluster.deployment("checkout", replicas=4, version="1")
    errors, rps = (
        loop.key("http_requests_error_ratio", "checkout"),
        loop.key("http_requests_per_second", "checkout"),
    )
    ids = [loop.series.id_for(rps), loop.series.id_for(errors)]
    rng = np.random.default_rng(3)
    start = loop.clock.now()

    def scrape(error_rate: float, forced: int | None = None) -> list[Signal]:
        loop.twin.advance(STEP)
        now = loop.clock.now()
        hour = ((now - start) / 3600.0) % 24
        rate = 2.0 + 38.0 * 0.5 * (1 - np.cos(2 * np.pi * (hour - 3) / 24))
        n = int(rng.poisson(rate * STEP))
        k = forced if forced is not None else int(rng.binomial(n, error_rate))
        signals = bank.process(SampleBatch.from_arrays(ids, [now, now], [n / STEP, k / n if n else 0.0]))
        loop.engine.emit(signals)
        loop.engine.tick()
        loop.executor.tick()
        return signals

    for _ in range(int(26 * 3600 / STEP)):  # a day and two hours: 02:00
        assert not scrape(0.01)
    assert scrape(0.01, forced=15), "a night-time burst: a (false) alarm"
    for _ in range(int(11 * 3600 / STEP)):  # to 13:00, healthy
        scrape(0.01)
    cluster.rollout("checkout", "2")
    for _ in range(40):  # +12 points after the rollout
        scrape(0.13 if version(cluster) == "2" else 0.01)
    assert version(cluster) == "1"
    assert len(loop.executed("rollback")) == 1


def test_a_playbook_aimed_at_kube_system_is_refused_and_audited(cluster: Cluster, tmp_path: Path) -> None:
    loop = Loop(cluster, tmp_path)
    coredns = SeriesKey.of(
        "http_request_duration_p99_seconds", {"namespace": "kube-system", "deployment": "coredns"}
    )
    for _ in range(20):
        loop.step({coredns: 2.0}, [(coredns, SignalKind.ANOMALY, 2.0, 0.999)])
    assert loop.decisions.records == [], "nothing was even submitted"
    (refused,) = [e for e in loop.held("scale-out-on-latency") if e.guardrail == "protected"]
    assert refused.state.value == "suppressed"
    assert "namespace 'kube-system' is protected" in refused.reason


def test_after_a_restart_a_second_rollback_still_escalates_and_never_returns_to_the_bad_version(
    cluster: Cluster, tmp_path: Path
) -> None:
    # the shipped 30m cooldown, recorded on the Deployment, would hold the second spike (see the
    # next test); a team that shortens it still gets the escalation after a restart
    text = (SHIPPED / "rollback-on-error-spike.yaml").read_text().replace("cooldown: 30m", "cooldown: 5m")
    playbooks = load_sources([("rollback.yaml", text)])
    first = Loop(cluster, tmp_path / "first", playbooks)
    good_then_bad(cluster, first)
    errors = first.key("http_requests_error_ratio", "checkout")
    for _ in range(60):
        bad = version(cluster) == "2"
        first.step({errors: 0.2 if bad else 0.01}, [(errors, SignalKind.ANOMALY, 0.2, 0.9999)] if bad else [])
    assert version(cluster) == "1"
    # the agent restarts: a fresh engine and executor, no memory of cooldowns or fixes
    second = Loop(cluster, tmp_path / "second", playbooks)
    for _ in range(40):
        second.step({errors: 0.2}, [(errors, SignalKind.ANOMALY, 0.2, 0.9999)])
    assert version(cluster) == "1", "never back to the version rolled back from"
    assert second.executed("rollback") == []
    repeats = [e for e in second.held("rollback-on-error-spike") if e.guardrail == "repeat"]
    assert repeats, "the Deployment's own record says a rollback ran: a person decides"
    assert "escalated to a person: rollback already ran" in repeats[0].reason


RESTART_ON_ALERT = """
apiVersion: aiops/v1
kind: Playbook
metadata: {name: restart-on-crashloop}
spec:
  trigger: {signal: alert, metric: PodsCrashLooping, match: {deployment: ".+"}}
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
  actions: [{restart: {}}]
  verify: {within: 10m, quiet: 2m}
  guardrails: {cooldown: 30m, maxPerHour: 1}
"""


@pytest.mark.parametrize("fix", ["rollback", "restart"])
def test_after_a_restart_the_cooldown_and_budget_recorded_on_the_target_hold_a_fresh_incident(
    cluster: Cluster, tmp_path: Path, fix: str
) -> None:
    """The agent restarts right after a fix: the new engine and executor know nothing, but the
    target's ``aiops.dev/actions`` record does; a fresh incident on it is held by the cooldown."""
    if fix == "rollback":
        playbooks, playbook = (
            load_paths([SHIPPED / "rollback-on-error-spike.yaml"]),
            "rollback-on-error-spike",
        )
    else:
        playbooks, playbook = load_sources([("restart.yaml", RESTART_ON_ALERT)]), "restart-on-crashloop"
    first = Loop(cluster, tmp_path / "first", playbooks)
    if fix == "rollback":
        good_then_bad(cluster, first)
    else:
        cluster.deployment("checkout", replicas=2, version="1")
    errors = first.key("http_requests_error_ratio", "checkout")
    crash = first.key("PodsCrashLooping", "checkout")

    def episode(loop: Loop, steps: int) -> None:
        for _ in range(steps):
            if fix == "rollback":
                loop.step({errors: 0.2}, [(errors, SignalKind.ANOMALY, 0.2, 0.9999)])
            else:  # Alertmanager re-sends the firing alert
                loop.step(signals=[(crash, SignalKind.ALERT, 1.0, 1.0)])

    episode(first, 12)  # 3 minutes: the fix runs once
    done = [r.decision.value for r in first.decisions.records if r.action == fix]
    assert done == ["started", "executed"], "write-ahead audit of the first fix"
    recorded = loop_records(cluster)
    assert [(r.playbook, r.action, r.action_class, r.source) for r in recorded] == [
        (playbook, fix, "corrective", "alerts" if fix == "restart" else "signals")
    ]
    # the agent restarts at once: a new engine and executor on the same cluster; the old incident
    # is gone with the old process, and the symptom is still there
    second = Loop(cluster, tmp_path / "second", playbooks)
    first.twin.advance(600.0)
    episode(second, 20)
    assert [r for r in second.decisions.records if r.action == fix] == [], "nothing was even submitted"
    held = [e for e in second.held(playbook) if e.guardrail == "cooldown"]
    assert held, f"held by the cooldown recorded on the target: {second.held(playbook)}"
    assert "cooldown 30m" in held[0].reason
    assert held[0].state.value == "firing"
    assert len(loop_records(cluster)) == 1


def loop_records(cluster: Cluster) -> list[RecordedAction]:
    """The actions recorded on the checkout Deployment."""
    return recorded_actions(cluster.read("Deployment", "checkout"))


def test_after_a_restart_the_agent_wide_budget_recorded_on_the_lease_holds_another_target(
    cluster: Cluster, tmp_path: Path
) -> None:
    """One corrective action per hour for the whole agent: after a restart, a fresh incident on
    another target is held by the agent-wide budget the Lease's record still counts."""
    lease = Target("Lease", cluster.ns, "aiops-agent-actions")
    playbooks = load_sources([("restart.yaml", RESTART_ON_ALERT.replace("cooldown: 30m", "cooldown: 0s"))])
    defaults = GuardrailDefaults(cooldown=0, max_per_hour_total=1)
    first = Loop(cluster, tmp_path / "first", playbooks, defaults, agent_record=lease)
    cluster.deployment("checkout", replicas=2)
    cluster.deployment("cart", replicas=2)
    for _ in range(4):
        first.step(signals=[(first.key("PodsCrashLooping", "checkout"), SignalKind.ALERT, 1.0, 1.0)])
    assert [r.decision.value for r in first.decisions.records] == ["started", "executed"]
    second = Loop(cluster, tmp_path / "second", playbooks, defaults, agent_record=lease)
    for _ in range(8):
        second.step(signals=[(second.key("PodsCrashLooping", "cart"), SignalKind.ALERT, 1.0, 1.0)])
    assert second.decisions.records == [], "nothing was submitted for cart"
    (held,) = [e for e in second.held("restart-on-crashloop") if e.guardrail]
    assert held.guardrail == "agent.max_per_hour_total"
    assert held.target.name == "cart"
    assert "1 corrective actions in the last hour by the agent, limit 1" in held.reason
