"""Scoring a run: time to detect and mitigate, SLO minutes, error budget, actions, cost.

Definitions (the same for every policy, so the agent and the baselines compare fairly):

- a service is *symptomatic* at a step when it is outside its SLO (error ratio or p99 latency over
  the objective), had a pod OOM-killed, runs at 90 % or more of its memory limit, or serves a model
  whose accuracy is below its healthy accuracy by more than half the injected drop;
- *time to detect*: per fault, from its start to the policy's first signal on that service (for
  faults other than a surge, the routine demand forecast does not count); the worst over the
  scenario's faults, None if a fault went undetected (or the policy has no detection);
- *time to mitigate*: per faulted service, from the fault's start to the end of its last
  symptomatic step (0 when the fault never showed); None if it was still symptomatic within the
  last ten minutes of the run; the worst over the faulted services;
- *SLO-violation minutes*: service-minutes outside the SLO; *error budget burned*: failed requests
  over the failures the SLO allows for all requests of the run;
- an action is *unnecessary* when nothing justified it: no fault on its service within 30 minutes
  before it (or still running), no symptom within 30 minutes either side, and, for a scale-up, no
  CPU at or over the HPA's 70 % target either; a scale-down that saves replicas is necessary;
- *replica-hours*: desired replicas over time, summed over services.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from simulations.result import (
    ACCURACY,
    AGENT,
    CPU,
    MEMORY,
    REQUESTS,
    RESTARTS,
    ActionRecord,
    BoolArray,
    Expectation,
    FaultWindow,
    PolicyRun,
    ScenarioResult,
    Score,
)
from simulations.scenario import DriftFault, RolloutFault, Scenario, SurgeFault

#: Actions that change a workload (``notify`` does not).
WORKLOAD_ACTIONS = frozenset({"scale", "rollback", "restart", "retrain", "delete_pod"})
NEAR = 1800.0
SETTLE = 600.0
HPA_TARGET = 0.7


def fault_windows(scenario: Scenario) -> list[FaultWindow]:
    """The scenario's faults with their times."""
    start = scenario.start
    out = []
    for f in scenario.spec.faults:
        if isinstance(f, SurgeFault):
            end = start + f.at + f.rise + f.hold + f.fall
            out.append(FaultWindow(f.service, "surge", start + f.at, end, f"traffic x{f.factor:g}"))
        elif isinstance(f, RolloutFault):
            parts = [f"rollout {f.version}"]
            if f.error_ratio:
                parts.append(f"+{f.error_ratio:.0%} errors")
            if f.latency_ms:
                parts.append(f"+{f.latency_ms:g} ms")
            if f.leak_mib_per_minute:
                parts.append(f"leak {f.leak_mib_per_minute:g} MiB/min")
            if f.cpu_factor != 1.0:
                parts.append(f"cpu x{f.cpu_factor:g}")
            out.append(FaultWindow(f.service, "rollout", start + f.at, None, ", ".join(parts)))
        elif isinstance(f, DriftFault):
            out.append(FaultWindow(f.service, "drift", start + f.at, None, f"input drift {f.shift:g} sd"))
    return out


def symptoms(scenario: Scenario, run: PolicyRun, service: str) -> BoolArray:
    """Whether ``service`` was symptomatic at each step of ``run``."""
    n = run.times.size
    bucket = run.metrics.get(service, {})
    out = run.slo_breach.get(service, np.zeros(n, dtype=bool)).copy()
    out |= np.nan_to_num(bucket.get(RESTARTS, np.zeros(n))) > 0
    out |= np.nan_to_num(bucket.get(MEMORY, np.zeros(n))) >= 0.9
    found = scenario.service(service)
    model = found.model if found is not None else None
    if model is not None and ACCURACY in bucket:
        drops = [
            f.accuracy_drop
            for f in scenario.spec.faults
            if isinstance(f, DriftFault) and f.service == service
        ]
        if drops:
            out |= np.nan_to_num(bucket[ACCURACY], nan=1.0) < model.accuracy - max(drops) / 2.0
    return out


