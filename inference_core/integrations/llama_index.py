"""LlamaIndex's LLM and embedding model on inference_core's models (extra `llama-index`).

`InferenceLLM` is a function-calling `LLM`: chat, completion, streaming, async, tools
(`chat_with_tools`, `predict_and_call`, `FunctionAgent`), with a tool forced by
`tool_required=True` or a `tool_choice=` naming it. `InferenceEmbedding` is a
`BaseEmbedding` for indexes and retrievers.

Both take `model=` as a path, URL or hf:// name (loaded on first use, with
`load_options`, once per process: see `inference_core.integrations`) or as a model loaded
already, which they use as it is. Constructing one loads nothing; reading
`llm.metadata`, which LlamaIndex does before every call, loads the model, since only the
loaded model knows its context and tool format.

An answer is LlamaIndex's: its text as `TextBlock` and `delta`s, its thinking as a
`ThinkingBlock` and, in a stream, `additional_kwargs["thinking_delta"]` as it comes
(without its tags), its tool calls as
`ToolCallBlock`s, the token counts in `raw["usage"]` (named as LlamaIndex's token counter
reads them), why it ended in `raw["finish_reason"]` and `additional_kwargs`, and
log-probabilities (asked for with `logprobs=N`) in `logprobs`. Our errors reach the
caller untouched.
"""

# ruff: noqa: E402 (the framework is looked for before it is imported, so that a missing
# one names the extra that installs it)

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, final

import attrs

from ._shared import require

