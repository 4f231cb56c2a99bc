"""Kafka clients for the agent: keyword arguments from the config, and a producer that survives.

kafka-python facts this module is built on (3.0):

- a client's constructor bootstraps (fetches metadata and the broker version) before it
  returns, for up to ``bootstrap_timeout_ms``, and raises ``KafkaTimeoutError`` when no broker
  answers (3.0 has no ``NoBrokersAvailable``); a consumer whose constructor failed leaves its IO
  thread running unless its client is closed, which :func:`create_consumer` does;
- ``KafkaProducer.flush()`` returns without raising when records failed: only their futures
  say so, so :class:`ResilientProducer` checks every future of the records sent since the last
  flush;
- an idempotent producer whose broker restarted (losing its state) fails with
  ``UnknownProducerIdError``, then goes into a fatal state where every later send fails too;
  the only cure is a new producer, so :class:`ResilientProducer` replaces its producer after
  any failed delivery;
- ``KafkaProducer.close(timeout)`` flushes first and raises ``KafkaTimeoutError`` when records
  are stuck, leaving the producer open (its sender thread running, and ``__del__`` raising the
  same error later): :func:`close_producer` aborts the stuck records and closes it for good.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Mapping
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from agent.backoff import Backoff
from agent.clock import Clock
from agent.config import KafkaConnection

log = logging.getLogger("aiops.kafka")

#: Whether the ``crc32c`` C extension is installed. Without it kafka-python computes record
#: CRC-32C checksums in pure Python, which costs more than everything else on the consume path
#: for large (batched) messages.
FAST_CRC32C = importlib.util.find_spec("crc32c") is not None

#: Longest a client constructor waits for a broker before giving up (it is retried later).
BOOTSTRAP_TIMEOUT = 5.0


class KafkaDeliveryError(RuntimeError):
    """Records could not be delivered to Kafka; the caller should send them again."""


def _base_kwargs(connection: KafkaConnection, environ: Mapping[str, str] | None) -> dict[str, Any]:
    kwargs = connection.client_kwargs(None if environ is None else dict(environ))
    request_timeout_ms = int(kwargs["request_timeout_ms"])
    kwargs["bootstrap_timeout_ms"] = min(request_timeout_ms, int(BOOTSTRAP_TIMEOUT * 1000))
    return kwargs


def consumer_kwargs(
    connection: KafkaConnection, environ: Mapping[str, str] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments for a :class:`kafka.KafkaConsumer`, with ``overrides`` applied last.

    Record CRCs are verified when the ``crc32c`` C extension is installed; without it the
    check is skipped (TCP and TLS still protect the bytes in transit, and brokers verify CRCs
    when records are produced), because the pure-Python checksum would cap consumption at a
    few tens of thousands of samples per second.
    """
    kwargs = _base_kwargs(connection, environ)
    kwargs["check_crcs"] = FAST_CRC32C
    kwargs.update(overrides)
    return kwargs


