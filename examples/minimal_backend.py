"""A complete third-party backend in one file: its model shouts the prompt back, word by word.

Install it as its own distribution with an entry point (see docs/guides/plugins.md), or
call `inference_core.register(ShoutBackend())` in-process.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence

import inference_core as ic
from inference_core.content import content_text
from inference_core.streams import GenerationScope, StreamingModel, TokenSource

VOCAB_SIZE = 50_000


class ShoutModel(StreamingModel):
    """Upper-cases the prompt (the last message for chat) word by word, over and over until
    `max_tokens`. Only `_tokens` and `close` are its own: `StreamingModel` writes generate,
    chat, batch_generate, classify, err, metrics and the context manager around them.

    `delay` seconds pass before each token, where a real engine would compute it: the
    wait ends early on cancel, abort or the deadline, as a real backend's blocking read
    must. A long delay is the waiting state the conformance kit cancels.
    """

    model_type = "shout"

    def __init__(self, path: str, config: ic.LoadConfig, delay: float = 0.0) -> None:
        super().__init__()
        self.info = ic.ModelInfo(
            "shout", "shout", 4096, 1, VOCAB_SIZE, 1, "F32", 32.0, "0", path, 0
        )
        self.delay = delay
        self._closed = False

    @property
    def context_len(self) -> int:
        return self.info.context_length

    def _check_usable(self) -> None:
        if self._closed:
            raise ic.ModelClosed("the shout model is closed")

    def _tokens(
        self, prompt: str | Sequence[ic.Message], config: ic.GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        # chat: the last message's text (an image part is refused before it gets here)
        text = prompt if isinstance(prompt, str) else content_text(prompt[-1].content)
        words = text.split()
        woken = threading.Event()  # abort() sets it, from the thread that cancels
        started = time.perf_counter()
        produced = 0

        def shout() -> Iterator[ic.Token]:
            nonlocal produced
            for index in range(config.max_tokens if words else 0):
                scope.wait(self.delay, woken)  # a real backend blocks on its engine here
                scope.check()  # raises Cancelled / GenerationTimeout when the caller says stop
                piece = (" " if index else "") + words[index % len(words)].upper()
                token = ic.Token(zlib.crc32(piece.encode()) % VOCAB_SIZE, piece)
                if token.id in config.stop_tokens:
                    return
                produced += 1
                yield token

        def metrics() -> ic.GenerateMetrics:
            seconds = time.perf_counter() - started
            return ic.GenerateMetrics(len(words), produced, 0.0, seconds, seconds, 0.0, 0.0)

        return TokenSource(shout(), abort=woken.set, metrics=metrics)

    def close(self) -> None:
        self._closed = True


class ShoutBackend:
    name = "shout"
    priority = 1  # below every real backend: "auto" picks it only when nothing else runs

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay  # seconds before each token (tests use it to cancel a waiting model)

    def available(self) -> bool:
        return True

    def status(self) -> ic.BackendStatus:  # cheap, and never raises
        return ic.BackendStatus(self.name, self.priority, True, details=("needs nothing",))

    def load_model(self, path: str, config: ic.LoadConfig) -> ShoutModel:
        return ShoutModel(path, config, self.delay)


@ic.hookimpl
def register_backends(register: Callable[[ic.Backend], None]) -> None:
    register(ShoutBackend())
