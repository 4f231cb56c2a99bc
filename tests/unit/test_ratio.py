"""The ratio detector: an error ratio judged with its request count, armed after any alarm."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest

from detectors import SampleBatch, SeriesKey, SeriesRegistry
from detectors.bank import build_detector
from detectors.base import DetectorError
from detectors.ratio import RatioDetector, tail

STEP = 15.0
LABELS = {"namespace": "shop", "deployment": "web"}
T0 = 1_700_000_000.0
MIN_SCORE = 0.9999  # the alarm level of the shipped configuration


def test_the_tail_by_hand() -> None:
    # 2 errors in 75 requests on a 1 % baseline: P(X >= 2) = 1 - 0.99^75 - 75 * 0.01 * 0.99^74,
    # a little more with the baseline uncertain (beta-binomial)
    binomial = 1 - 0.99**75 - 75 * 0.01 * 0.99**74
    assert binomial == pytest.approx(0.1730, abs=1e-4)
    assert tail(2, 75, 0.01, 1000.0) == pytest.approx(binomial, rel=0.05)
    assert tail(2, 75, 0.01, 1000.0) > binomial
    assert tail(0, 75, 0.01, 1000.0) == 1.0
    # 12 % of 500 requests on a 1 % baseline: far past any alarm level
    assert tail(60, 500, 0.01, 1000.0) < 1e-12


class Traffic:
    """A diurnal service: requests per second from ``low`` at 03:00 to ``high`` at 15:00."""

    def __init__(self, seed: int, low: float = 0.3, high: float = 40.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.low, self.high = low, high
        self.series = SeriesRegistry()
        self.ratio = self.series.id_for(SeriesKey.of("http_requests_error_ratio", LABELS))
        self.rate = self.series.id_for(SeriesKey.of("http_requests_per_second", LABELS))
        self.detector = build_detector("ratio", {"count_metric": "http_requests_per_second"}, self.series)

    def rps(self, t: float) -> float:
        hour = ((t - T0) / 3600.0) % 24
        return float(self.low + (self.high - self.low) * 0.5 * (1 - np.cos(2 * np.pi * (hour - 3) / 24)))

    def step(self, t: float, error_rate: float = 0.01, errors: int | None = None) -> float:
        """One scrape: the rate and the ratio at ``t``; returns the ratio's score."""
        rps = self.rps(t)
        requests = int(self.rng.poisson(rps * STEP))
        bad = int(self.rng.binomial(requests, error_rate)) if errors is None else errors
        ratio = bad / requests if requests else 0.0
        batch = SampleBatch.from_arrays([self.rate, self.ratio], [t, t], [requests / STEP, ratio])
        scores = self.detector.update(batch)
        return float(scores[1])

    def run(self, start: float, seconds: float, error_rate: float = 0.01) -> list[float]:
        return [self.step(start + k * STEP, error_rate) for k in range(int(seconds / STEP))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_errors_in_75_requests_at_night_are_no_evidence(seed: int) -> None:
    traffic = Traffic(seed, low=5.0)  # 03:00: about 75 requests per scrape
    clean = traffic.run(T0, 2 * 86400 + 3 * 3600)
    assert max(clean) < MIN_SCORE, "healthy diurnal traffic raises nothing"
    night = T0 + 2 * 86400 + 3 * 3600
    assert traffic.step(night, errors=2) < 0.9


HOURS = (3, 9, 15, 21)


@functools.cache
def after_a_night_false_alarm(seed: int) -> tuple[float, dict[int, tuple[Traffic, list[float]]]]:
    """One day of healthy traffic, a burst of errors at 02:00 of the next, then healthy traffic on.

    Returns the burst's score and, for each hour of :data:`HOURS` on the day after, the traffic as
    it stands then and the scores since the burst. One run serves every hour: it is the run each
    hour's test would make up to its hour (same samples, same random draws, same times).
    """
    traffic = Traffic(seed, low=2.0)  # about 30 requests per scrape at night
    night = T0 + 86400 + 2 * 3600
    traffic.run(T0, night - T0)
    burst = traffic.step(night, errors=15)
    at: dict[int, tuple[Traffic, list[float]]] = {}
    rest: list[float] = []
    t = night + STEP
    for hour in HOURS:
        start = T0 + 2 * 86400 + hour * 3600
        rest += traffic.run(t, start - t)
        t = start
        at[hour] = (copy.deepcopy(traffic), list(rest))
    return burst, at


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("hour", HOURS)
def test_a_12_percent_step_is_caught_at_any_hour_after_a_night_false_alarm(seed: int, hour: int) -> None:
    burst, at = after_a_night_false_alarm(seed)
    # a burst of errors at night, real but short: flagged, and not learned
    assert burst >= MIN_SCORE
    start = T0 + 2 * 86400 + hour * 3600
    shared, rest = at[hour]
    traffic = copy.deepcopy(shared)  # this test's own copy: the shared one stays as it was
    assert len(rest) == (start - T0 - 86400 - 2 * 3600) / STEP - 1  # every scrape since the burst
    assert max(rest[8:]) < MIN_SCORE, "the burst's evidence fades within two minutes"
    step_scores = traffic.run(start, 600, error_rate=0.13)  # +12 points for ten minutes
    flagged = [k for k, s in enumerate(step_scores) if s >= MIN_SCORE]
    # at 03:00 a scrape holds ~30 requests: not every one is evidence on its own, but most are
    assert len(flagged) >= (0.5 if hour == 3 else 0.9) * len(step_scores)
    assert flagged[0] <= 8, "caught within two minutes"


@pytest.mark.parametrize("share", [0.5, 0.0])
def test_one_scrape_of_errors_signals_once_not_for_the_minutes_the_window_remembers_it(share: float) -> None:
    # 160 requests/s: 30 % errors in one scrape. The 60 s window remembers them for about two
    # minutes, long enough for a playbook's `for: 2m` to take one scrape for a lasting spike.
    traffic = Traffic(5, low=160.0, high=160.0)
    traffic.detector.current_share = share  # type: ignore[attr-defined]  # 0: the window alone
    start = T0 + 6 * 3600
    traffic.run(T0, start - T0, error_rate=0.001)
    spike = traffic.step(start, error_rate=0.3)
    after = traffic.run(start + STEP, 600, error_rate=0.001)
    assert spike >= MIN_SCORE
    lasting = [k for k, s in enumerate(after, start=1) if s >= MIN_SCORE]
    if share > 0:
        assert lasting == [], "back at the baseline, no sample is evidence of errors now"
    else:
        assert lasting, "without the check the window keeps signalling"
        assert lasting[-1] * STEP >= 90


def test_errors_of_a_lasting_incident_are_not_learned_when_a_sample_alone_is_not_evidence() -> None:
    # 4 requests/s, 12 % errors for 20 minutes: some scrapes hold no error or just one and are
    # not signalled on their own, but the window is still off, so they are not learned either
    traffic = Traffic(6, low=4.0, high=4.0)
    start = T0 + 6 * 3600
    traffic.run(T0, start - T0, error_rate=0.001)
    before = traffic.detector.state_dict()
    scores = traffic.run(start, 1200, error_rate=0.12)
    after = traffic.detector.state_dict()
    assert 0.6 * len(scores) <= sum(s >= MIN_SCORE for s in scores) < len(scores)
    learned = after["events"].sum() - before["events"].sum() * 0.5 ** (1200 / (6 * 3600))
    assert learned < 1.0, "the incident's errors stay out of the baseline"


def test_a_ratio_without_its_count_scores_zero_and_is_not_learned() -> None:
    series = SeriesRegistry()
    ratio = series.id_for(SeriesKey.of("http_requests_error_ratio", LABELS))
    detector = RatioDetector(series, "http_requests_per_second", min_history=0.0)
    scores = [
        float(detector.update(SampleBatch.from_arrays([ratio], [T0 + k * STEP], [0.9]))[0]) for k in range(20)
    ]
    assert scores == [0.0] * 20
    assert detector.state_dict()["trials"].sum() == 0


def test_state_round_trip_gives_identical_scores() -> None:
    a, b = Traffic(7), Traffic(7)
    a.run(T0, 6 * 3600)
    b.run(T0, 6 * 3600)
    restored = RatioDetector(b.series, "http_requests_per_second")
    restored.load_state(a.detector.state_dict())
    b.detector = restored
    t = T0 + 6 * 3600
    assert [a.step(t + k * STEP, 0.05) for k in range(40)] == [b.step(t + k * STEP, 0.05) for k in range(40)]


def test_parameters_are_checked() -> None:
    series = SeriesRegistry()
    with pytest.raises(DetectorError, match=r"ratio\.count_metric"):
        RatioDetector.from_params({}, series)
    with pytest.raises(DetectorError, match=r"ratio\.half_life"):
        RatioDetector.from_params({"count_metric": "x", "half_life": 1}, series)
    with pytest.raises(DetectorError, match="unknown parameter"):
        RatioDetector.from_params({"count_metric": "x", "bucket": 3}, series)
    with pytest.raises(DetectorError, match=r"ratio\.concentration"):
        RatioDetector.from_params({"count_metric": "x", "concentration": 1e5}, series)
    with pytest.raises(DetectorError, match=r"ratio\.current_share"):
        RatioDetector.from_params({"count_metric": "x", "current_share": 1.5}, series)


def test_a_window_past_the_tail_bound_is_judged_at_its_ratio_and_a_little_more_cautiously() -> None:
    # the tail is a sum over the events: past TAIL_TRIALS it is computed at the same ratio on
    # TAIL_TRIALS trials, whose spread is within 1 % of the larger window's at concentration 1e4
    from scipy import stats  # type: ignore[import-untyped]  # no stubs

    for k, n, c in [(102_000, 2_000_000, 1e4), (104_000, 2_000_000, 1e4), (110_000, 2_000_000, 1e3)]:
        exact = float(stats.betabinom.sf(k - 1, n, 0.05 * c, 0.95 * c))
        bounded = tail(k, n, 0.05, c)
        assert exact <= bounded <= exact * 1.01, (k, n, c)
    assert tail(1_020_000, 20_000_000, 0.05, 1e4) == tail(51_000, 1_000_000, 0.05, 1e4)
    assert tail(300_000, 2_000_000, 0.05, 1e3) < 1 - MIN_SCORE  # 15 % on a 5 % baseline


def test_a_sample_claiming_absurd_traffic_is_scored_at_once_with_its_counts_reported() -> None:
    # one sample of 1e15 requests per second asked the beta-binomial for a sum over 1e16 terms
    series = SeriesRegistry()
    ratio = series.id_for(SeriesKey.of("http_requests_error_ratio", LABELS))
    rate = series.id_for(SeriesKey.of("http_requests_per_second", LABELS))
    detector = RatioDetector(series, "http_requests_per_second", min_history=0.0)
    detector.update(SampleBatch.from_arrays([rate, ratio], [T0, T0], [10.0, 0.01]))
    for k, rps in enumerate([1e15, 1e300, 1e15], start=1):
        t = T0 + k * STEP
        scores = detector.update(SampleBatch.from_arrays([rate, ratio], [t, t], [rps, 0.5]))
        assert scores[1] > MIN_SCORE, rps  # half of everything failing on a 1 % baseline
        details = detector.signal_details(ratio)
        assert details["requests"] >= 1e15  # MAX_TRIALS a sample: finite, whatever it claims
        assert details["window_ratio"] == pytest.approx(0.5, rel=1e-6)
