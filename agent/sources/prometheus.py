"""Samples from PromQL queries run against a Prometheus server every ``interval``.

Each configured query runs as an instant query; every series it returns becomes the
:class:`~detectors.SeriesKey` named after the query, with the result's labels (``__name__``
dropped). Queries are evaluated on one grid, the multiples of ``interval`` since the epoch (the
last grid point at or before the clock's time), so every replica, and a backfill, sees the same
samples at the same timestamps. The first successful contact also backfills the last
``backfill`` seconds with range queries on that grid, so detectors start warm.

Active/standby: given a :class:`~agent.leader.LeaderState` (the executor's Lease), the source
polls only while this replica holds it. A standby sends no query after the one validation at
start. On taking the Lease over, the source backfills the grid points it has not evaluated
itself, at most ``backfill`` seconds of them, up to now, and then polls; on losing it, it stops
at once, and a round whose answers arrive after the Lease was lost is dropped, not handed out.

A query Prometheus rejects (HTTP 400, ``bad_data``: a PromQL syntax error) cannot be fixed by
retrying, so it raises :class:`~agent.sources.SourceStartupError` at the first successful
contact: from :meth:`PrometheusSource.start` when the server is up then, else from the
:meth:`PrometheusSource.poll` that first reaches it. Everything else (the server down, slow,
answering 5xx) is counted in ``aiops_source_errors{source="prometheus",kind=...}``, turns
readiness off and is retried with backoff; it never escapes the source.

The source reads and waits on the injected clock only; HTTP calls are bounded by ``timeout``
from the request to the whole answer parsed (a server trickling its answer a byte at a time
included), and an answer by ``max_response_bytes``. A call past its ``timeout`` is left to finish
on its own thread and no other is sent until it has: one call at a time, whatever the server does.
Samples whose timestamp is not the evaluation's (not finite, or off the queried range by more than
a step) are dropped and counted (``kind="bad_sample"``).
"""

from __future__ import annotations

import ast
import contextlib
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from agent.backoff import Backoff
from agent.clock import Clock
from agent.config import ConfigError, PrometheusQuery, PrometheusSourceConfig
from agent.metrics import AgentMetrics
from agent.sources.base import Polled, SourceStartupError
from agent.yamlloc import LocatedError, Location
from detectors import SampleBatch, SeriesKey, SeriesRegistry
from remediations.jsontext import loads as loads_json

if TYPE_CHECKING:
    from agent.leader import LeaderState

log = logging.getLogger("aiops.sources.prometheus")

#: The timeout of the one contact attempt :meth:`PrometheusSource.start` makes (capped by the config's).
START_TIMEOUT = 2.0
#: Prometheus refuses range queries of more than 11,000 points per series; backfill in chunks below.
MAX_POINTS_PER_RANGE = 10_000

_STATUS_MESSAGE = re.compile(r"HTTP Status Code (\d+) \((.*)\)\Z", re.DOTALL)

T = TypeVar("T")


class _TooLargeError(Exception):
    """An answer past ``max_response_bytes``."""


class _CappedBody:
    """A urllib3 response whose body is read to at most ``limit`` bytes (decompressed)."""

    def __init__(self, raw: Any, limit: int) -> None:
        self._raw = raw
        self._limit = limit

    def stream(self, amt: int | None = 2**16, decode_content: bool | None = None) -> Iterator[bytes]:
        read = 0
        for chunk in self._raw.stream(amt, decode_content=decode_content):
            read += len(chunk)
            if read > self._limit:
                self._raw.close()
                msg = f"the answer is larger than max_response_bytes ({self._limit} bytes)"
                raise _TooLargeError(msg)
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _CappedAdapter(HTTPAdapter):
    """The client's adapter (no retries), reading no answer past ``limit`` bytes."""

    def __init__(self, limit: int, max_retries: Retry) -> None:
        self.limit = limit
        super().__init__(max_retries=max_retries)

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.limit:
            resp.close()
            msg = f"the answer is {int(length)} bytes, more than max_response_bytes ({self.limit})"
            raise _TooLargeError(msg)
        response = super().build_response(req, resp)
        response.raw = _CappedBody(resp, self.limit)
        return response


class _CallError(Exception):
    """A failed call: ``kind`` labels the error metric; ``rejected`` marks a query Prometheus refuses."""

    def __init__(self, kind: str, detail: str, *, query_only: bool = False, rejected: bool = False) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        #: The server answered, the problem is this query's (HTTP 400/422): other queries may still work.
        self.query_only = query_only
        #: Prometheus refused to parse the query (HTTP 400): retrying cannot fix it.
        self.rejected = rejected


