"""``aiops detect``: a CSV round trip through a detector, and how bad input is reported."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import SINGLE_COMMANDS, main
from agent.commands import detect
from detectors import SampleBatch, SeriesRegistry
from detectors.signal import SignalKind

SPIKE_ROW = 300
SPIKE_PARAMS = json.dumps({"rules": [{"metric": "value", "above": 50}]})


def stamps(n: int) -> list[str]:
    start = np.datetime64("2014-04-01T00:00:00")
    return [str(start + np.timedelta64(5 * i, "m")).replace("T", " ") for i in range(n)]


def write_input(path: Path, n: int = 2500) -> list[list[str]]:
    """``n`` rows (more than two batches) of a noisy daily cycle with a spike on SPIKE_ROW."""
    rng = np.random.default_rng(11)
    values = 20 + 5 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 0.5, n)
    values[SPIKE_ROW] = 95.0
    rows = [[t, f"{v:.4f}"] for t, v in zip(stamps(n), values, strict=True)]
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["timestamp", "value"], *rows])
    return rows


def read_output(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def test_round_trip_keeps_every_row_and_scores_the_spike_highest(tmp_path: Path) -> None:
    rows = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    code = main(
        [
            "detect",
            str(tmp_path / "in.csv"),
            "--detector",
            "threshold",
            "--params",
            SPIKE_PARAMS,
            "--output",
            str(out),
        ]
    )
    assert code == 0
    header, written = read_output(out)
    assert header == ["timestamp", "value", "anomaly_score"]
    assert [r[:2] for r in written] == rows  # same rows, order, timestamp and value text
    scores = np.array([float(r[2]) for r in written])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[SPIKE_ROW] > np.median(scores)
    assert scores[SPIKE_ROW] > np.delete(scores, SPIKE_ROW).max()


def test_the_default_detector_scores_every_row_within_0_and_1(tmp_path: Path) -> None:
    rows = write_input(tmp_path / "in.csv", n=1500)
    out = tmp_path / "out.csv"
    assert main(["detect", str(tmp_path / "in.csv"), "--output", str(out)]) == 0
    _, written = read_output(out)
    assert [r[:2] for r in written] == rows
    assert all(0.0 <= float(r[2]) <= 1.0 for r in written)


def test_missing_values_are_passed_through_and_still_scored(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,\n2014-04-01 00:10:00,nan\n")
    out = tmp_path / "out.csv"
    assert main(["detect", str(src), "--params", "{}", "--detector", "threshold", "--output", str(out)]) == 0
    _, written = read_output(out)
    assert [r[:2] for r in written] == [
        ["2014-04-01 00:00:00", "1"],
        ["2014-04-01 00:05:00", ""],
        ["2014-04-01 00:10:00", "nan"],
    ]
    assert all(0.0 <= float(r[2]) <= 1.0 for r in written)


class UnrulyDetector:
    """Returns NaN, infinity, a negative and a too-large score, whatever it is given."""

    name = "unruly"
    signal_kind = SignalKind.ANOMALY

    def update(self, batch: SampleBatch) -> np.ndarray:
        pattern = np.array([np.nan, np.inf, -0.5, 1.5, 0.25])
        return np.resize(pattern, len(batch))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        pass

    def signal_details(self, series_id: int) -> dict[str, Any]:
        return {}


def test_scores_outside_0_and_1_are_repaired_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def build(name: str, params: Mapping[str, Any], series: SeriesRegistry) -> UnrulyDetector:
        return UnrulyDetector()

    monkeypatch.setattr(detect, "build_detector", build)
    (tmp_path / "in.csv").write_text("timestamp,value\n" + "".join(f"{t},1\n" for t in stamps(10)))
    out = tmp_path / "out.csv"
    assert main(["detect", str(tmp_path / "in.csv"), "--output", str(out)]) == 0
    _, written = read_output(out)
    assert [float(r[2]) for r in written] == [0.0, 0.0, 0.0, 1.0, 0.25] * 2
    err = capsys.readouterr().err
    assert "4 non-finite scores replaced with 0" in err
    assert "4 scores outside [0, 1] clipped" in err


# ---------------------------------------------------------------- bad input


def run_detect(tmp_path: Path, content: str | None, *extra: str) -> tuple[int, str, Path]:
    src = tmp_path / "in.csv"
    if content is not None:
        src.write_text(content)
    out = tmp_path / "out.csv"
    code = main(["detect", str(src), "--output", str(out), *extra])
    return code, str(src), out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, ": cannot read: No such file or directory"),
        ("", ": empty file, expected the header timestamp,value"),
        ("time,value\n2014-04-01 00:00:00,1\n", ":1: expected the header timestamp,value, got time,value"),
        (
            "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n",
            ":3: cannot parse the value 'abc'",
        ),
        (
            "timestamp,value\n2014-04-01 00:00:00,1\nyesterday,2\n",
            ":3: cannot parse the timestamp 'yesterday'",
        ),
        ("timestamp,value\n2014-04-01 00:00:00,1,7\n", ":2: expected 2 fields, got 3"),
    ],
    ids=["missing", "empty", "header", "value", "timestamp", "fields"],
)
def test_bad_input_exits_2_naming_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    code, src, out = run_detect(tmp_path, content)
    assert code == 2
    assert f"{src}{message}" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{not json", "--params: invalid JSON"),
        ("[" * 100_000, "--params: invalid JSON: nested too deep"),
        ("[1, 2]", "--params: expected a JSON object, got list"),
        ('{"window": 5}', "threshold: unknown parameter(s) ['window']"),
        ('{"rules": [{"metric": "value"}]}', "threshold.rules[0]: a rule needs at least one of"),
    ],
)
def test_bad_params_exit_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], params: str, message: str
) -> None:
    code, _, out = run_detect(
        tmp_path, "timestamp,value\n2014-04-01 00:00:00,1\n", "--detector", "threshold", "--params", params
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_an_unknown_detector_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_detect(tmp_path, "timestamp,value\n2014-04-01 00:00:00,1\n", "--detector", "no-such")
    assert code == 2
    assert "unknown detector 'no-such'" in capsys.readouterr().err


def test_an_unwritable_output_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.csv").write_text("timestamp,value\n2014-04-01 00:00:00,1\n")
    out = tmp_path / "missing-dir" / "out.csv"
    assert main(["detect", str(tmp_path / "in.csv"), "--output", str(out)]) == 2
    assert f"{out}: cannot write" in capsys.readouterr().err


def test_timestamps_are_utc_unless_they_carry_an_offset() -> None:
    assert detect.parse_timestamp("2014-04-01 00:00:00") == 1396310400.0
    assert detect.parse_timestamp("2014-04-01T02:00:00+02:00") == 1396310400.0


def test_a_single_command_loads_only_its_module() -> None:
    """``aiops detect`` builds a parser of its own module alone, so each name in
    SINGLE_COMMANDS must be the one command its module adds."""
    for name, module in SINGLE_COMMANDS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        assert set(sub.choices) == {name}


def test_missing_value_markers_and_unix_timestamps_are_read(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    rows = [
        "1396310400,1",
        "1396310700,NA",
        "1396311000000,null",
        "2014-04-01 00:15:00+00:00, None ",
        "1396311600,-",
    ]
    src.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    series = detect.read_series(src)
    assert series.timestamps.tolist() == [1396310400.0 + 300.0 * i for i in range(5)]
    assert series.values[0] == 1.0
    assert np.isnan(series.values[1:]).all()
    assert series.raw_values[1:] == ["NA", "null", " None ", "-"]  # written back as they came


@settings(max_examples=200, deadline=None)
@given(
    moments=st.lists(
        st.datetimes(min_value=datetime(1686, 1, 1), max_value=datetime(2254, 12, 31)),
        min_size=1,
        max_size=20,
    ),
    separator=st.sampled_from([" ", "T"]),
    timespec=st.sampled_from(["seconds", "milliseconds", "microseconds"]),
)
def test_plain_iso_timestamps_parsed_at_once_equal_parsing_them_one_by_one(
    moments: list[datetime], separator: str, timespec: str
) -> None:
    stamps = [m.isoformat(sep=separator, timespec=timespec) for m in moments]
    at_once = detect.parse_plain_timestamps(stamps)
    assert at_once is not None
    assert at_once.tolist() == [detect.parse_timestamp(s) for s in stamps]  # exactly, bit for bit


@pytest.mark.parametrize(
    "stamp",
    [
        "2014-04-01T02:00:00+02:00",  # an offset
        "1396310400",  # Unix seconds
        " 2014-04-01 00:00:00",  # spaces around
        "2014-02-30 00:00:00",  # no such day
        "0000-01-01 00:00:00",  # numpy reads the year 0, Python does not
        "2014-04-01 00:00",  # no seconds
        "2300-01-01 00:00:00",  # microseconds past what a float64 holds exactly
        "1600-01-01 00:00:00",  # ... either way
    ],
)
def test_other_timestamps_are_left_to_the_one_by_one_parse(tmp_path: Path, stamp: str) -> None:
    stamps = ["2014-04-01 00:05:00", stamp]
    assert detect.parse_plain_timestamps(stamps) is None
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n" + "".join(f"{s},1\n" for s in stamps))
    try:
        expected = [detect.parse_timestamp(s) for s in stamps]
    except ValueError:
        with pytest.raises(detect.InputError, match=r":3: cannot parse the timestamp"):
            detect.read_series(src)
    else:
        assert detect.read_series(src).timestamps.tolist() == expected


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            ["2014-04-01 00:00:00,1", "yesterday,2", "2014-04-01 00:10:00,abc"],
            ":3: cannot parse the timestamp",
        ),
        (["2014-04-01 00:00:00,1", "2014-04-01 00:05:00,abc", "yesterday,2"], ":3: cannot parse the value"),
        (["yesterday,abc"], ":2: cannot parse the timestamp"),
    ],
    ids=["timestamp-first", "value-first", "same-row"],
)
def test_the_first_bad_line_is_the_one_named(tmp_path: Path, rows: list[str], message: str) -> None:
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    with pytest.raises(detect.InputError, match=message):
        detect.read_series(src)


#: What `aiops detect` must not import: the daemon's clients, the simulator, the config models,
#: the plotting and learning libraries, and scipy.linalg (which numba probes for BLAS).
NOT_FOR_DETECT = (
    "kafka",
    "kubernetes",
    "prometheus_api_client",
    "prometheus_client",
    "requests",
    "pydantic",
    "agent.config",
    "simulations",
    "sklearn",
    "pyod",
    "matplotlib",
    "scipy.linalg",
)


def test_detect_imports_no_client_nor_scipy_linalg_and_starts_one_blas_thread(tmp_path: Path) -> None:
    """A fresh process runs ``aiops detect`` with the default detector (its compiled loop loaded
    or compiled) and reports which heavy modules it loaded and the BLAS thread setting it had."""
    write_input(tmp_path / "in.csv", n=1200)
    out = tmp_path / "out.csv"
    script = (
        "import json, os, sys\n"
        "from agent.cli import main\n"
        f"code = main(['detect', {str(tmp_path / 'in.csv')!r}, '--output', {str(out)!r}])\n"
        f"loaded = sorted(m for m in {NOT_FOR_DETECT!r} if m in sys.modules)\n"
        "print(json.dumps([code, loaded, os.environ.get('OPENBLAS_NUM_THREADS')]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False, timeout=110
    )
    assert done.returncode == 0, done.stderr
    code, loaded, blas_threads = json.loads(done.stdout.splitlines()[-1])
    assert code == 0
    assert loaded == []
    assert blas_threads == "1"
    assert len(read_output(out)[1]) == 1200


@pytest.mark.parametrize("good", [True, False], ids=["scored", "bad-input"])
def test_the_console_script_exits_with_the_commands_code_and_its_output_whole(
    tmp_path: Path, good: bool
) -> None:
    """The console entry point of a quick command leaves its objects to the OS at exit: the
    output file, stdout and stderr are complete all the same, and the exit code is main's."""
    if good:
        write_input(tmp_path / "in.csv", n=1500)
    else:
        (tmp_path / "in.csv").write_text("timestamp,value\n2014-04-01 00:00:00,1\nyesterday,2\n")
    out = tmp_path / "out.csv"
    script = (
        "import sys\n"
        "from agent.cli import console\n"
        f"sys.argv = ['aiops', 'detect', {str(tmp_path / 'in.csv')!r}, '--output', {str(out)!r}]\n"
        "console()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=110
    )
    if good:
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{out}: 1500 rows scored by ensemble\n"
        assert len(read_output(out)[1]) == 1500
    else:
        assert done.returncode == 2
        assert done.stderr == f"error: {tmp_path / 'in.csv'}:3: cannot parse the timestamp 'yesterday'\n"
        assert not out.exists()


