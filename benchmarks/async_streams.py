"""`agenerate` against `generate` on the real server, and whether it leaves the loop free.

One stream at a time, ours sync and ours async alternate on an idle server: CPU per
token and the delivered rate ÷ the server's decode rate, as in the live section.
Then a 10 ms ticker runs beside 4 `agenerate` streams, and alone for as long: the
difference is what the streams cost the loop, and the ticker alone shows what the
machine's own load does.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

from inference_core import TextModel

from .cpu import cpu_per_token
from .idle import wait_until_idle
from .readers import Endpoint, Reading, read_ours, read_ours_async
from .report import Row, Target
from .stats import figure, ratios

__all__ = ["measure_async"]

_SECTION = "async"

_PERIOD = 0.01


async def _worst_lateness(work: Callable[[], Awaitable[object]]) -> float:
    """The most a 10 ms ticker ran behind its schedule while `work` ran, in ms."""
    loop = asyncio.get_running_loop()
    worst = 0.0

    async def tick() -> None:
        nonlocal worst
        while True:
            due = loop.time() + _PERIOD
            await asyncio.sleep(_PERIOD)
            worst = max(worst, loop.time() - due)

    ticker = asyncio.create_task(tick())
    await work()
    ticker.cancel()
    return worst * 1000


def measure_async(
    model: TextModel, endpoint: Endpoint, prompt: str, live_tokens: int, rounds: int
) -> list[Row]:
    """The async stream against the sync one, then the ticker's lateness."""
    return [
        *_against_sync(model, endpoint, prompt, live_tokens, rounds),
        *_loop_lateness(model, prompt, live_tokens, rounds),
    ]


def _against_sync(
    model: TextModel, endpoint: Endpoint, prompt: str, tokens: int, rounds: int
) -> list[Row]:
    readers: dict[str, Callable[[], Reading]] = {
        "sync": lambda: read_ours(model, prompt, tokens),
        "async": lambda: read_ours_async(model, prompt, tokens),
    }
    cpu: dict[str, list[float]] = {"sync": [], "async": []}
    delivered: dict[str, list[float]] = {"sync": [], "async": []}
    for round_index in range(rounds):
        for name in ("sync", "async") if round_index % 2 == 0 else ("async", "sync"):
            wait_until_idle(endpoint)
            cost, reading = cpu_per_token(readers[name])
            cpu[name].append(cost)
            delivered[name].append(reading.delivered_share)
    return [
        Row(_SECTION, "ours: agenerate() (CPU/token)", "µs", figure(cpu["async"])),
        Row(_SECTION, "ours: generate() (CPU/token)", "µs", figure(cpu["sync"])),
        Row(
            _SECTION,
            "agenerate() ÷ generate() (CPU/token)",
            "x",
            ratios(cpu["async"], cpu["sync"]),
            Target(1.2),
        ),
        Row(
            _SECTION,
            "agenerate(): delivered ÷ server decode rate",
            "x",
            figure(delivered["async"]),
            Target(0.99, at_most=False),
        ),
        Row(_SECTION, "generate(): delivered ÷ server decode rate", "x", figure(delivered["sync"])),
    ]


def _loop_lateness(model: TextModel, prompt: str, tokens: int, rounds: int) -> list[Row]:
    """Worst ticker lateness beside 4 streams, and alone for the same time."""
    beside: list[float] = []
    alone: list[float] = []

    async def streams() -> None:
        await asyncio.gather(*(model.agenerate(prompt, max_tokens=tokens).text() for _ in range(4)))

    for _ in range(rounds):
        started = time.perf_counter()
        beside.append(asyncio.run(_worst_lateness(streams)))
        took = time.perf_counter() - started
        alone.append(asyncio.run(_worst_lateness(functools.partial(asyncio.sleep, took))))
    return [
        Row(_SECTION, "10 ms ticker, worst lateness beside 4 streams", "ms", figure(beside)),
        Row(_SECTION, "10 ms ticker, worst lateness alone", "ms", figure(alone)),
    ]
