"""The default detector's NAB scores on nab-dev beside the best published one (make bench).

Runs the default detector with its default parameters over every file of nab-dev through the
same path as ``aiops nab``, prints the three profiles' scores, the windows detected and missed and
the false positives at the standard profile's threshold, and the ratio to CAD OSE (the best
published detector on these files), and writes them to ``bench-results/nab.json``; the target
is a standard score above CAD OSE's. The detectors are deterministic: so is the score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.commands.nab import PUBLISHED_SCORES, load_corpus, run_detector
from detectors.nab import score_file
from detectors.registry import DEFAULT
from tests.nab_corpus import NAB_DATA, requires_nab

pytestmark = [pytest.mark.bench, requires_nab("data")]
OUT = Path("bench-results/nab.json")
CAD_OSE = dict(PUBLISHED_SCORES)["CAD OSE"]


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    corpus = load_corpus(NAB_DATA)
    result = run_detector(corpus, DEFAULT, {})
    standard = result.results[0]
    counts = {"windows": corpus.window_count, "detected": 0, "missed": 0, "false_positives": 0}
    for nab_file in result.files:
        s = score_file(nab_file, standard.profile, standard.threshold)
        counts["detected"] += s.detected_windows
        counts["missed"] += s.missed_windows
        counts["false_positives"] += s.false_positives
    out: dict[str, Any] = {
        "detector": DEFAULT,
        "files": len(corpus.files),
        "scores": {r.profile.name: round(r.normalised, 2) for r in result.results},
        "thresholds": {r.profile.name: round(r.threshold, 4) for r in result.results},
        "cad_ose": dict(zip((r.profile.name for r in result.results), CAD_OSE, strict=True)),
        "ratio_to_cad_ose_standard": round(standard.normalised / CAD_OSE[0], 3),
        "at_standard_threshold": counts,
        "detect_seconds": round(result.detect_seconds, 1),
    }
    print(f"\n{json.dumps(out, indent=2)}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2, sort_keys=True))
    return out


def test_default_detector_nab_scores_are_reported(figures: dict[str, Any]) -> None:
    counts = figures["at_standard_threshold"]
    assert counts["detected"] + counts["missed"] == counts["windows"] == 64
    assert set(figures["scores"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert all(0.0 < v <= 100.0 for v in figures["scores"].values())


def test_default_detector_beats_the_best_published_standard_score(figures: dict[str, Any]) -> None:
    assert figures["scores"]["standard"] > CAD_OSE[0]
