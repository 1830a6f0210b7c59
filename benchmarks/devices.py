"""What the llama_cpp backend's GPU path costs and gives, on a real Vulkan device: Mesa's
lavapipe, exposed through GGML_VK_VISIBLE_DEVICES to the servers measured only.

- `--list-devices`, which every load now runs once per binary and environment (then
  cached): its time with no device visible and with lavapipe;
- decode on lavapipe with every layer offloaded, against the CPU (a device that computes
  on the same two cores: what it shows is that the path works, not a GPU's speed);
- streaming at llama-server's log verbosity 4 (which `model.placement` reads) against 3:
  the server's decode rate, and the CPU our process spends on a one-token request (the
  log reader's share included: verbosity 4 logs some 20 lines a request, 3 about 6).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack

import inference_core as ic
from inference_rocm.backends import LlamaCppBackend
from inference_rocm.binaries import find_binary
from inference_rocm.server_devices import parse_listing, run_flag

from .report import Row
from .speed import interleaved
from .stats import figure, ratios

__all__ = ["measure_devices"]

_SECTION = "devices"
_EXPOSED = {"GGML_VK_VISIBLE_DEVICES": "0"}
_PROMPT = "Write a long story about a dragon who learns to code."
_REQUESTS = 20  # one-token requests a round, for the CPU they cost us
_logger = logging.getLogger(__name__)


def _listing_seconds(binary: str, environ: dict[str, str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        run_flag(binary, "--list-devices", environ)
        seconds.append(time.perf_counter() - started)
    return seconds


def _lavapipe(path: str, tokens: int, rounds: int) -> list[Row]:
    exposed = {**os.environ, **_EXPOSED}
    config = ic.LoadConfig(context_len=512, parallel_slots=1)
    with ExitStack() as stack:
        sides: dict[str, ic.TextModel] = {
            "cpu": stack.enter_context(LlamaCppBackend().load_model(path, config)),
            "lavapipe": stack.enter_context(LlamaCppBackend(exposed).load_model(path, config)),
        }
        rates, ids = interleaved(sides, _PROMPT, tokens, rounds)
    same = next(
        (n for n, (a, b) in enumerate(zip(ids["cpu"], ids["lavapipe"], strict=False)) if a != b), -1
    )
    return [
        Row(_SECTION, "decode on lavapipe (every layer offloaded), tokens/s", "tok/s",
            figure(rates["lavapipe"])),
        Row(_SECTION, "decode on lavapipe ÷ on the CPU", "x",
            ratios(rates["lavapipe"], rates["cpu"])),
        Row(_SECTION, f"greedy ids, lavapipe against CPU: first difference at token (of {tokens}; "
            "-1 none)", "token", figure([float(same)])),
    ]  # fmt: skip


def _verbosity(path: str, tokens: int, rounds: int) -> list[Row]:
    with ExitStack() as stack:
        sides = {
            f"-lv {level}": stack.enter_context(
                ic.load(path, backend="llama_cpp", context_len=1024,
                        extra_args=() if level == 4 else ("-lv", str(level)))
            )
            for level in (4, 3)
        }  # fmt: skip
        rates, _ = interleaved(sides, _PROMPT, tokens, rounds)
        cpu = _request_cpu(sides, max(3, rounds))
    return [
        Row(_SECTION, "decode at log verbosity 4 (the default now) ÷ 3", "x",
            ratios(rates["-lv 4"], rates["-lv 3"])),
        Row(_SECTION, "our process CPU a one-token request, log verbosity 4", "ms",
            figure(cpu["-lv 4"])),
        Row(_SECTION, "our process CPU a one-token request, log verbosity 3", "ms",
            figure(cpu["-lv 3"])),
    ]  # fmt: skip


def _request_cpu(sides: dict[str, ic.TextModel], rounds: int) -> dict[str, list[float]]:
    """Process CPU (every thread: the log reader's too) of one-token requests, in ms;
    the sides take turns going first."""
    spent: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            started = time.process_time()
            for _ in range(_REQUESTS):
                list(sides[name].generate("Hi", max_tokens=1))
            spent[name].append((time.process_time() - started) / _REQUESTS * 1000)
    return spent


def measure_devices(path: str, tokens: int, rounds: int, lavapipe_tokens: int) -> list[Row]:
    """Every figure above; the lavapipe ones only where Mesa's Vulkan driver is installed."""
    binary = find_binary().path
    assert binary is not None
    hidden = dict(os.environ)
    hidden.pop("GGML_VK_VISIBLE_DEVICES", None)
    exposed = {**hidden, **_EXPOSED}
    rows = [
        Row(_SECTION, "llama-server --list-devices, no device visible", "s",
            figure(_listing_seconds(binary, hidden, max(3, rounds)))),
    ]  # fmt: skip
    if parse_listing(run_flag(binary, "--list-devices", exposed)):
        rows.append(Row(_SECTION, "llama-server --list-devices, lavapipe visible", "s",
                        figure(_listing_seconds(binary, exposed, max(3, rounds)))))  # fmt: skip
        rows += _lavapipe(path, lavapipe_tokens, rounds)
    else:
        _logger.warning(
            "no lavapipe device (apt install mesa-vulkan-drivers): its rows are left out"
        )
    return rows + _verbosity(path, tokens, rounds)
