"""Concurrent streams on a multi-slot server: aggregate tokens/s, ours against raw HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable

from inference_core import TextModel

from .idle import wait_until_idle
from .readers import Endpoint, Reading, read_bare, read_ours
from .recording import native_body
from .report import Row, Target
from .stats import figure, ratios

__all__ = ["measure_concurrency"]

_SECTION = "concurrent"


def _aggregate_rate(read: Callable[[], Reading], streams: int) -> float:
    """Tokens/s of `streams` reads started together, from the first start to the last end."""
    barrier = threading.Barrier(streams)
    readings: list[Reading] = []
    failures: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            readings.append(read())
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, name=f"stream-{n}") for n in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    started = min(reading.started_at for reading in readings)
    ended = max(reading.ended_at for reading in readings)
    return sum(reading.tokens for reading in readings) / (ended - started)


def measure_concurrency(
    model: TextModel,
    endpoint: Endpoint,
    prompt: str,
    tokens: int,
    rounds: int,
    stream_counts: tuple[int, ...] = (1, 2, 4),
    *,
    floor: float = 0.95,
    section: str = _SECTION,
) -> list[Row]:
    """For each stream count: aggregate tokens/s through us and through raw HTTP, paired;
    each count's ratio is held to at least `floor`."""
    body = native_body(prompt, tokens)
    readers: dict[str, Callable[[], Reading]] = {
        "ours": lambda: read_ours(model, prompt, tokens),
        "raw": lambda: read_bare(endpoint, body, tokens),
    }
    rows: list[Row] = []
    for streams in stream_counts:
        _aggregate_rate(readers["raw"], streams)  # every slot caches the prompt first
        rates: dict[str, list[float]] = {name: [] for name in readers}
        for round_index in range(rounds):
            order = ("ours", "raw") if round_index % 2 == 0 else ("raw", "ours")
            for name in order:
                wait_until_idle(endpoint)
                rates[name].append(_aggregate_rate(readers[name], streams))
        ours, raw = rates["ours"], rates["raw"]
        rows += [
            Row(section, f"{streams} stream(s): ours, aggregate", "tok/s", figure(ours)),
            Row(section, f"{streams} stream(s): raw HTTP, aggregate", "tok/s", figure(raw)),
            Row(
                section,
                f"{streams} stream(s): ours ÷ raw",
                "x",
                ratios(ours, raw),
                Target(floor, at_most=False),
            ),
        ]
    return rows