require("llama_index.core", "llama-index")

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    LogProb,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from ..content import image
from ..errors import InvalidValue
from ..protocols import AsyncTokenStream, TextModel, TokenStream
from ..types import GenerateConfig, Message, Token
from ._shared import (
    SAMPLING_FIELDS,
    AnswerReader,
    Ending,
    ModelSource,
    answer_reader,
    config_from,
    messages_from_openai,
    model_name,
    openai_logprobs,
    shared_model,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["InferenceEmbedding", "InferenceLLM"]

# The generation options an InferenceLLM holds as fields (GenerateConfig's names); a call
# may pass any GenerateConfig option besides (json_schema, grammar, ...).
_OPTIONS: Final = (*SAMPLING_FIELDS, "stop", "logprobs")
_MODEL_HELP: Final = (
    "A model's path, URL or hf:// name (loaded on first use, once per process for the same "
    "load options), or a model loaded already (a TextModel, used as it is)."
)
_LOAD_HELP: Final = (
    "LoadConfig options (context_len, backend, ...) for a model named by its location."
)

_Method = TypeVar("_Method", bound=Callable[..., Any])
_Shape = TypeVar("_Shape", ChatResponse, CompletionResponse)


def _chat_events(method: _Method) -> _Method:
    """LlamaIndex's callbacks and instrumentation events around a chat method."""
    return cast(_Method, llm_chat_callback()(method))


def _completion_events(method: _Method) -> _Method:
    """LlamaIndex's callbacks and instrumentation events around a completion method."""
    return cast(_Method, llm_completion_callback()(method))


def _image(block: ImageBlock) -> dict[str, Any]:
    """An image block as our image part: read and checked by us (an http URL is refused,
    never fetched)."""
    if block.path is not None:
        return image(block.path)
    if block.url is not None:
        return image(str(block.url))
    return image(block.resolve_image().read())


def _openai_message(message: ChatMessage) -> dict[str, Any]:
    """A LlamaIndex message in OpenAI's shape: a tool's result answers the call named by
    `additional_kwargs["tool_call_id"]`, an assistant's `ToolCallBlock`s are its calls and
    its `ThinkingBlock`s its thinking. A block we cannot send is an `InvalidValue`, never
    dropped."""
    role = message.role.value
    images: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thinking: list[str] = []
    for block in message.blocks:
        if isinstance(block, ImageBlock):
            images.append(_image(block))
        elif isinstance(block, ToolCallBlock):
            calls.append(
                {
                    "id": block.tool_call_id or "",
                    "type": "function",
                    "function": {"name": block.tool_name, "arguments": block.tool_kwargs},
                }
            )
        elif isinstance(block, ThinkingBlock):
            thinking.append(block.content or "")
        elif not isinstance(block, (TextBlock, CachePoint)):
            raise InvalidValue(
                "messages",
                f"a {role} message's {block.block_type} block cannot be sent to the model: "
                "send text, images (in a user message), thinking and tool calls",
            )
    text = message.content or ""
    content: str | list[dict[str, Any]] = (
        [{"type": "text", "text": text}, *images] if images else text
    )
    return {
        "role": role,
        "content": content,
        "tool_calls": calls,
        "tool_call_id": message.additional_kwargs.get("tool_call_id") if role == "tool" else None,
        "reasoning_content": "".join(thinking),
    }


def _arguments(block: ToolCallBlock) -> dict[str, Any]:
    """A call's arguments; a JSON string (as other LLMs' blocks may hold them) parsed."""
    if isinstance(block.tool_kwargs, str):
        return dict(json.loads(block.tool_kwargs))
    return block.tool_kwargs


def _messages(messages: Sequence[ChatMessage]) -> list[Message]:
    return messages_from_openai(_openai_message(message) for message in messages)


def _logprobs(tokens: Sequence[Token]) -> list[list[LogProb]] | None:
    """Per answer token, its most likely candidates (as LlamaIndex's OpenAI LLM gives them);
    None when no token carries figures."""
    found = openai_logprobs(tokens)
    if not found:
        return None
    return [[LogProb(**top) for top in entry["top_logprobs"]] for entry in found]


def _usage(ending: Ending) -> dict[str, int] | None:
    """The token counts, named as LlamaIndex's `TokenCountingHandler` reads them."""
    counts = ending.usage
    if counts is None:
        return None
    return {
        "input_tokens": counts["input"],
        "output_tokens": counts["output"],
        "total_tokens": counts["total"],
        "cached_tokens": counts["cached"],
        "reasoning_tokens": counts["reasoning"],
    }


def _final(ending: Ending, thinking: str) -> ChatResponse:
    """The whole answer: thinking, text and tool calls as blocks, what was held back as
    the last delta (`thinking` the last thinking delta), usage, timings and why it ended."""
    blocks: list[ThinkingBlock | TextBlock | ToolCallBlock] = []
    if ending.reasoning:
        blocks.append(ThinkingBlock(content=ending.reasoning, num_tokens=ending.reasoning_tokens))
    blocks.append(TextBlock(text=ending.text))
    blocks.extend(
        ToolCallBlock(tool_call_id=call.id, tool_name=call.name, tool_kwargs=call.arguments)
        for call in ending.tool_calls
    )
    extra: dict[str, Any] = {"finish_reason": ending.finish_reason}
    if thinking:
        extra["thinking_delta"] = thinking
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks),
        delta=ending.late_text,
        raw={
            "usage": _usage(ending),
            "finish_reason": ending.finish_reason,
            "metrics": None if ending.metrics is None else attrs.asdict(ending.metrics),
        },
        logprobs=_logprobs(ending.tokens),
        additional_kwargs=extra,
    )


def _completion(response: ChatResponse) -> CompletionResponse:
    return CompletionResponse(
        text=response.message.content or "",
        delta=response.delta,
        raw=response.raw,
        logprobs=response.logprobs,
        additional_kwargs=response.additional_kwargs,
    )


def _as_chat(response: ChatResponse) -> ChatResponse:
    return response


@final
class _Reply:
    """One answer read token by token: a partial response per piece of text shown (when
    streaming), then the whole."""

    def __init__(self, reader: AnswerReader, *, streaming: bool) -> None:
        self._reader = reader
        self._streaming = streaming
        self._shown: list[str] = []

    def take(self, token: Token) -> ChatResponse | None:
        """The partial response for what `token` adds to the answer or, as a
        `thinking_delta`, to the thinking; None for nothing (or when not streaming)."""
        shown = self._reader.take(token)
        if not self._streaming or not (shown.text or shown.thinking):
            return None
        self._shown.append(shown.text)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content="".join(self._shown)),
            delta=shown.text,
            additional_kwargs={"thinking_delta": shown.thinking} if shown.thinking else {},
        )

    def end(self, stream: TokenStream | AsyncTokenStream, reasoning: str) -> ChatResponse:
        ending = self._reader.end(stream, reasoning)
        return _final(ending, ending.late_reasoning if self._streaming else ending.reasoning)


