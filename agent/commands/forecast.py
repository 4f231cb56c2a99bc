"""``aiops forecast``: learn a NAB-format CSV streaming, write the next steps, print the backtest.

The file is learned one row at a time, exactly as the daemon would see it, and every row is
also a forecast origin of the rolling-origin backtest whose figures are printed (MAPE, sMAPE,
coverage of the upper bound at the horizon and of the horizon's peak, and the sMAPE of
persistence and seasonal naive on the same forecasts). With the ``select`` forecaster every
candidate's own rolling backtest is printed beside the one each series uses now. The forecast
for the ``--horizon`` steps after the last row is written as ``timestamp,forecast,upper``,
timestamps continuing at the file's median step (or ``--resample`` seconds, when the rows are
first summed per that many seconds). The input is read as ``aiops detect`` reads it (same
rules, same errors: exit 2 naming the file and line).
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from agent.cli import EXIT_FAILURE, EXIT_INVALID, EXIT_OK
from agent.commands.detect import InputError, parse_params, read_series, write_csv
from detectors.backtest import backtest, resample_sum
from detectors.base import DetectorError
from detectors.batch import FloatArray
from detectors.forecast import MAX_HORIZON_STEPS, Forecaster
from detectors.forecast_select import CANDIDATES, SelectingForecaster
from detectors.forecasters import DEFAULT_FORECASTER, FORECASTERS, build_forecaster

#: The text format of NAB timestamps (UTC), used for the output as well.
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def format_timestamp(seconds: float) -> str:
    """A Unix time in the NAB text format (UTC)."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime(TIMESTAMP_FORMAT)


def median_step(timestamps: FloatArray) -> float:
    """The median positive difference between consecutive distinct timestamps."""
    distinct = np.unique(timestamps[np.isfinite(timestamps)])
    diffs = np.diff(distinct)
    if diffs.size == 0:
        return math.nan
    return float(np.median(diffs))


def newest(timestamps: FloatArray, values: FloatArray) -> int:
    """The index of the newest row with a finite value (of the newest row, when none has one)."""
    usable = np.isfinite(timestamps) & np.isfinite(values)
    if not usable.any():
        usable = np.isfinite(timestamps)
    return int(np.argmax(np.where(usable, timestamps, -np.inf)))


def _fmt(value: float) -> str:
    return "nan" if not math.isfinite(value) else format(value, ".10g")


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.2f}%"


