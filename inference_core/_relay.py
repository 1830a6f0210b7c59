"""Passing a backend's tokens on through a reader, and closing its generator after.

A stream's token source is a generator that holds a slot on its server until it is
closed; each stage between it and the reader (stop strings, thinking's channels, tool
calls) closes the generator it wraps when it ends or is left early, so that a reader
who stops reading frees the slot at once, whatever stages stand between.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from .types import Token

__all__ = ["closing", "relayed"]


@contextlib.contextmanager
def closing(tokens: Iterator[Token]) -> Iterator[None]:
    """Close `tokens`' generator (where it has one) when the block ends, however."""
    try:
        yield
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()


def relayed(
    tokens: Iterator[Token],
    feed: Callable[[Token], list[Token]],
    end: Callable[[], list[Token]],
) -> Iterator[Token]:
    """What `feed` makes of each token, then what `end` holds back; `tokens` closed after."""
    with closing(tokens):
        for token in tokens:
            yield from feed(token)
        yield from end()