def producer_kwargs(
    connection: KafkaConnection, environ: Mapping[str, str] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments for a :class:`kafka.KafkaProducer`: acks from all in-sync replicas."""
    kwargs = _base_kwargs(connection, environ)
    request_timeout_ms = int(kwargs["request_timeout_ms"])
    kwargs.update(
        acks="all",
        # send() waits this long for metadata or buffer space before it raises
        max_block_ms=min(request_timeout_ms, 10_000),
        # records that cannot be delivered within this time fail (and are sent again by us)
        delivery_timeout_ms=max(2 * request_timeout_ms, 30_000),
        linger_ms=5,
    )
    kwargs.update(overrides)
    return kwargs


class _Consumer(KafkaConsumer):  # type: ignore[misc]  # kafka-python is untyped
    """A KafkaConsumer that releases its IO thread when its constructor fails."""

    def __init__(self, *topics: str, **configs: Any) -> None:
        try:
            super().__init__(*topics, **configs)
        except BaseException:
            client = getattr(self, "_client", None)
            if client is not None:
                try:
                    client.close()
                except Exception:  # the original error is the one to report
                    log.debug("closing a half-built consumer failed", exc_info=True)
            raise


def create_consumer(*topics: str, **configs: Any) -> KafkaConsumer:
    """A :class:`kafka.KafkaConsumer` that leaks nothing when the broker cannot be reached.

    Raises kafka-python's ``KafkaError`` (``KafkaTimeoutError`` when no broker answered within
    ``bootstrap_timeout_ms``).
    """
    return _Consumer(*topics, **configs)


def close_producer(producer: KafkaProducer, timeout: float) -> None:
    """Close ``producer``, waiting up to ``timeout`` s for queued records and dropping them after that."""
    try:
        producer.close(timeout=timeout)
        return
    except KafkaError as exc:
        log.debug("kafka producer did not flush within %.1f s (%s); aborting its records", timeout, exc)
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()  # fails every incomplete batch, then the sender thread ends
        sender.join(max(1.0, timeout))
    try:
        producer.close(timeout=0)
    except KafkaError:
        log.warning("kafka producer could not be closed cleanly", exc_info=True)


class ResilientProducer:
    """A KafkaProducer that is created lazily, retried while the broker is down, and replaced after errors.

    ``send`` queues a record; ``flush`` waits until every record sent since the previous flush
    is acknowledged, or raises :class:`KafkaDeliveryError` when any of them failed (the caller
    then sends them again: delivery is at least once). After a failure the underlying producer
    is closed and a new one is created on the next send, which clears the states an idempotent
    producer cannot leave by itself (``UnknownProducerIdError`` after a broker restart,
    ``OutOfOrderSequenceNumberError``, a ``KafkaTimeoutError`` with records stuck in its buffer).

    Creating the producer is retried with exponential backoff (waiting on ``clock``, waking when
    ``stop`` is set) for at most ``connect_timeout`` seconds per call before ``send`` gives up
    with :class:`KafkaDeliveryError`. Thread-safe.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        clock: Clock,
        stop: threading.Event | None = None,
        name: str = "producer",
        environ: Mapping[str, str] | None = None,
        connect_timeout: float | None = None,
        **overrides: Any,
    ) -> None:
        self.connection = connection
        self.clock = clock
        self.stop = stop if stop is not None else threading.Event()
        self.name = name
        self.connect_timeout = connection.request_timeout if connect_timeout is None else connect_timeout
        self._kwargs = producer_kwargs(connection, environ, **overrides)
        self._kwargs["client_id"] = f"{self._kwargs['client_id']}-{name}"
        self._lock = threading.RLock()
        self._producer: KafkaProducer | None = None
        self._futures: list[Any] = []
        self._failures: list[BaseException] = []
        self._backoff = Backoff(initial=0.1, maximum=5.0)
        self._closed = False
        #: How many KafkaProducers were created (more than one: it was replaced after errors).
        self.created = 0
        #: Records reported as not delivered by :meth:`flush`.
        self.failed_records = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        """Whether a producer exists right now (it may still fail on the next send)."""
        return self._producer is not None

    def _ensure(self) -> KafkaProducer:
        """The current producer, creating one (with retries and backoff) if there is none."""
        if self._producer is not None:
            return self._producer
        if self._closed:
            raise KafkaDeliveryError(f"producer {self.name} is closed")
        deadline = self.clock.now() + self.connect_timeout
        while True:
            try:
                producer = KafkaProducer(**self._kwargs)
            except KafkaError as exc:
                delay = self._backoff.next_delay()
                remaining = deadline - self.clock.now()
                log.warning(
                    "kafka producer %s: cannot connect (%s); retrying in %.1f s", self.name, exc, delay
                )
                if remaining <= 0 or self.clock.wait(min(delay, remaining), self.stop) or self._closed:
                    msg = f"producer {self.name}: cannot connect to Kafka: {exc}"
                    raise KafkaDeliveryError(msg) from exc
                continue
            self._backoff.reset()
            self._producer = producer
            self.created += 1
            if self.created > 1:
                log.info("kafka producer %s: created a new producer (#%d)", self.name, self.created)
            return producer

    def _discard(self) -> None:
        """Close the current producer without waiting; the next send creates a new one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                close_producer(producer, 0)
            except Exception:  # it is being thrown away
                log.debug("closing a failed producer raised", exc_info=True)

    # ------------------------------------------------------------------ sending
    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record (to ``partition``, else where the key hashes to); a failure is reported
        by the next :meth:`flush`.

        Raises :class:`KafkaDeliveryError` only when no producer could be created.
        """
        with self._lock:
            producer = self._ensure()
            try:
                future = producer.send(topic, value=value, key=key, headers=headers, partition=partition)
            except KafkaError as exc:
                # a producer in a fatal state, metadata unavailable within max_block_ms, ...
                self._failures.append(exc)
                self.failed_records += 1
                self._discard()
                return
            self._futures.append(future)

    def partitions_for(self, topic: str) -> list[int]:
        """The partitions of ``topic`` (sorted); :class:`KafkaDeliveryError` when they cannot be learned."""
        with self._lock:
            producer = self._ensure()
            try:
                return sorted(producer.partitions_for(topic))
            except KafkaError as exc:
                self._discard()
                raise KafkaDeliveryError(f"producer {self.name}: partitions of {topic}: {exc}") from exc

    def flush(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every record sent since the last flush.

        Raises :class:`KafkaDeliveryError` when any of them failed or is still unacknowledged;
        either way the slate is clean afterwards (the next flush covers later records only).
        """
        with self._lock:
            futures, self._futures = self._futures, []
            failures, self._failures = self._failures, []
            producer = self._producer
            if producer is not None and futures:
                try:
                    producer.flush(timeout=timeout)
                except KafkaError as exc:
                    failures.append(exc)
            for future in futures:
                if not future.is_done:
                    failures.append(KafkaDeliveryError(f"not acknowledged within {timeout} s"))
                elif future.failed():
                    failures.append(future.exception)
            if not failures:
                return
            self.failed_records += len(failures)
            self._discard()
            first = failures[0]
            kinds = sorted({type(f).__name__ for f in failures})
            msg = (
                f"producer {self.name}: {len(failures)} record(s) of {len(futures)} not delivered "
                f"({', '.join(kinds)}): {first}"
            )
            raise KafkaDeliveryError(msg) from first

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds) and close; safe to call twice."""
        with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
            self._futures = []
            self._failures = []
        if producer is not None:
            try:
                close_producer(producer, timeout)
            except Exception:  # closing is best effort
                log.warning("kafka producer %s: error while closing", self.name, exc_info=True)


class RebalanceEvents(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """Notes a consumer's rebalance callbacks; the consumer's own thread acts on them.

    kafka-python 3 calls these on its IO loop, which also sends the heartbeats: the work they
    cause (checkpoints, restores, hand-overs) is done by the consumer's own thread before it
    takes a record of the new assignment, never here.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, set[TopicPartition]]] = []

    def _note(self, what: str, partitions: Any) -> None:
        with self.lock:
            self.events.append((what, set(partitions)))

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._note("revoked", revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._note("assigned", assigned)

    def on_partitions_lost(self, lost: Any) -> None:
        self._note("lost", lost)

    def take(self, *, settled: bool = True) -> list[tuple[str, set[TopicPartition]]]:
        """The events noted so far; with ``settled``, none while a revocation awaits its assignment
        (an eager rebalance revokes every partition, then assigns: a partition kept is not moved)."""
        with self.lock:
            if settled and self.events and self.events[-1][0] == "revoked":
                return []
            events, self.events = self.events, []
        return events


def owned_after(
    owned: set[TopicPartition], events: list[tuple[str, set[TopicPartition]]]
) -> set[TopicPartition]:
    """The partitions owned once ``events`` (of :meth:`RebalanceEvents.take`) have happened to ``owned``."""
    owned = set(owned)
    for what, partitions in events:
        if what == "assigned":
            owned |= partitions
        else:
            owned -= partitions
    return owned
