"""A ready-made `TokenStream`, and a base for a `TextModel`, for backend authors.

A backend supplies a generator of tokens that honours a `GenerationScope`
(raising `Cancelled` or `GenerationTimeout` when the scope says so) and a way
to abort it from another thread; `IteratorTokenStream` does the rest: the
iterator protocol, `err()`, `text()` (the answer, its "content" channel) and
`reasoning_text()` (the thinking), `finish_reason`, cancellation, and telling
the model how the generation ended so that `model.err()` works per thread.
`StreamingModel` writes the public methods of a `TextModel` once (their options,
checks, stop strings and threads), around that one generator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

import attrs

from ._channels import thinking
from ._stops import StopMatcher, cut
from ._token_checks import checked_flag, checked_ids, checked_text
from .content import content_images
from .errors import (
    Cancelled,
    GenerationError,
    GenerationTimeout,
    InferenceError,
    InvalidValue,
    UnsupportedOption,
)
from .protocols import CancelSignal, TokenStream

if TYPE_CHECKING:
    from .aio import ThreadTokenStream
from .tools import ToolPlan, ToolRequest, generic_plan, render_history, tool_request
from .types import (
    FINISH_REASONS,
    BatchResult,
    Capabilities,
    FinishReason,
    GenerateConfig,
    GenerateMetrics,
    Message,
    MessageLike,
    ModelInfo,
    Token,
    ToolCall,
    build_config,
    to_message,
)

__all__ = [
    "GenerationScope",
    "IteratorTokenStream",
    "LastOutcome",
    "StreamingModel",
    "TokenSource",
    "checked_texts",
    "run_batch",
]

_SIGNAL_POLL = 0.05  # seconds between two looks at a caller's cancel signal in `wait`
# What a backend may say of a generation that ran to its end; "cancelled" is the stream's.
_ENDED: tuple[FinishReason, ...] = tuple(r for r in FINISH_REASONS if r != "cancelled")


@final
class GenerationScope:
    """When a generation must stop: a cancel flag, a caller's signal, a deadline."""

    __slots__ = ("_cancelled", "_deadline", "_signal", "timeout")

    def __init__(self, cancel: CancelSignal | None = None, timeout: float | None = None) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self._signal = cancel
        self._cancelled = False
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        if not self._cancelled and self._signal is not None and self._signal.is_set():
            self._cancelled = True
        return self._cancelled

    @property
    def watched(self) -> bool:
        """True when something outside the data can end the wait (signal or deadline)."""
        return self._signal is not None or self._deadline is not None

    def remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def wait(self, seconds: float, woken: threading.Event) -> None:
        """Sleep `seconds` at most: less once `woken` is set (by the backend's abort), the
        deadline passes or the caller's cancel signal is set (looked at every
        `_SIGNAL_POLL` seconds). A stand-in for a backend's blocking read that honours the
        scope; `check()` then says whether to go on."""
        end = time.monotonic() + seconds
        while not self.cancelled:
            left = end - time.monotonic()
            remaining = self.remaining()
            if remaining is not None:
                left = min(left, remaining)
            if self._signal is not None:
                left = min(left, _SIGNAL_POLL)
            if left <= 0 or woken.wait(left):
                return

    def check(self) -> None:
        """Raise `Cancelled` or `GenerationTimeout` if the generation must stop now."""
        if self.cancelled:
            raise Cancelled("the generation was cancelled")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise GenerationTimeout(f"the generation did not finish within {self.timeout:g} s")


@final
class LastOutcome:
    """Per-thread record of how the last generation ended, behind `model.err()`."""

    __slots__ = ("_local",)

    def __init__(self) -> None:
        self._local = threading.local()

    def record(self, error: BaseException | None, metrics: GenerateMetrics | None) -> None:
        self._local.error = error
        self._local.metrics = metrics

    def error(self) -> BaseException | None:
        return getattr(self._local, "error", None)

    def metrics(self) -> GenerateMetrics | None:
        return getattr(self._local, "metrics", None)


