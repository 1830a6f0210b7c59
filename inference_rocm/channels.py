"""Channels for streamed tokens: a block of the output between two tags (a model's
thinking between `<think>` and `</think>`) goes to a channel of its own, the rest to
"content".

llama-server's `/completion` parses nothing, so the tokens are split here, by their
text: a token belongs to the block from the one that completes its opening tag (or the
first, when the prompt already opened the block) to the one that completes its closing
tag, both included, so that no tag is ever content and every token keeps its id and
its whole text. A block is looked for at the start of the output only, after any
whitespace, as the models that think write it; tokens that may still be the start of
its opening tag are held back until that is known (a few tokens at most). After the
block ends, all is content.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import final

import attrs

from inference_core._relay import relayed
from inference_core.types import Token

__all__ = ["Block", "split"]


@attrs.frozen
class Block:
    """A block of the output: its opening and closing tags, and its channel."""

    open: str
    close: str
    channel: str


@final
class _Splitter:
    """Where the output is: before the block ("start"), in it, or after it ("content")."""

    def __init__(self, block: Block, *, inside: bool, may_open: bool) -> None:
        self._block = block
        self._state = "inside" if inside else "start" if may_open else "content"
        self._held: list[Token] = []
        self._tail = ""  # the block's last characters, in which its closing tag may begin

    def feed(self, token: Token) -> list[Token]:
        """The tokens that can now be delivered, each on its channel."""
        if self._state == "content":
            return [token]
        if self._state == "inside":
            return [self._inside(token.text, token)]
        self._held.append(token)
        text = "".join(held.text for held in self._held).lstrip()
        if text.startswith(self._block.open):
            self._state = "inside"
            self._tail = ""
            held, self._held = self._held, []
            rest = text[len(self._block.open) :]
            return [*(self._mark(token) for token in held[:-1]), self._inside(rest, held[-1])]
        if self._block.open.startswith(text):
            return []  # still the opening tag's beginning, or only whitespace
        return self.end()

    def end(self) -> list[Token]:
        """The held tokens, which began no block: content."""
        self._state = "content" if self._state == "start" else self._state
        held, self._held = self._held, []
        return held

    def _inside(self, text: str, token: Token) -> Token:
        """`token`, of the block; the block ends where its closing tag does."""
        seen = self._tail + text
        if self._block.close in seen:
            self._state = "content"
        self._tail = seen[-len(self._block.close) :]
        return self._mark(token)

    def _mark(self, token: Token) -> Token:
        return attrs.evolve(token, channel=self._block.channel)


def split(
    tokens: Iterator[Token], block: Block, *, inside: bool, may_open: bool
) -> Iterator[Token]:
    """`tokens` with the block's on its channel. `inside`: the prompt opened the block;
    `may_open`: the output may open it itself (else, not inside, it is all content)."""
    splitter = _Splitter(block, inside=inside, may_open=may_open)
    return relayed(tokens, splitter.feed, splitter.end)