@attrs.frozen
class _Request:
    """One call, checked: a chat of our messages or (`str`) a prompt continued as it is."""

    model: TextModel
    prompt: str | list[Message]
    config: GenerateConfig
    timeout: float | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: str | Mapping[str, Any]
    parallel_tool_calls: bool

    def reply(self, *, streaming: bool) -> _Reply:
        reader = answer_reader(self.model, self.tools, self.tool_choice)
        return _Reply(reader, streaming=streaming)

    def open(self) -> TokenStream:
        if isinstance(self.prompt, str):
            return self.model.generate(self.prompt, self.config, timeout=self.timeout)
        return self.model.chat(self.prompt, self.config, timeout=self.timeout, **self._tooling())

    def aopen(self) -> AsyncTokenStream:
        if isinstance(self.prompt, str):
            return self.model.agenerate(self.prompt, self.config, timeout=self.timeout)
        return self.model.achat(self.prompt, self.config, timeout=self.timeout, **self._tooling())

    def _tooling(self) -> dict[str, Any]:
        if not self.tools:
            return {}
        return {
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
        }


def _responses(
    request: _Request, shape: Callable[[ChatResponse], _Shape], *, streaming: bool
) -> Generator[_Shape, None, None]:
    """The responses of one call; the stream is closed however the iteration ends (an
    early `close()` or a dropped generator frees the server's slot at once)."""
    reply = request.reply(streaming=streaming)
    stream = request.open()
    try:
        for token in stream:
            if (partial := reply.take(token)) is not None:
                yield shape(partial)
        yield shape(reply.end(stream, stream.reasoning_text()))
    finally:
        stream.close()


async def _aresponses(
    request: _Request, shape: Callable[[ChatResponse], _Shape], *, streaming: bool
) -> AsyncGenerator[_Shape, None]:
    """`_responses` for asyncio: cancelling the task, or closing the generator, closes the
    stream before it returns."""
    reply = request.reply(streaming=streaming)
    stream = request.aopen()
    try:
        async for token in stream:
            if (partial := reply.take(token)) is not None:
                yield shape(partial)
        yield shape(reply.end(stream, await stream.reasoning_text()))
    finally:
        await stream.aclose()


def _only(responses: Generator[_Shape, None, None]) -> _Shape:
    """The one response of a call that does not stream."""
    with contextlib.closing(responses):
        return next(responses)


async def _aonly(responses: AsyncGenerator[_Shape, None]) -> _Shape:
    """`_only` for asyncio."""
    async with contextlib.aclosing(responses):
        return await anext(responses)


