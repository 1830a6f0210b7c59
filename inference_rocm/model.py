"""The TextModel over one llama-server.

Tokens stream from the native `/completion` endpoint with `return_tokens`, so
each carries its real id. llama-server sends no event for a token that leaves
an incomplete UTF-8 sequence (byte pieces of emoji, CJK, accented text): the
next event carries the whole character but only the last id, and
`tokens_predicted` jumps. The missing ids are recovered by tokenizing that
event's text with `/tokenize` (with pieces) and accepted only when the count
and the trailing id agree with what the server reported; they are delivered
in order, with empty text, before the token that completes the character.
To recover ids cut off by the token limit the same way, the server is asked
for a few tokens more than `max_tokens` (a UTF-8 character spans at most four
byte tokens) and the stream is closed as soon as `max_tokens` have been
delivered.

With `logprobs`, each token carries the figures the server sent for it
(`completion_probabilities`). For a character split across tokens, the server
sends one event with the figures of its last token only: the tokens recovered
before it carry `logprob=None` and no candidates, as does a token of an
unfinished character that `max_tokens` cut off.
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
from inference_core.types import (
    Capabilities,
    GenerateConfig,
    GenerateMetrics,
    Message,
    ModelInfo,
    Token,
    build_config,
)

from . import rendering, tokenizer, wire
from .client import EventStream, RequestRejected, ServerClient, error_for

__all__ = ["LlamaServerModel", "ServerHandle", "request_body"]

logger = logging.getLogger(__name__)

# Extra tokens requested beyond max_tokens so that a character split by the
# limit still arrives whole (UTF-8 is at most 4 bytes, each token adds >= 1).
_UTF8_SLACK = 3
# An /embedding answer takes about 21 bytes per dimension of each vector (measured):
# texts are sent in groups whose answers stay far below the client's cap on a body.
_EMBED_ANSWER_BYTES = 8 * 2**20
_BYTES_PER_DIMENSION = 24
_UNKNOWN_WIDTH = 16384  # a remote server that does not say how wide its vectors are


def request_body(
    prompt: str | list[int], config: GenerateConfig, *, stream: bool
) -> dict[str, Any]:
    """The `/completion` request for a prompt and a GenerateConfig (0 = off, as in ours)."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "n_predict": config.max_tokens + (_UTF8_SLACK if stream else 0),
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


_Server = TypeVar("_Server", bound=ServerHandle)


