"""Incident scenarios: YAML files naming services, traffic, faults, playbooks and a good outcome.

    apiVersion: aiops/v1
    kind: Scenario
    metadata: {name: bad-rollout, description: ...}
    spec:
      seed: 7
      duration: 6h
      playbooks: [rollback-on-error-spike]
      services:
        - name: checkout
          replicas: 4
          traffic: {base: 120, daily: 0.3}
      faults:
        - {type: rollout, service: checkout, at: 2h, version: v2, errorRatio: 0.12}
      expect:
        actions: [{action: rollback, service: checkout, within: 15m}]

Scenario files are validated like playbooks: every error names the file, line, column and field,
and a scenario that names an unknown service, playbook or fault, overlapping faults that cannot
both apply, or a trace file with gaps is refused before anything runs. So is one that would cost
more than a replay is bounded to (steps, services, pods, faults, samples, request rate: the
``MAX_*`` and ``MIN_STEP`` bounds below), a number that is not finite, and a scenario or trace
that is not a regular file (a FIFO or a device would block or never end).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from agent.durations import Duration
from agent.files import read_regular_file
from agent.yamlloc import (
    LocatedError,
    Location,
    YamlDocument,
    YamlValidationError,
    field_path,
    parse_documents,
    pydantic_errors,
    read_text,
)

#: Scenario files larger than this are refused unread.
MAX_SCENARIO_BYTES = 1 << 20
#: A Monday at midnight UTC: scenarios start here unless they say otherwise.
DEFAULT_START = "2026-01-05T00:00:00Z"
K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# What a scenario can make a replay cost is bounded here, before anything runs. For scale: the
# shipped scenarios run at most 2 days after at most 3 days of warm-up at the 15 s step (28,800
# steps) of a few services, the 50-service benchmark 30 h (7,200 steps). Measured, a replay costs
# about 3 ms a step plus 0.2 ms a service and step (agent policy), and its warm-up history about
# 75 bytes a sample (one per series and step) at its peak.

#: The shortest step: the detectors and the twin work in seconds, and a shorter step only
#: multiplies the steps (the shipped scenarios use the default, 15 s).
MIN_STEP = 1.0
#: The longest run plus warm-up simulated: a quarter, far more than any incident needs.
MAX_SPAN = 90 * 86400.0
#: The most steps of run plus warm-up: 23 days at 1 s, a year at 15 s, 70 times the longest
#: shipped scenario; about two hours of one service under the agent.
MAX_STEPS = 2_000_000
#: The most samples simulated (steps of run plus warm-up times each service's series): a
#: single service for :data:`MAX_STEPS` steps, or 50 services for a week at 15 s; its warm-up
#: history then peaks near 1.8 GB.
MAX_SAMPLES = 24_000_000
#: Series of every service and of a served model (``SERVICE_METRICS`` and ``MODEL_METRICS`` of
#: :mod:`simulations.workload`, which imports this module).
SERIES_PER_SERVICE = 8
SERIES_PER_MODEL = 3
#: The most services of one scenario.
MAX_SERVICES = 1_000
#: The most pods the services can run, their ``replicas`` or ``maxReplicas`` if more, summed:
#: each pod is an object the twin steps (about 7 us a step under the agent).
MAX_PODS = 20_000
#: The most pod-steps: the pods counted for :data:`MAX_PODS` times the run's steps, at most about
#: 25 minutes of twin work (the 50-service benchmark needs 12 million).
MAX_POD_STEPS = 200_000_000
#: The most faults of one scenario (each is checked, scheduled and scored at every step).
MAX_FAULTS = 1_000
#: Scenario times (the start minus its warm-up, and trace rows) lie in 1970-01-01..9000-01-01, so
#: every time the replay derives from them stays a valid date.
EARLIEST_TIME = 0.0
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC).timestamp()
#: The highest request rate a service can be offered, requests/s: its ``base`` or a scaled trace
#: row, and its peak with the daily cycle, growth and surges. 4000 times the busiest shipped
#: trace, and more than :data:`MAX_PODS` pods serve at the default capacity; request counts per
#: step stay exact integers in a float.
MAX_RATE = 1e7
#: The largest trace ``scale``.
MAX_TRACE_SCALE = 1e6
#: Trace files with more rows than this are refused: 23 days per second, 3.8 years per minute
#: (the shipped ones have 33,000 at most).
MAX_TRACE_ROWS = 2_000_000
#: A trace may miss rows for this long (or twice its own interval, if longer) where the replay
#: reads it; the values in between are interpolated. Prometheus' default lookback (5 minutes)
#: reads a scraped series across a hole this long as present too.
MAX_TRACE_GAP = 300.0
#: A quoted trace row is cut to this many characters in an error.
MAX_QUOTE = 80


class _Model(BaseModel):
    # allow_inf_nan=False: .inf, .nan and "999...9w" (which parses to inf) are located errors
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, allow_inf_nan=False)


class Surge(_Model):
    """A traffic surge: the rate ramps to ``factor`` times normal over ``rise``, holds, ramps back."""

    at: Duration
    factor: float = Field(gt=0)
    rise: Duration = 600.0
    hold: Duration = 3600.0
    fall: Duration = 600.0


#: Trace files larger than this are refused unread.
MAX_TRACE_BYTES = 64 << 20


class Trace(_Model):
    """Requests from a CSV file of ``time,value`` rows (a header row is allowed).

    ``time`` is seconds from any origin (from 0 to those of 9000-01-01) or an ISO-8601 time from
    1970 to 9000 (``2024-11-15 16:57:00``); rows may be as coarse as the data is (per minute, per
    five minutes) and are interpolated to the scenario's step. The scenario starts ``start`` after
    the first row and the warm-up is the rows before it, so the detectors learn only the trace's
    past; a trace too short for the warm-up or the run is an error naming the rows missing.
    """

    file: str = Field(description="CSV file, relative to the scenario")
    start: Duration | None = Field(
        None, description="where in the trace the scenario starts, after its first row; default: the warm-up"
    )
    scale: float = Field(
        1.0,
        gt=0,
        le=MAX_TRACE_SCALE,
        description="multiplies the file's values into requests/s (1/60 for requests per minute; more to "
        "make a small trace need several pods)",
    )


class Traffic(_Model):
    """A service's offered request rate: a generated pattern, or a trace file."""

    base: float = Field(100.0, gt=0, le=MAX_RATE, description="mean requests/s")
    daily: float = Field(0.3, ge=0, lt=1, description="amplitude of the daily cycle, a fraction of base")
    peak_hour: float = Field(14.0, alias="peakHour", ge=0, lt=24, description="UTC hour of the daily peak")
    noise: float = Field(0.04, ge=0, lt=1, description="relative noise of each step")
    growth: float = Field(0.0, ge=-0.5, le=10, description="linear growth, a fraction of base per hour")
    trace: Trace | None = Field(
        None,
        description="requests from a CSV file instead of the pattern above (a name: {file: NAME})",
    )

    @field_validator("trace", mode="before")
    @classmethod
    def _trace_file(cls, value: Any) -> Any:
        return {"file": value} if isinstance(value, str) else value


