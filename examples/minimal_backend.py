"""A complete third-party backend in one file: its model upper-cases the prompt, word by word.

Install it as its own distribution with an entry point (see the README), or
call `inference_core.register(ShoutBackend())` in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import inference_core as ic
from inference_core.streams import GenerationScope, IteratorTokenStream, LastOutcome, run_batch
from inference_core.types import build_config, to_message


class ShoutModel:
    model_type = "shout"

    def __init__(self, path: str, config: ic.LoadConfig) -> None:
        self.info = ic.ModelInfo("shout", "shout", 4096, 1, 1000, 1, "F32", 32.0, "0", path, 0)
        self._outcome = LastOutcome()  # makes err() and metrics() per thread
        self._closed = False

    @property
    def context_len(self) -> int:
        return self.info.context_length

    def _tokens(
        self, words: list[str], config: ic.GenerateConfig, scope: GenerationScope
    ) -> Iterator[ic.Token]:
        for index, word in enumerate(words[: config.max_tokens]):
            scope.check()  # raises Cancelled / GenerationTimeout when the caller says stop
            token = ic.Token(sum(map(ord, word)) % 1000, (" " if index else "") + word.upper())
            if token.id in config.stop_tokens:
                return
            yield token

    def generate(
        self,
        prompt: str,
        config: ic.GenerateConfig | None = None,
        *,
        cancel: ic.CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> IteratorTokenStream:
        if self._closed:
            raise ic.ModelClosed("the shout model is closed")
        generate_config = build_config(ic.GenerateConfig, config, options)  # TypeError on typos
        scope = GenerationScope(cancel, timeout)
        started = time.perf_counter()
        words = prompt.split()

        def metrics() -> ic.GenerateMetrics:
            seconds = time.perf_counter() - started
            return ic.GenerateMetrics(len(words), len(words), 0.0, seconds, seconds, 0.0, 0.0)

        return IteratorTokenStream(
            self._tokens(words, generate_config, scope),
            scope,
            metrics=metrics,
            outcome=self._outcome,
        )

    def chat(
        self,
        messages: Sequence[ic.types.MessageLike],
        config: ic.GenerateConfig | None = None,
        *,
        cancel: ic.CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> IteratorTokenStream:
        last = [to_message(m) for m in messages][-1]  # ValueError on an unknown role
        return self.generate(last.content, config, cancel=cancel, timeout=timeout, **options)

    def batch_generate(
        self,
        prompts: Sequence[str],
        config: ic.GenerateConfig | None = None,
        *,
        cancel: ic.CancelSignal | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> list[ic.BatchResult]:
        generate_config = build_config(ic.GenerateConfig, config, options)

        def start(prompt: str) -> ic.TokenStream:
            return self.generate(prompt, generate_config, cancel=cancel, timeout=timeout)

        return run_batch(start, prompts, workers=4)

    def classify(
        self,
        prompts: Sequence[str],
        config: ic.GenerateConfig | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> list[ic.Token]:
        return [
            next(self.generate(p, config, timeout=timeout, max_tokens=1, **options))
            for p in prompts
        ]

    def err(self) -> BaseException | None:
        return self._outcome.error()

    def metrics(self) -> ic.GenerateMetrics | None:
        return self._outcome.metrics()

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> ShoutModel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
