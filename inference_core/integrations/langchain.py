"""LangChain chat and embedding models on inference_core (the `langchain` extra).

    from inference_core.integrations.langchain import ChatInference
    chat = ChatInference(model="model.gguf", load_options={"context_len": 4096}, max_tokens=200)
    print(chat.invoke("Name three colours.").content)

`model` is a path, URL or `hf://` name, loaded at first use and shared by every adapter
in the process that names it with the same `load_options`, or a loaded `TextModel`
(used as it is). Generation options are fields named as `GenerateConfig`'s, or per call
(`chat.invoke(..., temperature=0.7)`). What LangChain gets beyond the text:
`usage_metadata` (cached prompt tokens as `cache_read`, thinking as `reasoning`),
`response_metadata` ("finish_reason", "timings", "logprobs" when asked),
the thinking as `additional_kwargs["reasoning_content"]` (streamed as it comes), tool
calls (`bind_tools` with "auto", "any"/"required", a tool's name) and structured output
held to a JSON schema by the server's grammar. Cancelling the task that awaits or
iterates a call stops its generation on the server.
"""

# ruff: noqa: E402 (the framework is looked for before it is imported, so that a missing
# one names the extra that installs it)

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from ._shared import require

require("langchain_core", "langchain", " (Python 3.11 or newer)")

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field

from ..protocols import AsyncTokenStream, TextModel, TokenStream
from ..types import Token
from ._shared import (
    SAMPLING_FIELDS,
    Ending,
    ModelSource,
    answer_reader,
    checked_source,
    config_from,
    messages_from_openai,
    model_name,
    openai_logprobs,
    shared_model,
)

__all__ = ["ChatInference", "InferenceEmbeddings"]

# The fields that are GenerateConfig's, under the same names.
_GENERATION_FIELDS = (*SAMPLING_FIELDS, "grammar")
_TOOL_KEYWORDS = ("tools", "tool_choice", "parallel_tool_calls")


