"""The thread count llama-server gets by default, from sysfs trees of machines we do not have."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference_rocm.cpus import default_threads, physical_cores


def topology(root: Path, layout: dict[int, tuple[int, int]]) -> Path:
    """A sysfs tree: logical CPU -> (package, core)."""
    for cpu, (package, core) in layout.items():
        folder = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_hyperthreads_of_one_core_count_once(tmp_path: Path) -> None:
    # 4 cores with 2 threads each; Linux numbers the siblings n and n + 4.
    sys_root = topology(tmp_path, {cpu: (0, cpu % 4) for cpu in range(8)})
    assert physical_cores(range(8), sys_root) == 4
    assert default_threads(range(8), sys_root) == 4  # the siblings leave room already


def test_the_same_core_id_in_two_packages_is_two_cores(tmp_path: Path) -> None:
    sys_root = topology(tmp_path, {0: (0, 0), 1: (1, 0)})
    assert physical_cores([0, 1], sys_root) == 2


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [
        (1, 1),  # nothing to leave free
        (2, 1),  # the 2-core VM whose decode fell to 1.5 tokens/s beside a busy process
        (4, 3),
        (64, 63),
    ],
)
def test_without_hyperthreads_one_cpu_is_left_free(
    tmp_path: Path, cpus: int, expected: int
) -> None:
    sys_root = topology(tmp_path, {cpu: (0, cpu) for cpu in range(cpus)})
    assert default_threads(range(cpus), sys_root) == expected


def test_only_the_cpus_the_process_may_use_count(tmp_path: Path) -> None:
    # taskset -c 4,5 on an 8-core machine
    sys_root = topology(tmp_path, {cpu: (0, cpu) for cpu in range(8)})
    assert default_threads([4, 5], sys_root) == 1


def test_a_cpu_without_topology_counts_as_a_core(tmp_path: Path) -> None:
    assert physical_cores([0, 1, 2], tmp_path) == 3
    assert default_threads([0, 1, 2], tmp_path) == 2


def test_without_a_list_the_process_affinity_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys_root = topology(tmp_path, {cpu: (0, cpu) for cpu in range(8)})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3, 5, 7})
    assert default_threads(sys_root=sys_root) == 3
