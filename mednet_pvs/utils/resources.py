"""CPUs and memory this process may really use (CPU affinity and cgroup limits, as under SLURM)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import psutil

__all__ = ["available_memory_gb", "cgroup_cpu_limit", "cgroup_memory_limit_gb", "usable_cpus"]

_CGROUP = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_memory_limit_gb(root: Path = _CGROUP) -> float | None:
    """The memory limit of this process's cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``)."""
    for relative in ("memory.max", "memory/memory.limit_in_bytes"):
        text = _read(root / relative)
        if text and text != "max" and text.isdigit() and int(text) < _UNLIMITED:
            return int(text) / 1e9
    return None


def cgroup_cpu_limit(root: Path = _CGROUP) -> int | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), rounded up."""
    text = _read(root / "cpu.max")
    if text:
        quota, _, period = text.partition(" ")
        if quota != "max" and period:
            return max(1, math.ceil(int(quota) / int(period)))
    quota, period = _read(root / "cpu/cpu.cfs_quota_us"), _read(root / "cpu/cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return max(1, math.ceil(int(quota) / int(period)))
    return None


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(count, limit) if limit else count


def available_memory_gb() -> float:
    """Available memory (GB), capped by the cgroup limit a scheduler such as SLURM sets."""
    available = psutil.virtual_memory().available / 1e9
    limit = cgroup_memory_limit_gb()
    return min(available, limit) if limit else available
