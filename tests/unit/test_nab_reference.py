"""``aiops nab``: the scorer reproduces the published NAB figures, and the command end to end.

The nab-dev README requires that "a correct scorer reproduces the Numenta HTM and ARTime rows from
reference-results/ to two decimals"; the check runs the published result files through the same
command users run (``aiops nab DATA_DIR --reference DIR``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.cli import main
from agent.commands.detect import score_series
from agent.commands.nab import PUBLISHED_SCORES, load_corpus, per_series, score_together
from detectors.registry import ALARM_SCORE
from tests.nab_corpus import NAB_DATA, requires_nab

needs_data = requires_nab("reference-results")

PUBLISHED = dict(PUBLISHED_SCORES)
PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


@pytest.fixture(scope="module")
def reference_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("nab") / "report.json"
    code = main(
        ["nab", str(NAB_DATA), "--reference", str(NAB_DATA / "reference-results"), "--json", str(out)]
    )
    assert code == 0
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@needs_data
@pytest.mark.parametrize(
    ("results_dir", "published_name"), [("numenta", "Numenta HTM"), ("ARTime", "ARTime")]
)
def test_published_scores_are_reproduced_to_two_decimals(
    reference_report: dict[str, Any], results_dir: str, published_name: str
) -> None:
    assert (reference_report["files"], reference_report["windows"]) == (41, 64)
    row = next(r for r in reference_report["results"] if r["detector"] == results_dir)
    ours = tuple(round(row["profiles"][name]["score"], 2) for name in PROFILE_NAMES)
    assert ours == PUBLISHED[published_name]


@needs_data
def test_the_published_table_is_printed_beside_ours(
    reference_report: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["nab", str(NAB_DATA), "--reference", str(NAB_DATA / "reference-results"), "--detector", "numenta"]
    )
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert any(line.startswith("numenta (reference)") and "75.52" in line for line in lines)
    assert any(line.startswith("CAD OSE") and "75.89" in line for line in lines)


# ---------------------------------------------------------------- a synthetic corpus


def write_corpus(root: Path) -> None:
    """Two files of 200 rows at 5-minute steps; a spike on row 120 of one, inside its window."""
    (root / "data" / "synthetic").mkdir(parents=True)
    (root / "labels").mkdir()
    stamps = [
        str(np.datetime64("2014-04-01T00:00:00") + np.timedelta64(5 * i, "m")).replace("T", " ")
        for i in range(200)
    ]
    rng = np.random.default_rng(3)
    windows: dict[str, list[list[str]]] = {}
    for name, spike in (("a.csv", True), ("b.csv", False)):
        values = 10 + rng.normal(0, 1, 200)
        if spike:
            values[120] = 100.0
        rows = "".join(f"{t},{v:.3f}\n" for t, v in zip(stamps, values, strict=True))
        (root / "data" / "synthetic" / name).write_text("timestamp,value\n" + rows)
        windows[f"synthetic/{name}"] = [[stamps[110] + ".000000", stamps[129] + ".000000"]] if spike else []
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))


def test_nab_runs_a_detector_with_params_over_a_corpus(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    out = tmp_path / "report.json"
    params = json.dumps({"rules": [{"metric": "value", "above": 50}]})
    code = main(["nab", str(tmp_path), "--detector", "threshold", "--params", params, "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert (row["detector"], row["source"]) == ("threshold", "ours")
    standard = row["profiles"]["standard"]
    # the spike is on row 120 of the window 110..129 (width 20): position -(129 - 120 + 1) / 20 = -0.5
    assert standard["threshold"] == 1.0
    assert standard["raw"] == pytest.approx(0.859793, abs=1e-6)
    assert standard["score"] == pytest.approx(100 * (0.859793 + 1) / 2, abs=1e-4)


def test_nab_scores_reference_result_files(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    perfect = tmp_path / "results" / "perfect" / "synthetic"
    perfect.mkdir(parents=True)
    for name, first in (("a.csv", 110), ("b.csv", None)):
        rows = "".join(f"t{i},{1.0 if i == first else 0.0}\n" for i in range(200))
        (perfect / f"perfect_{name}").write_text("timestamp,anomaly_score\n" + rows)
    out = tmp_path / "report.json"
    assert main(["nab", str(tmp_path), "--reference", str(tmp_path / "results"), "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["detector"] == "perfect"
    assert [row["profiles"][p]["score"] for p in PROFILE_NAMES] == [pytest.approx(100.0)] * 3


def test_nab_reports_a_missing_result_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_corpus(tmp_path)
    (tmp_path / "results" / "broken" / "synthetic").mkdir(parents=True)
    assert main(["nab", str(tmp_path), "--reference", str(tmp_path / "results")]) == 2
    assert "broken_a.csv: cannot read" in capsys.readouterr().err


def test_nab_refuses_a_directory_without_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nab", str(tmp_path)]) == 2
    assert f"{tmp_path / 'data'}: not a directory" in capsys.readouterr().err


def test_nab_refuses_a_data_file_without_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_corpus(tmp_path)
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps({"synthetic/a.csv": []}))
    assert main(["nab", str(tmp_path)]) == 2
    assert "no windows for synthetic/b.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        ("[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deep"),
        ("fifo", "cannot read: a FIFO, not a regular file"),
        ("big", "larger than 0 MiB"),
    ],
)
def test_nab_refuses_a_label_file_that_is_no_label_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    labels: str,
    error: str,
) -> None:
    """Labels nested past the parser's depth (a RecursionError traceback before), a FIFO (waited on
    for ever before) or a file past the size limit: exit 2 naming the file, at once."""
    write_corpus(tmp_path)
    path = tmp_path / "labels" / "combined_windows.json"
    path.unlink()
    if labels == "fifo":
        os.mkfifo(path)
    elif labels == "big":
        monkeypatch.setattr("agent.commands.nab.MAX_LABELS_BYTES", 1000)
        path.write_text(json.dumps({"synthetic/a.csv": [], "pad": "x" * 1000}))
    else:
        path.write_text(labels)
    assert main(["nab", str(tmp_path)]) == 2
    assert f"{path}: {error}" in capsys.readouterr().err


def write_two_categories(root: Path) -> None:
    """Two categories of 300-row files with a spike on row 200, inside its window, in each."""
    (root / "labels").mkdir()
    stamps = [
        str(np.datetime64("2014-04-01T00:00:00") + np.timedelta64(5 * i, "m")).replace("T", " ")
        for i in range(300)
    ]
    rng = np.random.default_rng(5)
    windows: dict[str, list[list[str]]] = {}
    for category, lengths in (("one", (300, 260)), ("two", (280,))):
        (root / "data" / category).mkdir(parents=True)
        for k, n in enumerate(lengths):
            values = 10 + rng.normal(0, 1, n)
            values[200] = 100.0
            rows = "".join(f"{t},{v:.3f}\n" for t, v in zip(stamps[:n], values, strict=True))
            (root / "data" / category / f"f{k}.csv").write_text("timestamp,value\n" + rows)
            windows[f"{category}/f{k}.csv"] = [[stamps[190], stamps[219]]]
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))


def test_files_scored_side_by_side_get_the_scores_they_get_alone(tmp_path: Path) -> None:
    write_two_categories(tmp_path)
    corpus = load_corpus(tmp_path)
    together = score_together(corpus, "ensemble", {})
    for (_, series), nab_file in zip(corpus.files, together, strict=True):
        alone = score_series(series, "ensemble", {}).scores
        assert np.array_equal(nab_file.scores, alone)
    assert any(f.scores.max() > 0.0 for f in together)
    # side by side only where the state is all per series: not PyOD's shared model, not rules
    assert per_series("ensemble", {})
    assert not per_series("pyod_iforest", {})
    assert not per_series("threshold", {"rules": [{"metric": "value", "above": 50}]})


def test_nab_cross_validates_the_default_detector_by_category(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_two_categories(tmp_path)
    out = tmp_path / "report.json"
    assert main(["nab", str(tmp_path), "--detector", "ensemble", "--json", str(out)]) == 0
    cv = json.loads(out.read_text())["cross_validation"]
    assert [f["held_out"] for f in cv["folds"]] == ["one", "two"]
    assert cv["grid"][0] == {}
    assert all(f["params"] in cv["grid"] for f in cv["folds"])
    assert [f["detected"] + f["missed"] for f in cv["folds"]] == [2, 1]
    printed = capsys.readouterr().out
    assert "leave-one-category-out" in printed
    assert f"at the alarm level the cluster uses (score >= {ALARM_SCORE})" in printed
    alarm = json.loads(out.read_text())["at_alarm_level"]
    assert alarm["threshold"] == ALARM_SCORE
    standard = alarm["ensemble"]["standard"]
    assert standard["detected"] + standard["missed"] == 3
    assert main(["nab", str(tmp_path), "--detector", "ensemble", "--no-cv", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["cross_validation"] is None
