"""The Kafka decode worker: the in-process decoder's results from a child process, and its lifecycle."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources.kafka_formats import Format, Malformed, SampleDecoder
from agent.sources.kafka_worker import (
    DecodeWorker,
    DecodeWorkerError,
    _Failure,
    _recv_frame,
    _recv_values,
    _send_values,
    _Table,
    serve,
)
from detectors import SampleBatch, SeriesRegistry
from detectors.series import DROPPED

T0 = datetime(2020, 1, 1, tzinfo=UTC).timestamp()


def adapter(name: str = "up", value: Any = "1.5", ts: Any = "2020-01-01T00:00:00Z", **labels: str) -> Any:
    return {"timestamp": ts, "value": value, "name": name, "labels": {"__name__": name, **labels}}


def enc(doc: Any) -> bytes:
    return orjson.dumps(doc)


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie, not yet reaped by its new parent, has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in {"Z", "X"}
    except FileNotFoundError:
        return True


@pytest.fixture
def make_worker() -> Iterator[Any]:
    """``make_worker(registry, format="auto", cache_size=None)``: started workers, all closed afterwards."""
    workers: list[DecodeWorker] = []

    def make(
        registry: SeriesRegistry, format: Format = "auto", cache_size: int | None = None
    ) -> DecodeWorker:
        worker = DecodeWorker(registry, format, cache_size)
        workers.append(worker)
        worker.start()
        return worker

    yield make
    for worker in workers:
        pid = worker.pid
        worker.close(1.0)
        assert pid is None or gone(pid), "no worker process outlives its test"


def through(worker: DecodeWorker, values: Sequence[bytes | None]) -> tuple[SampleBatch, list[Malformed]]:
    worker.submit(values)
    result = worker.result()
    assert result is not None
    return result


def assert_same(
    got: tuple[SampleBatch, list[Malformed]], expected: tuple[SampleBatch, list[Malformed]]
) -> None:
    batch, malformed = got
    want, want_malformed = expected
    assert batch.series.tolist() == want.series.tolist()
    assert batch.series.dtype == np.int64
    np.testing.assert_array_equal(batch.timestamps, want.timestamps)
    np.testing.assert_array_equal(batch.values, want.values)
    assert malformed == want_malformed


GOOD_AND_BAD: list[list[bytes | None]] = [
    [
        enc(adapter(job="api", instance="a:1")),
        enc([adapter(pod=f"p{i}", value=str(i), ts=T0 + i) for i in range(20)]),
        None,
        b"{not json",
        enc(adapter(value="abc")),
        enc([adapter(pod="p1"), adapter(pod="p2", ts="yesterday")]),  # all or nothing
    ],
    [
        enc([{"name": "cpu", "labels": {"pod": "x"}, "timestamps": [T0, T0 + 15], "values": [1, 2]}]),
        enc(
            {
                "resourceMetrics": [
                    {
                        "resource": {"attributes": [{"key": "svc", "value": {"stringValue": "a"}}]},
                        "scopeMetrics": [
                            {
                                "metrics": [
                                    {
                                        "name": "m",
                                        "gauge": {"dataPoints": [{"timeUnixNano": "1", "asInt": "3"}]},
                                    },
                                    {"name": "h", "histogram": {"dataPoints": [{}, {}]}},
                                ]
                            }
                        ],
                    }
                ]
            }
        ),
        enc(adapter(job="api", instance="a:1", value=7)),  # a known series, in another label order
        enc({"labels": {"__name__": "up", "instance": "a:1", "job": "api"}, "value": 1, "timestamp": T0}),
        b"[1, 2]",
        b"",
    ],
    [],
    [enc([adapter(pod=f"p{i}", value="NaN") for i in range(5, 30)])],
]


def test_same_samples_ids_and_reasons_as_the_in_process_decoder(make_worker: Any) -> None:
    reg, inline_reg = SeriesRegistry(), SeriesRegistry()
    worker = make_worker(reg)
    inline = SampleDecoder(inline_reg)
    for values in GOOD_AND_BAD:
        assert_same(through(worker, values), inline.decode(values))
    assert reg.keys() == inline_reg.keys(), "the same series, registered in the same order"
    assert worker.skipped_points == inline.skipped_points == 2
    assert reg.dropped == inline_reg.dropped == 0


@pytest.mark.parametrize("fmt", ["adapter", "batch", "otlp"])
def test_a_fixed_format_is_applied_in_the_child(make_worker: Any, fmt: Format) -> None:
    worker = make_worker(SeriesRegistry(), fmt)
    inline = SampleDecoder(SeriesRegistry(), fmt)
    for values in GOOD_AND_BAD:
        assert_same(through(worker, values), inline.decode(values))


def test_the_cardinality_limit_is_the_registry_s(make_worker: Any) -> None:
    reg, inline_reg = SeriesRegistry(limit=3), SeriesRegistry(limit=3)
    worker = make_worker(reg)
    inline = SampleDecoder(inline_reg)
    batches: list[list[bytes | None]] = [
        [enc([adapter(pod=f"p{i}") for i in range(5)])],
        [enc([adapter(pod=f"p{i}") for i in range(5)]), enc([adapter(pod="p9"), adapter(pod="p0")])],
        [b"garbage", enc([adapter(pod="p4")] * 3)],
    ]
    for values in batches:
        assert_same(through(worker, values), inline.decode(values))
    assert len(reg) == 3
    assert reg.keys() == inline_reg.keys()
    assert reg.dropped == inline_reg.dropped == 2 + 3 + 3, "every refused sample counted once"
    batch, _ = through(worker, [enc([adapter(pod="p1"), adapter(pod="p7")])])
    assert batch.series.tolist() == [1, DROPPED]


def test_the_child_s_table_starts_over_when_full_and_ids_stay_right(make_worker: Any) -> None:
    reg, inline_reg = SeriesRegistry(limit=40), SeriesRegistry(limit=40)
    worker = make_worker(reg, cache_size=8)
    inline = SampleDecoder(inline_reg)
    for round_ in range(6):
        values: list[bytes | None] = [enc([adapter(pod=f"p{(round_ * 7 + i) % 50}") for i in range(10)])]
        assert_same(through(worker, values), inline.decode(values))
    assert reg.keys() == inline_reg.keys()
    assert reg.dropped == inline_reg.dropped


def test_a_malformed_message_registers_no_series(make_worker: Any) -> None:
    reg = SeriesRegistry()
    worker = make_worker(reg)
    _, malformed = through(worker, [enc([adapter(pod="new"), adapter(pod="x", value="zz")])])
    assert [m.kind for m in malformed] == ["bad_value"]
    assert len(reg) == 0


message_parts = (
    st.sampled_from(
        [
            enc(adapter(pod="a")),
            enc(adapter(pod="b", value=3)),
            enc([adapter(pod="a", ts=T0 + 1), adapter(pod="c", ts=T0 + 2)]),
            enc([adapter(pod="d"), adapter(pod="e", value=[1])]),
            enc({"name": "up", "labels": {"pod": "a", "__name__": "up"}, "value": "1", "timestamp": T0}),
            b"nope",
            b"null",
            b"{}",
        ]
    )
    | st.none()
)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.lists(message_parts, max_size=5), min_size=1, max_size=6), st.integers(1, 6))
def test_any_mix_of_messages_decodes_as_in_process(batches: list[list[bytes | None]], limit: int) -> None:
    reg, inline_reg = SeriesRegistry(limit=limit), SeriesRegistry(limit=limit)
    worker = DecodeWorker(reg, cache_size=4)
    inline = SampleDecoder(inline_reg)
    worker.start()
    try:
        for values in batches:
            assert_same(through(worker, values), inline.decode(values))
    finally:
        worker.close()
    assert reg.keys() == inline_reg.keys()
    assert reg.dropped == inline_reg.dropped


# ---------------------------------------------------------------------------- protocol


def test_a_discarded_batch_is_never_handed_out(make_worker: Any) -> None:
    reg = SeriesRegistry()
    worker = make_worker(reg)
    worker.submit([enc(adapter(pod="discarded", value=1))])
    worker.discard()
    assert not worker.pending
    batch, _ = through(worker, [enc(adapter(pod="kept", value=2))])
    assert batch.values.tolist() == [2.0]
    pods = [reg.key(i).label_dict["pod"] for i in range(len(reg))]
    assert pods == ["kept"], "the discarded series was not registered"
    batch, _ = through(worker, [enc(adapter(pod="discarded", value=3))])
    assert reg.key(int(batch.series[0])).label_dict["pod"] == "discarded"


def test_one_batch_at_a_time(make_worker: Any) -> None:
    worker = make_worker(SeriesRegistry())
    with pytest.raises(RuntimeError, match="result"):
        worker.result()
    worker.submit([enc(adapter())])
    with pytest.raises(RuntimeError, match="previous batch"):
        worker.submit([enc(adapter())])
    assert worker.result() is not None


def test_a_taken_batch_is_finished_while_the_next_one_decodes(make_worker: Any) -> None:
    """take() frees the child for the next batch; finish() registers in the child's order."""
    reg = SeriesRegistry()
    worker = make_worker(reg)
    worker.submit([enc(adapter(pod="a", value=1)), enc(adapter(pod="b", value=2))])
    first = worker.take()
    assert first is not None
    assert not worker.pending
    assert len(reg) == 0, "nothing registered before finish()"
    worker.submit([enc(adapter(pod="c", value=3)), enc(adapter(pod="a", value=4))])
    batch, malformed = worker.finish(first)
    assert malformed == []
    assert batch.values.tolist() == [1.0, 2.0]
    assert [reg.key(int(i)).label_dict["pod"] for i in batch.series] == ["a", "b"]
    second = worker.take()
    assert second is not None
    batch, _ = worker.finish(second)
    assert batch.values.tolist() == [3.0, 4.0]
    assert [reg.key(int(i)).label_dict["pod"] for i in batch.series] == ["c", "a"]
    assert [reg.key(i).label_dict["pod"] for i in range(len(reg))] == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match="take"):
        worker.take()


