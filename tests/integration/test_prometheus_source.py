"""The Prometheus source against the real Prometheus server (Debian's 2.42) and real HTTP failures."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.clock import ManualClock, WallClock
from agent.config import PrometheusQuery, PrometheusSourceConfig, load_config
from agent.engine import Engine
from agent.leader import StaticLeader
from agent.metrics import AgentMetrics
from agent.sinks import CollectingSink
from agent.sources.base import SourceStartupError
from agent.sources.prometheus import PrometheusSource
from detectors import DetectorBank, DetectorSpec, SampleBatch, SeriesKey, SeriesRegistry
from detectors.threshold import ThresholdDetector
from tests.servers.common import eventually, free_port
from tests.servers.prometheus import Exporter, HttpStub, PrometheusServer, StubResponse, openmetrics

pytestmark = pytest.mark.integration

Factory = Callable[..., PrometheusServer]


def make_source(
    url: str,
    queries: dict[str, str],
    clock: WallClock | ManualClock | None = None,
    metrics: AgentMetrics | None = None,
    series: SeriesRegistry | None = None,
    **overrides: float,
) -> PrometheusSource:
    settings: dict[str, float] = {"interval": 0.5, "timeout": 2.0, "backfill": 30.0, **overrides}
    config = PrometheusSourceConfig(
        url=url,
        queries=[PrometheusQuery(name=n, query=q) for n, q in queries.items()],
        **settings,
    )
    return PrometheusSource(
        config,
        series if series is not None else SeriesRegistry(),
        metrics if metrics is not None else AgentMetrics(),
        clock if clock is not None else WallClock(),
        threading.Event(),
        environ={},
    )


def errors(metrics: AgentMetrics, kind: str) -> float:
    return float(metrics.source_errors.labels("prometheus", kind)._value.get())


def ready_gauge(metrics: AgentMetrics) -> float:
    return float(metrics.source_ready.labels("prometheus")._value.get())


def is_ready(source: PrometheusSource) -> bool:
    """Read readiness afresh (keeps the type checker from narrowing ``source.ready`` across calls)."""
    return source.ready


def test_scraped_gauge_above_threshold_becomes_a_signal(
    prometheus_factory: Factory, exporter: Exporter
) -> None:
    load = exporter.gauge("app_load", "load of a pod", ["pod"])
    load.labels("web-1").set(1.0)
    load.labels("web-2").set(2.0)
    prom = prometheus_factory(targets=[exporter.target])

    series = SeriesRegistry()
    metrics = AgentMetrics()
    source = make_source(prom.url, {"load": 'app_load{job="exporter"}'}, metrics=metrics, series=series)
    detector = ThresholdDetector.from_params({"rules": [{"metric": "load", "above": 5.0}]}, series)
    sink = CollectingSink()
    stop = threading.Event()
    engine = Engine(
        [source], DetectorBank(series, [DetectorSpec(detector)]), [sink], WallClock(), metrics, stop
    )
    engine.start()
    assert source.ready
    thread = threading.Thread(target=engine.run, name="engine", daemon=True)
    thread.start()
    try:
        # The first scraped sample is queryable ~5.5 s after Prometheus starts (target sync).
        eventually(
            lambda: engine.samples_processed >= 4, timeout=20, what="scraped samples through the engine"
        )
        assert sink.signals == []
        load.labels("web-2").set(9.5)
        eventually(lambda: bool(sink.signals), timeout=15, what="a threshold signal")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()

    signal = sink.signals[0]
    assert signal.series == SeriesKey.of(
        "load", {"instance": exporter.target, "job": "exporter", "pod": "web-2"}
    )
    assert signal.value == 9.5
    assert signal.detector == "threshold"
    assert {s.series.label_dict["pod"] for s in sink.signals} == {"web-2"}
    assert abs(signal.timestamp - time.time()) < 30
    assert (
        series.lookup(SeriesKey.of("load", {"instance": exporter.target, "job": "exporter", "pod": "web-1"}))
        is not None
    )
    assert metrics.samples_in.labels("prometheus")._value.get() == engine.samples_processed
    assert ready_gauge(metrics) == 0  # the engine closed the source on the way out


def test_query_prometheus_rejects_fails_start(prometheus_factory: Factory) -> None:
    prom = prometheus_factory()
    source = make_source(prom.url, {"ok": "vector(1)", "broken_rate": "rate(http_requests_total[5m]"})
    try:
        with pytest.raises(SourceStartupError) as info:
            source.start()
    finally:
        source.close()
    message = str(info.value)
    assert "'broken_rate'" in message
    assert "rate(http_requests_total[5m]" in message
    assert "parse error: unclosed left parenthesis" in message  # Prometheus's own words
    assert "'ok'" not in message
    assert not source.ready


def test_backfill_returns_history_as_first_batch(prometheus_factory: Factory) -> None:
    end = float(int(time.time()) // 15 * 15)  # on the source's grid: the multiples of the interval
    stamps = [end - 15 * (239 - j) for j in range(240)]  # 60 minutes at 15 s, ending now
    b_values = [0.5 * j for j in range(240)]
    b_values[10], b_values[11], b_values[12] = math.nan, math.inf, -math.inf
    history = openmetrics("hist_load", {"pod": "a"}, [(t, float(j)) for j, t in enumerate(stamps)])
    history += openmetrics("hist_other", {"pod": "b"}, list(zip(stamps, b_values, strict=True)))
    prom = prometheus_factory(history=history)

    clock = ManualClock(start=end)
    series = SeriesRegistry()
    source = make_source(
        prom.url,
        {"load": "hist_load", "other": "hist_other"},
        clock=clock,
        series=series,
        interval=15.0,
        backfill=3600.0,
    )
    source.start()
    assert source.ready
    polled = source.poll(0.0)
    assert polled is not None
    batch = polled.samples
    assert len(batch) == 480
    assert bool(np.all(np.diff(batch.timestamps) >= 0)), "backfill is sorted by time"

    a = series.lookup(SeriesKey.of("load", {"pod": "a"}))
    b = series.lookup(SeriesKey.of("other", {"pod": "b"}))
    assert a is not None
    assert b is not None
    mine_a = batch.series == a
    mine_b = batch.series == b
    assert batch.timestamps[mine_a].tolist() == stamps
    assert batch.values[mine_a].tolist() == [float(j) for j in range(240)]
    assert batch.timestamps[mine_b].tolist() == stamps
    got_b = batch.values[mine_b]
    assert math.isnan(got_b[10])
    assert got_b[11] == math.inf
    assert got_b[12] == -math.inf
    assert np.delete(got_b, [10, 11, 12]).tolist() == np.delete(np.array(b_values), [10, 11, 12]).tolist()

    # Then one round per interval, evaluated at the clock's time.
    assert source.poll(5.0) is None
    assert clock.now() == end + 5.0
    assert source.poll(60.0) is None  # waits only until due
    assert clock.now() == end + 15.0
    polled = source.poll(60.0)
    assert polled is not None
    assert sorted(polled.samples.values.tolist()) == [239.0 * 0.5, 239.0]
    assert polled.samples.timestamps.tolist() == [end + 15.0, end + 15.0]
    source.close()


def test_prometheus_down_at_start_then_up(prometheus_factory: Factory) -> None:
    port = free_port()
    metrics = AgentMetrics()
    source = make_source(f"http://127.0.0.1:{port}", {"load": "hist_load"}, metrics=metrics, backfill=30.0)
    started = time.monotonic()
    source.start()
    assert time.monotonic() - started < 2.0
    assert not source.ready
    assert ready_gauge(metrics) == 0
    assert errors(metrics, "connection") == 1
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert source.poll(0.2) is None
    assert errors(metrics, "connection") >= 2
    assert not source.ready

    end = float(int(time.time()))
    history = openmetrics("hist_load", {"pod": "a"}, [(end - 15 * k, 7.0) for k in range(8)])
    prometheus_factory(history=history, port=port)
    batches: list[SampleBatch] = []
    deadline = time.monotonic() + 15.0
    while len(batches) < 2 and time.monotonic() < deadline:
        polled = source.poll(0.2)
        if polled is not None:
            batches.append(polled.samples)
    assert len(batches) == 2, "backfill, then a round"
    assert is_ready(source)
    assert ready_gauge(metrics) == 1
    assert len(batches[0]) == 61  # every 0.5 s over the last 30 s: all within the 5 min lookback
    assert set(batches[0].values.tolist()) == {7.0}
    assert batches[1].values.tolist() == [7.0]
    source.close()


def test_rejected_query_raises_at_first_contact_after_downtime(prometheus_factory: Factory) -> None:
    port = free_port()
    source = make_source(f"http://127.0.0.1:{port}", {"bad": "sum(up"})
    source.start()
    assert not source.ready
    prometheus_factory(port=port)
    deadline = time.monotonic() + 10.0
    with pytest.raises(SourceStartupError, match=r"'bad' \(sum\(up\).*parse error"):  # noqa: PT012
        while time.monotonic() < deadline:
            source.poll(0.2)
    source.close()


def test_server_answering_503_is_not_ready_and_never_raises(http_stub: HttpStub) -> None:
    body = {"status": "error", "errorType": "unavailable", "error": "overloaded"}
    http_stub.handler = lambda _req: StubResponse(503, body)
    metrics = AgentMetrics()
    source = make_source(http_stub.url, {"load": "up"}, metrics=metrics)
    source.start()
    assert not source.ready
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert source.poll(0.2) is None
    assert not source.ready
    assert ready_gauge(metrics) == 0
    assert errors(metrics, "server_error") >= 2
    # one request per attempt: no hidden retries inside the HTTP client
    assert len(http_stub.requests) == errors(metrics, "server_error")
    source.close()


def test_server_slower_than_timeout_is_not_ready_and_never_raises(http_stub: HttpStub) -> None:
    http_stub.handler = lambda _req: StubResponse(200, {"status": "success"}, delay=30.0)
    metrics = AgentMetrics()
    source = make_source(http_stub.url, {"load": "up"}, metrics=metrics, timeout=0.5)
    started = time.monotonic()
    source.start()
    assert time.monotonic() - started < 2.0
    assert not source.ready
    assert errors(metrics, "timeout") == 1
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert source.poll(0.2) is None
    assert errors(metrics, "timeout") >= 2
    assert not source.ready
    source.close()


def test_shipped_queries_give_one_series_per_deployment(prometheus_factory: Factory) -> None:
    """k8s/agent-config.yaml's PromQL on cluster-shaped metrics (cAdvisor, kube-state-metrics, an
    instrumented app): Prometheus accepts every query, and each gives the figure its name says per
    (namespace, deployment), with the deployment taken from the pod's name."""
    end = float(int(time.time()) // 15 * 15)  # on the source's grid of 15 s
    stamps = [end - 15 * (119 - j) for j in range(120)]  # 30 minutes at 15 s, ending now
    pods = {"checkout-7d9f8b6c5d-x2k4q": 1.0, "checkout-7d9f8b6c5d-9zz8m": 3.0, "db-0": 2.0}

    def counter(name: str, labels: dict[str, str], per_second: float) -> str:
        return openmetrics(name, labels, [(t, per_second * (t - stamps[0])) for t in stamps])

    def gauge(name: str, labels: dict[str, str], value: float) -> str:
        return openmetrics(name, labels, [(t, value) for t in stamps])

    parts: dict[str, list[str]] = {}  # OpenMetrics wants a metric's series together, one TYPE line

    def add(text: str) -> None:
        head, _, body = text.partition("\n")
        parts.setdefault(head, []).append(body)

    mib = 1024.0 * 1024.0
    for pod, scale in pods.items():
        base = {"namespace": "shop", "pod": pod}
        add(counter("http_requests_total", {**base, "code": "200"}, 10.0 * scale))
        add(counter("http_requests_total", {**base, "code": "503"}, 0.5 * scale))
        # every request between 0.1 s and 0.5 s
        for le, share in (("0.1", 0.0), ("0.5", 1.0), ("+Inf", 1.0)):
            add(counter("http_request_duration_seconds_bucket", {**base, "le": le}, 10.5 * scale * share))
        container = {**base, "container": "app"}
        add(counter("container_cpu_usage_seconds_total", container, 0.25 * scale))
        add(counter("container_cpu_usage_seconds_total", {**base, "container": "POD"}, 0.01))
        add(counter("container_cpu_usage_seconds_total", {**base, "container": ""}, 0.3 * scale))
        add(gauge("kube_pod_container_resource_limits", {**container, "resource": "cpu"}, 1.0))
        add(gauge("kube_pod_container_resource_limits", {**container, "resource": "memory"}, 512 * mib))
        add(gauge("container_memory_working_set_bytes", container, 100 * mib * scale))
        add(gauge("container_memory_working_set_bytes", {**base, "container": ""}, 400 * mib * scale))
        add(gauge("model_accuracy", {**base, "model": "ranker"}, 0.9 + 0.01 * scale))
    history = "".join(head + "\n" + "".join(bodies) for head, bodies in parts.items())
    prom = prometheus_factory(history=history)

    shipped = load_config(Path(__file__).resolve().parents[2] / "k8s" / "agent-config.yaml")
    assert shipped.sources.prometheus is not None
    config = shipped.sources.prometheus.model_copy(update={"url": prom.url, "backfill": 600.0})
    series = SeriesRegistry()
    source = PrometheusSource(
        config, series, AgentMetrics(), ManualClock(start=end), threading.Event(), environ={}
    )
    try:
        source.start()  # every query accepted
        polled = source.poll(0.0)
    finally:
        source.close()
    assert polled is not None
    batch = polled.samples
    last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    at_end = batch.timestamps == end
    for sid, v in zip(batch.series[at_end].tolist(), batch.values[at_end].tolist(), strict=True):
        key = series.key(sid)
        last[(key.name, key.labels)] = v
    checkout = (("deployment", "checkout"), ("namespace", "shop"))
    stateful = (("namespace", "shop"),)  # db-0 belongs to no Deployment: no deployment label
    expected = {
        ("http_requests_error_ratio", checkout): 0.5 / 10.5,
        ("http_requests_error_ratio", stateful): 0.5 / 10.5,
        ("http_requests_per_second", checkout): 10.5 * 4.0,
        ("http_requests_per_second", stateful): 10.5 * 2.0,
        ("http_request_duration_p99_seconds", checkout): 0.1 + 0.99 * 0.4,
        ("http_request_duration_p99_seconds", stateful): 0.1 + 0.99 * 0.4,
        ("container_cpu_usage_ratio", checkout): 0.25 * 4.0 / 2.0,  # the POD and "" series left out
        ("container_cpu_usage_ratio", stateful): 0.25 * 2.0 / 1.0,
        ("container_memory_working_set_ratio", checkout): 300.0 / 512.0,  # the fullest pod
        ("container_memory_working_set_ratio", stateful): 200.0 / 512.0,
        ("model_accuracy", (("deployment", "checkout"), ("model", "ranker"), ("namespace", "shop"))): 0.92,
        ("model_accuracy", (("model", "ranker"), ("namespace", "shop"))): 0.92,
    }
    assert set(last) == set(expected)
    for where, value in expected.items():
        assert last[where] == pytest.approx(value, rel=1e-6), where


def test_a_lease_handover_loses_no_grid_point_and_changes_no_sample(prometheus_factory: Factory) -> None:
    """Two replicas' sources on one Prometheus, the Lease moving from one to the other with a gap
    in between: what the successor hands out (its backfill, then its rounds) covers the gap and
    agrees, timestamp for timestamp and value for value, with one uninterrupted source."""
    end = float(int(time.time()) // 10 * 10)
    start = end - 600
    stamps = [start + 5 * k for k in range(121)]  # scraped every 5 s; the sources' grid is 10 s
    history = openmetrics("hist_load", {"pod": "a"}, [(t, math.sin(t / 37.0) + t / 1e9) for t in stamps])
    prom = prometheus_factory(history=history)

    def replica(clock: ManualClock, lease: StaticLeader | None) -> tuple[PrometheusSource, SeriesRegistry]:
        series = SeriesRegistry()
        config = PrometheusSourceConfig(
            url=prom.url,
            queries=[PrometheusQuery(name="load", query="hist_load")],
            interval=10.0,
            timeout=5.0,
            backfill=120.0,
        )
        return PrometheusSource(
            config, series, AgentMetrics(), clock, threading.Event(), environ={}, leader=lease
        ), series

    def run(source: PrometheusSource, clock: ManualClock, until: float) -> list[tuple[float, float]]:
        got: list[tuple[float, float]] = []
        while clock.now() <= until:
            polled = source.poll(1.0)
            if polled is not None:
                got += zip(polled.samples.timestamps.tolist(), polled.samples.values.tolist(), strict=True)
        return got

    clock_a, clock_b, clock_u = (
        ManualClock(start + 300.5),
        ManualClock(start + 300.5),
        ManualClock(start + 300.5),
    )
    lease_a, lease_b = StaticLeader(leading=True), StaticLeader(leading=False)
    a, _ = replica(clock_a, lease_a)
    b, _ = replica(clock_b, lease_b)
    uninterrupted, _ = replica(clock_u, None)
    for s in (a, b, uninterrupted):
        s.start()
    reference = dict(run(uninterrupted, clock_u, end))
    from_a = run(a, clock_a, start + 450)  # A holds the Lease until start + 450, then dies
    assert run(b, clock_b, start + 480) == []  # B stands by; nobody holds the Lease after 450
    lease_b.leading = True
    from_b = run(b, clock_b, end)
    for s in (a, b, uninterrupted):
        s.close()

    assert max(t for t, _ in from_a) == start + 450
    assert min(t for t, _ in from_b) == start + 480 - 120, "the successor backfills its 120 s"
    handed_out = dict(from_a) | dict(from_b)
    assert sorted(handed_out) == sorted(reference), "no grid point lost across the handover"
    assert all(dict(from_b)[t] == reference[t] for t, _ in from_b)
    assert all(dict(from_a)[t] == reference[t] for t, _ in from_a)
    assert len(from_b) == len(set(dict(from_b))), "the successor hands out each point once"
