"""The Kafka signal sink: every signal as JSON on the ``aiops.signals`` topic."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agent.kafka_client import KafkaDeliveryError, ResilientProducer
from agent.metrics import AgentMetrics
from agent.sinks import SinkError, encode_signal
from detectors import Signal


class KafkaSignalSink:
    """Publishes each signal as JSON to a topic, keyed by ``key`` (default: its series, so one
    series stays ordered; agent/routing.py keys by target)."""

    name = "kafka"

    def __init__(
        self,
        producer: ResilientProducer,
        topic: str,
        flush_timeout: float = 10.0,
        key: Callable[[Signal], bytes] | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.flush_timeout = flush_timeout
        self.key = key if key is not None else (lambda s: str(s.series).encode())
        self.metrics = metrics

    def emit(self, signals: Sequence[Signal]) -> None:
        """Hand every signal to the producer."""
        try:
            for s in signals:
                self.producer.send(self.topic, encode_signal(s), key=self.key(s))
        except KafkaDeliveryError as exc:
            raise SinkError(f"publishing to {self.topic}: {exc}") from exc
        if self.metrics is not None:
            self.metrics.signals_forwarded.inc(len(signals))

    def flush(self) -> None:
        """Wait until the broker acknowledged every signal."""
        try:
            self.producer.flush(self.flush_timeout)
        except KafkaDeliveryError as exc:
            raise SinkError(f"publishing to {self.topic}: {exc}") from exc

    def close(self) -> None:
        """Close the producer."""
        self.producer.close()
