"""The engine loop: signals delivered before commit, sink failures retried, stop honoured."""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence

import pytest

from agent.app import Agent
from agent.clock import ManualClock
from agent.config import AgentConfig
from agent.demo import run_demo
from agent.engine import Engine
from agent.http import HttpServer
from agent.logs import JsonFormatter, setup_logging
from agent.metrics import AgentMetrics
from agent.sinks import CollectingSink, SignalSink, SinkError
from agent.sources.memory import MemorySource
from detectors import DetectorBank, DetectorSpec, SampleBatch, SeriesKey, SeriesRegistry, Signal
from detectors.threshold import ThresholdDetector

KEY = SeriesKey.of("latency", {"svc": "a"})


def make_engine(
    sinks: Sequence[SignalSink], clock: ManualClock | None = None, batches: int = 3
) -> tuple[Engine, MemorySource, SeriesRegistry]:
    reg = SeriesRegistry()
    sid = reg.id_for(KEY)
    det = ThresholdDetector.from_params({"rules": [{"metric": "latency", "above": 1.0}]}, reg)
    source = MemorySource(
        [SampleBatch.from_arrays([sid, sid], [i, i + 0.5], [0.5, 2.0]) for i in range(batches)]
    )
    engine = Engine(
        [source], DetectorBank(reg, [DetectorSpec(det)]), sinks, clock or ManualClock(), AgentMetrics()
    )
    return engine, source, reg


