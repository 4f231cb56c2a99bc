"""``aiops forecast``: a round trip through files, the printed backtest, and exit codes for bad input."""

from __future__ import annotations

import csv
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.cli import main


def _write_series(path: Path, n: int = 3 * 288, step_minutes: int = 5) -> datetime:
    start = datetime(2014, 4, 1, tzinfo=UTC)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        for i in range(n):
            ts = start + timedelta(minutes=step_minutes * i)
            value = 100 + 30 * math.sin(2 * math.pi * i * step_minutes / 1440) + (i % 7) * 0.5
            w.writerow([ts.strftime("%Y-%m-%d %H:%M:%S"), f"{value:.3f}"])
    return start + timedelta(minutes=step_minutes * (n - 1))


@pytest.mark.parametrize("forecaster", [None, "holt_winters", "regression"])
def test_round_trip_writes_the_next_steps_and_prints_the_backtest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], forecaster: str | None
) -> None:
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    last = _write_series(src, step_minutes=10)
    argv = ["forecast", str(src), "--horizon", "4", "--output", str(out)]
    if forecaster:
        argv += ["--forecaster", forecaster]
    assert main(argv) == 0
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["timestamp", "forecast", "upper"]
    assert [r[0] for r in rows[1:]] == [
        (last + timedelta(minutes=10 * k)).strftime("%Y-%m-%d %H:%M:%S") for k in range(1, 5)
    ]
    for _, mean, upper in rows[1:]:
        assert 60 < float(mean) < 140
        assert float(upper) >= float(mean)
    printed = capsys.readouterr().out
    assert "step 600 s, horizon 4 steps (40 min)" in printed
    assert "MAPE" in printed
    assert "sMAPE" in printed
    assert "coverage" in printed
    assert "seasonal naive (same time yesterday)" in printed


def test_params_reach_the_forecaster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_series(src)
    args = ["forecast", str(src), "--horizon", "2", "--output", str(out), "--forecaster", "holt_winters"]
    assert main([*args, "--params", '{"quantile": 0.8}']) == 0
    assert "quantile 0.8" in capsys.readouterr().out
    assert main([*args, "--params", '{"alpha": 2}']) == 2
    assert "holt_winters.alpha" in capsys.readouterr().err