def test_result_returns_none_when_stopped_and_the_batch_later(make_worker: Any) -> None:
    worker = make_worker(SeriesRegistry())
    through(worker, [enc(adapter())])  # the child is up
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        worker.submit([enc(adapter(value=5))])
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        started = time.monotonic()
        assert worker.result(stop) is None
        assert time.monotonic() - started < 2.0
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    result = worker.result()
    assert result is not None
    assert result[0].values.tolist() == [5.0]


def test_a_dead_child_is_reported(make_worker: Any) -> None:
    worker = make_worker(SeriesRegistry())
    through(worker, [enc(adapter())])
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGSTOP)
    worker.submit([enc(adapter())])
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(DecodeWorkerError, match=r"exited with code -9|connection lost"):
        worker.result()
    assert not worker.alive
    assert worker.exit_code == -signal.SIGKILL
    with pytest.raises(DecodeWorkerError):
        worker.submit([enc(adapter())])


def test_a_new_child_after_close_starts_afresh(make_worker: Any) -> None:
    reg = SeriesRegistry()
    worker = make_worker(reg)
    first, _ = through(worker, [enc(adapter(pod="a")), enc(adapter(pod="b"))])
    worker.close()
    worker.start()
    again, _ = through(worker, [enc(adapter(pod="b")), enc(adapter(pod="c"))])
    assert first.series.tolist() == [0, 1]
    assert again.series.tolist() == [1, 2], "registry ids survive a new child"