class InferenceLLM(FunctionCallingLLM):
    """A LlamaIndex function-calling LLM on an inference_core model.

    Generation options are fields (None: the model's default) and may be given per call
    too, with any other `GenerateConfig` option (`json_schema=...`); `timeout` (seconds)
    bounds each call and raises `GenerationTimeout`. `complete(prompt)` answers the prompt
    as a user's message; `complete(prompt, formatted=True)` continues it as it is.
    """

    model: Any = Field(description=_MODEL_HELP)
    load_options: dict[str, Any] = Field(default_factory=dict, description=_LOAD_HELP)
    max_tokens: int | None = Field(default=None, description="Most tokens an answer may take.")
    temperature: float | None = Field(default=None, description="0 is greedy.")
    top_p: float | None = Field(default=None, description="0 is off.")
    top_k: int | None = Field(default=None, description="0 is off.")
    min_p: float | None = Field(default=None, description="0 is off.")
    repeat_penalty: float | None = Field(default=None, description="1 is off.")
    seed: int | None = Field(default=None, description="The sampler's seed.")
    stop: list[str] | None = Field(default=None, description="Strings that end the answer.")
    think: bool | None = Field(
        default=None, description="Thinking on or off, where the chat template can."
    )
    reasoning_budget: int | None = Field(
        default=None, description="Most tokens the thinking may take (-1: no limit)."
    )
    logprobs: int | None = Field(
        default=None, description="Candidates per token to report with their log-probabilities."
    )
    timeout: float | None = Field(default=None, description="Seconds a call may take.")

    def __init__(self, model: ModelSource, **data: Any) -> None:
        super().__init__(model=model, **data)
        config_from(self._options())  # a bad option fails here, typed, before any load

    @classmethod
    def class_name(cls) -> str:
        return "InferenceLLM"

    def _model(self) -> TextModel:
        return shared_model(self.model, self.load_options)

    def _options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _OPTIONS}

    @property
    def metadata(self) -> LLMMetadata:
        """What the loaded model really runs with (reading it loads the model)."""
        capabilities = self._model().capabilities
        return LLMMetadata(
            context_window=capabilities.context_len,
            num_output=config_from(self._options()).max_tokens,
            is_chat_model=True,
            is_function_calling_model=capabilities.tools != "none",
            model_name=model_name(self.model),
        )

    def _request(self, prompt: str | Sequence[ChatMessage], call: dict[str, Any]) -> _Request:
        """One call's request: its own options (`call`, which it takes apart) over the
        fields, checked before the model is asked."""
        timeout = call.pop("timeout", self.timeout)
        tools = call.pop("tools", None)
        tool_choice = call.pop("tool_choice", "auto")
        parallel = call.pop("parallel_tool_calls", False)
        config = config_from({**self._options(), **call})
        return _Request(
            model=self._model(),
            prompt=prompt if isinstance(prompt, str) else _messages(prompt),
            config=config,
            timeout=timeout,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel,
        )

    @staticmethod
    def _chat_prompt(prompt: str, formatted: bool) -> str | list[ChatMessage]:
        """A completion's prompt: continued as it is once `formatted`, else a user's."""
        return prompt if formatted else [ChatMessage(role=MessageRole.USER, content=prompt)]

    @_chat_events
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return _only(_responses(self._request(messages, kwargs), _as_chat, streaming=False))

    @_chat_events
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return _responses(self._request(messages, kwargs), _as_chat, streaming=True)

    @_chat_events
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._request(messages, kwargs)
        return await _aonly(_aresponses(request, _as_chat, streaming=False))

    @_chat_events
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return _aresponses(self._request(messages, kwargs), _as_chat, streaming=True)

    @_completion_events
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._request(self._chat_prompt(prompt, formatted), kwargs)
        return _only(_responses(request, _completion, streaming=False))

    @_completion_events
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        request = self._request(self._chat_prompt(prompt, formatted), kwargs)
        return _responses(request, _completion, streaming=True)

    @_completion_events
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        request = self._request(self._chat_prompt(prompt, formatted), kwargs)
        return await _aonly(_aresponses(request, _completion, streaming=False))

    @_completion_events
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        request = self._request(self._chat_prompt(prompt, formatted), kwargs)
        return _aresponses(request, _completion, streaming=True)

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """`chat`'s arguments for a chat with these tools: `tool_choice` (a tool's name, as
        `FunctionAgent.initial_tool_choice` gives it, "auto", "required" or "none") wins
        over `tool_required`."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        return {
            "messages": messages,
            "tools": [tool.metadata.to_openai_tool() for tool in tools],
            "tool_choice": tool_choice or ("required" if tool_required else "auto"),
            "parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The answer's tool calls, each with the id its result must answer."""
        calls = [
            ToolSelection(
                tool_id=block.tool_call_id or "",
                tool_name=block.tool_name,
                tool_kwargs=_arguments(block),
            )
            for block in response.message.blocks
            if isinstance(block, ToolCallBlock)
        ]
        if not calls and error_on_no_tool_call:
            raise ValueError("expected at least one tool call, the answer made none")
        return calls


class InferenceEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model on an inference_core model's `embed` (unit vectors).

    A model named by its location is loaded with `embeddings=True` added to its load
    options, so an `InferenceLLM` that names it with `load_options={"embeddings": True}`
    (and the same other options) shares its server. A loaded model must have been loaded
    with `embeddings=True`; one loaded without raises our `UnsupportedOption` at use.
    """

    model: Any = Field(description=_MODEL_HELP)
    load_options: dict[str, Any] = Field(default_factory=dict, description=_LOAD_HELP)

    def __init__(self, model: ModelSource, **data: Any) -> None:
        data.setdefault("model_name", model_name(model))
        data["model"] = model
        super().__init__(**data)

    @classmethod
    def class_name(cls) -> str:
        return "InferenceEmbedding"

    def _model(self) -> TextModel:
        if isinstance(self.model, TextModel):
            return shared_model(self.model, self.load_options)
        return shared_model(self.model, {**self.load_options, "embeddings": True})

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embeddings([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aget_text_embeddings([query]))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._model().embed(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._model().aembed(texts)
