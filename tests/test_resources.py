"""CPU and memory limits read from cgroups (SLURM, containers)."""

from __future__ import annotations

from mednet_pvs.utils.resources import (
    available_memory_gb,
    cgroup_cpu_limit,
    cgroup_memory_limit_gb,
    usable_cpus,
)


def test_cgroup_v2_limits(tmp_path):
    (tmp_path / "memory.max").write_text("8000000000\n")
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_memory_limit_gb(tmp_path) == 8.0
    assert cgroup_cpu_limit(tmp_path) == 3


def test_cgroup_v1_limits(tmp_path):
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("4000000000")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_memory_limit_gb(tmp_path) == 4.0
    assert cgroup_cpu_limit(tmp_path) == 1


def test_unlimited_cgroups(tmp_path):
    (tmp_path / "memory.max").write_text("max")
    (tmp_path / "cpu.max").write_text("max 100000")
    assert cgroup_memory_limit_gb(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_memory_limit_gb(tmp_path / "missing") is None


def test_machine_values_are_sane():
    assert usable_cpus() >= 1
    assert 0 < available_memory_gb() < 10_000