def test_the_child_ignores_sigint(make_worker: Any) -> None:
    worker = make_worker(SeriesRegistry())
    through(worker, [enc(adapter())])
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGINT)
    batch, _ = through(worker, [enc(adapter(value=4))])
    assert batch.values.tolist() == [4.0]


def test_a_bug_in_the_child_is_reported_with_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _Table.decode

    def decode(self: _Table, values: Sequence[bytes | None], now: float | None = None) -> Any:
        if values == [b"boom"]:
            raise TypeError("a bug")
        return real(self, values, now)

    monkeypatch.setattr(_Table, "decode", decode)
    ours, theirs = socket.socketpair()
    child = threading.Thread(target=serve, args=(theirs, "auto", 100), daemon=True)  # the child's loop, here
    child.start()
    try:
        _send_values(ours, [enc(adapter())])
        assert not isinstance(pickle.loads(_recv_frame(ours)), _Failure)
        _send_values(ours, [b"boom"])
        reply = pickle.loads(_recv_frame(ours))
        assert isinstance(reply, _Failure)
        assert "TypeError: a bug" in reply.traceback
        child.join(5)
        assert not child.is_alive(), "the child stops after a failure"
    finally:
        ours.close()
        theirs.close()


def test_values_cross_the_socket_as_they_are() -> None:
    ours, theirs = socket.socketpair()
    try:
        for values in ([], [None], [b""], [b"a", None, b"", b"bc" * 100_000, None], [b"x"] * 1500):
            sender = threading.Thread(target=_send_values, args=(ours, values))  # may block: large
            sender.start()
            assert _recv_values(theirs) == (values, None)
            sender.join()
        _send_values(ours, [b"a"], 1.7e9)
        assert _recv_values(theirs) == ([b"a"], 1.7e9)
    finally:
        ours.close()
        theirs.close()


