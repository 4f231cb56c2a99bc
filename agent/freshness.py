"""Freshness carried with the signals: samples counted where a series is detected, judged where
its incidents are decided.

With decisions taken from the signals topic (agent/routing.py) a series is detected on the
replica that owns its metrics partition, and its incidents are decided on the replica that owns
its target's signals partition. The playbook engine's verification (``verify.samples`` fresh
samples under the bar) and its staleness judgement need the series' freshness
(:class:`~detectors.freshness.Seen`) on the deciding replica.

Publishing, on every replica (:class:`FreshnessForwarder`): for each series that signalled in
the last ``window`` (at most ``max_series``, the most recently signalled), a small record goes
to the signals topic under the key of that series' signals, so it lands on the partition of the
incidents it is evidence for. It holds the series, its newest sample's time, its sample count,
its interval, the publishing process (the *source*) and the publisher's ``interval`` (*every*).
Each series (and key) is looked at every ``interval``, and a record sent when its count changed
since the last one.

Reading, on the deciding side (:class:`FreshnessView`, the engine's freshness): the decision
consumer hands it the records and the signals it takes. Per series it answers from this
replica's own detector bank when this replica detects the series (its newest sample is no older
than the newest record's), else from the newest record. Its count is its own, and grows only by
samples one source counted between two consecutive observations of it:

- a change of source (another replica detects the series now, the answer moved between the
  local bank and the records, a replica restarted) or a count that went backwards starts a new
  baseline: that observation adds nothing;
- an observation whose predecessor is older than the series' newest signal starts a new
  baseline too: the samples between may be the signalled one, or come before it.

Both rules can only under-count fresh samples (a verification waits an observation longer),
never over-count them, and counts of two sources are never added up. A series the view can no
longer answer for (the bank forgot it, no record) loses its count, as the engine counts a
series never seen from 0. Staleness of a series known from records is judged on the larger of
its interval and the publisher's ``every``: the evidence cannot be fresher than its forwarding.
Until the first record of a signalled series arrives (it follows the signal by up to
``interval``), its signal is the evidence: a sample at the signal's time, none counted, judged
stale on ``interval``; so an incident that acts at once is not called stale for the record's
delay.

A replica publishes only for the series it signalled itself: a series whose metrics partition
moved to a replica where it has not signalled is not published until it signals there.

Records are versioned JSON (``{"format": "aiops.freshness", "version": 1, ...}``; a signal
has no ``format``); a record of another format or version, or damaged, is counted and skipped by
the decision consumer with a warning naming where it was.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agent.clock import Clock
from agent.config import FreshnessConfig
from agent.kafka_client import KafkaDeliveryError, ResilientProducer
from agent.leader import default_identity
from agent.metrics import AgentMetrics
from detectors import SeriesKey, Signal
from detectors.freshness import Seen, SeriesFreshness
from detectors.signal import SignalKind

log = logging.getLogger("aiops.freshness")

FORMAT = "aiops.freshness"
VERSION = 1
#: Longest source id accepted.
MAX_SOURCE = 256


class FreshnessRecordError(ValueError):
    """A freshness record that cannot be used; the message says what is wrong."""


def source_id(environ: Mapping[str, str] | None = None) -> str:
    """This process's name as a source of records: the replica's identity and a random suffix, so
    a restarted replica counts as a new source."""
    return f"{default_identity(environ)}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class FreshnessRecord:
    """One series' freshness as its detecting replica saw it."""

    source: str
    series: SeriesKey
    seen: Seen
    every: float

    def encode(self) -> bytes:
        """The wire form on the signals topic."""
        return orjson.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "source": self.source,
                "metric": self.series.name,
                "labels": self.series.label_dict,
                "last": self.seen.last,
                "count": self.seen.count,
                "interval": self.seen.interval,
                "every": self.every,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FreshnessRecord:
        """Check and build a record from its decoded JSON; :class:`FreshnessRecordError` names the
        field that is wrong."""
        if data.get("format") != FORMAT:
            msg = f"format {data.get('format')!r} is not {FORMAT!r}"
            raise FreshnessRecordError(msg)
        if data.get("version") != VERSION:
            version = data.get("version")
            msg = f"freshness record version {version!r} is not supported (this agent reads {VERSION})"
            raise FreshnessRecordError(msg)
        source, metric, labels = data.get("source"), data.get("metric"), data.get("labels")
        if not isinstance(source, str) or not 0 < len(source) <= MAX_SOURCE:
            msg = f"field 'source' must be a string of 1 to {MAX_SOURCE} characters"
            raise FreshnessRecordError(msg)
        if not isinstance(metric, str) or not metric:
            raise FreshnessRecordError("field 'metric' must be a non-empty string")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise FreshnessRecordError("field 'labels' must be an object of strings")
        count = data.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            msg = f"field 'count' must be a non-negative integer, got {count!r}"
            raise FreshnessRecordError(msg)
        numbers = {}
        for name in ("last", "interval", "every"):
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                msg = f"field {name!r} must be a finite number, got {value!r}"
                raise FreshnessRecordError(msg)
            numbers[name] = float(value)
        if numbers["interval"] < 0 or numbers["every"] <= 0:
            msg = "field 'interval' must be >= 0 and 'every' > 0"
            raise FreshnessRecordError(msg)
        seen = Seen(numbers["last"], count, numbers["interval"])
        return cls(source, SeriesKey.of(metric, labels), seen, numbers["every"])