@dataclass(frozen=True, slots=True)
class _Series:
    labels: Mapping[str, str]
    timestamps: np.ndarray[Any, np.dtype[np.float64]]
    values: np.ndarray[Any, np.dtype[np.float64]]


class PrometheusSource:
    """Runs the configured PromQL queries every ``interval`` and hands out their samples as batches."""

    name = "prometheus"

    def __init__(
        self,
        config: PrometheusSourceConfig,
        series: SeriesRegistry,
        metrics: AgentMetrics,
        clock: Clock,
        stop: threading.Event,
        environ: Mapping[str, str] | None = None,
        leader: LeaderState | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        headers: dict[str, str] | None = None
        if config.bearer_token_env is not None:
            token = env.get(config.bearer_token_env)
            if token is None:
                msg = f"environment variable {config.bearer_token_env} is not set"
                where = Location("<environment>", 0, 0)
                raise ConfigError([LocatedError(where, "sources.prometheus.bearer_token_env", msg)])
            headers = {"Authorization": f"Bearer {token}"}
        self.config = config
        self.series = series
        self.metrics = metrics
        self.clock = clock
        self.stop = stop
        self.leader = leader
        """Polls only while this says the replica leads; None: always (one replica, no Lease)."""
        self.url = config.url.rstrip("/")
        # No retries inside urllib3: they would sleep on the wall clock and hide failures from the
        # metrics. The source retries by itself, with backoff on the injected clock.
        # (requests' own default: read=False re-raises a read timeout as itself, a ReadTimeout.)
        retry = Retry(total=0, read=False)
        session = requests.Session()
        session.verify = config.verify_tls
        self._client = PrometheusConnect(
            url=self.url,
            headers=headers,
            disable_ssl=not config.verify_tls,
            retry=retry,
            timeout=config.timeout,
            session=session,
        )
        # mounted after the client's own adapter, which it replaces: the same retries, a capped answer
        session.mount(self.url, _CappedAdapter(config.max_response_bytes, retry))
        self._calling: threading.Thread | None = None  # a call abandoned at its timeout, still running
        initial = min(1.0, config.interval)
        self._backoff = Backoff(initial=initial, maximum=max(initial, min(30.0, config.interval)))
        self._ready = False
        self._started = False
        self._closed = False
        self._validated = False
        self._backfilled = config.backfill <= 0
        self._active: bool | None = None  # polling: holding the Lease, or no Lease asked (None: not yet)
        self._last: int | None = None  # the last grid point (index) this replica handed out
        self._due = 0.0  # when poll next calls Prometheus: the next grid point, or a retry
        self.metrics.source_ready.labels(self.name).set(0)
        self.metrics.prometheus_active.set(0)

    @property
    def ready(self) -> bool:
        """True once a query succeeded, until a call fails for a reason other than the query itself.

        A standby is ready: standing by is its work (it validates its queries at start, or at
        the takeover if Prometheus did not answer then). Its ``aiops_source_ready`` gauge stays
        0, since it is not connected: the replica that polls says whether Prometheus answers.
        """
        return self._ready or self.standing_by

    @property
    def standing_by(self) -> bool:
        """Whether the Lease is held elsewhere (or not yet by anyone): this replica does not poll."""
        return self.leader is not None and self._active is not True and not self._closed

    @property
    def active(self) -> bool:
        """Whether this replica polls Prometheus (as of the last :meth:`poll`)."""
        return self._active is True

    def start(self) -> None:
        """Contact Prometheus once, briefly, and validate every query if it answers.

        Raises :class:`SourceStartupError` when Prometheus rejects a query. When Prometheus is
        down or slow this returns after at most ``min(timeout, START_TIMEOUT)`` per attempt, not
        ready; the queries are then validated at the first successful contact.
        """
        self._started = True
        now = self.clock.now()
        self._due = now
        try:
            self._validate(now, min(self.config.timeout, START_TIMEOUT))
        except _CallError as exc:
            self._failed(exc, "start")
            return
        log.info("Prometheus at %s accepted %d queries", self.url, len(self.config.queries))

    def poll(self, timeout: float) -> Polled | None:
        """One round of queries when it is due (the backfill first), else wait up to ``timeout``.

        A standby (the Lease held elsewhere) sends nothing and waits ``timeout``.
        """
        if not self._started:
            msg = "PrometheusSource.poll() called before start()"
            raise RuntimeError(msg)
        if self._closed or self.stop.is_set():
            return None
        if not self._holds_lease():
            self.clock.wait(timeout, self.stop)
            return None
        now = self.clock.now()
        if now < self._due:
            self.clock.wait(min(timeout, self._due - now), self.stop)
            return None
        point = self._grid_point(now)
        backfill = not self._backfilled
        try:
            if not self._validated:
                self._validate(now, self.config.timeout)
            batch = self._backfill(point) if backfill else self._round(point)
        except _CallError as exc:
            self._failed(exc, "poll")
            return None
        if not self._holds_lease():
            at = point * self.config.interval
            log.warning("the Lease was lost while querying: the answers at %.3f are dropped", at)
            return None
        self._backfilled = True
        self._last = point
        self._succeeded(point)
        return Polled(self.name, batch) if len(batch) else None

    def commit(self, polled: Polled) -> None:
        """Nothing to acknowledge: Prometheus keeps its data whatever the agent does."""

    def close(self) -> None:
        """Close the HTTP session; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._set_ready(False)
        self._client.close()

    # ------------------------------------------------------------------ rounds

    def _validate(self, now: float, timeout: float) -> None:
        """Run each query once; raise SourceStartupError naming every query Prometheus rejects."""
        rejected: list[str] = []
        queries = self.config.queries or [PrometheusQuery(name="probe", query="time()")]
        for query in queries:
            try:
                self._instant(query.query, now, timeout)
            except _CallError as exc:
                if exc.rejected:
                    rejected.append(f"query {query.name!r} ({query.query}) rejected: {exc.detail}")
                elif exc.query_only:
                    self._count(exc.kind)
                    log.warning("query %r (%s) failed at validation: %s", query.name, query.query, exc.detail)
                else:
                    raise
        if rejected:
            self._set_ready(False)
            msg = f"Prometheus at {self.url} rejected {len(rejected)} query(ies): " + "; ".join(rejected)
            raise SourceStartupError(msg)
        self._validated = True
        self._set_ready(True)

    def _holds_lease(self) -> bool:
        """Whether to poll now; on a change, take over (backfill next) or stand by."""
        active = self.leader is None or self.leader.is_leader()
        if active == self._active:
            return active
        previous, self._active = self._active, active
        self.metrics.prometheus_active.set(1 if active else 0)
        if not active:
            self._set_ready(False)
            log.info("the Lease is held elsewhere: standing by, no queries to %s", self.url)
        elif previous is False:  # a takeover: backfill what this replica has not seen, then poll
            self._backfilled = self.config.backfill <= 0
            self._due = self.clock.now()
            self._backoff.reset()
            log.info("holding the Lease: polling Prometheus at %s, backfilling first", self.url)
        return active

    def _grid_point(self, now: float) -> int:
        """The index of the last grid point at or before ``now`` (after the last one handed out)."""
        point = math.floor(now / self.config.interval)
        return point if self._last is None else max(point, self._last + 1)

    def _round(self, point: int) -> SampleBatch:
        """Every query as an instant query at grid ``point``; a query-specific error skips that query."""
        at = point * self.config.interval
        parts: list[SampleBatch] = []
        for query in self.config.queries:
            try:
                results = self._instant(query.query, at, self.config.timeout)
            except _CallError as exc:
                if not exc.query_only:
                    raise
                self._count(exc.kind)
                log.warning("query %r (%s) failed: %s", query.name, query.query, exc.detail)
                continue
            parts.append(self._to_batch(query.name, results))
        return SampleBatch.concat(parts)

    def _backfill(self, end: int) -> SampleBatch:
        """Range queries over the grid points up to ``end`` this replica has not handed out, at most
        the last ``backfill`` seconds of them, sorted by time."""
        step = self.config.interval
        first_point = end - math.floor(self.config.backfill / step)
        if self._last is not None:
            first_point = max(first_point, self._last + 1)
        started = self.clock.now()
        parts: list[SampleBatch] = []
        for query in self.config.queries:
            for first in range(first_point, end + 1, MAX_POINTS_PER_RANGE):
                last = min(end, first + MAX_POINTS_PER_RANGE - 1)
                try:
                    results = self._range(query.query, first * step, last * step, step)
                except _CallError as exc:
                    if exc.rejected:
                        self._set_ready(False)
                        msg = (
                            f"Prometheus at {self.url} rejected the backfill range query of "
                            f"query {query.name!r} ({query.query}): {exc.detail}"
                        )
                        raise SourceStartupError(msg) from exc
                    if not exc.query_only:
                        raise
                    self._count(exc.kind)
                    log.warning("backfill of query %r (%s) failed: %s", query.name, query.query, exc.detail)
                    break
                parts.append(self._to_batch(query.name, results))
        batch = SampleBatch.concat(parts)
        if len(batch) > 1:
            order = np.argsort(batch.timestamps, kind="stable")
            batch = SampleBatch(batch.series[order], batch.timestamps[order], batch.values[order])
        took = max(0.0, self.clock.now() - started)
        self.metrics.prometheus_backfill_seconds.observe(took)
        log.info(
            "backfilled %d samples over %.0f s from %s in %.3f s",
            len(batch),
            max(0, end - first_point) * step,
            self.url,
            took,
        )
        return batch

    # ------------------------------------------------------------------ HTTP

    def _instant(self, query: str, at: float, timeout: float) -> list[_Series]:
        """An instant query evaluated at ``at``, parsed."""
        params = {"time": repr(at), "timeout": repr(timeout)}
        self.metrics.prometheus_queries.labels("instant").inc()
        with self._translated(timeout):
            results = self._within(
                timeout,
                lambda: _parse_instant(self._client.custom_query(query, params=params, timeout=timeout)),
            )
        return self._on_grid(results, at, at)

    def _range(self, query: str, start: float, end: float, step: float) -> list[_Series]:
        """A range query over ``[start, end]`` at ``step``, parsed."""
        timeout = self.config.timeout
        # The client rounds start and end to whole seconds; exact values go in params, which win.
        params = {"start": repr(start), "end": repr(end), "timeout": repr(timeout)}
        self.metrics.prometheus_queries.labels("range").inc()
        with self._translated(timeout):
            results = self._within(
                timeout,
                lambda: _parse_range(
                    self._client.custom_query_range(
                        query,
                        start_time=datetime.fromtimestamp(start, tz=UTC),
                        end_time=datetime.fromtimestamp(end, tz=UTC),
                        step=repr(step),
                        params=params,
                        timeout=timeout,
                    )
                ),
            )
        return self._on_grid(results, start, end)

    def _within(self, timeout: float, call: Callable[[], T]) -> T:
        """``call()`` on its own thread, given ``timeout`` seconds for all of it (requests' own
        timeout bounds each read, not the answer: a byte a second never trips it).

        Past the timeout the call is left to end on its own (its socket reads are bounded, its
        answer is capped) and no other call starts until it has, so there is one at most.
        """
        if self._calling is not None and self._calling.is_alive():
            msg = "the previous call, given up at its timeout, is still being answered"
            raise _CallError("timeout", msg)
        outcome: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                outcome.append((True, call()))
            except BaseException as exc:  # handed to the caller, which translates it
                outcome.append((False, exc))

        thread = threading.Thread(target=run, name="aiops-prometheus-call", daemon=True)
        thread.start()
        thread.join(timeout)  # real time, as the HTTP timeouts are: the wait is on the network
        if thread.is_alive():
            self._calling = thread
            raise _CallError("timeout", f"no whole answer within {timeout:g} s")
        ok, value = outcome[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _on_grid(self, results: list[_Series], start: float, end: float) -> list[_Series]:
        """``results`` without the samples timed off ``[start, end]`` by more than a step (a
        server's bug or a hostile answer: the detectors are fed only the times queried)."""
        slack = self.config.interval
        out: list[_Series] = []
        dropped = 0
        for r in results:
            keep = np.isfinite(r.timestamps) & (r.timestamps >= start - slack) & (r.timestamps <= end + slack)
            if keep.all():
                out.append(r)
                continue
            dropped += int((~keep).sum())
            if keep.any():
                out.append(_Series(r.labels, r.timestamps[keep], r.values[keep]))
        if dropped:
            self.metrics.source_errors.labels(self.name, "bad_sample").inc(dropped)
            log.warning("dropped %d samples timed off the queried range [%.3f, %.3f]", dropped, start, end)
        return out

    @contextlib.contextmanager
    def _translated(self, timeout: float) -> Iterator[None]:
        """Turn every way a call can fail into a :class:`_CallError`."""
        try:
            yield
        except PrometheusApiClientException as exc:
            raise _http_failure(exc) from exc
        except requests.exceptions.Timeout as exc:
            raise _CallError("timeout", f"no answer within {timeout:g} s: {exc}") from exc
        except requests.exceptions.JSONDecodeError as exc:
            raise _CallError("bad_response", f"the answer is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise _CallError("bad_response", "the answer's JSON is nested too deeply") from exc
        except _TooLargeError as exc:
            raise _CallError("bad_response", str(exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise _CallError("connection", str(exc)) from exc
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise _CallError("bad_response", f"unexpected answer: {exc!r}") from exc

    # ------------------------------------------------------------------ bookkeeping

    def _to_batch(self, name: str, results: Sequence[_Series]) -> SampleBatch:
        if not results:
            return SampleBatch.empty()
        ids = [
            np.full(
                r.timestamps.shape[0], self.series.id_for(SeriesKey.of(name, r.labels), self.name), np.int64
            )
            for r in results
        ]
        return SampleBatch(
            np.concatenate(ids),
            np.concatenate([r.timestamps for r in results]),
            np.concatenate([r.values for r in results]),
        )

    def _succeeded(self, point: int) -> None:
        self._backoff.reset()
        self._set_ready(True)
        # The next round at the next grid point; points missed while busy or down are skipped.
        self._due = (point + 1) * self.config.interval

    def _failed(self, exc: _CallError, where: str) -> None:
        self._count(exc.kind)
        self._set_ready(False)
        delay = self._backoff.next_delay()
        self._due = self.clock.now() + delay
        log.warning(
            "Prometheus at %s unavailable (%s, %s): %s; retrying in %.1f s",
            self.url,
            where,
            exc.kind,
            exc.detail,
            delay,
        )

    def _count(self, kind: str) -> None:
        self.metrics.source_errors.labels(self.name, kind).inc()

    def _set_ready(self, ready: bool) -> None:
        self._ready = ready
        self.metrics.source_ready.labels(self.name).set(1 if ready else 0)


def _http_failure(exc: PrometheusApiClientException) -> _CallError:
    """Classify a non-200 answer; the client only keeps ``HTTP Status Code N (b'body')``."""
    text = str(exc)
    match = _STATUS_MESSAGE.match(text)
    if match is None:
        return _CallError("http_error", text)
    status = int(match[1])
    detail = _error_text(match[2])
    if status == 400:
        return _CallError("query_error", detail, query_only=True, rejected=True)
    if status == 422:  # the query parsed but failed on this data (e.g. many-to-many matching)
        return _CallError("query_error", detail, query_only=True)
    if status >= 500:
        return _CallError("server_error", f"HTTP {status}: {detail}")
    return _CallError("http_error", f"HTTP {status}: {detail}")


def _error_text(body_repr: str) -> str:
    """Prometheus's own ``error`` field from the repr of the body bytes, else the body as text."""
    try:
        body = ast.literal_eval(body_repr)
    except (ValueError, SyntaxError):
        return body_repr
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        doc = loads_json(raw)
    except ValueError:
        return raw.strip()[:500]
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        kind = doc.get("errorType")
        return f"{doc['error']} ({kind})" if isinstance(kind, str) else doc["error"]
    return raw.strip()[:500]


def _point(pair: Sequence[Any]) -> tuple[float, float]:
    timestamp, value = pair
    return float(timestamp), float(value)  # float() reads Prometheus's "NaN", "+Inf", "-Inf"


def _labels(metric: Any) -> dict[str, str]:
    """A series' labels as answered; ValueError (a bad answer) for names or values that are not
    strings of UTF-8 text: a lone surrogate (``\\udcff`` in the JSON, which Python's JSON reads)
    could be carried into no log line, signal or Kafka message after it."""
    if not isinstance(metric, dict):
        msg = f"a series' metric is {type(metric).__name__}, not an object"
        raise TypeError(msg)
    for key, value in metric.items():
        if not isinstance(key, str) or not isinstance(value, str):
            msg = f"label {key!r}={value!r} is not a string pair"
            raise TypeError(msg)
        key.encode()  # UnicodeEncodeError, a ValueError, for a lone surrogate
        value.encode()
    return metric


def _parse_instant(result: Any) -> list[_Series]:
    """An instant query's ``result``: a vector of series, or a scalar ``[t, "v"]``."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        t, v = _point(result)
        return [_Series({}, np.array([t]), np.array([v]))]
    out = []
    for item in result:
        if "value" not in item:  # a native histogram sample: not a float series
            continue
        t, v = _point(item["value"])
        out.append(_Series(dict(_labels(item["metric"])), np.array([t]), np.array([v])))
    return out


def _parse_range(result: Any) -> list[_Series]:
    """A range query's ``result``: a matrix of series, each with ``values: [[t, "v"], ...]``."""
    out = []
    for item in result:
        pairs = item.get("values")
        if not pairs:
            continue
        # numpy reads Prometheus's "NaN", "+Inf", "-Inf" as float() does, without a Python loop
        points = np.array(pairs, dtype=np.float64).reshape(-1, 2)
        out.append(_Series(dict(_labels(item["metric"])), points[:, 0].copy(), points[:, 1].copy()))
    return out
