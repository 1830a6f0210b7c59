"""Tokens as llama-server's tokenizer makes them (`/tokenize`, `/detokenize`).

`tokenize` takes the ids and the bytes of each piece. Text goes on tokens as a stream
delivers it: a token that leaves a multi-byte character unfinished carries "", and the
token that finishes it carries all the text since the last token that carried any.
Joined, the texts are the text as the tokenizer has it (one that adds a leading space
shows it).

`prompt_tokens` counts a prompt as `/completion` reads it (measured on the pinned
build): the markup of special tokens read as those tokens, and the model's BOS added
where its vocabulary asks for one.
"""

from __future__ import annotations

import codecs

from inference_core.streams import GenerationScope
from inference_core.types import Token

from . import wire
from .client import ServerClient

__all__ = ["detokenize", "prompt_tokens", "tokenize"]


def tokenize(
    client: ServerClient, text: str, special: bool, scope: GenerationScope | None = None
) -> list[Token]:
    """The tokens of `text`, nothing added; `special` parses special tokens' markup."""
    body = {"content": text, "with_pieces": True, "add_special": False, "parse_special": special}
    pieces = wire.pieces(client.request("POST", "/tokenize", body, scope=scope))
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    tokens, held = [], ""
    for token_id, piece in pieces:
        held += decoder.decode(piece)
        unfinished, _ = decoder.getstate()  # the bytes of a character begun, not ended
        tokens.append(Token(token_id, "" if unfinished else held))
        held = held if unfinished else ""
    held += decoder.decode(b"", final=True)  # pieces that end inside a character
    if held:
        tokens[-1] = Token(tokens[-1].id, held)
    return tokens


def detokenize(client: ServerClient, ids: list[int], scope: GenerationScope | None = None) -> str:
    """The text of `ids`; an unfinished character in it shows as U+FFFD."""
    return wire.detokenized(client.request("POST", "/detokenize", {"tokens": ids}, scope=scope))


def prompt_tokens(client: ServerClient, text: str, scope: GenerationScope | None = None) -> int:
    """How many tokens `/completion` reads for the prompt `text`."""
    body = {"content": text, "add_special": True, "parse_special": True}
    return wire.token_count(client.request("POST", "/tokenize", body, scope=scope))