@final
class IteratorTokenStream:
    """A `TokenStream` over a backend's token generator.

    `abort` must make a blocked `next(tokens)` return promptly from another
    thread (closing a socket, setting a flag); `metrics` is asked once, when the
    stream ends, and `finish_reason` once, when the tokens run out (None: judged by
    their count against `max_tokens`). `tags` are the texts of the tags around the
    model's thinking, which `reasoning_text()` leaves out.
    """

    def __init__(
        self,
        tokens: Iterator[Token],
        scope: GenerationScope,
        *,
        abort: Callable[[], None] = lambda: None,
        metrics: Callable[[], GenerateMetrics | None] = lambda: None,
        outcome: LastOutcome | None = None,
        on_end: Callable[[], None] = lambda: None,
        tool_calls: Callable[[], tuple[ToolCall, ...]] = tuple,
        finish_reason: Callable[[], FinishReason | None] = lambda: None,
        max_tokens: int | None = None,
        tags: tuple[str, ...] = (),
    ) -> None:
        self._tokens = tokens
        self._tags = tags
        self._tool_calls = tool_calls
        self._reason_source = finish_reason
        self._max_tokens = max_tokens
        self._finish_reason: FinishReason | None = None
        self._scope = scope
        self._abort = abort
        self._metrics_source = metrics
        self._outcome = outcome
        self._on_end = on_end
        self._pieces: list[str] = []
        self._reasoning: list[str] = []
        self._count = 0
        self._error: BaseException | None = None
        self._metrics: GenerateMetrics | None = None
        self._done = False
        self._running = False

    def __iter__(self) -> IteratorTokenStream:
        return self

    def __next__(self) -> Token:
        if self._done:
            raise StopIteration
        self._running = True
        try:
            self._scope.check()
            token = next(self._tokens)
        except StopIteration:
            self._end()
            raise
        except Cancelled as cancelled:
            self._finish(cancelled, "cancelled")
            raise StopIteration from None
        except InferenceError as error:
            self._finish(error)
            raise
        except BaseException as error:  # KeyboardInterrupt, bugs: still free the slot
            self._finish(error)
            raise
        finally:
            self._running = False
        self._count += 1
        (self._pieces if token.channel == "content" else self._reasoning).append(token.text)
        return token

    def _end(self) -> None:
        """The generation ran to its end: finish with its reason (a reason that is none of
        ours is the backend's error)."""
        try:
            reason = self._reason()
        except BaseException as error:  # a reason none of ours, or a bug of the backend's
            self._finish(error)
            raise
        self._finish(None, reason)

    def _reason(self) -> FinishReason:
        """Calls made, else the backend's reason; a backend that gives none is judged by
        its count: max_tokens reached is "length", fewer "stop"."""
        if self._tool_calls():
            return "tool_calls"
        reason = self._reason_source()
        if reason is None:
            full = self._max_tokens is not None and self._count >= self._max_tokens
            return "length" if full else "stop"
        if reason not in _ENDED:
            raise GenerationError(
                f"the backend reported the finish reason {reason!r:.80}, none of "
                f"{', '.join(_ENDED)}; it is a bug of the backend, report it to its authors"
            ) from None  # raised as the tokens ran out: their StopIteration is no cause
        return reason

    def _finish(self, error: BaseException | None, reason: FinishReason | None = None) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        self._finish_reason = reason
        if error is not None:
            self._abort()
        self._tokens_close()
        self._metrics = self._metrics_source()
        if self._outcome is not None:
            self._outcome.record(error, self._metrics)
        self._on_end()

    def _tokens_close(self) -> None:
        close = getattr(self._tokens, "close", None)
        if close is not None:
            close()

    def err(self) -> BaseException | None:
        return self._error

    @property
    def metrics(self) -> GenerateMetrics | None:
        return self._metrics

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self._tool_calls() if self._done else ()

    @property
    def finish_reason(self) -> FinishReason | None:
        """Why the stream ended; None while it runs and after an error."""
        return self._finish_reason

    def text(self) -> str:
        """The answer: the text of its "content" tokens, the thinking left out."""
        for _ in self:
            pass
        return "".join(self._pieces)

    def reasoning_text(self) -> str:
        """The thinking: the text of its "reasoning" tokens without the tags around it."""
        for _ in self:
            pass
        return thinking(self._reasoning, self._tags)

    def cancel(self) -> None:
        """Safe from any thread: flag the scope, then unblock the reader."""
        if not self._done:
            self._scope.cancel()
            self._abort()

    def close(self) -> None:
        """Idempotent. From another thread while `next()` runs, it only cancels:
        the iterating thread then ends the stream itself."""
        if self._done:
            return
        self._scope.cancel()
        self._abort()
        if not self._running:
            self._finish(Cancelled("the stream was closed before its end"), "cancelled")

    def __enter__(self) -> IteratorTokenStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._scope.cancel()
            self._abort()


