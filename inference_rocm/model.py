"""The TextModel over one llama-server.

Tokens stream from the native `/completion` endpoint with `return_tokens`, so
each carries its real id; `delivery.py` turns its events into tokens (recovering
the ids of characters split across tokens) and says why the stream ended. For a
chat template that thinks (`thinking.py`), `channels.py` puts the thinking's tokens
on the "reasoning" channel.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar, final

import attrs

from inference_core.errors import (
    ContextOverflow,
    GenerationError,
    InferenceError,
    InvalidValue,
    ModelClosed,
    ServerCrashed,
    UnsupportedOption,
)
from inference_core.streams import GenerationScope, StreamingModel, TokenSource, checked_texts
from inference_core.tools import ToolPlan, ToolRequest
from inference_core.types import (
    Capabilities,
    GenerateConfig,
    Message,
    MessageLike,
    ModelInfo,
    Session,
    Token,
    build_config,
    to_message,
)

from . import channels, images, rendering, thinking, tokenizer, wire
from .client import EventStream, RequestRejected, ServerClient
from .delivery import UTF8_SLACK, Generation
from .native_tools import FormatProbe, NativeToolPlan
from .placement import Placement
from .rendering import ToolChat
from .sessions import SessionStore
from .tool_formats import ToolFormat

__all__ = ["LlamaServerModel", "ServerHandle", "request_body"]

logger = logging.getLogger(__name__)

# An /embedding answer takes about 21 bytes per dimension of each vector (measured):
# texts are sent in groups whose answers stay far below the client's cap on a body.
_EMBED_ANSWER_BYTES = 8 * 2**20
_BYTES_PER_DIMENSION = 24
_UNKNOWN_WIDTH = 16384  # a remote server that does not say how wide its vectors are


def request_body(
    prompt: str | list[int] | dict[str, Any], config: GenerateConfig, *, stream: bool
) -> dict[str, Any]:
    """The `/completion` request for a prompt and a GenerateConfig (0 = off, as in ours)."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "n_predict": config.max_tokens + (UTF8_SLACK if stream else 0),
        "stream": stream,
        "return_tokens": True,
        "timings_per_token": stream,  # a stream we close early still has the server's timings
        "cache_prompt": True,
        "temperature": config.temperature,
        "top_k": config.top_k,
        "top_p": config.top_p or 1.0,
        "min_p": config.min_p,
        "repeat_penalty": config.repeat_penalty,
        "seed": -1 if config.seed is None else config.seed,
    }
    if config.json_schema is not None:
        body["json_schema"] = config.json_schema
    if config.grammar is not None:
        body["grammar"] = config.grammar
    if config.logprobs:
        body["n_probs"] = config.logprobs
    return body


def _constraint_error(error: RequestRejected, config: GenerateConfig) -> InvalidValue | None:
    """A 400 for a request with a schema or a grammar: the server could not use it."""
    field = "json_schema" if config.json_schema is not None else "grammar"
    if error.status != 400 or getattr(config, field) is None:
        return None
    return InvalidValue(field, f"llama-server could not use the {field}: {error.server_message}")


class ServerHandle(Protocol):
    """The llama-server a model talks to: a child we started (`server.LlamaServer`),
    or one someone else runs (`remote.RemoteServer`)."""

    @property
    def client(self) -> ServerClient: ...

    def where(self) -> str:
        """Where it runs, for a repr: a pid and port, or a URL."""
        ...

    def stop(self) -> None:
        """Stop using it: close our connections (and stop the process, if it is ours)."""
        ...

    @property
    def restarts(self) -> int:
        """How many times it was started again after it died (0 for one we do not run)."""
        ...

    @property
    def asleep(self) -> bool:
        """Whether it sleeps now, its memory given back until the next request."""
        ...


_Server = TypeVar("_Server", bound=ServerHandle)


