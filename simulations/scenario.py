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
both apply, or a trace file with gaps is refused before anything runs.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.durations import Duration
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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


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

    ``time`` is seconds from any origin or an ISO-8601 time (``2024-11-15 16:57:00``); rows may be
    as coarse as the data is (per minute, per five minutes) and are interpolated to the scenario's
    step. The scenario starts ``start`` after the first row and the warm-up is the rows before it,
    so the detectors learn only the trace's past; a trace too short for the warm-up or the run is
    an error naming the rows missing.
    """

    file: str = Field(description="CSV file, relative to the scenario")
    start: Duration | None = Field(
        None, description="where in the trace the scenario starts, after its first row; default: the warm-up"
    )
    scale: float = Field(
        1.0,
        gt=0,
        description="multiplies the file's values into requests/s (1/60 for requests per minute; more to "
        "make a small trace need several pods)",
    )


class Traffic(_Model):
    """A service's offered request rate: a generated pattern, or a trace file."""

    base: float = Field(100.0, gt=0, description="mean requests/s")
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
    predictions: int = Field(400, gt=0, description="predictions scored per step")


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
        parse_start(value)
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
    errors = _check(doc, model.spec, playbook_names)
    traces: dict[str, Any] = {}
    for i, service in enumerate(model.spec.services):
        if service.traffic.trace is not None:
            trace, problem = read_trace(base, service.traffic.trace, model.spec)
            if problem is not None:
                errors.append(_err(doc, ["spec", "services", i, "traffic", "trace"], problem))
            elif trace is not None:
                traces[service.name] = trace
    if errors:
        raise YamlValidationError(errors)
    return Scenario(model, file, traces)


def _err(doc: YamlDocument, path: list[str | int], message: str) -> LocatedError:
    return LocatedError(doc.locate(path), field_path(path), message)


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
    if spec.step <= 0 or spec.duration < spec.step:
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
    for i, surge_a in enumerate(spec.faults):
        if not isinstance(surge_a, SurgeFault):
            continue
        for j, surge_b in enumerate(spec.faults[:i]):
            if isinstance(surge_b, SurgeFault) and surge_b.service == surge_a.service:
                end_b = surge_b.at + surge_b.rise + surge_b.hold + surge_b.fall
                if surge_b.at <= surge_a.at < end_b:
                    errors.append(
                        _err(doc, ["spec", "faults", i, "at"], f"overlaps faults[{j}]: one surge at a time")
                    )
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

    Problems: an unreadable or oversized file, a bad row (named by its line), a gap longer than
    twice the trace's own typical interval, and too few rows before the start for the warm-up or
    after it for the run.
    """
    name = trace.file
    path = (base or Path()) / name
    try:
        if path.stat().st_size > MAX_TRACE_BYTES:
            return None, f"trace {name!r} is larger than {MAX_TRACE_BYTES >> 20} MiB"
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return None, f"cannot read trace {name!r}: {exc}"
    times: list[float] = []
    values: list[float] = []
    for n, row in enumerate(rows, start=1):
        if not row:
            continue
        t = _trace_time(row[0]) if row else None
        if n == 1 and t is None:
            continue  # header
        if len(row) < 2 or t is None or not _is_number(row[1]):
            expected = "time,value (seconds or an ISO time, then a number)"
            return None, f"{name}:{n}: expected {expected}, got {row!r}"
        v = float(row[1])
        if v < 0 or not math.isfinite(v) or not math.isfinite(t):
            return None, f"{name}:{n}: a value must be a finite number >= 0, got {row[1]!r}"
        if times and t <= times[-1]:
            return None, f"{name}:{n}: time {row[0]} is not after the previous row's"
        times.append(t)
        values.append(v * trace.scale)
    if len(times) < 2:
        return None, f"trace {name!r} has fewer than two rows"
    t_arr = np.asarray(times) - times[0]
    gaps = np.diff(t_arr)
    typical = float(np.median(gaps))
    worst = int(np.argmax(gaps))
    if gaps[worst] > 2 * typical:
        return None, (
            f"trace {name!r} has a gap of {gaps[worst]:g} s after row {worst + 1} "
            f"(more than twice its typical interval of {typical:g} s)"
        )
    start = spec.warmup if trace.start is None else trace.start
    first, last = -start, t_arr[-1] - start  # the trace's span, in seconds from the scenario's start
    needs = [(-spec.warmup, "the warm-up"), (spec.duration, "the run")]
    for edge, what in needs:
        if edge < first - typical or edge > last + typical:
            missing = math.ceil(((first - edge) if edge < first else (edge - last)) / typical)
            where = "before its first row" if edge < first else "after its last row"
            return None, (
                f"trace {name!r} starts the scenario {start:g} s after its first row and covers "
                f"{first:g}..{last:g} s around the start; {what} needs {min(edge, 0):g}..{max(edge, 0):g} s: "
                f"about {missing} rows missing {where}"
            )
    return (t_arr - start, np.asarray(values)), None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
