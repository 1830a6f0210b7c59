"""A LiteLLM provider: `litellm.completion(model="inference/<path, URL or hf:// name>")`.

LiteLLM has no plugin hook (no entry point), so `register()` is the one call that adds
the provider, and everything built on LiteLLM (DSPy's `dspy.LM`, CrewAI) then runs through
us: completion and streaming, sync and async, tools, `response_format` and embeddings.
The model name is split at its first "/": `inference//abs/model.gguf` for an absolute path.

- A model loads at its first call (never at `register()`), once per location and load
  options for the process; its facts (context length, tools, JSON schemas) are then
  registered with `litellm.register_model`, so that `litellm.supports_response_schema`
  is true and DSPy sends its JSON schema.
- Options: OpenAI's (`temperature`, `max_tokens`, `stop`, `seed`, `logprobs` and
  `top_logprobs`, `tools`, `tool_choice`, `parallel_tool_calls`, `response_format`) and
  ours by their `GenerateConfig` names (`top_k`, `min_p`, `repeat_penalty`, `grammar`,
  `think`, `reasoning_budget`, ...), also inside `extra_body`; `timeout` is the
  generation's. An option we cannot honour (`frequency_penalty`, `n` > 1, ...) is an
  `UnsupportedOption`, never ignored; LiteLLM's own bookkeeping (`stream`,
  `stream_options`, `max_retries`) is left to it.
- Errors stay ours and become LiteLLM's too: each is raised as a class deriving from
  both (`GenerationTimeout` and `litellm.Timeout`, `ContextOverflow` and
  `ContextWindowExceededError`, `InvalidValue`/`UnsupportedOption` and
  `BadRequestError`, a missing model file and `NotFoundError`, any other and
  `APIConnectionError`). Mid-stream, LiteLLM wraps a server failure (not a timeout or a
  bad request) in its `MidStreamFallbackError`, whose `original_exception` is ours.
"""

# ruff: noqa: E402 (the framework is looked for before it is imported, so that a missing
# one names the extra that installs it)

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, final

import attrs

from ._shared import require

require("litellm", "litellm")

import httpx
import litellm
from litellm.exceptions import (
    APIConnectionError,
    BadRequestError,
    ContextWindowExceededError,
    NotFoundError,
    Timeout,
)
from litellm.llms.custom_llm import CustomLLM
from litellm.types.utils import (
    ChatCompletionDeltaToolCall,
    ChoiceLogprobs,
    Choices,
    Delta,
    EmbeddingResponse,
    Message,
    ModelResponse,
    ModelResponseStream,
    StreamingChoices,
    Usage,
)

from ..errors import (
    ContextOverflow,
    GenerationTimeout,
    HubFileNotFound,
    HubRepoNotFound,
    InferenceError,
    InvalidModelFile,
    InvalidValue,
    UnsupportedOption,
)
from ..protocols import AsyncTokenStream, TextModel, TokenStream
from ..types import GenerateConfig, Token
from ._shared import (
    AnswerReader,
    Ending,
    Shown,
    answer_reader,
    config_from,
    messages_from_openai,
    openai_logprobs,
    openai_tool_calls,
    schema_of_response_format,
    shared_model,
)

__all__ = ["PROVIDER", "InferenceProvider", "register"]

PROVIDER: Final = "inference"
"""The provider's name: the prefix of its model names."""

_log = logging.getLogger(__name__)

_BOOKKEEPING: Final = frozenset({"stream", "stream_options", "max_retries"})
"""Options LiteLLM sends for itself: streaming is chosen by which method it calls, the
usage always comes on the last chunk, and retries are its own."""

_OURS: Final = frozenset(attrs.fields_dict(GenerateConfig)) - {"logprobs", "json_schema"}
"""`GenerateConfig` fields taken by their own names (logprobs is OpenAI's bool here)."""

_CALL: Final = frozenset(
    {"tools", "tool_choice", "parallel_tool_calls", "response_format", "json_schema"}
)


class _Shim(Exception):
    """Stops the OpenAI exceptions' `super().__init__(message)` before our classes'
    `__init__`, whose arguments differ: the dual class's attributes come from ours."""

    def __init__(self, *args: object) -> None:
        Exception.__init__(self, *args)


_Kinds = type[BaseException] | tuple[type[BaseException], ...]
_LITELLM_ERRORS: Final[tuple[tuple[_Kinds, type[Exception]], ...]] = (
    (GenerationTimeout, Timeout),
    (ContextOverflow, ContextWindowExceededError),
    ((InvalidModelFile, HubRepoNotFound, HubFileNotFound), NotFoundError),
    ((InvalidValue, UnsupportedOption, ValueError), BadRequestError),
    (InferenceError, APIConnectionError),
)
_dual_classes: dict[type[BaseException], type[Any]] = {}


