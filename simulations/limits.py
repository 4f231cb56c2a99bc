"""What this process may use: cores and memory, as the machine and its cgroup (a container) allow.

``os.sched_getaffinity`` and ``/proc/meminfo`` describe the machine: in a container limited to two
CPUs and 2 GiB on a 64-core host, they say 64 cores and the host's free memory. The cgroup's own
files say the limits: ``cpu.max`` and ``memory.max`` / ``memory.current`` (cgroup v2), or
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` and ``memory.limit_in_bytes`` /
``memory.usage_in_bytes`` (v1). They are looked for under this process's own cgroup (from
``/proc/self/cgroup``) and at the mount's root (what a container with its own cgroup namespace
sees); the tightest limit found counts. Nothing found (another system, no permission): no limit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

#: A v1 memory limit this large is "no limit" (the kernel writes the largest page-aligned int64).
_UNLIMITED = 1 << 60


@dataclass(frozen=True, slots=True)
class System:
    """Where the files are (a test points these at a directory of its own)."""

    cgroup: Path = Path("/sys/fs/cgroup")
    proc_cgroup: Path = Path("/proc/self/cgroup")
    meminfo: Path = Path("/proc/meminfo")


#: This machine's files.
HERE = System()


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _number(path: Path) -> int | None:
    text = _text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _dirs(system: System, controller: str) -> list[Path]:
    """The directories that may hold this process's ``controller`` files, its own cgroup first."""
    dirs: list[Path] = []
    for line in (_text(system.proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        own = path.lstrip("/")
        if not controllers:  # v2: one hierarchy
            dirs.append(system.cgroup / own)
        elif controller in controllers.split(","):  # v1: a mount per controller (or a joint one)
            dirs += [system.cgroup / controllers / own, system.cgroup / controller / own]
    return [*dirs, system.cgroup, system.cgroup / controller]


def cgroup_cpus(system: System = HERE) -> float | None:
    """The CPUs the cgroup's quota allows (quota / period), None when there is no quota."""
    found: list[float] = []
    for d in _dirs(system, "cpu"):
        fields = (_text(d / "cpu.max") or "").split()
        if len(fields) == 2 and fields[0] != "max":
            try:
                quota, period = int(fields[0]), int(fields[1])
            except ValueError:
                continue
            if quota > 0 and period > 0:
                found.append(quota / period)
        quota_v1, period_v1 = _number(d / "cpu.cfs_quota_us"), _number(d / "cpu.cfs_period_us")
        if quota_v1 is not None and period_v1 is not None and quota_v1 > 0 and period_v1 > 0:
            found.append(quota_v1 / period_v1)
    return min(found) if found else None


def cgroup_memory_free(system: System = HERE) -> int | None:
    """Bytes the cgroup may still use (its limit less its usage), None when it has no limit."""
    found: list[int] = []
    for d in _dirs(system, "memory"):
        for limit_file, usage_file in (
            ("memory.max", "memory.current"),
            ("memory.limit_in_bytes", "memory.usage_in_bytes"),
        ):
            limit = _number(d / limit_file)  # "max" (v2's no limit) reads as None
            if limit is not None and limit < _UNLIMITED:
                found.append(max(0, limit - (_number(d / usage_file) or 0)))
    return min(found) if found else None


def available_cores(system: System = HERE) -> int:
    """The cores this process may run on: its affinity (else the machine's count), at most the
    cgroup's CPU quota rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cores = os.cpu_count() or 1
    quota = cgroup_cpus(system)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def available_memory(system: System = HERE) -> int | None:
    """Bytes available to this process: the machine's MemAvailable, at most what the cgroup has
    left; None when neither says."""
    machine: int | None = None
    for line in (_text(system.meminfo) or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "MemAvailable:":
            try:
                machine = int(fields[1]) * 1024
            except ValueError:
                machine = None
    cgroup = cgroup_memory_free(system)
    known = [m for m in (machine, cgroup) if m is not None]
    return min(known) if known else None
