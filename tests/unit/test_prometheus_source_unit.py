"""The Prometheus source's own logic on virtual time, against a local HTTP stub of the query API."""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from agent.clock import ManualClock
from agent.config import ConfigError, PrometheusQuery, PrometheusSourceConfig
from agent.leader import LeaderState, StaticLeader
from agent.metrics import AgentMetrics
from agent.sources.base import SourceStartupError
from agent.sources.prometheus import MAX_POINTS_PER_RANGE, PrometheusSource
from detectors import SeriesKey, SeriesRegistry
from tests.servers.prometheus import HttpStub, StubRequest, StubResponse, vector

T0 = 1_700_000_000.0


def make_source(
    stub: HttpStub,
    queries: dict[str, str],
    clock: ManualClock,
    metrics: AgentMetrics | None = None,
    series: SeriesRegistry | None = None,
    environ: dict[str, str] | None = None,
    leader: LeaderState | None = None,
    **settings: object,
) -> PrometheusSource:
    fields: dict[str, object] = {"interval": 10.0, "timeout": 2.0, "backfill": 0.0, **settings}
    config = PrometheusSourceConfig(
        url=stub.url + "/",
        queries=[PrometheusQuery(name=n, query=q) for n, q in queries.items()],
        **fields,
    )
    return PrometheusSource(
        config,
        series if series is not None else SeriesRegistry(),
        metrics if metrics is not None else AgentMetrics(),
        clock,
        threading.Event(),
        environ=environ if environ is not None else {},
        leader=leader,
    )


def errors(metrics: AgentMetrics, kind: str) -> float:
    return float(metrics.source_errors.labels("prometheus", kind)._value.get())


def is_ready(source: PrometheusSource) -> bool:
    """Read readiness afresh (keeps the type checker from narrowing ``source.ready`` across calls)."""
    return source.ready


def matrix(labels: dict[str, str], points: list[tuple[float, str]]) -> StubResponse:
    result = [{"metric": labels, "values": [[t, v] for t, v in points]}]
    return StubResponse(200, {"status": "success", "data": {"resultType": "matrix", "result": result}})


def echo_time(req: StubRequest) -> StubResponse:
    """Instant queries answer one series whose value is the evaluation time."""
    t = float(req.params["time"])
    return vector(({"__name__": "up", "job": "x"}, t, repr(t)))


def test_bearer_token_from_the_environment_is_sent(http_stub: HttpStub) -> None:
    source = make_source(
        http_stub,
        {"up": "up"},
        ManualClock(T0),
        environ={"PROM_TOKEN": "s3cret"},
        bearer_token_env="PROM_TOKEN",
    )
    source.start()
    assert source.ready
    assert http_stub.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert http_stub.requests[0].path == "/api/v1/query"  # no double slash from the URL's trailing one
    source.close()


def test_missing_bearer_token_variable_is_a_config_error(http_stub: HttpStub) -> None:
    with pytest.raises(ConfigError, match="PROM_TOKEN is not set"):
        make_source(http_stub, {"up": "up"}, ManualClock(T0), environ={}, bearer_token_env="PROM_TOKEN")


def test_one_round_per_interval_at_the_clock_time(http_stub: HttpStub) -> None:
    http_stub.handler = echo_time
    clock = ManualClock(T0)
    series = SeriesRegistry()
    source = make_source(http_stub, {"up": "up"}, clock, series=series)
    with pytest.raises(RuntimeError, match="before start"):
        source.poll(1.0)
    source.start()
    assert [r.params["time"] for r in http_stub.requests] == [repr(T0)]  # validation

    polled = source.poll(1.0)  # due at once after start (no backfill configured)
    assert polled is not None
    assert polled.source == "prometheus"
    assert polled.samples.timestamps.tolist() == [T0]
    assert series.keys() == [SeriesKey.of("up", {"job": "x"})]
    assert source.poll(3.0) is None
    assert clock.now() == T0 + 3.0
    assert source.poll(100.0) is None  # waits only until due
    assert clock.now() == T0 + 10.0
    polled = source.poll(1.0)
    assert polled is not None
    assert polled.samples.values.tolist() == [T0 + 10.0]

    clock.advance(35.0)  # busy for three intervals: one round now, at the grid point passed last,
    polled = source.poll(1.0)  # then back on the grid (the multiples of the interval)
    assert polled is not None
    assert polled.samples.timestamps.tolist() == [T0 + 40.0]
    assert source.poll(100.0) is None
    assert clock.now() == T0 + 50.0
    assert len(http_stub.requests) == 4
    source.close()


