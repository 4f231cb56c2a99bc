"""The action pool: proposals off the caller's thread, bounded, outcomes reported to the engine."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from agent.metrics import AgentMetrics
from agent.playbook.requests import Proposal, RecordingExecutor, outcome
from agent.pool import INLINE, ActionPool, PoolSettings
from remediations.registry import make_request
from remediations.types import ActionResult, ActionStatus, Target
from tests.servers.common import eventually
from tests.unit.test_playbook_engine import T0, Harness, playbook

WEB = Target("Deployment", "shop", "web")


class GatedExecutor(RecordingExecutor):
    """Answers like RecordingExecutor, but only once the test opens the gate; fails retryably
    while ``flaky`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.started: list[str] = []
        self.flaky = False

    def submit(self, proposal: Proposal) -> ActionResult:
        self.started.append(proposal.key)
        assert self.gate.wait(10), "the test never opened the gate"
        if self.flaky:
            result = outcome(proposal, ActionStatus.FAILED, "API busy")
            return ActionResult(
                result.status, result.message, result.action, result.key, retryable=True, retry_after=60.0
            )
        return super().submit(proposal)


@pytest.fixture
def gated() -> Iterator[GatedExecutor]:
    ex = GatedExecutor()
    yield ex
    ex.gate.set()


def proposal(incident: str) -> Proposal:
    req = make_request("restart", WEB, {}, playbook="pb", incident=incident, step="actions[0]")
    return Proposal(req, T0)


def test_submit_answers_running_at_once_and_reports_the_outcome_later(gated: GatedExecutor) -> None:
    metrics = AgentMetrics()
    pool = ActionPool(gated, PoolSettings(workers=2, queue=4, deadline=None), metrics=metrics)
    reported: list[ActionResult] = []
    pool.bind(reported.append)
    first = pool.submit(proposal("inc-1"))
    assert first.status is ActionStatus.RUNNING
    again = pool.submit(proposal("inc-1"))
    assert (again.status, again.message) == (ActionStatus.RUNNING, "already queued or running")
    eventually(lambda: gated.started == [first.key], timeout=5, what="the worker taking it")
    assert reported == []
    assert pool.pending() == 1
    assert metrics.registry.get_sample_value("aiops_actions_running") == 1.0
    assert metrics.registry.get_sample_value("aiops_actions_queued") == 0.0
    gated.gate.set()
    eventually(lambda: len(reported) == 1, timeout=5, what="the outcome reported")
    assert (reported[0].key, reported[0].status) == (first.key, ActionStatus.EXECUTED)
    assert gated.started == [first.key], "queued once, run once"
    assert pool.pending() == 0
    pool.close()


def test_a_full_queue_answers_failed_and_retryable(gated: GatedExecutor) -> None:
    pool = ActionPool(gated, PoolSettings(workers=1, queue=1, deadline=None))
    pool.bind(lambda _: None)
    assert pool.submit(proposal("inc-1")).status is ActionStatus.RUNNING
    eventually(lambda: len(gated.started) == 1, timeout=5, what="the only worker busy")
    assert pool.submit(proposal("inc-2")).status is ActionStatus.RUNNING  # waits in the queue
    full = pool.submit(proposal("inc-3"))
    assert full.status is ActionStatus.FAILED
    assert full.retryable
    assert full.retry_after == 10.0
    assert "the action pool is full (1 running, 1 waiting)" in full.message
    gated.gate.set()
    eventually(lambda: pool.pending() == 0, timeout=5, what="the pool drained")
    assert len(gated.started) == 2
    pool.close()
    stopped = pool.submit(proposal("inc-4"))
    assert (stopped.status, stopped.message) == (ActionStatus.FAILED, "the agent is stopping: not run")


def test_inline_runs_in_the_caller_and_answers_the_outcome() -> None:
    ex = RecordingExecutor()
    pool = ActionPool(ex, INLINE)
    result = pool.submit(proposal("inc-1"))
    assert result.status is ActionStatus.EXECUTED
    assert not any(t.name.startswith("aiops-action") for t in threading.enumerate())


def engine_with_pool(gated: GatedExecutor, *texts: str) -> tuple[Harness, ActionPool]:
    h = Harness(*texts)
    pool = ActionPool(gated, PoolSettings(workers=2, queue=8, deadline=None))
    h.engine.executor = pool
    pool.bind(h.engine.report)
    return h, pool


def test_an_action_waiting_in_the_pool_keeps_its_target_in_flight(gated: GatedExecutor) -> None:
    first = playbook("restart-web", trigger={"for": 0}, verify={"clears": False})
    rival = playbook(
        "restart-web-on-latency", trigger={"for": 0, "metric": "latency"}, verify={"clears": False}
    )
    h, pool = engine_with_pool(gated, first, rival)
    h.signal(0)  # restart-web acts; its action waits in the pool
    eventually(lambda: len(gated.started) == 1, timeout=5, what="the action running")
    h.signal(30, metric="latency")  # a rival of equal priority fires on the same target meanwhile
    h.signal(60)
    assert [s for _, s in h.transitions("restart-web")] == ["pending", "firing", "acting"]
    assert [s for _, s in h.transitions("restart-web-on-latency")] == ["pending", "firing", "suppressed"]
    (why,) = [e.reason for e in h.audit.incident_events() if e.state.value == "suppressed"]
    assert "restart-web (priority 0" in why
    assert "is remediating this target" in why
    assert len(gated.started) == 1, "no second action on the target while the first waits"
    gated.gate.set()
    eventually(
        lambda: [s for _, s in h.transitions("restart-web")][-1] == "resolved",
        timeout=5,
        what="the outcome resuming the incident",
    )
    (done,) = [e for e in h.audit.incident_events() if e.status == "executed"]
    assert done.action == "restart"
    pool.close()


def test_a_retryable_failure_reported_later_is_tried_again(gated: GatedExecutor) -> None:
    h, pool = engine_with_pool(gated, playbook("restart-web", trigger={"for": 0}))
    gated.flaky = True
    gated.gate.set()
    h.signal(0)
    eventually(
        lambda: any(e.status == "retry" for e in h.audit.incident_events()),
        timeout=5,
        what="the retry scheduled from the reported failure",
    )
    gated.flaky = False
    h.signal(30)
    h.run_until(61)  # the action asked for 60 s
    eventually(lambda: len(gated.started) == 2, timeout=5, what="the second try")
    eventually(
        lambda: any(e.status == "executed" for e in h.audit.incident_events()),
        timeout=5,
        what="the second try's outcome",
    )
    pool.close()


class SlowTicks(RecordingExecutor):
    """An executor whose approvals tick waits on the API (here: on a gate)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        self.gate.wait(10)


def test_a_slow_approvals_tick_runs_off_the_timer_thread_and_never_twice_at_once() -> None:
    ex = SlowTicks()
    pool = ActionPool(ex, PoolSettings(workers=1, queue=1, deadline=None))
    pool.tick()  # returns at once although the tick waits
    pool.tick()  # the first is still running: not started again
    eventually(lambda: ex.ticks == 1, timeout=5, what="the tick running")
    assert ex.ticks == 1
    ex.gate.set()
    pool.close()
    inline = SlowTicks()
    inline.gate.set()
    ActionPool(inline, INLINE).tick()
    assert inline.ticks == 1, "inline: in the caller"
