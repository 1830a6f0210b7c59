"""Backends broken on purpose, each in one way, with the conformance kit run against them.

Not a test module: `tests/test_kit_catches.py` runs the kit against each in a
pytest of its own and checks that it fails each where it is broken. Each broken
model is FakeBackend's model seen through one flaw.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import attrs
import pytest

from inference_core import Cancelled, LoadConfig
from inference_core.protocols import Backend, CancelSignal, TextModel
from inference_core.streams import (
    GenerationScope,
    IteratorTokenStream,
    StreamingModel,
    TokenSource,
    checked_texts,
)
from inference_core.testing import BackendContract, FakeBackend, FakeModel, TextModelContract
from inference_core.tools import ToolPlan, ToolRequest
from inference_core.types import Capabilities, GenerateConfig, Message, Token

__all__ = ["MODELS", "TestBoolPriority", "model_contract"]

TOKEN_DELAY = 0.001  # seconds: a reader waits for each token, as with a real model
WAITING = 3600.0  # seconds before each token of the waiting model


class FaithfulModel(StreamingModel):
    """FakeModel's generations, unchanged: the control that passes the whole kit.
    Each subclass breaks one promise in `_tokens` or `_open`."""

    model_type = "broken"

    def __init__(self, token_delay: float) -> None:
        super().__init__()
        self.inner = FakeModel("fake.gguf", LoadConfig(), token_delay=token_delay, thinking=True)
        self.info = self.inner.info
        self.supported_options = self.inner.supported_options

    @property
    def capabilities(self) -> Capabilities:
        inner = self.inner.capabilities
        return attrs.evolve(
            super().capabilities, reasoning=inner.reasoning, reasoning_tags=inner.reasoning_tags
        )

    @property
    def context_len(self) -> int:
        return self.inner.context_len

    def _check_usable(self) -> None:
        self.inner._check_usable()

    def _open(
        self,
        prompt: str | Sequence[Message],
        config: GenerateConfig,
        cancel: CancelSignal | None,
        timeout: float | None,
        plan: ToolPlan | None = None,
    ) -> IteratorTokenStream:
        config, timeout = self._opening(config, timeout)
        return super()._open(prompt, config, cancel, timeout, plan)

    def _opening(
        self, config: GenerateConfig, timeout: float | None
    ) -> tuple[GenerateConfig, float | None]:
        """What the core is given to open a stream with; a flaw may change it."""
        return config, timeout

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        return self.inner._tokens(prompt, config, scope)

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        return self.inner.embed(texts, normalize=normalize)

    def _tokenize(self, text: str, special: bool) -> list[Token]:
        return self.inner._tokenize(text, special)

    def _detokenize(self, ids: list[int]) -> str:
        return self.inner._detokenize(ids)

    def _count_tokens(self, prompt: str | Sequence[Message], config: GenerateConfig) -> int:
        return self.inner._count_tokens(prompt, config)

    def close(self) -> None:
        self.inner.close()


class DeafToCancel(FaithfulModel):
    """Its abort does nothing and its wait for a token heeds neither the cancel signal
    nor the deadline: only the stream looks at them, between tokens."""

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        source = self.inner._tokens(prompt, config, GenerationScope())
        return TokenSource(source.tokens, metrics=source.metrics)


class DeadlineAtStartOnly(FaithfulModel):
    """Looks at its deadline once, before the first token, and never after."""

    def __init__(self, token_delay: float) -> None:
        super().__init__(token_delay)
        self._at_start = threading.local()

    def _opening(
        self, config: GenerateConfig, timeout: float | None
    ) -> tuple[GenerateConfig, float | None]:
        self._at_start.timeout = timeout  # for _tokens, called next on this thread
        return config, None

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        at_start = GenerationScope(timeout=self._at_start.timeout)
        source = self.inner._tokens(prompt, config, scope)

        def checked_once() -> Iterator[Token]:
            at_start.check()
            yield from source.tokens

        return attrs.evolve(source, tokens=checked_once())


class ConstantIds(FaithfulModel):
    """Every token has the id 7, whatever its text."""

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        source = self.inner._tokens(prompt, config, scope)
        return attrs.evolve(source, tokens=(attrs.evolve(t, id=7) for t in source.tokens))


class FixedSeed(FaithfulModel):
    """Samples with the seed 0, whatever seed it is given."""

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        return self.inner._tokens(prompt, attrs.evolve(config, seed=0), scope)


class ChatIgnoresMessages(FaithfulModel):
    """Answers every chat as if it said hello."""

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        if not isinstance(prompt, str):
            prompt = [Message("user", "Hello there")]
        return self.inner._tokens(prompt, config, scope)


class RefusesEveryOption(FaithfulModel):
    """Refuses every option beyond sampling, and embeddings, as it must: by name."""

    embed = StreamingModel.embed  # refused, as a backend that computes none does

    def __init__(self, token_delay: float) -> None:
        super().__init__(token_delay)
        self.supported_options = frozenset()


class EmbedsNothing(FaithfulModel):
    """Declares embeddings, and refuses to compute them."""

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        return StreamingModel.embed(self, texts, normalize=normalize)


class CountsOneMore(FaithfulModel):
    """Counts one token more than a generation reads (a BOS it does not add, say)."""

    def _count_tokens(self, prompt: str | Sequence[Message], config: GenerateConfig) -> int:
        return super()._count_tokens(prompt, config) + 1


class DetokenizesShort(FaithfulModel):
    """Leaves the last id out of a text it detokenizes."""

    def _detokenize(self, ids: list[int]) -> str:
        return super()._detokenize(ids[:-1])


class RefusesUntyped(FaithfulModel):
    """Says it honours every option, then refuses them with a plain NotImplementedError."""

    def __init__(self, token_delay: float) -> None:
        super().__init__(token_delay)
        self.supported_options = frozenset({"json_schema", "grammar", "logprobs"})

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        if config.json_schema is not None or config.grammar is not None or config.logprobs:
            raise NotImplementedError("options are not supported")
        return super()._tokens(prompt, config, scope)

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        checked_texts(texts)
        raise NotImplementedError("embeddings are not supported")


class IgnoresStopStrings(FaithfulModel):
    """Never hears of stop strings: the answer runs on through them."""

    def _opening(
        self, config: GenerateConfig, timeout: float | None
    ) -> tuple[GenerateConfig, float | None]:
        return attrs.evolve(config, stop=()), timeout


class RetextsAtStopStrings(FaithfulModel):
    """Matches stop strings itself, on the whole answer, and cuts the text exactly where
    one begins: the token it begins inside is delivered with the part before it."""

    def __init__(self, token_delay: float) -> None:
        super().__init__(token_delay)
        self._stops = threading.local()

    def _opening(
        self, config: GenerateConfig, timeout: float | None
    ) -> tuple[GenerateConfig, float | None]:
        self._stops.value = config.stop  # for _tokens, called next on this thread
        return attrs.evolve(config, stop=()), timeout

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        stops: tuple[str, ...] = self._stops.value
        source = self.inner._tokens(prompt, config, scope)
        cut: list[bool] = []

        def retexted() -> Iterator[Token]:
            tokens = list(source.tokens)
            text = "".join(token.text for token in tokens)
            end = min((text.find(stop) for stop in stops if stop in text), default=len(text))
            offset = 0
            for token in tokens:
                if offset + len(token.text) > end:
                    cut.append(True)
                    if offset < end:
                        yield attrs.evolve(token, text=text[offset:end])
                    return
                offset += len(token.text)
                yield token

        return attrs.evolve(
            source,
            tokens=retexted(),
            finish_reason=lambda: "stop" if cut else source.finish_reason(),
        )


class StopAtMaxTokens(FaithfulModel):
    """Says "stop" however its generation ended, at max_tokens too."""

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        return attrs.evolve(self.inner._tokens(prompt, config, scope), finish_reason=lambda: "stop")


class EndsOnCancel(FaithfulModel):
    """Takes a cancel that reaches it while it waits for a token for the end of its
    answer: it returns instead of raising `Cancelled`."""

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        source = self.inner._tokens(prompt, config, scope)

        def ended() -> Iterator[Token]:
            try:
                yield from source.tokens
            except Cancelled:
                return

        return attrs.evolve(source, tokens=ended())


class LeaksThinking(FaithfulModel):
    """Declares reasoning, and delivers its thinking as part of the answer."""

    def _tokens(
        self, prompt: str | Sequence[Message], config: GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        source = self.inner._tokens(prompt, config, scope)
        return attrs.evolve(
            source, tokens=(attrs.evolve(token, channel="content") for token in source.tokens)
        )


class IgnoresNamedTool(FaithfulModel):
    """Takes a tool named in tool_choice for "required": calls whichever tool it likes."""

    def _tool_plan(self, request: ToolRequest) -> ToolPlan | None:
        return super()._tool_plan(attrs.evolve(request, forced=None))


class CallsWithoutArguments(FaithfulModel):
    """Holds a call's arguments to any object, whatever its tool's parameters say."""

    def _tool_plan(self, request: ToolRequest) -> ToolPlan | None:
        loose = [dict(function, parameters={"type": "object"}) for function in request.functions]
        return super()._tool_plan(attrs.evolve(request, functions=tuple(loose)))


class DropsImages(FaithfulModel):
    """Sees no images, and takes a chat with one anyway, dropping the image."""

    def _refuse_images(self) -> None:
        pass


class ClaimsVision(FaithfulModel):
    """Declares vision, and reads none of an image."""

    @property
    def capabilities(self) -> Capabilities:
        return attrs.evolve(super().capabilities, vision=True)

    def _refuse_images(self) -> None:
        pass


class _Contract(TextModelContract):
    """The kit against one broken model, which `broken` names."""

    broken: type[FaithfulModel] = FaithfulModel

    @pytest.fixture
    def model(self) -> Iterator[TextModel]:
        with self.broken(TOKEN_DELAY) as model:
            yield model

    @pytest.fixture
    def waiting_model(self) -> TextModel:
        return self.broken(WAITING)  # left open: a broken one may still wait in it


MODELS: dict[str, type[FaithfulModel]] = {
    model.__name__: model
    for model in (
        FaithfulModel,
        DeafToCancel,
        DeadlineAtStartOnly,
        ConstantIds,
        FixedSeed,
        ChatIgnoresMessages,
        RefusesEveryOption,
        RefusesUntyped,
        EmbedsNothing,
        CountsOneMore,
        DetokenizesShort,
        IgnoresStopStrings,
        RetextsAtStopStrings,
        StopAtMaxTokens,
        EndsOnCancel,
        LeaksThinking,
        DropsImages,
        ClaimsVision,
        IgnoresNamedTool,
        CallsWithoutArguments,
    )
}


def model_contract(name: str) -> type[TextModelContract]:
    """The kit's `TextModelContract` against `MODELS[name]`, for a test module to bind
    to a name starting with "Test"."""
    return type(f"Test{name}", (_Contract,), {"broken": MODELS[name]})


class TestBoolPriority(BackendContract):
    """A priority of True: a bool, which Python counts as an int."""

    @pytest.fixture
    def backend(self) -> Backend:
        return FakeBackend(priority=True)

    @pytest.fixture
    def model_path(self) -> str:
        return "fake.gguf"