def is_record(data: object) -> bool:
    """Whether decoded JSON from the signals topic claims to be a freshness record (it has a
    ``format``; a signal has none)."""
    return isinstance(data, dict) and "format" in data


@dataclass(slots=True)
class _Published:
    """What was last published for one series under one key."""

    signalled: float  # clock time of its newest signal
    checked: float = -math.inf  # clock time it was last looked at (a record sent, or nothing new)
    count: int = -1  # the count in it


class FreshnessForwarder:
    """Publishes the freshness of recently signalled series, under their signals' keys.

    A signal sink (:meth:`emit` notes which series signalled and their keys) with a thread of
    its own that publishes what is due (:meth:`publish`) on the injected clock."""

    name = "freshness"

    def __init__(
        self,
        config: FreshnessConfig,
        producer: ResilientProducer,
        topic: str,
        key: Callable[[Signal], bytes],
        local: SeriesFreshness,
        clock: Clock,
        metrics: AgentMetrics,
        source: str,
    ) -> None:
        self.config = config
        self.producer = producer
        self.topic = topic
        self.key = key
        self.local = local
        self.clock = clock
        self.metrics = metrics
        self.source = source
        self._lock = threading.Lock()
        self._tracked: OrderedDict[tuple[SeriesKey, bytes], _Published] = OrderedDict()
        self._thread: threading.Thread | None = None
        #: Records published.
        self.published = 0

    def emit(self, signals: Sequence[Signal]) -> None:
        """Note the series of ``signals`` (not alerts) and their keys: their freshness is due."""
        now = self.clock.now()
        with self._lock:
            for s in signals:
                if s.kind is SignalKind.ALERT:
                    continue
                track = (s.series, self.key(s))
                entry = self._tracked.get(track)
                if entry is None:
                    self._tracked[track] = _Published(now)
                else:
                    entry.signalled = now
                    self._tracked.move_to_end(track)
            while len(self._tracked) > self.config.max_series:
                self._tracked.popitem(last=False)  # the least recently signalled

    def flush(self) -> None:
        """Nothing is buffered here: records go out in :meth:`publish`."""

    def close(self) -> None:
        """Nothing to release here: the producer is closed when :meth:`run` ends."""

    def tracked(self) -> int:
        """How many series (and keys) are published for."""
        with self._lock:
            return len(self._tracked)

    def publish(self) -> int:
        """Publish the records that are due and wait for the broker; return how many went out.
        A delivery failure is logged and the records are due again."""
        now = self.clock.now()
        interval = self.config.interval
        sent: list[_Published] = []
        with self._lock:
            horizon = now - self.config.window
            while self._tracked and next(iter(self._tracked.values())).signalled < horizon:
                self._tracked.popitem(last=False)
            due = [(t, e) for t, e in self._tracked.items() if now - e.checked >= interval]
        try:
            for (series, key), entry in due:
                entry.checked = now  # nothing new: looked at again an interval later
                seen = self.local.seen(series)
                if seen is None or seen.count == entry.count:
                    continue
                record = FreshnessRecord(self.source, series, seen, interval)
                self.producer.send(self.topic, record.encode(), key=key)
                entry.count = seen.count
                sent.append(entry)
            if sent:
                self.producer.flush(max(interval, 1.0))
        except KafkaDeliveryError as exc:
            for entry in sent:
                entry.checked, entry.count = -math.inf, -1
            self.metrics.sink_errors.labels(self.name).inc()
            log.warning("freshness: publishing %d record(s) to %s failed: %s", len(sent), self.topic, exc)
            return 0
        self.published += len(sent)
        self.metrics.freshness_published.inc(len(sent))
        return len(sent)

    def run(self, stop: threading.Event) -> None:
        """Publish what is due about once a second (or every ``interval`` if shorter) until
        ``stop``; then close the producer."""
        every = min(1.0, self.config.interval)
        try:
            while not stop.is_set():
                try:
                    self.publish()
                except Exception:  # a bug here must not end forwarding for good
                    log.exception("freshness: publishing failed")
                self.clock.wait(every, stop)
        finally:
            self.producer.close()

    def start(self, stop: threading.Event) -> None:
        """Run :meth:`run` in a daemon thread."""
        self._thread = threading.Thread(target=self.run, args=(stop,), name="aiops-freshness", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the thread after ``stop`` was set."""
        if self._thread is not None:
            self._thread.join(timeout)


@dataclass(slots=True)
class _Series:
    """The view's knowledge of one series."""

    touched: float  # clock time of the last record, signal or question about it
    record: FreshnessRecord | None = None  # the newest record
    signal: float = -math.inf  # the newest signal's timestamp
    source: str | None = None  # the source of the last observation
    count: int = 0  # that source's count at it
    last: float = -math.inf  # its newest sample's time
    total: int = 0  # the view's own count


class FreshnessView:
    """The deciding side's freshness: this replica's bank for the series it detects, the records
    of the detecting replicas for the others (see the module docstring for how counts go on)."""

    def __init__(
        self,
        config: FreshnessConfig,
        local: SeriesFreshness | None,
        source: str,
        clock: Clock,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.config = config
        self.local = local
        self.source = source
        """The source id of this replica's own records: the local bank's counts are the same."""
        self.clock = clock
        self.metrics = metrics
        self._lock = threading.Lock()
        self._series: OrderedDict[SeriesKey, _Series] = OrderedDict()
        #: Records taken in.
        self.received = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._series)

    def _entry(self, key: SeriesKey, now: float) -> _Series:
        entry = self._series.get(key)
        if entry is None:
            entry = self._series[key] = _Series(now)
            while len(self._series) > self.config.max_series:
                self._series.popitem(last=False)  # the least recently used
        else:
            entry.touched = now
            self._series.move_to_end(key)
        return entry

    def _expire(self, now: float) -> None:
        horizon = now - self.config.window
        while self._series and next(iter(self._series.values())).touched < horizon:
            self._series.popitem(last=False)

    def signalled(self, signals: Iterable[Signal]) -> None:
        """Note the timestamps of ``signals`` (before the engine takes them): samples counted
        before a series' newest signal are never fresh."""
        now = self.clock.now()
        with self._lock:
            for s in signals:
                if s.kind is SignalKind.ALERT:
                    continue
                entry = self._entry(s.series, now)
                entry.signal = max(entry.signal, s.timestamp)

    def receive(self, records: Iterable[FreshnessRecord]) -> None:
        """Take in records from the signals topic: per series the newest is kept (by its newest
        sample; a record of the same source always replaces the previous one)."""
        now = self.clock.now()
        n = 0
        with self._lock:
            self._expire(now)
            for record in records:
                n += 1
                entry = self._entry(record.series, now)
                old = entry.record
                if old is None or old.source == record.source or record.seen.last >= old.seen.last:
                    entry.record = record
            self.received += n
        if self.metrics is not None:
            self.metrics.freshness_received.inc(n)

    def seen(self, key: SeriesKey) -> Seen | None:
        """The series' freshness, with the view's own count; None for a series never seen."""
        local = self.local.seen(key) if self.local is not None else None
        now = self.clock.now()
        with self._lock:
            entry = self._series.get(key)
            record = entry.record if entry is not None else None
            if local is not None and (record is None or local.last >= record.seen.last):
                source, seen, interval = self.source, local, local.interval
            elif record is not None:
                source, seen = record.source, record.seen
                interval = max(seen.interval, record.every)
            elif entry is not None and math.isfinite(entry.signal):
                # signalled, its first record still on the way: the signal is a sample of it
                return Seen(entry.signal, entry.total, self.config.interval)
            else:
                if entry is not None:  # the engine counts from 0 on a series never seen: so does the view
                    entry.source, entry.total = None, 0
                return None
            if entry is None:
                entry = self._entry(key, now)
            else:
                entry.touched = now
                self._series.move_to_end(key)
            same = entry.source == source and seen.count >= entry.count and entry.last >= entry.signal
            if same:
                entry.total += seen.count - entry.count
            entry.source, entry.count, entry.last = source, seen.count, seen.last
            return Seen(seen.last, entry.total, interval)
