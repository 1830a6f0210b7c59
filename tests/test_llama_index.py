"""The LlamaIndex adapter on the real llama-server and SmolLM2 (`tox -e frameworks`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import AgentOutput, FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import BaseModel
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool

import inference_core as ic
from inference_core.integrations import _shared
from inference_core.integrations.llama_index import InferenceEmbedding, InferenceLLM
from inference_core.testing.pictures import png

pytestmark = [pytest.mark.frameworks, pytest.mark.server]

# The embedding adds embeddings=True to its own options: both name one server.
LOAD: dict[str, Any] = {"backend": "llama_cpp", "context_len": 2048, "embeddings": True}
EMBEDDING_LOAD = {key: value for key, value in LOAD.items() if key != "embeddings"}
QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]
THINKING = Path(__file__).parent / "templates" / "think.jinja"
# The generic format's JSON around a call or an answer takes 30 to 40 tokens of SmolLM2's,
# its spaces and line breaks varying from run to run: cut short, it is a GenerationError.
TOOL_TOKENS = 200
LONG_ANSWER = [ChatMessage(role="user", content="Count from 1 to 1000, one number a line.")]


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"It is 23 degrees and sunny in {city}."


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


WEATHER = FunctionTool.from_defaults(fn=get_weather)
ADD = FunctionTool.from_defaults(fn=add)


@pytest.fixture(scope="module")
def llm(smollm2_path: str) -> Iterator[InferenceLLM]:
    """Loaded once for the module, by the adapter itself (through the shared cache)."""
    adapter = InferenceLLM(smollm2_path, load_options=LOAD, max_tokens=48)
    assert adapter.metadata.context_window == 2048  # loads it
    yield adapter
    unload(adapter)


@pytest.fixture(scope="module")
def thinker(smollm2_path: str) -> Iterator[InferenceLLM]:
    """SmolLM2 under a template whose answers open with thinking (as tests/test_thinking.py)."""
    options = {"backend": "llama_cpp", "context_len": 1024, "chat_template": str(THINKING)}
    adapter = InferenceLLM(smollm2_path, load_options=options, reasoning_budget=8, max_tokens=20)
    yield adapter
    unload(adapter)


def unload(adapter: InferenceLLM) -> None:
    """Stop the adapter's server and take it out of the cache, where no closed model may
    stay for the modules after this one."""
    loaded = _shared_model(adapter)
    key = next(key for key, model in _shared._models.items() if model is loaded)
    _shared._models.pop(key).close()


def _shared_model(adapter: InferenceLLM) -> ic.TextModel:
    return _shared.shared_model(adapter.model, adapter.load_options)


@pytest.fixture(scope="module")
def model(llm: InferenceLLM) -> ic.TextModel:
    """The model the module's adapter loaded."""
    return _shared_model(llm)


@pytest.fixture(scope="module")
def embedding(smollm2_path: str, llm: InferenceLLM) -> InferenceEmbedding:
    return InferenceEmbedding(smollm2_path, load_options=EMBEDDING_LOAD)


def raw(response: ChatResponse | CompletionResponse) -> dict[str, Any]:
    assert isinstance(response.raw, dict)
    return response.raw


