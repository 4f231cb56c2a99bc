"""The action pool: the executor's work off the engine loop, on a bounded pool with deadlines.

:class:`ActionPool` is an :class:`~agent.playbook.requests.Executor` around the real one. With
workers, ``submit`` queues the proposal and answers ``running`` at once; a worker runs it within
its deadline (:func:`remediations.kube.deadline`: no API call starts, and no retry waits, past
it, on the clients' clock) and reports the outcome to the playbook engine's ``report``, as an
approval's outcome is reported. So a slow or throttled API server delays the action, never the
loop that ingests and detects, and ``/healthz`` (the loop's) stays honest.

Bounds: ``workers`` threads and ``queue`` proposals waiting; a proposal that finds the queue full
is answered ``failed`` and retryable, so the engine tries again later. A key already queued or
running is not queued twice.

Inline (``workers: 0``) runs each proposal in ``submit`` and answers its outcome there: the replay
uses it to stay deterministic on virtual time, through the same composition as the daemon
(:class:`~agent.playbook.runtime.PlaybookRuntime`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from agent.metrics import AgentMetrics
from agent.playbook.requests import Executor, Proposal, outcome
from remediations.kube import deadline
from remediations.types import ActionResult, ActionStatus

log = logging.getLogger("aiops.pool")

#: A proposal that found the queue full is tried again after this long.
FULL_RETRY = 10.0


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How actions run: ``workers`` threads (0: inline, in the caller), ``queue`` waiting at most,
    each within ``deadline`` seconds (None: none)."""

    workers: int = 4
    queue: int = 64
    deadline: float | None = 120.0

    def __post_init__(self) -> None:
        if self.workers < 0 or self.queue < 1:
            msg = f"action pool: workers must be >= 0 and queue >= 1, got {self.workers} and {self.queue}"
            raise ValueError(msg)
        if self.deadline is not None and not self.deadline > 0:
            msg = f"action pool: deadline must be > 0 seconds, got {self.deadline}"
            raise ValueError(msg)


INLINE = PoolSettings(workers=0, deadline=None)
"""Every action in the caller's thread, no deadline: the replay on virtual time."""


class ActionPool:
    """Runs proposals on a bounded pool of workers, each within its deadline; thread-safe."""

    def __init__(
        self,
        executor: Executor,
        settings: PoolSettings = INLINE,
        *,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.executor = executor
        self.settings = settings
        self.metrics = metrics
        self.report: Callable[[ActionResult], None] | None = None
        self._queue: deque[Proposal] = deque()
        self._keys: set[str] = set()  # queued or running
        self._running = 0
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []  # started with the first proposal queued
        self._ticker: threading.Thread | None = None

    @property
    def inline(self) -> bool:
        """Whether proposals run in the caller's thread."""
        return self.settings.workers == 0

    def bind(
        self, report: Callable[[ActionResult], None], vet: Callable[[Proposal], str | None] | None = None
    ) -> None:
        """Send outcomes that come later (the pool's, the executor's approvals) to ``report``; the
        executor checks approved requests with ``vet`` (the engine's policy)."""
        self.report = report
        bind = getattr(self.executor, "bind", None)
        if callable(bind):
            if vet is None:
                bind(report)
            else:
                bind(report, vet)

    def tick(self) -> None:
        """The executor's own timers (approvals decided and expired), if it has any: inline in the
        caller, else on a thread of their own (an approved action may wait on the API like any
        other; a tick still running is not started again)."""
        tick = getattr(self.executor, "tick", None)
        if not callable(tick):
            return
        if self.inline:
            tick()
            return
        with self._cond:
            if self._closed or (self._ticker is not None and self._ticker.is_alive()):
                return
            self._ticker = threading.Thread(target=tick, name="aiops-action-tick", daemon=True)
            self._ticker.start()

    def submit(self, proposal: Proposal) -> ActionResult:
        """Run ``proposal`` (inline) or queue it and answer ``running``; never raises."""
        if self.inline:
            return self._run(proposal)
        with self._cond:
            if self._closed:
                return outcome(proposal, ActionStatus.FAILED, "the agent is stopping: not run")
            if proposal.key in self._keys:
                return outcome(proposal, ActionStatus.RUNNING, "already queued or running")
            if len(self._queue) >= self.settings.queue:
                result = outcome(
                    proposal,
                    ActionStatus.FAILED,
                    f"the action pool is full ({self.settings.workers} running, "
                    f"{self.settings.queue} waiting): not run, tried again later",
                )
                return replace(result, retryable=True, retry_after=FULL_RETRY)
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._work, name=f"aiops-action-{i}", daemon=True)
                    for i in range(self.settings.workers)
                ]
                for thread in self._threads:
                    thread.start()
            self._queue.append(proposal)
            self._keys.add(proposal.key)
            self._gauge()
            self._cond.notify()
        return outcome(proposal, ActionStatus.RUNNING, "queued in the action pool")

    def pending(self) -> int:
        """Proposals queued or running."""
        with self._cond:
            return len(self._keys)

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking proposals, drop those not started, and wait up to ``timeout`` for the workers."""
        with self._cond:
            self._closed = True
            for dropped in self._queue:
                self._keys.discard(dropped.key)
                log.warning("action %s not started before the agent stopped", dropped.key)
            self._queue.clear()
            self._cond.notify_all()
        for thread in [*self._threads, *([self._ticker] if self._ticker is not None else [])]:
            thread.join(timeout)

    def _run(self, proposal: Proposal) -> ActionResult:
        try:
            with deadline(self.settings.deadline):
                return self.executor.submit(proposal)
        except Exception as exc:  # an executor must not raise; one that does must not kill a worker
            log.exception("executor raised for %s", proposal.key)
            return outcome(proposal, ActionStatus.FAILED, f"executor error: {exc!r}")

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                proposal = self._queue.popleft()
                self._running += 1
                self._gauge()
            result = self._run(proposal)
            with self._cond:
                self._running -= 1
                self._keys.discard(proposal.key)
                self._gauge()
            self._report(result)

    def _report(self, result: ActionResult) -> None:
        if self.report is None:
            log.warning("no one to report %s %s to", result.key, result.status.value)
            return
        try:
            self.report(result)
        except Exception:
            log.exception("engine report failed for %s", result.key)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.actions_queued.set(len(self._queue))
            self.metrics.actions_running.set(self._running)
