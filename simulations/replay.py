"""The replay: a scenario run closed-loop against a twin cluster on virtual time, once per policy.

For each policy the runner builds a fresh twin cluster (its API server on an ephemeral loopback
port), creates the scenario's services, and steps virtual time. At each step the workload model
reads the cluster and produces metrics; the policy reacts; the cluster reconciles:

- ``agent``: the daemon's own components — the detector bank (learned detectors, forecasters,
  drift), the playbook engine with the scenario's playbooks, and the executor, which acts through
  the official ``kubernetes`` client over HTTP, with guardrails, idempotency keys and audit;
- ``static``: the same engine and executor, but static threshold rules and the playbooks a team
  would write around them (``simulations/baselines/static-playbooks.yaml``);
- ``hpa``: no agent; each service has a HorizontalPodAutoscaler on CPU that follows the
  documented algorithm (:class:`HpaAlgorithm`);
- ``none``: nothing reacts.

Before the scenario starts, the agent's detectors learn from ``warmup`` of healthy history (what
the Prometheus backfill gives the daemon); the workloads were created before that history, so
their first revision is not a recent rollout. Same scenario and seed: the same run, sample for sample.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no stubs

from agent.app import detector_bank
from agent.audit import Audit, AuditRecord, Decision, Entry
from agent.clock import ManualClock
from agent.config import AgentConfig, DetectorConfig, ExecutorConfig, load_config
from agent.decisions import DecisionRecords, RecordBounds
from agent.executor import KubeExecutor
from agent.facts import KubeFacts
from agent.leader import AlwaysLeader
from agent.metrics import AgentMetrics
from agent.playbook.events import AuditEvent, IncidentEvent, IncidentState, SignalRejected
from agent.playbook.guardrails import GuardrailDefaults
from agent.playbook.loader import LoadedPlaybook, PlaybookSet
from agent.playbook.requests import Approval
from agent.playbook.runtime import PlaybookRuntime
from agent.playbook.settings import PlaybooksConfig
from agent.pool import INLINE
from detectors import SampleBatch, SeriesRegistry, Signal
from remediations.kube import connect
from simulations.bus import KafkaBus
from simulations.exporter import MetricsExporter
from simulations.pager import Pager
from simulations.result import (
    AGENT,
    CPU,
    ERROR_RATIO,
    HPA,
    NO_AGENT,
    P99,
    POLICIES,
    READY,
    REQUESTS,
    STATIC,
    ActionRecord,
    Event,
    FloatArray,
    PolicyRun,
    ScenarioResult,
)
from simulations.scenario import Scenario, Service
from simulations.scoring import evaluate, fault_windows, score_run
from simulations.twin import TwinCluster, TwinConfig
from simulations.twin.objects import Obj
from simulations.twin.resources.autoscaling import HORIZONTALPODAUTOSCALERS
from simulations.workload import Observation, Workload

log = logging.getLogger("aiops.replay")

#: A series signalling again within this many seconds is the same episode on the timeline.
SIGNAL_QUIET = 600.0
#: Executor decisions that hold an action rather than take it.
HELD_DECISIONS = frozenset({Decision.SKIPPED, Decision.PENDING_APPROVAL, Decision.REJECTED, Decision.EXPIRED})


#: The config the agent runs in a replay by default: the file k8s/ deploys, so a replay shows what
#: the deployed agent would detect and decide (its detectors and guardrails; sources, sinks and the
#: executor's connection are the twin's). Its dry run and approval mode are off: a replay shows
#: the agent acting.
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "k8s" / "agent-config.yaml"


@functools.cache
def shipped_config() -> AgentConfig:
    """The shipped agent config (``k8s/agent-config.yaml``), loaded and validated once."""
    return load_config(SHIPPED_CONFIG)


def replay_guardrails(config: AgentConfig) -> GuardrailDefaults:
    """The config's guardrails with dry run and approval off: the replay shows the agent acting."""
    return config.playbooks.guardrails.model_copy(update={"dry_run": False, "approval": Approval.NONE})