class _Call:
    """One chat call's model, messages, options and tools, resolved from LangChain's."""

    def __init__(
        self, chat: ChatInference, model: TextModel, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> None:
        kwargs = dict(kwargs)
        self.model = model
        self.name = kwargs.pop("model", None) or model_name(chat.model)
        self.tools = {key: kwargs.pop(key) for key in _TOOL_KEYWORDS if key in kwargs}
        self.config = config_from({**_options(chat, stop), **kwargs})
        self.reader = answer_reader(model, self.tools.get("tools"), self.tools.get("tool_choice"))

    def stream(self, messages: list[BaseMessage], timeout: float | None) -> TokenStream:
        return self.model.chat(self._messages(messages), self.config, timeout=timeout, **self.tools)

    def astream(self, messages: list[BaseMessage], timeout: float | None) -> AsyncTokenStream:
        return self.model.achat(
            self._messages(messages), self.config, timeout=timeout, **self.tools
        )

    @staticmethod
    def _messages(messages: list[BaseMessage]) -> list[Any]:
        return messages_from_openai(convert_to_openai_messages(messages))

    def chunk(self, token: Token) -> ChatGenerationChunk | None:
        """What a token adds to the answer (with its log-probability when asked) or to the
        thinking; None for nothing."""
        shown = self.reader.take(token)
        if shown.thinking:
            thinking = {"reasoning_content": shown.thinking}
            return ChatGenerationChunk(
                message=AIMessageChunk(content="", additional_kwargs=thinking)
            )
        if not shown.text:
            return None
        metadata = {}
        if self.config.logprobs:
            metadata["logprobs"] = {"content": openai_logprobs([token])}
        message = AIMessageChunk(content=shown.text, response_metadata=metadata)
        return ChatGenerationChunk(message=message)

    def last_chunk(self, ending: Ending) -> ChatGenerationChunk:
        """The end: text held back, the thinking, tool calls, usage and why it ended."""
        metadata: dict[str, Any] = {
            "model_name": self.name,
            "model_provider": "inference",
            "finish_reason": ending.finish_reason,
        }
        if ending.metrics is not None:
            metadata["timings"] = {
                "prefill_seconds": ending.metrics.prefill_seconds,
                "decode_seconds": ending.metrics.decode_seconds,
                "total_seconds": ending.metrics.total_seconds,
                "prefill_tokens_per_second": ending.metrics.prefill_tokens_per_second,
                "decode_tokens_per_second": ending.metrics.decode_tokens_per_second,
            }
        if self.config.logprobs and ending.late_text:
            metadata["logprobs"] = {"content": openai_logprobs(ending.tokens)}
        counts = ending.usage
        message = AIMessageChunk(
            content=ending.late_text,
            additional_kwargs={"reasoning_content": ending.late_reasoning}
            if ending.late_reasoning
            else {},
            tool_call_chunks=[
                tool_call_chunk(
                    name=call.name, args=json.dumps(call.arguments), id=call.id, index=i
                )
                for i, call in enumerate(ending.tool_calls)
            ],
            response_metadata=metadata,
            usage_metadata=None
            if counts is None
            else {
                "input_tokens": counts["input"],
                "output_tokens": counts["output"],
                "total_tokens": counts["total"],
                "input_token_details": {"cache_read": counts["cached"]},
                "output_token_details": {"reasoning": counts["reasoning"]},
            },
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)


def _options(chat: ChatInference, stop: list[str] | None = None) -> dict[str, Any]:
    """The chat model's generation options as `GenerateConfig` fields, with a call's stops."""
    options = {name: getattr(chat, name) for name in _GENERATION_FIELDS}
    options["stop"] = [*(chat.stop or ()), *(stop or ())]
    options["logprobs"] = _logprobs(chat.logprobs, chat.top_logprobs)
    return options


def _logprobs(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """OpenAI's pair as our count: how many candidates per token, at least one."""
    if not logprobs and not top_logprobs:
        return None
    return max(top_logprobs or 0, 1)


def _tool_choice(choice: object) -> object:
    """LangChain's tool choices as ours: "any" and True force some tool, False none."""
    if choice is True or choice == "any":
        return "required"
    if choice is False:
        return "none"
    return choice


class ChatInference(BaseChatModel):
    """A LangChain chat model on an inference_core model; see the module's docstring."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any = Field(description="a path, URL or hf:// name, or a loaded TextModel")
    load_options: dict[str, Any] = Field(default_factory=dict)
    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    grammar: str | None = None
    stop: list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    think: bool | None = None
    reasoning_budget: int | None = None
    timeout: float | None = None

    def model_post_init(self, context: Any, /) -> None:
        """Refuse a bad model or option now, typed, rather than at the first call."""
        super().model_post_init(context)
        checked_source(self.model, self.load_options)
        config_from(_options(self))

    @property
    def _llm_type(self) -> str:
        return "inference"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": model_name(self.model), "load_options": self.load_options}

    def _resolve_model_profile(self) -> ModelProfile | None:
        """Known without loading only for a model loaded already; else after the first call."""
        return _profile(self.model) if isinstance(self.model, TextModel) else None

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="inference",
            ls_model_name=kwargs.get("model") or model_name(self.model),
            ls_model_type="chat",
        )
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = [*(self.stop or ()), *(stop or ())]
        return params

    def loaded_model(self, model: ModelSource | None = None) -> TextModel:
        """The model that answers (`model` overrides the field for one call), loading it
        at first use."""
        if model is None:
            loaded = shared_model(self.model, self.load_options)
        else:
            loaded = shared_model(
                model, None if isinstance(model, TextModel) else self.load_options
            )
        if self.profile is None:
            self.profile = _profile(loaded)
        return loaded

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = _Call(self, self.loaded_model(kwargs.get("model")), stop, kwargs)
        stream = call.stream(messages, self.timeout)
        try:
            for token in stream:
                if chunk := call.chunk(token):
                    if run_manager is not None:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            ending = call.reader.end(stream, stream.reasoning_text())
        finally:
            stream.close()
        yield call.last_chunk(ending)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        model = await asyncio.to_thread(self.loaded_model, kwargs.get("model"))
        call = _Call(self, model, stop, kwargs)
        stream = call.astream(messages, self.timeout)
        try:
            async for token in stream:
                if chunk := call.chunk(token):
                    if run_manager is not None:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            ending = call.reader.end(stream, await stream.reasoning_text())
        finally:
            await stream.aclose()
        yield call.last_chunk(ending)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools; `tool_choice` "auto" (the default), "any" or "required", "none",
        or a tool's name (or OpenAI's dict naming one) to force that tool."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = _tool_choice(tool_choice)
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers held to `schema` (a pydantic class, a TypedDict or a JSON schema).

        "json_schema" (the default) holds the answer to the schema by the server's
        grammar; "function_calling" forces a tool with the schema as its parameters;
        "json_mode" holds it to any JSON object (say in the prompt which).
        """
        if kwargs:
            raise ValueError(f"unexpected arguments: {sorted(kwargs)}")
        json_schema = convert_to_json_schema(schema)
        traced = {"kwargs": {"method": method, "strict": strict}, "schema": json_schema}
        model_class = schema if isinstance(schema, type) and is_basemodel_subclass(schema) else None
        bound: Runnable[LanguageModelInput, AIMessage]
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            bound = self.bind_tools([tool], tool_choice=name, ls_structured_output_format=traced)
            parser = (
                JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
                if model_class is None
                else PydanticToolsParser(tools=[model_class], first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            held = json_schema if method == "json_schema" else {"type": "object"}
            bound = self.bind(json_schema=held, ls_structured_output_format=traced)
            parser = (
                JsonOutputParser()
                if model_class is None
                else PydanticOutputParser(pydantic_object=model_class)
            )
        else:
            raise ValueError(
                f"method must be 'json_schema', 'function_calling' or 'json_mode', got {method!r}"
            )
        if not include_raw:
            return bound | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=bound) | parsed.with_fallbacks(
            [failed], exception_key="parsing_error"
        )


def _profile(model: TextModel) -> ModelProfile:
    """What LangChain's model profile says, from what the model can do."""
    can = model.capabilities
    return ModelProfile(
        max_input_tokens=can.context_len,
        text_inputs=True,
        image_inputs=can.vision,
        audio_inputs=can.audio,
        reasoning_output=can.reasoning,
        text_outputs=True,
        tool_calling=can.tools != "none",
        tool_choice=can.tools != "none",
        structured_output=True,
    )


class InferenceEmbeddings(BaseModel, Embeddings):
    """LangChain embeddings from an inference_core model: `model` as `ChatInference`'s;
    a model named by its location is loaded with `embeddings=True`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any = Field(description="a path, URL or hf:// name, or a loaded TextModel")
    load_options: dict[str, Any] = Field(default_factory=dict)
    normalize: bool = True

    def model_post_init(self, context: Any, /) -> None:
        checked_source(self.model, self.load_options)

    def loaded_model(self) -> TextModel:
        """The model that embeds, loading it (with `embeddings=True`) at first use."""
        if isinstance(self.model, TextModel):
            return self.model
        return shared_model(self.model, {**self.load_options, "embeddings": True})

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.loaded_model().embed(texts, normalize=self.normalize) if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        model = await asyncio.to_thread(self.loaded_model)
        return await model.aembed(texts, normalize=self.normalize)

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]