def run_batch(
    start: Callable[[int], TokenStream],
    prompts: Sequence[str | Sequence[MessageLike]],
    workers: int,
) -> list[BatchResult]:
    """Run `start(index)` streams, one per prompt, on up to `workers` threads; one result
    per prompt, in order, carrying the prompt as given.

    A failed prompt keeps the tokens it produced and carries its error; the
    others are unaffected.
    """

    def collect(index: int) -> BatchResult:
        prompt, tokens = prompts[index], list[Token]()
        try:
            stream = start(index)
        except InferenceError as error:  # the model closed or died before this one began
            return BatchResult(prompt, (), error, None)
        try:
            tokens.extend(stream)
        except InferenceError as error:
            return BatchResult(prompt, tuple(tokens), error, stream.metrics)
        return BatchResult(
            prompt, tuple(tokens), stream.err(), stream.metrics, stream.finish_reason
        )

    if not prompts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(len(prompts), workers))) as pool:
        return list(pool.map(collect, range(len(prompts))))


def checked_texts(texts: Sequence[str]) -> list[str]:
    """`embed`'s texts as a list; a lone string is a mistake, not a list of characters."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings; wrap a single text in a list")
    listed = list(texts)
    if not all(isinstance(text, str) for text in listed):
        raise TypeError(f"texts must be strings, got {listed!r}")
    return listed


_Model = TypeVar("_Model", bound="StreamingModel")


def _never() -> None:
    pass


def _no_metrics() -> GenerateMetrics | None:
    return None


def _no_reason() -> FinishReason | None:
    return None


@attrs.frozen
class TokenSource:
    """One generation as a backend starts it: its tokens (a generator that starts its
    work on the first `next()` and honours the scope), how to abort it from another
    thread, its metrics once it has ended, and why it ended ("stop": an end-of-generation
    or stop token; "length": max_tokens or a full context), asked once its tokens have
    run out. A backend that says None is judged by its count of tokens. `tags` are
    the texts of the tags it delivers around a model's thinking (see `Token.channel`)."""

    tokens: Iterator[Token]
    abort: Callable[[], None] = _never
    metrics: Callable[[], GenerateMetrics | None] = _no_metrics
    finish_reason: Callable[[], FinishReason | None] = _no_reason
    tags: tuple[str, ...] = ()


def _for_prompts(config: GenerateConfig) -> GenerateConfig:
    """`config`, for prompts continued as they are: thinking is a chat's (its template
    opens and closes it), so think=True and a budget are refused."""
    if config.think or config.reasoning_budget >= 0:
        option = "think" if config.think else "reasoning_budget"
        raise UnsupportedOption(
            option,
            f"a prompt is continued as it is; {option} is a chat's (the chat template "
            "opens and closes the thinking): use chat()",
        )
    return config


def _cut_at_stops(source: TokenSource, stops: tuple[str, ...]) -> TokenSource:
    """The source's tokens up to the first of `stops` (see `_stops.py`)."""
    matcher = StopMatcher(stops)

    def reason() -> FinishReason | None:
        return "stop" if matcher.matched else source.finish_reason()

    return attrs.evolve(
        source, tokens=cut(source.tokens, matcher, source.abort), finish_reason=reason
    )


