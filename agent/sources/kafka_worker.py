"""Decoding Kafka message values in a child process, beside the consumer instead of in turn with it.

Why: kafka-python reads the network in a background thread that needs the GIL for every 4 KiB it
receives. While the consuming thread decodes JSON (CPU-bound, holding the GIL), that thread
hardly runs, so fetching and decoding take turns instead of overlapping, and the agent consumed
batched messages at a quarter of the rate of a bare poll loop. A :class:`DecodeWorker` moves
decoding into a child process: the Kafka source hands it the values of one poll and, while the
child decodes them, the source's own thread hands out the previous batch and polls again; the
network thread runs whenever the source waits for the child.

The child runs the same :class:`~agent.sources.kafka_formats.SampleDecoder` as the in-process
path, against a series table of its own, so malformed messages, their reasons and the order of
samples are the same by construction. It answers each batch with local series ids, timestamps
and values as arrays, the malformed messages, and only the series it had not seen before. This
side maps local ids to the real :class:`~detectors.SeriesRegistry` with one numpy lookup,
registering a series (or refusing it at the cardinality limit: its samples carry
:data:`~detectors.series.DROPPED` and the registry counts them, once per sample) when the first
batch holding it is handed out. The child's table is bounded like the decoder's cache: past
``cache_size`` series it starts over, between two batches, and says so.

One batch at a time is in the child: :meth:`DecodeWorker.submit` is only called when the
previous batch's result was taken (or discarded), so neither side ever blocks writing to the
other. Taking an answer (:meth:`DecodeWorker.take`) only reads it off the socket; the source
hands the child its next batch before it unpickles the answer and registers its new series
(:meth:`DecodeWorker.finish`), so that the agent's part and the child's overlap.

The child decodes within the same :class:`~agent.sources.kafka_formats.DecodeLimits` and
timestamp window (the agent's clock reading travels with each batch). Before each message it
writes that message's position into a page of memory it shares with the agent, so when it dies
(a crash no limit foresaw) :attr:`DecodeWorker.crashed_at` names the message that killed it.

The child is a plain Python process running :func:`main`, talking over a socket pair (no
multiprocessing helper processes). It ignores SIGINT (the agent decides when to stop), exits
when the socket closes (the agent closed it, or died), and is terminated, then killed, if it
does not exit within the close timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import math
import mmap
import os
import pickle
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from agent.sources.kafka_formats import (
    FORMATS,
    DecodeLimits,
    Format,
    Malformed,
    Names,
    SampleDecoder,
    checked_settings,
)
from detectors.batch import SampleBatch
from detectors.series import DROPPED, SeriesKey, SeriesRegistry

log = logging.getLogger("aiops.sources.kafka.worker")

#: A local id whose series has not been looked up in the registry yet.
_UNRESOLVED = -2
#: Frame header of a reply: the pickled payload's length.
_HEADER = struct.Struct("!Q")
#: Header of a batch of values: how many, their total length, and the agent's clock (NaN: none).
_REQUEST = struct.Struct("!QQd")
#: The shared page the child writes the position of the message it decodes into (one int64).
_PROGRESS_BYTES = 8
#: Buffers per sendmsg call (the usual IOV_MAX is 1024).
_IOV_MAX = 512
#: How often a wait for the child checks that it is alive and that the agent is not stopping.
_WAIT_SLICE = 0.05
#: The child collects cyclic garbage after this many batches, and whenever it has been idle
#: this long (decoding JSON makes no reference cycles; the automatic collector only slowed it
#: down, scanning the growing series table again and again).
_COLLECT_EVERY = 1000
_IDLE = 1.0
#: What the child runs: this module's :func:`main`, imported from where the agent imported it.
_CHILD = (
    "import sys; r = {root!r}; r in sys.path or sys.path.insert(0, r); "
    "from agent.sources.kafka_worker import main; main()"
)
#: Socket buffer size asked for on both ends (the kernel may cap it): fewer wake-ups per batch.
_SOCKET_BUFFER = 4 << 20


class DecodeWorkerError(RuntimeError):
    """The decode worker died or failed; the batches it held were not decoded."""


class _Reply(NamedTuple):
    """What the child sends back for one batch."""

    reset: bool  # the child started its series table over before this batch
    first_new: int  # local id of the first new series (the table's size before the batch)
    new_series: list[tuple[str, Names, Names]]  # by local id: name, label names and values (as in SeriesKey)
    series: npt.NDArray[np.int64]  # local ids
    timestamps: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    malformed: list[tuple[int, str, str]]  # position, reason, kind
    skipped_points: int


class Taken(NamedTuple):
    """A batch's answer read from the child (see :meth:`DecodeWorker.take`), not yet finished."""

    frame: bytearray  # the pickled _Reply (or _Failure)


