"""A long-lived model's life: its first token warm, after its server crashed (the
restart), and after it slept (the wake), and the memory the sleep gives back.

Each round kills the server with SIGKILL once and lets it sleep once; the first token
of the next request carries the restart or the wake. Resident memory is the server's
VmRSS from /proc, awake (just after a request) and asleep.
"""

from __future__ import annotations

import os
import signal
import time

import inference_core as ic
from inference_rocm.model import LlamaServerModel

from .memory import resident_bytes
from .report import Row
from .stats import figure

__all__ = ["measure_lifecycle"]

_SECTION = "lifecycle"
_PROMPT = "The capital of France is"
_MIB = 2**20


def _first_token_seconds(model: ic.TextModel) -> float:
    started = time.perf_counter()
    next(iter(model.generate(_PROMPT, max_tokens=1, temperature=0.0)))
    return time.perf_counter() - started


def _wait(condition: object, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds:g} s")
        time.sleep(0.05)


def measure_lifecycle(path: str, rounds: int) -> list[Row]:
    """Warm, restarted and woken first tokens, and the memory the sleep frees."""
    warm: list[float] = []
    restarted: list[float] = []
    woken: list[float] = []
    awake_bytes: list[float] = []
    freed: list[float] = []
    with ic.load(path, backend="llama_cpp", context_len=2048, keep_alive=1) as model:
        assert isinstance(model, LlamaServerModel)
        server = model.server
        for _ in range(rounds):
            _first_token_seconds(model)
            warm.append(_first_token_seconds(model))
            awake = resident_bytes(server.pid)
            _wait(lambda: model.asleep, "the sleep")
            freed.append(awake - resident_bytes(server.pid))
            awake_bytes.append(awake)
            woken.append(_first_token_seconds(model))
            os.kill(server.pid, signal.SIGKILL)
            _wait(lambda: not server.alive(), "the crash")
            restarted.append(_first_token_seconds(model))
    return [
        Row(_SECTION, "first token, warm", "ms", figure([s * 1e3 for s in warm])),
        Row(_SECTION, "first token after a crash (restart)", "ms",
            figure([s * 1e3 for s in restarted])),
        Row(_SECTION, "first token after keep_alive's sleep (wake)", "ms",
            figure([s * 1e3 for s in woken])),
        Row(_SECTION, "server memory awake", "MiB", figure([b / _MIB for b in awake_bytes])),
        Row(_SECTION, "server memory freed by the sleep", "MiB",
            figure([b / _MIB for b in freed])),
    ]  # fmt: skip
