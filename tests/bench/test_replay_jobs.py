"""`aiops replay --jobs`: the shipped generated scenarios (every policy, one seed each) one run at a
time and on every core, wall time of each and their ratio, and the same report bytes both ways.

Prints the figures and writes ``bench-results/replay_jobs.json``. Run with ``make bench``.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from pathlib import Path

import pytest

from simulations.limits import available_cores
from simulations.runner import SHIPPED_SCENARIOS, RunSettings, run

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]

RESULTS = Path("bench-results") / "replay_jobs.json"
SCENARIOS = ("bad-rollout", "model-drift", "two-faults", "traffic-surge")


def test_replay_on_every_core_against_one_at_a_time(tmp_path: Path) -> None:
    cores = available_cores()
    seconds: dict[int, float] = {}
    reports: dict[int, dict[str, bytes]] = {}
    for jobs in sorted({1, cores}):
        report = tmp_path / f"jobs{jobs}"
        settings = RunSettings(
            scenarios=[SHIPPED_SCENARIOS / f"{name}.yaml" for name in SCENARIOS],
            report=report,
            progress=False,
            timeline=False,
            jobs=jobs,
        )
        started = time.perf_counter()
        code = run(settings, io.StringIO(), io.StringIO())
        seconds[jobs] = time.perf_counter() - started
        assert code == 0
        reports[jobs] = {str(p.relative_to(report)): p.read_bytes() for p in report.rglob("*") if p.is_file()}
    identical = reports[1] == reports[cores]
    figures = {
        "scenarios": list(SCENARIOS),
        "runs": len(SCENARIOS) * 4,
        "cores": cores,
        "seconds_one_at_a_time": round(seconds[1], 1),
        "seconds_on_every_core": round(seconds[cores], 1),
        "speed_up": round(seconds[1] / seconds[cores], 2),
        "report_identical": identical,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"\nreplay of {len(SCENARIOS)} scenarios x 4 policies: {figures['seconds_one_at_a_time']} s one at a "
        f"time, {figures['seconds_on_every_core']} s on {cores} cores (x{figures['speed_up']}); "
        f"report identical: {identical}"
    )
    assert identical
