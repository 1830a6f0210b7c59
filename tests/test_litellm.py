"""The LiteLLM provider, through `litellm` itself and DSPy, on the real llama-server and
SmolLM2 (`tox -e frameworks`, which sets LITELLM_LOCAL_MODEL_COST_MAP and DSPY_CACHEDIR)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import inference_core as ic
from inference_core.integrations._shared import shared_model

pytestmark = [pytest.mark.frameworks, pytest.mark.server]

LOAD = {"context_len": 2048}
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
THINKING = str(Path(__file__).parent / "templates" / "think.jinja")
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    """LiteLLM, imported as the tox env does: its price list read from its own copy."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


@pytest.fixture(scope="module")
def name(litellm: ModuleType, smollm2_path: str) -> str:
    """SmolLM2's model name, the provider registered with its load options."""
    from inference_core.integrations.litellm import register

    register(load_options={smollm2_path: LOAD})
    return "inference/" + smollm2_path


@pytest.fixture
def model(name: str, smollm2_path: str) -> ic.TextModel:
    """The very model the provider runs `name` on (loaded once per process)."""
    return shared_model(smollm2_path, LOAD)


@pytest.fixture
def closed_streams(model: ic.TextModel, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every stream the provider opens on `model`, listed once it has been closed."""
    closed: list[object] = []
    chat, achat = model.chat, model.achat

    def recording_chat(*args: Any, **kwargs: Any) -> ic.TokenStream:
        stream = chat(*args, **kwargs)
        close = stream.close

        def closing() -> None:
            closed.append(stream)
            close()

        monkeypatch.setattr(stream, "close", closing)
        return stream

    def recording_achat(*args: Any, **kwargs: Any) -> ic.AsyncTokenStream:
        stream = achat(*args, **kwargs)
        aclose = stream.aclose

        async def aclosing() -> None:
            closed.append(stream)
            await aclose()

        monkeypatch.setattr(stream, "aclose", aclosing)
        return stream

    monkeypatch.setattr(model, "chat", recording_chat)
    monkeypatch.setattr(model, "achat", recording_achat)
    return closed


def text_of(chunks: list[Any]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def test_completion_answers_with_its_usage(
    litellm: ModuleType, name: str, model: ic.TextModel
) -> None:
    response = litellm.completion(model=name, messages=QUESTION, max_tokens=16)
    choice = response.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    assert response.usage.prompt_tokens == model.count_tokens(QUESTION)
    assert response.usage.completion_tokens > 0
    assert response.usage.prompt_tokens_details.cached_tokens is not None


def test_streamed_chunks_rebuild_the_answer(litellm: ModuleType, name: str) -> None:
    whole = litellm.completion(model=name, messages=QUESTION, max_tokens=16)
    chunks = list(
        litellm.completion(
            model=name,
            messages=QUESTION,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len([chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]) > 1
    assert text_of(chunks) == whole.choices[0].message.content
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    rebuilt = litellm.stream_chunk_builder(chunks, messages=QUESTION)
    assert rebuilt.choices[0].message.content == whole.choices[0].message.content
    assert rebuilt.choices[0].finish_reason == "stop"
    assert rebuilt.usage.completion_tokens == whole.usage.completion_tokens


def test_thinking_streams_as_reasoning_content_without_its_tags(
    litellm: ModuleType, name: str
) -> None:
    """SmolLM2 under a template that opens a thinking block: the thinking comes as
    `reasoning_content` deltas, before the answer, and rebuilds what a whole answer holds."""
    options = {"load_options": {**LOAD, "chat_template": THINKING}, "max_tokens": 48}
    whole = litellm.completion(model=name, messages=QUESTION, think=True, **options)
    thought = whole.choices[0].message.reasoning_content
    assert thought and "<think>" not in thought and "</think>" not in thought
    chunks = list(
        litellm.completion(model=name, messages=QUESTION, think=True, stream=True, **options)
    )
    deltas = [
        (getattr(chunk.choices[0].delta, "reasoning_content", None), chunk.choices[0].delta.content)
        for chunk in chunks
        if chunk.choices
    ]
    thinking = [piece for piece, _ in deltas if piece]
    assert len(thinking) > 1 and "".join(thinking) == thought
    last_thought = max(i for i, (piece, _) in enumerate(deltas) if piece)
    assert all(i > last_thought for i, (_, text) in enumerate(deltas) if text)
    rebuilt = litellm.stream_chunk_builder(chunks, messages=QUESTION)
    assert rebuilt.choices[0].message.reasoning_content == thought


async def test_acompletion_and_astreaming_answer_as_the_sync_calls(
    litellm: ModuleType, name: str
) -> None:
    whole = litellm.completion(model=name, messages=QUESTION, max_tokens=16)
    response = await litellm.acompletion(model=name, messages=QUESTION, max_tokens=16)
    stream = await litellm.acompletion(
        model=name,
        messages=QUESTION,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert response.choices[0].message.content == whole.choices[0].message.content
    assert text_of(chunks) == whole.choices[0].message.content
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


@pytest.mark.parametrize("top", [0, 2])
def test_logprobs_come_with_as_many_candidates_as_asked(
    litellm: ModuleType, name: str, top: int
) -> None:
    response = litellm.completion(
        model=name, messages=QUESTION, max_tokens=8, logprobs=True, top_logprobs=top, top_k=40
    )
    choice = response.choices[0]
    tokens = choice.logprobs.content
    assert "".join(token.token for token in tokens) == choice.message.content
    assert all(len(token.top_logprobs) == top and token.logprob <= 0 for token in tokens)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_tool_forced_by_name_is_called_with_its_arguments(
    litellm: ModuleType, name: str, stream: bool
) -> None:
    forced = {"type": "function", "function": {"name": "get_weather"}}
    response = litellm.completion(
        model=name, messages=ASK_WEATHER, tools=[WEATHER], tool_choice=forced, stream=stream
    )
    if stream:
        chunks = list(response)
        assert text_of(chunks) == ""  # the tool format's JSON is never shown as text
        response = litellm.stream_chunk_builder(chunks)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_a_json_schema_response_format_holds_the_answer(litellm: ModuleType, name: str) -> None:
    pydantic: Any = importlib.import_module("pydantic")  # LiteLLM's, not in the default env
    City = pydantic.create_model("City", name=(str, ...), country=(str, ...))
    messages = [{"role": "user", "content": "Name the capital of France and its country."}]
    response = litellm.completion(model=name, messages=messages, response_format=City)
    city = City.model_validate_json(response.choices[0].message.content)
    assert city.name


async def test_embeddings_are_vectors_of_the_models_width(
    litellm: ModuleType, name: str, model: ic.TextModel
) -> None:
    texts = ["The cat sleeps.", "Stock markets fell."]
    response = litellm.embedding(model=name, input=texts)
    vectors = [item["embedding"] for item in response.data]
    assert [len(vector) for vector in vectors] == [model.info.embedding_length] * 2
    assert vectors[0] != vectors[1]
    again = await litellm.aembedding(model=name, input=texts)
    for vector, same in zip(vectors, (item["embedding"] for item in again.data), strict=True):
        assert same == pytest.approx(vector)


@pytest.mark.parametrize(
    ("options", "theirs", "ours"),
    [
        ({"timeout": 0.01, "max_tokens": 200}, "Timeout", ic.GenerationTimeout),
        ({"frequency_penalty": 0.5}, "BadRequestError", ic.UnsupportedOption),
        ({"typical_p": 0.9}, "BadRequestError", ic.UnsupportedOption),
        ({"temperature": -1.0}, "BadRequestError", ic.InvalidValue),
    ],
    ids=["timeout", "unsupported", "unknown", "invalid"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_errors_stay_ours_and_are_litellms(
    litellm: ModuleType,
    name: str,
    options: dict[str, Any],
    theirs: str,
    ours: type[Exception],
    stream: bool,
) -> None:
    with pytest.raises(getattr(litellm, theirs)) as caught:
        response = litellm.completion(model=name, messages=QUESTION, stream=stream, **options)
        if stream:
            list(response)
    assert isinstance(caught.value, ours)
    assert isinstance(caught.value.__cause__, ours)


def test_a_prompt_past_the_context_is_a_context_window_error(
    litellm: ModuleType, name: str
) -> None:
    long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(litellm.ContextWindowExceededError) as caught:
        litellm.completion(model=name, messages=long, max_tokens=8)
    assert isinstance(caught.value, ic.ContextOverflow)
    assert caught.value.prompt_tokens > caught.value.context_len == 2048


def test_a_missing_model_file_is_not_found_and_ours(
    litellm: ModuleType, name: str, tmp_path: Any
) -> None:
    missing = str(tmp_path / "absent.gguf")
    with pytest.raises(litellm.NotFoundError) as caught:
        litellm.completion(model="inference/" + missing, messages=QUESTION)
    assert isinstance(caught.value, ic.InvalidModelFile)
    assert caught.value.path == missing


async def test_cancelling_the_consumer_closes_our_stream(
    litellm: ModuleType, name: str, closed_streams: list[object]
) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        stream = await litellm.acompletion(
            model=name, messages=QUESTION, max_tokens=400, temperature=1.0, stream=True
        )
        async for _ in stream:
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (stream,) = closed_streams
    assert isinstance(stream, ic.AsyncTokenStream)
    assert stream.finish_reason == "cancelled"


def test_a_sync_stream_closed_early_closes_ours(
    litellm: ModuleType, name: str, closed_streams: list[object]
) -> None:
    with litellm.completion(model=name, messages=QUESTION, max_tokens=400, stream=True) as stream:
        next(iter(stream))
    (ours,) = closed_streams
    assert isinstance(ours, ic.TokenStream)
    assert ours.finish_reason == "cancelled"


def test_the_models_facts_reach_litellm_at_first_use(
    litellm: ModuleType, name: str, model: ic.TextModel
) -> None:
    litellm.completion(model=name, messages=QUESTION, max_tokens=1)
    assert litellm.supports_response_schema(model=name, custom_llm_provider="inference")
    assert litellm.supports_function_calling(model=name, custom_llm_provider="inference")
    info = litellm.get_model_info(model=name, custom_llm_provider="inference")
    assert info["max_input_tokens"] == model.context_len


def test_a_loaded_model_is_used_as_it_is(
    litellm: ModuleType, name: str, model: ic.TextModel, closed_streams: list[object]
) -> None:
    from inference_core.integrations.litellm import register

    register(models={"smollm2-loaded": model})
    response = litellm.completion(model="inference/smollm2-loaded", messages=QUESTION, max_tokens=4)
    assert response.choices[0].message.content
    assert len(closed_streams) == 1  # it ran on `model`, no second server


@pytest.fixture
def provider_map(litellm: ModuleType) -> Iterator[list[dict[str, Any]]]:
    """LiteLLM's provider list, restored after the test."""
    saved = list(litellm.custom_provider_map)
    yield litellm.custom_provider_map
    litellm.custom_provider_map[:] = saved


def test_register_is_idempotent_keeps_other_providers_and_loads_nothing(
    litellm: ModuleType, name: str, provider_map: list[dict[str, Any]], tmp_path: Any
) -> None:
    from inference_core.integrations.litellm import register

    other = {"provider": "someone-else", "custom_handler": litellm.CustomLLM()}
    provider_map[:] = [other]  # someone registered before us
    first = register(load_options={str(tmp_path / "never-loaded.gguf"): {"context_len": 64}})
    second = register()
    assert first is second
    assert provider_map == [other, {"provider": "inference", "custom_handler": first}]


def test_register_refuses_to_shadow_another_inference_provider(
    litellm: ModuleType, provider_map: list[dict[str, Any]]
) -> None:
    from inference_core.integrations.litellm import register

    provider_map[:] = [{"provider": "inference", "custom_handler": litellm.CustomLLM()}]
    with pytest.raises(ic.InvalidValue, match="another handler"):
        register()


def test_dspy_predicts_a_typed_answer(
    name: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "DSPY_CACHEDIR" not in os.environ:  # tox sets it; DSPy reads it when imported
        monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path))
    dspy: Any = importlib.import_module("dspy")  # typed as Any: DSPy ships no type hints
    signature = dspy.Signature(
        "sentence: str -> sentiment: Literal['positive', 'negative'], stars: int",
        "Classify the sentiment of the sentence and rate it from 1 to 5 stars.",
    )
    lm = dspy.LM(name, cache=False, max_tokens=128)
    with dspy.context(lm=lm):
        prediction = dspy.Predict(signature)(sentence="I love this wonderful, sunny day!")
    assert prediction.sentiment in ("positive", "negative")
    assert isinstance(prediction.stars, int)