class Model(_Model):
    """An ML model served by the service: accuracy, input feature and prediction distributions."""

    name: str = Field(pattern=K8S_NAME, max_length=52)
    accuracy: float = Field(0.92, gt=0, lt=1)
    train_time: Duration = Field(1200.0, alias="trainTime", description="how long a retraining Job runs")
    predictions: int = Field(400, gt=0, le=1_000_000_000, description="predictions scored per step")


class Service(_Model):
    """A Deployment and how it behaves under load."""

    name: str = Field(pattern=K8S_NAME, max_length=63)
    namespace: str = Field("default", pattern=K8S_NAME, max_length=63)
    replicas: int = Field(3, ge=1, le=500)
    capacity_per_pod: float = Field(50.0, alias="capacityPerPod", gt=0, description="requests/s at full CPU")
    latency_ms: float = Field(40.0, alias="latencyMs", gt=0, description="p50 latency when idle")
    error_ratio: float = Field(
        0.001, alias="errorRatio", ge=0, lt=1, description="errors of a healthy version"
    )
    memory_mib: float = Field(300.0, alias="memoryMiB", gt=0)
    memory_limit_mib: float = Field(1024.0, alias="memoryLimitMiB", gt=0)
    start_seconds: Duration = Field(45.0, alias="startSeconds", description="pod start to ready")
    max_replicas: int = Field(40, alias="maxReplicas", ge=1, description="the HPA's ceiling")
    hpa: bool = Field(
        True,
        description="the service has a CPU HorizontalPodAutoscaler under every policy but 'none', as "
        "a Deployment that serves requests does in most clusters (the agent then works with it, "
        "raising its floor); false: a Deployment without one, which the agent scales directly "
        "(the 'hpa' policy gives every service one)",
    )
    hpa_target_cpu: int = Field(
        70,
        alias="hpaTargetCPU",
        ge=1,
        le=100,
        description="the HPA's CPU target (averageUtilization, %), under every policy that has one",
    )
    version: str = Field("v1", pattern=K8S_NAME)
    traffic: Traffic = Field(default_factory=Traffic)
    model: Model | None = None


