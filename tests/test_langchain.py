"""The LangChain adapter, by LangChain's own standard tests and ours (`tox -e frameworks`).

The standard suites (langchain-tests) build a `ChatInference` per test; every one of them
names the same SmolLM2 file, so one llama-server serves the whole module.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Literal, cast

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, ChatMessage, HumanMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests
from pydantic import ValidationError

import inference_core as ic
from inference_core.demo import demo_model_path
from inference_core.integrations.langchain import ChatInference, InferenceEmbeddings

from .slots import generating, wait_until_idle

pytestmark = [pytest.mark.frameworks, pytest.mark.server]

THINKING = str(Path(__file__).parent / "templates" / "think.jinja")


def _smollm2() -> str:
    """The demo model's path (the suites' settings are class properties, not fixtures)."""
    return demo_model_path()


class _Chat:
    """What both chat suites are told: our class, on SmolLM2."""

    @property
    def chat_model_class(self) -> type[ChatInference]:
        return ChatInference

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": _smollm2()}


class _Embeddings:
    """What both embeddings suites are told: our class, on SmolLM2."""

    @property
    def embeddings_class(self) -> type[InferenceEmbeddings]:
        return InferenceEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": _smollm2()}


class TestChatInferenceUnit(_Chat, ChatModelUnitTests):
    pass


class TestChatInferenceIntegration(_Chat, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        # room for a whole JSON answer, and few enough tokens to keep the suite quick
        return {"model": _smollm2(), "max_tokens": 128, "temperature": 0}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        """Another name of the same file: a per-call `model=` picks what answers."""
        path = _smollm2()
        return os.path.join(os.path.dirname(path), ".", os.path.basename(path))

    @property
    def supported_usage_metadata_details(self) -> dict[Literal["invoke", "stream"], list[Any]]:
        details: list[Any] = ["reasoning_output", "cache_read_input"]
        return {"invoke": details, "stream": details}

    @pytest.mark.xfail(
        reason="JSON mode holds the answer to a JSON object, not to the keys the prompt "
        "asks for, and SmolLM2-135M does not follow them (it nests one key)",
        strict=True,
    )
    def test_json_mode(self, model: Any) -> None:
        super().test_json_mode(model)

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> AIMessage:
        chat = ChatInference(
            model=_smollm2(), load_options={"chat_template": THINKING}, think=True, max_tokens=64
        )
        return _answer(chat, "Why is the sky blue?", stream)

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        chat = ChatInference(model=_smollm2(), max_tokens=8)
        prompt = "Read this twice. " * 40
        _answer(chat, prompt, stream)
        return _answer(chat, prompt, stream)


def _answer(chat: ChatInference, prompt: str, stream: bool) -> AIMessage:
    if not stream:
        answer = chat.invoke(prompt)
        assert isinstance(answer, AIMessage)
        return answer
    whole: AIMessageChunk | None = None
    for chunk in chat.stream(prompt):
        whole = chunk if whole is None else whole + chunk
    assert whole is not None
    return AIMessage(
        content=whole.content,
        additional_kwargs=whole.additional_kwargs,
        usage_metadata=whole.usage_metadata,
        response_metadata=whole.response_metadata,
    )


class TestInferenceEmbeddingsUnit(_Embeddings, EmbeddingsUnitTests):
    pass


class TestInferenceEmbeddingsIntegration(_Embeddings, EmbeddingsIntegrationTests):
    pass


# What the standard suites leave to us.


def test_constructing_loads_nothing_and_a_bad_option_is_refused_at_once() -> None:
    chat = ChatInference(model="/nowhere/model.gguf")  # no server yet: nothing to load
    with pytest.raises(ic.InvalidModelFile):
        chat.invoke("Hello")
    # pydantic's own error at construction, as for any LangChain model's bad field
    with pytest.raises(ValidationError, match="temperature must be a number"):
        ChatInference(model=_smollm2(), temperature=-1.0)
    with pytest.raises(ValidationError, match="model must be a path"):
        ChatInference(model=42)
    with pytest.raises(ic.InvalidValue, match="temperature"):  # ours for a call's options
        ChatInference(model=_smollm2()).invoke("Hello", temperature=-1.0)


def test_a_loaded_model_is_used_as_it_is(shared_model: ic.TextModel) -> None:
    chat = ChatInference(model=shared_model, max_tokens=4)
    assert chat.loaded_model() is shared_model
    assert chat.profile is not None
    assert chat.profile["max_input_tokens"] == shared_model.context_len
    assert chat.invoke("Hello").content
    with pytest.raises(ValidationError, match="takes no load options"):
        ChatInference(model=shared_model, load_options={"context_len": 512})


def test_every_spelling_of_a_file_shares_one_server(smollm2_path: str) -> None:
    chat = ChatInference(model=smollm2_path)
    other = ChatInference(
        model=os.path.join(
            os.path.dirname(smollm2_path), ".", "x", "..", os.path.basename(smollm2_path)
        )
    )
    embeddings = InferenceEmbeddings(model=smollm2_path)
    assert chat.loaded_model() is ChatInference(model=smollm2_path).loaded_model()
    assert chat.loaded_model() is not embeddings.loaded_model()  # embeddings=True: its own
    with pytest.raises(ic.InvalidModelFile):
        other.loaded_model()  # "x" does not exist: the path is not the same file


def test_thinking_is_kept_apart_as_reasoning_content_and_streamed(smollm2_path: str) -> None:
    chat = ChatInference(
        model=smollm2_path,
        load_options={"chat_template": THINKING},
        think=True,
        max_tokens=48,
    )
    answer = chat.invoke("Why is the sky blue?")
    thought = answer.additional_kwargs.get("reasoning_content")
    assert isinstance(thought, str) and thought
    assert "<think>" not in thought and "</think>" not in thought
    assert "<think>" not in str(answer.content)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_token_details"]["reasoning"] > 0
    blocks = [block["type"] for block in answer.content_blocks]
    assert blocks[0] == "reasoning"
    pieces = [
        (chunk.additional_kwargs.get("reasoning_content", ""), chunk.content)
        for chunk in chat.stream("Why is the sky blue?")
    ]
    thinking = [piece for piece, _ in pieces if piece]
    assert len(thinking) > 1 and "".join(thinking) == thought  # as it comes, no tags
    last_thought = max(index for index, (piece, _) in enumerate(pieces) if piece)
    assert all(index > last_thought for index, (_, text) in enumerate(pieces) if text)


def test_finish_reason_timings_and_logprobs_reach_response_metadata(smollm2_path: str) -> None:
    chat = ChatInference(model=smollm2_path, max_tokens=5, logprobs=True, top_logprobs=2)
    answer = chat.invoke("Count: one, two, three,")
    assert answer.response_metadata["finish_reason"] == "length"
    assert answer.response_metadata["timings"]["decode_tokens_per_second"] > 0
    logprobs = answer.response_metadata["logprobs"]["content"]
    assert len(logprobs) == answer.usage_metadata["output_tokens"]  # type: ignore[index]
    assert "".join(entry["token"] for entry in logprobs) == answer.content
    assert all(entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 2 for entry in logprobs)


def test_a_forced_tool_and_auto_with_no_call_answer_as_the_user_sees_them(
    smollm2_path: str,
) -> None:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    chat = ChatInference(model=smollm2_path, max_tokens=96)
    forced = chat.bind_tools([multiply], tool_choice="multiply").invoke("What is 6 times 7?")
    assert forced.tool_calls[0]["name"] == "multiply"
    assert set(forced.tool_calls[0]["args"]) == {"a", "b"}
    assert forced.response_metadata["finish_reason"] == "tool_calls"
    # SmolLM2 answers this one without the tool: the generic format's {"response": ...}
    # is unwrapped, so the user reads the text, never the JSON
    chunks = list(chat.bind_tools([multiply]).stream("What is the capital of France?"))
    whole = cast(AIMessageChunk, chunks[0])
    for chunk in chunks[1:]:
        whole += cast(AIMessageChunk, chunk)
    assert not whole.tool_calls
    assert "Paris" in str(whole.content) and "{" not in str(whole.content)


def test_stop_strings_end_the_answer_before_them(smollm2_path: str) -> None:
    chat = ChatInference(model=smollm2_path, max_tokens=40, stop=["three"])
    answer = chat.invoke("Count from one to ten in words: one, two,", stop=["four"])
    assert "three" not in str(answer.content) and "four" not in str(answer.content)
    assert answer.response_metadata["finish_reason"] == "stop"


def test_cancelling_the_task_stops_the_generation(smollm2_path: str) -> None:
    """A cancelled `astream` stops its generation on the server at once; the answer
    could not end by itself (a grammar that never lets it stop, 8,000 tokens: minutes)."""
    chat = ChatInference(model=smollm2_path, max_tokens=8000, grammar='root ::= "la " root')

    async def scenario() -> None:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in chat.astream("Sing."):
                started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 60)
        assert generating(chat.loaded_model())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(wait_until_idle, chat.loaded_model(), 10.0)

    asyncio.run(scenario())


def test_leaving_a_stream_early_stops_the_generation(smollm2_path: str) -> None:
    chat = ChatInference(model=smollm2_path, max_tokens=8000, grammar='root ::= "la " root')
    for _ in chat.stream("Sing."):
        assert generating(chat.loaded_model())
        break
    wait_until_idle(chat.loaded_model(), 10.0)


def test_errors_stay_typed(smollm2_path: str) -> None:
    chat = ChatInference(model=smollm2_path, max_tokens=4)
    with pytest.raises(ic.ContextOverflow):
        chat.invoke("word " * 20_000)
    with pytest.raises(ic.InvalidValue, match="role"):
        chat.invoke([ChatMessage(role="robot", content="Hello")])
    with pytest.raises(TypeError, match="unknown option"):
        chat.invoke("Hello", temprature=0.5)


def test_the_timeout_bounds_a_call(smollm2_path: str) -> None:
    chat = ChatInference(model=smollm2_path, max_tokens=4000, timeout=0.5, temperature=1.0)
    with pytest.raises(ic.GenerationTimeout):
        chat.invoke("Write a very long story about a dragon.")


def test_the_messages_reach_the_model_as_a_conversation(smollm2_path: str) -> None:
    chat = ChatInference(model=smollm2_path, max_tokens=16)
    messages: list[Any] = [
        ("system", "You answer in one word."),
        HumanMessage("What colour is the sky on a clear day?"),
    ]
    asked = chat.loaded_model().count_tokens(
        [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "What colour is the sky on a clear day?"},
        ]
    )
    answer = chat.invoke(messages)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == asked