def test_values_labels_and_scalars(http_stub: HttpStub) -> None:
    def answer(req: StubRequest) -> StubResponse:
        t = float(req.params["time"])
        if req.params["query"] == "scalar(up)":
            return StubResponse(
                200, {"status": "success", "data": {"resultType": "scalar", "result": [t, "4"]}}
            )
        return vector(
            ({"__name__": "m", "pod": "a"}, t, "NaN"),
            ({"__name__": "m", "pod": "b"}, t, "+Inf"),
            ({"__name__": "m", "pod": "c"}, t, "-Inf"),
            ({"pod": "d", "zone": "z1"}, t, "1.5e3"),
        )

    http_stub.handler = answer
    series = SeriesRegistry()
    source = make_source(http_stub, {"m": "m", "s": "scalar(up)"}, ManualClock(T0), series=series)
    source.start()
    polled = source.poll(0.0)
    assert polled is not None
    by_key = {
        series.key(sid): v
        for sid, v in zip(polled.samples.series.tolist(), polled.samples.values.tolist(), strict=True)
    }
    assert math.isnan(by_key[SeriesKey.of("m", {"pod": "a"})])
    assert by_key[SeriesKey.of("m", {"pod": "b"})] == math.inf
    assert by_key[SeriesKey.of("m", {"pod": "c"})] == -math.inf
    assert by_key[SeriesKey.of("m", {"pod": "d", "zone": "z1"})] == 1500.0
    assert by_key[SeriesKey("s")] == 4.0
    source.close()


def test_backfill_is_the_first_batch_in_chunks_sorted_by_time(http_stub: HttpStub) -> None:
    def answer(req: StubRequest) -> StubResponse:
        if req.path == "/api/v1/query":
            return echo_time(req)
        start, end, step = (float(req.params[k]) for k in ("start", "end", "step"))
        n = round((end - start) / step) + 1
        points = [(start + i * step, str(start + i * step)) for i in range(n)]
        labels = {"pod": "a"} if req.params["query"] == "a" else {"pod": "b"}
        return matrix(labels, points)

    http_stub.handler = answer
    clock = ManualClock(T0)
    source = make_source(http_stub, {"a": "a", "b": "b"}, clock, interval=1.0, backfill=25_000.5)
    source.start()
    polled = source.poll(0.0)
    assert polled is not None
    ranges = [r.params for r in http_stub.requests if r.path == "/api/v1/query_range"]
    assert [r["query"] for r in ranges] == ["a"] * 3 + ["b"] * 3
    assert {r["step"] for r in ranges} == {"1.0"}
    bounds = [(float(r["start"]), float(r["end"])) for r in ranges[:3]]
    assert bounds[0][0] == T0 - 25_000
    assert bounds[-1][1] == T0  # the grid ends at now, on the round schedule
    assert all(b[0] - a[1] == 1.0 for a, b in itertools.pairwise(bounds))
    assert all(round(hi - lo) + 1 <= MAX_POINTS_PER_RANGE for lo, hi in bounds)
    batch = polled.samples
    assert len(batch) == 2 * 25_001
    assert bool(np.all(np.diff(batch.timestamps) >= 0))
    assert batch.values.tolist() == batch.timestamps.tolist()
    # the next round is one interval after the backfill
    assert source.poll(5.0) is None
    assert clock.now() == T0 + 1.0
    source.close()


def test_every_rejected_query_is_named_at_start(http_stub: HttpStub) -> None:
    def answer(req: StubRequest) -> StubResponse:
        q = req.params["query"]
        if "(" in q and ")" not in q:
            error = f'invalid parameter "query": 1:{len(q) + 1}: parse error: unclosed left parenthesis'
            return StubResponse(400, {"status": "error", "errorType": "bad_data", "error": error})
        return echo_time(req)

    http_stub.handler = answer
    source = make_source(http_stub, {"a": "sum(up", "ok": "up", "b": "rate(x[5m]"}, ManualClock(T0))
    with pytest.raises(SourceStartupError) as info:
        source.start()
    message = str(info.value)
    assert "'a' (sum(up) rejected: invalid parameter \"query\": 1:7: parse error" in message
    assert "'b' (rate(x[5m])" in message
    assert "'ok'" not in message
    assert "(bad_data)" in message
    assert not source.ready
    source.close()


