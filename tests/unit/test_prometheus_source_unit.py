"""The Prometheus source's own logic on virtual time, against a local HTTP stub of the query API."""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest

from agent.clock import ManualClock
from agent.config import ConfigError, PrometheusQuery, PrometheusSourceConfig
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

    clock.advance(35.0)  # busy for three intervals: one round now, then back on the schedule's phase
    polled = source.poll(1.0)
    assert polled is not None
    assert polled.samples.timestamps.tolist() == [T0 + 45.0]
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