def recorded_streams(
    model: ic.TextModel, method: str, monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """The streams the model's `method` (chat, achat) opens from now on, kept alive here:
    only the adapter's own closing can end them early, not their garbage collection."""
    streams: list[Any] = []
    opening = getattr(model, method)

    def recording(*args: Any, **kwargs: Any) -> Any:
        streams.append(opening(*args, **kwargs))
        return streams[-1]

    monkeypatch.setattr(model, method, recording)
    return streams


# --- construction, metadata, errors ------------------------------------------------------


def test_constructing_loads_nothing_and_a_missing_model_fails_typed_at_first_use(
    smollm2_path: str,
) -> None:
    loaded = dict(_shared._models)
    missing_llm = InferenceLLM("/nonexistent/model.gguf")
    missing_embedding = InferenceEmbedding("/nonexistent/model.gguf")
    InferenceLLM(smollm2_path, load_options={**LOAD, "context_len": 512}, temperature=0.5)
    InferenceEmbedding(smollm2_path, load_options={"context_len": 512})
    assert _shared._models == loaded
    with pytest.raises(ic.InvalidModelFile):
        missing_llm.chat(QUESTION)
    with pytest.raises(ic.InvalidModelFile):
        missing_embedding.get_text_embedding("a text")


def test_metadata_is_the_loaded_models_own(llm: InferenceLLM, model: ic.TextModel) -> None:
    metadata = llm.metadata
    assert metadata.context_window == model.context_len == 2048
    assert metadata.is_function_calling_model  # SmolLM2 calls tools in the generic format
    assert metadata.is_chat_model
    assert metadata.num_output == 48
    assert metadata.model_name == llm.model


def test_a_loaded_model_is_used_as_it_is(shared_model: ic.TextModel) -> None:
    loaded = dict(_shared._models)
    adapter = InferenceLLM(shared_model, max_tokens=4)
    assert adapter.model is shared_model
    response = adapter.chat(QUESTION)
    # the generation ran on that very model, in this thread
    assert raw(response)["metrics"] == attrs.asdict(shared_model.metrics())
    assert adapter.metadata.model_name == shared_model.info.path
    assert _shared._models == loaded
    with pytest.raises(ic.InvalidValue, match="no load options"):
        InferenceLLM(shared_model, load_options={"context_len": 512}).chat(QUESTION)


def test_a_loaded_model_without_embeddings_raises_our_error(shared_model: ic.TextModel) -> None:
    with pytest.raises(ic.UnsupportedOption, match="embeddings=True"):
        InferenceEmbedding(shared_model).get_text_embedding("a text")


def test_a_bad_option_is_our_invalid_value_before_anything_loads(
    llm: InferenceLLM, smollm2_path: str
) -> None:
    loaded = dict(_shared._models)
    with pytest.raises(ic.InvalidValue, match="temperature"):
        InferenceLLM(smollm2_path, load_options={"context_len": 512}, temperature=-1.0)
    assert _shared._models == loaded
    with pytest.raises(ic.InvalidValue, match="top_p"):
        llm.chat(QUESTION, top_p=2.0)
    with pytest.raises(TypeError, match="unknown option 'temprature'"):
        llm.chat(QUESTION, temprature=0.5)


async def test_a_prompt_too_long_is_our_context_overflow(llm: InferenceLLM) -> None:
    too_long = [ChatMessage(role="user", content="word " * 3000)]
    with pytest.raises(ic.ContextOverflow):
        llm.chat(too_long)
    with pytest.raises(ic.ContextOverflow):
        await llm.achat(too_long)
    with pytest.raises(ic.ContextOverflow):
        async for _ in await llm.astream_chat(too_long):
            pass


def test_a_timeout_is_our_generation_timeout(llm: InferenceLLM) -> None:
    with pytest.raises(ic.GenerationTimeout):
        llm.chat(LONG_ANSWER, max_tokens=1000, timeout=0.5)


def test_an_image_reaches_the_model_never_dropped(llm: InferenceLLM) -> None:
    picture = png(8, 8, lambda x, y: (255, 0, 0))
    message = ChatMessage(
        role="user", blocks=[TextBlock(text="What is this?"), ImageBlock(image=picture)]
    )
    with pytest.raises(ic.UnsupportedOption, match="sees no images"):
        llm.chat([message])


# --- answers -------------------------------------------------------------------------------


def test_an_answer_carries_usage_finish_reason_and_logprobs(
    llm: InferenceLLM, model: ic.TextModel
) -> None:
    response = llm.chat(QUESTION, logprobs=2, max_tokens=8)
    usage = raw(response)["usage"]
    assert usage["input_tokens"] == model.count_tokens(
        [{"role": "user", "content": QUESTION[0].content}]
    )
    assert usage["output_tokens"] == 8
    assert raw(response)["finish_reason"] == response.additional_kwargs["finish_reason"] == "length"
    assert response.logprobs is not None and len(response.logprobs) == 8
    assert all(len(candidates) == 2 for candidates in response.logprobs)
    assert all(c.logprob <= 0 for candidates in response.logprobs for c in candidates)


def test_llama_indexs_token_counter_reads_our_usage(llm: InferenceLLM) -> None:
    counter = TokenCountingHandler()
    counting = llm.model_copy(update={"callback_manager": CallbackManager([counter])})
    response = counting.chat(QUESTION, max_tokens=8)
    assert counter.prompt_llm_token_count == raw(response)["usage"]["input_tokens"]
    assert counter.completion_llm_token_count == 8


def test_complete_answers_a_prompt_and_continues_a_formatted_one(
    llm: InferenceLLM, model: ic.TextModel
) -> None:
    """The prompt the model read, token for token: a user's message, or the text as it is."""
    prompt = "The capital of France is"
    answered = llm.complete(prompt, max_tokens=12)
    as_chat = model.count_tokens([{"role": "user", "content": prompt}])
    assert raw(answered)["usage"]["input_tokens"] == as_chat
    continued = llm.complete(prompt, formatted=True, max_tokens=12)
    assert raw(continued)["usage"]["input_tokens"] == model.count_tokens(prompt) < as_chat
    assert continued.text and raw(continued)["finish_reason"] == "length"


def _streamed(chunks: list[Any]) -> str:
    assert chunks, "the stream gave nothing"
    return "".join(chunk.delta or "" for chunk in chunks)


def test_a_stream_s_deltas_add_up_to_its_answer(llm: InferenceLLM) -> None:
    chunks = list(llm.stream_chat(QUESTION))
    assert len(chunks) > 2
    assert _streamed(chunks) == chunks[-1].message.content
    completions = list(llm.stream_complete("The capital of France is", formatted=True))
    assert _streamed(completions) == completions[-1].text


async def test_an_async_stream_s_deltas_add_up_to_its_answer(llm: InferenceLLM) -> None:
    chunks = [chunk async for chunk in await llm.astream_chat(QUESTION)]
    assert len(chunks) > 2
    assert _streamed(chunks) == chunks[-1].message.content
    completions = [c async for c in await llm.astream_complete("Paris is", formatted=True)]
    assert _streamed(completions) == completions[-1].text
    assert (await llm.acomplete("Paris is", formatted=True)).text


async def test_with_tools_bound_an_answer_streams_as_text_not_json(llm: InferenceLLM) -> None:
    """SmolLM2 answers in the generic format's JSON: held while it streams, unwrapped."""
    chunks = [
        c
        async for c in await llm.astream_chat_with_tools(
            [WEATHER], user_msg="Say hello to me.", max_tokens=TOOL_TOKENS
        )
    ]
    answer = chunks[-1].message.content
    assert answer and not answer.lstrip().startswith("{")
    assert _streamed(chunks) == answer
    assert llm.get_tool_calls_from_response(chunks[-1], error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="tool call"):
        llm.get_tool_calls_from_response(chunks[-1])


async def test_thinking_is_a_thinking_block_and_streams_as_thinking_deltas(
    thinker: InferenceLLM,
) -> None:
    chunks = [chunk async for chunk in await thinker.astream_chat(QUESTION)]
    final = chunks[-1]
    (thinking,) = [b for b in final.message.blocks if isinstance(b, ThinkingBlock)]
    assert thinking.content and "think>" not in thinking.content
    assert thinking.num_tokens is not None and 1 <= thinking.num_tokens <= 8
    assert raw(final)["usage"]["reasoning_tokens"] == thinking.num_tokens
    deltas = [chunk.additional_kwargs.get("thinking_delta", "") for chunk in chunks]
    assert len([delta for delta in deltas if delta]) > 1  # as it comes, before the answer
    assert "".join(deltas) == thinking.content
    last_thought = max(index for index, delta in enumerate(deltas) if delta)
    assert all(index > last_thought for index, chunk in enumerate(chunks) if chunk.delta)
    answer = final.message.content
    assert answer and _streamed(chunks) == answer and thinking.content not in answer


def test_thinking_goes_back_with_the_assistants_message(thinker: InferenceLLM) -> None:
    """The template writes earlier thinking back: the prompt holds it, token for token."""
    said = ChatMessage(
        role="assistant", blocks=[ThinkingBlock(content="They ask me."), TextBlock(text="Paris.")]
    )
    response = thinker.chat([QUESTION[0], said, ChatMessage(role="user", content="Thanks!")])
    user = {"role": "user", "content": QUESTION[0].content}
    ours: list[dict[str, Any]] = [
        user,
        {"role": "assistant", "content": "Paris.", "reasoning": "They ask me."},
        {"role": "user", "content": "Thanks!"},
    ]
    model = _shared_model(thinker)
    assert raw(response)["usage"]["input_tokens"] == model.count_tokens(ours)
    ours[1].pop("reasoning")
    assert model.count_tokens(ours) < raw(response)["usage"]["input_tokens"]


# --- tools ---------------------------------------------------------------------------------


def test_a_tool_round_trip_with_tool_required(llm: InferenceLLM, model: ic.TextModel) -> None:
    user = ChatMessage(role="user", content="What is the weather in Paris?")
    response = llm.chat_with_tools(
        [WEATHER, ADD], chat_history=[user], tool_required=True, max_tokens=TOOL_TOKENS
    )
    (call,) = llm.get_tool_calls_from_response(response)
    (block,) = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
    assert (call.tool_name, call.tool_kwargs) == ("get_weather", {"city": "Paris"})
    assert call.tool_id == block.tool_call_id and call.tool_id.startswith("call_")
    assert raw(response)["finish_reason"] == "tool_calls"

    result = WEATHER(**call.tool_kwargs)
    answer = ChatMessage(
        role="tool", content=result.content, additional_kwargs={"tool_call_id": call.tool_id}
    )
    final = llm.chat([user, response.message, answer])
    assert final.message.content and raw(final)["finish_reason"] == "stop"
    # the call and its result reached the model as ours: the prompt is theirs, token for token
    ours: list[dict[str, Any]] = [
        {"role": "user", "content": user.content},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                ic.ToolCall(id=call.tool_id, name="get_weather", arguments={"city": "Paris"})
            ],
        },
        {"role": "tool", "content": result.content, "tool_call_id": call.tool_id},
    ]
    assert raw(final)["usage"]["input_tokens"] == model.count_tokens(ours)
    assert model.count_tokens(ours) > model.count_tokens(ours[:1] + ours[2:])


