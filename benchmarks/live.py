"""Against the real server: client CPU per token, the delivered rate, time to first token.

Ours and the bare reader send the same `/completion` request in alternating
order within each round, so their ratios are taken under the same load.
"""

from __future__ import annotations

from collections.abc import Callable

from inference_core import TextModel

from .cpu import cpu_per_token
from .idle import wait_until_idle
from .readers import Endpoint, Reading, read_bare, read_ours
from .recording import native_body
from .report import Row, Target
from .stats import figure, ratios

__all__ = ["measure_live", "measure_time_to_first_token"]

_SECTION = "live"


def _alternating(
    endpoint: Endpoint,
    ours: Callable[[], Reading],
    bare: Callable[[], Reading],
    round_index: int,
) -> tuple[Reading, Reading, float, float]:
    """One read each, on an idle server, ours first in even rounds: both readings, then the
    CPU µs per token of each."""
    reads = {"ours": ours, "bare": bare}
    results: dict[str, tuple[float, Reading]] = {}
    for name in ("ours", "bare") if round_index % 2 == 0 else ("bare", "ours"):
        wait_until_idle(endpoint)
        results[name] = cpu_per_token(reads[name])
    (ours_cpu, ours_reading), (bare_cpu, bare_reading) = results["ours"], results["bare"]
    if ours_reading.characters != bare_reading.characters:
        raise RuntimeError("ours and the bare reader got different text for the same request")
    return ours_reading, bare_reading, ours_cpu, bare_cpu


def measure_live(
    model: TextModel, endpoint: Endpoint, prompt: str, tokens: int, rounds: int
) -> list[Row]:
    """One stream at a time: CPU per token and delivered rate ÷ the server's decode rate."""
    body = native_body(prompt, tokens)
    ours_cpu: list[float] = []
    bare_cpu: list[float] = []
    ours_rate: list[float] = []
    bare_rate: list[float] = []
    for round_index in range(rounds):
        ours, bare, ours_cost, bare_cost = _alternating(
            endpoint,
            lambda: read_ours(model, prompt, tokens),
            lambda: read_bare(endpoint, body, tokens),
            round_index,
        )
        ours_cpu.append(ours_cost)
        bare_cpu.append(bare_cost)
        ours_rate.append(ours.delivered_share)
        bare_rate.append(bare.delivered_share)
    return [
        Row(_SECTION, "ours: generate() (CPU/token)", "µs", figure(ours_cpu)),
        Row(_SECTION, "bare http.client (CPU/token)", "µs", figure(bare_cpu)),
        Row(_SECTION, "ours ÷ bare (CPU/token)", "x", ratios(ours_cpu, bare_cpu), Target(1.2)),
        Row(
            _SECTION,
            "ours: delivered ÷ server decode rate",
            "x",
            figure(ours_rate),
            Target(0.99, at_most=False),
        ),
        Row(_SECTION, "bare: delivered ÷ server decode rate", "x", figure(bare_rate)),
    ]


def measure_time_to_first_token(
    model: TextModel, endpoint: Endpoint, prompt: str, rounds: int
) -> list[Row]:
    """Time to first token minus the server's own prompt time, ours and a raw request."""
    body = native_body(prompt, 1)
    ours_overhead: list[float] = []
    raw_overhead: list[float] = []
    for round_index in range(rounds):
        ours, raw, _, _ = _alternating(
            endpoint,
            lambda: read_ours(model, prompt, 1),
            lambda: read_bare(endpoint, body, 1),
            round_index,
        )
        ours_overhead.append(_overhead_ms(ours))
        raw_overhead.append(_overhead_ms(raw))
    return [
        Row(_SECTION, "ours: TTFT - server prompt time", "ms", figure(ours_overhead)),
        Row(_SECTION, "raw request: TTFT - server prompt time", "ms", figure(raw_overhead)),
        Row(
            _SECTION,
            "TTFT overhead, ours - raw",
            "ms",
            figure([a - b for a, b in zip(ours_overhead, raw_overhead, strict=True)]),
            Target(2.0),
        ),
    ]


def _overhead_ms(reading: Reading) -> float:
    if reading.prompt_seconds is None:
        raise RuntimeError("the server sent no timings")
    return (reading.time_to_first_token - reading.prompt_seconds) * 1000
