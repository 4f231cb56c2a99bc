"""How many worker processes `aiops replay` uses by default: one per core, as memory allows."""

from __future__ import annotations

from pathlib import Path

from simulations.jobs import WORKER_MEMORY, available_cores, default_jobs


def meminfo(tmp_path: Path, available_kib: int) -> Path:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       99999999 kB\nMemFree:  1 kB\nMemAvailable:   {available_kib} kB\n")
    return path


def test_one_worker_per_core_when_memory_allows(tmp_path: Path) -> None:
    plenty = available_cores() * WORKER_MEMORY // 1024 * 2
    assert default_jobs(meminfo(tmp_path, plenty)) == available_cores()


def test_no_more_workers_than_memory_holds_and_always_one(tmp_path: Path) -> None:
    assert default_jobs(meminfo(tmp_path, WORKER_MEMORY // 1024 * 7 // 2)) == min(3, available_cores())
    assert default_jobs(meminfo(tmp_path, 1000)) == 1


def test_cores_alone_where_the_system_does_not_say(tmp_path: Path) -> None:
    assert default_jobs(tmp_path / "absent") == available_cores()
    garbled = tmp_path / "garbled"
    garbled.write_text("MemAvailable: lots\n")
    assert default_jobs(garbled) == available_cores()