def _dual_class(ours: type[BaseException]) -> type[Any] | None:
    """Our error's class, made a LiteLLM exception too (one class per class of ours)."""
    if ours not in _dual_classes:
        base = next((theirs for kinds, theirs in _LITELLM_ERRORS if issubclass(ours, kinds)), None)
        if base is None:
            return None
        _dual_classes[ours] = type(ours.__name__, (base, _Shim, ours), {"__module__": __name__})
    return _dual_classes[ours]


def _as_litellm(error: BaseException, model: str) -> BaseException:
    """`error` as its dual class, carrying its attributes; others as they are."""
    dual = _dual_class(type(error))
    if dual is None:
        return error
    raised: BaseException = dual(message=str(error), model=model, llm_provider=PROVIDER)
    for name, value in vars(error).items():
        vars(raised).setdefault(name, value)
    return raised


@contextmanager
def _typed_errors(model: str) -> Iterator[None]:
    """Our errors raised as LiteLLM's too: LiteLLM passes its own through untouched, but
    turns any other into an `APIConnectionError` that has lost ours."""
    try:
        yield
    except (InferenceError, InvalidValue) as error:
        raise _as_litellm(error, model) from error


def _seconds(timeout: float | httpx.Timeout | None) -> float | None:
    """The generation's deadline from LiteLLM's `timeout` (600 s when the caller set none)."""
    if isinstance(timeout, httpx.Timeout):
        return timeout.read
    return None if timeout is None else float(timeout)


def _refuse(name: str, why: str) -> UnsupportedOption:
    return UnsupportedOption(name, f"the {PROVIDER} provider cannot honour {name}: {why}")


@attrs.frozen
class _Options:
    """A call's options, sorted: the config's, the chat's, the load's."""

    config: GenerateConfig
    chat: dict[str, Any]
    load: Mapping[str, Any] | None
    top_logprobs: int | None


def _options(params: Mapping[str, Any]) -> _Options:
    """LiteLLM's `optional_params` as ours; what we cannot honour raises."""
    given = {**(params.get("extra_body") or {}), **params}
    given.pop("extra_body", None)
    config: dict[str, Any] = {}
    chat: dict[str, Any] = {}
    for name, value in given.items():
        if name in _BOOKKEEPING or name == "load_options" or name in ("logprobs", "top_logprobs"):
            continue
        if name in _OURS:
            config[name] = value
        elif name in _CALL:
            chat[name] = value
        elif name == "n":
            if value not in (None, 1):
                raise _refuse("n", "one answer per call (ask again for another)")
        elif name in ("frequency_penalty", "presence_penalty"):
            if value:
                raise _refuse(name, "use repeat_penalty, llama.cpp's")
        else:
            known = sorted(_OURS | _CALL | {"logprobs", "top_logprobs", "load_options", "n"})
            raise _refuse(name, f"it takes {', '.join(known)}")
    schema = schema_of_response_format(chat.pop("response_format", None))
    if schema is not None:
        if "json_schema" in chat:
            raise InvalidValue("response_format", "give response_format or json_schema, not both")
        chat["json_schema"] = schema
    if "json_schema" in chat:
        config["json_schema"] = chat.pop("json_schema")
    top = _top_logprobs(given.get("logprobs"), given.get("top_logprobs"))
    if top is not None:
        config["logprobs"] = max(top, 1)
    load = given.get("load_options")
    if load is not None and not isinstance(load, Mapping):
        raise InvalidValue("load_options", f"load_options must be a dict, got {load!r:.100}")
    return _Options(config_from(config), chat, load, top)


def _top_logprobs(logprobs: object, top: object) -> int | None:
    """How many candidates each token's log-probability comes with; None: no logprobs."""
    if logprobs in (None, False):
        if top:
            raise InvalidValue("top_logprobs", "top_logprobs needs logprobs=True")
        return None
    if logprobs is not True:
        raise InvalidValue("logprobs", f"logprobs must be True or False, got {logprobs!r:.100}")
    if top is None:
        return 0
    if not isinstance(top, int) or isinstance(top, bool) or top < 0:
        raise InvalidValue("top_logprobs", f"top_logprobs must be an int >= 0, got {top!r:.100}")
    return top