def test_nan_values_are_reported_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_series(src, n=400)
    lines = src.read_text().splitlines()
    lines[10] = lines[10].split(",")[0] + ",nan"
    src.write_text("\n".join(lines) + "\n")
    assert main(["forecast", str(src), "--horizon", "3", "--output", str(out)]) == 0
    assert "not learned: 1 invalid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "in.csv"),
        ("time,value\n2014-04-01 00:00:00,1\n", "in.csv:1"),
        ("timestamp,value\n2014-04-01 00:00:00,1\nyesterday,2\n", "in.csv:3"),
        ("timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n", "in.csv:3"),
        ("timestamp,value\n2014-04-01 00:00:00,1,2\n", "in.csv:2"),
        ("timestamp,value\n2014-04-01 00:00:00,1\n", "distinct timestamps"),
    ],
)
def test_bad_input_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    src = tmp_path / "in.csv"
    if content is not None:
        src.write_text(content)
    assert main(["forecast", str(src), "--horizon", "3", "--output", str(tmp_path / "out.csv")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--horizon", "0"], "--horizon"),
        (["--horizon", "3", "--forecaster", "arima"], "unknown forecaster"),
        (["--horizon", "3", "--params", "{not json"], "--params"),
        (["--horizon", "3", "--params", "[1, 2]"], "--params"),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    src = tmp_path / "in.csv"
    _write_series(src, n=50)
    assert main(["forecast", str(src), "--output", str(tmp_path / "out.csv"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_missing_horizon_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["forecast", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv")])
    assert exc.value.code == 2


def test_select_prints_every_candidates_backtest_and_marks_the_one_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a series that repeats every day exactly: seasonal naive a day back makes no error
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    start = datetime(2014, 4, 1, tzinfo=UTC)
    lines = ["timestamp,value"]
    for i in range(3 * 288):
        ts = (start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{ts},{100 if i % 288 < 144 else 300}")
    src.write_text("\n".join(lines) + "\n")
    assert main(["forecast", str(src), "--horizon", "3", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("candidates (") :].splitlines()
    rows = {line.split()[0]: line for line in table[2:] if line.startswith("  ")}
    assert set(rows) == {
        "persistence",
        "seasonal_day",
        "seasonal_week",
        "holt_winters",
        "regression",
        "combined",
    }
    # 864 rows: the origins 0..860 are scored (their target is in the file); persistence misses
    # from the 3 origins before each of the 5 switches inside the file, 2 |300 - 100| / 400 each
    assert rows["persistence"].split()[1:3] == ["861", f"{100 * 15 / 861:.2f}%"]
    assert rows["seasonal_day"].split()[1:3] == ["576", "0.00%"]
    assert rows["seasonal_week"].split()[1:3] == ["0", "n/a"]
    assert [name for name, line in rows.items() if line.endswith("<- in use")] == ["seasonal_day"]
    assert "persistence (the newest value): sMAPE" in printed
    assert "covers its peak" in printed


def test_resample_sums_the_rows_per_bin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # one request a minute for three days: 5 per 5-minute bin, forecast as 5
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    start = datetime(2014, 4, 1, tzinfo=UTC)
    lines = ["timestamp,value"]
    lines += [f"{(start + timedelta(minutes=i)).strftime('%Y-%m-%d %H:%M:%S')},1" for i in range(3 * 1440)]
    src.write_text("\n".join(lines) + "\n")
    assert main(["forecast", str(src), "--horizon", "3", "--output", str(out), "--resample", "300"]) == 0
    assert "step 300 s" in capsys.readouterr().out
    rows = list(csv.reader(out.read_text().splitlines()))
    assert [float(r[1]) for r in rows[1:]] == [5.0, 5.0, 5.0]
    assert main(["forecast", str(src), "--horizon", "3", "--output", str(out), "--resample", "0"]) == 2
    assert "--resample" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("last_row", "message"),
    [
        (
            "9999-12-31 23:59:59,2",
            "the newest row, timestamped '9999-12-31 23:59:59', puts the forecast's step 1",
        ),
        ("1e300,2", "the newest row, timestamped '1e300', puts the forecast's step 1 at 1e+297 s"),
    ],
)
def test_a_forecast_past_the_year_9999_is_an_error_and_the_output_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], last_row: str, message: str
) -> None:
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    if last_row.startswith("9999"):
        src.write_text(f"timestamp,value\n9999-12-31 23:55:00,1\n{last_row}\n")
    else:  # a row far past the others: the step is still theirs
        _write_series(src, n=50)
        src.write_text(src.read_text() + f"{last_row}\n")
    out.write_text("an earlier forecast\n")
    assert main(["forecast", str(src), "--horizon", "3", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src}: {message}" in err
    assert "outside the years 1 to 9999" in err
    assert out.read_text() == "an earlier forecast\n"  # not truncated to the header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]  # no temporary left


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--horizon", "10001"], "--horizon: must be 1 to 10000 steps, got 10001"),
        (
            ["--horizon", "3", "--forecaster", "holt_winters", "--params", '{"season": 1e12}'],
            "holt_winters.season: expected at most 100000 slots of max(step, resolution) = 1800 s",
        ),
        (["--horizon", "3", "--params", '{"week": 1e12}'], "select.week: expected at most 100000 slots"),
    ],
)
def test_what_a_forecast_may_cost_is_bounded_before_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_series(src, n=50)
    assert main(["forecast", str(src), "--output", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_input_is_refused_not_waited_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    assert main(["forecast", str(fifo), "--horizon", "3", "--output", str(tmp_path / "out.csv")]) == 2
    assert f"{fifo}: cannot read: a FIFO, not a regular file" in capsys.readouterr().err