class FlakySink:
    """Fails the first ``failures`` flushes."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.delivered: list[Signal] = []
        self._pending: list[Signal] = []

    def emit(self, signals: Sequence[Signal]) -> None:
        self._pending = list(signals)

    def flush(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("broker unavailable")
        self.delivered.extend(self._pending)

    def close(self) -> None:
        pass


def test_signals_then_commit() -> None:
    sink = CollectingSink()
    engine, source, _ = make_engine([sink])
    while not source.exhausted:
        engine.run_once()
    assert [s.timestamp for s in sink.signals] == [0.5, 1.5, 2.5]
    assert source.committed == 6
    assert engine.samples_processed == 6
    m = engine.metrics.registry
    assert m.get_sample_value("aiops_samples_in_total", {"source": "memory"}) == 6
    assert m.get_sample_value("aiops_signals_total", {"kind": "threshold", "detector": "threshold"}) == 3
    assert m.get_sample_value("aiops_commits_total", {"source": "memory"}) == 3


def test_a_failing_sink_is_retried_before_the_commit() -> None:
    clock = ManualClock(1000.0)
    sink = FlakySink(failures=3)
    engine, source, _ = make_engine([sink], clock, batches=1)
    engine.run_once()
    assert len(sink.delivered) == 1
    assert source.committed == 2
    assert clock.now() > 1000.0  # it backed off on the injected clock, not in wall time
    assert engine.metrics.registry.get_sample_value("aiops_sink_errors_total", {"sink": "flaky"}) == 3


def test_stop_during_sink_failure_leaves_the_batch_uncommitted() -> None:
    stop = threading.Event()
    sink = FlakySink(failures=10**9)
    engine, source, _ = make_engine([sink], batches=1)
    engine.stop = stop

    class StoppingClock(ManualClock):
        def wait(self, seconds: float, stop_event: threading.Event | None = None) -> bool:
            stop.set()
            return True

    engine.clock = StoppingClock()
    engine.run_once()
    assert source.committed == 0
    assert sink.delivered == []


def test_series_dropped_and_active_are_exported() -> None:
    reg = SeriesRegistry(limit=1)
    ids = [reg.id_for(SeriesKey.of("m", {"i": str(i)})) for i in range(3)]
    source = MemorySource([SampleBatch.from_arrays(ids, [1, 1, 1], [1, 2, 3])])
    engine = Engine([source], DetectorBank(reg, []), [], ManualClock(), AgentMetrics())
    engine.run_once()
    assert engine.metrics.registry.get_sample_value("aiops_series_dropped_total") == 2
    assert engine.metrics.registry.get_sample_value("aiops_series_active") == 1


def test_demo_prints_both_injected_incidents() -> None:
    out = io.StringIO()
    count = run_demo(out)
    text = out.getvalue()
    assert count > 0
    assert 'http_request_duration_p99_seconds{deployment="cart",namespace="shop"}' in text
    assert 'http_requests_error_ratio{deployment="checkout",namespace="shop"}' in text
    assert "search" not in text.split("series\n", 1)[1]  # the healthy service raises nothing


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_readiness_and_metrics_over_http() -> None:
    clock = ManualClock(5000.0)
    agent = Agent(AgentConfig.model_validate({"http": {"host": "127.0.0.1", "port": 0}}), clock, environ={})
    port = agent.start_http()
    try:
        base = f"http://127.0.0.1:{port}"
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/readyz")[0] == 200
        status, body = _get(base + "/metrics")
        assert status == 200
        assert "aiops_loop_latency_seconds_bucket" in body
        clock.advance(61)  # the loop has not turned for longer than stall_after
        status, body = _get(base + "/healthz")
        assert status == 503
        assert "has not turned for 61 s" in body
        assert _get(base + "/nope")[0] == 404
    finally:
        assert agent.http is not None
        agent.http.close()


def test_http_post_routes() -> None:
    from agent.http import Response

    seen: list[bytes] = []

    def route(body: bytes) -> Response:
        seen.append(body)
        return Response(202, b"ok")

    server = HttpServer(
        "127.0.0.1", 0, AgentMetrics().registry, lambda: (True, ""), lambda: (True, ""), {"/hook": route}
    )
    server.start()
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{server.port}/hook", data=b'{"a":1}', method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 202
        assert seen == [b'{"a":1}']
    finally:
        server.close()


def test_json_logs_are_one_object_per_line() -> None:
    stream = io.StringIO()
    setup_logging("json", "INFO", stream)
    logging.getLogger("aiops.test").warning("hello %s", "world", extra={"signal": {"score": 1.0}})
    record = json.loads(stream.getvalue().strip())
    assert record["message"] == "hello world"
    assert record["level"] == "warning"
    assert record["signal"] == {"score": 1.0}
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)
    setup_logging("human", "INFO", io.StringIO())


def test_dropped_series_are_counted_always_and_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    engine, _, reg = make_engine([CollectingSink()], clock, batches=3)
    reg.limit = 1  # KEY holds the only place: every new series is refused, as at a full table
    caplog.set_level(logging.WARNING, logger="aiops.engine")
    for minute in (0.0, 0.5, 1.0):
        clock.advance(minute * 60.0 - clock.now())
        reg.id_for(SeriesKey.of("junk", {"i": str(minute)}))  # what a source does with a new series
        engine.run_once()
    warnings = [r.getMessage() for r in caplog.records if "new series dropped" in r.getMessage()]
    assert warnings == [
        "1 samples of new series dropped since the last warning (series table at 1 of 1, or a source or "
        "metric at its limit: aiops_series_refused_total says which)",
        "2 samples of new series dropped since the last warning (series table at 1 of 1, or a source or "
        "metric at its limit: aiops_series_refused_total says which)",
    ]
    assert engine.metrics.series_dropped._value.get() == 3


def test_human_logs_show_a_label_value_with_control_characters_on_one_escaped_line() -> None:
    # a label value from a metric, forging a record of its own after a newline, and moving the cursor
    forged = "web\n2026-12-07 10:00:00,000 INFO    aiops.executor: approved by admin\r\x1b[2K\u2028x"
    stream = io.StringIO()
    setup_logging("human", "INFO", stream)
    logging.getLogger("aiops.test").warning("signal on %s", forged)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("aiops.test").exception("failed on %s", "a\nb")
    setup_logging("human", "INFO", io.StringIO())
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(
        "WARNING aiops.test: signal on web\\n2026-12-07 10:00:00,000 INFO    aiops.executor: approved by "
        "admin\\r\\x1b[2K\\u2028x"
    )
    assert lines[1].endswith("ERROR   aiops.test: failed on a\\nb")
    assert lines[2] == "Traceback (most recent call last):", "a traceback keeps its own lines"
    assert lines[-1] == "ValueError: boom"


def test_an_agent_without_sources_is_ready_and_stops_on_request() -> None:
    agent = Agent(AgentConfig(), ManualClock(), environ={})
    assert agent.ready() == (True, "all sources ready")
    agent.stop.set()
    agent.run()  # returns at once
    with pytest.raises(ValueError, match="backwards"):
        ManualClock().advance(-1)


def test_the_agents_own_namespace_is_protected() -> None:
    config = AgentConfig.model_validate({"http": {"host": "127.0.0.1", "port": 0}})
    agent = Agent(config, ManualClock(), environ={"POD_NAMESPACE": "aiops"})
    protected = agent.playbooks.engine.defaults.protected_namespaces
    assert "aiops" in protected
    assert "kube-system" in protected
    assert "aiops" not in config.playbooks.guardrails.protected_namespaces  # the config is not changed
