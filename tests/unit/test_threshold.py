"""The threshold / rate-of-change detector and the DetectorBank that turns its scores into signals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, load_config
from detectors import (
    DetectorBank,
    DetectorError,
    DetectorSpec,
    SampleBatch,
    SeriesKey,
    SeriesRegistry,
    SignalKind,
)
from detectors.bank import build_detector
from detectors.batch import FloatArray
from detectors.threshold import ThresholdDetector

LAT = SeriesKey.of("latency", {"svc": "a"})
ERR = SeriesKey.of("errors", {"svc": "a"})
OTHER = SeriesKey.of("latency", {"svc": "b"})


def _detector(reg: SeriesRegistry, **rule: object) -> ThresholdDetector:
    return ThresholdDetector.from_params({"rules": [{"metric": "latency", **rule}]}, reg)


def test_level_limits_score_one_outside_and_zero_inside() -> None:
    reg = SeriesRegistry()
    det = _detector(reg, above=1.0, below=0.1)
    sid = reg.id_for(LAT)
    scores = det.update(SampleBatch.from_arrays([sid] * 4, [1, 2, 3, 4], [0.5, 1.5, 0.05, 1.0]))
    assert scores.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_rate_of_change_uses_state_across_batches() -> None:
    reg = SeriesRegistry()
    det = _detector(reg, max_rate=1.0)  # at most 1 unit per second
    sid = reg.id_for(LAT)
    assert det.update(SampleBatch.from_arrays([sid], [10.0], [5.0])).tolist() == [0.0]
    # +5 in 10 s is fine; +20 in 10 s is not
    assert det.update(SampleBatch.from_arrays([sid], [20.0], [10.0])).tolist() == [0.0]
    assert det.update(SampleBatch.from_arrays([sid], [30.0], [30.0])).tolist() == [1.0]
    # a drop counts too (absolute rate)
    assert det.update(SampleBatch.from_arrays([sid], [31.0], [0.0])).tolist() == [1.0]


def test_a_rate_too_large_for_a_float_is_past_the_limit() -> None:
    reg = SeriesRegistry()
    det = _detector(reg, max_rate=1.0)
    sid = reg.id_for(LAT)
    # |(-1e308) - 1e308| overflows to inf: the largest change there is, not none
    scores = det.update(SampleBatch.from_arrays([sid] * 3, [1.0, 2.0, 3.0], [1e308, -1e308, -1e308]))
    assert scores.tolist() == [0.0, 1.0, 0.0]


def test_rate_within_one_batch_handles_interleaved_series_and_unsorted_time() -> None:
    reg = SeriesRegistry()
    det = _detector(reg, max_rate=1.0)
    a, b = reg.id_for(LAT), reg.id_for(OTHER)
    batch = SampleBatch.from_arrays([a, b, a, b, a], [2, 1, 1, 2, 3], [1.0, 0.0, 0.5, 10.0, 1.5])
    # a: t1=0.5, t2=1.0 (+0.5/s), t3=1.5 (+0.5/s); b: t1=0, t2=10 (+10/s)
    assert det.update(batch).tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]


def test_series_without_a_rule_never_score() -> None:
    reg = SeriesRegistry()
    det = _detector(reg, above=0.0)
    sid = reg.id_for(ERR)
    assert det.update(SampleBatch.from_arrays([sid], [1.0], [1e9])).tolist() == [0.0]


def test_label_matchers_are_full_match_regexes() -> None:
    reg = SeriesRegistry()
    det = _detector(reg, above=1.0, match={"svc": "a|c"})
    a, b = reg.id_for(LAT), reg.id_for(OTHER)
    assert det.update(SampleBatch.from_arrays([a, b], [1, 1], [5.0, 5.0])).tolist() == [1.0, 0.0]


def test_the_first_matching_rule_governs_with_label_rules_before_name_rules() -> None:
    reg = SeriesRegistry()
    det = ThresholdDetector.from_params(
        {
            "rules": [
                {"metric": "errors", "above": 100.0},
                {"metric": "latency", "above": 10.0, "match": {"svc": "a"}},
                {"metric": "latency", "above": 1.0},
                {"metric": "errors", "above": 0.0},  # shadowed by the first rule
            ]
        },
        reg,
    )
    lat_a, lat_b, err = reg.id_for(LAT), reg.id_for(OTHER), reg.id_for(ERR)
    more = [reg.id_for(SeriesKey.of("errors", {"svc": str(i)})) for i in range(3)]
    ids = [lat_a, lat_b, err, *more]
    scores = det.update(SampleBatch.from_arrays(ids, [1.0] * len(ids), [5.0] * len(ids)))
    assert scores.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert [det.signal_details(i)["rule"] for i in ids] == [1, 2, 0, 0, 0, 0]
    assert det.update(SampleBatch.from_arrays([lat_a, err], [2.0, 2.0], [11.0, 101.0])).tolist() == [1.0, 1.0]


def test_bad_samples_are_counted_not_scored() -> None:
    reg = SeriesRegistry()
    det = _detector(reg, above=1.0, max_rate=1.0)
    sid = reg.id_for(LAT)
    det.update(SampleBatch.from_arrays([sid], [100.0], [0.5]))
    scores = det.update(SampleBatch.from_arrays([sid] * 3, [101.0, 50.0, 102.0], [np.nan, 0.5, np.inf]))
    assert scores.tolist() == [0.0, 0.0, 0.0]
    assert det.invalid == 2
    assert det.out_of_order == 1


def test_state_round_trips() -> None:
    reg = SeriesRegistry()
    det = _detector(reg, max_rate=1.0)
    sid = reg.id_for(LAT)
    det.update(SampleBatch.from_arrays([sid], [10.0], [5.0]))
    fresh = _detector(reg, max_rate=1.0)
    fresh.load_state(det.state_dict())
    assert fresh.update(SampleBatch.from_arrays([sid], [11.0], [50.0])).tolist() == [1.0]
    with pytest.raises(DetectorError, match="version"):
        fresh.load_state({"version": 99})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rules": [{"metric": "m"}]}, "at least one of above, below, max_rate"),
        ({"rules": [{"metric": "m", "above": "high"}]}, r"rules\[0\].above: expected a finite number"),
        ({"rules": [{"metric": "m", "max_rate": -1}]}, r"rules\[0\].max_rate: must be positive"),
        ({"rules": [{"metric": "m", "above": 1, "colour": "red"}]}, r"rules\[0\]: unknown field"),
        ({"rules": [{"above": 1}]}, r"rules\[0\].metric: expected a metric name"),
        (
            {"rules": [{"metric": "m", "above": 1, "match": {"a": "("}}]},
            r"match.a: not a valid regular expression",
        ),
        ({"rules": "nope"}, "expected a list"),
        ({"thresholds": []}, "unknown parameter"),
    ],
)
def test_invalid_parameters_name_the_field(params: dict[str, object], message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        ThresholdDetector.from_params(params, SeriesRegistry())


def test_unknown_detector_name() -> None:
    with pytest.raises(DetectorError, match="unknown detector 'magic'"):
        build_detector("magic", {}, SeriesRegistry())


def test_bank_emits_one_signal_per_series_per_batch_newest_first_hit() -> None:
    reg = SeriesRegistry()
    bank = DetectorBank(reg, [DetectorSpec(_detector(reg, above=1.0))])
    a, b = reg.id_for(LAT), reg.id_for(OTHER)
    batch = SampleBatch.from_arrays([a, a, b, a], [1, 3, 2, 2], [2.0, 3.0, 0.5, 9.0])
    signals = bank.process(batch)
    assert len(signals) == 1
    s = signals[0]
    assert s.kind is SignalKind.THRESHOLD
    assert s.series == LAT
    assert (s.timestamp, s.value, s.score) == (3.0, 3.0, 1.0)
    assert s.details["above"] == 1.0
    assert s.details["since"] == 1.0  # the batch's oldest hit: where sample by sample it began
    assert bank.signals_out == {"threshold": 1}
    assert s.to_dict()["labels"] == {"svc": "a"}
    (alone,) = bank.process(SampleBatch.from_arrays([a, a], [4, 5], [0.5, 2.0]))
    assert alone.timestamp == 5.0
    assert "since" not in alone.details  # one hit: nothing earlier to carry


def test_bank_ignores_dropped_series() -> None:
    reg = SeriesRegistry(limit=1)
    bank = DetectorBank(reg, [DetectorSpec(_detector(reg, above=1.0))])
    a = reg.id_for(LAT)
    dropped = reg.id_for(OTHER)
    signals = bank.process(SampleBatch.from_arrays([a, dropped], [1, 1], [5.0, 5.0]))
    assert [s.series for s in signals] == [LAT]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.floats(-1e6, 1e6) | st.just(float("nan")) | st.just(float("inf")),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        max_size=60,
    )
)
def test_scores_are_always_zero_or_one_and_aligned(rows: list[tuple[int, float, float]]) -> None:
    reg = SeriesRegistry()
    for i in range(4):
        reg.id_for(SeriesKey.of("latency", {"svc": str(i)}))
    det = _detector(reg, above=10.0, below=-10.0, max_rate=5.0)
    batch = SampleBatch.from_arrays([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    scores = det.update(batch)
    assert scores.shape == (len(rows),)
    assert set(scores.tolist()) <= {0.0, 1.0}


class Recorder:
    """A detector that flags every sample and remembers the series ids it was given."""

    name = "recorder"
    signal_kind = SignalKind.FORECAST

    def __init__(self, value: float | None = 42.0) -> None:
        self.seen: list[list[int]] = []
        self.value = value

    def update(self, batch: SampleBatch) -> FloatArray:
        self.seen.append(batch.series.tolist())
        return np.ones(len(batch))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: object) -> None:
        del state

    def signal_details(self, series_id: int) -> dict[str, Any]:
        return {"sid": series_id}

    def signal_value(self, series_id: int) -> float | None:
        del series_id
        return self.value


def test_bank_runs_a_detector_only_on_the_metrics_it_matches() -> None:
    reg = SeriesRegistry()
    rec = Recorder()
    bank = DetectorBank(reg, [DetectorSpec(rec, metrics="http_.*")])
    web, cpu = reg.id_for(SeriesKey.of("http_requests_per_second")), reg.id_for(SeriesKey.of("cpu"))
    bank.process(SampleBatch.from_arrays([web, cpu, web], [1, 1, 2], [1.0, 2.0, 3.0]))
    assert rec.seen == [[web, web]]
    bank.process(SampleBatch.from_arrays([cpu, cpu], [2, 3], [1.0, 1.0]))
    assert len(rec.seen) == 1  # a batch of no matching series does not call the detector
    # series registered later are classified too; the pattern must match the whole name
    api = reg.id_for(SeriesKey.of("http_errors", {"code": "500"}))
    partial = reg.id_for(SeriesKey.of("xhttp_requests"))
    signals = bank.process(SampleBatch.from_arrays([partial, api, cpu], [5, 5, 5], [1.0, 7.0, 1.0]))
    assert rec.seen[-1] == [api]
    assert [(s.series.name, s.value, s.details) for s in signals] == [("http_errors", 42.0, {"sid": api})]


def test_bank_without_metrics_gives_the_detector_the_whole_batch() -> None:
    reg = SeriesRegistry()
    rec = Recorder(value=None)
    bank = DetectorBank(reg, [DetectorSpec(rec)])
    a, b = reg.id_for(LAT), reg.id_for(ERR)
    signals = bank.process(SampleBatch.from_arrays([a, b], [1, 1], [1.5, 2.5]))
    assert rec.seen == [[a, b]]
    assert [s.value for s in signals] == [1.5, 2.5]  # signal_value None: the sample's value


def test_specs_sharing_a_pattern_share_its_filter() -> None:
    reg = SeriesRegistry()
    first, second = Recorder(), Recorder()
    bank = DetectorBank(reg, [DetectorSpec(first, metrics="lat.*"), DetectorSpec(second, metrics="lat.*")])
    a, b = reg.id_for(LAT), reg.id_for(ERR)
    bank.process(SampleBatch.from_arrays([a, b, a], [1, 1, 2], [1.0, 1.0, 1.0]))
    assert first.seen == second.seen == [[a, a]]


def test_invalid_metrics_regex_names_detector_and_pattern() -> None:
    with pytest.raises(DetectorError) as info:
        DetectorSpec(Recorder(), metrics="http_(.*")
    assert "recorder" in str(info.value)
    assert "'http_(.*'" in str(info.value)


def test_invalid_metrics_regex_is_a_located_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('detectors:\n  - type: forecast\n    metrics: "http_(.*"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [error] = info.value.errors
    assert (error.location.line, error.field) == (3, "detectors[0].metrics")
    assert "regular expression" in error.message


def test_metric_filter_on_a_large_batch_matches_a_plain_python_filter() -> None:
    reg = SeriesRegistry()
    names = ["http_requests_per_second", "cpu", "http_errors", "memory"]
    ids = [reg.id_for(SeriesKey.of(names[i % 4], {"pod": str(i)})) for i in range(2000)]
    rec = Recorder()
    bank = DetectorBank(reg, [DetectorSpec(rec, metrics="http_.*")])
    rng = np.random.default_rng(0)
    sample_ids = rng.choice(ids, 10_000)
    bank.process(SampleBatch.from_arrays(sample_ids, np.zeros(10_000), np.ones(10_000)))
    expected = [i for i in sample_ids.tolist() if reg.key(i).name.startswith("http_")]
    assert rec.seen == [expected]