def _detected(run: PolicyRun, fault: FaultWindow) -> float | None:
    for event in run.events:
        if event.kind != "signal" or event.service != fault.service or event.time < fault.start:
            continue
        if fault.kind != "surge" and event.text.startswith(f"forecast {REQUESTS}"):
            continue
        return event.time - fault.start
    return None


def score_run(scenario: Scenario, run: PolicyRun, faults: list[FaultWindow]) -> Score:
    """Score ``run`` (and mark its unnecessary actions); the score is stored on the run too."""
    step = scenario.spec.step
    times = run.times
    detect: float | None = None
    if faults and any(e.kind == "signal" for e in run.events):
        found = [_detected(run, f) for f in faults]
        detect = None if any(d is None for d in found) else max(d for d in found if d is not None)
    sick = {service: symptoms(scenario, run, service) for service in run.metrics}
    mitigate: float | None = None
    faulted = sorted({f.service for f in faults})
    if faulted:
        worst: float | None = 0.0
        for service in faulted:
            first = min(f.start for f in faults if f.service == service)
            sym = sick[service] & (times >= first)
            idx = np.flatnonzero(sym)
            if idx.size == 0:
                took = 0.0
            elif times[idx[-1]] >= times[-1] - SETTLE:
                worst = None
                break
            else:
                took = float(times[idx[-1]] + step - first)
            worst = max(worst, took) if worst is not None else None
        mitigate = worst
    slo_minutes = float(sum(b.sum() for b in run.slo_breach.values())) * step / 60.0
    requests = float(sum(r.sum() for r in run.requests.values()))
    errors = float(sum(e.sum() for e in run.errors.values()))
    budget = errors / (scenario.spec.slo.error_ratio * requests) if requests > 0 else 0.0
    replica_hours = float(sum(r.sum() for r in run.replicas.values())) * step / 3600.0
    marked = []
    for taken in run.actions:
        if taken.action in WORKLOAD_ACTIONS and taken.outcome == "executed":
            needed = _necessary(run, faults, taken, sick.get(taken.service))
            taken = replace(taken, necessary=needed)  # noqa: PLW2901 - marking a copy of each in turn
        marked.append(taken)
    run.actions = marked
    counted = [a for a in marked if a.action in WORKLOAD_ACTIONS and a.outcome == "executed"]
    score = Score(
        time_to_detect=detect,
        time_to_mitigate=mitigate,
        slo_violation_minutes=slo_minutes,
        error_budget_burned=budget,
        unnecessary_actions=sum(1 for a in counted if not a.necessary),
        actions=len(counted),
        replica_hours=replica_hours,
    )
    run.score = score
    return score


def _necessary(
    run: PolicyRun, faults: list[FaultWindow], action: ActionRecord, sick: BoolArray | None
) -> bool:
    service, when = action.service, action.time
    for f in faults:
        if f.service == service and f.start - NEAR <= when and (f.end is None or when <= f.end + NEAR):
            return True
    near = (run.times >= when - NEAR) & (run.times <= when + NEAR)
    if sick is not None and (sick & near).any():
        return True
    if action.action == "scale":
        replicas = run.replicas.get(service)
        if replicas is not None:
            k = int(np.searchsorted(run.times, when))
            before = replicas[max(0, k - 1)]
            after = replicas[min(replicas.size - 1, k + 1)]
            if after < before:
                return True
        cpu = run.metrics.get(service, {}).get(CPU)
        if cpu is not None and (np.nan_to_num(cpu[near]) >= HPA_TARGET).any():
            return True
    return False