class _Failure(NamedTuple):
    """The child could not decode a batch (a bug): its traceback; the child exits after sending it."""

    traceback: str


# ---------------------------------------------------------------------------- framing


def _send(sock: socket.socket, obj: object) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(payload)))
    sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("the other end closed the socket")
        got += k
    return buf


def _recv_frame(sock: socket.socket) -> bytearray:
    """One frame :func:`_send` sent: the pickled payload, not unpickled yet."""
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return _recv_exact(sock, n)


def _send_values(sock: socket.socket, values: Sequence[bytes | None], now: float | None = None) -> None:
    """A batch of message values, sent as they are (no copy on this side): their count, each one's
    length (-1 for None), the clock reading to judge timestamps by, then the values one after the other."""
    lengths = np.fromiter((-1 if v is None else len(v) for v in values), dtype=np.int64, count=len(values))
    present = [v for v in values if v]
    total = int(lengths[lengths > 0].sum())
    header = _REQUEST.pack(len(values), total, math.nan if now is None else now)
    _send_buffers(sock, [header, lengths.tobytes(), *present])


def _send_buffers(sock: socket.socket, buffers: list[Any]) -> None:
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]


def _recv_values(sock: socket.socket) -> tuple[list[bytes | None], float | None]:
    """What :func:`_send_values` sent: the values, and the clock reading (None when none was sent)."""
    count, total, now = _REQUEST.unpack(_recv_exact(sock, _REQUEST.size))
    lengths = np.frombuffer(_recv_exact(sock, 8 * count), dtype=np.int64).tolist()
    payload = memoryview(_recv_exact(sock, total))
    values: list[bytes | None] = []
    at = 0
    for n in lengths:
        if n < 0:
            values.append(None)
        else:
            values.append(bytes(payload[at : at + n]))
            at += n
    return values, (None if math.isnan(now) else now)


def _tune(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)


# ---------------------------------------------------------------------------- the child


class _LocalDecoder(SampleDecoder):
    """The in-process decoder, with series ids of its own: every series gets one, none is refused."""

    def __init__(self, format: Format, cache_size: int, limits: DecodeLimits | None = None) -> None:
        super().__init__(
            SeriesRegistry(limit=1), format, cache_size=cache_size, limits=limits
        )  # registry unused
        #: Name, label names and label values of each series (as SeriesKey keeps them), by local id.
        self.series: list[tuple[str, Names, Names]] = []
        self._local: dict[tuple[str, Names, Names], int] = {}
        #: One object per distinct metric name and label value, so that a reply pickles each once
        #: and the agent's SeriesKeys share them: 100k new series of one metric unpickle in half
        #: the time, on the agent's side of the pipeline, the slower one while series are new.
        self._strings: dict[str, str] = {}

    def _new_series(self, name: str, names: Names, values: Names) -> tuple[int, SeriesKey | None]:
        same = self._strings.setdefault
        key = (same(name, name), names, tuple(map(same, values, values)))
        sid = self._local.get(key)
        if sid is None:
            sid = self._local[key] = len(self.series)
            self.series.append(key)
        return sid, None