@final
@attrs.frozen
class _Call:
    """One chat, checked and ready: what `completion` and `streaming`, sync and async,
    each run and read the same way."""

    name: str
    model: TextModel
    messages: list[Any]
    options: _Options
    timeout: float | None

    @property
    def _chat_options(self) -> dict[str, Any]:
        return {**self.options.chat, "timeout": self.timeout}

    def open(self) -> TokenStream:
        return self.model.chat(self.messages, self.options.config, **self._chat_options)

    def aopen(self) -> AsyncTokenStream:
        return self.model.achat(self.messages, self.options.config, **self._chat_options)

    def reader(self) -> AnswerReader:
        chat = self.options.chat
        return answer_reader(self.model, chat.get("tools"), chat.get("tool_choice", "auto"))

    def logprobs(self, tokens: Sequence[Token]) -> ChoiceLogprobs | None:
        """The tokens' log-probabilities, as many candidates as were asked for."""
        top = self.options.top_logprobs
        if top is None:
            return None
        content = [
            {**item, "top_logprobs": item["top_logprobs"][:top]} for item in openai_logprobs(tokens)
        ]
        return ChoiceLogprobs.model_validate({"content": content})

    def response(self, model_response: ModelResponse, ending: Ending) -> ModelResponse:
        """`model_response`, filled with the whole answer."""
        calls = openai_tool_calls(ending.tool_calls)
        message = Message(
            content=ending.text if ending.text or not calls else None,
            role="assistant",
            tool_calls=calls or None,
            reasoning_content=ending.reasoning or None,
        )
        model_response.choices = [
            Choices(
                finish_reason=ending.finish_reason or "stop",
                index=0,
                message=message,
                logprobs=self.logprobs(ending.tokens),
            )
        ]
        model_response.model = self.name
        usage = _usage(ending)
        if usage is not None:
            setattr(model_response, "usage", usage)  # noqa: B010 (not a declared field: LiteLLM's own way)
        return model_response

    def chunk(self, token: Token, shown: Shown) -> ModelResponseStream | None:
        """The chunk that shows what `token` adds to the thinking or the answer (None:
        nothing yet)."""
        if shown.thinking:
            return _chunk(Delta(reasoning_content=shown.thinking))
        if not shown.text:
            return None
        return _chunk(Delta(content=shown.text), logprobs=self.logprobs((token,)))

    def last_chunks(self, ending: Ending) -> Iterator[ModelResponseStream]:
        """What the end adds: the held text, the thinking, the tool calls, then the usage
        and the finish reason. The usage comes alone before the finish reason: LiteLLM
        drops the usage of a finish chunk that has no content (measured, 1.110)."""
        if ending.late_reasoning:
            yield _chunk(Delta(reasoning_content=ending.late_reasoning))
        if ending.late_text:
            yield _chunk(Delta(content=ending.late_text))
        if ending.tool_calls:
            calls = [
                ChatCompletionDeltaToolCall(index=index, **call)
                for index, call in enumerate(openai_tool_calls(ending.tool_calls))
            ]
            yield _chunk(Delta(tool_calls=calls))
        usage = _usage(ending)
        if usage is not None:
            yield ModelResponseStream(choices=[], usage=usage)
        yield _chunk(Delta(), finish_reason=ending.finish_reason or "stop")


def _chunk(
    delta: Delta, *, finish_reason: str | None = None, logprobs: ChoiceLogprobs | None = None
) -> ModelResponseStream:
    choice = StreamingChoices(index=0, delta=delta, finish_reason=finish_reason, logprobs=logprobs)
    return ModelResponseStream(choices=[choice])


def _usage(ending: Ending) -> Usage | None:
    counts = ending.openai_usage
    return None if counts is None else Usage(**counts)


def _model_info(model: TextModel) -> dict[str, Any]:
    """What LiteLLM's model table says of a model, from its capabilities: what DSPy and
    LiteLLM's own checks read (`supports_response_schema` decides DSPy's JSON schema)."""
    capabilities = model.capabilities
    tools = capabilities.tools != "none"
    return {
        "litellm_provider": PROVIDER,
        "mode": "chat",
        "max_input_tokens": capabilities.context_len,
        "max_output_tokens": capabilities.context_len,
        "max_tokens": capabilities.context_len,
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
        "cache_creation_input_token_cost": 0.0,
        "cache_read_input_token_cost": 0.0,
        "supports_response_schema": True,
        "supports_function_calling": tools,
        "supports_tool_choice": tools,
        "supports_parallel_function_calling": capabilities.parallel_tool_calls,
        "supports_reasoning": capabilities.reasoning,
        "supports_vision": capabilities.vision,
        "supports_audio_input": capabilities.audio,
        "supports_embedding": capabilities.embeddings,
    }


