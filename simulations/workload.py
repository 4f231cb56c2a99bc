"""The workload model: services in the twin cluster whose metrics follow from load, pods and version.

Each service is a Deployment in the twin cluster. Its request rate comes from a generated pattern
(a daily cycle, noise, growth, surges) or a trace; what it observes at each step follows from the
cluster's state at that moment, so the agent's actions change what happens next (closed loop):

- capacity is the ready pods times the per-pod capacity (a version can cost more CPU per request);
- CPU is load over capacity; latency grows with utilisation as in a queue, and a version can add
  latency; past full capacity the excess requests fail;
- the error ratio is the healthy ratio, plus what the running versions add (weighted by their
  pods), plus the overload, observed as a binomial count of the step's requests;
- memory of each pod grows with its version's leak rate from the pod's start; a pod over its limit
  is OOM-killed (deleted; its ReplicaSet starts a new one) and counted as a restart;
- a model's accuracy drops when its inputs drift and comes back when a retraining Job (from the
  model's ``train-<model>`` CronJob) completes after the drift began.

It also notes when each fault is removed (:attr:`Workload.mitigated`): a bad version once no pod
runs it and the Deployment no longer asks for it, a drift once a retraining completed, a surge
when its traffic is back to normal.

Randomness comes from one generator seeded by the scenario's seed and the service, so the same
scenario gives the same numbers.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors import SampleBatch, SeriesKey, SeriesRegistry
from simulations.result import (
    ACCURACY,
    CPU,
    ERROR_RATIO,
    FEATURE,
    MEMORY,
    P50,
    P99,
    PREDICTION,
    READY,
    REQUESTS,
    RESTARTS,
)
from simulations.scenario import DriftFault, RolloutFault, Scenario, Service, SurgeFault
from simulations.twin.objects import Obj, parse_time
from simulations.twin.resources.apps import DEPLOYMENTS
from simulations.twin.resources.batch import CRONJOBS, JOBS
from simulations.twin.resources.core import NAMESPACES, PODS
from simulations.twin.store import Store

FloatArray = npt.NDArray[np.float64]

#: Metrics of every service, in the order of :attr:`ServiceState.series`.
SERVICE_METRICS = (REQUESTS, ERROR_RATIO, P50, P99, CPU, MEMORY, RESTARTS, READY)
MODEL_METRICS = (ACCURACY, FEATURE, PREDICTION)
#: Utilisation is capped here in the latency curve: a queue at 100 % never drains.
MAX_UTILISATION = 0.98
#: The warm-up history runs its pods at most this busy (:meth:`Workload.history`).
HEALTHY_UTILISATION = 0.8
#: Latency of a request that timed out.
TIMEOUT_SECONDS = 10.0
IMAGE_REGISTRY = "registry.example/shop"
APP_LABEL = "app"


def _seed(seed: int, *parts: str) -> int:
    return (seed * 1_000_003 + zlib.crc32("/".join(parts).encode())) & 0xFFFFFFFF


def offered_load(
    service: Service, scenario: Scenario, times: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """The requests/s the service is offered at ``times`` (unix seconds), surges included."""
    spec = scenario.spec
    start = scenario.start
    t = times - start
    traffic = service.traffic
    trace = scenario.traces.get(service.name)
    if trace is not None:
        # the trace's own rows, before the start too (the warm-up): never its future
        base = np.interp(t, trace[0], trace[1])
    else:
        hour = np.mod(times / 3600.0, 24.0)
        cycle = 1.0 + traffic.daily * np.cos(2.0 * math.pi * (hour - traffic.peak_hour) / 24.0)
        growth = 1.0 + traffic.growth * np.maximum(t, 0.0) / 3600.0
        base = traffic.base * cycle * np.maximum(growth, 0.05)
    factor = np.ones_like(times)
    for fault in spec.faults:
        if isinstance(fault, SurgeFault) and fault.service == service.name:
            factor *= surge_factor(fault, t)
    noise = rng.normal(0.0, traffic.noise, size=times.shape) if traffic.noise > 0 else 0.0
    return np.asarray(np.maximum(base * factor * (1.0 + noise), 0.0), dtype=np.float64)


def surge_factor(fault: SurgeFault, t: FloatArray) -> FloatArray:
    """The surge's multiplier at scenario times ``t``: ramp up, hold, ramp down."""
    if fault.daily:
        t = np.mod(t - fault.at, 86400.0) + fault.at
    rise_end = fault.at + fault.rise
    hold_end = rise_end + fault.hold
    fall_end = hold_end + fault.fall
    up = np.clip((t - fault.at) / max(fault.rise, 1e-9), 0.0, 1.0)
    down = np.clip((fall_end - t) / max(fault.fall, 1e-9), 0.0, 1.0)
    shape = np.where(t < rise_end, up, np.where(t < hold_end, 1.0, down))
    shape = np.where((t < fault.at) | (t >= fall_end), 0.0, shape)
    return np.asarray(1.0 + (fault.factor - 1.0) * shape, dtype=np.float64)


