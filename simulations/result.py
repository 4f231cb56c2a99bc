"""What a replay produces: per policy, the metrics over time, what happened, and the score.

A :class:`ScenarioResult` holds one :class:`PolicyRun` per policy replayed on the same scenario
and seed: the agent itself and the baselines (no agent, static-threshold rules, the Kubernetes
HPA). The report (:mod:`simulations.report`) and the summary JSON are made from these alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Policy names, in the order reports show them.
AGENT = "agent"
NO_AGENT = "none"
STATIC = "static"
HPA = "hpa"
POLICIES = (AGENT, NO_AGENT, STATIC, HPA)

#: The metrics every service exposes (the workload model's names, Prometheus conventions).
REQUESTS = "http_requests_per_second"
ERROR_RATIO = "http_requests_error_ratio"
P50 = "http_request_duration_p50_seconds"
P99 = "http_request_duration_p99_seconds"
CPU = "container_cpu_usage_ratio"
MEMORY = "container_memory_working_set_ratio"
RESTARTS = "kube_pod_container_restarts"
READY = "kube_deployment_status_replicas_ready"
#: The metrics of a service that serves an ML model.
ACCURACY = "model_accuracy"
FEATURE = "model_feature_value"
PREDICTION = "model_prediction_value"


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the timeline: a fault starting, a signal, an incident change, an action ..."""

    time: float
    kind: str
    """``fault``, ``signal``, ``incident``, ``held``, ``action``, ``verification``, ``oom`` or ``slo``."""
    service: str
    text: str
    incident: str = ""
    """The agent's incident the event belongs to (engine events and executor decisions)."""
    playbook: str = ""
    """The playbook of that incident."""
    guardrail: str = ""
    """For ``held`` events and held actions: the guardrail that held it."""
    state: str = ""
    """For ``incident`` and ``verification`` events: the state the incident entered."""


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """An action the policy took on a service (the HPA's own scaling is not an action)."""

    time: float
    service: str
    action: str
    """``scale``, ``rollback``, ``restart``, ``retrain``, ``delete_pod``, ``notify`` ..."""
    outcome: str
    """``executed``, ``dry_run``, ``skipped``, ``failed`` ..."""
    detail: str = ""
    necessary: bool = True
    """False when scoring judged it unnecessary (no fault or SLO breach near it)."""
    incident: str = ""
    """The agent's incident that proposed it."""
    guardrail: str = ""
    """For a held action (``skipped``, ``pending_approval`` ...): the guardrail that held it."""


@dataclass(frozen=True, slots=True)
class Score:
    """How well a policy did on a scenario; None where a figure does not apply (nothing to detect)."""

    time_to_detect: float | None
    """Seconds from the first fault's start to the policy's first signal on a faulted service."""
    time_to_mitigate: float | None
    """Seconds from the first fault's start until every faulted service is back within its SLO."""
    slo_violation_minutes: float
    """Service-minutes outside the SLO (error ratio or p99 latency over the objective)."""
    error_budget_burned: float
    """Failed requests over the SLO's allowed failures for the scenario's duration (1.0 = all)."""
    unnecessary_actions: int
    actions: int
    replica_hours: float

    def as_dict(self) -> dict[str, Any]:
        """The score as plain values (rounded, so the summary JSON is stable)."""
        return {
            "time_to_detect_s": _round(self.time_to_detect),
            "time_to_mitigate_s": _round(self.time_to_mitigate),
            "slo_violation_minutes": _round(self.slo_violation_minutes),
            "error_budget_burned": _round(self.error_budget_burned, 4),
            "unnecessary_actions": self.unnecessary_actions,
            "actions": self.actions,
            "replica_hours": _round(self.replica_hours),
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(slots=True)
class PolicyRun:
    """One policy replayed over a scenario: per-step arrays indexed like :attr:`times`."""

    policy: str
    times: FloatArray
    """Step times (unix seconds, virtual)."""
    metrics: dict[str, dict[str, FloatArray]]
    """``metrics[service][metric]``: the value at each step (NaN where the service has none)."""
    replicas: dict[str, FloatArray]
    """Desired replicas (``spec.replicas``) of each service at each step."""
    slo_breach: dict[str, BoolArray]
    """Whether each service was outside its SLO at each step."""
    anomaly_score: dict[str, FloatArray] = field(default_factory=dict)
    """The highest detector score over the service's series at each step (agent and static only)."""
    forecast_upper: dict[str, FloatArray] = field(default_factory=dict)
    """The request-rate forecast's upper bound at each step, NaN where none (agent only)."""
    forecast_mean: dict[str, FloatArray] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    requests: dict[str, FloatArray] = field(default_factory=dict)
    """Requests each service received in each step."""
    errors: dict[str, FloatArray] = field(default_factory=dict)
    """Requests each service failed in each step."""
    incidents: list[dict[str, Any]] = field(default_factory=list)
    """The decision record (:mod:`agent.decisions`) of each incident that fired, oldest first."""
    score: Score | None = None
    mitigated: list[float | None] = field(default_factory=list)
    """Per fault of the scenario (in :attr:`ScenarioResult.faults` order): when this run removed
    it (the bad version stopped serving, the model was retrained, the surge ended); None: never."""


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A fault injected into a service, for plots and scoring."""

    service: str
    kind: str
    start: float
    end: float | None
    """None: lasts until something fixes it (a rollback, a restart, a retrain)."""
    text: str


@dataclass(frozen=True, slots=True)
class Expectation:
    """One statement of what a good outcome is, and whether the agent's run met it."""

    text: str
    met: bool
    detail: str = ""


@dataclass(slots=True)
class ScenarioResult:
    """Every policy's run on one scenario, and whether the agent met the scenario's expectations."""

    name: str
    description: str
    seed: int
    start: float
    duration: float
    step: float
    services: list[str]
    faults: list[FaultWindow]
    runs: dict[str, PolicyRun]
    expectations: list[Expectation] = field(default_factory=list)
    slo: dict[str, float] = field(default_factory=dict)
    """The objectives scored: ``error_ratio`` and ``p99_seconds``."""

    @property
    def passed(self) -> bool:
        """Whether every expectation was met."""
        return all(e.met for e in self.expectations)

    def summary(self) -> dict[str, Any]:
        """The summary JSON of this scenario: the same scenario and seed give the same dict."""
        return {
            "scenario": self.name,
            "description": self.description,
            "seed": self.seed,
            "start": self.start,
            "duration_s": self.duration,
            "step_s": self.step,
            "services": list(self.services),
            "slo": dict(sorted(self.slo.items())),
            "faults": [
                {"service": f.service, "kind": f.kind, "start": f.start, "end": f.end, "text": f.text}
                for f in self.faults
            ],
            "scores": {name: run.score.as_dict() for name, run in self.runs.items() if run.score is not None},
            "actions": {
                name: [
                    {
                        "time": round(a.time, 3),
                        "service": a.service,
                        "action": a.action,
                        "outcome": a.outcome,
                        "detail": a.detail,
                        "necessary": a.necessary,
                    }
                    for a in run.actions
                ]
                for name, run in self.runs.items()
            },
            "incidents": {name: list(run.incidents) for name, run in self.runs.items() if run.incidents},
            "expectations": [{"text": e.text, "met": e.met, "detail": e.detail} for e in self.expectations],
            "passed": self.passed,
        }
