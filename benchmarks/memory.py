"""A leak check: client memory over many short generations on the live server.

After a warm-up, the generations run in equal blocks; each block's growth of
the process RSS (/proc/self/statm) and of the Python heap (tracemalloc) is one
run of the figure. A leak shows as steady growth in every block.
"""

from __future__ import annotations

import gc
import os
import tracemalloc

from inference_core import TextModel

from .report import Row, Target
from .stats import figure

__all__ = ["measure_memory", "resident_bytes"]

_SECTION = "memory"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * _PAGE


def resident_bytes(pid: int | None) -> int:
    """A process's resident memory (VmRSS), as /proc tells it."""
    assert pid is not None
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


def measure_memory(model: TextModel, prompt: str, generations: int, blocks: int = 4) -> list[Row]:
    """`generations` one-token generations (each also opens and closes a stream early)."""
    per_block = max(1, generations // blocks)
    for _ in range(max(10, per_block // 5)):
        model.generate(prompt, max_tokens=1).text()
    rss_growth: list[float] = []
    heap_growth: list[float] = []
    tracemalloc.start()
    try:
        for _ in range(blocks):
            gc.collect()
            rss, heap = _rss(), tracemalloc.get_traced_memory()[0]
            for _ in range(per_block):
                model.generate(prompt, max_tokens=1).text()
            gc.collect()
            rss_growth.append((_rss() - rss) / 1024)
            heap_growth.append((tracemalloc.get_traced_memory()[0] - heap) / per_block)
    finally:
        tracemalloc.stop()
    return [
        Row(_SECTION, f"RSS growth per {per_block} generations", "KiB", figure(rss_growth)),
        Row(_SECTION, "Python heap growth per generation", "B", figure(heap_growth), Target(64)),
    ]