class RolloutFault(_Model):
    """A new version is rolled out; it may carry faults that a rollback (or restart) clears."""

    type: Literal["rollout"]
    service: str
    at: Duration
    version: str = Field(pattern=K8S_NAME)
    error_ratio: float = Field(0.0, alias="errorRatio", ge=0, le=1, description="added error ratio")
    latency_ms: float = Field(0.0, alias="latencyMs", ge=0, description="added latency")
    leak_mib_per_minute: float = Field(0.0, alias="leakMiBPerMinute", ge=0, description="memory leak per pod")
    cpu_factor: float = Field(1.0, alias="cpuFactor", gt=0, description="CPU per request vs the old version")


class SurgeFault(_Model):
    """A traffic surge on one service."""

    type: Literal["surge"]
    service: str
    at: Duration
    factor: float = Field(gt=1)
    rise: Duration = 600.0
    hold: Duration = 3600.0
    fall: Duration = 900.0
    daily: bool = Field(False, description="recurs every day at the same time (in the warm-up history too)")


class DriftFault(_Model):
    """The model's inputs drift: features shift and accuracy drops until it is retrained."""

    type: Literal["drift"]
    service: str
    at: Duration
    shift: float = Field(1.5, description="feature shift in standard deviations")
    accuracy_drop: float = Field(0.15, alias="accuracyDrop", gt=0, lt=1)


Fault = Annotated[RolloutFault | SurgeFault | DriftFault, Field(discriminator="type")]


class ActionExpectation(_Model):
    """The agent must run ``action`` on ``service`` within ``within`` of the service's first fault."""

    action: str
    service: str
    within: Duration = 1800.0


class RecoveryExpectation(_Model):
    """After the service's first fault, ``metric`` must be back under ``below`` (or over ``above``)
    within ``within``, and stay there for ``hold`` (default: to the end of the run), judged on a
    5-step rolling median, so one noisy sample does not count."""

    service: str
    metric: str
    below: float | None = None
    above: float | None = None
    within: Duration = 3600.0
    hold: Duration | None = Field(
        None,
        gt=0,
        description="how long the metric must then stay back (default: to the end of the run); for "
        "traffic whose own bursts cross the bar now and then, whatever is done about the fault",
    )


class BeatExpectation(_Model):
    """Compared with a baseline: fewer SLO-violation minutes, and no more replica-hours (within slack)."""

    baseline: Literal["none", "static", "hpa"]
    slo_minutes: bool = Field(True, alias="sloMinutes")
    replica_hours_slack: float | None = Field(
        0.05, alias="replicaHoursSlack", ge=0, description="allowed extra replica-hours; none: not compared"
    )