def test_execution_error_of_one_query_skips_it_only(http_stub: HttpStub) -> None:
    def answer(req: StubRequest) -> StubResponse:
        if req.params["query"] == "a + on() b":
            body = {"status": "error", "errorType": "execution", "error": "many-to-many matching not allowed"}
            return StubResponse(422, body)
        return echo_time(req)

    http_stub.handler = answer
    metrics = AgentMetrics()
    source = make_source(http_stub, {"bad": "a + on() b", "up": "up"}, ManualClock(T0), metrics=metrics)
    source.start()
    assert source.ready
    polled = source.poll(0.0)
    assert polled is not None
    assert len(polled.samples) == 1
    assert source.ready
    assert errors(metrics, "query_error") == 2  # at validation and in the round
    source.close()


def test_server_errors_back_off_on_the_clock_then_recover(http_stub: HttpStub) -> None:
    failing = True

    def answer(req: StubRequest) -> StubResponse:
        if failing:
            return StubResponse(503, "service unavailable")
        return echo_time(req)

    http_stub.handler = answer
    clock = ManualClock(T0)
    metrics = AgentMetrics()
    source = make_source(http_stub, {"up": "up"}, clock, metrics=metrics, interval=8.0)
    source.start()
    assert not source.ready
    attempts = [clock.now()]
    for _ in range(60):
        before = len(http_stub.requests)
        assert source.poll(100.0) is None
        if len(http_stub.requests) > before:
            attempts.append(clock.now())
    gaps = np.diff(attempts)
    assert len(gaps) >= 5
    assert gaps[0] < gaps[3], "delays grow"
    assert gaps.max() <= 8.0, "never retried less often than the interval"
    assert errors(metrics, "server_error") == len(attempts)
    assert metrics.source_ready.labels("prometheus")._value.get() == 0

    failing = False
    polled = None
    for _ in range(5):
        polled = source.poll(100.0)
        if polled is not None:
            break
    assert polled is not None
    assert is_ready(source)
    assert metrics.source_ready.labels("prometheus")._value.get() == 1
    source.close()
    assert not is_ready(source)
    source.close()
    assert source.poll(1.0) is None


def test_answers_that_are_not_prometheus_json_are_counted(http_stub: HttpStub) -> None:
    http_stub.handler = lambda _req: StubResponse(200, "<html>login</html>")
    metrics = AgentMetrics()
    source = make_source(http_stub, {"up": "up"}, ManualClock(T0), metrics=metrics)
    source.start()
    assert not source.ready
    assert errors(metrics, "bad_response") == 1
    http_stub.handler = lambda _req: StubResponse(403, "forbidden")
    assert source.poll(100.0) is None
    assert source.poll(100.0) is None
    assert errors(metrics, "http_error") == 1
    source.close()


# ---------------------------------------------------------------- active/standby on the Lease


def ranged(req: StubRequest) -> StubResponse:
    """Instant queries echo their time; range queries answer one point per step, valued its time."""
    if req.path == "/api/v1/query":
        return echo_time(req)
    start, end, step = (float(req.params[k]) for k in ("start", "end", "step"))
    n = round((end - start) / step) + 1
    return matrix({"job": "x"}, [(start + i * step, repr(start + i * step)) for i in range(n)])


def queries(stub: HttpStub, since: int = 0) -> list[tuple[str, dict[str, str]]]:
    return [(r.path.rsplit("/", 1)[1], r.params) for r in stub.requests[since:]]


def gauge(metrics: AgentMetrics) -> float:
    return float(metrics.prometheus_active._value.get())


def test_a_standby_sends_no_query_after_validating_and_is_ready(http_stub: HttpStub) -> None:
    http_stub.handler = ranged
    clock = ManualClock(T0)
    metrics = AgentMetrics()
    lease = StaticLeader(leading=False)
    source = make_source(http_stub, {"up": "up"}, clock, metrics=metrics, leader=lease, backfill=60.0)
    source.start()
    assert [q for q, _ in queries(http_stub)] == ["query"]  # the queries are validated on every replica
    for _ in range(50):
        assert source.poll(1.0) is None
    assert clock.now() == T0 + 50.0  # it waited on the clock, polled nothing
    assert len(http_stub.requests) == 1
    assert source.ready, "standing by is a standby's work: /readyz stays green"
    assert metrics.source_ready.labels("prometheus")._value.get() == 0, "not connected: the gauge says so"
    assert gauge(metrics) == 0
    assert not source.active
    assert source.standing_by
    source.close()
    assert not is_ready(source)