class _Table:
    """The child's decoder and its series, started over when it knows ``cache_size`` series."""

    def __init__(
        self,
        format: Format,
        cache_size: int,
        limits: DecodeLimits | None = None,
        progress: memoryview | None = None,
    ) -> None:
        self.format = format
        self.cache_size = cache_size
        self.limits = limits
        self.progress = progress
        self.decoder = _LocalDecoder(format, cache_size, limits)

    def decode(self, values: Sequence[bytes | None], now: float | None = None) -> _Reply:
        reset = len(self.decoder.series) >= self.cache_size
        if reset:
            self.decoder = _LocalDecoder(self.format, self.cache_size, self.limits)
            gc.collect()
        decoder = self.decoder
        first_new = len(decoder.series)
        skipped = decoder.skipped_points
        batch, malformed = decoder.decode(values, now, self.progress)
        return _Reply(
            reset=reset,
            first_new=first_new,
            new_series=decoder.series[first_new:],
            series=batch.series,
            timestamps=batch.timestamps,
            values=batch.values,
            malformed=[(m.position, m.reason, m.kind) for m in malformed],
            skipped_points=decoder.skipped_points - skipped,
        )


def serve(
    sock: socket.socket,
    format: Format,
    cache_size: int,
    limits: DecodeLimits | None = None,
    progress: memoryview | None = None,
) -> None:
    """The child's loop: decode each batch received on ``sock`` and answer it, until the socket closes.

    ``progress`` (one int64) gets the position of the message being decoded, for the agent to
    read when the child dies.
    """
    table = _Table(format, cache_size, limits, progress)
    batches = 0
    while True:
        idle, _, _ = select.select([sock], [], [], _IDLE)
        if not idle:
            gc.collect()
            continue
        try:
            values, now = _recv_values(sock)
        except (EOFError, OSError):
            return
        try:
            reply: _Reply | _Failure = table.decode(values, now)
        except Exception:  # a bug: report it and stop, the agent starts a fresh child
            reply = _Failure(traceback.format_exc())
        try:
            _send(sock, reply)
        except OSError:
            return
        if isinstance(reply, _Failure):
            return
        batches += 1
        if batches % _COLLECT_EVERY == 0:
            gc.collect()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the child process (``main --fd N --progress-fd P --cache-size C ...``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()  # serve() collects between batches instead (see _COLLECT_EVERY)
    parser = argparse.ArgumentParser(description="aiops-agent Kafka decode worker (started by the agent)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--progress-fd", type=int, default=None)
    parser.add_argument("--format", choices=FORMATS, default="auto")
    parser.add_argument("--cache-size", type=int, required=True)
    parser.add_argument("--limits", default="{}", help="DecodeLimits fields as a JSON object")
    args = parser.parse_args(argv)
    limits = DecodeLimits(**json.loads(args.limits))
    sock = socket.socket(fileno=args.fd)
    shared = mmap.mmap(args.progress_fd, _PROGRESS_BYTES) if args.progress_fd is not None else None
    try:
        serve(sock, args.format, args.cache_size, limits, memoryview(shared).cast("q") if shared else None)
    finally:
        sock.close()


# ---------------------------------------------------------------------------- the agent's side


class DecodeWorker:
    """Decodes batches of message values in a child process, one batch at a time.

    ``submit(values)`` then ``result()`` gives what ``SampleDecoder(registry, format).decode(values)``
    would, series ids of ``registry`` included. Not thread-safe: one worker per source.
    """

    def __init__(
        self,
        registry: SeriesRegistry,
        format: Format = "auto",
        cache_size: int | None = None,
        limits: DecodeLimits | None = None,
        owner: str | None = None,
    ) -> None:
        self.registry = registry
        self.owner = owner
        self.format: Format = format
        self.cache_size = checked_settings(registry, format, cache_size)
        self.limits = limits if limits is not None else DecodeLimits()
        # the page the child writes the position of the message it decodes into (see crashed_at)
        self._progress_file: Any = None
        self._progress: memoryview | None = None
        self._submitted = 0  # how many values the last submitted batch held
        #: Data points skipped as not samples (OTLP histograms and summaries), as the decoder counts them.
        self.skipped_points = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._pending = False  # a batch is in the child, its result not taken
        self._discarded = False  # ... and it is to be dropped
        self._broken: str | None = None  # why the child cannot be used any more (until close and start)
        self._known = 0  # how many series the child has told of
        self._local_keys: list[tuple[str, Names, Names]] = []  # by local id: name, label names, values
        self._ids = np.full(1024, _UNRESOLVED, dtype=np.int64)  # local id -> registry id

    # ------------------------------------------------------------------ lifecycle
    @property
    def pid(self) -> int | None:
        """The child's process id, None before :meth:`start` and after :meth:`close`."""
        return self._process.pid if self._process is not None else None

    @property
    def exit_code(self) -> int | None:
        """The child's exit status once it has exited (negative: killed by that signal), else None."""
        return self._process.poll() if self._process is not None else None

    @property
    def alive(self) -> bool:
        """Whether the child is running."""
        return self._process is not None and self._process.poll() is None

    @property
    def decoding(self) -> int | None:
        """Position, in the last submitted batch, of the message the child is decoding (or was,
        when it stopped); None when it is on no message of it."""
        if self._progress is None:
            return None
        at = int(self._progress[0])
        return at if 0 <= at < self._submitted else None

    @property
    def crashed_at(self) -> int | None:
        """Position, in the last submitted batch, of the message the child was decoding when it
        died; None while it runs, or when it died on no message of that batch."""
        return None if self.alive else self.decoding

    @property
    def pending(self) -> bool:
        """Whether a submitted batch's result has not been taken (nor discarded) yet."""
        return self._pending and not self._discarded

    def start(self) -> None:
        """Start the child; returns at once (the child gets ready while the consumer joins its group).

        After :meth:`close` this starts a new child (with an empty series table).
        """
        if self._process is not None:
            return
        if self._progress is None:
            self._progress_file = tempfile.TemporaryFile(prefix="aiops-decode-progress-")  # noqa: SIM115 - kept open for the worker's life
            os.ftruncate(self._progress_file.fileno(), _PROGRESS_BYTES)
            self._progress = memoryview(mmap.mmap(self._progress_file.fileno(), _PROGRESS_BYTES)).cast("q")
        self._progress[0] = -1
        self._submitted = 0
        ours, theirs = socket.socketpair()
        _tune(ours)
        _tune(theirs)
        # the child imports this package from where the agent did, installed or not
        root = str(Path(__file__).resolve().parents[2])
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
                [
                    sys.executable,
                    "-c",
                    _CHILD.format(root=root),
                    "--fd",
                    str(theirs.fileno()),
                    "--progress-fd",
                    str(self._progress_file.fileno()),
                    "--limits",
                    json.dumps(dataclasses.asdict(self.limits)),
                    "--format",
                    self.format,
                    "--cache-size",
                    str(self.cache_size),
                ],
                pass_fds=[theirs.fileno(), self._progress_file.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise DecodeWorkerError(f"cannot start the decode worker: {exc}") from exc
        finally:
            theirs.close()
        self._sock = ours
        self._selector = selectors.DefaultSelector()
        self._selector.register(ours, selectors.EVENT_READ)
        # a new child knows no series: start the local table over
        self._known = 0
        self._local_keys.clear()
        self._ids.fill(_UNRESOLVED)
        log.info("kafka decode worker started (pid %d)", self._process.pid)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the child: close its socket, wait ``timeout`` s, then terminate, then kill. Safe twice."""
        sock, self._sock = self._sock, None
        selector, self._selector = self._selector, None
        process, self._process = self._process, None
        self._pending = self._discarded = False
        self._broken = None
        if selector is not None:
            selector.close()
        if sock is not None:
            sock.close()  # the child reads EOF (or fails writing) and exits
        if process is None:
            return
        for step in ("wait", "terminate", "kill"):
            if step == "terminate":
                process.terminate()
            elif step == "kill":
                process.kill()
            try:
                process.wait(timeout if step == "wait" else 1.0)
                break
            except subprocess.TimeoutExpired:
                log.warning("kafka decode worker (pid %d) did not exit after %s", process.pid, step)

    # ------------------------------------------------------------------ batches
    def submit(self, values: Sequence[bytes | None], now: float | None = None) -> None:
        """Hand the values of one poll to the child; the previous batch's result must have been taken.

        ``now`` (the agent's clock) centres the window of accepted timestamps. A discarded batch
        still in the child is waited for (it takes what decoding it takes). Raises
        :class:`DecodeWorkerError` when the child died.
        """
        if self._pending and self._discarded:
            frame = self._receive(None)
            assert frame is not None  # no stop event: waits until the answer is in
            self._pending = self._discarded = False
            self._reply(frame)  # dropped, its new series learned (the child numbered them)
        if self._pending:
            msg = "submit() before the previous batch's result() was taken"
            raise RuntimeError(msg)
        sock = self._socket()
        if self._progress is not None:
            self._progress[0] = -1
        self._submitted = len(values)
        try:
            _send_values(sock, values, now)
        except OSError as exc:
            raise self._died(exc) from exc
        self._pending = True

    def result(self, stop: threading.Event | None = None) -> tuple[SampleBatch, list[Malformed]] | None:
        """The submitted batch, decoded, with registry ids; None when ``stop`` was set first.

        After None the batch is still in the child: take it with another call or :meth:`discard` it.
        Raises :class:`DecodeWorkerError` when the child died or failed. The same as :meth:`take`
        then :meth:`finish`.
        """
        taken = self.take(stop)
        return None if taken is None else self.finish(taken)

    def take(self, stop: threading.Event | None = None) -> Taken | None:
        """The child's answer to the submitted batch, read off its socket as it came, so that the
        next batch can be submitted at once; :meth:`finish` then unpickles it and gives the
        samples with registry ids. The agent's part of a batch (unpickling it, registering its new
        series) done while the child decodes the next one keeps the child busy: with 100k new
        series that part is 0.05 - 0.1 s per 25k series, and 0.01 s per 30k samples after.

        None when ``stop`` was set first (the batch is still in the child, as for :meth:`result`).
        Raises :class:`DecodeWorkerError` when the child died.
        """
        if not self.pending:
            msg = "result() / take() without a submitted batch"
            raise RuntimeError(msg)
        frame = self._receive(stop)
        if frame is None:
            return None
        self._pending = False
        return Taken(frame)

    def finish(self, taken: Taken) -> tuple[SampleBatch, list[Malformed]]:
        """The samples of a batch :meth:`take` read, with registry ids (its new series registered).

        Batches are finished in the order they were taken, each once: the child numbers series in
        that order. Raises :class:`DecodeWorkerError` when the child's answer was a failure (or out
        of step): the worker is then unusable, and the batch submitted since is lost with it.
        """
        reply = self._reply(taken.frame)
        self.skipped_points += reply.skipped_points
        ids = self._registry_ids(reply.series)
        return (
            SampleBatch(ids, reply.timestamps, reply.values),
            [Malformed(*m) for m in reply.malformed],
        )

    def forget_series(self) -> None:
        """Forget the registry ids of the child's series (the registry evicted some): each is
        looked up again by its key the next time it comes."""
        self._ids.fill(_UNRESOLVED)

    def discard(self) -> None:
        """Forget the submitted batch; its result is read and dropped before the next submit."""
        if self._pending:
            self._discarded = True

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise DecodeWorkerError("the decode worker is not running")
        if self._broken is not None:
            raise DecodeWorkerError(
                f"the decode worker is unusable (close and start it again): {self._broken}"
            )
        return self._sock

    def _failed(self, why: str) -> DecodeWorkerError:
        """Mark the child unusable: what it held is lost, it has to be closed and started again."""
        self._broken = why
        self._pending = self._discarded = False
        return DecodeWorkerError(f"the decode worker {why}")

    def _died(self, exc: BaseException | None = None) -> DecodeWorkerError:
        process = self._process
        code = None
        if process is not None:  # its socket closes a moment before it can be waited for
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(0.5)
        return self._failed(f"exited with code {code}" if code is not None else f"connection lost ({exc})")

    def _receive(self, stop: threading.Event | None) -> bytearray | None:
        """The child's next frame, as it came; None when ``stop`` was set first."""
        sock = self._socket()
        selector = self._selector
        assert selector is not None  # set with the socket
        while True:
            try:
                ready = selector.select(_WAIT_SLICE)
            except (OSError, ValueError) as exc:
                raise self._died(exc) from exc
            if ready:
                break
            if not self.alive:
                raise self._died()
            if stop is not None and stop.is_set():
                return None
        try:
            return _recv_frame(sock)
        except (EOFError, OSError) as exc:
            raise self._died(exc) from exc

    def _reply(self, frame: bytearray) -> _Reply:
        """A frame unpickled and checked, its series table updates applied (frames in order)."""
        try:
            with _collector_paused():  # a reply holds no cycles: tuples of strings, and arrays
                reply = pickle.loads(frame)  # noqa: S301 - our own child process, over a private socket pair
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise self._failed(f"sent an unreadable reply: {exc}") from exc
        if isinstance(reply, _Failure):
            raise self._failed(f"failed:\n{reply.traceback}")
        if not isinstance(reply, _Reply):
            raise self._failed(f"sent an unexpected reply: {type(reply).__name__}")
        self._learn(reply)
        return reply

    # ------------------------------------------------------------------ series ids
    def _learn(self, reply: _Reply) -> None:
        """Record the series the child saw for the first time (resolved lazily, see _registry_ids)."""
        if reply.reset:
            self._known = 0
            self._local_keys.clear()
            self._ids.fill(_UNRESOLVED)
        if reply.first_new != self._known:
            raise self._failed(f"is out of step: series {reply.first_new} != {self._known}")
        n = self._known = reply.first_new + len(reply.new_series)
        self._local_keys.extend(reply.new_series)
        if n > self._ids.shape[0]:
            grown = np.full(max(n, 2 * self._ids.shape[0]), _UNRESOLVED, dtype=np.int64)
            grown[: self._ids.shape[0]] = self._ids
            self._ids = grown

    def _registry_ids(self, local: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Registry ids for the child's local ids, registering series seen for the first time."""
        if local.size == 0:
            return local.astype(np.int64, copy=False)
        ids = self._ids[local]
        if int(ids.min()) >= 0:
            return ids
        unresolved = ids == _UNRESOLVED
        if unresolved.any():
            # in the order the child first saw them, as the in-process decoder registers them
            new = np.unique(local[unresolved])
            with _collector_paused():
                keys = [
                    SeriesKey.presorted(name, tuple(zip(names, values, strict=True)))  # sorted by the child
                    for name, names, values in map(self._local_keys.__getitem__, new.tolist())
                ]
                self._ids[new] = self.registry.ids_for(keys, self.owner)
            ids = self._ids[local]
        dropped = int(np.count_nonzero(ids == DROPPED))
        if dropped:
            self.registry.dropped += dropped  # as SeriesRegistry.id_for counts them: once per sample
        return ids


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while series are registered in bulk.

    Registering allocates only keys and tuples of strings, which form no cycles; with the
    collector on, every 700 of them start a pass that finds nothing to free (100k new series
    in batches of 25k: 0.29 s -> 0.21 s, with SeriesKey.presorted and the bulk ids_for). The
    same holds for unpickling the child's replies (100k new series: 0.19 s -> 0.05 s).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
