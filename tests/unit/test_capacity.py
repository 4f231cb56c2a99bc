"""The measured capacity per pod: the join, the band, the median of bucket means, its state.

Expected values are worked out by hand: a sample of demand 400 req/s on 5 ready pods at 80 % CPU
says one pod serves 400 / (5 x 0.8) = 100 req/s at full CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detectors import SampleBatch, SeriesRegistry
from detectors.base import DetectorError
from detectors.capacity import CapacityEstimator
from detectors.forecast_detector import ForecastDetector
from detectors.series import SeriesKey

DEMAND, UTIL, READY = "http_requests_per_second", "container_cpu_usage_ratio", "kube_ready"
LABELS = {"namespace": "web", "deployment": "fe"}
CAPACITY = {"utilisation_metric": UTIL, "replicas_metric": READY}


def registry() -> tuple[SeriesRegistry, int, int, int]:
    reg = SeriesRegistry()
    ids = [reg.id_for(SeriesKey.of(m, LABELS)) for m in (DEMAND, UTIL, READY)]
    return reg, ids[0], ids[1], ids[2]


def estimator(**params: Any) -> tuple[CapacityEstimator, int]:
    reg, d, _, _ = registry()
    return CapacityEstimator.from_params({**CAPACITY, **params}, reg), d


def samples(t: np.ndarray, demand: np.ndarray, util: np.ndarray, ready: np.ndarray) -> SampleBatch:
    """One batch of the three series at the times ``t`` (ids 0, 1, 2 as :func:`registry` gives)."""
    n = t.size
    ids = np.repeat(np.arange(3), n)
    return SampleBatch.from_arrays(ids, np.tile(t, 3), np.concatenate([demand, util, ready]))


def feed(est: CapacityEstimator, t: np.ndarray, demand: Any, util: Any, ready: Any, chunk: int = 0) -> None:
    """Feed the three series at ``t``, one scrape (all three at one time) per batch unless ``chunk``."""
    n = t.size
    demand, util, ready = (np.broadcast_to(np.asarray(x, dtype=float), (n,)) for x in (demand, util, ready))
    step = chunk or 1
    for lo in range(0, n, step):
        sl = slice(lo, lo + step)
        est.update(samples(t[sl], demand[sl], util[sl], ready[sl]))


def times(n: int, start: float = 0.0, step: float = 15.0) -> np.ndarray:
    return start + step * np.arange(n, dtype=float)


def test_a_pod_serves_demand_over_ready_times_utilisation() -> None:
    est, d = estimator(min_samples=4)
    feed(est, times(4), demand=400.0, util=0.8, ready=5.0)
    assert est.value(d) == pytest.approx(100.0)
    assert est.samples(d) == 4


def test_nothing_is_trusted_before_min_samples_valid_samples() -> None:
    est, d = estimator(min_samples=10)
    feed(est, times(9), demand=400.0, util=0.8, ready=5.0)
    assert est.value(d) is None
    feed(est, times(1, start=9 * 15.0), demand=400.0, util=0.8, ready=5.0)
    assert est.value(d) == pytest.approx(100.0)


def test_saturated_and_idle_samples_are_left_out() -> None:
    """At CPU 1.0 (capped) 900 req/s on 5 pods would say 180 per pod; at 5 % CPU noise says 300."""
    est, d = estimator(min_samples=20)
    feed(est, times(40), demand=400.0, util=0.8, ready=5.0)  # the truth: 100 per pod
    feed(est, times(200, start=600.0), demand=900.0, util=1.0, ready=5.0)  # saturated
    feed(est, times(200, start=3600.0), demand=75.0, util=0.05, ready=5.0)  # near idle
    assert est.samples(d) == 40
    assert est.value(d) == pytest.approx(100.0)


def test_the_band_edges_are_inside_it() -> None:
    est, d = estimator(min_samples=2, low=0.2, high=0.9)
    feed(est, times(2), demand=[90.0, 20.0], util=[0.9, 0.2], ready=1.0)
    assert est.samples(d) == 2
    assert est.value(d) == pytest.approx(100.0)


def test_a_few_skewed_buckets_do_not_move_the_median() -> None:
    """12 buckets of 5 minutes; 3 of them (a roll-out, say) read 200 per pod: the median stays 100."""
    est, d = estimator(min_samples=20)
    t = times(240)  # one hour at 15 s: 20 samples per bucket
    bucket = (t // 300).astype(int)
    demand = np.where(np.isin(bucket, [2, 6, 9]), 800.0, 400.0)
    feed(est, t, demand=demand, util=0.8, ready=5.0)
    assert est.value(d) == pytest.approx(100.0)
    # the same samples' plain mean would be 125: the median of bucket means is what ignores them
    assert float(np.mean(demand / 4.0)) == pytest.approx(125.0)


def test_only_the_last_window_of_valid_samples_counts() -> None:
    """A new version that costs twice the CPU per request halves the capacity within the window."""
    est, d = estimator(min_samples=20, window=3600, buckets=12)
    feed(est, times(240), demand=400.0, util=0.8, ready=5.0, chunk=60)  # an hour at 100 per pod
    feed(est, times(240, start=3600.0), demand=200.0, util=0.8, ready=5.0, chunk=60)  # an hour at 50
    assert est.value(d) == pytest.approx(50.0)


def test_a_quiet_night_keeps_the_last_measurement() -> None:
    """Hours at 8 % CPU are no evidence; the morning's first valid sample joins the evening's."""
    est, d = estimator(min_samples=20)
    feed(est, times(240), demand=400.0, util=0.8, ready=5.0, chunk=40)  # an hour at 100 per pod
    feed(est, times(960, start=3600.0), demand=40.0, util=0.08, ready=5.0, chunk=40)  # 4 idle hours
    feed(est, times(1, start=5 * 3600.0), demand=280.0, util=0.7, ready=4.0)  # 100 again
    assert est.samples(d) == 241
    assert est.value(d) == pytest.approx(100.0)


def test_partners_join_as_of_the_demand_sample_never_from_its_future() -> None:
    reg, d, u, r = registry()
    est = CapacityEstimator.from_params({**CAPACITY, "min_samples": 1}, reg)
    # utilisation only 15 s after the demand: not known when the demand was seen
    est.update(SampleBatch.from_arrays([d, u, r], [100.0, 115.0, 100.0], [400.0, 0.8, 5.0]))
    assert est.samples(d) == 0
    # a demand sample after both joins them (the partners' newest values carried from the last batch)
    est.update(SampleBatch.from_arrays([d], [120.0], [400.0]))
    assert est.value(d) == pytest.approx(100.0)


def test_partners_older_than_max_age_are_not_joined() -> None:
    reg, d, u, r = registry()
    est = CapacityEstimator.from_params({**CAPACITY, "min_samples": 1, "max_age": 60}, reg)
    est.update(SampleBatch.from_arrays([u, r], [0.0, 0.0], [0.8, 5.0]))
    est.update(SampleBatch.from_arrays([d], [61.0], [400.0]))
    assert est.samples(d) == 0
    est.update(SampleBatch.from_arrays([u, r, d], [100.0, 100.0, 130.0], [0.8, 5.0, 400.0]))
    assert est.samples(d) == 1


def test_a_batch_of_many_scrapes_joins_each_sample_with_its_own_time() -> None:
    """A backfill: an hour of the three series in one batch, the capacity changing half-way."""
    est, d = estimator(min_samples=1, buckets=2, window=1200)
    t = times(80)  # 20 minutes, buckets of 10
    ready = np.where(t < 600, 4.0, 8.0)
    util = np.where(t < 600, 0.5, 0.25)  # the same 200 req/s on twice the pods: 100 per pod throughout
    feed(est, t, demand=200.0, util=util, ready=ready, chunk=80)
    assert est.samples(d) == 80
    assert est.value(d) == pytest.approx(100.0)


def test_settle_skips_samples_while_the_ready_count_is_new() -> None:
    est, d = estimator(min_samples=1, settle=300)
    t = times(40)  # 10 minutes: ready 4 then 5 from t=300; CPU (a 5-minute rate) lags the change
    ready = np.where(t < 300, 4.0, 5.0)
    feed(est, t, demand=320.0, util=0.8, ready=ready)  # 100 per pod with 4; "80" with 5 while lagging
    # the first 300 s from the first sample (the first ready value is a change too) and 300 s after
    # the change at 300 are skipped: nothing is valid before t=300 + 300
    assert est.samples(d) == 0
    feed(est, times(4, start=600.0), demand=400.0, util=0.8, ready=5.0)
    assert est.samples(d) == 4
    assert est.value(d) == pytest.approx(100.0)


def test_old_and_invalid_samples_are_ignored() -> None:
    est, d = estimator(min_samples=1)
    feed(est, times(4, start=1000.0), demand=400.0, util=0.8, ready=5.0)
    feed(est, times(4), demand=800.0, util=0.8, ready=5.0)  # older than what was seen: ignored
    feed(est, times(2, start=2000.0), demand=np.nan, util=0.8, ready=5.0)
    feed(est, times(2, start=3000.0), demand=400.0, util=0.8, ready=0.0)  # no pod ready
    assert est.samples(d) == 4
    assert est.value(d) == pytest.approx(100.0)


def test_memory_per_series_does_not_grow_with_samples() -> None:
    est, _ = estimator(buckets=12)
    feed(est, times(100), demand=400.0, util=0.8, ready=5.0, chunk=50)
    size = {k: v.nbytes for k, v in est.state_dict().items() if isinstance(v, np.ndarray)}
    feed(est, times(20_000, start=1e5), demand=400.0, util=0.8, ready=5.0, chunk=5000)
    assert {k: v.nbytes for k, v in est.state_dict().items() if isinstance(v, np.ndarray)} == size
    assert est.state_dict()["ring_sum"].shape[1] == 12


def test_forgotten_series_start_over() -> None:
    reg, d, u, _ = registry()
    est = CapacityEstimator.from_params({**CAPACITY, "min_samples": 1}, reg)
    feed(est, times(4), demand=400.0, util=0.8, ready=5.0)
    est.forget(np.array([d, u], dtype=np.int64))
    assert est.value(d) is None
    feed(est, times(4, start=100.0), demand=200.0, util=0.8, ready=5.0)
    assert est.value(d) == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"replicas_metric": READY}, r"forecast\.capacity\.utilisation_metric: expected a metric name"),
        ({**CAPACITY, "replicas_metric": ""}, r"forecast\.capacity\.replicas_metric: expected a metric name"),
        ({**CAPACITY, "colour": 1}, r"forecast\.capacity: unknown parameter"),
        ({**CAPACITY, "low": 0.9, "high": 0.5}, r"forecast\.capacity\.high: must be above low"),
        ({**CAPACITY, "high": 1.5}, r"forecast\.capacity\.high: expected a number in"),
        ({**CAPACITY, "buckets": 0}, r"forecast\.capacity\.buckets: expected an integer in"),
        ({**CAPACITY, "min_samples": "many"}, r"forecast\.capacity\.min_samples: expected an integer"),
        ({UTIL: 1}, r"forecast\.capacity: unknown parameter"),
    ],
)
def test_parameters_are_checked_and_errors_name_the_key(params: dict[str, Any], why: str) -> None:
    reg, *_ = registry()
    with pytest.raises(DetectorError, match=why):
        ForecastDetector.from_params({"capacity": params}, reg)


def test_capacity_needs_the_series_registry_and_a_mapping() -> None:
    with pytest.raises(DetectorError, match="needs the series registry"):
        ForecastDetector.from_params({"capacity": CAPACITY})
    reg, *_ = registry()
    with pytest.raises(DetectorError, match=r"forecast\.capacity: expected a mapping"):
        ForecastDetector.from_params({"capacity": "measured"}, reg)


# ---------------------------------------------------------------- inside the forecast detector


def detector(reg: SeriesRegistry, **capacity: Any) -> ForecastDetector:
    params = {"step": 60, "horizon": 300, "forecaster": "holt_winters", "change": 0.0}
    return ForecastDetector.from_params(
        {**params, "capacity": {**CAPACITY, "min_samples": 20, **capacity}}, reg
    )


def day(det: ForecastDetector, start: float = 0.0, n: int = 480) -> np.ndarray:
    """Two hours at 15 s of a service at 80 req/s per pod; the scores of the batches, concatenated."""
    t = times(n, start=start)
    demand = 400.0 + 100.0 * np.sin(t / 3600.0)
    ready = np.ceil(demand / 56.0)  # at most 70 % busy
    util = demand / (ready * 80.0)
    out = [
        det.update(samples(t[lo : lo + 40], demand[lo : lo + 40], util[lo : lo + 40], ready[lo : lo + 40]))
        for lo in range(0, n, 40)
    ]
    return np.concatenate(out)


def test_the_forecast_signal_carries_the_capacity_and_partners_are_not_forecast() -> None:
    reg, d, u, r = registry()
    det = detector(reg)
    scores = day(det)
    assert det.signal_details(d)["capacity_per_pod"] == pytest.approx(80.0)
    assert det.signal_details(d)["capacity_samples"] >= 20
    assert det.signal_value(d) is not None
    # per batch: 40 demand, then 40 utilisation, then 40 ready samples; partners score 0
    assert scores.reshape(-1, 3, 40)[:, 1:, :].max() == 0.0
    assert scores.max() > 0
    for partner in (u, r):  # never forecast
        assert det.signal_value(partner) is None
        assert det.signal_details(partner) == {}


def test_without_capacity_the_details_have_none() -> None:
    reg, d, _, _ = registry()
    det = ForecastDetector.from_params({"step": 60, "horizon": 300, "forecaster": "holt_winters"}, reg)
    t = times(200)
    det.update(SampleBatch.from_arrays(np.full(t.size, d), t, 400.0 + np.sin(t)))
    assert "forecast_mean" in det.signal_details(d)
    assert "capacity_per_pod" not in det.signal_details(d)


def test_checkpoint_round_trip_keeps_the_measurement_and_continues_identically() -> None:
    reg, d, _, _ = registry()
    det = detector(reg)
    day(det)
    restored = detector(reg)
    restored.load_state(det.state_dict())
    assert restored.signal_details(d) == det.signal_details(d)
    np.testing.assert_array_equal(day(restored, start=7200.0), day(det, start=7200.0))
    assert restored.signal_details(d) == det.signal_details(d)


def test_a_version_2_checkpoint_loads_with_nothing_measured_yet() -> None:
    reg, d, _, _ = registry()
    det = detector(reg)
    day(det)
    old = det.state_dict()
    old["version"] = 2
    del old["capacity_state"]
    restored = detector(reg)
    restored.load_state(old)
    assert restored.signal_value(d) == det.signal_value(d)  # the forecast state came through
    assert "capacity_per_pod" not in restored.signal_details(d)


def test_a_refused_capacity_state_loads_nothing() -> None:
    reg, d, _, _ = registry()
    det = detector(reg)
    day(det)
    other = detector(reg, buckets=6)  # another bucket count: another state shape
    day(other, start=50_000.0)  # learned something of its own
    own = other.signal_details(d)
    assert own["capacity_per_pod"] == pytest.approx(80.0)
    with pytest.raises(DetectorError, match="buckets"):
        other.load_state(det.state_dict())
    assert other.signal_details(d) == own  # neither the forecast nor the capacity moved
    older = det.state_dict()
    older["version"] = 1
    with pytest.raises(DetectorError, match="version 1"):
        other.load_state(older)
    assert other.signal_details(d) == own


def test_a_state_without_capacity_leaves_nothing_measured() -> None:
    """A checkpoint of a detector configured without capacity, loaded where it is configured."""
    reg, d, _, _ = registry()
    det = detector(reg)
    day(det)
    state = det.state_dict()
    del state["capacity_state"]
    restored = detector(reg)
    day(restored, start=50_000.0)
    restored.load_state(state)
    assert restored.signal_value(d) == det.signal_value(d)
    assert "capacity_per_pod" not in restored.signal_details(d)
