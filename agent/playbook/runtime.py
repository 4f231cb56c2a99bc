"""The playbooks inside the daemon: engine, hot reload, timers and the Alertmanager route, wired.

:class:`PlaybookRuntime` is what ``agent/app.py`` builds from the ``playbooks`` config section:

- :attr:`PlaybookRuntime.engine` is a SignalSink: add it to the agent's sinks;
- :attr:`PlaybookRuntime.pool` runs the engine's proposals on the executor: on workers off the
  engine loop in the daemon, inline in the replay (the same composition, one setting apart);
- :meth:`PlaybookRuntime.load` loads the directory at start (raises on an invalid set);
- :meth:`PlaybookRuntime.run` (in a thread) ticks the engine's and executor's timers every second
  (:meth:`PlaybookRuntime.turn`) and polls the directory every ``reload_interval``;
- :meth:`PlaybookRuntime.alertmanager_route` is the handler of ``POST /alertmanager``.
"""

from __future__ import annotations

import logging
import threading

from agent.audit import AuditSink
from agent.clock import Clock
from agent.http import Route
from agent.metrics import AgentMetrics
from agent.playbook.engine import Freshness, PlaybookEngine, TargetFacts
from agent.playbook.events import LogAudit
from agent.playbook.loader import EMPTY_SET
from agent.playbook.requests import DryRunExecutor, Executor
from agent.playbook.settings import PlaybooksConfig
from agent.playbook.watcher import PlaybookWatcher
from agent.pool import INLINE, ActionPool, PoolSettings
from agent.sources.alertmanager import alertmanager_route

log = logging.getLogger("aiops.playbooks")

#: How often the engine's timers (``for:`` windows, verification) are advanced.
TICK = 1.0


class PlaybookRuntime:
    """The playbook engine, its watcher and its timer loop."""

    def __init__(
        self,
        config: PlaybooksConfig,
        clock: Clock,
        metrics: AgentMetrics,
        *,
        executor: Executor | None = None,
        audit: AuditSink | None = None,
        facts: TargetFacts | None = None,
        freshness: Freshness | None = None,
        pool: PoolSettings = INLINE,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.executor = executor
        self.pool = ActionPool(executor if executor is not None else DryRunExecutor(), pool, metrics=metrics)
        """Where the engine's proposals run: workers off the engine loop (the daemon) or inline (replay)."""
        self.engine = PlaybookEngine(
            EMPTY_SET,
            self.pool,
            clock,
            audit if audit is not None else LogAudit(),
            defaults=config.guardrails,
            facts=facts,
            metrics=metrics,
            freshness=freshness,
        )
        self.watcher: PlaybookWatcher | None = None
        if config.directory is not None:
            self.watcher = PlaybookWatcher(
                config.directory,
                clock,
                self.engine.replace_playbooks,
                metrics=metrics,
                status_file=config.status_file,
            )
        # results that come later (the pool's, approvals) are reported to the engine, and an
        # approved request runs only if the engine would have proposed it
        self.pool.bind(self.engine.report, self.engine.vet)
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        """Load the playbook directory now; :class:`~agent.playbook.loader.PlaybookLoadError` if invalid."""
        if self.watcher is not None:
            self.watcher.load_initial()

    def run(self, stop: threading.Event) -> None:
        """Tick the engine every second and poll the directory every ``reload_interval``, until ``stop``."""
        next_poll = self.clock.now() + self.config.reload_interval
        while not stop.is_set():
            try:
                self.turn()
                if self.watcher is not None and self.clock.now() >= next_poll:
                    next_poll = self.clock.now() + self.config.reload_interval
                    self.watcher.poll()
            except Exception:  # a bug in one turn must not stop the timers for good
                log.exception("playbook runtime turn failed")
            if self.clock.wait(TICK, stop):
                return

    def turn(self) -> None:
        """Advance the engine's timers, then the executor's (approvals decided and expired)."""
        self.engine.tick()
        self.pool.tick()

    def start(self, stop: threading.Event) -> None:
        """Run :meth:`run` in a daemon thread."""
        self._thread = threading.Thread(target=self.run, args=(stop,), name="aiops-playbooks", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the thread started by :meth:`start` (after ``stop`` is set)."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.pool.close(timeout)

    def alertmanager_route(self) -> Route:
        """The ``POST /alertmanager`` handler, delivering alert signals to the engine."""
        return alertmanager_route(self.engine.emit, self.clock.now, self.metrics)
