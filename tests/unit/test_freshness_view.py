"""Freshness carried with the signals: the records, the deciding side's view, the publisher.

Counts are worked out by hand: the view's count grows only by what one source counted between
two consecutive observations, the earlier of them no older than the series' newest signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from agent.clock import ManualClock
from agent.config import FreshnessConfig
from agent.freshness import FreshnessForwarder, FreshnessRecord, FreshnessRecordError, FreshnessView
from agent.kafka_client import KafkaDeliveryError
from agent.metrics import AgentMetrics
from agent.playbook.engine import PlaybookEngine
from agent.playbook.events import AuditLog, IncidentState
from agent.playbook.loader import PlaybookSet, load_sources
from agent.playbook.requests import RecordingExecutor
from detectors import SampleBatch, SeriesKey, SeriesRegistry, Signal
from detectors.freshness import Seen, SeriesFreshness
from detectors.signal import SignalKind

T0 = 1_700_000_000.0
WEB = SeriesKey.of("error_ratio", {"namespace": "shop", "deployment": "web"})
API = SeriesKey.of("error_ratio", {"namespace": "shop", "deployment": "api"})


def _record(
    source: str, last: float, count: int, interval: float = 15.0, series: SeriesKey = WEB
) -> FreshnessRecord:
    return FreshnessRecord(source, series, Seen(last, count, interval), 5.0)


def _signal(at: float, series: SeriesKey = WEB, kind: SignalKind = SignalKind.THRESHOLD) -> Signal:
    return Signal(kind, series, at, 0.9, 1.0, "threshold")


class Bank:
    """The local half: a registry and the detector bank's SeriesFreshness, fed by hand."""

    def __init__(self) -> None:
        self.series = SeriesRegistry()
        self.freshness = SeriesFreshness(self.series)

    def report(self, key: SeriesKey, *times: float) -> None:
        sid = self.series.id_for(key)
        ts = np.array(times, dtype=np.float64)
        self.freshness.observe(SampleBatch.from_arrays(np.full(ts.size, sid), ts, np.zeros(ts.size)))


def _view(bank: Bank | None = None, **config: Any) -> tuple[FreshnessView, ManualClock]:
    clock = ManualClock(T0)
    local = bank.freshness if bank is not None else None
    return FreshnessView(FreshnessConfig(**config), local, "me-1", clock, AgentMetrics()), clock


# ---------------------------------------------------------------------------- records


def test_a_record_goes_over_the_wire_and_back() -> None:
    record = _record("a-1", T0, 42, 15.0)
    data = orjson.loads(record.encode())
    assert (data["format"], data["version"]) == ("aiops.freshness", 1)
    assert FreshnessRecord.from_dict(data) == record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "freshness record version 2 is not supported (this agent reads 1)"),
        ({"format": "aiops.other"}, "format 'aiops.other' is not 'aiops.freshness'"),
        ({"count": -1}, "field 'count' must be a non-negative integer, got -1"),
        ({"count": 1.5}, "field 'count' must be a non-negative integer, got 1.5"),
        ({"last": "soon"}, "field 'last' must be a finite number, got 'soon'"),
        ({"every": 0}, "field 'interval' must be >= 0 and 'every' > 0"),
        ({"source": ""}, "field 'source' must be a string of 1 to 256 characters"),
        ({"labels": {"a": 1}}, "field 'labels' must be an object of strings"),
        ({"metric": None}, "field 'metric' must be a non-empty string"),
    ],
)
def test_a_bad_record_is_refused_naming_what_is_wrong(change: dict[str, Any], message: str) -> None:
    data = {**orjson.loads(_record("a-1", T0, 3).encode()), **change}
    with pytest.raises(FreshnessRecordError) as err:
        FreshnessRecord.from_dict(data)
    assert str(err.value) == message


# ---------------------------------------------------------------------------- the view


def test_a_series_this_replica_does_not_detect_is_answered_from_the_records() -> None:
    view, clock = _view(Bank())
    assert view.seen(WEB) is None
    view.receive([_record("a-1", T0, 10)])
    first = view.seen(WEB)
    assert first is not None
    base = first.count  # the first observation is a baseline
    clock.set(T0 + 30)
    view.receive([_record("a-1", T0 + 30, 12)])
    seen = view.seen(WEB)
    assert seen == Seen(T0 + 30, base + 2, 15.0)
    assert view.received == 2


