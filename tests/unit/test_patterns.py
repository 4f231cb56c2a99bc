"""Configured regular expressions: matched in linear time, refused by name when RE2 cannot run them."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.bank import MetricFilter, compile_metrics
from detectors.base import DetectorError
from detectors.patterns import MAX_PATTERN, compile_pattern
from detectors.series import SeriesKey, SeriesRegistry
from detectors.threshold import ThresholdRule

#: Each of these backtracks for minutes in Python's re on the hostile name below.
CATASTROPHIC = ("((a)+)+", "(a|a)*", "(a?){28}a{28}", "(x+x+)+y")
HOSTILE = "a" * 5000 + "-"


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_a_pattern_that_backtracks_in_python_re_is_a_plain_match_here(pattern: str) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.pattern == pattern
    assert not compiled.fullmatch(HOSTILE)
    assert not compiled.fullmatch("x" * 5000)


def test_fullmatch_means_the_whole_string() -> None:
    web = compile_pattern("web-[0-9]+|api")
    assert web.fullmatch("web-12")
    assert web.fullmatch("api")
    assert not web.fullmatch("xweb-12")
    assert not web.fullmatch("web-12x")
    assert not web.fullmatch("apis")
    assert compile_pattern(".*").fullmatch("")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\1", "invalid escape sequence: \\1"),
        ("(?=a)b", "invalid perl operator: (?="),
        ("(?<!a)b", "invalid perl operator: (?<"),
        ("[a-", "missing ]"),
        ("(a{100}){100}", "invalid repetition size"),
        ("x" * (MAX_PATTERN + 1), f"a pattern is limited to {MAX_PATTERN} characters, got {MAX_PATTERN + 1}"),
    ],
)
def test_what_cannot_run_in_linear_time_is_refused_with_the_reason(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"regular expression|limited to") as info:
        compile_pattern(pattern)
    assert reason in str(info.value)


def test_a_detector_groups_metrics_pattern_filters_hostile_metric_names() -> None:
    with pytest.raises(DetectorError) as info:
        compile_metrics("forecast", "(?=x)")
    assert "forecast: metrics '(?=x)': not a valid regular expression" in str(info.value)
    series = SeriesRegistry()
    ids = np.array([series.id_for(SeriesKey.of(name)) for name in ("a" * 64, "a" * 200 + "-", "b")], np.int64)
    chosen = MetricFilter(series, compile_metrics("forecast", "((a)+)+"))
    assert chosen.select(ids).tolist() == [True, False, False]


def test_a_threshold_rules_label_match_is_linear_and_its_errors_name_the_label() -> None:
    rule = ThresholdRule.parse({"metric": "up", "below": 1, "match": {"job": "((a)+)+"}}, "rules[0]")
    assert rule.applies_to(SeriesKey.of("up", {"job": "aaaa"}))
    assert not rule.applies_to(SeriesKey.of("up", {"job": HOSTILE}))
    with pytest.raises(DetectorError) as info:
        ThresholdRule.parse({"metric": "up", "below": 1, "match": {"job": "(a)\\1"}}, "rules[0]")
    assert "rules[0].match.job: not a valid regular expression" in str(info.value)