def latency(base_seconds: float, utilisation: float) -> tuple[float, float]:
    """(p50, p99) seconds of a service at ``utilisation`` (a queue: slow as it nears full)."""
    rho = min(max(utilisation, 0.0), MAX_UTILISATION)
    queue = rho**4 / (1.0 - rho)
    p50 = base_seconds * (1.0 + 0.3 * queue)
    p99 = base_seconds * (2.5 + 1.5 * queue)
    if utilisation >= 1.0:  # overloaded: the queue grows until requests time out
        p99 = _grown(p99, utilisation, 8)
        p50 = _grown(p50, utilisation, 4)
    return p50, p99


def _grown(seconds: float, utilisation: float, power: int) -> float:
    """``seconds x utilisation**power``, at most :data:`TIMEOUT_SECONDS` (also where the power
    overflows a float: a service offered far more than its pods can serve)."""
    try:
        return min(TIMEOUT_SECONDS, seconds * utilisation**power)
    except OverflowError:
        return TIMEOUT_SECONDS


@dataclass(slots=True)
class _Pod:
    uid: str
    name: str
    created: float
    version: str
    memory_mib: float = 0.0


@dataclass(slots=True)
class ServiceState:
    """What the model tracks of one service between steps."""

    service: Service
    load: FloatArray
    """Offered requests/s at each step of the run."""
    rng: np.random.Generator
    series: dict[str, int] = field(default_factory=dict)
    pods: dict[str, _Pod] = field(default_factory=dict)
    restarts: int = 0
    drift_since: float | None = None
    drift: DriftFault | None = None
    retrained_at: float | None = None
    versions: dict[str, RolloutFault] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observation:
    """One step: the samples for the detectors and per-service values for scoring and plots."""

    batch: SampleBatch
    values: dict[str, dict[str, float]]
    """``values[service][metric]``."""
    replicas: dict[str, int]
    requests: dict[str, float]
    errors: dict[str, float]
    """Failed requests in the step."""
    oom_kills: list[str]
    """Pods OOM-killed in this step, as ``service/pod``."""


