"""FakeBackend: a deterministic, dependency-free backend for integrators' tests.

Its model echoes: it generates the words of the prompt (of the last user
message for `chat`) in order, cycling, one token per word, until `max_tokens`
or a stop token. With a temperature above 0 it draws words from the prompt
at random, reproducibly for a given `seed`. Token ids are stable (a CRC of
the word), so the same text always has the same ids.

It reports why it ended: "length" at `max_tokens`, "stop" at a stop token (stop
strings are the core's). With a `json_schema` it writes the smallest instance of the
schema instead (the first choice of every `anyOf`/`enum`, the minimum of every
number), so tool calls work too, and ends it with "stop" as a model's end of
generation would; `logprobs` give every token made-up but well-formed figures.
It refuses a `grammar` with `UnsupportedOption`, as a backend without one must.
A `token_delay` passes before each token, cut short by cancel, abort and the
deadline: a long one is the waiting model the conformance kit cancels.

With `thinking=True` (a model like today's reasoning models) a chat begins with its
thinking: the tokens "Thinking it over:" and the words of the last user message, then
the closing tag `THINK_END`, all of the "reasoning" channel; then the answer as
above. `reasoning_budget` N cuts the thinking to N tokens, the tag included;
`think=False` or a budget of 0 leaves it out. The chat's text then ends in an open
"<think>" (as a template's generation prompt would), and an earlier assistant
message's `reasoning` is written back as "<think>...</think>" before its content.

It reads a prompt as pieces (a word with the spaces before it, and any trailing
spaces), a chat as its messages written "role: content" a line each and an
"assistant:" line: `metrics.prompt_tokens` and `count_tokens` count those pieces,
and `tokenize` gives them, with the ids `fake_token` gives (there are no special
tokens). Its vocabulary is the pieces it has tokenized or generated:
`detokenize` refuses an id it has not seen.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import threading
import time
import zlib
from collections.abc import Generator, Iterator, Sequence
from typing import Any, final

import attrs

from ..content import content_text
from ..errors import InvalidValue, ModelClosed
from ..protocols import BackendStatus
from ..streams import GenerationScope, StreamingModel, TokenSource, checked_texts
from ..types import (
    Capabilities,
    FinishReason,
    GenerateConfig,
    GenerateMetrics,
    LoadConfig,
    Message,
    ModelInfo,
    Token,
    build_config,
)

__all__ = ["THINK_END", "FakeBackend", "FakeModel", "fake_token"]

VOCAB_SIZE = 32_000
EMBEDDING_LENGTH = 8
THINK_START, THINK_END = "<think>", "</think>"
_THOUGHT = ("Thinking", "it", "over:")


_PIECES = re.compile(r"\s*\S+|\s+")


def _pieces(text: str) -> list[str]:
    return _PIECES.findall(text)


def _written(prompt: str | Sequence[Message], thinks: bool = False) -> str:
    """The text the model reads: a prompt, or the messages a line each (earlier thinking
    included), ending in an open thinking block when the model is to think."""
    if isinstance(prompt, str):
        return prompt
    lines = "".join(
        f"{m.role}: {THINK_START}{m.reasoning}{THINK_END} {content_text(m.content)}\n"
        if m.reasoning is not None
        else f"{m.role}: {content_text(m.content)}\n"
        for m in prompt
    )
    return lines + ("assistant: " + THINK_START if thinks else "assistant:")


def fake_token(word: str) -> Token:
    """The token FakeModel emits for `word`: same word, same id."""
    return Token(id=zlib.crc32(word.encode()) % VOCAB_SIZE, text=word)


def smallest_instance(schema: Any) -> Any:
    """The smallest value the schema accepts, for the subset of JSON schema tools use."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for choice in ("anyOf", "oneOf"):
        if choice in schema:
            return smallest_instance(schema[choice][0])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = schema.get("required", list(properties))
        return {name: smallest_instance(properties.get(name, {})) for name in required}
    if kind == "array":
        return [
            smallest_instance(schema.get("items", {})) for _ in range(schema.get("minItems", 0))
        ]
    if kind == "string":
        return "x" * schema.get("minLength", 0)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None


def _thought(words: list[str], budget: int) -> list[Token]:
    """The thinking: what it thinks over, cut to `budget` tokens with the closing tag."""
    thinking = [*_THOUGHT, *words]
    kept = thinking if budget < 0 else thinking[: budget - 1]
    texts = [word if position == 0 else " " + word for position, word in enumerate(kept)]
    return [attrs.evolve(fake_token(text), channel="reasoning") for text in (*texts, THINK_END)]


def _with_figures(token: Token, candidates: list[Token], count: int) -> Token:
    """The token first at -0.25, then the other candidates, each 1 nat less likely."""
    ranked = [token, *(c for c in candidates if c.id != token.id)][:count]
    top = tuple(Token(c.id, c.text, logprob=-0.25 - n) for n, c in enumerate(ranked))
    return attrs.evolve(token, logprob=-0.25, top_logprobs=top)


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
        thinking: bool = False,
    ) -> None:
        self.name = name
        self.thinking = thinking
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
            details=(f"token_delay={self.token_delay:g}s", f"thinking={self.thinking}"),
        )

    def load_model(self, path: str, config: LoadConfig) -> FakeModel:
        model = FakeModel(path, config, token_delay=self.token_delay, thinking=self.thinking)
        self.loaded.append(model)
        return model