def test_predict_and_call_runs_the_tool_a_tool_choice_names(llm: InferenceLLM) -> None:
    """The question asks for a sum; the choice forces the weather."""
    question = "What is 2 plus 3?"
    output = llm.predict_and_call(
        [ADD, WEATHER], user_msg=question, tool_choice="get_weather", max_tokens=TOOL_TOKENS
    )
    (source,) = output.sources
    assert source.tool_name == "get_weather"
    assert output.response == source.content and "sunny" in output.response


def test_tool_required_makes_a_greeting_call_a_tool(llm: InferenceLLM) -> None:
    """Unforced, SmolLM2 answers a greeting in words (see the streaming test above)."""
    response = llm.chat_with_tools(
        [WEATHER, ADD], user_msg="Say hello to me.", tool_required=True, max_tokens=TOOL_TOKENS
    )
    assert llm.get_tool_calls_from_response(response)
    assert response.message.content == ""


async def test_parallel_calls_only_when_allowed(llm: InferenceLLM) -> None:
    """Two cities: allowed, one call for each; not allowed, the answer's schema holds one."""
    calls = {}
    for allowed in (True, False):
        response = await llm.achat_with_tools(
            [ADD, WEATHER],
            user_msg="What is the weather in Paris and in London?",
            tool_choice="get_weather",
            allow_parallel_tool_calls=allowed,
            max_tokens=TOOL_TOKENS,
        )
        calls[allowed] = llm.get_tool_calls_from_response(response)
    assert [call.tool_kwargs for call in calls[True]] == [{"city": "Paris"}, {"city": "London"}]
    assert len(calls[False]) == 1
    every = calls[True] + calls[False]
    assert all(call.tool_name == "get_weather" for call in every)
    assert len({call.tool_id for call in every}) == len(every)


