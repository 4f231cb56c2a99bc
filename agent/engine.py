"""The engine: pull batches from sources, score them in the DetectorBank, deliver signals, commit.

One thread, one loop. A batch is committed back to its source only after every sink has
delivered its signals, so a crash anywhere before the commit means the batch is read again
(at-least-once). A sink that fails is retried with backoff; the batch stays uncommitted until
it succeeds or the agent is stopped.

The series table is bounded: every ``evict_every`` (on the injected clock) the series no
sample reached for ``series_idle`` are evicted, their detector state forgotten and their ids
freed for new series, and the sources drop what they cached about them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence

from agent.backoff import Backoff
from agent.clock import Clock
from agent.metrics import AgentMetrics
from agent.sinks import SignalSink, SinkError
from agent.sources.base import Polled, Source
from detectors import DetectorBank, Signal

log = logging.getLogger("aiops.engine")

#: Dropped samples of new series are logged at most this often (seconds of the clock); counted always.
DROP_WARNING_EVERY = 60.0


class Engine:
    """Moves batches from sources through the detector bank to the sinks."""

    def __init__(
        self,
        sources: Sequence[Source],
        bank: DetectorBank,
        sinks: Sequence[SignalSink],
        clock: Clock,
        metrics: AgentMetrics,
        stop: threading.Event | None = None,
        poll_timeout: float = 0.5,
        series_idle: float | None = None,
        evict_every: float = 60.0,
    ) -> None:
        self.sources = list(sources)
        self.bank = bank
        self.sinks = list(sinks)
        self.clock = clock
        self.metrics = metrics
        self.stop = stop if stop is not None else threading.Event()
        self.poll_timeout = poll_timeout
        self.last_turn = clock.now()
        self.samples_processed = 0
        self._dropped_seen = 0
        self._dropped_warned = 0
        self._drop_warned = -math.inf
        self._refused_seen: dict[str, int] = {}
        self.series_idle = series_idle
        self.evict_every = evict_every
        self._next_evict = clock.now() + evict_every
        if series_idle is not None:
            stuck = bank.can_forget()
            if stuck:
                msg = f"engine.series_idle needs detectors that can forget a series; these cannot: {stuck}"
                raise ValueError(msg)

    @property
    def ready(self) -> bool:
        """True when every source is ready."""
        return all(s.ready for s in self.sources)

    def start(self) -> None:
        """Start every source; raises :class:`~agent.sources.SourceStartupError` on a fatal problem."""
        for source in self.sources:
            source.start()

    def run_once(self) -> int:
        """Poll each source once and process what came; return the number of samples processed."""
        n = 0
        if self.series_idle is not None and self.clock.now() >= self._next_evict:
            self.evict()  # before the poll: what it brings finds the room eviction made
        if not self.sources:
            self.clock.wait(self.poll_timeout, self.stop)
        per_source = self.poll_timeout / max(1, len(self.sources))
        for source in self.sources:
            if self.stop.is_set():
                break
            polled = source.poll(per_source)
            if polled is not None:
                n += self.process(source, polled)
        self.last_turn = self.clock.now()
        self.metrics.loop_last_turn.set(self.last_turn)
        return n

    def evict(self) -> int:
        """Evict the series idle for ``series_idle``; return how many were."""
        now = self.clock.now()
        self._next_evict = now + self.evict_every
        assert self.series_idle is not None  # only called with eviction on
        evicted = self.bank.series.evict_idle(now - self.series_idle)
        if evicted.size == 0:
            return 0
        self.bank.forget(evicted)
        for source in self.sources:
            forget = getattr(source, "forget_series", None)
            if forget is not None:
                forget()
        self.metrics.series_evicted.inc(int(evicted.size))
        self.metrics.series_active.set(len(self.bank.series))
        log.info("evicted %d series idle for %.0f s", evicted.size, self.series_idle)
        return int(evicted.size)

    def process(self, source: Source, polled: Polled) -> int:
        """Score one batch, deliver its signals and commit it; return its size."""
        started = self.clock.now()
        self.bank.series.touch(polled.samples.series, started)
        signals = self.bank.process(polled.samples)
        self._account(polled, signals)
        if not self._deliver(signals):
            return 0  # stopped before delivery: leave uncommitted, it will be read again
        source.commit(polled)
        self.metrics.commits.labels(polled.source).inc()
        self.metrics.loop_latency.observe(max(0.0, self.clock.now() - started))
        self.samples_processed += len(polled.samples)
        return len(polled.samples)

    def _account(self, polled: Polled, signals: Sequence[Signal]) -> None:
        m = self.metrics
        m.batches.labels(polled.source).inc()
        m.samples_in.labels(polled.source).inc(len(polled.samples))
        m.series_active.set(len(self.bank.series))
        dropped = self.bank.series.dropped
        if dropped > self._dropped_seen:
            m.series_dropped.inc(dropped - self._dropped_seen)
            now = self.clock.now()
            if now >= self._drop_warned + DROP_WARNING_EVERY:  # said once a minute, counted always
                log.warning(
                    "%d samples of new series dropped since the last warning (series table at %d of %d, "
                    "or a source or metric at its limit: aiops_series_refused_total says which)",
                    dropped - self._dropped_warned,
                    len(self.bank.series),
                    self.bank.series.limit,
                )
                self._drop_warned, self._dropped_warned = now, dropped
            self._dropped_seen = dropped
        for owner, refused in self.bank.series.refused_by_owner.items():
            seen = self._refused_seen.get(owner, 0)
            if refused > seen:
                m.series_refused.labels(owner).inc(refused - seen)
                self._refused_seen[owner] = refused
        for s in signals:
            m.signals_out.labels(s.kind.value, s.detector).inc()

    def _deliver(self, signals: Sequence[Signal]) -> bool:
        if not signals:
            return True
        backoff = Backoff(initial=0.2, maximum=10.0)
        pending = list(self.sinks)
        while pending:
            failed = []
            for sink in pending:
                try:
                    sink.emit(signals)
                    sink.flush()
                except SinkError as exc:
                    self.metrics.sink_errors.labels(sink.name).inc()
                    log.warning("sink %s failed, will retry: %s", sink.name, exc)
                    failed.append(sink)
            pending = failed
            if pending and self.clock.wait(backoff.next_delay(), self.stop):
                return False
        return True

    def run(self) -> None:
        """Loop until :attr:`stop` is set; then close sources and sinks."""
        try:
            while not self.stop.is_set():
                self.run_once()
        finally:
            self.close()

    def close(self) -> None:
        """Close every source and sink, logging (not raising) errors on the way out."""
        closables: list[Source | SignalSink] = [*self.sources, *self.sinks]
        for closable in closables:
            try:
                closable.close()
            except Exception:
                log.exception("error while closing %s", closable.name)