def evaluate(scenario: Scenario, result: ScenarioResult) -> list[Expectation]:
    """Check the agent's run against the scenario's ``expect`` section."""
    run = result.runs.get(AGENT)
    if run is None:
        return []
    expect = scenario.spec.expect
    out: list[Expectation] = []
    first_fault: dict[str, float] = {}
    for f in result.faults:
        first_fault[f.service] = min(first_fault.get(f.service, math.inf), f.start)
    for a in expect.actions:
        since = first_fault.get(a.service, result.start)
        hits = [
            x
            for x in run.actions
            if x.service == a.service and x.action == a.action and x.outcome == "executed" and since <= x.time
        ]
        met = any(x.time <= since + a.within for x in hits)
        detail = f"first at +{(hits[0].time - since) / 60:.1f} min after the fault" if hits else "never ran"
        out.append(Expectation(f"{a.action} on {a.service} within {a.within / 60:g} min", met, detail))
    for service in expect.no_action:
        taken = [
            x
            for x in run.actions
            if x.service == service and x.action in WORKLOAD_ACTIONS and x.outcome == "executed"
        ]
        detail = ", ".join(f"{x.action} at +{(x.time - result.start) / 60:.0f} min" for x in taken) or "none"
        out.append(Expectation(f"no action on {service}", not taken, detail))
    for r in expect.recovers:
        values = run.metrics.get(r.service, {}).get(r.metric)
        since = first_fault.get(r.service, result.start)
        bar = f"under {r.below:g}" if r.below is not None else f"over {r.above:g}"
        if values is None:
            out.append(Expectation(f"{r.metric} of {r.service} back {bar}", False, "no such metric"))
            continue
        smooth = _rolling_median(np.nan_to_num(values, nan=np.nan), 5)
        ok = (smooth <= r.below) if r.below is not None else (smooth >= (r.above or 0.0))
        recovered_at = recovered(run.times, ok, since, r.hold)
        met = recovered_at is not None and recovered_at <= since + r.within
        detail = "never" if recovered_at is None else f"at +{(recovered_at - since) / 60:.1f} min"
        kept = "" if r.hold is None else f", then for {r.hold / 60:g} min"
        out.append(
            Expectation(
                f"{r.metric} of {r.service} back {bar} within {r.within / 60:g} min{kept}", met, detail
            )
        )
    for b in expect.beats:
        base = result.runs.get(b.baseline)
        if base is None or base.score is None or run.score is None:
            out.append(Expectation(f"beats {b.baseline}", False, "baseline not replayed"))
            continue
        mine, theirs = run.score, base.score
        if b.slo_minutes:
            fewer = mine.slo_violation_minutes < theirs.slo_violation_minutes or (
                mine.slo_violation_minutes == 0 and theirs.slo_violation_minutes == 0
            )
            out.append(
                Expectation(
                    f"fewer SLO-violation minutes than {b.baseline}",
                    fewer,
                    f"{mine.slo_violation_minutes:.1f} vs {theirs.slo_violation_minutes:.1f}",
                )
            )
        if b.replica_hours_slack is not None:
            cap = theirs.replica_hours * (1.0 + b.replica_hours_slack)
            out.append(
                Expectation(
                    f"replica-hours no more than {b.baseline}'s (+{b.replica_hours_slack:.0%})",
                    mine.replica_hours <= cap,
                    f"{mine.replica_hours:.1f} vs {theirs.replica_hours:.1f}",
                )
            )
    return out


def recovered(times: np.ndarray, ok: np.ndarray, since: float, hold: float | None) -> float | None:
    """The first time at or after ``since`` from which ``ok`` holds for ``hold`` seconds (None: to
    the end of the run); None if there is none. A window the run ends in counts to the end."""
    good = np.asarray(ok, dtype=bool) & (times >= since)
    if hold is None:
        bad = np.flatnonzero(~good & (times >= since))
        if not bad.size:
            return since
        return float(times[bad[-1] + 1]) if bad[-1] + 1 < times.size else None
    failed = np.concatenate([[0], np.cumsum(~good)])
    end = np.searchsorted(times, times + hold, side="right")  # each window's exclusive end
    clean = good & (failed[end] - failed[np.arange(times.size)] == 0)
    first = np.flatnonzero(clean)
    return float(times[first[0]]) if first.size else None


def _rolling_median(values: np.ndarray, width: int) -> np.ndarray:
    if values.size < width:
        return values
    pad = np.concatenate([np.full(width - 1, values[0]), values])
    windows = np.lib.stride_tricks.sliding_window_view(pad, width)
    return np.asarray(np.median(windows, axis=1))
