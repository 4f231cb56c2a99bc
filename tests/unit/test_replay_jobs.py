"""How many worker processes `aiops replay` uses by default: one per core this process may use, as
its memory allows, where the machine and its cgroup (a container's limits) both count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simulations.jobs import WORKER_MEMORY, default_jobs
from simulations.limits import System, available_cores, available_memory, cgroup_cpus, cgroup_memory_free

GIB = 1 << 30
AFFINITY = len(os.sched_getaffinity(0))


def machine(tmp_path: Path, available: int, proc_cgroup: str = "0::/\n") -> System:
    """A machine with ``available`` bytes of MemAvailable and an empty cgroup mount."""
    (tmp_path / "meminfo").write_text(
        f"MemTotal:       99999999 kB\nMemFree:  1 kB\nMemAvailable:   {available // 1024} kB\n"
    )
    (tmp_path / "cgroup").mkdir(exist_ok=True)
    (tmp_path / "self-cgroup").write_text(proc_cgroup)
    return System(
        cgroup=tmp_path / "cgroup", proc_cgroup=tmp_path / "self-cgroup", meminfo=tmp_path / "meminfo"
    )


def put(directory: Path, **files: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("__", ".")).write_text(text + "\n")


def test_one_worker_per_core_when_memory_allows(tmp_path: Path) -> None:
    assert default_jobs(machine(tmp_path, 100 * AFFINITY * GIB)) == AFFINITY


def test_no_more_workers_than_memory_holds_and_always_one(tmp_path: Path) -> None:
    assert default_jobs(machine(tmp_path, 3 * WORKER_MEMORY + WORKER_MEMORY // 2)) == min(3, AFFINITY)
    assert default_jobs(machine(tmp_path, 1000)) == 1


def test_the_machine_alone_where_nothing_says_more(tmp_path: Path) -> None:
    nothing = System(cgroup=tmp_path / "none", proc_cgroup=tmp_path / "none", meminfo=tmp_path / "none")
    assert available_cores(nothing) == AFFINITY
    assert available_memory(nothing) is None
    assert default_jobs(nothing) == AFFINITY
    (tmp_path / "garbled").write_text("MemAvailable: lots\n")
    assert available_memory(System(meminfo=tmp_path / "garbled", cgroup=tmp_path / "none")) is None


def test_a_cgroup_v2_quota_and_memory_limit_count_under_the_process_own_cgroup(tmp_path: Path) -> None:
    system = machine(tmp_path, 64 * GIB, proc_cgroup="0::/kubepods/pod1/c1\n")
    put(tmp_path / "cgroup" / "kubepods" / "pod1" / "c1", cpu__max="150000 100000", memory__max=str(3 * GIB))
    (tmp_path / "cgroup" / "kubepods" / "pod1" / "c1" / "memory.current").write_text(str(GIB) + "\n")
    assert cgroup_cpus(system) == 1.5
    assert cgroup_memory_free(system) == 2 * GIB
    assert available_cores(system) == min(AFFINITY, 2)
    assert available_memory(system) == 2 * GIB
    assert default_jobs(system) == min(AFFINITY, 2)


def test_a_cgroup_v1_limit_at_the_mount_root_counts_and_no_limit_is_none(tmp_path: Path) -> None:
    system = machine(tmp_path, 64 * GIB, proc_cgroup="4:memory:/ns/x\n1:cpu,cpuacct:/ns/x\n")
    put(
        tmp_path / "cgroup" / "memory", memory__limit_in_bytes=str(GIB + GIB // 2), memory__usage_in_bytes="0"
    )
    put(tmp_path / "cgroup" / "cpu,cpuacct" / "ns" / "x", cpu__cfs_quota_us="-1", cpu__cfs_period_us="100000")
    assert cgroup_memory_free(system) == GIB + GIB // 2
    assert cgroup_cpus(system) is None  # -1: no quota
    assert default_jobs(system) == 1
    put(tmp_path / "cgroup" / "memory", memory__limit_in_bytes="9223372036854771712")  # v1's "no limit"
    assert cgroup_memory_free(system) is None
    assert default_jobs(system) == AFFINITY


@pytest.mark.parametrize("text", ["max 100000", "garbage", "0 100000", ""])
def test_no_quota_or_a_garbled_one_is_no_limit(tmp_path: Path, text: str) -> None:
    system = machine(tmp_path, 64 * GIB)
    put(tmp_path / "cgroup", cpu__max=text, memory__max="max")
    assert cgroup_cpus(system) is None
    assert cgroup_memory_free(system) is None


def test_the_command_line_asks_for_a_process_per_core_and_the_library_runs_in_its_own() -> None:
    import io

    from agent.cli import _parser
    from simulations.runner import RunSettings, jobs_for

    args = _parser("replay").parse_args(["replay", "bad-rollout"])
    assert args.jobs is None  # aiops replay: as many as the machine allows
    assert jobs_for(RunSettings(scenarios=[], jobs=args.jobs), io.StringIO()) == default_jobs()
    assert jobs_for(RunSettings(scenarios=[], jobs=None, speed=60.0), io.StringIO()) == 1
    # a script calling simulations.runner.run may have no __main__ guard: no spawned workers unasked
    assert RunSettings(scenarios=[]).jobs == 1
