"""Tokens as llama-server's tokenizer makes them (`/tokenize`, `/detokenize`).

`tokenize` takes the ids and the bytes of each piece. Text goes on tokens as a stream
delivers it: a token that ends inside a multi-byte character carries the text its
bytes complete ("" when they complete nothing), and the token that completes the
character carries it, whole. Joined, the texts are the text as the tokenizer has it
(one that adds a leading space shows it).

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
    tokens = [Token(token_id, decoder.decode(piece)) for token_id, piece in pieces]
    unfinished = decoder.decode(b"", final=True)  # pieces ending inside a character
    if unfinished:
        tokens[-1] = Token(tokens[-1].id, tokens[-1].text + unfinished)
    return tokens


def detokenize(client: ServerClient, ids: list[int], scope: GenerationScope | None = None) -> str:
    """The text of `ids`; an unfinished character in it shows as U+FFFD."""
    return wire.detokenized(client.request("POST", "/detokenize", {"tokens": ids}, scope=scope))


def prompt_tokens(client: ServerClient, text: str, scope: GenerationScope | None = None) -> int:
    """How many tokens `/completion` reads for the prompt `text`."""
    body = {"content": text, "add_special": True, "parse_special": True}
    return wire.token_count(client.request("POST", "/tokenize", body, scope=scope))
