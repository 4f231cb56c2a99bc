"""``aiops nab``: run detectors over a Numenta Anomaly Benchmark corpus and score them.

The corpus directory holds ``data/<category>/<name>.csv`` (``timestamp,value``) and
``labels/combined_windows.json``. Each detector scores every file through the same path as
``aiops detect``; :mod:`detectors.nab` then picks one threshold per profile and normalises.
With ``--reference DIR`` the published results in ``DIR/<detector>/<category>/<detector>_<name>.csv``
are scored instead of running detectors, which checks the scorer against published totals.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.commands.detect import (
    BATCH_ROWS,
    InputError,
    Series,
    parse_params,
    parse_timestamp,
    read_csv,
    read_series,
    report_repairs,
    score_series,
)
from agent.files import read_regular_file
from detectors import DetectorError, SampleBatch, SeriesKey, SeriesRegistry, build_detector
from detectors.bank import detector_names
from detectors.crossval import FoldResult, Summary, cross_validate, score_at, summarise
from detectors.nab import (
    PROFILES,
    NabError,
    NabFile,
    Profile,
    ProfileResult,
    evaluate,
    normalise,
    null_score,
    perfect_score,
    window_rows,
)
from detectors.registry import ALARM_SCORE, CV_GRIDS, DEFAULT
from detectors.streaming import StreamingDetector, finish_scores
from remediations.jsontext import loads as loads_json

EXIT_OK = 0
EXIT_INVALID = 2

#: The published scoreboard on exactly the 41 files of nab-dev, from its README
#: (/work/shared/data/nab-dev/README.md, "Reference scores on exactly these 41 files"): reference
#: figures for comparison, not results of this program. Columns follow :data:`PROFILES`.
PUBLISHED_SCORES: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("CAD OSE", (75.89, 72.41, 79.24)),
    ("Numenta HTM", (75.52, 70.68, 78.99)),
    ("ARTime", (74.60, 66.49, 79.42)),
    ("earthgecko Skyline", (60.17, 52.14, 64.59)),
    ("Random Cut Forest", (59.40, 49.10, 65.86)),
    ("KNN CAD", (58.53, 48.64, 63.50)),
    ("Relative Entropy", (53.40, 46.24, 57.48)),
    ("Twitter ADVec", (46.63, 36.07, 52.44)),
    ("Windowed Gaussian", (41.42, 26.48, 48.45)),
    ("null", (0.0, 0.0, 0.0)),
)

_COLUMNS = ("standard", "reward_low_FP", "reward_low_FN")


@dataclass(frozen=True, slots=True)
class Corpus:
    """The data files of a corpus (relative path, series) and their windows as row pairs."""

    root: Path
    files: list[tuple[str, Series]]
    windows: dict[str, tuple[tuple[int, int], ...]]

    @property
    def window_count(self) -> int:
        """Windows over all files."""
        return sum(len(w) for w in self.windows.values())


@dataclass(frozen=True, slots=True)
class DetectorResult:
    """One detector's results under every profile, where they came from, and the time it took."""

    detector: str
    source: str  # "ours" (run here) or "reference" (published result files)
    results: list[ProfileResult]
    detect_seconds: float
    score_seconds: float
    #: The scored files (scores and windows), for a closer look at where the score comes from.
    files: tuple[NabFile, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping; an infinite threshold (never detect) and a NaN score become null."""
        return {
            "detector": self.detector,
            "source": self.source,
            "detect_seconds": round(self.detect_seconds, 3),
            "score_seconds": round(self.score_seconds, 3),
            "profiles": {
                r.profile.name: {
                    "score": _finite_or_none(r.normalised),
                    "raw": r.raw,
                    "threshold": _finite_or_none(r.threshold),
                    "null": r.null,
                    "perfect": r.perfect,
                }
                for r in self.results
            },
        }


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


#: A corpus' label file larger than this is refused (NAB's own is about 16 KB).
MAX_LABELS_BYTES = 64 << 20


def load_corpus(root: Path) -> Corpus:
    """Read every ``data/**/*.csv`` of ``root`` and map its label windows to rows."""
    data_dir = root / "data"
    labels_path = root / "labels" / "combined_windows.json"
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: not a directory (expected DATA_DIR/data/<category>/<name>.csv)")
    paths = sorted(data_dir.rglob("*.csv"))
    if not paths:
        raise InputError(f"{data_dir}: no CSV files")
    try:
        raw = read_regular_file(labels_path, MAX_LABELS_BYTES)
    except OSError as exc:
        raise InputError(f"{labels_path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_LABELS_BYTES:
        raise InputError(f"{labels_path}: larger than {MAX_LABELS_BYTES >> 20} MiB")
    try:
        labels = loads_json(raw)
    except ValueError as exc:  # not JSON (nested too deep too), or not UTF-8
        raise InputError(f"{labels_path}: invalid JSON: {exc}") from exc
    if not isinstance(labels, dict):
        raise InputError(f"{labels_path}: expected an object of file -> windows")
    files: list[tuple[str, Series]] = []
    windows: dict[str, tuple[tuple[int, int], ...]] = {}
    for path in paths:
        rel = path.relative_to(data_dir).as_posix()
        if rel not in labels:
            raise InputError(f"{labels_path}: no windows for {rel}")
        series = read_series(path)
        windows[rel] = _windows(labels_path, rel, labels[rel], series)
        files.append((rel, series))
    return Corpus(root, files, windows)


def _windows(labels_path: Path, rel: str, raw: Any, series: Series) -> tuple[tuple[int, int], ...]:
    where = f"{labels_path}: {rel}"
    if not isinstance(raw, list):
        raise InputError(f"{where}: expected a list of [start, end] pairs")
    limits: list[tuple[float, float]] = []
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise InputError(f"{where}: expected [start, end] timestamp strings, got {pair!r}")
        try:
            limits.append((parse_timestamp(pair[0]), parse_timestamp(pair[1])))
        except ValueError:
            raise InputError(f"{where}: cannot parse the window {pair!r}") from None
    try:
        return window_rows(series.timestamps, limits)
    except NabError as exc:
        raise InputError(f"{where}: {exc}") from exc


def run_detector(corpus: Corpus, detector: str, params: dict[str, Any]) -> DetectorResult:
    """Score every corpus file with ``detector`` and evaluate it under every profile.

    A learned detector whose state is all per series scores the files side by side
    (:func:`score_together`: the same scores, vectorised over the files); any other detector
    scores them one at a time, each with a fresh detector.
    """
    started = time.perf_counter()
    if per_series(detector, params):
        files = score_together(corpus, detector, params)
    else:
        files = []
        for rel, series in corpus.files:
            scored = score_series(series, detector, params)
            report_repairs(corpus.root / "data" / rel, scored)
            files.append(NabFile(rel, scored.scores, corpus.windows[rel]))
    detected = time.perf_counter()
    results = evaluate(files)
    return DetectorResult(
        detector, "ours", results, detected - started, time.perf_counter() - detected, tuple(files)
    )


def per_series(detector: str, params: Mapping[str, Any]) -> bool:
    """Whether ``detector`` is a learned detector that keeps no state shared between series."""
    model = build_detector(detector, params, SeriesRegistry())
    return isinstance(model, StreamingDetector) and not model.extra_state()


def score_together(corpus: Corpus, detector: str, params: Mapping[str, Any]) -> list[NabFile]:
    """Score every corpus file with one fresh ``detector``, each file its own series.

    The files are fed side by side, :data:`~agent.commands.detect.BATCH_ROWS` rows of each per
    batch: the detector's rounds are vectorised over the files, and since a learned detector's
    state is per series and each series is processed in order, every file gets the scores it gets
    alone (with the same batch boundaries).
    """
    registry = SeriesRegistry()
    ids = [registry.id_for(SeriesKey.of("value", {"file": rel})) for rel, _ in corpus.files]
    model = build_detector(detector, params, registry)
    scores = [np.zeros(len(series)) for _, series in corpus.files]
    longest = max((len(series) for _, series in corpus.files), default=0)
    for start in range(0, longest, BATCH_ROWS):
        parts = [
            (k, series.timestamps[start : start + BATCH_ROWS], series.values[start : start + BATCH_ROWS])
            for k, (_, series) in enumerate(corpus.files)
            if start < len(series)
        ]
        batch = SampleBatch(
            np.concatenate([np.full(ts.size, ids[k], dtype=np.int64) for k, ts, _ in parts]),
            np.concatenate([ts for _, ts, _ in parts]),
            np.concatenate([v for _, _, v in parts]),
        )
        out = finish_scores(np.asarray(model.update(batch), dtype=np.float64))
        offset = 0
        for k, ts, _ in parts:
            scores[k][start : start + ts.size] = out[offset : offset + ts.size]
            offset += ts.size
    return [NabFile(rel, s, corpus.windows[rel]) for (rel, _), s in zip(corpus.files, scores, strict=True)]


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """A detector's leave-one-category-out cross-validation at one profile.

    ``grid`` lists the parameter candidates each fold chooses among (on its training categories,
    with the threshold); ``fixed`` is the same protocol with the first candidate (the default)
    alone, so only the threshold is chosen per fold.
    """

    detector: str
    profile: Profile
    grid: tuple[Mapping[str, Any], ...]
    folds: list[FoldResult]
    summary: Summary
    fixed_folds: list[FoldResult]
    fixed: Summary
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (NaN scores and infinite thresholds become null)."""

        def fold(r: FoldResult) -> dict[str, Any]:
            return {
                "held_out": r.held_out,
                "params": dict(self.grid[r.choice.candidate]),
                "threshold": _finite_or_none(r.choice.threshold),
                "train_score": _finite_or_none(r.choice.train_score),
                "score": _finite_or_none(r.score),
                "detected": r.detected,
                "missed": r.missed,
                "false_positives": r.false_positives,
            }

        def summary(s: Summary) -> dict[str, Any]:
            return {
                "mean": _finite_or_none(s.mean),
                "worst": _finite_or_none(s.worst),
                "worst_category": s.worst_group,
                "pooled": _finite_or_none(s.pooled),
            }

        return {
            "detector": self.detector,
            "profile": self.profile.name,
            "grid": [dict(g) for g in self.grid],
            "folds": [fold(r) for r in self.folds],
            "summary": summary(self.summary),
            "default_fixed": {"folds": [fold(r) for r in self.fixed_folds], "summary": summary(self.fixed)},
        }


def at_alarm_level(files: Sequence[NabFile], threshold: float = ALARM_SCORE) -> dict[str, dict[str, float]]:
    """Each profile's normalised score and counts at the fixed ``threshold`` (none optimised)."""
    out: dict[str, dict[str, float]] = {}
    for profile in PROFILES:
        raw, detected, missed, fps = score_at(files, profile, threshold)
        score = normalise(raw, null_score(files, profile), perfect_score(files, profile))
        out[profile.name] = {"score": score, "detected": detected, "missed": missed, "false_positives": fps}
    return out


def format_alarm_level(detector: str, scores: Mapping[str, Mapping[str, float]]) -> str:
    """One line: the scores at the cluster's alarm level."""
    standard = scores[PROFILES[0].name]
    cells = ", ".join(f"{name} {_cell(v['score'])}" for name, v in scores.items())
    return (
        f"{detector} at the alarm level the cluster uses (score >= {ALARM_SCORE}): {cells}; "
        f"standard: {standard['detected']:.0f} windows detected, {standard['missed']:.0f} missed, "
        f"{standard['false_positives']:.0f} false positives"
    )


def categories(corpus: Corpus) -> list[str]:
    """Each file's category: the first directory of its path under ``data/``."""
    return [rel.split("/", 1)[0] if "/" in rel else "" for rel, _ in corpus.files]


def cross_validation(
    corpus: Corpus,
    detector: str,
    grid: Sequence[Mapping[str, Any]],
    profile: Profile = PROFILES[0],
) -> CrossValidation:
    """Score the corpus with every candidate of ``grid`` and cross-validate by category."""
    started = time.perf_counter()
    groups = categories(corpus)
    scored = [score_together(corpus, detector, params) for params in grid]
    folds = cross_validate(scored, groups, profile)
    fixed_folds = cross_validate(scored[:1], groups, profile)
    return CrossValidation(
        detector,
        profile,
        tuple(grid),
        folds,
        summarise(folds),
        fixed_folds,
        summarise(fixed_folds),
        time.perf_counter() - started,
    )


def format_cross_validation(cv: CrossValidation) -> str:
    """Per fold: the held-out category, the candidate and threshold chosen, the held-out score."""
    width = max([len(r.held_out) for r in cv.folds] + [12])
    lines = [
        f"leave-one-category-out cross-validation of {cv.detector} ({cv.profile.name} profile): "
        f"parameters (grid of {len(cv.grid)}, #0 the default) and threshold chosen on the other "
        "categories, scored on the held-out one",
        f"{'held out':<{width}}  {'chosen':>6}  {'threshold':>9}  {'train':>6}  {'held-out':>8}  "
        f"{'detected':>8}  {'missed':>6}  {'FP':>4}  {'default, own threshold':>22}",
    ]
    for r, f in zip(cv.folds, cv.fixed_folds, strict=True):
        lines.append(
            f"{r.held_out:<{width}}  {'#' + str(r.choice.candidate):>6}  {r.choice.threshold:>9.4f}  "
            f"{_cell(r.choice.train_score):>6}  {_cell(r.score):>8}  {r.detected:>8}  {r.missed:>6}  "
            f"{r.false_positives:>4}  {_cell(f.score):>22}"
        )
    for label, s in (("grid", cv.summary), ("default", cv.fixed)):
        lines.append(
            f"{label}: mean {_cell(s.mean)}, worst {_cell(s.worst)} ({s.worst_group}), "
            f"pooled {_cell(s.pooled)} (categories without windows count in pooled only)"
        )
    for k, params in enumerate(cv.grid):
        lines.append(f"  #{k}: {json.dumps(params, sort_keys=True)}")
    return "\n".join(lines)


def score_reference(corpus: Corpus, results_dir: Path, detector: str) -> DetectorResult:
    """Evaluate a detector's published result files, ``<category>/<detector>_<name>.csv``."""
    files: list[NabFile] = []
    for rel, series in corpus.files:
        category, _, name = rel.rpartition("/")
        path = results_dir / detector / category / f"{detector}_{name}"
        rows = read_csv(path, ("timestamp", "anomaly_score"), extra_columns=True)
        if len(rows) != len(series):
            raise InputError(f"{path}: {len(rows)} rows, but {rel} has {len(series)}")
        scores = np.empty(len(rows))
        for i, (line, row) in enumerate(rows):
            try:
                scores[i] = float(row[1])
            except ValueError:
                raise InputError(f"{path}:{line}: cannot parse the anomaly score {row[1]!r}") from None
        files.append(NabFile(rel, scores, corpus.windows[rel]))
    loaded = time.perf_counter()
    results = evaluate(files)
    return DetectorResult(detector, "reference", results, 0.0, time.perf_counter() - loaded)


def format_table(corpus: Corpus, rows: Sequence[DetectorResult]) -> str:
    """Our rows, then the published scoreboard rows, as an aligned text table."""
    width = max([len(_label(r)) for r in rows] + [len(name) for name, _ in PUBLISHED_SCORES] + [8])
    head = f"{'detector':<{width}}  " + "  ".join(f"{c:>13}" for c in _COLUMNS)
    lines = [
        f"NAB scores on {len(corpus.files)} files, {corpus.window_count} windows ({corpus.root})",
        head,
        "-" * len(head),
    ]
    for r in rows:
        cells = "  ".join(f"{_cell(p.normalised):>13}" for p in r.results)
        lines.append(f"{_label(r):<{width}}  {cells}")
    lines.append("published scoreboard on these files (nab-dev README), reference figures, not ours:")
    for name, scores in PUBLISHED_SCORES:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{s:>13.2f}" for s in scores))
    return "\n".join(lines)


def _label(r: DetectorResult) -> str:
    return f"{r.detector} ({r.source})"


def _cell(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "n/a"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``aiops nab``."""
    p = subparsers.add_parser(
        "nab",
        help="score detectors on a Numenta Anomaly Benchmark corpus",
        description=(
            "Run detectors over DATA_DIR/data/**/*.csv, score them with the NAB rules against "
            "DATA_DIR/labels/combined_windows.json, and print them beside the published scoreboard."
        ),
    )
    p.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    p.add_argument(
        "--detector",
        action="append",
        metavar="NAME",
        help="a detector to run (repeatable; default every built-in detector); with --reference, "
        "a result directory to score",
    )
    p.add_argument("--params", metavar="JSON", help="parameters, as a JSON object, for every detector run")
    p.add_argument(
        "--reference",
        type=Path,
        metavar="DIR",
        help="score the published results in DIR/<detector>/ instead of running detectors",
    )
    p.add_argument(
        "--no-cv",
        dest="cv",
        action="store_false",
        help="skip the leave-one-category-out cross-validation of the default detector",
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON to OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Carry out ``aiops nab``; returns the exit code."""
    cv: CrossValidation | None = None
    try:
        params = parse_params(args.params)
        corpus = load_corpus(args.data_dir)
        if args.reference is not None:
            names = args.detector or _reference_names(args.reference)
            rows = [score_reference(corpus, args.reference, name) for name in names]
        else:
            names = args.detector or detector_names()
            rows = [run_detector(corpus, name, params) for name in names]
            if args.cv and DEFAULT in names and len(set(categories(corpus))) > 1:
                grid = CV_GRIDS[DEFAULT] if not params else ({**params},)
                cv = cross_validation(corpus, DEFAULT, grid)
    except (InputError, DetectorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for r in rows:
        timing = f"detected in {r.detect_seconds:.2f} s, " if r.source == "ours" else ""
        print(f"{_label(r)}: {timing}scored in {r.score_seconds:.3f} s", file=sys.stderr)
    print(format_table(corpus, rows))
    alarm = {r.detector: at_alarm_level(r.files) for r in rows if r.detector == DEFAULT and r.files}
    for name, scores in alarm.items():
        print(format_alarm_level(name, scores))
    if cv is not None:
        print(f"{DEFAULT}: cross-validated in {cv.seconds:.1f} s", file=sys.stderr)
        print()
        print(format_cross_validation(cv))
    if args.json is not None:
        report = {
            "data_dir": str(args.data_dir),
            "files": len(corpus.files),
            "windows": corpus.window_count,
            "results": [r.to_dict() for r in rows],
            "at_alarm_level": {"threshold": ALARM_SCORE, **alarm},
            "cross_validation": None if cv is None else cv.to_dict(),
            "published": {name: dict(zip(_PROFILE_NAMES, s, strict=True)) for name, s in PUBLISHED_SCORES},
        }
        try:
            args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: {args.json}: cannot write: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_INVALID
    return EXIT_OK


_PROFILE_NAMES = tuple(p.name for p in PROFILES)


def _reference_names(results_dir: Path) -> list[str]:
    if not results_dir.is_dir():
        raise InputError(f"{results_dir}: not a directory")
    names = sorted(d.name for d in results_dir.iterdir() if d.is_dir())
    if not names:
        raise InputError(f"{results_dir}: no detector result directories")
    return names
