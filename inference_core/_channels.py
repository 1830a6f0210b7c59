"""The thinking a stream's reasoning channel holds, without the tags around it.

A backend delivers the tags that open and close a model's thinking as tokens of the
"reasoning" channel (they are never the answer, and they keep their ids); what the
model thought is that channel's text with the tags, and the blank lines around them,
taken out: the form a chat template takes back as a message's `reasoning_content`.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["thinking"]


def thinking(pieces: Iterable[str], tags: tuple[str, ...]) -> str:
    """The reasoning channel's text (`pieces`) without `tags` and the whitespace around."""
    text = "".join(pieces)
    for tag in tags:
        text = text.replace(tag, "")
    return text.strip()
