"""Every learned detector keeps the same contract: range, causality, state, bad input, parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import DetectorError, SampleBatch, SeriesKey, SeriesRegistry
from detectors.bank import DEFAULT_DETECTOR, build_detector, detector_names
from detectors.registry import LEARNED, build_learned
from detectors.streaming import MAX_ABS_TIMESTAMP, MAX_ABS_VALUE, StreamingDetector

#: Small PyOD windows so the conformance tests exercise several refits quickly.
SMALL_PYOD = {"window": 64, "min_fit": 32, "refit_every": 48, "warmup": 5}


def _params(name: str) -> dict[str, Any]:
    base: dict[str, Any] = {"warmup": 5}
    return dict(SMALL_PYOD) if name.startswith("pyod") else base


def _make(name: str) -> StreamingDetector:
    return build_learned(name, _params(name))


NAMES = sorted(LEARNED)
STREAMING = [n for n in NAMES if not n.startswith("pyod")]  # per-series state only


def _series(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1.7e9 + 300.0 * np.arange(n)
    x = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
    x[n // 2] += 30
    return t, x


def _score(det: StreamingDetector, t: np.ndarray, x: np.ndarray, sid: int = 0) -> np.ndarray:
    return det.update(SampleBatch.from_arrays(np.full(t.size, sid), t, x))


def test_registry_names_are_in_the_bank() -> None:
    assert set(LEARNED) <= set(detector_names())
    assert "threshold" in detector_names()
    assert DEFAULT_DETECTOR in LEARNED
    for name in detector_names():
        params: dict[str, Any] = {"rules": []} if name == "threshold" else {}
        assert build_detector(name, params, SeriesRegistry()).name == name


@pytest.mark.parametrize("name", NAMES)
def test_scores_are_aligned_in_range_and_nonconstant(name: str) -> None:
    det = _make(name)
    t, x = _series(600)
    scores = _score(det, t, x)
    assert scores.shape == (600,)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores.max() > scores.min()  # a detector that always says the same thing is broken
    assert det.signal_details(0)["detector"] == det.kind


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.floats(-2e9, 2e9) | st.floats(allow_nan=True, allow_infinity=True),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        max_size=80,
    )
)
def test_scores_stay_in_range_on_arbitrary_floats(name: str, rows: list[tuple[int, float, float]]) -> None:
    det = _make(name)
    batch = SampleBatch.from_arrays([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    scores = det.update(batch)
    assert scores.shape == (len(rows),)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    # every sample is either scored or counted as skipped
    usable = (np.abs(batch.values) <= MAX_ABS_VALUE) & (np.abs(batch.timestamps) <= MAX_ABS_TIMESTAMP)
    assert det.invalid == int((~usable).sum())
    # and the learned state is still usable: ordinary samples afterwards score normally
    later = SampleBatch.from_arrays(
        [0, 1, 2] * 20, np.repeat(MAX_ABS_TIMESTAMP - 20 + np.arange(20.0), 3), np.ones(60)
    )
    after = det.update(later)
    assert np.isfinite(after).all()
    assert ((after >= 0) & (after <= 1)).all()
    for key, array in det.state_dict()["arrays"].items():
        if array.dtype.kind == "f" and key not in {"last_ts", "seasonal_t", "robust_buf", "recent"}:
            assert np.isfinite(array).all(), key


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=150),
    st.lists(st.integers(1, 40), max_size=8),
)
def test_causal_prefix_and_batch_splits_give_identical_scores(
    name: str, values: list[float], cuts: list[int]
) -> None:
    t = 1.7e9 + 60.0 * np.arange(len(values))
    x = np.asarray(values)
    whole = _score(_make(name), t, x)
    # any prefix scores exactly as the whole run did on that prefix
    k = max(1, len(values) // 2)
    np.testing.assert_array_equal(_score(_make(name), t[:k], x[:k]), whole[:k])
    # any split into batches gives the same scores
    det = _make(name)
    bounds = np.unique(np.clip(np.cumsum(cuts), 0, len(values)))
    parts = [_score(det, tp, xp) for tp, xp in zip(np.split(t, bounds), np.split(x, bounds), strict=True)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("name", STREAMING)
def test_interleaving_and_batch_order_do_not_matter(name: str) -> None:
    ta, xa = _series(300, seed=1)
    tb, xb = _series(300, seed=2)
    alone_a = _score(_make(name), ta, xa, 0)
    alone_b = _score(_make(name), tb, xb, 1)
    # both series in one batch, shuffled: each sample is still scored in its series' time order
    rng = np.random.default_rng(3)
    ids = np.concatenate([np.zeros(300, int), np.ones(300, int)])
    ts = np.concatenate([ta, tb])
    xs = np.concatenate([xa, xb])
    perm = rng.permutation(600)
    scores = _make(name).update(SampleBatch.from_arrays(ids[perm], ts[perm], xs[perm]))
    back = np.empty(600)
    back[perm] = scores
    np.testing.assert_array_equal(back[:300], alone_a)
    np.testing.assert_array_equal(back[300:], alone_b)


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_gives_identical_scores(name: str) -> None:
    t, x = _series(900)
    det = _make(name)
    _score(det, t[:500], x[:500])
    _score(det, t[:10] + 1e6, x[:10], sid=3)  # a second series with gaps in the ids
    state = det.state_dict()
    restored = _make(name)
    restored.load_state(state)
    np.testing.assert_array_equal(_score(restored, t[500:], x[500:]), _score(det, t[500:], x[500:]))
    assert restored.invalid == det.invalid


@pytest.mark.parametrize("name", NAMES)
def test_state_of_another_kind_version_or_parameters_is_refused(name: str) -> None:
    det = _make(name)
    _score(det, *_series(50))
    state = det.state_dict()
    with pytest.raises(DetectorError, match="version"):
        _make(name).load_state({**state, "version": 99})
    with pytest.raises(DetectorError, match="detector"):
        _make(name).load_state({**state, "kind": "other"})
    with pytest.raises(DetectorError, match="parameters"):
        _make(name).load_state({**state, "params": {**state["params"], "warmup": 999}})
    broken = {**state, "arrays": {k: v for k, v in state["arrays"].items() if k != "last_ts"}}
    with pytest.raises(DetectorError, match="lacks"):
        _make(name).load_state(broken)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_counted_never_crashes(name: str) -> None:
    det = _make(name)
    t, x = _series(200)
    _score(det, t, x)
    last = t[-1]
    batch = SampleBatch.from_arrays(
        [0, 0, 0, 0, 0, 0, 1, 2],
        [last + 60, last + 120, last + 120, last - 600, np.nan, last + 180, 5.0, 5.0],
        [np.nan, np.inf, 1.0, 1.0, 1.0, 1e300, 7.0, 0.0],
    )
    scores = det.update(batch)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert det.invalid == 4  # NaN value, inf value, NaN timestamp, absurd value
    assert det.duplicates == 0
    assert det.out_of_order == 1  # older than the newest sample
    # the same timestamp as the newest accepted sample again is a duplicate
    assert det.update(SampleBatch.from_arrays([0], [last + 120], [1.0])).tolist() == [0.0]
    assert det.duplicates == 1
    assert det.skipped == 6
    assert scores[[0, 1, 3, 4, 5]].tolist() == [0.0] * 5


@pytest.mark.parametrize("name", NAMES)
def test_constant_series_and_a_single_huge_outlier(name: str) -> None:
    det = _make(name)
    t = 1.7e9 + 60.0 * np.arange(400)
    x = np.full(400, 3.0)
    x[300] = 1e12
    scores = _score(det, t, x)
    assert np.isfinite(scores).all()
    assert scores[:300].max() < 0.5  # MAD = 0 is no reason to alarm
    # cusum and burst clip one sample by design; novelty's lattice waits six hours (here 400
    # minutes in all) and its p is never below 1 / (samples seen + 2): tested in test_novelty.py
    if name in STREAMING and name not in ("cusum", "burst", "novelty"):
        assert scores[300] >= 0.5


@pytest.mark.parametrize("name", NAMES)
def test_empty_batches_and_unregistered_ids(name: str) -> None:
    det = _make(name)
    assert det.update(SampleBatch.empty()).shape == (0,)
    with pytest.raises(DetectorError, match="unregistered"):
        det.update(SampleBatch.from_arrays([-1], [1.0], [1.0]))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_and_invalid_parameters_name_the_parameter(name: str) -> None:
    with pytest.raises(DetectorError, match="unknown parameter"):
        build_learned(name, {"colour": "red"})
    with pytest.raises(DetectorError, match=r"\.tail: must be"):
        build_learned(name, {"tail": 0.9})
    with pytest.raises(DetectorError, match=r"\.warmup: expected an integer"):
        build_learned(name, {"warmup": "soon"})


def test_unknown_detector_lists_the_known_ones() -> None:
    with pytest.raises(DetectorError, match="ensemble"):
        build_detector("magic", {}, SeriesRegistry())


def _forgetful() -> list[tuple[str, Any]]:
    """Every built-in detector (and the alarm hold) as (id, factory)."""
    from detectors.drift import DriftDetector
    from detectors.forecast_detector import ForecastDetector
    from detectors.hold import AlarmHold
    from detectors.threshold import ThresholdDetector

    rules = {"rules": [{"metric": "m", "above": 55.0, "max_rate": 0.05}]}
    makers: list[tuple[str, Any]] = [(n, lambda n=n: _make(n)) for n in STREAMING]
    makers += [
        ("threshold", lambda: ThresholdDetector.from_params(rules, _REG)),
        ("forecast-regression", lambda: ForecastDetector.from_params({"step": 300, "limit": 60.0})),
        (
            "forecast-holt_winters",
            lambda: ForecastDetector.from_params({"step": 300, "forecaster": "holt_winters"}),
        ),
        ("drift", lambda: DriftDetector.from_params({"window": 50}, _REG)),
        ("hold", AlarmHold),
    ]
    return makers


_REG = SeriesRegistry()
_REG.id_for(SeriesKey.of("m", {}))


def _feed(det: Any, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    batch = SampleBatch.from_arrays(np.zeros(t.size, np.int64), t, x)
    if det.__class__.__name__ == "AlarmHold":
        scores = np.where(x > 60, 1.0, 0.0)
        return np.asarray(det.apply(batch.series, batch.timestamps, batch.values, scores, 0.5))
    chunks = [
        det.update(
            SampleBatch.from_arrays(np.zeros(len(t[i : i + 25]), np.int64), t[i : i + 25], x[i : i + 25])
        )
        for i in range(0, t.size, 25)
    ]
    return np.concatenate(chunks)


@pytest.mark.parametrize(("name", "make"), _forgetful(), ids=[n for n, _ in _forgetful()])
def test_a_forgotten_series_id_starts_over_as_a_new_series(name: str, make: Any) -> None:
    """After forget(id), a new series under the reused id scores exactly as in a fresh detector."""
    t1, x1 = _series(400, seed=1)
    t2, x2 = _series(400, seed=2)
    x2 = x2 * 1.5 + 20  # another series, another level
    t2 = t2 + 400 * 300.0  # later than the first
    used = make()
    _feed(used, t1, x1)
    used.forget(np.array([0], np.int64))
    fresh = make()
    np.testing.assert_array_equal(_feed(used, t2, x2), _feed(fresh, t2, x2), err_msg=name)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in STREAMING])
def test_a_forgotten_series_has_its_rows_reset_in_a_shared_model_detector(name: str) -> None:
    """PyOD detectors train one model on every series' windows, which keeps what an evicted series
    taught it (as it keeps what any series taught it); the series' own rows start over."""
    t, x = _series(300, seed=3)
    used = _make(name)
    _score(used, t, x)
    used.forget(np.array([0], np.int64))
    fresh = _make(name)
    fresh.ensure(1)
    for key, rows in used.state.arrays.items():
        np.testing.assert_array_equal(rows[0], fresh.state.arrays[key][0], err_msg=key)