class StreamingModel:
    """The public methods of a `TextModel`, written once for every backend.

    A subclass implements `_tokens(prompt, config, scope)`, where `prompt` is a string
    for `generate` and the parsed messages for `chat`, and `close()`; it may refine
    `_check_usable()` (raise `ModelClosed`, ...), `classify` (the default takes the
    first greedy token of a generation) and `batch_workers` (how many prompts of a
    batch run at once). Options and their errors, per-thread `err()` and `metrics()`,
    batches and the context manager come from here.
    """

    batch_workers = 4
    if TYPE_CHECKING:  # what a TextModel has, which each backend sets its own way
        info: ModelInfo

        @property
        def context_len(self) -> int: ...

    #: The options beyond sampling that `_tokens` honours: any of "json_schema",
    #: "grammar", "logprobs". Others are refused with `UnsupportedOption`, never ignored;
    #: tools need "json_schema".
    supported_options: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._outcome = LastOutcome()

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        raise NotImplementedError

    def _check_usable(self) -> None:
        """Raise if the model cannot serve now; by default it always can."""

    def close(self) -> None:
        raise NotImplementedError

    def generate(
        self,
        prompt: str,
        config: GenerateConfig | None = None,
        *,
        cancel: CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> IteratorTokenStream:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        generate_config = _for_prompts(build_config(GenerateConfig, config, options))
        return self._open(prompt, generate_config, cancel, timeout)

    def chat(
        self,
        messages: Sequence[MessageLike],
        config: GenerateConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] = "auto",
        parallel_tool_calls: bool = False,
        cancel: CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> IteratorTokenStream:
        """The answer to `messages`; with `tools`, also `stream.tool_calls` (see `tools.py`)."""
        generate_config = build_config(GenerateConfig, config, options)
        request = tool_request(tools, tool_choice, parallel_tool_calls)
        prompt, generate_config, plan = self._chat_prompt(messages, generate_config, request)
        return self._open(prompt, generate_config, cancel, timeout, plan)

    def _chat_prompt(
        self, messages: Sequence[MessageLike], config: GenerateConfig, request: ToolRequest | None
    ) -> tuple[Sequence[Message], GenerateConfig, ToolPlan | None]:
        """The messages a chat sends, its config and its tools' plan: `chat` and
        `count_tokens` both come here, so that a count is of what a chat sends."""
        parsed = [to_message(message) for message in messages]
        if not parsed:
            raise InvalidValue("messages", "messages must not be empty: give at least one")
        if any(content_images(message.content) for message in parsed):
            self._refuse_images()
        plan = None if request is None else self._tool_plan(request)
        if plan is None:
            return render_history(parsed), config, None
        return plan.messages(parsed), plan.config(config), plan

    def _refuse_images(self) -> None:
        """Images reach a model that sees them, or raise: never dropped on the way."""
        if not self.capabilities.vision:
            raise UnsupportedOption(
                "image",
                f"{type(self).__name__} does not see images ({self.info.path}): send text "
                "only, or load a model that sees them (capabilities.vision)",
            )

    def _tool_plan(self, request: ToolRequest) -> ToolPlan | None:
        """How this model runs a chat's tools; None when no tool may be called. By default
        the generic format, held to a JSON schema; a backend whose model has a tool format of
        its own returns its own plan (and says "native" in `capabilities`)."""
        if request.choice != "none" and "json_schema" not in self.supported_options:
            raise UnsupportedOption(
                "tools", f"{type(self).__name__} cannot call tools: they need json_schema"
            )
        return generic_plan(request)

    def _open(
        self,
        prompt: str | Sequence[Message],
        config: GenerateConfig,
        cancel: CancelSignal | None,
        timeout: float | None,
        plan: ToolPlan | None = None,
    ) -> IteratorTokenStream:
        self._check_usable()
        asked = {
            "json_schema": config.json_schema is not None,
            "grammar": config.grammar is not None,
            "logprobs": config.logprobs > 0,
        }
        for option in sorted(name for name, used in asked.items() if used):
            if option not in self.supported_options:
                raise UnsupportedOption(option, f"{type(self).__name__} does not support {option}")
        if config.think and not self.capabilities.reasoning:
            raise UnsupportedOption(
                "think",
                f"the model {self.info.path} does not think (its chat template opens no "
                "thinking); leave think unset",
            )
        scope = GenerationScope(cancel, timeout)
        source = self._tokens(prompt, config, scope)
        if config.stop:
            source = _cut_at_stops(source, config.stop)
        tokens = source.tokens if plan is None else plan.watch(source.tokens)
        return IteratorTokenStream(
            tokens,
            scope,
            abort=source.abort,
            metrics=source.metrics,
            outcome=self._outcome,
            tool_calls=(lambda: plan.calls) if plan is not None else tuple,
            finish_reason=source.finish_reason,
            max_tokens=config.max_tokens,
            tags=source.tags,
        )

    def agenerate(
        self,
        prompt: str,
        config: GenerateConfig | None = None,
        *,
        cancel: CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> ThreadTokenStream:
        from .aio import ThreadTokenStream  # asyncio is a fifth of our import time: on use

        return ThreadTokenStream(
            self.generate(prompt, config, cancel=cancel, timeout=timeout, **options)
        )

    def achat(
        self,
        messages: Sequence[MessageLike],
        config: GenerateConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] = "auto",
        parallel_tool_calls: bool = False,
        cancel: CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> ThreadTokenStream:
        from .aio import ThreadTokenStream

        return ThreadTokenStream(
            self.chat(
                messages,
                config,
                tools=tools,
                tool_choice=tool_choice,
                parallel_tool_calls=parallel_tool_calls,
                cancel=cancel,
                timeout=timeout,
                **options,
            )
        )

    async def abatch_generate(
        self,
        prompts: Sequence[str | Sequence[MessageLike]],
        config: GenerateConfig | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> list[BatchResult]:
        from .aio import abatch_generate

        return await abatch_generate(self, prompts, config, timeout=timeout, **options)

    def batch_generate(
        self,
        prompts: Sequence[str | Sequence[MessageLike]],
        config: GenerateConfig | None = None,
        *,
        cancel: CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> list[BatchResult]:
        """Every prompt on a thread of its own, `batch_workers` at a time; a chat's
        messages are checked (and its images read) before any prompt starts."""
        self._check_usable()
        generate_config = build_config(GenerateConfig, config, options)
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list; wrap a single prompt in a list")
        if any(isinstance(prompt, str) for prompt in prompts):
            _for_prompts(generate_config)
        started = {
            index: self._chat_prompt(prompt, generate_config, None)[:2]
            for index, prompt in enumerate(prompts)
            if not isinstance(prompt, str)
        }

        def start(index: int) -> TokenStream:
            prompt = prompts[index]
            if isinstance(prompt, str):
                return self._open(prompt, generate_config, cancel, timeout)
            return self._open(*started[index], cancel, timeout)

        return run_batch(start, prompts, workers=self.batch_workers)

    def classify(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> list[Token]:
        """The greedy next token of each prompt (stop strings, which would hold it back,
        do not apply)."""
        self._check_usable()
        base = build_config(GenerateConfig, config, options)
        greedy = attrs.evolve(base, max_tokens=1, temperature=0.0, stop=())
        return [next(self.generate(prompt, greedy, timeout=timeout)) for prompt in prompts]

    # -- tokens: counted as the backend reads them -------------------------------------

    def tokenize(self, text: str, *, special: bool = False) -> list[Token]:
        """The tokens of `text`, each with its id and text, nothing added (no BOS).
        `special=True` reads the markup of special tokens (`<|im_start|>`) as those
        tokens; False reads it as plain text."""
        self._check_usable()
        return self._tokenize(checked_text(text, "text"), checked_flag(special, "special"))

    def detokenize(self, ids: Iterable[int]) -> str:
        """The text of token ids (special tokens as their markup)."""
        self._check_usable()
        return self._detokenize(checked_ids(ids, self.info.vocab_size))

    def count_tokens(
        self,
        prompt_or_messages: str | Sequence[MessageLike],
        config: GenerateConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] = "auto",
        **options: Any,
    ) -> int:
        """How many prompt tokens `generate(prompt)` or `chat(messages, tools=...)` would
        send, with the same options: what the backend adds (a BOS) and, for messages,
        the chat template and the tools' instructions included."""
        self._check_usable()
        generate_config = build_config(GenerateConfig, config, options)
        if isinstance(prompt_or_messages, str):
            if tools is not None:
                raise InvalidValue("tools", "tools go with a chat's messages, not a prompt")
            return self._count_tokens(checked_text(prompt_or_messages, "prompt"), generate_config)
        given: object = prompt_or_messages  # any value, whatever the annotation says
        if not isinstance(given, Sequence):
            raise TypeError(
                "count_tokens takes a prompt (a string) or a list of messages, "
                f"got {type(given).__name__}"
            )
        request = tool_request(tools, tool_choice)
        prompt, generate_config, _ = self._chat_prompt(prompt_or_messages, generate_config, request)
        return self._count_tokens(prompt, generate_config)

    def _tokenize(self, text: str, special: bool) -> list[Token]:
        raise UnsupportedOption("tokenize", f"{type(self).__name__} does not tokenize texts")

    def _detokenize(self, ids: list[int]) -> str:
        raise UnsupportedOption("detokenize", f"{type(self).__name__} does not detokenize ids")

    def _count_tokens(self, prompt: str | Sequence[Message], config: GenerateConfig) -> int:
        """The prompt tokens `_tokens(prompt, config, ...)` would send."""
        raise UnsupportedOption("count_tokens", f"{type(self).__name__} does not count tokens")

    @property
    def capabilities(self) -> Capabilities:
        """What the model does, from what it honours: tools in the generic format where
        it follows a JSON schema, embeddings where `embed` is its own, none of reasoning,
        vision or audio (a backend that does more says so by overriding this)."""
        tools: Literal["generic", "none"] = (
            "generic" if "json_schema" in self.supported_options else "none"
        )
        return Capabilities(
            tools=tools,
            parallel_tool_calls=tools == "generic",  # the generic answer is a list of calls
            reasoning=False,
            vision=False,
            audio=False,
            embeddings=type(self).embed is not StreamingModel.embed,
            context_len=self.context_len,
            slots=self.batch_workers,
        )

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        """One vector per text; by default a backend computes none."""
        checked_texts(texts)
        raise UnsupportedOption("embed", f"{type(self).__name__} does not compute embeddings")

    async def aembed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        """`embed` on a worker thread: the loop runs on meanwhile."""
        import asyncio

        return await asyncio.to_thread(self.embed, texts, normalize=normalize)

    def err(self) -> BaseException | None:
        return self._outcome.error()

    def metrics(self) -> GenerateMetrics | None:
        return self._outcome.metrics()

    def __enter__(self: _Model) -> _Model:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