class Expect(_Model):
    """What a good outcome is."""

    actions: list[ActionExpectation] = Field(default_factory=list)
    no_action: list[str] = Field(default_factory=list, alias="noAction", description="services left alone")
    recovers: list[RecoveryExpectation] = Field(default_factory=list)
    beats: list[BeatExpectation] = Field(default_factory=list)


class Slo(_Model):
    """The service-level objective every service is scored against."""

    error_ratio: float = Field(0.02, alias="errorRatio", gt=0, lt=1)
    p99_seconds: float = Field(0.5, alias="p99Seconds", gt=0)


class Spec(_Model):
    seed: int = Field(0, ge=0)
    duration: Duration
    step: Duration = 15.0
    start: str = DEFAULT_START
    warmup: Duration = Field(86400.0, description="healthy history the detectors learn from before the start")
    playbooks: list[str] = Field(default_factory=list, description="playbook names; empty: every playbook")
    services: list[Service] = Field(min_length=1)
    faults: list[Fault] = Field(default_factory=list)
    slo: Slo = Field(default_factory=Slo)
    expect: Expect = Field(default_factory=Expect)

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        when = parse_start(value)
        if not EARLIEST_TIME <= when <= LATEST_TIME:
            msg = f"must be between 1970-01-01 and 9000-01-01, got {value!r}"
            raise ValueError(msg)
        return value

    @field_validator("services", "faults", mode="before")
    @classmethod
    def _count(cls, value: Any, info: ValidationInfo) -> Any:
        """Too many services or faults are refused before any is validated."""
        limit = MAX_SERVICES if info.field_name == "services" else MAX_FAULTS
        if isinstance(value, list) and len(value) > limit:
            msg = f"at most {limit} {info.field_name} can be simulated, got {len(value)}"
            raise ValueError(msg)
        return value


class Metadata(_Model):
    name: str = Field(pattern=K8S_NAME, max_length=63)
    description: str = ""


class ScenarioDoc(_Model):
    api_version: Literal["aiops/v1"] = Field(alias="apiVersion")
    kind: Literal["Scenario"]
    metadata: Metadata
    spec: Spec


def parse_start(value: str) -> float:
    """An ISO-8601 time with a zone to unix seconds."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        msg = f"expected an ISO-8601 time like {DEFAULT_START}, got {value!r}"
        raise ValueError(msg) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario, with its traces loaded."""

    doc: ScenarioDoc
    file: str
    traces: dict[str, tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]]
    """Per service with a trace file: (seconds from the scenario's start, requests/s), covering the
    warm-up (negative times) and the run."""

    @property
    def name(self) -> str:
        return self.doc.metadata.name

    @property
    def spec(self) -> Spec:
        return self.doc.spec

    @property
    def start(self) -> float:
        return parse_start(self.doc.spec.start)

    def service(self, name: str) -> Service | None:
        """The service called ``name``, if there is one."""
        return next((s for s in self.doc.spec.services if s.name == name), None)


def load_scenario(path: Path, *, playbook_names: Sequence[str] | None = None) -> Scenario:
    """Read and validate a scenario file; :class:`YamlValidationError` with located errors if invalid.

    ``playbook_names`` are the playbooks available; a scenario naming another one is an error.
    """
    text = read_text(path, max_bytes=MAX_SCENARIO_BYTES)
    return parse_scenario(text, str(path), base=path.parent, playbook_names=playbook_names)


def parse_scenario(
    text: str, file: str, *, base: Path | None = None, playbook_names: Sequence[str] | None = None
) -> Scenario:
    """Validate scenario ``text`` (named ``file`` in errors); trace files are relative to ``base``."""
    docs = parse_documents(text, file)
    if len(docs) != 1:
        where = Location(file, 1, 1)
        raise YamlValidationError(
            [LocatedError(where, "", f"expected one scenario document, found {len(docs)}")]
        )
    doc = docs[0]
    try:
        model = ScenarioDoc.model_validate(doc.data if doc.data is not None else {})
    except ValidationError as exc:
        raise YamlValidationError(pydantic_errors(doc, exc)) from exc
    bounds = _check_bounds(doc, model.spec)
    errors = bounds + _check(doc, model.spec, playbook_names)
    traces: dict[str, Any] = {}
    for i, service in enumerate(model.spec.services):
        if service.traffic.trace is not None and not bounds:
            trace, problem = read_trace(base, service.traffic.trace, model.spec)
            if problem is not None:
                errors.append(_err(doc, ["spec", "services", i, "traffic", "trace"], problem))
            elif trace is not None:
                traces[service.name] = trace
    if not errors:
        errors = _check_load(doc, model.spec, traces)
    if errors:
        raise YamlValidationError(errors)
    return Scenario(model, file, traces)