def test_the_local_bank_is_preferred_while_it_detects_the_series() -> None:
    bank = Bank()
    view, _ = _view(bank)
    bank.report(WEB, T0 - 30, T0 - 15, T0)
    view.receive([_record("a-1", T0 - 15, 500)])  # another replica's older view of it
    base = view.seen(WEB)
    assert base is not None
    assert base.last == T0
    bank.report(WEB, T0 + 15, T0 + 30)
    view.receive([_record("a-1", T0 + 15, 501)])  # older than the bank's newest: not used
    seen = view.seen(WEB)
    assert seen is not None
    assert (seen.last, seen.count - base.count) == (T0 + 30, 2)


def test_a_record_newer_than_the_local_bank_takes_over_with_a_new_baseline() -> None:
    """The series moved away from this replica (its bank kept the series): the records are newer
    and answer; the switch adds nothing, the next record of the same source adds its samples."""
    bank = Bank()
    view, _ = _view(bank)
    bank.report(WEB, T0, T0 + 15)
    before = view.seen(WEB)
    assert before is not None
    view.receive([_record("a-1", T0 + 30, 900)])
    switched = view.seen(WEB)
    assert switched is not None
    assert (switched.last, switched.count) == (T0 + 30, before.count)
    view.receive([_record("a-1", T0 + 45, 901)])
    after = view.seen(WEB)
    assert after is not None
    assert after.count == before.count + 1


def test_a_change_of_source_or_a_count_going_back_starts_a_new_baseline() -> None:
    """Source a-1 counted 50; the series moves to b-2, whose count starts again (3, then 7): only
    b-2's 4 are added. b-2 restarts (count 2): nothing; then 2 -> 5 adds 3."""
    view, _ = _view()
    counts = []
    for record in [
        _record("a-1", T0, 50),
        _record("a-1", T0 + 15, 51),
        _record("b-2", T0 + 30, 3),
        _record("b-2", T0 + 45, 7),
        _record("b-2", T0 + 60, 2),
        _record("b-2", T0 + 75, 5),
    ]:
        view.receive([record])
        seen = view.seen(WEB)
        assert seen is not None
        counts.append(seen.count)
    assert np.diff(counts).tolist() == [1, 0, 4, 0, 3]


def test_samples_counted_before_the_series_last_signal_are_not_fresh() -> None:
    """Records every 5 s of a series sampled every second. A signal at T0+7 comes after the
    record of T0+5: the record of T0+10 (whose samples may include the signalled one) is a new
    baseline; the record of T0+15 adds its 5 samples, all after the signal."""
    view, _ = _view()
    view.receive([_record("a-1", T0 + 5, 100, 1.0)])
    assert view.seen(WEB) is not None
    view.signalled([_signal(T0 + 7)])
    at_signal = view.seen(WEB)  # what the engine takes as the incident's baseline
    assert at_signal is not None
    view.receive([_record("a-1", T0 + 10, 105, 1.0)])
    mid = view.seen(WEB)
    view.receive([_record("a-1", T0 + 15, 110, 1.0)])
    end = view.seen(WEB)
    assert mid is not None
    assert end is not None
    assert (mid.count - at_signal.count, end.count - at_signal.count) == (0, 5)


def test_a_record_already_past_the_signal_counts_on() -> None:
    """The record of T0+10 was taken before the signal of T0+7 (same poll): the engine's baseline
    includes it, and the next record's samples, all after T0+10, are fresh."""
    view, _ = _view()
    view.receive([_record("a-1", T0 + 5, 100, 1.0)])
    view.seen(WEB)
    view.receive([_record("a-1", T0 + 10, 105, 1.0)])
    view.signalled([_signal(T0 + 7)])
    at_signal = view.seen(WEB)
    view.receive([_record("a-1", T0 + 15, 110, 1.0)])
    end = view.seen(WEB)
    assert at_signal is not None
    assert end is not None
    assert end.count - at_signal.count == 5