@final
class InferenceProvider(CustomLLM):
    """The handler LiteLLM calls for `inference/...` models: `register()` installs one.

    `load_options` maps a model's location (as written after "inference/") to its
    `LoadConfig` options; `models` names models loaded already, used as they are.
    """

    def __init__(self) -> None:
        super().__init__()
        self._load_options: dict[str, Mapping[str, Any]] = {}
        self._models: dict[str, TextModel] = {}
        self._described: set[str] = set()
        self._lock = threading.Lock()

    def add(
        self,
        load_options: Mapping[str, Mapping[str, Any]] | None = None,
        models: Mapping[str, TextModel] | None = None,
    ) -> None:
        """Take load options and loaded models for names, later calls' over earlier's."""
        for name, options in (load_options or {}).items():
            if not isinstance(options, Mapping):
                raise InvalidValue(
                    "load_options", f"load options must be a dict, got {options!r:.100}"
                )
            self._load_options[_location(name)] = dict(options)
        for name, model in (models or {}).items():
            if not isinstance(model, TextModel):
                raise InvalidValue(
                    "models", f"models must map names to loaded models, got {model!r:.100}"
                )
            self._models[_location(name)] = model

    def _model(self, name: str, load: Mapping[str, Any] | None, **extra: Any) -> TextModel:
        """The model named `name`, loaded on first use; its facts told to LiteLLM once."""
        options = {**(self._load_options.get(name, {}) if load is None else load), **extra}
        model = shared_model(self._models.get(name, name), options or None)
        with self._lock:
            if name not in self._described:
                litellm.register_model({f"{PROVIDER}/{name}": _model_info(model)})
                self._described.add(name)
                _log.debug("registered %s/%s with LiteLLM", PROVIDER, name)
        return model

    def _call(
        self,
        name: str,
        messages: list[Any],
        optional_params: Mapping[str, Any],
        timeout: float | httpx.Timeout | None,
        api_base: str | None,
        api_key: str | None,
    ) -> _Call:
        _refuse_endpoint(api_base, api_key)
        options = _options(optional_params)
        model = self._model(name, options.load)
        return _Call(name, model, messages_from_openai(messages), options, _seconds(timeout))

    # LiteLLM calls its handlers with these very keyword arguments; most are not ours.
    def completion(
        self,
        model: str,
        messages: list[Any],
        api_base: str | None,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: str | None,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: Any = None,
    ) -> ModelResponse:
        with _typed_errors(model):
            call = self._call(model, messages, optional_params, timeout, api_base, api_key)
            reader = call.reader()
            stream = call.open()
            try:
                for token in stream:
                    reader.take(token)
                ending = reader.end(stream, stream.reasoning_text())
            finally:
                stream.close()
            return call.response(model_response, ending)

    async def acompletion(
        self,
        model: str,
        messages: list[Any],
        api_base: str | None,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: str | None,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: Any = None,
    ) -> ModelResponse:
        with _typed_errors(model):
            call = await asyncio.to_thread(
                self._call, model, messages, optional_params, timeout, api_base, api_key
            )
            reader = call.reader()
            stream = call.aopen()
            try:
                async for token in stream:
                    reader.take(token)
                ending = reader.end(stream, await stream.reasoning_text())
            finally:
                await stream.aclose()
            return call.response(model_response, ending)

    def streaming(  # type: ignore[override]  # chunks as ModelResponseStream, passed through
        self,
        model: str,
        messages: list[Any],
        api_base: str | None,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: str | None,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: Any = None,
    ) -> Iterator[ModelResponseStream]:
        """The chunks of the answer. The call is checked and the model loaded here, so
        that their errors come from `litellm.completion` itself; the chat starts at the
        first chunk asked for, and leaving early (`close()` the stream) ends it."""
        with _typed_errors(model):
            call = self._call(model, messages, optional_params, timeout, api_base, api_key)
        return _chunks(call)

    def astreaming(  # type: ignore[override]  # a plain def: checks and loads at once
        self,
        model: str,
        messages: list[Any],
        api_base: str | None,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: str | None,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: Any = None,
    ) -> AsyncIterator[ModelResponseStream]:
        """`streaming` for asyncio. LiteLLM calls this on a worker thread (the load
        blocks no loop) and iterates what it returns on the loop; cancelling the task
        that iterates closes the chat."""
        with _typed_errors(model):
            call = self._call(model, messages, optional_params, timeout, api_base, api_key)
        return _achunks(call)

    def embedding(
        self,
        model: str,
        input: list[Any],
        model_response: EmbeddingResponse,
        print_verbose: Callable[..., Any],
        logging_obj: Any,
        optional_params: dict[str, Any],
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        litellm_params: Any = None,
    ) -> EmbeddingResponse:
        with _typed_errors(model):
            texts, embedder = self._embedder(model, input, optional_params, api_base, api_key)
            return _embeddings(model_response, model, embedder.embed(texts))

    async def aembedding(
        self,
        model: str,
        input: list[Any],
        model_response: EmbeddingResponse,
        print_verbose: Callable[..., Any],
        logging_obj: Any,
        optional_params: dict[str, Any],
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        litellm_params: Any = None,
    ) -> EmbeddingResponse:
        with _typed_errors(model):
            texts, embedder = await asyncio.to_thread(
                self._embedder, model, input, optional_params, api_base, api_key
            )
            return _embeddings(model_response, model, await embedder.aembed(texts))

    def _embedder(
        self,
        name: str,
        texts: object,
        optional_params: Mapping[str, Any],
        api_base: str | None,
        api_key: str | None,
    ) -> tuple[list[str], TextModel]:
        """The texts, checked, and the model that embeds them: loaded with
        `embeddings=True` (as the same location's chat when its load options say so)."""
        _refuse_endpoint(api_base, api_key)
        given = dict(optional_params)
        load = given.pop("load_options", None)
        if given.pop("encoding_format", None) not in (None, "float"):
            raise _refuse("encoding_format", "vectors come as floats")
        if given:
            raise _refuse(next(iter(given)), "embeddings take no options but load_options")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not all(isinstance(text, str) for text in texts):
            raise InvalidValue("input", "input must be a text or a list of texts (not token ids)")
        return list(texts), self._model(name, load, embeddings=True)


