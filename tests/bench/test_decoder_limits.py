"""What the decode limits cost: decoder samples/s with the default DecodeLimits and timestamp window
against the same decoder with every limit out of reach and no window.

One in-process SampleDecoder per run (no broker, no worker: the decoder alone, where the checks
are), over four layouts of 2,000 series: adapter samples one per message, batches of 500 adapter
samples, columnar series (50 series x 10 points per message) and OTLP gauges (500 points per
message, three attributes each). Each layout is decoded once to register its series, then timed
warm, in this process's CPU time (the machine is shared; wall time varies twice as much as the
difference measured); the best of five alternating rounds counts. The limits must keep at least
95 % of the rate (the issue's budget). Results: ``bench-results/decoder_limits.json``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.sources.kafka_formats import DecodeLimits, SampleDecoder
from detectors import SeriesRegistry

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

RESULTS = Path("bench-results") / "decoder_limits.json"
SERIES = 2_000
ROUNDS = 5
NOW = float(int(time.time()))
OFF = DecodeLimits(
    max_message_bytes=1 << 62,
    max_depth=1 << 30,
    max_labels=1 << 30,
    max_label_length=1 << 62,
    max_decoded_bytes=1 << 62,
    max_future=None,
    max_past=None,
)


def _labels(i: int) -> dict[str, str]:
    return {"namespace": "prod", "pod": f"api-{i}", "container": "app"}


def adapter_single() -> list[bytes]:
    return [
        orjson.dumps(
            {
                "name": "cpu",
                "labels": {"__name__": "cpu", **_labels(i)},
                "value": str(i % 7),
                "timestamp": NOW - 60 + k,
            }
        )
        for k in range(10)
        for i in range(SERIES)
    ]


def adapter_batched() -> list[bytes]:
    rows = [
        {
            "name": "cpu",
            "labels": {"__name__": "cpu", **_labels(i)},
            "value": i % 7,
            "timestamp": NOW - 60 + k,
        }
        for k in range(50)
        for i in range(SERIES)
    ]
    return [orjson.dumps(rows[j : j + 500]) for j in range(0, len(rows), 500)]


def columnar() -> list[bytes]:
    series = [
        {
            "name": "cpu",
            "labels": _labels(i),
            "timestamps": [NOW - 60 + k for k in range(10)],
            "values": list(range(10)),
        }
        for i in range(SERIES)
    ]
    return [orjson.dumps(series[j : j + 50]) for j in range(0, len(series), 50)] * 25


def otlp() -> list[bytes]:
    messages = []
    for k in range(25):
        for j in range(0, SERIES, 500):
            points = [
                {
                    "timeUnixNano": str(int((NOW - 60 + k) * 1e9)),
                    "asDouble": float(i % 7),
                    "attributes": [{"key": n, "value": {"stringValue": v}} for n, v in _labels(i).items()],
                }
                for i in range(j, j + 500)
            ]
            doc = {
                "resourceMetrics": [
                    {"scopeMetrics": [{"metrics": [{"name": "cpu", "gauge": {"dataPoints": points}}]}]}
                ]
            }
            messages.append(orjson.dumps(doc))
    return messages


LAYOUTS: dict[str, Callable[[], list[bytes]]] = {
    "adapter_single": adapter_single,
    "adapter_batched": adapter_batched,
    "columnar": columnar,
    "otlp": otlp,
}


def rate(messages: list[bytes], limits: DecodeLimits, now: float | None) -> float:
    decoder = SampleDecoder(SeriesRegistry(limit=10 * SERIES), limits=limits)
    decoder.decode(messages, now)  # register every series
    chunks = [messages[i : i + 2000] for i in range(0, len(messages), 2000)]
    started = time.process_time()
    samples = 0
    for chunk in chunks:  # as a source does: one poll at a time
        batch, errors = decoder.decode(chunk, now)
        assert not errors
        samples += len(batch)
    return samples / (time.process_time() - started)


def test_the_limits_cost_at_most_five_percent() -> None:
    results: dict[str, Any] = {}
    for name, build in LAYOUTS.items():
        messages = build()
        on: list[float] = []
        off: list[float] = []
        for _ in range(ROUNDS):
            off.append(rate(messages, OFF, None))
            on.append(rate(messages, DecodeLimits(), NOW))
        results[name] = {
            "messages": len(messages),
            "samples_per_s_limits_off": round(max(off)),
            "samples_per_s_limits_on": round(max(on)),
            "ratio": round(max(on) / max(off), 4),
        }
        print(f"{name:16} off {max(off):>12,.0f}/s  on {max(on):>12,.0f}/s  ratio {max(on) / max(off):.3f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bench": "decoder_limits",
                "python": platform.python_version(),
                "series": SERIES,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    for name, r in results.items():
        assert r["ratio"] >= 0.95, f"{name}: the limits cost {1 - r['ratio']:.1%} of the decoder's rate"