class City(BaseModel):
    name: str
    country: str


def test_structured_predict_fills_a_pydantic_class_through_a_tool_call(llm: InferenceLLM) -> None:
    """LlamaIndex's function-calling program: the class is a tool, its call the object."""
    prompt = PromptTemplate("Name the capital of {country}.")
    city = llm.structured_predict(City, prompt, country="France", max_tokens=TOOL_TOKENS)
    assert isinstance(city, City) and city.name and city.country


async def test_a_function_agent_runs_the_tool_it_is_told_to_first(llm: InferenceLLM) -> None:
    """LlamaIndex's own agent, streaming: `initial_tool_choice` arrives as our forced
    `tool_choice`, and the result (returned directly: SmolLM2, unforced, calls again
    rather than answer) is the run's answer."""
    weather = FunctionTool.from_defaults(fn=get_weather, return_direct=True)
    agent = FunctionAgent(
        tools=[weather],
        llm=llm.model_copy(update={"max_tokens": TOOL_TOKENS}),
        initial_tool_choice="get_weather",
        allow_parallel_tool_calls=False,
    )
    handler = agent.run("Tell me a joke.", max_iterations=2)
    results = [
        event async for event in handler.stream_events() if isinstance(event, ToolCallResult)
    ]
    output: object = await handler
    assert isinstance(output, AgentOutput)
    (result,) = results
    assert result.tool_name == "get_weather" and result.tool_id.startswith("call_")
    assert str(output.response.content).startswith("It is 23 degrees and sunny in")