def _embeddings(
    response: EmbeddingResponse, name: str, vectors: list[list[float]]
) -> EmbeddingResponse:
    response.data = [
        {"object": "embedding", "index": index, "embedding": vector}
        for index, vector in enumerate(vectors)
    ]
    response.model = name
    return response


def _chunks(call: _Call) -> Iterator[ModelResponseStream]:
    with _typed_errors(call.name):
        reader = call.reader()
        stream = call.open()
        try:
            for token in stream:
                chunk = call.chunk(token, reader.take(token))
                if chunk is not None:
                    yield chunk
            ending = reader.end(stream, stream.reasoning_text())
        finally:
            stream.close()
        yield from call.last_chunks(ending)


async def _achunks(call: _Call) -> AsyncIterator[ModelResponseStream]:
    with _typed_errors(call.name):
        reader = call.reader()
        stream = call.aopen()
        try:
            async for token in stream:
                chunk = call.chunk(token, reader.take(token))
                if chunk is not None:
                    yield chunk
            ending = reader.end(stream, await stream.reasoning_text())
        finally:
            await stream.aclose()
        for chunk in call.last_chunks(ending):
            yield chunk


def _refuse_endpoint(api_base: str | None, api_key: str | None) -> None:
    """A server is named in the model name, its key in the load options: an `api_base`
    or `api_key` given to LiteLLM would be ignored, so it is refused."""
    if api_base:
        raise _refuse("api_base", f"name the server in the model: {PROVIDER}/http://host:port")
    if api_key:
        raise _refuse(
            "api_key", "give a server's key as the load option api_key (or LLAMA_API_KEY)"
        )


def _location(name: str) -> str:
    """A model's location from its name, with or without the provider's prefix."""
    prefix = f"{PROVIDER}/"
    return name[len(prefix) :] if name.startswith(prefix) else name


_provider = InferenceProvider()
_registering = threading.Lock()


def register(
    load_options: Mapping[str, Mapping[str, Any]] | None = None,
    models: Mapping[str, TextModel] | None = None,
) -> InferenceProvider:
    """Make LiteLLM send `inference/...` models to us; loads nothing.

    Idempotent: the provider is appended to `litellm.custom_provider_map` once, beside
    every other provider there. `load_options` maps a model's location (a path, URL or
    hf:// name, as in its model name) to its load options (`{"context_len": 4096}`);
    `models` gives names to models loaded already, used as they are (no second server).
    A call's own `load_options=` option outranks what is registered here.
    """
    with _registering:
        _provider.add(load_options, models)
        for entry in litellm.custom_provider_map:
            if entry.get("provider") == PROVIDER:
                if entry.get("custom_handler") is not _provider:
                    raise InvalidValue(
                        "provider",
                        f"another handler is registered with LiteLLM as {PROVIDER!r}: "
                        f"{entry.get('custom_handler')!r:.100}",
                    )
                return _provider
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": _provider})
        _log.debug("registered the %s provider with LiteLLM", PROVIDER)
        return _provider