# ---------------------------------------------------------------------------- shutdown


def test_close_ends_the_child_at_once(make_worker: Any) -> None:
    worker = make_worker(SeriesRegistry())
    through(worker, [enc(adapter())])
    pid = worker.pid
    assert pid is not None
    started = time.monotonic()
    worker.close(5.0)
    assert time.monotonic() - started < 2.0, "the child exits when its socket closes"
    assert gone(pid)
    assert worker.pid is None
    assert not worker.alive
    worker.close()  # twice is fine


def test_close_kills_a_child_that_does_not_exit(make_worker: Any) -> None:
    worker = make_worker(SeriesRegistry())
    through(worker, [enc(adapter())])
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # cannot read its socket, nor act on SIGTERM
    started = time.monotonic()
    worker.close(0.2)
    assert time.monotonic() - started < 3.0
    assert gone(pid)


def test_close_while_a_batch_is_decoding(make_worker: Any) -> None:
    worker = make_worker(SeriesRegistry())
    worker.submit([enc([adapter(pod=f"p{i}") for i in range(5000)])] * 20)
    pid = worker.pid
    assert pid is not None
    started = time.monotonic()
    worker.close(2.0)
    assert time.monotonic() - started < 4.0
    assert gone(pid)


def test_the_child_exits_when_the_agent_dies() -> None:
    code = (
        "import sys\n"
        "from agent.sources.kafka_worker import DecodeWorker\n"
        "from detectors import SeriesRegistry\n"
        "w = DecodeWorker(SeriesRegistry()); w.start()\n"
        "w.submit([b'{}']); w.result()\n"
        "print(w.pid, flush=True)\n"
        "import os; os._exit(0)\n"  # no close: as if the agent was killed
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid), "an orphaned child exits when its socket closes"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown sample format"):
        DecodeWorker(SeriesRegistry(), "protobuf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_size"):
        DecodeWorker(SeriesRegistry(), cache_size=0)
    with pytest.raises(DecodeWorkerError, match="not running"):
        DecodeWorker(SeriesRegistry()).submit([b"{}"])


def test_new_series_share_their_metric_name_and_label_values() -> None:
    """A reply names each distinct string once (pickled once, shared by the agent's keys)."""
    table = _Table("auto", 100)
    docs = [adapter(name="cpu", ns="shop", pod=f"web-{i}") for i in range(3)]
    docs.append(adapter(name="cpu", ns="shop", pod="web-0", zone="a"))
    reply = table.decode([orjson.dumps(docs)])
    assert [values for _, _, values in reply.new_series] == [
        ("shop", "web-0"),
        ("shop", "web-1"),
        ("shop", "web-2"),
        ("shop", "web-0", "a"),
    ]
    assert len({id(name) for name, _, _ in reply.new_series}) == 1
    assert len({id(values[0]) for _, _, values in reply.new_series}) == 1
    assert reply.new_series[0][2][1] is reply.new_series[3][2][1]
    again = pickle.loads(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    assert len({id(values[0]) for _, _, values in again.new_series}) == 1, "one object after unpickling"