def _err(doc: YamlDocument, path: list[str | int], message: str) -> LocatedError:
    return LocatedError(doc.locate(path), field_path(path), message)


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.4g} days"


def _check_bounds(doc: YamlDocument, spec: Spec) -> list[LocatedError]:
    """What the scenario would cost to replay: refused over the bounds above, before anything runs."""
    errors: list[LocatedError] = []
    if spec.step < MIN_STEP:
        errors.append(_err(doc, ["spec", "step"], f"must be at least {MIN_STEP:g} s, got {spec.step:g} s"))
        return errors  # the step counts below would only repeat it
    if parse_start(spec.start) - spec.warmup < EARLIEST_TIME:
        errors.append(
            _err(doc, ["spec", "warmup"], f"reaches back before 1970-01-01 from the start {spec.start}")
        )
    span = spec.duration + spec.warmup
    if span > MAX_SPAN:
        field = "duration" if spec.duration >= spec.warmup else "warmup"
        errors.append(
            _err(
                doc,
                ["spec", field],
                f"the duration ({_days(spec.duration)}) and warm-up ({_days(spec.warmup)}) add up to "
                f"{_days(span)}; at most {_days(MAX_SPAN)} can be simulated",
            )
        )
        return errors
    steps = math.floor(span / spec.step)
    if steps > MAX_STEPS:
        errors.append(
            _err(
                doc,
                ["spec", "step"],
                f"the duration and warm-up are {steps} steps of {spec.step:g} s; at most {MAX_STEPS} can be "
                f"simulated (a longer step or a shorter duration or warm-up)",
            )
        )
        return errors
    series = sum(SERIES_PER_SERVICE + (SERIES_PER_MODEL if s.model else 0) for s in spec.services)
    if steps * series > MAX_SAMPLES:
        errors.append(
            _err(
                doc,
                ["spec", "services"],
                f"{len(spec.services)} services with {series} series over {steps} steps (duration and "
                f"warm-up) are {steps * series} samples; at most {MAX_SAMPLES} can be simulated",
            )
        )
    pods = 0
    for i, s in enumerate(spec.services):
        pods += max(s.replicas, s.max_replicas)
        if pods > MAX_PODS:
            field = "maxReplicas" if s.max_replicas >= s.replicas else "replicas"
            errors.append(
                _err(
                    doc,
                    ["spec", "services", i, field],
                    f"the services up to this one can run {pods} pods (replicas or maxReplicas if more, "
                    f"summed); at most {MAX_PODS} can be simulated",
                )
            )
            break
    run_steps = math.floor(spec.duration / spec.step)
    if pods <= MAX_PODS and pods * run_steps > MAX_POD_STEPS:
        errors.append(
            _err(
                doc,
                ["spec", "duration"],
                f"the services can run {pods} pods (replicas or maxReplicas if more, summed) for "
                f"{run_steps} steps: {pods * run_steps} pod-steps; at most {MAX_POD_STEPS} can be simulated",
            )
        )
    return errors