class Workload:
    """Services of a scenario in a twin cluster: creates them, injects faults, produces metrics."""

    def __init__(self, scenario: Scenario, store: Store, series: SeriesRegistry, times: FloatArray) -> None:
        self.scenario = scenario
        self.store = store
        self.series = series
        self.times = times
        self.step = scenario.spec.step
        self.states: dict[str, ServiceState] = {}
        for service in scenario.spec.services:
            rng = np.random.default_rng(_seed(scenario.spec.seed, "traffic", service.namespace, service.name))
            state = ServiceState(service, offered_load(service, scenario, times, rng), rng)
            labels = {"namespace": service.namespace, "deployment": service.name}
            for metric in SERVICE_METRICS:
                state.series[metric] = self._id(metric, labels)
            if service.model is not None:
                model_labels = {**labels, "model": service.model.name}
                for metric in MODEL_METRICS:
                    state.series[metric] = self._id(metric, model_labels)
            self.states[service.name] = state
        for fault in scenario.spec.faults:
            if isinstance(fault, RolloutFault):
                self.states[fault.service].versions[fault.version] = fault
        self._pending = sorted(
            (f for f in scenario.spec.faults if not isinstance(f, SurgeFault)), key=lambda f: f.at
        )
        self._pods_revision = -1  # the store revision _pods_by_app was read at
        self._pods_by_app: dict[str, list[tuple[Obj, bool]]] = {}
        self.mitigated: list[float | None] = [
            scenario.start + f.at + f.rise + f.hold + f.fall if isinstance(f, SurgeFault) else None
            for f in scenario.spec.faults
        ]
        """Per fault of the scenario, in its order: when it was removed (None: not yet)."""

    def _id(self, metric: str, labels: dict[str, str]) -> int:
        sid = self.series.id_for(SeriesKey.of(metric, labels))
        if sid < 0:
            msg = "the series registry is full; raise its limit for this scenario"
            raise RuntimeError(msg)
        return sid

    # ------------------------------------------------------------ the cluster

    def setup(self) -> None:
        """Create the namespaces, Deployments and training CronJobs in the store."""
        namespaces = {s.namespace for s in self.scenario.spec.services}
        for ns in sorted(namespaces):
            if self.store.find(NAMESPACES, "", ns) is None:
                self.store.create(NAMESPACES, "", {"metadata": {"name": ns}})
        for state in self.states.values():
            s = state.service
            self.store.create(DEPLOYMENTS, s.namespace, deployment(s))
            if s.model is not None:
                self.store.create(CRONJOBS, s.namespace, training_cronjob(s))

    def inject(self, now: float) -> list[str]:
        """Start the faults due at ``now``; returns what started, for the timeline."""
        started: list[str] = []
        start = self.scenario.start
        while self._pending and start + self._pending[0].at <= now:
            fault = self._pending.pop(0)
            state = self.states[fault.service]
            if isinstance(fault, RolloutFault):
                s = state.service
                body = self.store.get(DEPLOYMENTS, s.namespace, s.name)
                body["spec"]["template"]["spec"]["containers"][0]["image"] = image(s, fault.version)
                self.store.update(DEPLOYMENTS, s.namespace, s.name, body)
                started.append(f"{fault.service}: rollout of {fault.version}")
            elif isinstance(fault, DriftFault):
                state.drift_since, state.drift = start + fault.at, fault
                started.append(f"{fault.service}: model inputs drift by {fault.shift:g} sd")
        return started

    def _read_pods(self) -> dict[str, list[tuple[Obj, bool]]]:
        """Live pods by ``namespace/app``, with readiness; re-read only when the cluster changed."""
        revision = self.store.revision
        if revision == self._pods_revision:
            return self._pods_by_app
        by_app: dict[str, list[tuple[Obj, bool]]] = {}
        for pod in self.store.peek(PODS):
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            app = (meta.get("labels") or {}).get(APP_LABEL)
            if app is None:
                continue
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or ()
            )
            by_app.setdefault(f"{meta.get('namespace')}/{app}", []).append((pod, ready))
        self._pods_revision, self._pods_by_app = revision, by_app
        return by_app

    def _completed_training(self, state: ServiceState) -> float | None:
        s = state.service
        assert s.model is not None
        prefix = f"train-{s.model.name}"
        done = None
        for job in self.store.peek(JOBS, s.namespace):
            if not str(job["metadata"].get("name", "")).startswith(prefix):
                continue
            status = job.get("status") or {}
            if int(status.get("succeeded") or 0) >= 1 and status.get("completionTime"):
                when = parse_time(str(status["completionTime"]))
                done = when if done is None else max(done, when)
        return done

    # ------------------------------------------------------------ one step

    def observe(self, index: int, now: float) -> Observation:
        """Metrics of every service at step ``index`` (time ``now``), from the cluster's state."""
        pods_by_app = self._read_pods()
        ids: list[int] = []
        values: list[float] = []
        per_service: dict[str, dict[str, float]] = {}
        replicas: dict[str, int] = {}
        requests: dict[str, float] = {}
        errors: dict[str, float] = {}
        kills: list[str] = []
        self._note_mitigations(now, pods_by_app)
        for name, state in self.states.items():
            s = state.service
            desired = self._desired(s)
            replicas[name] = desired
            seen = pods_by_app.get(f"{s.namespace}/{s.name}", [])
            observed = self._service_step(state, index, now, seen, kills)
            per_service[name] = observed
            requests[name] = observed[REQUESTS] * self.step
            errors[name] = observed[ERROR_RATIO] * requests[name]
            for metric, value in observed.items():
                ids.append(state.series[metric])
                values.append(value)
        n = len(ids)
        batch = SampleBatch(
            np.asarray(ids, dtype=np.int64),
            np.full(n, now, dtype=np.float64),
            np.asarray(values, dtype=np.float64),
        )
        return Observation(batch, per_service, replicas, requests, errors, kills)

    def _note_mitigations(self, now: float, pods_by_app: dict[str, list[tuple[Obj, bool]]]) -> None:
        """Mark the injected faults that are gone at ``now`` (see :attr:`mitigated`)."""
        start = self.scenario.start
        for i, fault in enumerate(self.scenario.spec.faults):
            if self.mitigated[i] is not None or now < start + fault.at:
                continue
            state = self.states[fault.service]
            s = state.service
            if isinstance(fault, RolloutFault):
                found = self.store.peek_one(DEPLOYMENTS, s.namespace, s.name) or {}
                template = (found.get("spec") or {}).get("template") or {}
                wanted = _version(template)
                running = pods_by_app.get(f"{s.namespace}/{s.name}", [])
                if wanted != fault.version and all(_version(pod) != fault.version for pod, _ in running):
                    self.mitigated[i] = now
            elif isinstance(fault, DriftFault) and s.model is not None:
                done = self._completed_training(state)
                if done is not None and start + fault.at <= done <= now:
                    self.mitigated[i] = done

    def _desired(self, s: Service) -> int:
        found = self.store.peek_one(DEPLOYMENTS, s.namespace, s.name)
        return int(((found or {}).get("spec") or {}).get("replicas") or 0)

    def _service_step(
        self, state: ServiceState, index: int, now: float, seen: list[tuple[Obj, bool]], kills: list[str]
    ) -> dict[str, float]:
        s = state.service
        rng = state.rng
        load = float(state.load[index])
        alive: dict[str, _Pod] = {}
        ready: list[_Pod] = []
        restarts = 0
        for pod, is_ready in seen:
            uid = str(pod["metadata"]["uid"])
            tracked = state.pods.get(uid)
            if tracked is None:
                tracked = _Pod(
                    uid,
                    str(pod["metadata"]["name"]),
                    parse_time(str(pod["metadata"]["creationTimestamp"])),
                    _version(pod),
                )
            fault = state.versions.get(tracked.version)
            leak = fault.leak_mib_per_minute if fault is not None else 0.0
            running = max(0.0, now - tracked.created - s.start_seconds)
            tracked.memory_mib = s.memory_mib * (1.0 + 0.05 * rng.standard_normal()) + leak * running / 60.0
            if is_ready and tracked.memory_mib >= s.memory_limit_mib:
                # OOM-killed: the kubelet would restart the container; here the pod is replaced
                self.store.delete(PODS, s.namespace, tracked.name)
                kills.append(f"{s.name}/{tracked.name}")
                restarts += 1
                continue
            alive[uid] = tracked
            if is_ready:
                ready.append(tracked)
        state.pods = alive
        state.restarts += restarts
        n_ready = len(ready)
        capacity = 0.0
        added_error = 0.0
        added_latency = 0.0
        for tracked in ready:
            fault = state.versions.get(tracked.version)
            cpu_factor = fault.cpu_factor if fault is not None else 1.0
            capacity += s.capacity_per_pod / cpu_factor
            if fault is not None:
                added_error += fault.error_ratio / n_ready
                added_latency += fault.latency_ms / 1000.0 / n_ready
        utilisation = load / capacity if capacity > 0 else (math.inf if load > 0 else 0.0)
        overload = 0.0 if utilisation <= 1.0 else 1.0 - 1.0 / utilisation
        p_error = min(1.0, s.error_ratio + added_error + overload) if n_ready else 1.0
        n_requests = max(1, round(load * self.step))
        observed_error = float(rng.binomial(n_requests, p_error)) / n_requests
        p50, p99 = latency(s.latency_ms / 1000.0, utilisation)
        jitter = math.exp(0.05 * rng.standard_normal())
        if not n_ready:
            p50, p99 = TIMEOUT_SECONDS, TIMEOUT_SECONDS
        memory = max((p.memory_mib for p in ready), default=0.0) / s.memory_limit_mib
        cpu = min(1.0, utilisation) * (1.0 + 0.02 * rng.standard_normal()) if n_ready else 0.0
        out = {
            REQUESTS: load,
            ERROR_RATIO: observed_error,
            P50: (p50 + added_latency) * jitter,
            P99: (p99 + 2.0 * added_latency) * jitter,
            CPU: max(0.0, cpu),
            MEMORY: memory,
            RESTARTS: float(restarts),
            READY: float(n_ready),
        }
        if s.model is not None:
            out.update(self._model_step(state, now))
        return out

    def _model_step(self, state: ServiceState, now: float) -> dict[str, float]:
        s = state.service
        assert s.model is not None
        rng = state.rng
        shift = 0.0
        accuracy = s.model.accuracy
        if state.drift is not None and state.drift_since is not None and now >= state.drift_since:
            shift = state.drift.shift
            done = self._completed_training(state)
            retrained = done is not None and done >= state.drift_since and done <= now
            if not retrained:
                accuracy = max(0.05, accuracy - state.drift.accuracy_drop)
        n = s.model.predictions
        feature = float(rng.normal(shift, 1.0))
        prediction = 1.0 / (1.0 + math.exp(-(feature + rng.normal(0.0, 0.5))))
        return {
            ACCURACY: float(rng.binomial(n, accuracy)) / n,
            FEATURE: feature,
            PREDICTION: prediction,
        }

    # ------------------------------------------------------------ history

    def history(self, times: FloatArray) -> SampleBatch:
        """Healthy metrics at ``times`` (before the run): no faults, and enough pods.

        What the daemon's Prometheus backfill gives it at start: enough history for the
        detectors and forecasters to learn each series' normal before the scenario begins. The
        history is healthy by construction: the configured replicas, or wherever the load would
        run them above :data:`HEALTHY_UTILISATION`, as many as keep it there (as an autoscaler
        would have), so a busy trace puts no overload into what the detectors learn as normal.
        """
        ids: list[FloatArray] = []
        stamps: list[FloatArray] = []
        vals: list[FloatArray] = []
        for state in self.states.values():
            s = state.service
            rng = np.random.default_rng(_seed(self.scenario.spec.seed, "history", s.namespace, s.name))
            load = offered_load(s, self.scenario, times, rng)
            pods = np.maximum(s.replicas, np.ceil(load / (s.capacity_per_pod * HEALTHY_UTILISATION)))
            util = load / (pods * s.capacity_per_pod)
            lat = np.array([latency(s.latency_ms / 1000.0, u) for u in util])
            jitter = np.exp(0.05 * rng.standard_normal(times.size))
            n_req = np.maximum(1, np.round(load * self.step)).astype(np.int64)
            overload = np.where(util > 1.0, 1.0 - 1.0 / np.maximum(util, 1e-9), 0.0)
            err = rng.binomial(n_req, np.minimum(1.0, s.error_ratio + overload)) / n_req
            memory = s.memory_mib * (1.0 + 0.05 * rng.standard_normal(times.size)) / s.memory_limit_mib
            cpu = np.maximum(0.0, np.minimum(1.0, util) * (1.0 + 0.02 * rng.standard_normal(times.size)))
            metrics: dict[str, FloatArray] = {
                REQUESTS: load,
                ERROR_RATIO: err,
                P50: lat[:, 0] * jitter,
                P99: lat[:, 1] * jitter,
                CPU: cpu,
                MEMORY: memory,
                RESTARTS: np.zeros(times.size),
                READY: pods,
            }
            if s.model is not None:
                n = s.model.predictions
                feature = rng.normal(0.0, 1.0, times.size)
                metrics[ACCURACY] = rng.binomial(n, s.model.accuracy, times.size) / n
                metrics[FEATURE] = feature
                metrics[PREDICTION] = 1.0 / (1.0 + np.exp(-(feature + rng.normal(0.0, 0.5, times.size))))
            for metric, arr in metrics.items():
                ids.append(np.full(times.size, state.series[metric], dtype=np.float64))
                stamps.append(times)
                vals.append(np.asarray(arr, dtype=np.float64))
        if not ids:
            return SampleBatch.empty()
        sid = np.concatenate(ids).astype(np.int64)
        ts = np.concatenate(stamps)
        vs = np.concatenate(vals)
        order = np.lexsort((sid, ts))  # time order, as a source would deliver them
        return SampleBatch(sid[order], ts[order], vs[order])