def test_taking_the_lease_over_backfills_up_to_now_then_polls_and_losing_it_stops_at_once(
    http_stub: HttpStub,
) -> None:
    http_stub.handler = ranged
    clock = ManualClock(T0 + 3.0)
    metrics = AgentMetrics()
    lease = StaticLeader(leading=False)
    source = make_source(http_stub, {"up": "up"}, clock, metrics=metrics, leader=lease, backfill=60.0)
    source.start()
    assert source.poll(1.0) is None
    clock.advance(100.0)  # T0 + 104
    lease.leading = True
    before = len(http_stub.requests)
    polled = source.poll(1.0)
    assert polled is not None
    assert gauge(metrics) == 1
    assert source.active
    assert not source.standing_by
    ((kind, params),) = queries(http_stub, before)
    assert kind == "query_range"
    # the grid of 10 s: the last point at or before T0 + 104 is T0 + 100; 60 s of points before it
    assert (float(params["start"]), float(params["end"]), params["step"]) == (T0 + 40, T0 + 100, "10.0")
    assert polled.samples.timestamps.tolist() == [T0 + 40 + 10 * i for i in range(7)]
    assert metrics.prometheus_backfill_seconds._sum.get() == 0.0  # virtual time: no time passed
    assert metrics.prometheus_queries.labels("range")._value.get() == 1
    assert source.poll(60.0) is None  # waits only until the next grid point
    assert clock.now() == T0 + 110
    polled = source.poll(1.0)
    assert polled is not None
    assert polled.samples.timestamps.tolist() == [T0 + 110]

    lease.leading = False
    clock.advance(10.0)
    before = len(http_stub.requests)
    assert source.poll(1.0) is None
    assert len(http_stub.requests) == before, "no query once the Lease is lost"
    assert gauge(metrics) == 0
    assert metrics.source_ready.labels("prometheus")._value.get() == 0
    source.close()


def test_answers_that_arrive_after_the_lease_was_lost_are_dropped(http_stub: HttpStub) -> None:
    lease = StaticLeader(leading=True)
    lose = False

    def answer(req: StubRequest) -> StubResponse:
        if lose:
            lease.leading = False  # the Lease goes while this query is in flight
        return echo_time(req)

    http_stub.handler = answer
    clock = ManualClock(T0)
    source = make_source(http_stub, {"up": "up"}, clock, leader=lease)
    source.start()
    assert source.poll(1.0) is not None
    lose = True
    clock.advance(10.0)
    assert source.poll(1.0) is None, "the round came back after the Lease was lost: not handed out"
    assert len(http_stub.requests) == 3
    assert not source.active


def test_a_new_holder_backfills_only_the_grid_points_it_has_not_handed_out(http_stub: HttpStub) -> None:
    http_stub.handler = ranged
    clock = ManualClock(T0)
    lease = StaticLeader(leading=True)
    source = make_source(http_stub, {"up": "up"}, clock, leader=lease, backfill=120.0)
    source.start()
    first = source.poll(1.0)
    assert first is not None
    assert first.samples.timestamps.tolist() == [T0 - 120 + 10 * i for i in range(13)]
    lease.leading = False
    assert source.poll(1.0) is None
    clock.advance(35.0)  # T0 + 36: standing by for three grid points
    lease.leading = True
    before = len(http_stub.requests)
    gap = source.poll(1.0)
    assert gap is not None
    ((kind, params),) = queries(http_stub, before)
    assert kind == "query_range"
    assert (float(params["start"]), float(params["end"])) == (T0 + 10, T0 + 30)
    assert gap.samples.timestamps.tolist() == [T0 + 10, T0 + 20, T0 + 30]  # nothing learned twice

    lease.leading = False
    assert source.poll(1.0) is None
    clock.advance(1000.0)  # away longer than the backfill: its last 120 s only
    lease.leading = True
    before = len(http_stub.requests)
    assert source.poll(1.0) is not None
    ((_, params),) = queries(http_stub, before)
    assert (float(params["start"]), float(params["end"])) == (T0 + 910, T0 + 1030)


def test_replicas_started_at_different_times_see_the_same_timestamps(http_stub: HttpStub) -> None:
    """Every replica evaluates on the multiples of the interval: a redelivered anomaly has the same
    timestamp on the new holder, so it reopens the same incident id and its idempotency keys."""
    http_stub.handler = ranged
    clock_a, clock_b = ManualClock(T0 + 3.3), ManualClock(T0 + 7.9)
    a = make_source(http_stub, {"up": "up"}, clock_a)
    b = make_source(http_stub, {"up": "up"}, clock_b, backfill=30.0)
    a.start()
    b.start()
    seen_a: list[float] = []
    for _ in range(5):  # round, wait, round, wait, round
        polled = a.poll(100.0)
        if polled is not None:
            seen_a += polled.samples.timestamps.tolist()
    backfill = b.poll(0.0)
    assert backfill is not None
    assert seen_a == [T0, T0 + 10, T0 + 20]
    assert backfill.samples.timestamps.tolist() == [T0 - 30, T0 - 20, T0 - 10, T0]
    assert set(seen_a) & set(backfill.samples.timestamps.tolist()) == {T0}