# ---------------------------------------------------------------- inputs that are not small files


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    assert main(["detect", str(fifo), "--output", str(tmp_path / "out.csv")]) == 2
    assert f"{fifo}: cannot read: a FIFO, not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("source", "message"),
    [("/dev/zero", "a character device, not a regular file"), (".", "a directory, not a regular file")],
)
def test_a_device_or_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    path = tmp_path if source == "." else Path(source)
    if not path.exists():
        pytest.skip(f"no {source} here")
    assert main(["detect", str(path), "--output", str(tmp_path / "out.csv")]) == 2
    assert f"{path}: cannot read: {message}" in capsys.readouterr().err


def test_a_file_over_the_size_limit_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.csv"
    with src.open("wb") as f:  # sparse: no disk, no time
        f.write(b"timestamp,value\n")
        f.truncate(detect.MAX_INPUT_BYTES + 1)
    assert main(["detect", str(src), "--output", str(tmp_path / "out.csv")]) == 2
    assert f"{src}: larger than 128 MiB (MAX_INPUT_BYTES); refused" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="no procfs")
def test_a_file_that_says_it_is_empty_is_still_read_no_further_than_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # procfs files are regular and report size 0: the limit holds while reading, too
    monkeypatch.setattr(detect, "MAX_INPUT_BYTES", 64)
    with pytest.raises(detect.InputError, match=r"status: larger than 64 bytes \(MAX_INPUT_BYTES\); refused"):
        detect.read_series(Path("/proc/self/status"))


def test_more_rows_than_the_limit_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n" + "".join(f"{t},{i}\n" for i, t in enumerate(stamps(5))))
    monkeypatch.setattr(detect, "MAX_INPUT_ROWS", 3)
    with pytest.raises(detect.InputError, match=r"in.csv:5: more than 3 rows \(MAX_INPUT_ROWS\)"):
        detect.read_series(src)
    monkeypatch.setattr(detect, "MAX_INPUT_ROWS", 5)
    assert len(detect.read_series(src)) == 5
