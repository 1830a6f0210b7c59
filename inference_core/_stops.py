"""Stop strings, matched once here for every backend built on `StreamingModel`.

The backend streams tokens as it always does; `cut` passes them on, holding back each
token whose text could still be part of a stop string, and ends the stream where the
first stop string begins: the backend is aborted (llama-server frees the slot) and
neither the stop string nor anything after it is delivered. Held-back tokens that turn
out not to start one are delivered as they were: a token is never split or given other
text, so every delivered token keeps its real id.

The delivered text is the whole text cut where a stop string first begins (the least
start of any of them), with one exception that keeps tokens whole: a token that begins
before that point and ends inside or after the stop string is left out as well (with
the empty-text tokens before it that carry the first bytes of its character), so that
no part of the stop string is ever delivered.

Stop strings end the answer: they are looked for in the "content" channel only. Tokens
of the thinking ("reasoning") pass on at once and never match, so a stop string the
model thinks about does not end its answer before it begins. (A backend delivers its
thinking before its answer, so that order is kept.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import final

from ._relay import closing
from .types import Token

__all__ = ["StopMatcher", "cut"]


@final
class StopMatcher:
    """Tokens in; out, the tokens known to come before every stop string, as soon as
    that is known. `matched` once a stop string has ended the text."""

    __slots__ = ("_held", "_stops", "_text", "matched", "rest")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = stops
        self._held: list[Token] = []
        self._text = ""  # the held tokens' text; no stop string can begin before it
        self.matched = False
        self.rest: list[Token] = []  # once matched: the held tokens not released, in order

    def feed(self, token: Token) -> list[Token]:
        """The tokens, `token` or earlier ones, that can now be delivered."""
        self._held.append(token)
        self._text += token.text
        return self._release(final=False)

    def end(self) -> list[Token]:
        """At the end of the generation: the held tokens before any stop string."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> list[Token]:
        text = self._text
        match = self._first_match(text)
        unsettled = None if final else self._first_unsettled(text)
        if match is not None and (unsettled is None or match <= unsettled):
            self.matched = True  # no stop string can begin before `match` any more
            released = self._before(match)
            self.rest = self._held[len(released) :]
            self._held, self._text = [], ""
            return released
        if final:
            released, self._held, self._text = self._held, [], ""
            return released
        released = self._before(len(text) if unsettled is None else unsettled)
        self._held = self._held[len(released) :]
        self._text = text[sum(len(token.text) for token in released) :]
        return released

    def _first_match(self, text: str) -> int | None:
        """Where the first stop string in `text` begins."""
        starts = [start for stop in self._stops if (start := text.find(stop)) >= 0]
        return min(starts) if starts else None

    def _first_unsettled(self, text: str) -> int | None:
        """The first place where the text so far ends in the beginning of a stop string,
        which the next tokens may complete."""
        first = None
        for stop in self._stops:
            place = text.find(stop[0], max(0, len(text) - len(stop) + 1))
            while place >= 0 and (first is None or place < first):
                if stop.startswith(text[place:]):
                    first = place
                    break
                place = text.find(stop[0], place + 1)
        return first

    def _before(self, bound: int) -> list[Token]:
        """The held tokens that end at or before `bound` in the held text; an empty-text
        token (the first bytes of a character) goes with the token that completes it."""
        released: list[Token] = []
        waiting = 0  # empty-text tokens seen since the last token with text
        end = 0
        for token in self._held:
            if not token.text:
                waiting += 1
                continue
            end += len(token.text)
            if end > bound:
                break
            released.extend(self._held[len(released) : len(released) + waiting + 1])
            waiting = 0
        return released


def cut(
    tokens: Iterator[Token], matcher: StopMatcher, abort: Callable[[], None]
) -> Iterator[Token]:
    """`tokens` up to the first stop string; on a match the backend is aborted at once
    (its generation would only be thrown away) and its generator closed."""
    with closing(tokens):
        for token in tokens:
            if token.channel != "content":
                yield token
                continue
            released = matcher.feed(token)
            if matcher.matched:
                abort()
                yield from released
                return
            yield from released
        yield from matcher.end()
