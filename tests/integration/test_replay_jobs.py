"""`aiops replay --jobs N`: runs side by side in spawned processes, the same scores as one at a time.

Each run (scenario x seed x policy) is closed-loop against its own twin cluster over HTTP, in a
worker process of its own; the report and the per-seed summary must be the same bytes whichever
process a run was made in, progress must come back in full, a run that fails must fail the
command with its own error, a worker that dies must lose no run, and a worker must not outlive
the replay that started it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from agent.cli import main
from agent.playbook.loader import load_paths
from simulations.jobs import Run, run_all
from simulations.replay import ReplayOptions, steps_of
from simulations.result import AGENT, NO_AGENT
from simulations.runner import SHIPPED_PLAYBOOKS, SHIPPED_SCENARIOS, RunSettings, run
from simulations.scenario import load_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def short_scenario(tmp_path: Path, duration: str = "2h10m") -> Path:
    path = tmp_path / "short.yaml"
    path.write_text(
        (SHIPPED_SCENARIOS / "bad-rollout.yaml").read_text().replace("duration: 4h", f"duration: {duration}")
    )
    return path


def files_of(directory: Path) -> dict[str, bytes]:
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def test_two_processes_give_the_same_report_bytes_as_one(tmp_path: Path) -> None:
    scenario = short_scenario(tmp_path)
    reports = {}
    for jobs in (1, 2):
        out = io.StringIO()
        settings = RunSettings(
            scenarios=[scenario],
            policies=[AGENT, NO_AGENT],
            seeds=2,
            report=tmp_path / f"jobs{jobs}",
            progress=False,
            jobs=jobs,
        )
        assert run(settings, out, io.StringIO()) == 0, out.getvalue()
        reports[jobs] = files_of(tmp_path / f"jobs{jobs}")
    assert "seeds.json" in reports[1]
    assert any(name.endswith(".png") for name in reports[1])
    assert reports[1] == reports[2]


def test_workers_report_every_step_and_a_failing_run_fails_the_call(tmp_path: Path) -> None:
    playbooks = load_paths([SHIPPED_PLAYBOOKS])
    scenario = load_scenario(short_scenario(tmp_path), playbook_names=[p.name for p in playbooks.playbooks])
    options = ReplayOptions(playbooks, policies=(NO_AGENT,))
    runs = [Run((0, 11, NO_AGENT), scenario, NO_AGENT), Run((0, 12, NO_AGENT), scenario, NO_AGENT)]
    reported: list[int] = []
    done = run_all(runs, options, 2, reported.append)
    assert set(done) == {(0, 11, NO_AGENT), (0, 12, NO_AGENT)}
    assert sum(reported) == 2 * steps_of(scenario)
    assert len(reported) >= 2  # in parts, as the runs advance
    assert all(len(r.replicas["checkout"]) == steps_of(scenario) for r in done.values())

    failing = [*runs, Run((0, 13, "nobody"), scenario, "nobody")]
    with pytest.raises(ValueError, match="unknown policy 'nobody'"):
        run_all(failing, options, 2, reported.append)


def test_jobs_with_a_paced_or_served_replay_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = str(short_scenario(tmp_path))
    assert main(["replay", scenario, "--jobs", "2", "--speed", "60", "--no-progress"]) == 2
    assert "--jobs 2: a replay with --speed runs one run at a time (--jobs 1)" in capsys.readouterr().err
    assert main(["replay", scenario, "--jobs", "2", "--prometheus-port", "0", "--no-progress"]) == 2
    assert "--prometheus-port" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", scenario, "--jobs", "0"])
    assert exit_info.value.code == 2
    assert "expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def test_a_worker_killed_mid_run_loses_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The OOM killer or a signal ends a worker: the runs it and the others had not finished are
    made in this process, with the same results, and a warning names the run."""
    import multiprocessing
    import os
    import signal
    import threading

    import numpy as np

    playbooks = load_paths([SHIPPED_PLAYBOOKS])
    scenario = load_scenario(short_scenario(tmp_path), playbook_names=[p.name for p in playbooks.playbooks])
    # one scenario at one seed twice: the two runs must come out the same wherever they were made
    runs = [Run((0, 11, AGENT), scenario, AGENT), Run((0, 12, AGENT), scenario, AGENT)]
    started = threading.Event()
    outcome: list[object] = []

    def make() -> None:
        try:
            outcome.append(
                run_all(runs, ReplayOptions(playbooks, policies=(AGENT,)), 2, lambda n: started.set())
            )
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    maker = threading.Thread(target=make)
    maker.start()
    assert started.wait(120), "no progress from the workers"
    workers = multiprocessing.active_children()
    assert workers
    os.kill(workers[0].pid or 0, signal.SIGKILL)
    maker.join(300)
    assert not maker.is_alive()
    (done,) = outcome
    assert isinstance(done, dict), done
    assert set(done) == {(0, 11, AGENT), (0, 12, AGENT)}
    first, second = done[(0, 11, AGENT)], done[(0, 12, AGENT)]
    assert np.array_equal(first.replicas["checkout"], second.replicas["checkout"])
    assert [(a.time, a.action, a.outcome) for a in first.actions] == [
        (a.time, a.action, a.outcome) for a in second.actions
    ]
    assert any("ended abruptly while making bad-rollout seed 11 under agent" in m for m in caplog.messages)


def test_more_jobs_than_cores_is_as_many_as_cores_and_seeds_are_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations.limits import available_cores

    scenario = str(short_scenario(tmp_path))
    many = available_cores() + 62
    code = main(
        ["replay", scenario, "--jobs", str(many), "--policies", "none", "--seeds", "2", "--no-progress"]
    )
    assert code == 0
    assert f"note: --jobs {many}: {available_cores()} cores here" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", scenario, "--seeds", "1001"])
    assert exit_info.value.code == 2
    assert "expected at most 1000 seeds, got 1001" in capsys.readouterr().err
    settings = RunSettings(scenarios=[Path(scenario)], seeds=10**9, progress=False)
    err = io.StringIO()
    assert run(settings, io.StringIO(), err) == 2
    assert "--seeds: expected 1 to 1000, got 1000000000" in err.getvalue()


def _parent(pid: int) -> int | None:
    """The parent of live process ``pid`` (from /proc); None when it has ended (a zombie too)."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:  # ended
        return None
    return None if state == "Z" else int(parent)


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if _parent(int(p.name)) == pid]


def _alive(pid: int) -> bool:
    return _parent(pid) is not None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_workers_end_when_the_replay_that_started_them_is_killed(tmp_path: Path) -> None:
    """SIGKILL (or SIGTERM) to `aiops replay` alone leaves its workers orphaned: they must end
    within seconds, not run on to the end of their runs."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from simulations.jobs import ORPHAN_CHECK

    scenario = short_scenario(tmp_path, "24h")  # a run of minutes: it cannot end by itself meanwhile
    argv = [sys.executable, "-m", "agent.cli", "replay", "--jobs", "2", "--seeds", "2", "--policies", "agent"]
    replay = subprocess.Popen(
        [*argv, "--no-progress", "--no-timeline", str(scenario)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(replay.pid)) < 2:
            assert replay.poll() is None, "the replay ended before its workers started"
            assert time.monotonic() < deadline, "no worker processes"
            time.sleep(0.2)
        time.sleep(5)  # the workers have imported the agent and are making their runs
        assert all(_alive(w) for w in workers), "a worker ended before its parent was killed"
        os.kill(replay.pid, signal.SIGKILL)
        replay.wait(30)
        deadline = time.monotonic() + 10 * ORPHAN_CHECK + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), f"orphaned workers still running: {workers}"
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait(30)
