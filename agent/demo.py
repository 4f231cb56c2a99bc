"""The built-in demo: the engine over generated samples, printing the signals it raises.

Self-contained (no Kafka, no Prometheus): three services' latency and error ratio over two
hours at 15 s resolution, with a latency spike on one and an error-ratio step on another.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

import numpy as np

from agent.clock import ManualClock
from agent.engine import Engine
from agent.metrics import AgentMetrics
from agent.sinks import CollectingSink
from agent.sources.memory import MemorySource
from detectors import DetectorBank, DetectorSpec, SampleBatch, SeriesKey, SeriesRegistry, Signal
from detectors.threshold import ThresholdDetector

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STEP = 15.0
SERVICES = ("checkout", "cart", "search")

DEMO_RULES = {
    "rules": [
        {"metric": "http_request_duration_p99_seconds", "above": 0.8, "max_rate": 0.02},
        {"metric": "http_requests_error_ratio", "above": 0.05},
    ]
}


def generate(series: SeriesRegistry, hours: float = 2.0, seed: int = 7) -> Iterator[SampleBatch]:
    """One batch per scrape: every series' sample at that instant."""
    rng = np.random.default_rng(seed)
    keys = [
        SeriesKey.of(m, {"namespace": "shop", "deployment": svc})
        for m in ("http_request_duration_p99_seconds", "http_requests_error_ratio")
        for svc in SERVICES
    ]
    ids = np.array([series.id_for(k) for k in keys], dtype=np.int64)
    steps = int(hours * 3600 / STEP)
    for i in range(steps):
        t = START + i * STEP
        daily = 0.5 + 0.5 * np.sin(2 * np.pi * (t % 86400) / 86400)
        latency = 0.25 + 0.1 * daily + rng.normal(0, 0.01, len(SERVICES))
        errors = np.clip(0.01 + rng.normal(0, 0.002, len(SERVICES)), 0, 1)
        if 180 <= i < 186:  # cart: a latency spike for 90 s
            latency[1] += 1.2
        if i >= 300:  # checkout: a bad rollout raises the error ratio for good
            errors[0] += 0.12
        values = np.concatenate([latency, errors])
        yield SampleBatch.from_arrays(ids, np.full(ids.shape, t), values)


def run_demo(out: TextIO, hours: float = 2.0, seed: int = 7) -> int:
    """Run the engine over the generated samples and print each signal; return the signal count."""
    clock = ManualClock(START)
    series = SeriesRegistry(limit=1000)
    bank = DetectorBank(series, [DetectorSpec(ThresholdDetector.from_params(DEMO_RULES, series))])
    sink = CollectingSink()
    source = MemorySource(generate(series, hours, seed), name="generated")
    engine = Engine([source], bank, [sink], clock, AgentMetrics(), poll_timeout=STEP)
    while not source.exhausted:
        engine.run_once()
    print(f"processed {engine.samples_processed} samples of {len(series)} series", file=out)
    print(
        f"{len(sink.signals)} signals, grouped into episodes (consecutive signals of one series):", file=out
    )
    print(f"{'from':>8} {'to':>8} {'signals':>7} {'peak':>8}  series", file=out)
    for first, last, count, peak in _episodes(sink.signals):
        print(
            f"{_hhmm(first.timestamp)} {_hhmm(last.timestamp)} {count:>7} {peak:>8.3f}  {first.series}",
            file=out,
        )
    return len(sink.signals)


def _hhmm(ts: float) -> str:
    minutes = int(ts - START) // 60
    return f"{minutes // 60:>5d}:{minutes % 60:02d}"


def _episodes(signals: list[Signal]) -> list[tuple[Signal, Signal, int, float]]:
    """Runs of signals on one series with no gap longer than one scrape."""
    open_runs: dict[SeriesKey, list[Signal]] = {}
    done: list[list[Signal]] = []
    for s in signals:
        run = open_runs.get(s.series)
        if run is not None and s.timestamp - run[-1].timestamp > STEP:
            done.append(run)
            run = None
        if run is None:
            open_runs[s.series] = run = []
        run.append(s)
    done.extend(open_runs.values())
    done.sort(key=lambda r: r[0].timestamp)
    return [(r[0], r[-1], len(r), max(x.value for x in r)) for r in done]