def _check_load(doc: YamlDocument, spec: Spec, traces: dict[str, Any]) -> list[LocatedError]:
    """Each service's peak offered load (noise aside) is at most :data:`MAX_RATE`: its trace's
    highest row or its base at the daily peak and at the end of its growth, times the surges in
    effect together (compared as logarithms: a product of many factors can overflow)."""
    errors: list[LocatedError] = []
    for i, s in enumerate(spec.services):
        traffic = s.traffic
        trace = traces.get(s.name)
        if trace is not None:
            peak, what = float(np.max(trace[1])), "its trace's highest row"
        else:
            growth = max(1.0, 1.0 + traffic.growth * spec.duration / 3600.0)
            peak, what = traffic.base * (1.0 + traffic.daily) * growth, "base, daily cycle and growth"
        surges = _surge_peak(spec, s.name)
        if surges > 0:
            what += " times the surges in effect together"
        if math.log(peak) + surges > math.log(MAX_RATE):
            shown = math.exp(min(math.log(peak) + surges, 700.0))
            errors.append(
                _err(
                    doc,
                    ["spec", "services", i, "traffic"],
                    f"offers up to {shown:.4g} requests/s ({what}); at most {MAX_RATE:g} can be simulated",
                )
            )
    return errors


def _surge_peak(spec: Spec, service: str) -> float:
    """The log of the largest product of ``service``'s surge factors in effect at one time of the
    run or its warm-up: a sweep over the surges' windows, every day's of a daily one."""
    day = 86400.0
    low, high = -spec.warmup, spec.duration
    events: list[tuple[float, float]] = []  # (time, +log factor where a window opens, - where it closes)
    for fault in spec.faults:
        if not isinstance(fault, SurgeFault) or fault.service != service:
            continue
        length = fault.rise + fault.hold + fault.fall
        if length <= 0:
            continue
        weight = math.log(fault.factor)
        if not fault.daily:
            events += [(fault.at, weight), (fault.at + length, -weight)]
        elif length >= day:  # in effect all the time
            events += [(low, weight), (high, -weight)]
        else:  # the span is at most MAX_SPAN: about 90 windows
            first = math.floor((low - fault.at - length) / day)
            for k in range(first, math.ceil((high - fault.at) / day) + 1):
                opens = fault.at + k * day
                events += [(opens, weight), (opens + length, -weight)]
    events.sort()  # at one time, closing (negative) before opening: windows are half-open
    total = best = 0.0
    for _, weight in events:
        total += weight
        best = max(best, total)
    return best


def _check(doc: YamlDocument, spec: Spec, playbook_names: Sequence[str] | None) -> list[LocatedError]:
    """The cross-field rules pydantic cannot express: names that must exist, faults that collide."""
    errors: list[LocatedError] = []
    services = {s.name: s for s in spec.services}
    seen: set[tuple[str, str]] = set()
    for i, s in enumerate(spec.services):
        if (s.namespace, s.name) in seen:
            errors.append(_err(doc, ["spec", "services", i, "name"], f"service {s.name!r} is declared twice"))
        seen.add((s.namespace, s.name))
        if s.memory_mib >= s.memory_limit_mib:
            errors.append(_err(doc, ["spec", "services", i, "memoryMiB"], "must be below memoryLimitMiB"))
    if spec.step >= MIN_STEP and spec.duration < spec.step:  # a shorter step is refused by _check_bounds
        errors.append(_err(doc, ["spec", "duration"], "must be at least one step long"))
    if playbook_names is not None:
        known = set(playbook_names)
        for i, name in enumerate(spec.playbooks):
            if name not in known:
                errors.append(
                    _err(doc, ["spec", "playbooks", i], f"unknown playbook {name!r}; known: {sorted(known)}")
                )
    rollouts: dict[tuple[str, float], int] = {}
    drifts: dict[str, int] = {}
    for i, fault in enumerate(spec.faults):
        where: list[str | int] = ["spec", "faults", i]
        service = services.get(fault.service)
        if service is None:
            errors.append(
                _err(
                    doc, [*where, "service"], f"unknown service {fault.service!r}; known: {sorted(services)}"
                )
            )
            continue
        if fault.at >= spec.duration:
            errors.append(_err(doc, [*where, "at"], "starts after the scenario ends"))
        if isinstance(fault, RolloutFault):
            if fault.version == service.version:
                errors.append(_err(doc, [*where, "version"], f"{service.name} already runs {fault.version}"))
            other = rollouts.get((fault.service, fault.at))
            if other is not None:
                errors.append(
                    _err(
                        doc,
                        [*where, "at"],
                        f"overlaps faults[{other}]: two rollouts of {fault.service} at the same time",
                    )
                )
            rollouts[(fault.service, fault.at)] = i
        elif isinstance(fault, DriftFault):
            if service.model is None:
                errors.append(_err(doc, [*where, "service"], f"{fault.service} serves no model to drift"))
            other_drift = drifts.get(fault.service)
            if other_drift is not None:
                errors.append(
                    _err(
                        doc,
                        [*where, "at"],
                        f"overlaps faults[{other_drift}]: {fault.service}'s inputs already drift",
                    )
                )
            drifts[fault.service] = i
    errors += _overlapping_surges(doc, spec)
    expect = spec.expect
    for i, a in enumerate(expect.actions):
        if a.service not in services:
            errors.append(
                _err(doc, ["spec", "expect", "actions", i, "service"], f"unknown service {a.service!r}")
            )
    for i, name in enumerate(expect.no_action):
        if name not in services:
            errors.append(_err(doc, ["spec", "expect", "noAction", i], f"unknown service {name!r}"))
    for i, r in enumerate(expect.recovers):
        if (r.below is None) == (r.above is None):
            errors.append(_err(doc, ["spec", "expect", "recovers", i], "needs exactly one of below, above"))
        if r.service not in services:
            errors.append(
                _err(doc, ["spec", "expect", "recovers", i, "service"], f"unknown service {r.service!r}")
            )
    return errors


