"""Tokens from a `/completion` stream: each with its real id, in order, and why it ended.

llama-server sends no event for a token that leaves an incomplete UTF-8 sequence
(byte pieces of emoji, CJK, accented text): the next event carries the whole
character but only the last id, and `tokens_predicted` jumps. The missing ids are
recovered by tokenizing that event's text with `/tokenize` (with pieces) and accepted
only when the count and the trailing id agree with what the server reported; they are
delivered in order, with empty text, before the token that completes the character.
To recover ids cut off by the token limit the same way, the server is asked for
`UTF8_SLACK` tokens more than `max_tokens` (a UTF-8 character spans at most four byte
tokens) and the stream is closed as soon as `max_tokens` have been delivered.

With `logprobs`, each token carries the figures the server sent for it
(`completion_probabilities`). For a character split across tokens, the server sends
one event with the figures of its last token only: the tokens recovered before it
carry `logprob=None` and no candidates, as does a token of an unfinished character
that `max_tokens` cut off.

Why it ended: our own cut at `max_tokens` is "length" and a stop token (matched here,
by id) "stop"; otherwise the server's final event says, in `stop_type` (see
`wire.finish_reason`: a full context is "limit" there, hence "length").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, final

from inference_core.errors import GenerationError
from inference_core.streams import GenerationScope
from inference_core.types import FinishReason, GenerateConfig, GenerateMetrics, Token

from . import wire
from .client import EventStream, ServerClient, error_for

__all__ = ["UTF8_SLACK", "Generation"]

logger = logging.getLogger(__name__)

# Extra tokens requested beyond max_tokens so that a character split by the
# limit still arrives whole (UTF-8 is at most 4 bytes, each token adds >= 1).
UTF8_SLACK = 3


@final
class Generation:
    """One streamed generation, shared by its token generator and its stream: the events
    (to abort from another thread), the last timings the server sent and why it ended."""

    __slots__ = ("_client", "events", "finish", "timings")

    def __init__(self, client: ServerClient) -> None:
        self._client = client  # for /tokenize, to recover the ids of split characters
        self.events: EventStream | None = None
        self.timings: Any = None  # the last the server sent, read when the stream ends
        self.finish: FinishReason | None = None

    def abort(self) -> None:
        events = self.events
        if events is not None:
            events.abort()

    def metrics(self) -> GenerateMetrics | None:
        """The server's timings; none when they are not its shape (a stream that ran to
        its end raised that already)."""
        try:
            return wire.metrics(self.timings)
        except wire.BadAnswer:
            return None

    def finish_reason(self) -> FinishReason | None:
        return self.finish

    def deliver(
        self, events: EventStream, config: GenerateConfig, scope: GenerationScope
    ) -> Iterator[Token]:
        """Turn events into tokens in order, recovering ids the stream leaves out."""
        delivered, limit, stops = 0, config.max_tokens, config.stop_tokens
        for event in events:
            if "error" in event:
                raise error_for(500, event, endpoint="/completion")
            timings = event.get("timings")
            if timings is not None:
                self.timings = timings
            ids = event.get("tokens")
            if type(ids) is not list:
                ids = wire.ids(ids)
            figures = event.get("completion_probabilities")
            if len(ids) == 1 and event.get("tokens_predicted", delivered + 1) == delivered + 1:
                token = wire.token(ids[0], event.get("content"), figures)  # the hot path
                if token.id in stops:
                    self.finish = "stop"
                    return
                delivered += 1
                yield token
                if delivered == limit:
                    self.finish = "length"
                    return
            elif ids:
                ids, text = wire.ids(ids), wire.text(event.get("content"))
                predicted = event.get("tokens_predicted", delivered + len(ids))
                missing = wire.count(predicted, "tokens_predicted") - delivered
                group = (
                    self._recover(text, ids, missing, scope)
                    if missing > len(ids)
                    else [(token_id, b"") for token_id in ids]
                )
                cut = next((i for i, (token_id, _) in enumerate(group) if token_id in stops), None)
                end = min(len(group) if cut is None else cut, limit - delivered)
                whole = end == len(group)
                last = wire.figures(figures) if whole else None
                yield from _split_group(
                    group[:end],
                    text if whole else None,
                    last if last and last.id == ids[-1] else None,
                )
                delivered += end
                if delivered == limit or end < len(group):
                    self.finish = "length" if delivered == limit else "stop"
                    return
            if event.get("stop") is not False and wire.flag(event.get("stop"), "stop"):
                self.finish = wire.finish_reason(event.get("stop_type"))
                predicted = wire.count(event.get("tokens_predicted", delivered), "tokens_predicted")
                if predicted > delivered and self.finish != "length":
                    logger.warning(
                        "llama-server ended on %d token(s) of an unfinished character it never "
                        "sent; their ids are missing from this stream",
                        predicted - delivered,
                    )
                return
        raise GenerationError(
            "the stream ended without the server's final event; the output is incomplete"
        )

    def _recover(
        self, text: str, ids: list[int], expected: int, scope: GenerationScope
    ) -> list[tuple[int, bytes]]:
        """The ids (and bytes) of a character split across tokens, by tokenizing its text
        (within the generation's own deadline and cancel)."""
        answer = self._client.request(
            "POST", "/tokenize", {"content": text, "with_pieces": True}, scope=scope
        )
        group = wire.pieces(answer)
        if len(group) != expected or [token_id for token_id, _ in group[-len(ids) :]] != ids:
            logger.warning(
                "could not verify the ids of %r (the server reported %d tokens ending in %s, "
                "the tokenizer gives %s); delivering the tokenizer's ids",
                text,
                expected,
                ids,
                [token_id for token_id, _ in group],
            )
        return group


def _split_group(
    group: list[tuple[int, bytes]], text: str | None, figures: wire.Figures | None
) -> Iterator[Token]:
    """Tokens of one event: the text goes on the last; ids before it carry none.

    `text` is None when the group was cut short (by the limit or a stop token):
    the last token delivered then carries its bytes decoded the way the server
    renders an unfinished character. `figures` are the log-probabilities the
    server sent with the event; they belong to its last token only.
    """
    if not group:
        return
    for token_id, _ in group[:-1]:
        yield Token(token_id, "")
    if text is None:
        text = b"".join(data for _, data in group).decode("utf-8", "replace")
    token_id = group[-1][0]
    yield Token(token_id, text) if figures is None else figures.token(token_id, text)
