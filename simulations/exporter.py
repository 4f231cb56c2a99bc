"""``--prometheus-port``: the simulated metrics at /metrics, as a Prometheus scrape target.

Each step's values replace the previous ones (gauges with the series' labels), so a Prometheus
scraping the replay sees the services as it would see real ones; with ``--speed`` the replay runs
slowly enough for dashboards to follow.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from detectors import SampleBatch, SeriesRegistry


class _Latest(Collector):
    def __init__(self, series: SeriesRegistry) -> None:
        self.series = series
        self.values: dict[int, float] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.lock:
            latest = sorted(self.values.items())
        families: dict[tuple[str, tuple[str, ...]], GaugeMetricFamily] = {}
        for sid, value in latest:
            key = self.series.key(sid)
            names = tuple(name for name, _ in key.labels)
            family = families.get((key.name, names))
            if family is None:
                family = GaugeMetricFamily(key.name, f"simulated {key.name}", labels=list(names))
                families[(key.name, names)] = family
            family.add_metric([v for _, v in key.labels], value)
        yield from families.values()


class MetricsExporter:
    """Serves the newest value of every simulated series on ``port`` (0: any free port)."""

    def __init__(self, series: SeriesRegistry, port: int, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry()
        self._latest = _Latest(series)
        self.registry.register(self._latest)
        self.server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = int(self.server.server_port)

    def update(self, batch: SampleBatch) -> None:
        """Take the batch's values as the current ones."""
        with self._latest.lock:
            for sid, value in zip(batch.series.tolist(), batch.values.tolist(), strict=True):
                self._latest.values[int(sid)] = float(value)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