@final
class FakeModel(StreamingModel):
    """The echoing model of `FakeBackend`; safe from any number of threads."""

    model_type = "fake"
    batch_workers = 8
    supported_options = frozenset({"json_schema", "logprobs"})

    def __init__(
        self, path: str, config: LoadConfig, *, token_delay: float = 0.0, thinking: bool = False
    ) -> None:
        super().__init__()
        self.thinking = thinking
        self.path = path
        self.config = config
        self.token_delay = token_delay
        self.info = ModelInfo(
            architecture="fake",
            name="fake echo model",
            context_length=config.context_len or 4096,
            block_count=1,
            vocab_size=VOCAB_SIZE,
            embedding_length=EMBEDDING_LENGTH,
            file_type="F32",
            quant_bits=32.0,
            size_label="0",
            path=path,
            file_size=0,
        )
        self._closed = threading.Event()
        self._vocabulary: dict[int, str] = {}  # id -> piece, of every token made

    def _known(self, token: Token) -> Token:
        self._vocabulary.setdefault(token.id, token.text)
        return token

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
        thinks = self._thinks(prompt, config)
        read = len(_pieces(_written(prompt, thinks)))
        if isinstance(prompt, str):
            words = prompt.split()
        else:  # chat: the last user message
            user = next((m.content for m in reversed(prompt) if m.role == "user"), "")
            words = content_text(user).split()
        thought = _thought(words, config.reasoning_budget) if thinks else []
        if config.json_schema is not None:
            text = json.dumps(smallest_instance(config.json_schema))
            words = re.findall(r"\s*(?:\w+|[^\w\s])", text)
        wake = threading.Event()
        started = time.perf_counter()
        produced: list[int] = []
        ended: list[FinishReason] = []

        def echoed() -> Iterator[Token]:
            ended.append(
                (
                    yield from self._echo(
                        thought, words or ["<empty>"], config, scope, wake, produced
                    )
                )
            )

        def metrics() -> GenerateMetrics:
            total = time.perf_counter() - started
            count = len(produced)
            return GenerateMetrics(
                prompt_tokens=read,
                generated_tokens=count,
                prefill_seconds=0.0,
                decode_seconds=total,
                total_seconds=total,
                prefill_tokens_per_second=0.0,
                decode_tokens_per_second=count / total if total > 0 else 0.0,
            )

        return TokenSource(
            echoed(),
            abort=wake.set,
            metrics=metrics,
            finish_reason=lambda: ended[0] if ended else None,
            tags=(THINK_END,),
        )

    def _thinks(self, prompt: str | Sequence[Message], config: GenerateConfig) -> bool:
        """A chat thinks in thinking mode, unless told not to."""
        return (
            self.thinking
            and not isinstance(prompt, str)
            and config.think is not False
            and config.reasoning_budget != 0
        )

    def _echo(
        self,
        thought: list[Token],
        words: list[str],
        config: GenerateConfig,
        scope: GenerationScope,
        wake: threading.Event,
        produced: list[int],
    ) -> Generator[Token, None, FinishReason]:
        """The thinking's tokens, then the answer's, each id noted in `produced`; returns
        why they ended."""
        rng = random.Random(config.seed) if config.temperature > 0 else None
        schema = config.json_schema is not None
        candidates = [fake_token(word) for word in words[: config.logprobs]]
        count = min(len(words), config.max_tokens) if schema else config.max_tokens
        answer = (
            fake_token(rng.choice(words) if rng and not schema else words[position % len(words)])
            for position in range(count)
        )
        for position, token in enumerate(itertools.chain(thought, answer)):
            if position == config.max_tokens:
                return "length"
            if self.token_delay:
                scope.wait(self.token_delay, wake)
            scope.check()
            if self._closed.is_set():
                raise ModelClosed(f"the model {self.path} was closed during the generation")
            if position and not schema and token.channel == "content":
                token = fake_token(" " + token.text)
            if token.id in config.stop_tokens:
                return "stop"
            self._known(token)
            produced.append(token.id)
            yield _with_figures(token, candidates, config.logprobs) if config.logprobs else token
        return "stop" if schema and len(thought) + len(words) <= config.max_tokens else "length"

    def _tokenize(self, text: str, special: bool) -> list[Token]:
        return [self._known(fake_token(piece)) for piece in _pieces(text)]

    def _detokenize(self, ids: list[int]) -> str:
        unknown = next((token_id for token_id in ids if token_id not in self._vocabulary), None)
        if unknown is not None:
            raise InvalidValue(
                "ids", f"token id {unknown} is none the fake model has tokenized or generated"
            )
        return "".join(self._vocabulary[token_id] for token_id in ids)

    def _count_tokens(self, prompt: str | Sequence[Message], config: GenerateConfig) -> int:
        return len(_pieces(_written(prompt, self._thinks(prompt, config))))

    @property
    def capabilities(self) -> Capabilities:
        """As any StreamingModel's; reasoning in thinking mode."""
        return attrs.evolve(
            super().capabilities,
            reasoning=self.thinking,
            reasoning_tags=(THINK_START, THINK_END) if self.thinking else (),
        )

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> list[list[float]]:
        """A vector per text from its words' ids: the same words, the same vector."""
        self._check_usable()
        vectors = []
        for text in checked_texts(texts):
            vector = [0.0] * EMBEDDING_LENGTH
            for word in text.split() or ["<empty>"]:
                token = fake_token(word).id
                for axis in range(EMBEDDING_LENGTH):
                    vector[axis] += ((token >> axis) % 7) - 3.0
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vectors.append([x / norm for x in vector] if normalize else vector)
        return vectors

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
