"""The asyncio API: loads and streams that never block the event loop.

A `ThreadTokenStream` (the `AsyncTokenStream` that `agenerate` returns) runs its
backend's sync stream on a thread of its own, which hands tokens to the loop; the
loop's thread never reads a socket or waits for a process. A thread per stream rather
than a non-blocking socket on the loop because it serves every backend unchanged,
third parties' included, and it measured as cheap as the sync API (`python -m
benchmarks`, section "async"). The thread wakes the loop once per batch of tokens it
queued, not once per token.

Cancelling the task that iterates (`task.cancel()`, `asyncio.timeout()`) cancels the
stream: the backend aborts its request at once (llama-server frees the slot), the
model keeps serving and the task sees `CancelledError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, final

from .errors import UnsupportedOption
from .protocols import TextModel, TokenStream
from .types import (
    BatchResult,
    FinishReason,
    GenerateConfig,
    GenerateMetrics,
    MessageLike,
    Token,
    ToolCall,
)

__all__ = ["AsyncBridge", "ThreadTokenStream", "abatch_generate", "achat", "agenerate"]


class _Generates(Protocol):
    def generate(
        self, prompt: str, config: GenerateConfig | None = None, **options: Any
    ) -> TokenStream: ...

    def chat(
        self,
        messages: Sequence[MessageLike],
        config: GenerateConfig | None = None,
        **options: Any,
    ) -> TokenStream: ...


@final
class _End:
    """The last item a pump queues: how the sync stream ended."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


@final
class _Handoff:
    """Tokens passed from a stream's reading thread to the loop: the thread queues
    them and wakes the loop once per batch, not once per token."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[Token | _End] = deque()
        self.lock = threading.Lock()
        self.wake_pending = False
        self.waiter: asyncio.Future[None] | None = None

    def put(self, item: Token | _End) -> None:
        with self.lock:
            self.items.append(item)
            wake, self.wake_pending = not self.wake_pending, True
        if wake:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self.lock:
            self.wake_pending = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> Token | _End | None:
        with self.lock:
            return self.items.popleft() if self.items else None


def _pump(stream: TokenStream, handoff: _Handoff) -> None:
    """The reading thread. It holds the sync stream and the handoff, never the async
    stream, so an async stream dropped mid-way is collected and cancels the rest."""
    try:
        for token in stream:
            handoff.put(token)
        end = _End(None)
    except BaseException as error:  # delivered to the task that iterates
        end = _End(error)
    handoff.put(end)


@final
class ThreadTokenStream:
    """`async for token in stream`, over a sync `TokenStream` read on a thread of its own.

    Same tokens, errors, `err()`, `metrics`, `tool_calls` and `finish_reason` as the sync
    stream (the reason once this iteration has ended or been cancelled: the thread reads
    ahead, so the sync stream may end before its last tokens reach the loop);
    `cancel()` is safe from any thread, `await aclose()` returns once the stream has
    ended, and the stream is an async context manager. Left mid-way (a `break`, with no
    `aclose()`), it cancels the generation once it is garbage: the slot is freed.
    """

    def __init__(self, stream: TokenStream) -> None:
        self._stream = stream
        self._handoff: _Handoff | None = None
        self._pieces: list[str] = []
        self._ended = False
        self._cancelled = False

    def __aiter__(self) -> ThreadTokenStream:
        return self

    async def __anext__(self) -> Token:
        if self._ended:
            raise StopAsyncIteration
        handoff = self._handoff
        if handoff is None:
            handoff = self._handoff = _Handoff(asyncio.get_running_loop())
            threading.Thread(
                target=_pump,
                args=(self._stream, handoff),
                name="inference-async-stream",
                daemon=True,
            ).start()
        while (item := handoff.take()) is None:
            handoff.waiter = handoff.loop.create_future()
            try:
                await handoff.waiter
            except asyncio.CancelledError:
                self.cancel()  # the backend aborts its request; the pump ends
                raise
            finally:
                handoff.waiter = None
        if isinstance(item, _End):
            self._ended = True
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        if item.channel == "content":
            self._pieces.append(item.text)
        return item

    def __del__(self) -> None:
        if getattr(self, "_handoff", None) is not None and not self._ended:
            self._stream.cancel()

    async def text(self) -> str:
        """Run the stream to its end; the answer's text, tokens already read included."""
        async for _ in self:
            pass
        return "".join(self._pieces)

    async def reasoning_text(self) -> str:
        """Run the stream to its end; the thinking. Once this iteration has ended, the
        sync stream has delivered the very tokens it did: it says what they thought."""
        async for _ in self:
            pass
        return self._stream.reasoning_text()

    def cancel(self) -> None:
        """Stop the generation, from any thread; the iteration then ends without error."""
        self._cancelled = True
        self._stream.cancel()

    async def aclose(self) -> None:
        """Stop the stream if it runs, and return once it has ended. Idempotent."""
        if self._handoff is None:
            self._stream.close()  # never started: nothing runs, closing cannot block
            self._ended = True
            return
        self.cancel()
        while not self._ended:
            try:
                await self.__anext__()
            except StopAsyncIteration:
                break
            except Exception:  # the stream's own error stays in err()
                break

    def err(self) -> BaseException | None:
        return self._stream.err()

    @property
    def metrics(self) -> GenerateMetrics | None:
        return self._stream.metrics

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self._stream.tool_calls

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._stream.finish_reason if self._ended or self._cancelled else None

    async def __aenter__(self) -> ThreadTokenStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def agenerate(
    model: _Generates, prompt: str, config: GenerateConfig | None = None, **options: Any
) -> ThreadTokenStream:
    """`model.generate`, as an async stream (options and their errors at once, as there)."""
    return ThreadTokenStream(model.generate(prompt, config, **options))