def candidate_lines(forecaster: Forecaster, horizon: int) -> list[str]:
    """The online backtest of every candidate of a ``select`` forecaster, the one in use marked."""
    if not isinstance(forecaster, SelectingForecaster):
        return []
    scores = forecaster.scores([0])
    chosen = int(forecaster.chosen([0])[0])
    lead = forecaster.max_horizon
    lines = [
        f"candidates (online backtest at {lead} steps, every row an origin; recent = half-life "
        f"{forecaster.memory / 3600:g} h):",
        f"  {'candidate':14} {'scored':>6} {'sMAPE':>8} {'recent':>8}",
    ]
    for i, name in enumerate(CANDIDATES):
        mark = "  <- in use" if i == chosen else ""
        lines.append(
            f"  {name:14} {int(scores['scored'][0, i]):6d} {_pct(float(scores['smape'][0, i])):>8} "
            f"{_pct(float(scores['recent_smape'][0, i])):>8}{mark}"
        )
    if lead != horizon:
        lines.append(
            f"  (the candidates are judged at max_horizon {lead}, the printed backtest at {horizon})"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    """Execute ``aiops forecast`` with parsed arguments; returns the exit code."""
    if not 1 <= args.horizon <= MAX_HORIZON_STEPS:
        print(
            f"error: --horizon: must be 1 to {MAX_HORIZON_STEPS} steps, got {args.horizon}", file=sys.stderr
        )
        return EXIT_INVALID
    try:
        params = parse_params(args.params)
        series = read_series(args.input)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    timestamps, values = series.timestamps, series.values
    if args.resample is not None:
        if not (math.isfinite(args.resample) and args.resample > 0):
            print(
                f"error: --resample: must be a positive number of seconds, got {args.resample}",
                file=sys.stderr,
            )
            return EXIT_INVALID
        timestamps, values = resample_sum(timestamps, values, args.resample)
    step = median_step(timestamps)
    if not math.isfinite(step):
        msg = f"error: {args.input}: need two rows with distinct timestamps to know the step"
        print(msg, file=sys.stderr)
        return EXIT_INVALID
    try:
        forecaster = build_forecaster(args.forecaster, params, {"step": step, "max_horizon": args.horizon})
        run_ = backtest(forecaster, timestamps, values, args.horizon)
        mean, upper = forecaster.forecast([0], args.horizon)
    except DetectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID

    last = float(timestamps[newest(timestamps, values)])
    rows: list[list[str]] = []
    for k in range(args.horizon):
        ts = last + (k + 1) * forecaster.step
        try:
            stamp = format_timestamp(ts)
        except (OverflowError, ValueError, OSError):
            row = series.stamps[newest(series.timestamps, series.values)]
            shown = repr(row) if len(row) <= 40 else f"{row[:40]!r}..."
            print(
                f"error: {args.input}: the newest row, timestamped {shown}, puts the forecast's step "
                f"{k + 1} at {ts:.6g} s, outside the years 1 to 9999 a timestamp can be written in",
                file=sys.stderr,
            )
            return EXIT_INVALID
        rows.append([stamp, _fmt(float(mean[0, k])), _fmt(float(upper[0, k]))])
    try:  # a temporary file renamed over the output: a failed write leaves it as it was
        write_csv(args.output, ("timestamp", "forecast", "upper"), rows)
    except OSError as exc:
        print(f"error: {args.output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE

    r = run_.result
    lead = args.horizon * step
    print(
        f"{args.input}: {values.size} rows, step {step:g} s, horizon {args.horizon} steps "
        f"({lead / 60:g} min), forecaster {args.forecaster}"
        + ("" if args.resample is None else f", rows summed per {args.resample:g} s")
    )
    print(
        f"backtest ({r.pairs} rolling-origin forecasts at horizon {args.horizon}): "
        f"MAPE {_pct(r.mape)}  sMAPE {_pct(r.smape)}  coverage {_pct(100 * r.coverage)} "
        f"(upper bound at quantile {r.quantile:g})"
    )
    print(
        f"upper bound over the horizon covers its peak: {_pct(100 * r.peak_coverage)} "
        f"of {r.peak_pairs} origins"
    )
    print(f"seasonal naive (same time yesterday): MAPE {_pct(r.naive_mape)}  sMAPE {_pct(r.naive_smape)}")
    print(f"persistence (the newest value): sMAPE {_pct(r.persistence_smape)}")
    for line in candidate_lines(forecaster, args.horizon):
        print(line)
    skipped = {"invalid": forecaster.invalid, "out of order": forecaster.out_of_order}
    if any(skipped.values()):
        print("not learned: " + ", ".join(f"{n} {what}" for what, n in skipped.items() if n))
    print(f"wrote {args.horizon} forecast rows to {args.output}")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``forecast`` subcommand."""
    p = subparsers.add_parser(
        "forecast",
        help="forecast a NAB-format CSV and print its backtest",
        description=(
            "Learn INPUT.csv (timestamp,value) streaming, write the forecast for the next HORIZON steps "
            "(at the file's median step) as timestamp,forecast,upper, and print the rolling-origin "
            "backtest at that horizon beside seasonal naive."
        ),
    )
    p.add_argument("input", type=Path, metavar="INPUT.csv")
    p.add_argument("--horizon", type=int, required=True, help="how many steps to forecast")
    p.add_argument(
        "--forecaster",
        default=DEFAULT_FORECASTER,
        help=f"one of {sorted(FORECASTERS)} (default {DEFAULT_FORECASTER})",
    )
    p.add_argument("--params", help="forecaster parameters as a JSON object")
    p.add_argument(
        "--resample",
        type=float,
        metavar="SECONDS",
        help="sum the rows per SECONDS (bins aligned to the epoch) before forecasting, e.g. 300 for counts",
    )
    p.add_argument("--output", type=Path, required=True, metavar="OUT.csv")
    p.set_defaults(func=run)
