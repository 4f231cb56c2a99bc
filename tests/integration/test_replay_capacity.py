"""Scale ahead of the forecast on pods that serve 80 or 30 req/s, not the simulator's default 50.

The shipped agent config and playbook, replayed closed loop against the twin cluster: the
forecast detector measures the capacity per pod from the demand, CPU and ready replicas the
service reports, and the scale actions size replicas on that measurement.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from agent.playbook.loader import load_paths
from simulations.replay import ReplayOptions, replay
from simulations.result import AGENT
from simulations.runner import SHIPPED_PLAYBOOKS, STATIC_PLAYBOOKS
from simulations.scenario import load_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SCENARIO = Path(__file__).parent / "scenarios" / "surge-80-per-pod.yaml"
DEFAULT = 50.0  # the simulator's default capacity per pod, and the constant playbooks used to carry
HEADROOM = 1.25  # the shipped playbook's headroom 0.25
SIZED = re.compile(r"from (\d+) to (\d+).* replicas; forecast ([\d.e+]+) at ([\d.]+) per pod \(measured\)")


def scale_actions(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(record, action) of each executed scale of scale-ahead-of-forecast."""
    return [
        (record, action)
        for record in records
        if record["playbook"] == "scale-ahead-of-forecast"
        for action in record["actions"]
        if action["action"] == "scale" and action["status"] == "executed"
    ]


@pytest.mark.parametrize(("truth", "base"), [(80.0, 250), (30.0, 100)], ids=["80-per-pod", "30-per-pod"])
def test_scale_ahead_of_forecast_sizes_replicas_on_the_measured_capacity(
    truth: float, base: int, tmp_path: Path
) -> None:
    playbooks = load_paths([SHIPPED_PLAYBOOKS])
    text = SCENARIO.read_text().replace("capacityPerPod: 80", f"capacityPerPod: {truth:g}")
    path = tmp_path / "surge.yaml"
    path.write_text(text.replace("base: 250", f"base: {base}"))
    scenario = load_scenario(path, playbook_names=[p.name for p in playbooks.playbooks])
    assert [s.capacity_per_pod for s in scenario.spec.services] == [truth]
    result = replay(scenario, ReplayOptions(playbooks, load_paths([STATIC_PLAYBOOKS]), policies=(AGENT,)))
    run = result.runs[AGENT]
    scaled = scale_actions(run.incidents)
    assert len(scaled) >= 3, [a["message"] for _, a in scaled]
    raised_to = []
    forecasts = []
    for record, action in scaled:
        # the decision record keeps the signal's measured capacity, within 15 % of the truth
        measured = [signal["capacity_per_pod"] for signal in record["signals"]]
        assert all(abs(c - truth) <= 0.15 * truth for c in measured), measured
        assert all("measured" in signal["why"] for signal in record["signals"])
        # the action says what it sized on, and that is the same measurement
        found = SIZED.search(action["message"])
        assert found is not None, action["message"]
        before, after, forecast, per_pod = (float(g) for g in found.groups())
        forecasts.append(forecast)
        assert any(per_pod == pytest.approx(c, rel=1e-3) for c in measured), (per_pod, measured)
        if after > before and "asked" not in action["message"]:
            # a raise no bound or step limit changed is ceil(forecast x 1.25 / measured capacity);
            # the printed numbers have 4 significant digits, hence the two roundings
            low = math.ceil(forecast * (1 - 1e-3) * HEADROOM / (per_pod * (1 + 1e-3)))
            high = math.ceil(forecast * (1 + 1e-3) * HEADROOM / (per_pod * (1 - 1e-3)))
            assert low <= after <= high, action["message"]
            raised_to.append((after, forecast))
    assert raised_to, "no unclamped raise to check the sizing against"
    # sized on the simulator's default the same forecasts would have asked for other counts
    for after, forecast in raised_to:
        on_default = math.ceil(forecast * HEADROOM / DEFAULT)
        assert after < on_default if truth > DEFAULT else after > on_default, (after, forecast)
    # and the service ran on those replicas: at the peak no more than the measured sizing asked
    assert run.replicas["frontend"].max() <= math.ceil(max(forecasts) * HEADROOM / (0.85 * truth))