# ---------------------------------------------------------------- hostile answers


def test_an_answer_nested_too_deeply_is_a_bad_response_not_a_crash(http_stub: HttpStub) -> None:
    deep = '{"status":"success","data":{"resultType":"vector","result":' + "[" * 5000 + "]" * 5000 + "}}"
    http_stub.handler = lambda _req: StubResponse(200, deep)
    metrics = AgentMetrics()
    clock = ManualClock(T0)
    source = make_source(http_stub, {"up": "up"}, clock, metrics=metrics)
    source.start()
    assert not source.ready
    assert errors(metrics, "bad_response") == 1
    http_stub.handler = echo_time
    assert source.poll(100.0) is None  # the backoff's wait
    clock.advance(10.0)
    polled = source.poll(100.0)
    assert polled is not None
    assert is_ready(source)
    source.close()


@pytest.mark.parametrize(
    "metric",
    ['{"job": "\\udcff"}', '{"\\ud800": "x"}', '{"job": 3}', '["job"]'],
)
def test_labels_that_are_no_utf8_strings_are_a_bad_response(http_stub: HttpStub, metric: str) -> None:
    """Python's JSON reads a lone surrogate escape; such a label value could go into no log line or
    Kafka message after it."""
    answer = (
        '{"status":"success","data":{"resultType":"vector","result":'
        f'[{{"metric":{metric},"value":[{T0},"1"]}}]}}}}'
    )
    http_stub.handler = lambda _req: StubResponse(200, answer)
    metrics = AgentMetrics()
    source = make_source(http_stub, {"up": "up"}, ManualClock(T0), metrics=metrics)
    source.start()
    assert not source.ready
    assert errors(metrics, "bad_response") == 1
    source.close()


@pytest.mark.parametrize("length", [True, False])
def test_an_answer_past_max_response_bytes_is_refused_unread(http_stub: HttpStub, length: bool) -> None:
    big = [({"job": f"j{i}", "pad": "x" * 100}, T0, "1") for i in range(100)]  # about 13 KB
    http_stub.handler = lambda _req: replace(vector(*big), length=length)
    metrics = AgentMetrics()
    source = make_source(http_stub, {"up": "up"}, ManualClock(T0), metrics=metrics, max_response_bytes=4096)
    source.start()
    assert not source.ready
    assert errors(metrics, "bad_response") == 1
    source.close()
    roomy = make_source(http_stub, {"up": "up"}, ManualClock(T0), max_response_bytes=1 << 20)
    roomy.start()
    assert is_ready(roomy)
    roomy.close()


@pytest.mark.timeout(30)
def test_an_answer_trickled_a_byte_at_a_time_is_a_timeout_and_one_call_at_most(http_stub: HttpStub) -> None:
    # each byte comes well within the read timeout, so only a bound on the whole call stops it
    http_stub.handler = lambda _req: replace(vector(({"job": "a"}, T0, "1")), trickle=0.05)
    metrics = AgentMetrics()
    clock = ManualClock(T0)
    source = make_source(http_stub, {"up": "up"}, clock, metrics=metrics, timeout=0.5)
    started = time.monotonic()
    source.start()
    assert time.monotonic() - started < 3.0, "given up at the timeout, not when the answer ends"
    assert not source.ready
    assert errors(metrics, "timeout") == 1
    clock.advance(10.0)
    assert source.poll(100.0) is None  # the abandoned call is still being answered: no second one
    assert errors(metrics, "timeout") == 2
    assert len(http_stub.requests) == 1
    source.close()


def test_samples_timed_off_the_queried_time_are_dropped_and_counted(http_stub: HttpStub) -> None:
    http_stub.handler = echo_time
    metrics = AgentMetrics()
    clock = ManualClock(T0)
    source = make_source(http_stub, {"up": "up"}, clock, metrics=metrics)
    source.start()
    http_stub.handler = lambda req: vector(
        ({"job": "now"}, float(req.params["time"]), "1"),
        ({"job": "future"}, 4e12, "1"),
        ({"job": "nan"}, float("nan"), "1"),
    )
    clock.advance(10.0)
    polled = source.poll(100.0)
    assert polled is not None
    assert len(polled.samples) == 1
    assert errors(metrics, "bad_sample") == 2
    source.close()