def test_a_series_no_longer_known_counts_again_from_nothing() -> None:
    """The bank forgot the series (its partition went) and no record came: the view answers None,
    and the engine takes 0 as the baseline; when the series comes back, the view counts from 0
    too, not from what it had counted before."""
    bank = Bank()
    view, _ = _view(bank)
    bank.report(WEB, T0)
    view.seen(WEB)
    bank.report(WEB, T0 + 15, T0 + 30, T0 + 45)
    before = view.seen(WEB)
    assert before is not None
    assert before.count == 3
    bank.freshness.forget(np.array([bank.series.lookup(WEB)]))
    assert view.seen(WEB) is None
    bank.report(WEB, T0 + 60)
    view.seen(WEB)
    bank.report(WEB, T0 + 75)
    after = view.seen(WEB)
    assert after is not None
    assert after.count == 1


def test_a_signalled_series_whose_first_record_is_on_the_way_is_not_stale() -> None:
    """The signal came first (the record follows within the publishing interval): the series
    counts as reported at the signal's time, with nothing fresh, and is stale only when no
    record follows for 3 publishing intervals. The record then starts a baseline."""
    view, _ = _view(Bank(), interval=5.0)
    view.signalled([_signal(T0)])
    at_signal = view.seen(WEB)
    assert at_signal is not None
    assert at_signal == Seen(T0, 0, 5.0)
    assert not at_signal.stale(T0 + 15, 3.0)
    assert at_signal.stale(T0 + 16, 3.0)
    view.receive([_record("a-1", T0 + 4, 20)])
    view.seen(WEB)
    view.receive([_record("a-1", T0 + 9, 25)])
    seen = view.seen(WEB)
    assert seen is not None
    assert seen.count - at_signal.count == 5


def test_a_remote_series_is_stale_on_at_least_the_publishing_interval() -> None:
    """A series sampled every second, heard of every 5 s: judged on 5 s, so a record 12 s old is
    not stale (3 intervals = 15 s), one 16 s old is."""
    view, _ = _view()
    view.receive([_record("a-1", T0, 10, 1.0)])
    seen = view.seen(WEB)
    assert seen is not None
    assert seen.interval == 5.0
    assert not seen.stale(T0 + 12, 3.0)
    assert seen.stale(T0 + 16, 3.0)


def test_the_view_is_bounded_by_series_and_by_window() -> None:
    view, clock = _view(max_series=2, window=600.0)
    keys = [SeriesKey.of("m", {"i": str(i)}) for i in range(3)]
    view.receive([_record("a-1", T0, 1, series=k) for k in keys])
    assert len(view) == 2
    assert view.seen(keys[0]) is None  # the oldest went
    assert view.seen(keys[2]) is not None
    clock.set(T0 + 601)
    view.receive([_record("a-1", T0 + 601, 2, series=keys[1])])
    assert len(view) == 1  # keys[2], untouched for the window, went
    assert view.seen(keys[2]) is None


def test_alert_signals_set_no_freshness() -> None:
    view, _ = _view()
    view.signalled([_signal(T0, kind=SignalKind.ALERT)])
    assert len(view) == 0


# ---------------------------------------------------------------------------- the publisher


