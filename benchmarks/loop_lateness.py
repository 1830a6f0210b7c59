"""Whether async streams leave the event loop free: how late a 10 ms ticker runs.

Each round runs the ticker beside 4 `agenerate` streams on the real server, then
alone for as long: the difference is what the streams cost the loop, and the
ticker alone shows what the machine's own load does.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

from inference_core import TextModel

from .report import Row
from .stats import figure

__all__ = ["measure_loop_lateness"]

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


def measure_loop_lateness(model: TextModel, prompt: str, tokens: int, rounds: int) -> list[Row]:
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
        Row("async", "10 ms ticker, worst lateness beside 4 streams", "ms", figure(beside)),
        Row("async", "10 ms ticker, worst lateness alone", "ms", figure(alone)),
    ]