#: The static-threshold baseline: limits a team would set by hand, the same for every service.
STATIC_DETECTORS: tuple[DetectorConfig, ...] = (
    DetectorConfig(
        type="threshold",
        min_score=0.5,
        params={
            "rules": [
                {"metric": "http_requests_error_ratio", "above": 0.05},
                {"metric": "http_request_duration_p99_seconds", "above": 1.0},
                {"metric": "container_cpu_usage_ratio", "above": 0.9},
                {"metric": "container_memory_working_set_ratio", "above": 0.9},
                {"metric": "model_accuracy", "below": 0.8},
            ]
        },
    ),
)


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay."""

    playbooks: PlaybookSet
    """Every playbook available; a scenario picks some by name (none named: all of them)."""
    static_playbooks: PlaybookSet | None = None
    policies: Sequence[str] = POLICIES
    progress: Callable[[int], object] | None = None
    """Called with the number of steps done since the last call."""
    kafka: str | None = None
    """Bootstrap servers: the agent consumes the metrics through this broker instead of in-process."""
    metrics_port: int | None = None
    """Serve the simulated metrics at /metrics on this port (0: any free port)."""
    config: AgentConfig | None = None
    """The agent's config (its detectors and guardrails); None: the shipped one (SHIPPED_CONFIG)."""


def replay(scenario: Scenario, options: ReplayOptions) -> ScenarioResult:
    """Replay ``scenario`` once per policy and score every run."""
    runs = {policy: run_on_one_core(scenario, policy, options) for policy in options.policies}
    return score_replay(scenario, runs)


def run_on_one_core(scenario: Scenario, policy: str, options: ReplayOptions) -> PolicyRun:
    """:func:`run_policy` with numpy's BLAS and OpenMP pools held to one thread.

    A replay runs on one core: the small per-series fits run fastest on one thread, and the
    machine's other cores stay free (for the other replays of ``aiops replay --jobs``).
    """
    # threadpoolctl caps the pools of the libraries loaded so far: load the fits' BLAS first
    import sklearn.linear_model  # noqa: F401, PLC0415 - a slow import, only for its side effect

    with threadpool_limits(limits=1):
        return run_policy(scenario, policy, options)


def score_replay(scenario: Scenario, runs: dict[str, PolicyRun]) -> ScenarioResult:
    """Score each policy's run of ``scenario`` and judge the scenario's expectations."""
    spec = scenario.spec
    faults = fault_windows(scenario)
    result = ScenarioResult(
        name=scenario.name,
        description=scenario.doc.metadata.description,
        seed=spec.seed,
        start=scenario.start,
        duration=spec.duration,
        step=spec.step,
        services=[s.name for s in spec.services],
        faults=faults,
        runs=runs,
        slo={"error_ratio": spec.slo.error_ratio, "p99_seconds": spec.slo.p99_seconds},
    )
    for run in runs.values():
        score_run(scenario, run, faults)
    result.expectations = evaluate(scenario, result)
    return result


def bring_up(twin: TwinCluster, workload: Workload, autoscaled: Sequence[Service], ready_by: float) -> None:
    """Create the workload and its HPAs now (their ReplicaSets and pods too), then move to
    ``ready_by``, the pods started 5 minutes before it.

    Created at the clock's time, before the warm-up in a replay: a Deployment's first revision
    then reads as what it is, a workload that has run for days, not a rollout minutes before the
    start (which let `rolloutWithin` pass, and a rollback with nothing to go back to fail, on
    every error spike of the first half hour).
    """
    workload.setup()
    for service in autoscaled:
        twin.store.create(HORIZONTALPODAUTOSCALERS, service.namespace, hpa_object(service))
    twin.step()
    clock = twin.clock
    assert isinstance(clock, ManualClock)  # a replay runs on virtual time
    clock.set(ready_by - 300.0)
    twin.advance(ready_by - clock.now())


def autoscaled_services(services: Sequence[Service], policy: str) -> list[Service]:
    """The services that run with a HorizontalPodAutoscaler under ``policy``: every one under
    'hpa', none under 'none', and under the agent and the static baseline those that have one
    (every service unless it says ``hpa: false``); the agent works with it, raising its floor."""
    return [s for s in services if policy == HPA or (s.hpa and policy != NO_AGENT)]


def steps_of(scenario: Scenario) -> int:
    """How many steps a run of ``scenario`` takes."""
    return math.floor(scenario.spec.duration / scenario.spec.step + 1e-9)


def select_playbooks(available: PlaybookSet, names: Sequence[str]) -> PlaybookSet:
    """The playbooks named (all when ``names`` is empty), as one set."""
    if not names:
        return available
    chosen: tuple[LoadedPlaybook, ...] = tuple(p for p in available.playbooks if p.name in set(names))
    return PlaybookSet(chosen, available.digest, available.files)