@final
class _Generation:
    """The state of one streamed generation, shared by its token generator and its stream."""

    __slots__ = ("events", "timings")

    def __init__(self) -> None:
        self.events: EventStream | None = None
        self.timings: Any = None  # the last the server sent, read when the stream ends

    def abort(self) -> None:
        events = self.events
        if events is not None:
            events.abort()

    def metrics(self) -> GenerateMetrics | None:
        """The server's timings; none when they are not its shape (a stream that ran to
        its end raised that already)."""
        try:
            return wire.metrics(self.timings)
        except wire.BadAnswer:
            return None


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
    ) -> None:
        super().__init__()
        self.embed_batch = embed_batch  # None: not loaded with embeddings=True
        self.props = props  # what /props said at the load
        self.server = server
        self.info = info
        self.model_type = model_type
        self._context_len = context_len
        self.slots = self.batch_workers = slots  # a batch runs on the server's slots
        self._closed = threading.Event()
        self._crash: ServerCrashed | None = None

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
        if self._crash is not None:
            raise ServerCrashed(
                f"the server of {self.info.path} has died; load the model again. "
                f"It ended with: {self._crash.args[0].splitlines()[0]}",
                log_tail=self._crash.log_tail,
                returncode=self._crash.returncode,
                log=self._crash.log,
            )

    def _unusable(self, bad: wire.BadAnswer) -> GenerationError:
        """What the caller sees of an answer the server should never have given."""
        return GenerationError(
            f"the server ({self.server.where()}) answered unlike a llama-server: {bad}. "
            "Check that a llama-server build this library supports is what answers there"
        )

    @contextlib.contextmanager
    def _answers(self) -> Iterator[None]:
        """The server's failures as callers see them: an answer unlike llama-server's is a
        `GenerationError`, one caused by close() `ModelClosed`, and a crash kills the model."""
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
        """A failure caused by close() is ModelClosed; a crash makes the model dead."""
        if self._closed.is_set():
            return ModelClosed(f"the model {self.info.path} was closed during the generation")
        if isinstance(error, ServerCrashed) and self._crash is None:
            self._crash = error
        return error

    # -- generation -------------------------------------------------------

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        generation = _Generation()
        return TokenSource(
            self._generate(prompt, config, scope, generation),
            abort=generation.abort,
            metrics=generation.metrics,
        )

    def _generate(
        self,
        prompt: str | Sequence[Message],
        config: GenerateConfig,
        scope: GenerationScope,
        generation: _Generation,
    ) -> Iterator[Token]:
        """The request starts on the first `next()`: errors raise from the iterator."""
        with self._answers():
            self._check_usable()
            text = rendering.render(self.server.client, prompt, scope)
            body = request_body(text, config, stream=True)
            try:
                events = self.server.client.stream("/completion", body, scope)
            except RequestRejected as rejected:
                raise _constraint_error(rejected, config) or rejected from None
            generation.events = events
            try:
                yield from self._deliver(events, config, generation, scope)
            finally:
                events.close()
            wire.metrics(generation.timings)

    def _deliver(
        self,
        events: EventStream,
        config: GenerateConfig,
        generation: _Generation,
        scope: GenerationScope,
    ) -> Iterator[Token]:
        """Turn events into tokens in order, recovering ids the stream leaves out."""
        delivered, limit, stops = 0, config.max_tokens, config.stop_tokens
        for event in events:
            if "error" in event:
                raise error_for(500, event, endpoint="/completion")
            timings = event.get("timings")
            if timings is not None:
                generation.timings = timings
            ids = event.get("tokens")
            if type(ids) is not list:
                ids = wire.ids(ids)
            figures = event.get("completion_probabilities")
            if len(ids) == 1 and event.get("tokens_predicted", delivered + 1) == delivered + 1:
                token = wire.token(ids[0], event.get("content"), figures)  # the hot path
                if token.id in stops:
                    return
                delivered += 1
                yield token
                if delivered == limit:
                    return
            elif ids:
                ids, text = wire.ids(ids), wire.text(event.get("content"))
                predicted = event.get("tokens_predicted", delivered + len(ids))
                missing = wire.count(predicted, "tokens_predicted") - delivered
                group = (
                    self._recover(text, ids, missing, scope)
                    if missing > len(ids)
                    else [(token_id, b"") for token_id in ids]
                )
                cut = next((i for i, (token_id, _) in enumerate(group) if token_id in stops), None)
                end = min(len(group) if cut is None else cut, limit - delivered)
                whole = end == len(group)
                last = wire.figures(figures) if whole else None
                yield from _split_group(
                    group[:end],
                    text if whole else None,
                    last if last and last.id == ids[-1] else None,
                )
                delivered += end
                if end < len(group) or delivered == limit:
                    return
            if event.get("stop") is not False and wire.flag(event.get("stop"), "stop"):
                predicted = wire.count(event.get("tokens_predicted", delivered), "tokens_predicted")
                if predicted > delivered and event.get("stop_type") != "limit":
                    logger.warning(
                        "llama-server ended on %d token(s) of an unfinished character it never "
                        "sent; their ids are missing from this stream",
                        predicted - delivered,
                    )
                return
        raise GenerationError(
            "the stream ended without the server's final event; the output is incomplete"
        )

    def _recover(
        self, text: str, ids: list[int], expected: int, scope: GenerationScope
    ) -> list[tuple[int, bytes]]:
        """The ids (and bytes) of a character split across tokens, by tokenizing its text
        (within the generation's own deadline and cancel)."""
        answer = self.server.client.request(
            "POST", "/tokenize", {"content": text, "with_pieces": True}, scope=scope
        )
        group = wire.pieces(answer)
        if len(group) != expected or [token_id for token_id, _ in group[-len(ids) :]] != ids:
            logger.warning(
                "could not verify the ids of %r (the server reported %d tokens ending in %s, "
                "the tokenizer gives %s); delivering the tokenizer's ids",
                text,
                expected,
                ids,
                [token_id for token_id, _ in group],
            )
        return group

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
        with self._answers():
            return tokenizer.prompt_tokens(client, rendering.render(client, prompt))

    @property
    def capabilities(self) -> Capabilities:
        """What this library does with the model. Tools stay "generic" until chat renders
        them in the template's own format (`props.template_tools`), and vision and audio
        off until messages carry them (`props.modalities`)."""
        return attrs.evolve(super().capabilities, embeddings=self.embed_batch is not None)

    # -- state ---------------------------------------------------------------

    def close(self) -> None:
        """Abort open streams and stop the server: SIGTERM, then SIGKILL, for one we
        started; a remote one is only disconnected. Idempotent, and in every thread
        that calls it the server (or our connections to it) is gone when it returns."""
        self._closed.set()
        self.server.stop()

    def __del__(self) -> None:
        if not getattr(self, "_closed", threading.Event()).is_set():
            self.close()


def _split_group(
    group: list[tuple[int, bytes]], text: str | None, figures: wire.Figures | None
) -> Iterator[Token]:
    """Tokens of one event: the text goes on the last; ids before it carry none.

    `text` is None when the group was cut short (by the limit or a stop token):
    the last token delivered then carries its bytes decoded the way the server
    renders an unfinished character. `figures` are the log-probabilities the
    server sent with the event; they belong to its last token only.
    """
    if not group:
        return
    for token_id, _ in group[:-1]:
        yield Token(token_id, "")
    if text is None:
        text = b"".join(data for _, data in group).decode("utf-8", "replace")
    token_id = group[-1][0]
    yield Token(token_id, text) if figures is None else figures.token(token_id, text)
