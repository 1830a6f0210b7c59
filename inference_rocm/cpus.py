"""How many threads llama-server runs: its cores, less one left for the rest of the machine.

llama-server's threads meet at a barrier after every step of every token. On its
own default (every physical core), one busy process beside it (at any priority)
deschedules one of them, and every step waits for it: on a 2-core machine decode
fell from about 100 to 1.5 tokens/s. One core fewer costs a share of the idle
speed and keeps the rest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["default_threads", "physical_cores"]


def physical_cores(cpus: Iterable[int], sys_root: Path = Path("/sys")) -> int:
    """Cores among ``cpus`` (logical CPU numbers): a core's hyperthreads count once.

    A CPU whose topology sysfs does not show counts as a core of its own.
    """
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = sys_root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            package, core = "unknown", f"cpu{cpu}"
        cores.add((package, core))
    return len(cores)


def default_threads(cpus: Iterable[int] | None = None, sys_root: Path = Path("/sys")) -> int:
    """Threads for llama-server when the user sets none.

    Its own default is one per physical core of the CPUs this process may run
    on (``cpus``, default: its affinity); this keeps that, but leaves at least one
    logical CPU free, and never goes below one.
    """
    allowed = sorted(os.sched_getaffinity(0) if cpus is None else set(cpus))
    return max(1, min(physical_cores(allowed, sys_root), len(allowed) - 1))
