"""Decode speed beside a busy process: our thread count against llama-server's own default.

llama-server's default is one thread per physical core; ours leaves one CPU free
(`inference_rocm.cpus`). Each round loads the model once with each, and measures
it idle and then beside one process that spins on a core, as a compiler or a
browser tab would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from inference_core.types import LoadConfig
from inference_rocm.backends import load_with_server
from inference_rocm.cpus import default_threads, physical_cores

from .report import Row
from .servers import decode_rate
from .stats import figure, ratios

__all__ = ["measure_contention"]


@contextmanager
def _busy_process() -> Iterator[None]:
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


def _rates(binary: str, path: str, threads: int, tokens: int) -> tuple[float, float]:
    """Decode tokens/s idle, then beside a busy process, on one server."""
    config = LoadConfig(context_len=1024, parallel_slots=1, threads=threads)
    with load_with_server(binary, path, config, gpu_layers=0) as model:
        decode_rate(model, 8)  # warm up
        idle = decode_rate(model, tokens)
        with _busy_process():
            busy = decode_rate(model, tokens)
    return idle, busy


def measure_contention(binary: str, path: str, tokens: int, rounds: int) -> list[Row]:
    """Idle and contended decode rates of both thread counts, and ours / theirs for each."""
    ours, theirs = default_threads(), physical_cores(os.sched_getaffinity(0))
    contenders = {
        f"ours (--threads {ours})": ours,
        f"llama-server's default (--threads {theirs})": theirs,
    }
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, threads in contenders.items():
            idle, busy = _rates(binary, path, threads, tokens)
            rates.setdefault((name, "idle"), []).append(idle)
            rates.setdefault((name, "beside a busy process"), []).append(busy)
    rows = [
        Row("contention", f"{name}, {when}: decode rate", "tokens/s", figure(samples))
        for (name, when), samples in rates.items()
    ]
    ours_name, theirs_name = contenders
    for when in ("idle", "beside a busy process"):
        ratio = ratios(rates[(ours_name, when)], rates[(theirs_name, when)])
        rows.append(Row("contention", f"ours / llama-server's default, {when}", "x", ratio))
    return rows
