"""FakeBackend: a deterministic, dependency-free backend for integrators' tests.

Its model echoes: it generates the words of the prompt (of the last user
message for `chat`) in order, cycling, one token per word, until `max_tokens`
or a stop token. With a temperature above 0 it draws words from the prompt
at random, reproducibly for a given `seed`. Token ids are stable (a CRC of
the word), so the same text always has the same ids.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, final

from ..errors import ModelClosed
from ..protocols import BackendStatus
from ..streams import GenerationScope, StreamingModel, TokenSource
from ..types import (
    GenerateConfig,
    GenerateMetrics,
    LoadConfig,
    Message,
    ModelInfo,
    Token,
    build_config,
)

__all__ = ["FakeBackend", "FakeModel", "fake_token"]

VOCAB_SIZE = 32_000


def fake_token(word: str) -> Token:
    """The token FakeModel emits for `word`: same word, same id."""
    return Token(id=zlib.crc32(word.encode()) % VOCAB_SIZE, text=word)


@final
class FakeBackend:
    """A backend whose models need no file and no hardware."""

    def __init__(
        self,
        name: str = "fake",
        priority: int = 0,
        *,
        available: bool = True,
        reasons: Sequence[str] = (),
        token_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.priority = priority
        self._available = available
        self._reasons = tuple(reasons) or (() if available else ("FakeBackend(available=False)",))
        self.token_delay = token_delay
        self.loaded: list[FakeModel] = []

    def available(self) -> bool:
        return self._available

    def status(self) -> BackendStatus:
        return BackendStatus(
            name=self.name,
            priority=self.priority,
            available=self._available,
            reasons=() if self._available else self._reasons,
            details=(f"token_delay={self.token_delay:g}s",),
        )

    def load_model(self, path: str, config: LoadConfig) -> FakeModel:
        model = FakeModel(path, config, token_delay=self.token_delay)
        self.loaded.append(model)
        return model


@final
class FakeModel(StreamingModel):
    """The echoing model of `FakeBackend`; safe from any number of threads."""

    model_type = "fake"
    batch_workers = 8

    def __init__(self, path: str, config: LoadConfig, *, token_delay: float = 0.0) -> None:
        super().__init__()
        self.path = path
        self.config = config
        self.token_delay = token_delay
        self.info = ModelInfo(
            architecture="fake",
            name="fake echo model",
            context_length=config.context_len or 4096,
            block_count=1,
            vocab_size=VOCAB_SIZE,
            embedding_length=1,
            file_type="F32",
            quant_bits=32.0,
            size_label="0",
            path=path,
            file_size=0,
        )
        self._closed = threading.Event()

    @property
    def context_len(self) -> int:
        return self.info.context_length

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _check_usable(self) -> None:
        if self._closed.is_set():
            raise ModelClosed(f"the model {self.path} is closed; load it again to use it")

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        if isinstance(prompt, str):
            words = prompt.split()
        else:  # chat: the last user message
            words = next((m.content for m in reversed(prompt) if m.role == "user"), "").split()
        wake = threading.Event()
        started = time.perf_counter()
        produced: list[int] = []

        def counted() -> Iterator[Token]:
            for token in self._echo(words or ["<empty>"], config, scope, wake):
                produced.append(token.id)
                yield token

        def metrics() -> GenerateMetrics:
            total = time.perf_counter() - started
            count = len(produced)
            return GenerateMetrics(
                prompt_tokens=len(words),
                generated_tokens=count,
                prefill_seconds=0.0,
                decode_seconds=total,
                total_seconds=total,
                prefill_tokens_per_second=0.0,
                decode_tokens_per_second=count / total if total > 0 else 0.0,
            )

        return TokenSource(counted(), abort=wake.set, metrics=metrics)

    def _echo(
        self,
        words: list[str],
        config: GenerateConfig,
        scope: GenerationScope,
        wake: threading.Event,
    ) -> Iterator[Token]:
        rng = random.Random(config.seed) if config.temperature > 0 else None
        for position in range(config.max_tokens):
            if self.token_delay:
                remaining = scope.remaining()
                wake.wait(
                    self.token_delay if remaining is None else min(self.token_delay, remaining)
                )
            scope.check()
            if self._closed.is_set():
                raise ModelClosed(f"the model {self.path} was closed during the generation")
            word = rng.choice(words) if rng else words[position % len(words)]
            token = fake_token(word if position == 0 else " " + word)
            if token.id in config.stop_tokens:
                return
            yield token

    def classify(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> list[Token]:
        """The first word of each prompt, at once (no token delay)."""
        self._check_usable()
        build_config(GenerateConfig, config, options)
        return [fake_token((prompt.split() or ["<empty>"])[0]) for prompt in prompts]

    def close(self) -> None:
        self._closed.set()