def _overlapping_surges(doc: YamlDocument, spec: Spec) -> list[LocatedError]:
    """One surge at a time per service: each surge that starts before an earlier-starting one (or
    one starting with it but listed before it) has ended overlaps it; sorted, so O(n log n)."""
    by_service: dict[str, list[tuple[float, int, float]]] = {}
    for i, fault in enumerate(spec.faults):
        if isinstance(fault, SurgeFault):
            end = fault.at + fault.rise + fault.hold + fault.fall
            by_service.setdefault(fault.service, []).append((fault.at, i, end))
    found: list[tuple[int, int]] = []
    for surges in by_service.values():
        surges.sort()
        reach, reached_by = -math.inf, -1  # the latest end so far, and whose
        for at, i, end in surges:
            if at < reach:
                found.append((i, reached_by))
            if end > reach:
                reach, reached_by = end, i
    return [
        _err(doc, ["spec", "faults", i, "at"], f"overlaps faults[{j}]: one surge at a time")
        for i, j in sorted(found)
    ]


def _trace_time(text: str) -> float | None:
    """Seconds from a number or an ISO-8601 time (no zone: UTC); None if it is neither."""
    if _is_number(text):
        return float(text)
    try:
        return parse_start(text.strip())
    except ValueError:
        return None


def read_trace(
    base: Path | None, trace: Trace, spec: Spec
) -> tuple[
    tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]] | None, str | None
]:
    """Read a trace CSV as (seconds from the scenario's start, requests/s), or say what is wrong.

    Problems: an unreadable, oversized or not regular file (a FIFO, a device), more than
    :data:`MAX_TRACE_ROWS` rows, a bad row (named by its line): a time that is no finite number or
    ISO time or is outside 1970..9000, a value that is not a finite number >= 0 or is over
    :data:`MAX_RATE` once scaled; too few rows before the start for the warm-up or after it for
    the run, and where the replay reads it, a gap longer than both twice the trace's own typical
    interval and :data:`MAX_TRACE_GAP`.
    """
    name = trace.file
    path = (base or Path()) / name
    try:
        raw = read_regular_file(path, MAX_TRACE_BYTES)
        if len(raw) > MAX_TRACE_BYTES:
            return None, f"trace {name!r} is larger than {MAX_TRACE_BYTES >> 20} MiB"
        rows = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))
        del raw
        parsed = _trace_rows(name, rows, trace.scale)
    except (OSError, ValueError, csv.Error) as exc:  # ValueError: a NUL in the name, or not UTF-8
        return None, f"cannot read trace {name!r}: {exc}"
    if isinstance(parsed, str):
        return None, parsed
    times, values = parsed
    if len(times) < 2:
        return None, f"trace {name!r} has fewer than two rows"
    # times lie in 1970..9000: no difference of two overflows
    t_arr = np.asarray(times) - times[0]
    gaps = np.diff(t_arr)
    typical = float(np.median(gaps))
    start = spec.warmup if trace.start is None else trace.start
    first, last = -start, float(t_arr[-1]) - start  # the trace's span, in seconds from the scenario's start
    needs = [(-spec.warmup, "the warm-up"), (spec.duration, "the run")]
    for edge, what in needs:
        if edge < first - typical or edge > last + typical:
            missing = ((first - edge) if edge < first else (edge - last)) / typical
            # rows may be far closer than the span they miss: no ceil of inf
            count = f"about {math.ceil(missing)}" if missing < 1e15 else "more than 10^15"
            where = "before its first row" if edge < first else "after its last row"
            return None, (
                f"trace {name!r} starts the scenario {start:g} s after its first row and covers "
                f"{first:g}..{last:g} s around the start; {what} needs {min(edge, 0):g}..{max(edge, 0):g} s: "
                f"{count} rows missing {where}"
            )
    # a gap only counts where the replay reads the trace: from the row at or before the warm-up's
    # first time to the row at or after the run's end
    lo = max(int(np.searchsorted(t_arr, start - spec.warmup, side="right")) - 1, 0)
    hi = min(int(np.searchsorted(t_arr, start + spec.duration, side="left")), len(t_arr) - 1)
    allowed = max(2 * typical, MAX_TRACE_GAP)
    if hi > lo:
        worst = lo + int(np.argmax(gaps[lo:hi]))
        if gaps[worst] > allowed:
            return None, (
                f"trace {name!r} has a gap of {gaps[worst]:g} s after row {worst + 1} "
                f"(more than twice its typical interval of {typical:g} s and more than "
                f"{MAX_TRACE_GAP:g} s) within the warm-up and the run"
            )
    return (t_arr - start, np.asarray(values)), None