# --- closing and cancelling ----------------------------------------------------------------


def test_a_sync_stream_closed_early_closes_ours(
    llm: InferenceLLM, model: ic.TextModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = recorded_streams(model, "chat", monkeypatch)
    chunks = llm.stream_chat(LONG_ANSWER, max_tokens=1500)
    next(chunks)
    chunks.close()
    (stream,) = streams
    assert stream.finish_reason == "cancelled"


async def test_cancelling_the_task_that_streams_closes_ours(
    llm: InferenceLLM, model: ic.TextModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task is cancelled while it is busy between two chunks (not inside ours): the
    stream is closed by the adapter, not left generating until its max_tokens."""
    streams = recorded_streams(model, "achat", monkeypatch)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in await llm.astream_chat(LONG_ANSWER, max_tokens=1500):
            started.set()
            await asyncio.Event().wait()  # e.g. sending the chunk on

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (stream,) = streams
    for _ in range(100):
        if stream.finish_reason is not None:
            break
        await asyncio.sleep(0.05)
    assert stream.finish_reason == "cancelled"
    assert isinstance(stream.err(), ic.Cancelled)


# --- embeddings ----------------------------------------------------------------------------

DOCUMENTS = [
    "The cat sat on the mat and purred at the kitten.",
    "Stock markets fell sharply on Monday as investors sold their shares.",
    "Python is a programming language for writing software.",
]
QUERIES = [
    ("A kitten sleeps on the rug.", 0),
    ("Share prices dropped on the stock exchange.", 1),
    ("Which programming language should I write my software in?", 2),
]


def test_the_embedding_shares_the_llms_server(
    llm: InferenceLLM, embedding: InferenceEmbedding, model: ic.TextModel
) -> None:
    loaded = dict(_shared._models)
    vector = embedding.get_text_embedding(DOCUMENTS[0])
    assert vector == pytest.approx(model.embed(DOCUMENTS[:1])[0], abs=1e-6)
    assert len(vector) == model.info.embedding_length
    assert _shared._models == loaded


def test_a_vector_index_retrieves_the_document_a_question_is_about(
    embedding: InferenceEmbedding,
) -> None:
    index = VectorStoreIndex.from_documents(
        [Document(text=text) for text in DOCUMENTS], embed_model=embedding
    )
    retriever = index.as_retriever(similarity_top_k=1)
    for query, expected in QUERIES:
        (hit,) = retriever.retrieve(query)
        assert hit.node.get_content() == DOCUMENTS[expected], query


async def test_async_embeddings_are_the_same(embedding: InferenceEmbedding) -> None:
    batch = await embedding.aget_text_embedding_batch(DOCUMENTS)
    for awaited, vector in zip(batch, embedding.get_text_embedding_batch(DOCUMENTS), strict=True):
        assert awaited == pytest.approx(vector, abs=1e-6)
    query = await embedding.aget_query_embedding(QUERIES[0][0])
    assert query == pytest.approx(embedding.get_query_embedding(QUERIES[0][0]), abs=1e-6)