def achat(
    model: TextModel,
    messages: Sequence[MessageLike],
    config: GenerateConfig | None = None,
    **options: Any,
) -> ThreadTokenStream:
    """`model.chat`, as an async stream."""
    return ThreadTokenStream(model.chat(messages, config, **options))


async def abatch_generate(
    model: _Generates,
    prompts: Sequence[str | Sequence[MessageLike]],
    config: GenerateConfig | None = None,
    **options: Any,
) -> list[BatchResult]:
    """Every prompt (a text to continue, or a chat's messages) as a stream of its own, side
    by side; one result per prompt, in order, each with its tokens or its own error."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list; wrap a single prompt in a list")

    async def one(prompt: str | Sequence[MessageLike]) -> BatchResult:
        stream = (
            agenerate(model, prompt, config, **options)
            if isinstance(prompt, str)
            else ThreadTokenStream(model.chat(prompt, config, **options))
        )
        tokens: list[Token] = []
        try:
            async for token in stream:
                tokens.append(token)
        except Exception as error:  # this prompt's failure, not the batch's
            return BatchResult(prompt, tuple(tokens), error, stream.metrics)
        return BatchResult(
            prompt, tuple(tokens), stream.err(), stream.metrics, stream.finish_reason
        )

    return list(await asyncio.gather(*(one(prompt) for prompt in prompts)))


@final
class AsyncBridge:
    """A model from a backend that implements only the sync protocol, given the async
    methods on top of its sync ones; every other attribute is the model's own."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"<AsyncBridge {self.model!r}>"

    def agenerate(
        self, prompt: str, config: GenerateConfig | None = None, **options: Any
    ) -> ThreadTokenStream:
        return agenerate(self.model, prompt, config, **options)

    def achat(
        self, messages: Sequence[MessageLike], config: GenerateConfig | None = None, **options: Any
    ) -> ThreadTokenStream:
        return achat(self.model, messages, config, **options)

    async def abatch_generate(
        self,
        prompts: Sequence[str | Sequence[MessageLike]],
        config: GenerateConfig | None = None,
        **options: Any,
    ) -> list[BatchResult]:
        return await abatch_generate(self.model, prompts, config, **options)

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        embed = getattr(self.model, "embed", None)
        if embed is None:
            raise UnsupportedOption("embed", f"{type(self.model).__name__} computes no embeddings")
        result: list[list[float]] = embed(texts, normalize=normalize)
        return result

    async def aembed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        return await asyncio.to_thread(self.embed, texts, normalize=normalize)

    def __enter__(self) -> AsyncBridge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.model.close()
