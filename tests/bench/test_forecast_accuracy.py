"""Forecast accuracy 15 minutes ahead on request counts, beside persistence and seasonal naive.

The series (``REQUEST_COUNTS``): the GenAI serving trace (requests per minute) and the one
request-count series of nab-dev, realAWSCloudwatch/elb_request_count_8c0756.csv. nab-dev's
``ec2_network_in`` files (bytes received: demand, but not requests) are reported beside them
(``DEMAND_PROXIES``) and not held to the target; realTraffic (vehicle speed, occupancy, travel
time) is not a count and is left out.

Each series is summed per 5 minutes (detectors.backtest.resample_sum) and backtested
rolling-origin and causally (detectors/backtest.py) at 3 steps, every forecaster with its
defaults. The targets, per request-count series, for the default forecaster:

- sMAPE at most 0.8 x the better of persistence and seasonal naive (same pairs);
- the largest upper bound over the next 15 minutes covers those 15 minutes' peak at least 95 %
  of the time.

Beside them, ``bound``: the median of the upper bound's peak over the actual peak (where the
peak is not 0), what the coverage costs in capacity. The table is printed and written to
``bench-results/forecast.json``. Run with ``make bench``
(``pytest -m bench -s tests/bench``).
"""

from __future__ import annotations

import json
import platform
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.commands.detect import read_series
from detectors.backtest import BacktestResult, backtest, resample_sum
from detectors.forecasters import DEFAULT_FORECASTER, FORECASTERS, build_forecaster
from tests.nab_corpus import NAB_DATA, requires_nab

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]

STEP = 300.0
HORIZON = 3
TARGET_RATIO = 0.8
TARGET_PEAK_COVERAGE = 0.95
RESULTS = Path("bench-results") / "forecast.json"
#: The development traces sit beside nab-dev (../shared/data/traces).
GENAI = NAB_DATA.parent / "traces" / "genai_serving_requests_per_min.csv"

#: Series held to the targets: request counts.
REQUEST_COUNTS = ("genai", "realAWSCloudwatch/elb_request_count_8c0756.csv")
#: Series reported only: demand measured in bytes.
DEMAND_PROXIES = (
    "realAWSCloudwatch/ec2_network_in_257a54.csv",
    "realAWSCloudwatch/ec2_network_in_5abac7.csv",
)


def _path(name: str) -> Path:
    return GENAI if name == "genai" else NAB_DATA / "data" / name


def _evaluate(name: str) -> dict[str, Any]:
    series = read_series(_path(name))
    ts, vs = resample_sum(series.timestamps, series.values, STEP)
    row: dict[str, Any] = {"series": name, "samples": int(ts.size)}
    names = [DEFAULT_FORECASTER, *sorted(n for n in FORECASTERS if n != DEFAULT_FORECASTER)]
    for forecaster in names:
        started = time.perf_counter()
        run = backtest(
            build_forecaster(forecaster, {}, {"step": STEP, "max_horizon": HORIZON}), ts, vs, HORIZON
        )
        r: BacktestResult = run.result
        assert run.upper_peak is not None
        assert run.actual_peak is not None
        busy = run.actual_peak > 0
        # what the bound costs: how far above the peak it sits, typically
        headroom = float(np.median(run.upper_peak[busy] / run.actual_peak[busy]))
        row |= {
            "pairs": r.pairs,
            "persistence_smape": r.persistence_smape,
            "seasonal_naive_smape": r.naive_smape,
            "baseline_smape": r.baseline_smape,
        }
        row[forecaster] = {
            "smape": r.smape,
            "ratio_to_baseline": r.smape / r.baseline_smape,
            "coverage_at_lead": r.coverage,
            "peak_coverage": r.peak_coverage,
            "peak_pairs": r.peak_pairs,
            "median_bound_over_peak": headroom,
            "seconds": round(time.perf_counter() - started, 2),
        }
    return row


@cache
def _table() -> dict[str, dict[str, Any]]:
    rows = {name: _evaluate(name) for name in (*REQUEST_COUNTS, *DEMAND_PROXIES)}
    names = [DEFAULT_FORECASTER, *sorted(n for n in FORECASTERS if n != DEFAULT_FORECASTER)]
    head = f"{'series':46} {'pairs':>5} {'persist':>7} {'s-naive':>7}"
    head += "".join(f" {n:>12} {'ratio':>5} {'peak':>5} {'bound':>5}" for n in names)
    lines = [f"sMAPE (%) 15 min ahead on 5-minute sums; default forecaster {DEFAULT_FORECASTER}", head]
    for row in rows.values():
        line = f"{row['series']:46} {row['pairs']:5d} {row['persistence_smape']:7.2f}"
        line += f" {row['seasonal_naive_smape']:7.2f}"
        line += "".join(
            f" {row[n]['smape']:12.2f} {row[n]['ratio_to_baseline']:5.2f} {row[n]['peak_coverage']:5.3f}"
            f" {row[n]['median_bound_over_peak']:5.2f}"
            for n in names
        )
        lines.append(line)
    print("\n" + "\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "created": datetime.now(tz=UTC).isoformat(timespec="seconds"),
                "platform": platform.platform(),
                "step_seconds": STEP,
                "horizon_steps": HORIZON,
                "default_forecaster": DEFAULT_FORECASTER,
                "targets": {
                    "series": list(REQUEST_COUNTS),
                    "smape_ratio_to_better_of_persistence_and_seasonal_naive": TARGET_RATIO,
                    "peak_coverage": TARGET_PEAK_COVERAGE,
                },
                "series": list(rows.values()),
            },
            indent=2,
        )
        + "\n"
    )
    return rows


requires_data = pytest.mark.skipif(not GENAI.exists(), reason=f"{GENAI} is not here")


@requires_nab("data")
@requires_data
@pytest.mark.parametrize("name", REQUEST_COUNTS)
def test_upper_bound_covers_the_next_15_minutes_peak_95_percent(name: str) -> None:
    row = _table()[name]
    assert row[DEFAULT_FORECASTER]["peak_pairs"] > 1000
    assert row[DEFAULT_FORECASTER]["peak_coverage"] >= TARGET_PEAK_COVERAGE


@requires_nab("data")
@requires_data
@pytest.mark.parametrize("name", REQUEST_COUNTS)
@pytest.mark.xfail(
    strict=True,
    reason="not met: see docs/forecasting.md (GenAI about 1.0, elb_request_count about 0.85 of the baseline)",
)
def test_smape_is_at_most_0_8_of_the_better_of_persistence_and_seasonal_naive(name: str) -> None:
    row = _table()[name]
    assert row[DEFAULT_FORECASTER]["smape"] <= TARGET_RATIO * row["baseline_smape"]
