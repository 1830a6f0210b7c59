"""Client CPU per token: `time.process_time()` of this process (every thread of it)."""

from __future__ import annotations

import time
from collections.abc import Callable

from .readers import Reading

__all__ = ["cpu_per_token"]


def cpu_per_token(read: Callable[[], Reading]) -> tuple[float, Reading]:
    """Microseconds of process CPU per token delivered, for one read."""
    started = time.process_time()
    reading = read()
    spent = time.process_time() - started
    if not reading.tokens:
        raise RuntimeError("a reader delivered no tokens")
    return spent / reading.tokens * 1e6, reading