def _trace_rows(name: str, rows: Iterator[list[str]], scale: float) -> tuple[list[float], list[float]] | str:
    """The (times, scaled values) of a trace's rows, or what is wrong with the first bad one."""
    times: list[float] = []
    values: list[float] = []
    for n, row in enumerate(rows, start=1):
        if not row:
            continue
        t = _trace_time(row[0])
        if n == 1 and t is None:
            continue  # header
        if len(row) < 2 or t is None or not _is_number(row[1]):
            expected = "time,value (seconds or an ISO time, then a number)"
            return f"{name}:{n}: expected {expected}, got {_quote(row)}"
        if not math.isfinite(t) or not EARLIEST_TIME <= t <= LATEST_TIME:
            return (
                f"{name}:{n}: time {_quote(row[0])} must be seconds or an ISO time between "
                f"1970-01-01 and 9000-01-01 ({EARLIEST_TIME:g}..{LATEST_TIME:.0f} s)"
            )
        v = float(row[1])
        if v < 0 or not math.isfinite(v):
            return f"{name}:{n}: a value must be a finite number >= 0, got {_quote(row[1])}"
        if v * scale > MAX_RATE:  # inf too
            return (
                f"{name}:{n}: value {_quote(row[1])} times scale {scale:g} is {v * scale:g} requests/s, "
                f"more than the {MAX_RATE:g} a service can be offered"
            )
        if times and t <= times[-1]:
            return f"{name}:{n}: time {_quote(row[0])} is not after the previous row's"
        if len(times) == MAX_TRACE_ROWS:
            return f"trace {name!r} has more than {MAX_TRACE_ROWS} rows"
        times.append(t)
        values.append(v * scale)
    return times, values


def _quote(value: object) -> str:
    """``repr(value)``, cut to :data:`MAX_QUOTE` characters."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTE else f"{text[: MAX_QUOTE - 3]}..."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