def run_policy(scenario: Scenario, policy: str, options: ReplayOptions) -> PolicyRun:
    """One closed-loop run of ``scenario`` under ``policy``."""
    if policy not in POLICIES:
        msg = f"unknown policy {policy!r}; expected one of {list(POLICIES)}"
        raise ValueError(msg)
    spec = scenario.spec
    start, step, n = scenario.start, spec.step, steps_of(scenario)
    times = start + step * np.arange(n, dtype=np.float64)
    # the workload has run since before the warm-up: its first revision is not a recent rollout
    created = start - spec.warmup - 300.0
    clock = ManualClock(created)
    autoscaled = autoscaled_services(spec.services, policy)
    hpa = HpaAlgorithm(step) if autoscaled else None
    config = TwinConfig(
        seed=spec.seed,
        emit_events=policy in {AGENT, STATIC},
        hpa_recommendation=hpa.recommend if hpa is not None else None,
    )
    series = SeriesRegistry(limit=max(1000, 20 * len(spec.services)))
    recorder = Recorder(scenario, policy, times)
    with TwinCluster(clock, config) as twin, tempfile.TemporaryDirectory(prefix="aiops-replay-") as tmp:
        workload = Workload(scenario, twin.store, series, times)
        if hpa is not None:
            hpa.workload = workload
        pipeline: Pipeline | None = None
        if policy in {AGENT, STATIC}:
            agent = options.config if options.config is not None else shipped_config()
            detectors = agent.detectors if policy == AGENT else STATIC_DETECTORS
            if policy == AGENT:
                playbooks = select_playbooks(options.playbooks, spec.playbooks)
            else:
                if options.static_playbooks is None:
                    msg = "the static baseline needs its playbooks (ReplayOptions.static_playbooks)"
                    raise ValueError(msg)
                playbooks = options.static_playbooks
            bus = KafkaBus(options.kafka, series) if options.kafka and policy == AGENT else None
            pipeline = Pipeline(
                twin, clock, series, detectors, replay_guardrails(agent), playbooks, Path(tmp), recorder, bus
            )
            if spec.warmup > 0:
                history = start - spec.warmup + step * np.arange(int(spec.warmup // step), dtype=np.float64)
                pipeline.warm(workload.history(history))
        bring_up(twin, workload, autoscaled, start - step)
        exporter = (
            MetricsExporter(series, options.metrics_port)
            if options.metrics_port is not None and policy == AGENT
            else None
        )
        try:
            for k in range(n):
                now = float(times[k])
                twin.advance(now - clock.now())
                for text in workload.inject(now):
                    recorder.events.append(Event(now, "fault", text.split(":")[0], text))
                twin.step()
                observation = workload.observe(k, now)
                recorder.step(k, observation)
                if exporter is not None:
                    exporter.update(observation.batch)
                if hpa is not None:
                    hpa.observe(observation)
                if pipeline is not None:
                    pipeline.process(observation.batch)
                if options.progress is not None:
                    options.progress(1)
        finally:
            if pipeline is not None:
                pipeline.close()
            if exporter is not None:
                exporter.close()
    return recorder.run(workload.mitigated)


class Pipeline:
    """The daemon's components over a twin cluster: detector bank, playbook engine, executor."""

    def __init__(
        self,
        twin: TwinCluster,
        clock: ManualClock,
        series: SeriesRegistry,
        detectors: Sequence[DetectorConfig],
        guardrails: GuardrailDefaults,
        playbooks: PlaybookSet,
        workdir: Path,
        recorder: Recorder,
        bus: KafkaBus | None = None,
    ) -> None:
        self.clock = clock
        self.bus = bus
        self.recorder = recorder
        self.bank = detector_bank(detectors, series)
        kubeconfig = twin.write_kubeconfig(workdir / "kubeconfig")
        self.pager = Pager()
        self.stop = threading.Event()
        self.kube = connect(kubeconfig, clock=clock, environ={}, stop=self.stop)
        executor_config = ExecutorConfig(
            enabled=True,
            leader_election=False,
            approvals_dir=workdir / "approvals",
            audit_file=None,
            audit_topic=None,
            instance="replay",
        )
        self.executor = KubeExecutor(
            self.kube,
            executor_config,
            clock,
            Audit([_RecorderAudit(recorder)]),
            leader=AlwaysLeader(),
            instance="replay",
            stop=self.stop,
            environ=self.pager.environ(),
        )
        # the daemon's composition (agent/app.py), its actions inline: deterministic on virtual time
        self.runtime = PlaybookRuntime(
            PlaybooksConfig(guardrails=guardrails),
            clock,
            AgentMetrics(),
            executor=self.executor,
            audit=_RecorderAudit(recorder),
            facts=KubeFacts(self.kube, clock, ttl=0.0),
            freshness=self.bank.freshness,
            pool=INLINE,
        )
        self.engine = self.runtime.engine
        self.engine.replace_playbooks(playbooks)

    def warm(self, history: SampleBatch, chunk: int = 20_000) -> None:
        """Let the detectors learn ``history``; its signals are history too and are dropped.

        ``history`` is in time order (:meth:`Workload.history` sorts it so), as the Prometheus
        source's backfill delivers it, so a detector that joins series (ratio, the forecast's
        capacity) sees partners side by side.
        """
        for lo in range(0, len(history), chunk):
            hi = lo + chunk
            self.bank.process(
                SampleBatch(history.series[lo:hi], history.timestamps[lo:hi], history.values[lo:hi])
            )

    def process(self, batch: SampleBatch) -> list[Signal]:
        """One step: score, hand signals to the engine, run its timers.

        With a Kafka bus the batch goes through the broker and the agent's Kafka source first; its
        pieces are scored as one batch, then committed (after processing, as the daemon does).
        """
        if self.bus is not None:
            pieces = self.bus.roundtrip(batch)
            batch = SampleBatch.concat([p for p, _ in pieces]) if pieces else SampleBatch.empty()
            signals = self.bank.process(batch)
            for _, polled in pieces:
                self.bus.commit(polled)
        else:
            signals = self.bank.process(batch)
        if signals:
            self.recorder.on_signals(signals)  # before the engine, so the timeline keeps cause first
            self.engine.emit(signals)
        self.runtime.turn()
        return signals

    def close(self) -> None:
        """Release the client."""
        self.stop.set()
        self.kube.close()
        self.pager.close()
        if self.bus is not None:
            self.bus.close()


@dataclass
class HpaAlgorithm:
    """The HorizontalPodAutoscaler as documented, on CPU utilisation, with its default ``behavior``.

    ``desired = ceil(ready * utilisation / target)``, no change within a 10 % tolerance; the target
    is the HPA object's CPU ``averageUtilization`` (``target`` when it has none), as the controller
    reads it at each sync. Scale-up
    follows the default ``behavior.scaleUp`` (no stabilisation; per 15 s period at most the larger
    of +100 % and +4 pods), scale-down the default ``behavior.scaleDown`` (the highest
    recommendation of a 300 s stabilisation window wins, then up to 100 % per period). The CPU it
    reads is what metrics-server reported: one resolution (15 s, its default) old. The twin's HPA
    controller calls :meth:`recommend` every sync period (15 s) and clamps to the HPA's bounds.
    """

    step: float
    target: float = 0.7
    tolerance: float = 0.1
    stabilisation: float = 300.0
    metrics_delay: float = 15.0
    """metrics-server's resolution: the newest CPU the HPA sees is this old."""
    up_percent: float = 100.0
    up_pods: int = 4
    workload: Workload | None = None
    _seen: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    _history: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _now: float = 0.0

    def observe(self, observation: Observation) -> None:
        """The metrics the HPA reads (what metrics-server reports, after its delay)."""
        self._now = float(observation.batch.timestamps[0]) if len(observation.batch) else self._now
        for service, values in observation.values.items():
            seen = self._seen.setdefault(service, [])
            seen.append((self._now, values[CPU], values[READY]))
            # keep the newest observation at least metrics_delay old, and everything after it
            while len(seen) > 1 and seen[1][0] <= self._now - self.metrics_delay:
                seen.pop(0)

    def _reported(self, name: str) -> tuple[float, float] | None:
        """(CPU utilisation, ready pods) as metrics-server reports them now."""
        for t, cpu, ready in reversed(self._seen.get(name, [])):
            if t <= self._now - self.metrics_delay:
                return cpu, ready
        return None

    def recommend(self, hpa: Obj, target: Obj) -> int | None:
        """The replica count for ``target`` (None: keep)."""
        name = str(target["metadata"]["name"])
        current = int((target.get("spec") or {}).get("replicas") or 0)
        reported = self._reported(name)
        if reported is None or reported[1] <= 0:
            return None
        cpu, ready = reported
        ratio = cpu / cpu_target(hpa, self.target)
        desired = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(ready * ratio)
        history = self._history.setdefault(name, [])
        history.append((self._now, desired))
        cutoff = self._now - self.stabilisation
        history[:] = [(t, d) for t, d in history if t >= cutoff]
        if desired < current:
            desired = min(current, max(d for _, d in history))
        limit = max(math.floor(current * (1.0 + self.up_percent / 100.0)), current + self.up_pods)
        return min(desired, limit)


def cpu_target(hpa: Obj, default: float) -> float:
    """The CPU utilisation an autoscaling/v2 HPA aims at (a fraction), ``default`` without one;
    metrics of any other shape (the twin takes an HPA's metrics as written) are not a target."""
    metrics = _field(_field(hpa, "spec"), "metrics")
    for metric in metrics if isinstance(metrics, list) else []:
        resource = _field(metric, "resource")
        value = _field(_field(resource, "target"), "averageUtilization")
        if _field(resource, "name") == "cpu" and type(value) is int and value > 0:
            return value / 100.0
    return default


def _field(obj: object, key: str) -> object:
    return obj.get(key) if isinstance(obj, dict) else None


def hpa_object(service: Service) -> Obj:
    """The autoscaling/v2 HPA of a service: CPU at its ``hpaTargetCPU`` (70 %), from 2 (or its
    replicas if 1) to its max."""
    floor = 1 if service.replicas == 1 else 2
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": service.name, "namespace": service.namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service.name},
            "minReplicas": floor,
            "maxReplicas": max(floor, service.max_replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": service.hpa_target_cpu},
                    },
                }
            ],
        },
    }


