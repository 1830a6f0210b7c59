"""A complete third-party backend in one file: its model upper-cases the prompt, word by word.

Install it as its own distribution with an entry point (see the README), or
call `inference_core.register(ShoutBackend())` in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import inference_core as ic
from inference_core.streams import GenerationScope, StreamingModel, TokenSource


class ShoutModel(StreamingModel):
    """Only `_tokens` and `close` are its own: `StreamingModel` writes generate, chat,
    batch_generate, classify, err, metrics and the context manager around them."""

    model_type = "shout"

    def __init__(self, path: str, config: ic.LoadConfig) -> None:
        super().__init__()
        self.info = ic.ModelInfo("shout", "shout", 4096, 1, 1000, 1, "F32", 32.0, "0", path, 0)
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
        text = prompt if isinstance(prompt, str) else prompt[-1].content  # chat: the last message
        words = text.split()
        started = time.perf_counter()

        def shout() -> Iterator[ic.Token]:
            for index, word in enumerate(words[: config.max_tokens]):
                scope.check()  # raises Cancelled / GenerationTimeout when the caller says stop
                token = ic.Token(sum(map(ord, word)) % 1000, (" " if index else "") + word.upper())
                if token.id in config.stop_tokens:
                    return
                yield token

        def metrics() -> ic.GenerateMetrics:
            seconds = time.perf_counter() - started
            return ic.GenerateMetrics(len(words), len(words), 0.0, seconds, seconds, 0.0, 0.0)

        return TokenSource(shout(), metrics=metrics)

    def close(self) -> None:
        self._closed = True


class ShoutBackend:
    name = "shout"
    priority = 1  # below every real backend: "auto" picks it only when nothing else runs

    def available(self) -> bool:
        return True

    def status(self) -> ic.BackendStatus:  # cheap, and never raises
        return ic.BackendStatus(self.name, self.priority, True, details=("needs nothing",))

    def load_model(self, path: str, config: ic.LoadConfig) -> ShoutModel:
        return ShoutModel(path, config)


@ic.hookimpl
def register_backends(register: Callable[[ic.Backend], None]) -> None:
    register(ShoutBackend())
