"""Replay speed: a 24-hour scenario with 50 services at 15 s resolution, agent policy, on one core.

Target: under 60 s, and the same scenario and seed give byte-identical summary JSON twice.
Prints the figures and writes ``bench-results/replay.json``. Run with ``make bench``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest

from agent.playbook.loader import load_paths
from simulations.replay import ReplayOptions, replay
from simulations.report import dumps_json
from simulations.result import AGENT
from simulations.runner import SHIPPED_PLAYBOOKS, STATIC_PLAYBOOKS
from simulations.scenario import parse_scenario

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]

RESULTS = Path("bench-results") / "replay.json"
SERVICES = 50
TARGET_SECONDS = 60.0


def big_scenario() -> str:
    lines = [
        "apiVersion: aiops/v1",
        "kind: Scenario",
        "metadata: {name: fifty-services, description: 24 h of 50 services with a few faults}",
        "spec:",
        "  seed: 1",
        "  duration: 24h",
        "  warmup: 6h",
        "  services:",
    ]
    for i in range(SERVICES):
        model = f", model: {{name: model-{i}}}" if i % 10 == 0 else ""
        lines.append(
            f"    - {{name: svc-{i}, namespace: ns-{i % 5}, replicas: 4, traffic: {{base: {80 + i}}}{model}}}"
        )
    lines += [
        "  faults:",
        "    - {type: rollout, service: svc-1, at: 3h, version: v2, errorRatio: 0.1}",
        "    - {type: rollout, service: svc-2, at: 5h, version: v2, leakMiBPerMinute: 5}",
        "    - {type: surge, service: svc-3, at: 9h, factor: 2.5}",
        "    - {type: drift, service: svc-10, at: 12h}",
    ]
    return "\n".join(lines) + "\n"


def test_replay_speed_and_determinism() -> None:
    playbooks = load_paths([SHIPPED_PLAYBOOKS])
    scenario = parse_scenario(
        big_scenario(), "fifty-services.yaml", playbook_names=[p.name for p in playbooks.playbooks]
    )
    options = ReplayOptions(playbooks, load_paths([STATIC_PLAYBOOKS]), policies=(AGENT,))
    runs = []
    for _ in range(2):
        started = time.perf_counter()
        result = replay(scenario, options)
        runs.append((time.perf_counter() - started, dumps_json(result.summary())))
    seconds = min(r[0] for r in runs)
    identical = runs[0][1] == runs[1][1]
    steps = int(scenario.spec.duration / scenario.spec.step)
    figures = {
        "services": SERVICES,
        "hours": scenario.spec.duration / 3600,
        "step_seconds": scenario.spec.step,
        "steps": steps,
        "seconds": [round(r[0], 2) for r in runs],
        "best_seconds": round(seconds, 2),
        "target_seconds": TARGET_SECONDS,
        "ratio_to_target": round(seconds / TARGET_SECONDS, 3),
        "steps_per_second": round(steps / seconds, 1),
        "summary_identical": identical,
        "actions": len(result.runs[AGENT].actions),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    took = figures["seconds"]
    print(f"\nreplay: 24 h x {SERVICES} services at 15 s: {took} s (target < {TARGET_SECONDS:.0f} s)")
    print(f"replay: {figures['steps_per_second']} steps/s, summary JSON identical twice: {identical}")
    assert identical
    assert seconds < TARGET_SECONDS
