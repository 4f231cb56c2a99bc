"""The playbooks inside the daemon: engine, hot reload, timers and the Alertmanager route, wired.

:class:`PlaybookRuntime` is what ``agent/app.py`` builds from the ``playbooks`` config section:

- :attr:`PlaybookRuntime.engine` is a SignalSink: add it to the agent's sinks;
- :meth:`PlaybookRuntime.load` loads the directory at start (raises on an invalid set);
- :meth:`PlaybookRuntime.run` (in a thread) ticks the engine's timers every second and polls the
  directory every ``reload_interval``;
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
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.engine = PlaybookEngine(
            EMPTY_SET,
            executor if executor is not None else DryRunExecutor(),
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
        self.executor = executor
        bind = getattr(executor, "bind", None)
        if callable(bind):  # executors with results that come later (approvals) report to the engine
            bind(self.engine.report)
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
                self.engine.tick()
                tick = getattr(self.executor, "tick", None)
                if callable(tick):  # approvals decided and expired
                    tick()
                if self.watcher is not None and self.clock.now() >= next_poll:
                    next_poll = self.clock.now() + self.config.reload_interval
                    self.watcher.poll()
            except Exception:  # a bug in one turn must not stop the timers for good
                log.exception("playbook runtime turn failed")
            if self.clock.wait(TICK, stop):
                return

    def start(self, stop: threading.Event) -> None:
        """Run :meth:`run` in a daemon thread."""
        self._thread = threading.Thread(target=self.run, args=(stop,), name="aiops-playbooks", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the thread started by :meth:`start` (after ``stop`` is set)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def alertmanager_route(self) -> Route:
        """The ``POST /alertmanager`` handler, delivering alert signals to the engine."""
        return alertmanager_route(self.engine.emit, self.clock.now, self.metrics)
