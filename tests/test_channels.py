"""Thinking kept apart from the answer, through the public API of the core: `Token.channel`,
`text()` and `reasoning_text()`, `think`, `reasoning_budget`, `Message.reasoning`, stop
strings and the ends of a stream, on FakeBackend's thinking mode (and the kit run on it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import inference_core as ic
from inference_core import LoadConfig
from inference_core.protocols import TextModel
from inference_core.testing import FakeBackend, TextModelContract
from inference_core.testing.contracts import TOOLS
from inference_core.testing.fake import THINK_END
from inference_core.types import MessageLike

QUESTION = [ic.Message("user", "name three colours")]
THOUGHT = "Thinking it over: name three colours"


@pytest.fixture(scope="module")
def thinker() -> Iterator[TextModel]:
    with FakeBackend(token_delay=0.001, thinking=True).load_model("f.gguf", LoadConfig()) as model:
        yield model


class TestThinkingFakeModelContract(TextModelContract):
    @pytest.fixture
    def model(self, thinker: TextModel) -> TextModel:
        return thinker

    @pytest.fixture
    def waiting_model(self) -> TextModel:
        return FakeBackend(token_delay=3600, thinking=True).load_model("f.gguf", LoadConfig())


def channels(stream: ic.TokenStream) -> list[str]:
    return [token.channel for token in stream]


def test_the_thinking_comes_first_on_its_channel_and_text_is_the_answer(
    thinker: TextModel,
) -> None:
    stream = thinker.chat(QUESTION, max_tokens=12)
    tokens = list(stream)
    assert [t.channel for t in tokens] == ["reasoning"] * 7 + ["content"] * 5
    assert tokens[6].text == THINK_END  # the closing tag is thinking's, with its id
    assert stream.text() == " name three colours name three"
    assert stream.reasoning_text() == THOUGHT
    assert stream.finish_reason == "length"


def test_a_budget_bounds_the_thinking_tag_included(thinker: TextModel) -> None:
    for budget in (1, 2, 5):
        tokens = list(thinker.chat(QUESTION, reasoning_budget=budget, max_tokens=12))
        assert [t.channel for t in tokens] == ["reasoning"] * budget + ["content"] * (12 - budget)
        assert tokens[budget - 1].text == THINK_END


@pytest.mark.parametrize("off", [{"think": False}, {"reasoning_budget": 0}])
def test_think_false_or_a_zero_budget_gives_no_reasoning(
    thinker: TextModel, off: dict[str, Any]
) -> None:
    stream = thinker.chat(QUESTION, max_tokens=4, **off)
    assert channels(stream) == ["content"] * 4
    assert stream.reasoning_text() == "" and stream.text() == "name three colours name"


def test_think_on_a_model_that_cannot_is_refused() -> None:
    model = FakeBackend().load_model("f.gguf", LoadConfig())
    assert not model.capabilities.reasoning
    with pytest.raises(ic.UnsupportedOption) as refused:
        model.chat(QUESTION, think=True)
    assert refused.value.option == "think"
    assert channels(model.chat(QUESTION, think=False, max_tokens=3)) == ["content"] * 3


@pytest.mark.parametrize(("option", "value"), [("think", True), ("reasoning_budget", 4)])
def test_a_raw_prompt_takes_no_thinking_options(
    thinker: TextModel, option: str, value: Any
) -> None:
    with pytest.raises(ic.UnsupportedOption) as refused:
        thinker.generate("a prompt", **{option: value})
    assert refused.value.option == option and "chat()" in str(refused.value)
    with pytest.raises(ic.UnsupportedOption) as refused:
        thinker.batch_generate(["a prompt"], **{option: value})  # at once, for the batch
    assert refused.value.option == option
    assert channels(thinker.generate("a prompt", think=False, max_tokens=2)) == ["content"] * 2


def test_bad_thinking_values_and_channels_are_value_errors() -> None:
    for bad in ({"think": "yes"}, {"reasoning_budget": -2}, {"reasoning_budget": 1.5}):
        with pytest.raises(ic.InvalidValue):
            ic.GenerateConfig(**bad)
    with pytest.raises(ic.InvalidValue, match="channel"):
        ic.Token(1, "x", channel="thinking")
    with pytest.raises(ic.InvalidValue, match="assistant"):
        ic.Message("user", "hi", reasoning="thought")


def test_earlier_thinking_goes_back_in_the_prompt(thinker: TextModel) -> None:
    bare: list[MessageLike] = [
        *QUESTION,
        ic.Message("assistant", "red"),
        ic.Message("user", "more"),
    ]
    thought = [*QUESTION, {"role": "assistant", "content": "red", "reasoning": "hm"}, bare[2]]
    assert thinker.count_tokens(thought) > thinker.count_tokens(bare)
    stream = thinker.chat(thought, max_tokens=2)
    stream.text()
    assert stream.metrics is not None
    assert stream.metrics.prompt_tokens == thinker.count_tokens(thought)


def test_stop_strings_match_the_answer_not_the_thinking(thinker: TextModel) -> None:
    stream = thinker.chat(QUESTION, max_tokens=12, stop=["three", "over:"])
    tokens = list(stream)
    assert stream.reasoning_text() == THOUGHT  # "over:" and "three" thought of, not stops
    assert [t.text for t in tokens if t.channel == "content"] == [" name"]
    assert stream.finish_reason == "stop"


def test_tool_calls_are_read_from_the_answer_after_the_thinking(thinker: TextModel) -> None:
    stream = thinker.chat(QUESTION, tools=TOOLS, tool_choice="required")
    assert stream.reasoning_text().startswith("Thinking")
    assert stream.err() is None and [call.name for call in stream.tool_calls] == ["get_weather"]
    assert stream.finish_reason == "tool_calls"


def test_a_cancel_during_the_thinking_keeps_what_was_thought(thinker: TextModel) -> None:
    stream = thinker.chat(QUESTION, max_tokens=12)
    assert [next(stream).channel, next(stream).channel] == ["reasoning", "reasoning"]
    stream.cancel()
    assert list(stream) == [] and isinstance(stream.err(), ic.Cancelled)
    assert stream.finish_reason == "cancelled"
    assert stream.reasoning_text() == "Thinking it" and stream.text() == ""


def test_four_threads_each_keep_their_thinking_apart(thinker: TextModel) -> None:
    results: dict[int, tuple[str, str]] = {}

    def ask(index: int) -> None:
        stream = thinker.chat([ic.Message("user", f"word{index} more")], max_tokens=8)
        results[index] = (stream.reasoning_text(), stream.text())

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {
        index: (f"Thinking it over: word{index} more", f" word{index} more") for index in range(4)
    }


def test_the_async_stream_splits_as_the_sync_one(thinker: TextModel) -> None:
    async def run() -> tuple[list[str], str, str]:
        stream = thinker.achat(QUESTION, max_tokens=10, reasoning_budget=3)
        kept = [token.channel async for token in stream]
        return kept, await stream.text(), await stream.reasoning_text()

    kept, text, reasoning = asyncio.run(run())
    assert kept == ["reasoning"] * 3 + ["content"] * 7
    sync = thinker.chat(QUESTION, max_tokens=10, reasoning_budget=3)
    assert (
        (text, reasoning)
        == (sync.text(), sync.reasoning_text())
        == (
            " name three colours name three colours name",
            "Thinking it",
        )
    )


def test_a_batch_results_text_is_its_answer() -> None:
    tokens = (ic.Token(1, "hm", channel="reasoning"), ic.Token(2, "</think>", channel="reasoning"))
    result = ic.BatchResult("p", (*tokens, ic.Token(3, "yes")))
    assert result.text == "yes"
