"""Forecast accuracy at a 15-minute horizon on the demand series of nab-dev, beside seasonal naive.

The series: realAWSCloudwatch/elb_request_count_8c0756.csv and every realTraffic/ file. Each file
is backtested rolling-origin and causally (detectors/backtest.py) at the number of steps that
covers 15 minutes at the file's median step (3 at 5 minutes, 2 at 10 minutes), with one
configuration for all files: the built-in defaults plus the file's step. Seasonal naive (the
value at the same time yesterday) is scored on exactly the same forecasts.

The target: the default forecaster's sMAPE at least 20% below seasonal naive's, overall (the
mean of the per-file sMAPEs, each file weighing the same; the pooled figure over all forecasts
is reported too). Every built-in forecaster is reported. The table is printed and written to
``bench-results/forecast.json``. Run with ``make bench`` (``pytest -m bench -s tests/bench``).
"""

from __future__ import annotations

import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.commands.detect import read_series
from agent.commands.forecast import median_step
from detectors.backtest import BacktestRun, backtest, horizon_steps, smape
from detectors.forecasters import DEFAULT_FORECASTER, FORECASTERS, build_forecaster
from tests.nab_corpus import NAB_DATA, requires_nab

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]

LEAD_TIME = 900.0
TARGET_RATIO = 0.8
RESULTS = Path("bench-results") / "forecast.json"


def demand_files() -> list[Path]:
    """The request-count and traffic series of nab-dev."""
    data = NAB_DATA / "data"
    return [
        data / "realAWSCloudwatch" / "elb_request_count_8c0756.csv",
        *sorted((data / "realTraffic").glob("*.csv")),
    ]


def _run(name: str, path: Path) -> tuple[BacktestRun, float, int, float]:
    series = read_series(path)
    step = median_step(series.timestamps)
    horizon = horizon_steps(step, LEAD_TIME)
    forecaster = build_forecaster(name, {}, {"step": step, "max_horizon": horizon})
    started = time.perf_counter()
    run = backtest(forecaster, series.timestamps, series.values, horizon)
    return run, step, horizon, time.perf_counter() - started


@requires_nab("data")
def test_default_forecaster_beats_seasonal_naive_by_20_percent_at_15_minutes() -> None:
    names = [DEFAULT_FORECASTER, *sorted(n for n in FORECASTERS if n != DEFAULT_FORECASTER)]
    files: list[dict[str, Any]] = []
    pooled: dict[str, list[BacktestRun]] = {n: [] for n in names}
    for path in demand_files():
        row: dict[str, Any] = {"file": str(path.relative_to(NAB_DATA / "data"))}
        for name in names:
            run, step, horizon, seconds = _run(name, path)
            pooled[name].append(run)
            r = run.result
            row |= {"step_seconds": step, "horizon_steps": horizon, "pairs": r.pairs}
            row["seasonal_naive"] = {"smape": r.naive_smape, "mape": r.naive_mape}
            row[name] = {
                "smape": r.smape,
                "mape": r.mape,
                "coverage": r.coverage,
                "quantile": r.quantile,
                "ratio_to_seasonal_naive": r.smape_ratio,
                "seconds": round(seconds, 3),
            }
        files.append(row)

    overall: dict[str, Any] = {
        "seasonal_naive": {
            "mean_smape": float(np.mean([f["seasonal_naive"]["smape"] for f in files])),
            "pooled_smape": smape(
                np.concatenate([r.naive for r in pooled[names[0]]]),
                np.concatenate([r.actual for r in pooled[names[0]]]),
            ),
        }
    }
    for name in names:
        runs = pooled[name]
        mean_smape = float(np.mean([f[name]["smape"] for f in files]))
        pooled_smape = smape(
            np.concatenate([r.forecast for r in runs]), np.concatenate([r.actual for r in runs])
        )
        pooled_cov = float(
            np.mean(np.concatenate([r.actual for r in runs]) <= np.concatenate([r.upper for r in runs]))
        )
        overall[name] = {
            "mean_smape": mean_smape,
            "pooled_smape": pooled_smape,
            "ratio_mean": mean_smape / overall["seasonal_naive"]["mean_smape"],
            "ratio_pooled": pooled_smape / overall["seasonal_naive"]["pooled_smape"],
            "pooled_coverage": pooled_cov,
        }

    header = f"{'file':44} {'step':>5} {'h':>2} {'pairs':>5} {'s-naive':>8}"
    header += "".join(f" {n:>13} {'ratio':>6} {'cover':>6}" for n in names)
    lines = [
        f"sMAPE (%) at a {LEAD_TIME / 60:g}-minute horizon; default forecaster: {DEFAULT_FORECASTER}",
        header,
    ]
    for f in files:
        line = f"{f['file']:44} {f['step_seconds']:5g} {f['horizon_steps']:2d} {f['pairs']:5d}"
        line += f" {f['seasonal_naive']['smape']:8.2f}"
        line += "".join(
            f" {f[n]['smape']:13.2f} {f[n]['ratio_to_seasonal_naive']:6.3f} {f[n]['coverage']:6.3f}"
            for n in names
        )
        lines.append(line)
    for kind in ("mean", "pooled"):
        label = f"overall ({kind})"
        line = f"{label:44} {'':5} {'':2} {'':5} {overall['seasonal_naive'][kind + '_smape']:8.2f}"
        cover = "".join(
            f" {overall[n][kind + '_smape']:13.2f} {overall[n]['ratio_' + kind]:6.3f}"
            + (f" {overall[n]['pooled_coverage']:6.3f}" if kind == "pooled" else f" {'':6}")
            for n in names
        )
        lines.append(line + cover)
    print("\n" + "\n".join(lines))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "created": datetime.now(tz=UTC).isoformat(timespec="seconds"),
                "platform": platform.platform(),
                "lead_time_seconds": LEAD_TIME,
                "default_forecaster": DEFAULT_FORECASTER,
                "target": f"default sMAPE <= {TARGET_RATIO} x seasonal naive (mean over files, and pooled)",
                "files": files,
                "overall": overall,
            },
            indent=2,
        )
        + "\n"
    )
    assert overall[DEFAULT_FORECASTER]["ratio_mean"] <= TARGET_RATIO
    assert overall[DEFAULT_FORECASTER]["ratio_pooled"] <= TARGET_RATIO
