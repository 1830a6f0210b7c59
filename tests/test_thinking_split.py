"""How a llama-server stream is split into channels (inference_rocm/channels.py), on
token sequences as `/completion` delivers them, for the shapes the real SmolLM2 runs in
tests/test_thinking.py do not reach: a model that opens its thinking itself (Qwen3's
templates leave "<think>" to the model), whitespace before it, an answer that only
begins like a tag, and tags split across tokens in other ways.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import inference_core as ic
from inference_rocm.channels import Block, split
from inference_rocm.thinking import _derive

BLOCK = Block("<think>", "</think>", "reasoning")


def channels(texts: list[str], *, inside: bool, may_open: bool = True) -> list[str]:
    tokens = [ic.Token(index, text) for index, text in enumerate(texts)]
    out = list(split(iter(tokens), BLOCK, inside=inside, may_open=may_open))
    assert [token.id for token in out] == list(range(len(texts)))  # all, in order
    return ["r" if token.channel == "reasoning" else "c" for token in out]


def test_a_block_the_prompt_opened_ends_with_the_token_that_ends_its_tag() -> None:
    texts = ["\n", "Hm", "</", "think", ">", "\n\n", "Yes"]
    assert channels(texts, inside=True) == list("rrrrrcc")
    assert channels(["ok</think>", "\n", "Yes"], inside=True) == list("rcc")


def test_a_block_the_model_opens_itself_is_thinking_from_its_first_token() -> None:
    assert channels(["<", "think", ">", "Hm", "</think>", "Yes"], inside=False) == list("rrrrrc")
    assert channels(["\n", "<think>", "Hm", "</", "think>", "Yes"], inside=False) == list("rrrrrc")


def test_an_answer_that_only_begins_like_the_tag_is_content() -> None:
    assert channels(["<", "b", ">", "bold"], inside=False) == list("cccc")
    assert channels(["<", "thin"], inside=False) == list("cc")  # ended while held
    assert channels(["Yes", "<think>", "x"], inside=False) == list("ccc")  # not at the start


def test_without_thinking_everything_is_content() -> None:
    assert channels(["<think>", "x", "</think>"], inside=False, may_open=False) == list("ccc")


@pytest.mark.parametrize(
    ("on", "off", "tags"),
    [
        ("A\n<think>\n", "A\n<think>\n</think>\n\n", ("<think>", "</think>")),  # ours
        ("A\n", "A\n<think>\n\n</think>\n\n", ("<think>", "</think>")),  # Qwen3's shape
        ("A\n", "A\n", None),  # enable_thinking changes nothing
        ("A\n", "A\n</think>\n", None),  # a closing tag the prompt never opened
        ("A\n<x>\n", "A\n<y>\n", None),  # thinking on writes something of its own
    ],
)
def test_the_tags_come_from_what_turning_thinking_off_adds(
    on: str, off: str, tags: tuple[str, str] | None
) -> None:
    assert _derive(on, off) == tags


def test_tokens_are_held_only_while_they_may_still_open_the_block() -> None:
    pulled: list[str] = []

    def tokens() -> Iterator[ic.Token]:
        for index, text in enumerate(["<", "b", ">", "bold", "text"]):
            pulled.append(text)
            yield ic.Token(index, text)

    out = split(tokens(), BLOCK, inside=False, may_open=True)
    assert next(out).text == "<" and pulled == ["<", "b"]  # "<b" opens no block
    assert next(out).text == "b" and pulled == ["<", "b"]
    assert next(out).text == ">" and pulled == ["<", "b", ">"]  # content now: not held