class Recorder:
    """Collects a run's per-step metrics, signals, incident changes, held and taken actions.

    Timeline events are appended in the order they happen within a step (a fault, an OOM kill,
    the signals, the engine's decisions, the executor's outcomes) and sorted by time only, so
    events at one timestamp stay in causal order.
    """

    def __init__(self, scenario: Scenario, policy: str, times: FloatArray) -> None:
        self.scenario = scenario
        self.policy = policy
        self.times = times
        n = times.size
        names = [s.name for s in scenario.spec.services]
        self.metrics: dict[str, dict[str, FloatArray]] = {s: {} for s in names}
        self.replicas = {s: np.zeros(n) for s in names}
        self.requests = {s: np.zeros(n) for s in names}
        self.errors = {s: np.zeros(n) for s in names}
        self.score = {s: np.zeros(n) for s in names}
        self.upper = {s: np.full(n, np.nan) for s in names}
        self.mean = {s: np.full(n, np.nan) for s in names}
        self.events: list[Event] = []
        self.actions: list[ActionRecord] = []
        self.decisions = DecisionRecords(bounds=RecordBounds(max_incidents=10_000))
        """The decision record of every incident, folded as the daemon folds them."""
        self._last_signal: dict[tuple[str, str], float] = {}
        self._k = 0
        self._lock = threading.Lock()
        # actions on a model's training CronJob belong to the service that serves the model
        self._owners = {
            f"train-{s.model.name}": s.name for s in scenario.spec.services if s.model is not None
        }

    def on_decision(self, record: AuditRecord) -> None:
        """An executor decision: an action taken, held (skipped, waiting for approval), failed ..."""
        name = str(record.target.get("name", ""))
        service = self._owners.get(name, name)
        held = record.decision in HELD_DECISIONS
        guardrail = record.guardrail or ("approval" if record.decision is Decision.PENDING_APPROVAL else "")
        with self._lock:
            self.actions.append(
                ActionRecord(
                    record.time,
                    service,
                    record.action,
                    str(record.decision.value),
                    record.message,
                    incident=record.incident,
                    guardrail=guardrail if held else "",
                )
            )
            self.events.append(
                Event(
                    record.time,
                    "held" if held else "action",
                    service,
                    f"{record.action} {record.decision.value}: {record.message}",
                    incident=record.incident,
                    playbook=record.playbook,
                    guardrail=guardrail if held else "",
                )
            )

    def on_incident(self, event: AuditEvent) -> None:
        """A playbook engine event: incident transitions, actions held by a guardrail, rejected signals."""
        if isinstance(event, IncidentEvent):
            service = self._owners.get(event.target.name, event.target.name)
            if event.is_transition:
                kind = "verification" if event.previous == IncidentState.VERIFYING else "incident"
                text = f"{event.playbook}: {event.state.value} ({event.reason})"
            elif event.guardrail:
                kind, text = "held", f"{event.playbook}: {event.reason}"
            else:  # an action submitted or its result: the executor's decision says it
                return
            with self._lock:
                self.events.append(
                    Event(
                        event.time,
                        kind,
                        service,
                        text,
                        incident=event.incident,
                        playbook=event.playbook,
                        guardrail=event.guardrail or "",
                        state=event.state.value if event.is_transition else "",
                    )
                )
        else:
            with self._lock:
                self.events.append(Event(event.time, "incident", "", f"{event.playbook}: {event.reason}"))

    def step(self, k: int, observation: Observation) -> None:
        """Step ``k``: metric values, replicas, pods OOM-killed."""
        self._k = k
        n = self.times.size
        for service, values in observation.values.items():
            bucket = self.metrics[service]
            for metric, value in values.items():
                arr = bucket.get(metric)
                if arr is None:
                    arr = bucket[metric] = np.full(n, np.nan)
                arr[k] = value
            self.replicas[service][k] = observation.replicas[service]
            self.requests[service][k] = observation.requests[service]
            self.errors[service][k] = observation.errors[service]
        for kill in observation.oom_kills:
            service = kill.split("/")[0]
            self.events.append(Event(float(self.times[k]), "oom", service, f"pod {kill} OOM-killed"))

    def on_signals(self, signals: Sequence[Signal]) -> None:
        """The detectors' signals of the current step, before the playbook engine sees them."""
        k = self._k
        for signal in signals:
            labels = signal.series.label_dict
            service = labels.get("deployment", "")
            if service not in self.score:
                continue
            if signal.kind.value == "forecast" and signal.series.name == REQUESTS:
                upper = signal.details.get("forecast_upper")
                mean = signal.details.get("forecast_mean")
                if upper is not None:
                    self.upper[service][k] = float(upper)
                if mean is not None:
                    self.mean[service][k] = float(mean)
            else:
                self.score[service][k] = max(self.score[service][k], signal.score)
            ident = (signal.detector, str(signal.series))
            last = self._last_signal.get(ident)
            self._last_signal[ident] = signal.timestamp
            # the timeline shows when a series starts signalling, not every repeat of it
            if last is None or signal.timestamp - last > SIGNAL_QUIET:
                text = (
                    f"{signal.kind.value} {signal.series.name} value {signal.value:.4g} "
                    f"score {signal.score:.3f}"
                )
                self.events.append(Event(signal.timestamp, "signal", service, text))

    def run(self, mitigated: Sequence[float | None] = ()) -> PolicyRun:
        """The finished run (scored later); ``mitigated``: when each fault was removed."""
        slo = self.scenario.spec.slo
        breach = {}
        for service, bucket in self.metrics.items():
            err = bucket.get(ERROR_RATIO, np.zeros(self.times.size))
            p99 = bucket.get(P99, np.zeros(self.times.size))
            breach[service] = (np.nan_to_num(err) > slo.error_ratio) | (np.nan_to_num(p99) > slo.p99_seconds)
        return PolicyRun(
            policy=self.policy,
            times=self.times,
            metrics=self.metrics,
            replicas=self.replicas,
            slo_breach=breach,
            anomaly_score=self.score if self.policy in {AGENT, STATIC} else {},
            forecast_upper=self.upper if self.policy == AGENT else {},
            forecast_mean=self.mean if self.policy == AGENT else {},
            # sorted by time only: list.sort is stable, so one timestamp keeps the order things happened
            events=sorted(self.events, key=lambda e: e.time),
            actions=sorted(self.actions, key=lambda a: a.time),
            requests=self.requests,
            errors=self.errors,
            incidents=[
                dict(r)
                for r in reversed(self.decisions.latest(len(self.decisions)))
                if r.get("fired") is not None
            ],
            mitigated=list(mitigated),
        )


class _RecorderAudit:
    """The agent's audit sink (engine events and executor decisions), into the recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def record(self, entry: Entry) -> None:
        self.recorder.decisions.record(entry)
        if isinstance(entry, AuditRecord):
            if entry.decision is not Decision.STARTED:  # the timeline shows outcomes
                self.recorder.on_decision(entry)
        elif isinstance(entry, IncidentEvent | SignalRejected):
            self.recorder.on_incident(entry)


__all__ = [
    "SHIPPED_CONFIG",
    "STATIC_DETECTORS",
    "HpaAlgorithm",
    "Pipeline",
    "ReplayOptions",
    "replay",
    "run_policy",
]