@attrs.frozen
class _Conversation:
    """A generation as `save_session` sends it again: its prompt, the prompt's text as
    rendered, and the tokens it generated."""

    prompt: str | Sequence[Message]
    text: str
    generated: list[Token]

    def with_answer(self) -> str | list[Message]:
        """The prompt and its answer: a completion's text, or the chat and its reply."""
        if isinstance(self.prompt, str):
            return self.prompt + "".join(token.text for token in self.generated)
        said = {
            channel: "".join(t.text for t in self.generated if t.channel == channel)
            for channel in ("content", "reasoning")
        }
        reply = Message("assistant", said["content"], reasoning=said["reasoning"] or None)
        return [*self.prompt, reply]


def _kept(tokens: Iterator[Token], kept: list[Token]) -> Iterator[Token]:
    """The tokens, each also added to `kept` as it passes."""
    for token in tokens:
        kept.append(token)
        yield token


# Saving a session prefills its slot, then writes it; a generation of another thread
# that takes the slot between the two makes it try again.
_SAVE_ATTEMPTS = 3


@final
class LlamaServerModel(StreamingModel, Generic[_Server]):
    """A model served by one llama-server child. Safe to use from many threads."""

    supported_options = frozenset({"json_schema", "grammar", "logprobs"})

    def __init__(
        self,
        server: _Server,
        info: ModelInfo,
        *,
        model_type: str,
        context_len: int,
        slots: int,
        embed_batch: int | None = None,
        props: wire.Props | None = None,
        sessions: SessionStore | None = None,
        placement: Placement | None = None,
    ) -> None:
        super().__init__()
        # Where the load put the layers, as its server said (None: it did not say, or a
        # server at a URL).
        self.placement = placement
        self.embed_batch = embed_batch  # None: not loaded with embeddings=True
        self.props = props  # what /props said at the load
        self.server = server
        self.info = info
        self.model_type = model_type
        self._context_len = context_len
        self.slots = self.batch_workers = slots  # a batch runs on the server's slots
        self._closed = threading.Event()
        self._tags_lock = threading.Lock()
        self._tags: list[thinking.Tags | None] = []  # found on first use
        self._format_probe = FormatProbe(lambda: server.client, props)
        self._sessions = sessions  # None: the server writes no sessions (one at a URL)
        self._session_lock = threading.Lock()
        self._last: _Conversation | None = None  # of the last generation, for save_session

    def __repr__(self) -> str:
        return f"<LlamaServerModel {self.info.path!r} {self.server.where()}>"

    @property
    def context_len(self) -> int:
        return self._context_len

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _check_usable(self) -> None:
        if self._closed.is_set():
            raise ModelClosed(f"the model {self.info.path} is closed; load it again to use it")

    @property
    def restarts(self) -> int:
        """How many times the server was started again after it died (see `LoadConfig.restart`)."""
        return self.server.restarts

    @property
    def asleep(self) -> bool:
        """Whether the server has given its memory back after `LoadConfig.keep_alive` idle
        seconds; the next request wakes it."""
        with self._answers():
            return self.server.asleep

    def _unusable(self, bad: wire.BadAnswer) -> GenerationError:
        """What the caller sees of an answer the server should never have given."""
        return GenerationError(
            f"the server ({self.server.where()}) answered unlike a llama-server: {bad}. "
            "Check that a llama-server build this library supports is what answers there"
        )

    @contextlib.contextmanager
    def _answers(self) -> Iterator[None]:
        """The server's failures as callers see them: an answer unlike llama-server's is a
        `GenerationError`, and one caused by close() `ModelClosed`."""
        try:
            yield
        except wire.BadAnswer as bad:
            raise self._unusable(bad) from None
        except InferenceError as error:
            translated = self._translate(error)
            if translated is error:
                raise
            raise translated from error

    def _translate(self, error: InferenceError) -> InferenceError:
        """A failure caused by close() is ModelClosed."""
        if self._closed.is_set():
            return ModelClosed(f"the model {self.info.path} was closed during the generation")
        return error

    # -- generation -------------------------------------------------------

    def _thinking(self) -> thinking.Tags | None:
        """The chat template's thinking tags, found once (None: it does not think)."""
        with self._tags_lock:
            if not self._tags:
                with self._answers():
                    self._tags.append(thinking.detect(self.server.client))
            return self._tags[0]

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        generation = Generation(self.server.client)
        tags = None if isinstance(prompt, str) else self._thinking()
        return TokenSource(
            self._generate(prompt, config, scope, generation, tags),
            abort=generation.abort,
            metrics=generation.metrics,
            finish_reason=generation.finish_reason,
            tags=() if tags is None else (tags.open, tags.close),
        )

    def _generate(
        self,
        prompt: str | Sequence[Message],
        config: GenerateConfig,
        scope: GenerationScope,
        generation: Generation,
        tags: thinking.Tags | None,
    ) -> Iterator[Token]:
        """The request starts on the first `next()`: errors raise from the iterator."""
        with self._answers():
            self._check_usable()
            kwargs = thinking.template_kwargs(tags, config)
            text = rendering.render(self.server.client, prompt, scope, kwargs)
            pictures = images.chat_images(prompt)
            body = request_body(images.completion_prompt(text, pictures), config, stream=True)
            thought = tags if thinking.thinks(tags, config) else None
            opened = thought is not None and thinking.opens(thought, text)
            if thought is not None:
                body.update(thinking.budget_fields(thought, config, opened))
            if isinstance(prompt, ToolChat):
                body.update(prompt.fields)
            try:
                events = self._start(body, scope, pictures)
            except RequestRejected as rejected:
                if pictures and not isinstance(prompt, str):
                    undecodable = images.undecodable(self.server.client, prompt, rejected)
                    if undecodable is not None:
                        raise undecodable from None
                raise _constraint_error(rejected, config) or rejected from None
            generation.events = events
            generated: list[Token] = []
            try:
                tokens = generation.deliver(events, config, scope)
                if thought is not None:
                    tokens = channels.split(tokens, thought.block, inside=opened, may_open=True)
                if self._sessions is not None:  # kept only where save_session can use them
                    tokens = _kept(tokens, generated)
                yield from tokens
            finally:
                events.close()
                if self._sessions is not None:
                    with self._session_lock:  # one with images cannot be sent again as text
                        self._last = None if pictures else _Conversation(prompt, text, generated)
            wire.metrics(generation.timings)

    def _start(
        self, body: dict[str, Any], scope: GenerationScope, pictures: list[str]
    ) -> EventStream:
        """The `/completion` stream; once more without the prompt cache where the server's
        cache failed on the images (`images.cache_failed`)."""
        try:
            return self.server.client.stream("/completion", body, scope)
        except GenerationError as error:
            if not pictures or not images.cache_failed(error):
                raise
        logger.info("llama-server's prompt cache failed on a chat's images; sending it anew")
        return self.server.client.stream("/completion", {**body, "cache_prompt": False}, scope)

    # -- sessions -----------------------------------------------------------

    def _session_store(self) -> SessionStore:
        if self._sessions is None:
            raise UnsupportedOption(
                "sessions",
                f"the server of this model ({self.server.where()}) saves no sessions: those "
                "are saved by a llama-server that load() starts on a model file, not one at a "
                "URL (whose files stay on its machine) nor one `inference serve` runs, and "
                "where the cache folder can be written (a warning said so at the load)",
            )
        return self._sessions

    def save_session(
        self, name: str, conversation: str | Sequence[MessageLike] | None = None
    ) -> Session:
        """Save a conversation's cache as session `name` (replacing one of that name).

        `conversation` is a prompt or messages (the answers included), rendered as a
        generation renders them; by default, the last generation's prompt and the tokens
        it generated. The server reads whatever of it its cache lacks, and the slot that
        then holds it is written to disk with the conversation, which `restore_session`
        gives back."""
        store = self._session_store()
        with self._answers():
            self._check_usable()
            if conversation is None:
                with self._session_lock:
                    last = self._last
                if last is None:
                    raise InvalidValue(
                        "conversation",
                        "nothing to save yet: generate first, or pass the conversation",
                    )
                saved, held = last.with_answer(), [last.text, *(t.id for t in last.generated)]
            else:
                saved = (
                    conversation
                    if isinstance(conversation, str)
                    else [to_message(message) for message in conversation]
                )
                if images.chat_images(saved):
                    raise UnsupportedOption(
                        "sessions", "a conversation with images cannot be saved as a session"
                    )
                kwargs = thinking.template_kwargs(self._thinking(), GenerateConfig())
                held = [rendering.render(self.server.client, saved, None, kwargs)]
            for _ in range(_SAVE_ATTEMPTS):
                answer = self.server.client.request(
                    "POST", "/completion", {"prompt": held, "n_predict": 0, "cache_prompt": True}
                )
                slot, held_tokens = wire.held_in(answer)
                session = store.save(self.server.client, slot, name, saved, held_tokens)
                if session is not None:
                    return session
            raise GenerationError(
                f"session {name!r} was not saved: each time, another generation took the "
                f"slot that held it before it was written ({_SAVE_ATTEMPTS} times); save it "
                "when the model is less busy"
            )

    def restore_session(self, name: str) -> Session:
        """Read session `name` back into the slot it was saved from: a prompt that starts
        with its tokens (its conversation again, and a new turn) goes to that slot, as
        llama-server sends a prompt to the slot whose cache holds most of it, and skips
        their prefill."""
        store = self._session_store()
        with self._answers():
            self._check_usable()
            return store.restore(self.server.client, name, self.slots)

    # -- embeddings ---------------------------------------------------------

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        """One vector per text, in order, from llama-server's `/embedding` (one request per
        group of texts whose answer stays well within the client's cap on a body)."""
        self._check_usable()
        texts = checked_texts(texts)
        if self.embed_batch is None:
            raise UnsupportedOption(
                "embed",
                f"{self.info.path} was loaded without embeddings; load it with "
                "embeddings=True to embed texts",
            )
        width = self.info.embedding_length or _UNKNOWN_WIDTH
        group = max(1, _EMBED_ANSWER_BYTES // (_BYTES_PER_DIMENSION * width))
        vectors: list[list[float]] = []
        try:
            for start in range(0, len(texts), group):
                vectors += self._embed_group(
                    texts, slice(start, start + group), normalize, self.embed_batch
                )
            if len({len(vector) for vector in vectors}) > 1:
                raise wire.BadAnswer(
                    "/embedding", "the answers", "hold vectors of different lengths"
                )
        except wire.BadAnswer as bad:
            raise self._unusable(bad) from None
        return vectors

    def _embed_group(
        self, texts: list[str], part: slice, normalize: bool, limit: int
    ) -> list[list[float]]:
        """The vectors of `texts[part]`, in one request; `limit` is the longest text."""
        group = texts[part]
        body = {"content": group, "embd_normalize": 2 if normalize else -1}
        try:
            answer = self.server.client.request("POST", "/embedding", body)
        except GenerationError as error:
            if isinstance(error, ServerCrashed):
                raise self._translate(error) from error
            raise self._too_long(texts, limit) or error from None
        return wire.embeddings(answer, len(group))

    def _too_long(self, texts: list[str], limit: int) -> ContextOverflow | None:
        """The first text longer than the server embeds at once, as a ContextOverflow."""
        for index, text in enumerate(texts):
            answer = self.server.client.request("POST", "/tokenize", {"content": text})
            count = wire.token_count(answer)
            if count > limit:
                return ContextOverflow(
                    f"text {index} ({count} tokens) is longer than the {limit} tokens a text "
                    "can have here: shorten it, or load with a larger context_len",
                    prompt_tokens=count,
                    context_len=limit,
                )
        return None

    # -- batch, classify ---------------------------------------------------

    def classify(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> list[Token]:
        """The greedy next token of each prompt: one prefill and one sampling step each."""
        self._check_usable()
        base = build_config(GenerateConfig, config, options)
        body_config = GenerateConfig(
            max_tokens=1, temperature=0.0, repeat_penalty=base.repeat_penalty
        )

        def one(prompt: str) -> Token:
            scope = GenerationScope(None, timeout)
            body = dict(request_body(prompt, body_config, stream=False), n_probs=1)
            with self._answers():
                return wire.first_token(
                    self.server.client.request("POST", "/completion", body, scope=scope)
                )

        if len(prompts) <= 1:
            return [one(prompt) for prompt in prompts]
        with ThreadPoolExecutor(max_workers=min(len(prompts), self.slots)) as pool:
            return list(pool.map(one, prompts))

    # -- tokens, capabilities -------------------------------------------------

    def _tokenize(self, text: str, special: bool) -> list[Token]:
        with self._answers():
            return tokenizer.tokenize(self.server.client, text, special)

    def _detokenize(self, ids: list[int]) -> str:
        with self._answers():
            return tokenizer.detokenize(self.server.client, ids)

    def _count_tokens(self, prompt: str | Sequence[Message], config: GenerateConfig) -> int:
        client = self.server.client
        tags = None if isinstance(prompt, str) else self._thinking()
        kwargs = thinking.template_kwargs(tags, config)
        with self._answers():
            if images.chat_images(prompt) and not isinstance(prompt, str):
                return images.count(client, prompt, kwargs)
            return tokenizer.prompt_tokens(client, rendering.render(client, prompt, None, kwargs))

    def _tool_plan(self, request: ToolRequest) -> ToolPlan | None:
        """The template's own tool format where it has one known here, else the generic."""
        tool_format = self._native_format()
        if tool_format is None:
            return super()._tool_plan(request)
        return NativeToolPlan(request, tool_format)

    def _native_format(self) -> ToolFormat | None:
        """The template's tool format, measured on the server the first time it is needed."""
        if not self._format_probe.pending:
            return self._format_probe.format()
        with self._answers():
            self._check_usable()
            return self._format_probe.format()

    @property
    def capabilities(self) -> Capabilities:
        """What this library does with the model: tools in the template's own format where
        it has one known here (measured once, on first need), else generic; reasoning where
        the chat template thinks between tags found by `thinking.detect`; vision where the
        server reads images (`props.modalities`, with a projector); audio off until
        messages carry it."""
        modalities = frozenset() if self.props is None else self.props.modalities
        tags = self._thinking()
        declared = attrs.evolve(
            super().capabilities,
            embeddings=self.embed_batch is not None,
            reasoning=tags is not None,
            reasoning_tags=() if tags is None else (tags.open, tags.close),
            vision="vision" in modalities,
        )
        tool_format = self._native_format()
        if tool_format is None:
            return declared
        return attrs.evolve(
            declared, tools="native", parallel_tool_calls=tool_format.between is not None
        )

    def _refuse_images(self) -> None:
        if not self.capabilities.vision:
            raise UnsupportedOption(
                "image",
                f"{self.info.path} sees no images: load it with its projector "
                "(mmproj=...; a server started by hand, with --mmproj), or send text only",
            )

    # -- state ---------------------------------------------------------------

    def close(self) -> None:
        """Abort open streams and stop the server: SIGTERM, then SIGKILL, for one we
        started; a remote one is only disconnected. Idempotent, and in every thread
        that calls it the server (or our connections to it) is gone when it returns."""
        self._closed.set()
        self.server.stop()

    def __del__(self) -> None:
        # nothing here may need a module global: at interpreter exit they may be None
        closed = getattr(self, "_closed", None)
        if closed is not None and not closed.is_set():
            self.close()
