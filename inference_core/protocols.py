"""The protocols a backend implements and an integrator programs against.

They are structural (`typing.Protocol`): a backend needs no base class, only
the methods and attributes below, and `isinstance(obj, TextModel)` checks them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from .types import (
    BatchResult,
    Capabilities,
    FinishReason,
    GenerateConfig,
    GenerateMetrics,
    LoadConfig,
    MessageLike,
    ModelInfo,
    Session,
    Token,
    ToolCall,
)

__all__ = [
    "AsyncTokenStream",
    "Backend",
    "BackendStatus",
    "CancelSignal",
    "SavesSessions",
    "TextModel",
    "TokenStream",
]


@runtime_checkable
class CancelSignal(Protocol):
    """Anything with `is_set()`, such as `threading.Event`."""

    def is_set(self) -> bool: ...


@attrs.frozen
class BackendStatus:
    """Whether a backend can run here, and why not.

    `reasons` holds one sentence per failed check, each saying how to fix it;
    `details` what the backend found (binaries, devices, versions).
    """

    name: str
    priority: int
    available: bool
    reasons: tuple[str, ...] = ()
    details: tuple[str, ...] = ()


@runtime_checkable
class TokenStream(Protocol):
    """An iterator of `Token`s from one generation.

    Errors raise from the iterator as `InferenceError`s. Leaving the loop early,
    `cancel()` or `close()` stop the generation and free its server slot; a
    cancelled stream just ends, and `err()` returns a `Cancelled`. `cancel()`
    may be called from any thread; iterate from one thread at a time.
    """

    def __iter__(self) -> Iterator[Token]: ...

    def __next__(self) -> Token: ...

    def err(self) -> BaseException | None:
        """The error that ended this stream; None while running or after a clean end."""
        ...

    @property
    def metrics(self) -> GenerateMetrics | None:
        """The backend's timings, once the stream has ended (None before, or if unknown)."""
        ...

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tools the model called, once a `chat(tools=...)` stream has ended (else empty)."""
        ...

    @property
    def finish_reason(self) -> FinishReason | None:
        """Why the stream ended: "stop" (an end-of-generation token, a stop token or a stop
        string), "length" (max_tokens, or the context is full), "tool_calls" (a
        `chat(tools=...)` answer that called tools) or "cancelled" (a cancel, a break or
        `close()` before the end); None while it runs and after an error."""
        ...

    def text(self) -> str:
        """Run the stream to its end and return the answer: the text of all its "content"
        tokens (tokens already read included), the thinking left out."""
        ...

    def reasoning_text(self) -> str:
        """Run the stream to its end and return the thinking: the text of its "reasoning"
        tokens without the tags that open and close it ("" for a model that did not
        think)."""
        ...

    def cancel(self) -> None:
        """Stop the generation from any thread; the iterator then ends without error."""
        ...

    def close(self) -> None:
        """Release the stream; idempotent. Cancels it if it is still running."""
        ...


@runtime_checkable
class AsyncTokenStream(Protocol):
    """A `TokenStream` for asyncio: `async for token in stream`, never blocking the loop.

    Cancelling the task that iterates stops the generation and frees its slot; the
    task sees `CancelledError`. It is an async context manager (`aclose()` on exit).
    """

    def __aiter__(self) -> AsyncIterator[Token]: ...

    async def __anext__(self) -> Token: ...

    async def text(self) -> str:
        """Run the stream to its end and return the answer (as `TokenStream.text`)."""
        ...

    async def reasoning_text(self) -> str:
        """Run the stream to its end and return the thinking (as
        `TokenStream.reasoning_text`)."""
        ...

    def err(self) -> BaseException | None: ...

    @property
    def metrics(self) -> GenerateMetrics | None: ...

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]: ...

    @property
    def finish_reason(self) -> FinishReason | None:
        """As `TokenStream.finish_reason`, once the iteration has ended or been cancelled."""
        ...

    def cancel(self) -> None:
        """Stop the generation, from any thread; the iteration then ends without error."""
        ...

    async def aclose(self) -> None:
        """Stop the stream if it runs; returns once it has ended. Idempotent."""
        ...

    async def __aenter__(self) -> AsyncTokenStream: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


@runtime_checkable
class TextModel(Protocol):
    """A loaded model. Safe to use from several threads at once.

    Options are keyword arguments (`max_tokens=8`) or a `GenerateConfig`; an
    unknown option is a `TypeError`. `cancel` is any object with `is_set()`;
    `timeout` is in seconds and raises `GenerationTimeout` from the stream. A
    closed model raises `ModelClosed` from every method but `close()`.
    """

    model_type: str
    info: ModelInfo

    @property
    def context_len(self) -> int:
        """The context length the model really runs with (tokens per sequence)."""
        ...

    def generate(
        self,
        prompt: str,
        config: GenerateConfig | None = None,
        *,
        cancel: CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> TokenStream:
        """Stream the continuation of `prompt`."""
        ...

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
    ) -> TokenStream:
        """Stream the assistant's answer, rendered with the model's own chat template.

        `tools` are OpenAI function tools; `tool_choice` is "auto", "required", "none",
        or a tool's name (or `{"type": "function", "function": {"name": ...}}`) to force a
        call of that tool; `parallel_tool_calls` lets one answer make several calls. The
        calls the model makes are in `stream.tool_calls` once it ends.
        """
        ...

    def agenerate(
        self,
        prompt: str,
        config: GenerateConfig | None = None,
        *,
        cancel: CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> AsyncTokenStream:
        """`generate`, as an `AsyncTokenStream`."""
        ...

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
    ) -> AsyncTokenStream:
        """`chat`, as an `AsyncTokenStream`."""
        ...

    async def abatch_generate(
        self,
        prompts: Sequence[str | Sequence[MessageLike]],
        config: GenerateConfig | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> list[BatchResult]:
        """`batch_generate` for asyncio: the prompts as streams side by side."""
        ...

    def batch_generate(
        self,
        prompts: Sequence[str | Sequence[MessageLike]],
        config: GenerateConfig | None = None,
        *,
        cancel: CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> list[BatchResult]:
        """Generate for every prompt, side by side where the backend can: a text is
        continued as `generate` continues it, a list of messages answered as `chat`
        answers it (images and all).

        One result per prompt, in order; a failed prompt carries its error.
        """
        ...

    def classify(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> list[Token]:
        """The single most likely next token of each prompt (prefill only)."""
        ...

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        """One vector per text, in order, of `info.embedding_length` numbers (unit length
        when `normalize`); `UnsupportedOption` from a model that computes none."""
        ...

    async def aembed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        """`embed` for asyncio."""
        ...

    def tokenize(self, text: str, *, special: bool = False) -> list[Token]:
        """The tokens of `text` (ids and text), nothing added; `special` reads the markup
        of special tokens as those tokens. `UnsupportedOption` where the backend cannot."""
        ...

    def detokenize(self, ids: Iterable[int]) -> str:
        """The text of token ids; `InvalidValue` for an id outside the vocabulary."""
        ...

    def count_tokens(
        self,
        prompt_or_messages: str | Sequence[MessageLike],
        config: GenerateConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] = "auto",
        **options: Any,
    ) -> int:
        """The prompt tokens `generate(prompt)` or `chat(messages, tools=...)` would send
        with these options (as their `metrics.prompt_tokens` reports)."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What the model does: its tool format, reasoning, modalities, embeddings, context
        and slots."""
        ...

    def err(self) -> BaseException | None:
        """The error that ended the calling thread's last generation (None if it ended cleanly)."""
        ...

    def metrics(self) -> GenerateMetrics | None:
        """The timings of the calling thread's last finished generation."""
        ...

    def close(self) -> None:
        """Stop open streams and free the backend's resources; idempotent."""
        ...

    def __enter__(self) -> TextModel: ...

    def __exit__(self, *exc_info: object) -> None: ...


@runtime_checkable
class SavesSessions(Protocol):
    """A model that keeps conversations for later: its backend's cache of them, written
    to disk and read back, so that a restored conversation skips its prefill. Optional:
    `isinstance(model, SavesSessions)` says whether a model has the methods; a model
    whose server cannot save (one at a URL) raises `UnsupportedOption` when called."""

    def save_session(
        self, name: str, conversation: str | Sequence[MessageLike] | None = None
    ) -> Session:
        """Save a conversation (by default the last generation's) as session `name`."""
        ...

    def restore_session(self, name: str) -> Session:
        """Read session `name` back; send its conversation again to go on from it."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Something that can load models. `status()` is cheap and never raises.

    A backend that loads URLs rather than files says which with an optional
    class attribute, `schemes = ("http", "https")`: `backend="auto"` gives it
    only locations of those schemes, and never gives one to a file backend.
    """

    name: str
    priority: int

    def available(self) -> bool: ...

    def status(self) -> BackendStatus: ...

    def load_model(self, path: str, config: LoadConfig) -> TextModel:
        """Load the model at `path`; raises `ModelLoadError` (or a subclass) on failure."""
        ...
