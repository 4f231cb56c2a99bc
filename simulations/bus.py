"""Metrics through a real broker: the replay publishes each step, the agent's Kafka source reads it.

With ``aiops replay --kafka BOOTSTRAP`` the workload's samples of each step go to a topic as one
message in the batched JSON form (an array of prometheus-kafka-adapter samples), and the agent
reads them with its own :class:`~agent.sources.kafka.KafkaSource` in a consumer group, committing
after processing, exactly as the daemon does. The replay waits for each step's samples before it
goes on (lock step), so virtual time stays deterministic and the actions match the in-process
replay's.
"""

from __future__ import annotations

import threading
import time
import uuid

import orjson

from agent.clock import WallClock
from agent.config import DecodeLimitsConfig, KafkaConnection, KafkaSourceConfig
from agent.metrics import AgentMetrics
from agent.sources.base import Polled
from agent.sources.kafka import KafkaSource
from detectors import SampleBatch, SeriesRegistry

#: How long one step's samples may take to come back before the replay gives up.
STEP_TIMEOUT = 60.0


class BusError(RuntimeError):
    """The broker did not deliver a step's samples in time."""


class KafkaBus:
    """Publishes batches to a fresh topic and reads them back through the agent's Kafka source."""

    def __init__(self, bootstrap: str, series: SeriesRegistry, topic: str | None = None) -> None:
        from kafka import KafkaProducer  # noqa: PLC0415 - only with --kafka

        self.series = series
        self.topic = topic or f"aiops-replay-{uuid.uuid4().hex[:12]}"
        self.stop = threading.Event()
        connection = KafkaConnection(bootstrap_servers=bootstrap, client_id="aiops-replay")
        self.producer = KafkaProducer(**connection.client_kwargs({}), acks="all", linger_ms=0)
        config = KafkaSourceConfig(
            topics=[self.topic],
            group_id=f"{self.topic}-agent",
            format="batch",
            dead_letter_topic=f"{self.topic}.dlq",
            session_timeout=6.0,
            heartbeat_interval=1.0,
            poll_timeout=0.2,
            # lock step: each step waits for its own samples, and a broker that holds a waiting
            # fetch to its end (tansu does) would add that hold to every step
            fetch_max_wait=0.01,
            # replayed samples carry the scenario's virtual time, not the wall clock's the source runs on
            limits=DecodeLimitsConfig(max_future=None, max_past=None),
        )
        # The source's own waits (backoff, pauses) run on a wall clock: the broker lives in real time.
        self.source = KafkaSource(
            config, connection, series, AgentMetrics(), WallClock(), self.stop, environ={}
        )
        self.source.start()
        self.sent = 0
        self.received = 0

    def encode(self, batch: SampleBatch) -> bytes:
        """The batch as a JSON array of adapter samples (timestamps in seconds, exact floats)."""
        keys = [self.series.key(int(sid)) for sid in batch.series]
        rows = [
            {"name": key.name, "labels": key.label_dict, "timestamp": float(ts), "value": float(v)}
            for key, ts, v in zip(keys, batch.timestamps.tolist(), batch.values.tolist(), strict=True)
        ]
        return orjson.dumps(rows)

    def roundtrip(self, batch: SampleBatch) -> list[tuple[SampleBatch, Polled]]:
        """Publish ``batch`` and read back as many samples; returns the polled pieces to commit."""
        if len(batch) == 0:
            return []
        self.producer.send(self.topic, self.encode(batch))
        self.producer.flush()
        self.sent += len(batch)
        got: list[tuple[SampleBatch, Polled]] = []
        deadline = time.monotonic() + STEP_TIMEOUT
        while self.received < self.sent:
            if time.monotonic() > deadline:
                missing = self.sent - self.received
                msg = f"kafka: {missing} samples of a step did not come back from {self.topic}"
                raise BusError(msg)
            polled = self.source.poll(0.2)
            if polled is None:
                continue
            self.received += len(polled.samples)
            got.append((polled.samples, polled))
        return got

    def commit(self, polled: Polled) -> None:
        """Commit after processing, as the engine does."""
        self.source.commit(polled)

    def close(self) -> None:
        """Close the consumer and the producer."""
        self.stop.set()
        self.source.close()
        self.producer.close(timeout=5)