def image(service: Service, version: str) -> str:
    """The container image of ``version`` of ``service``."""
    return f"{IMAGE_REGISTRY}/{service.name}:{version}"


def _version(pod: Obj) -> str:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return str(containers[0].get("image", "")).rpartition(":")[2]


def deployment(s: Service) -> Obj:
    """The Deployment of a service."""
    labels = {APP_LABEL: s.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": s.name, "namespace": s.namespace, "labels": dict(labels)},
        "spec": {
            "replicas": s.replicas,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {"twin.aiops.dev/start-seconds": f"{s.start_seconds:g}"},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image(s, s.version),
                            "resources": {"limits": {"memory": f"{int(s.memory_limit_mib)}Mi"}},
                        }
                    ]
                },
            },
        },
    }


def training_cronjob(s: Service) -> Obj:
    """The suspended CronJob that trains the service's model (the retrain action runs it once)."""
    assert s.model is not None
    name = f"train-{s.model.name}"
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": s.namespace, "labels": {"model": s.model.name}},
        "spec": {
            "schedule": "0 3 * * 0",
            "suspend": True,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 1,
                    "template": {
                        "metadata": {
                            "labels": {"model": s.model.name},
                            "annotations": {"twin.aiops.dev/run-seconds": f"{s.model.train_time:g}"},
                        },
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {"name": "train", "image": f"{IMAGE_REGISTRY}/train:{s.model.name}"}
                            ],
                        },
                    },
                }
            },
        },
    }