class Producer:
    """A stand-in for the agent's ResilientProducer: records what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.fail = False
        self.closed = False

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, value, key))

    def flush(self, timeout: float | None = None) -> None:
        if self.fail:
            raise KafkaDeliveryError("broker away")

    def close(self) -> None:
        self.closed = True


def _forwarder(**config: Any) -> tuple[FreshnessForwarder, Producer, Bank, ManualClock]:
    bank, producer, clock = Bank(), Producer(), ManualClock(T0)
    forwarder = FreshnessForwarder(
        FreshnessConfig(**config),
        producer,  # type: ignore[arg-type]  # a stand-in with the same methods
        "aiops.signals",
        lambda s: f"Deployment/shop/{s.series.label_dict['deployment']}".encode(),
        bank.freshness,
        clock,
        AgentMetrics(),
        "a-1",
    )
    return forwarder, producer, bank, clock


def _published(producer: Producer) -> list[tuple[bytes | None, float, int]]:
    out = []
    for _, value, key in producer.sent:
        record = FreshnessRecord.from_dict(orjson.loads(value))
        out.append((key, record.seen.last, record.seen.count))
    return out


def test_signalled_series_are_published_under_their_signals_key_at_most_every_interval() -> None:
    forwarder, producer, bank, clock = _forwarder(interval=5.0)
    bank.report(WEB, T0 - 1, T0)
    bank.report(API, T0)  # never signalled: not published
    forwarder.emit([_signal(T0), _signal(T0, kind=SignalKind.ALERT, series=API)])
    assert forwarder.publish() == 1
    assert _published(producer) == [(b"Deployment/shop/web", T0, 2)]
    bank.report(WEB, T0 + 1)
    clock.set(T0 + 4)
    assert forwarder.publish() == 0  # within the interval
    clock.set(T0 + 5)
    assert forwarder.publish() == 1
    clock.set(T0 + 10)
    assert forwarder.publish() == 0  # nothing new: the deciding side sees it age
    assert _published(producer)[1:] == [(b"Deployment/shop/web", T0 + 1, 3)]
    assert forwarder.metrics.freshness_published._value.get() == 2


def test_a_failed_delivery_is_due_again_and_the_window_and_cap_bound_what_is_published() -> None:
    forwarder, producer, bank, clock = _forwarder(interval=5.0, window=60.0, max_series=1)
    bank.report(WEB, T0)
    bank.report(API, T0)
    forwarder.emit([_signal(T0, series=WEB)])
    forwarder.emit([_signal(T0, series=API)])
    assert forwarder.tracked() == 1  # web, the least recently signalled, went
    producer.fail = True
    assert forwarder.publish() == 0
    producer.fail = False
    assert forwarder.publish() == 1  # due again at once
    assert [k for k, _, _ in _published(producer)] == [b"Deployment/shop/api"] * 2
    clock.set(T0 + 61)
    bank.report(API, T0 + 61)
    assert forwarder.publish() == 0
    assert forwarder.tracked() == 0  # no signal for the window: no longer published


# ---------------------------------------------------------------------------- with the engine


def _playbooks() -> PlaybookSet:
    doc = {
        "apiVersion": "aiops/v1",
        "kind": "Playbook",
        "metadata": {"name": "restart-on-errors"},
        "spec": {
            "trigger": {"signal": "threshold", "metric": "error_ratio", "match": {"deployment": ".+"}},
            "target": {"kind": "Deployment", "namespace": "shop", "name": "{{ labels.deployment }}"},
            "actions": [{"restart": {}}],
            "verify": {"quiet": "2m", "within": "10m", "samples": 3},
        },
    }
    return load_sources([("restart.yaml", yaml.safe_dump(doc))])


@pytest.mark.parametrize("records", [True, False], ids=["records-arrive", "records-stop"])
def test_an_incident_on_a_series_detected_elsewhere_resolves_on_its_records_or_goes_stale(
    records: bool,
) -> None:
    """The deciding replica never sees the series' samples. It acts at T0; records of samples
    every 15 s under the bar resolve it at T0+2m; without them it is stale and escalated at 10m."""
    view, clock = _view(Bank())
    audit = AuditLog()
    engine = PlaybookEngine(_playbooks(), RecordingExecutor(), clock, audit, freshness=view)
    view.receive([_record("a-1", T0 - 15, 40)])
    signal = _signal(T0)
    view.signalled([signal])
    view.receive([_record("a-1", T0, 41)])
    engine.emit([signal])
    for t in range(15, 601, 15):
        clock.set(T0 + t)
        if records:
            view.receive([_record("a-1", T0 + t, 41 + t // 15)])
        engine.tick()
    states = [(e.time - T0, e.state) for e in audit.incident_events() if e.previous is not e.state]
    if records:
        assert states[-1] == (120, IncidentState.RESOLVED)
    else:
        assert (60, IncidentState.STALE) in states
        assert states[-1] == (600, IncidentState.ESCALATED)
