"""Replays run side by side: each (scenario, seed, policy) run in a worker process of its own.

A run is closed-loop and self-contained (its own twin cluster, clock, series and agent), so runs
of one ``aiops replay`` do not depend on each other and can go to as many processes as there are
cores. Each worker holds numpy's pools to one thread (:func:`simulations.replay.run_on_one_core`),
so N workers use N cores. A run's result does not depend on the process it ran in: the same
scenario and seed give the same scores and the same summary bytes at any ``--jobs``.

Workers are *spawned* (a fresh interpreter, not a fork of one that may hold threads and sockets);
each imports the agent once (a few seconds) and then takes runs until none is left, the longest
first. Progress comes back through a queue, in steps, as the runs advance. By default there is a
worker per core, as memory allows (:func:`default_jobs`; a container's limits count). A worker
that dies (the OOM killer) loses no run: what is not finished is made in this process. A worker
whose parent is gone (``aiops replay`` killed) ends within :data:`ORPHAN_CHECK` seconds.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

from simulations.limits import HERE, System, available_cores, available_memory
from simulations.replay import ReplayOptions, run_on_one_core, steps_of
from simulations.result import AGENT, STATIC, PolicyRun
from simulations.scenario import Scenario

log = logging.getLogger(__name__)

#: How many steps a worker advances before it reports them (a few reports a second per worker).
REPORT_EVERY = 200


@dataclass(frozen=True, slots=True)
class Run:
    """One run to make: a scenario (already at its seed) under one policy."""

    key: tuple[int, int, str]
    """(the scenario's index, the seed, the policy): where the result goes."""
    scenario: Scenario
    policy: str

    @property
    def cost(self) -> float:
        """A rough relative cost, to start the longest runs first: steps x services, more with an
        agent (detectors, engine, executor) than without."""
        weight = 3.0 if self.policy == AGENT else 2.0 if self.policy == STATIC else 1.0
        return steps_of(self.scenario) * max(1, len(self.scenario.spec.services)) * weight


#: How often a worker checks that the process that started it is still there (seconds).
ORPHAN_CHECK = 1.0

#: Memory set aside per worker by default: a run of a few services holds about a third of it.
WORKER_MEMORY = 1 << 30


def default_jobs(system: System = HERE) -> int:
    """One worker per core this process may use, but no more than its available memory holds at
    ``WORKER_MEMORY`` each (both as the machine and its cgroup allow: simulations.limits)."""
    jobs = available_cores(system)
    memory = available_memory(system)
    if memory is not None:
        jobs = min(jobs, max(1, memory // WORKER_MEMORY))
    return jobs


def run_all(
    runs: Sequence[Run], options: ReplayOptions, jobs: int, progress: Callable[[int], object]
) -> dict[tuple[int, int, str], PolicyRun]:
    """Make every run, on ``jobs`` worker processes (in this one when ``jobs`` is 1, in order).

    ``progress`` is called in this process with steps done. A run that raises stops the others
    (queued ones are cancelled) and its exception is raised here. A worker that dies (the OOM
    killer, a signal) loses nothing: the runs not finished are made in this process, one at a time.
    """
    if jobs < 1:
        msg = f"jobs: expected at least 1, got {jobs}"
        raise ValueError(msg)
    if jobs == 1 or len(runs) <= 1:
        return _in_this_process(runs, options, progress)
    shipped = replace(options, progress=None)  # a callback does not cross processes; the queue does
    context = multiprocessing.get_context("spawn")
    try:
        steps: multiprocessing.Queue[int] = context.Queue()
    except OSError as exc:  # no POSIX semaphores here (a container without /dev/shm)
        log.warning("replay: no worker processes (%s); making the %d runs one at a time", exc, len(runs))
        return _in_this_process(runs, options, progress)
    results: dict[tuple[int, int, str], PolicyRun] = {}
    broken: Run | None = None
    workers = min(jobs, len(runs))
    start = (steps, os.getpid())
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start, initargs=start) as pool:
        futures: dict[Future[PolicyRun], Run] = {
            pool.submit(_work, run.scenario, run.policy, shipped): run
            for run in sorted(runs, key=lambda r: r.cost, reverse=True)
        }
        pending: set[Future[PolicyRun]] = set(futures)
        try:
            while pending and broken is None:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                _drain(steps, progress)
                for future in done:
                    if isinstance(future.exception(), BrokenProcessPool):
                        broken = broken or futures[future]
                    else:
                        results[futures[future].key] = future.result()  # a run's own error raises
        finally:
            # queued runs are dropped; the running ones end, their progress read meanwhile (a worker
            # whose queue filled the pipe unread would not exit, and the shutdown would wait for ever)
            pool.shutdown(wait=False, cancel_futures=True)
            while not all(future.done() for future in futures):
                wait(futures, timeout=0.25)
                _drain(steps, progress)
        _drain(steps, progress)
    if broken is not None:
        # runs another worker finished before the pool broke are kept
        for future, run in futures.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                results[run.key] = future.result()
        left = [run for run in runs if run.key not in results]
        log.warning(
            "replay: a worker process ended abruptly while making %s seed %d under %s (killed, or out "
            "of memory?); making the %d runs left in this process, one at a time",
            broken.scenario.name,
            broken.scenario.spec.seed,
            broken.policy,
            len(left),
        )
        results |= _in_this_process(left, options, progress)
    return results


def _in_this_process(
    runs: Sequence[Run], options: ReplayOptions, progress: Callable[[int], object]
) -> dict[tuple[int, int, str], PolicyRun]:
    serial = replace(options, progress=progress)
    return {run.key: run_on_one_core(run.scenario, run.policy, serial) for run in runs}


def _drain(steps: Any, progress: Callable[[int], object]) -> None:
    while True:
        try:
            progress(steps.get_nowait())
        except queue.Empty:
            return


# --- in the worker ---------------------------------------------------------------------------

_steps: Any = None


def _start(steps: Any, parent: int) -> None:
    global _steps  # noqa: PLW0603 - the worker's one channel back, set once when it starts
    _steps = steps
    threading.Thread(target=_end_with, args=(parent,), name="replay-parent-watch", daemon=True).start()


def _end_with(parent: int) -> None:
    """End this worker once ``parent`` is no longer its parent (it was killed: nobody takes the
    results or reads the progress, and the worker would run on for the rest of its run)."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK)
    os._exit(1)


def _work(scenario: Scenario, policy: str, options: ReplayOptions) -> PolicyRun:
    pending = [0]

    def report(n: int) -> None:
        pending[0] += n
        if pending[0] >= REPORT_EVERY:
            _steps.put(pending[0])
            pending[0] = 0

    try:
        return run_on_one_core(scenario, policy, replace(options, progress=report))
    finally:
        if pending[0]:
            _steps.put(pending[0])
