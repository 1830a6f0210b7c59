"""The conformance kit: test mixins a backend's own test module subclasses.

    from inference_core.testing import BackendContract, TextModelContract

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def backend(self): return MyBackend()
        @pytest.fixture
        def model_path(self): return "tests/data/tiny.gguf"

    @pytest.fixture(scope="module")
    def loaded_model(): ...     # load once, yield, close

    class TestMyModel(TextModelContract):
        @pytest.fixture
        def model(self, loaded_model): return loaded_model

The mixins' names do not start with "Test", so pytest collects them only
through a subclass. Fixtures raise `NotImplementedError` until provided.
Capability flags (`supports_chat = False`, ...) skip what a backend does not offer,
and so does an option the backend refuses (`UnsupportedOption` naming it): such
a test says skipped and why, never passed.

Cancel, abort and deadlines are also tried on a reader blocked with nothing
arriving, where a backend that only looks at them between tokens would wait on:
the stream must end within a few seconds (`_PROMPTLY`). The `waiting_model`
fixture (by default `model`) must take many seconds over `waiting_prompt` before
its first token. The default prompt is random words, new for each test so that no
prompt cache answers it, as many as `model` reads in `_WAITING_READ` seconds by
the rate it read a short probe (at most half its context): a llama.cpp-like
engine on a CPU reads it that long. A backend that answers it at once provides a
model in a test mode that waits before each token, as the FakeBackend's and the
example backend's tests do:

    @pytest.fixture
    def waiting_model(self):
        return FakeBackend(token_delay=3600).load_model("fake.gguf", LoadConfig())
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, final

import pytest

from .._channels import thinking
from ..content import image
from ..errors import (
    Cancelled,
    GenerationTimeout,
    InferenceError,
    InvalidValue,
    ModelClosed,
    UnsupportedOption,
)
from ..protocols import AsyncTokenStream, Backend, BackendStatus, TextModel, TokenStream
from ..types import (
    TOOL_FORMATS,
    BatchResult,
    Capabilities,
    GenerateConfig,
    LoadConfig,
    Message,
    ModelInfo,
    Token,
    ToolCall,
)
from .pictures import png

__all__ = ["PERSON", "TOOLS", "BackendContract", "TextModelContract"]

_PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown"
_HANG = 60.0  # seconds: what would only be exceeded by a hang, on any machine
_PROMPTLY = 3.0  # seconds a cancel or deadline may take to end a blocked stream
_SETTLE = 0.5  # seconds a reader is given to block before it is cancelled
_WAITING_READ = 6.0  # seconds the default waiting prompt takes to read: > _SETTLE + _PROMPTLY
_PROBE_WORDS = 64  # the prompt that measures how fast a model reads
_TRIES = 5  # deadlines tried to find one that passes mid-stream
_STOP_RUN = 16  # tokens of the greedy answer in which stop strings are tried
# Common words, about a token each in most vocabularies: a long prompt of them fits.
_WORDS = ("apple", "river", "stone", "green", "house", "water", "light", "night", "paper")
PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "colour": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "colour", "tags"],
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 40}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"enum": ["UTC", "CET", "EST"]}},
                "required": ["zone"],
            },
        },
    },
]
_QUESTION = [Message("user", "What is the weather in Paris?")]
_TEXTS = (  # ASCII, CJK, emoji: characters of one byte, three, four and joined ones
    "The quick brown fox jumps over the lazy dog.",
    "日本語のテキストと中文文本",
    "party 🎉🎉 time 👩\u200d👩\u200d👧 done",
)
_MOST_SLOTS = 8  # streams opened at once to check the slots a model declares
_BUDGET = 8  # reasoning tokens allowed where the kit asks a model to think
_PICTURE = png(8, 8, lambda x, y: (32 * x, 32 * y, 128))


def _is_person(value: Any) -> bool:
    """`PERSON`, checked by hand: the kit does not depend on a schema validator."""
    return (
        isinstance(value, dict)
        and set(value) >= {"name", "age", "colour", "tags"}
        and isinstance(value["name"], str)
        and type(value["age"]) is int
        and 0 <= value["age"] <= 120
        and value["colour"] in ("red", "green", "blue")
        and isinstance(value["tags"], list)
        and len(value["tags"]) <= 3
        and all(isinstance(tag, str) for tag in value["tags"])
    )


def _is_valid_call(call: ToolCall) -> bool:
    """A call of one of `TOOLS` whose arguments keep to its parameters, checked by hand."""
    if call.name == "get_weather":
        city = call.arguments.get("city")
        return set(call.arguments) == {"city"} and isinstance(city, str) and len(city) <= 40
    return (
        call.name == "get_time"
        and call.arguments == {"zone": call.arguments.get("zone")}
        and (call.arguments["zone"] in ("UTC", "CET", "EST"))
    )


def _honoured(option: str, run: Callable[[], Any]) -> Any:
    """What `run` returns; the test is skipped, saying why, when the backend refuses
    `option` the way it must: `UnsupportedOption` naming it, from the call or the stream."""
    try:
        return run()
    except UnsupportedOption as refused:
        assert refused.option == option, f"refused {refused.option!r} for {option!r}"
        pytest.skip(f"the backend refuses {option}: {refused}")


def _stop_string(tokens: list[Token], *, inside: bool = False) -> tuple[int, str]:
    """A stop string and the index of the token where it first begins in `tokens`' text:
    the text of that token and the next (from the token's second character, `inside`)."""
    text = "".join(token.text for token in tokens)
    offset = 0
    for where, (token, following) in enumerate(itertools.pairwise(tokens)):
        stop = token.text[1:] + following.text if inside else token.text + following.text
        if where and len(token.text) > 1 and text.find(stop) == offset + (1 if inside else 0):
            return where, stop
        offset += len(token.text)
    pytest.fail(f"no stop string to try in {text!r}: its words all repeat")


def _long_prompt(model: TextModel) -> str:
    """Random words, new on every call, that `model` takes about `_WAITING_READ` s to read."""
    rng = random.Random()

    def words(count: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(count))

    probe = model.generate(words(_PROBE_WORDS), max_tokens=1)
    probe.text()
    read = probe.metrics
    rate = math.inf
    if read is not None and read.prefill_seconds > 0:
        rate = (read.prompt_tokens - read.cached_tokens) / read.prefill_seconds  # those read
    return words(int(min(model.context_len // 2, rate * _WAITING_READ)))


@final
class _Reader:
    """Reads a stream on a thread of its own, keeping its tokens and how it ended."""

    def __init__(self, stream: TokenStream) -> None:
        self.tokens: list[Token] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: TokenStream) -> None:
        try:
            for token in stream:
                self.tokens.append(token)
        except BaseException as error:  # kept for the test's thread to judge
            self.error = error

    def ended(self, within: float) -> bool:
        self._thread.join(within)
        return not self._thread.is_alive()

    def assert_waiting(self) -> None:
        """Still inside the stream with no token after `_SETTLE` s, as the fixtures promise."""
        assert not self.ended(_SETTLE) and not self.tokens, (
            f"the waiting model gave {len(self.tokens)} tokens"
            f"{f' and {self.error!r}' if self.error else ''} within {_SETTLE:g} s: the "
            "waiting_model and waiting_prompt fixtures must keep it from answering for "
            "many seconds (see inference_core.testing.contracts)"
        )


class BackendContract:
    """What every `Backend` promises. Provide `backend` and `model_path` fixtures."""

    load_options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError("provide a `backend` fixture returning the backend under test")

    @pytest.fixture
    def model_path(self) -> str:
        raise NotImplementedError("provide a `model_path` fixture: a model the backend can load")

    @pytest.fixture
    def loaded(self, backend: Backend, model_path: str) -> Iterator[TextModel]:
        if not backend.available():
            pytest.fail(f"the backend under test is unavailable: {backend.status().reasons}")
        model = backend.load_model(
            model_path, LoadConfig(backend=backend.name, **self.load_options)
        )
        yield model
        model.close()

    def test_backend_satisfies_the_protocol(self, backend: Backend) -> None:
        assert isinstance(backend, Backend)
        assert isinstance(backend.name, str) and backend.name
        assert type(backend.priority) is int, f"priority {backend.priority!r} is not an int"

    def test_status_describes_the_backend(self, backend: Backend) -> None:
        status = backend.status()
        assert isinstance(status, BackendStatus)
        assert status.name == backend.name
        assert status.priority == backend.priority
        assert status.available == backend.available()
        if not status.available:
            assert status.reasons, "an unavailable backend must say why"

    def test_loaded_model_satisfies_the_protocol(self, loaded: TextModel) -> None:
        assert isinstance(loaded, TextModel)
        assert isinstance(loaded.model_type, str) and loaded.model_type
        assert isinstance(loaded.info, ModelInfo)
        assert loaded.context_len > 0

    def test_close_is_idempotent_and_final(self, loaded: TextModel) -> None:
        loaded.close()
        loaded.close()
        with pytest.raises(ModelClosed):
            list(loaded.generate(_PROMPT, max_tokens=2))

    def test_context_manager_closes_the_model(self, backend: Backend, model_path: str) -> None:
        with backend.load_model(model_path, LoadConfig(**self.load_options)) as model:
            assert list(model.generate(_PROMPT, max_tokens=1))
        with pytest.raises(ModelClosed):
            list(model.generate(_PROMPT, max_tokens=1))


class TextModelContract:
    """What every `TextModel` promises. Provide a `model` fixture (share one loaded model)."""

    supports_chat = True
    supports_classify = True
    supports_batch = True
    supports_seed = True

    @pytest.fixture
    def model(self) -> TextModel:
        raise NotImplementedError("provide a `model` fixture returning a loaded model")

    @pytest.fixture
    def waiting_model(self, model: TextModel) -> TextModel:
        """A model that takes many seconds over `waiting_prompt` before its first token."""
        return model

    @pytest.fixture
    def waiting_prompt(self, model: TextModel) -> str:
        """By default long enough to keep a llama.cpp-like engine on a CPU reading it."""
        return _long_prompt(model)

    def _greedy(self, model: TextModel, max_tokens: int = 8) -> list[Token]:
        return list(model.generate(_PROMPT, max_tokens=max_tokens, temperature=0.0))

    def test_generate_yields_tokens_with_ids(self, model: TextModel) -> None:
        tokens = self._greedy(model)
        assert tokens
        assert all(isinstance(token, Token) and token.id >= 0 for token in tokens)
        texts: dict[int, str] = {}
        for token in tokens:  # an id names one piece of text; "" is part of a character
            if token.text:
                seen = texts.setdefault(token.id, token.text)
                assert seen == token.text, f"id {token.id} carries {seen!r} and {token.text!r}"

    def test_max_tokens_bounds_the_output(self, model: TextModel) -> None:
        assert 1 <= len(self._greedy(model, max_tokens=3)) <= 3

    def test_greedy_generation_is_reproducible(self, model: TextModel) -> None:
        assert self._greedy(model) == self._greedy(model)

    def test_config_object_and_keywords_agree(self, model: TextModel) -> None:
        config = GenerateConfig(max_tokens=5)
        assert list(model.generate(_PROMPT, config)) == self._greedy(model, max_tokens=5)

    def test_text_joins_every_token(self, model: TextModel) -> None:
        stream = model.generate(_PROMPT, max_tokens=6)
        first = next(stream)
        rest = stream.text()
        assert rest == "".join(t.text for t in self._greedy(model, 6))
        assert rest.startswith(first.text)

    def test_stream_satisfies_the_protocol_and_reports_metrics(self, model: TextModel) -> None:
        stream = model.generate(_PROMPT, max_tokens=4)
        assert isinstance(stream, TokenStream)
        tokens = list(stream)
        assert stream.err() is None and model.err() is None
        metrics = stream.metrics
        assert metrics is not None and metrics.generated_tokens >= len(tokens)
        assert model.metrics() == metrics

    def test_stop_token_ends_generation_before_it(self, model: TextModel) -> None:
        ids = [token.id for token in self._greedy(model, 8)]
        # The first id not seen before it, after the first token: the stop keeps the rest.
        where = next((n for n in range(1, len(ids)) if ids[n] not in ids[:n]), None)
        assert where is not None, f"the greedy tokens' ids {ids} never change"
        stream = model.generate(_PROMPT, max_tokens=8, stop_tokens=[ids[where]])
        assert [t.id for t in stream] == ids[:where]
        assert stream.finish_reason == "stop"

    def test_seed_makes_sampling_reproducible(self, model: TextModel) -> None:
        if not self.supports_seed:
            pytest.skip("backend does not support seeds")

        def sample(seed: int) -> list[Token]:
            return list(model.generate(_PROMPT, max_tokens=8, temperature=1.5, seed=seed))

        assert sample(1234) == sample(1234)
        samples = {tuple(sample(seed)) for seed in (1, 2, 3, 4)}
        assert len(samples) > 1, "four seeds gave one sample: the seed is not used"

    def test_unknown_option_is_a_type_error_listing_known_ones(self, model: TextModel) -> None:
        with pytest.raises(TypeError, match="max_tokens"):
            model.generate(_PROMPT, max_tokenz=3)

    def test_invalid_option_is_a_value_error_naming_it(self, model: TextModel) -> None:
        with pytest.raises(ValueError, match="top_p"):
            model.generate(_PROMPT, top_p=1.5)

    def test_break_then_next_call_works(self, model: TextModel) -> None:
        for _ in model.generate(_PROMPT, max_tokens=50):
            break
        assert self._greedy(model, 3)

    def test_cancel_ends_the_stream_without_error(self, model: TextModel) -> None:
        stream = model.generate(_PROMPT, max_tokens=200)
        next(stream)
        stream.cancel()
        assert list(stream) == []
        assert isinstance(stream.err(), Cancelled)
        assert isinstance(model.err(), Cancelled)
        assert stream.finish_reason == "cancelled"
        assert self._greedy(model, 3)

    def test_a_stream_closed_before_its_end_was_cancelled(self, model: TextModel) -> None:
        unread = model.generate(_PROMPT, max_tokens=200)
        unread.close()
        begun = model.generate(_PROMPT, max_tokens=200)
        next(begun)
        begun.close()
        assert unread.finish_reason == begun.finish_reason == "cancelled"
        assert isinstance(begun.err(), Cancelled)

    @pytest.mark.parametrize("how", ["signal", "call"])
    def test_cancel_wakes_a_reader_blocked_in_another_thread(
        self, model: TextModel, waiting_model: TextModel, waiting_prompt: str, how: str
    ) -> None:
        """The `cancel=` signal, or `stream.cancel()` (the backend's abort), from this
        thread while another waits for a token that is not coming."""
        signal = threading.Event()
        stream = waiting_model.generate(waiting_prompt, max_tokens=10_000, cancel=signal)
        reader = _Reader(stream)
        reader.assert_waiting()
        if how == "signal":
            signal.set()
        else:
            stream.cancel()
        assert reader.ended(_PROMPTLY), f"the reader still waits {_PROMPTLY:g} s after the cancel"
        assert reader.error is None and reader.tokens == []
        assert isinstance(stream.err(), Cancelled) and stream.finish_reason == "cancelled"
        assert self._greedy(model, 3)

    def test_a_deadline_wakes_a_blocked_reader(
        self, model: TextModel, waiting_model: TextModel, waiting_prompt: str
    ) -> None:
        timeout = 2 * _SETTLE
        reader = _Reader(waiting_model.generate(waiting_prompt, max_tokens=10_000, timeout=timeout))
        assert reader.ended(timeout + _PROMPTLY), (
            f"the reader still waits {_PROMPTLY:g} s after its {timeout:g} s deadline"
        )
        assert reader.tokens == [], "the waiting model answered: see the waiting_* fixtures"
        assert isinstance(reader.error, GenerationTimeout), reader.error
        assert self._greedy(model, 3)

    def test_a_deadline_passing_mid_stream_ends_it(self, model: TextModel) -> None:
        """Tokens come, the deadline passes: GenerationTimeout, and no token after it
        but the one on its way. Deadlines are tried until one falls mid-stream."""
        timeout = _SETTLE
        for _ in range(_TRIES):
            stream = model.generate(_PROMPT, max_tokens=10_000, timeout=timeout)
            deadline = time.monotonic() + timeout  # later than the stream's own
            early = late = 0
            try:
                for _token in stream:
                    if time.monotonic() < deadline:
                        early += 1
                        continue
                    late += 1
                    if late > 1:
                        break
            except GenerationTimeout:
                if early:
                    assert isinstance(model.err(), GenerationTimeout)
                    assert self._greedy(model, 3)
                    return
                timeout *= 4  # it passed before the first token: try a longer one
                continue
            stream.close()
            assert late <= 1, f"tokens kept coming after the {timeout:g} s deadline passed"
            timeout /= 4  # the answer ended before its deadline: try a shorter one
        pytest.skip(f"none of {_TRIES} deadlines tried passed between two tokens")

    def test_timeout_raises_generation_timeout(self, model: TextModel) -> None:
        stream = model.generate(_PROMPT, max_tokens=10_000, timeout=1e-6)
        with pytest.raises(GenerationTimeout):
            list(stream)
        assert isinstance(model.err(), GenerationTimeout)
        assert stream.finish_reason is None, "an error is no finish reason"
        assert self._greedy(model, 3)

    def test_err_is_per_thread(self, model: TextModel) -> None:
        stream = model.generate(_PROMPT, max_tokens=100)
        stream.cancel()
        list(stream)
        seen: list[BaseException | None] = []
        worker = threading.Thread(target=lambda: seen.append(model.err()))
        worker.start()
        worker.join()
        assert isinstance(model.err(), Cancelled) and seen == [None]

    def test_chat_accepts_messages_and_dicts(self, model: TextModel) -> None:
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        as_objects = [Message("system", "Be brief."), Message("user", "Name a colour.")]
        as_dicts = [{"role": m.role, "content": m.content} for m in as_objects]
        first = list(model.chat(as_objects, max_tokens=6))
        assert first and first == list(model.chat(as_dicts, max_tokens=6))

    def test_chat_answers_the_messages(self, model: TextModel) -> None:
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        questions = ["Name a colour.", "Count from one to five.", "What is the capital of France?"]
        answers = {model.chat([Message("user", q)], max_tokens=8).text() for q in questions}
        assert len(answers) > 1, f"three questions, one answer: {answers}"

    def test_chat_rejects_an_unknown_role(self, model: TextModel) -> None:
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        with pytest.raises(ValueError, match="role"):
            model.chat([{"role": "wizard", "content": "hi"}], max_tokens=2)

    def test_batch_matches_one_by_one(self, model: TextModel) -> None:
        if not self.supports_batch:
            pytest.skip("backend does not support batches")
        prompts: list[str | list[Message]] = [_PROMPT, "One two three four", "Hello there"]
        if self.supports_chat:  # a chat's messages answered as chat() answers them
            prompts.append([Message("system", "Be brief."), Message("user", "Name a colour.")])
        results = model.batch_generate(prompts, max_tokens=5)
        assert [r.prompt for r in results] == prompts
        for prompt, result in zip(prompts, results, strict=True):
            assert result.error is None
            one = (
                model.generate(prompt, max_tokens=5)
                if isinstance(prompt, str)
                else model.chat(prompt, max_tokens=5)
            )
            assert list(result.tokens) == list(one), prompt

    def test_classify_gives_the_first_greedy_token(self, model: TextModel) -> None:
        if not self.supports_classify:
            pytest.skip("backend does not support classify")
        prompts = [_PROMPT, "One two three four"]
        expected = [next(iter(model.generate(p, max_tokens=1))).id for p in prompts]
        assert [token.id for token in model.classify(prompts)] == expected

    def test_threads_share_the_model(self, model: TextModel) -> None:
        expected = self._greedy(model, 6)
        results: list[list[Token] | BaseException] = [[] for _ in range(4)]

        def work(slot: int) -> None:
            try:
                results[slot] = self._greedy(model, 6)
            except InferenceError as error:
                results[slot] = error

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert results == [expected] * 4

    # -- structured output, log-probabilities, tools: honoured, or refused by name --------

    def test_json_schema_output_parses_and_keeps_to_the_schema(self, model: TextModel) -> None:
        text = _honoured(
            "json_schema",
            lambda: model.generate("A person, as JSON:", json_schema=PERSON, max_tokens=200).text(),
        )
        assert _is_person(json.loads(text)), text

    def test_grammar_limits_the_output(self, model: TextModel) -> None:
        text = _honoured(
            "grammar",
            lambda: model.generate(
                "Is the sky blue?", grammar='root ::= "yes" | "no"', max_tokens=8
            ).text(),
        )
        assert text in ("yes", "no")

    def test_json_schema_with_grammar_is_a_value_error(self, model: TextModel) -> None:
        with pytest.raises(ValueError, match="json_schema and grammar"):
            model.generate(_PROMPT, json_schema=PERSON, grammar='root ::= "a"')

    def test_logprobs_rank_each_token_first_among_its_candidates(self, model: TextModel) -> None:
        tokens = _honoured(
            "logprobs", lambda: list(model.generate(_PROMPT, max_tokens=8, logprobs=3))
        )
        assert [t.id for t in tokens] == [t.id for t in self._greedy(model, 8)]
        for token in tokens:
            assert token.logprob is not None and token.logprob <= 0.0
            figures = [candidate.logprob for candidate in token.top_logprobs]
            assert 1 <= len(figures) <= 3 and token.top_logprobs[0].id == token.id
            assert all(f is not None and f <= 0.0 for f in figures)
            assert figures == sorted(figures, reverse=True)

    def test_without_logprobs_tokens_carry_no_figures(self, model: TextModel) -> None:
        tokens = self._greedy(model, 4)
        assert all(t.logprob is None and t.top_logprobs == () for t in tokens)

    def test_required_tool_choice_calls_one_of_the_tools(self, model: TextModel) -> None:
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        stream = _honoured(
            "tools", lambda: model.chat(_QUESTION, tools=TOOLS, tool_choice="required")
        )
        assert stream.tool_calls == (), "tool_calls must wait for the stream's end"
        stream.text()
        assert stream.err() is None and stream.tool_calls
        assert stream.finish_reason == "tool_calls"
        for call in stream.tool_calls:
            assert isinstance(call, ToolCall) and call.id
            assert _is_valid_call(call), f"{call} does not keep to its tool's parameters"

    @pytest.mark.parametrize(
        "choice",
        ["get_time", {"type": "function", "function": {"name": "get_time"}}],
        ids=["name", "openai"],
    )
    def test_a_tool_named_in_tool_choice_is_the_one_called(
        self, model: TextModel, choice: str | dict[str, Any]
    ) -> None:
        """The second tool, so that a backend that calls the first one it is given fails."""
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        stream = _honoured("tools", lambda: model.chat(_QUESTION, tools=TOOLS, tool_choice=choice))
        stream.text()
        assert stream.err() is None and stream.finish_reason == "tool_calls"
        assert stream.tool_calls and {call.name for call in stream.tool_calls} == {"get_time"}
        assert all(_is_valid_call(call) for call in stream.tool_calls)

    def test_a_tool_round_trip_ends_in_a_text_answer(self, model: TextModel) -> None:
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        call = ToolCall("call_1", "get_weather", {"city": "Paris"})
        history = [
            *_QUESTION,
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", '{"sky": "sunny", "celsius": 21}', tool_call_id="call_1"),
        ]
        stream = _honoured(
            "tools", lambda: model.chat(history, tools=TOOLS, tool_choice="none", max_tokens=24)
        )
        assert stream.text() and stream.err() is None and stream.tool_calls == ()
        assert stream.finish_reason in ("stop", "length")

    def test_a_bad_tool_or_tool_choice_is_a_value_error(self, model: TextModel) -> None:
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        with pytest.raises(InvalidValue, match="tool_choice must be one of") as caught:
            model.chat(_QUESTION, tools=TOOLS, tool_choice="sometimes")
        assert caught.value.field == "tool_choice"
        with pytest.raises(InvalidValue, match="name") as caught:
            model.chat(_QUESTION, tools=[{"type": "function", "function": {}}])
        assert caught.value.field == "tools"

    @pytest.mark.parametrize("option", ["json_schema", "logprobs", "tools"])
    def test_constrained_streams_cancel_time_out_and_share_threads(
        self, model: TextModel, option: str
    ) -> None:
        def start(**scope: Any) -> TokenStream:
            if option == "tools":
                return model.chat(_QUESTION, tools=TOOLS, tool_choice="required", **scope)
            options: dict[str, Any] = (
                {"json_schema": PERSON} if option == "json_schema" else {"logprobs": 2}
            )
            return model.generate("A person, as JSON:", max_tokens=64, **options, **scope)

        expected = _honoured(option, lambda: list(start()))
        results: list[object] = [None] * 4

        def work(slot: int) -> None:
            results[slot] = list(start())

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(_HANG)
        assert results == [expected] * 4

        cancelled = start()
        next(cancelled)
        cancelled.cancel()
        assert list(cancelled) == [] and isinstance(cancelled.err(), Cancelled)
        assert cancelled.tool_calls == ()
        with pytest.raises(GenerationTimeout):
            list(start(timeout=1e-6))
        assert isinstance(model.err(), GenerationTimeout)

    # -- why a stream ended, and stop strings ------------------------------------------------

    def test_finish_reason_is_none_while_running_then_length_at_max_tokens(
        self, model: TextModel
    ) -> None:
        stream = model.generate(_PROMPT, max_tokens=4)
        assert stream.finish_reason is None
        tokens = [next(stream)]
        assert stream.finish_reason is None, "the stream has not ended yet"
        tokens += stream
        assert len(tokens) == 4, f"{_PROMPT!r} ended after {len(tokens)} of 4 tokens"
        assert stream.finish_reason == "length"

    def test_a_stop_string_ends_the_stream_before_it_in_whole_tokens(
        self, model: TextModel
    ) -> None:
        """The tokens before the stop string, as they are without it (ids and text)."""
        tokens = self._greedy(model, _STOP_RUN)
        where, stop = _stop_string(tokens)
        stream = model.generate(_PROMPT, max_tokens=_STOP_RUN, stop=[stop, "\x00never"])
        got = list(stream)
        assert stop not in "".join(token.text for token in got)
        assert got == tokens[:where]
        assert stream.finish_reason == "stop" and stream.err() is None

    def test_a_stop_string_beginning_inside_a_token_leaves_that_token_out(
        self, model: TextModel
    ) -> None:
        """No part of the stop string is delivered, and no token is cut to a part of it."""
        tokens = self._greedy(model, _STOP_RUN)
        where, stop = _stop_string(tokens, inside=True)
        stream = model.generate(_PROMPT, max_tokens=_STOP_RUN, stop=stop)
        assert list(stream) == tokens[:where]
        assert stream.finish_reason == "stop"

    def test_text_that_only_began_a_stop_string_is_delivered(self, model: TextModel) -> None:
        stream = model.generate(_PROMPT, max_tokens=_STOP_RUN)
        tokens = list(stream)
        _, stop = _stop_string(tokens)
        almost = model.generate(_PROMPT, max_tokens=_STOP_RUN, stop=stop + "\x00never")
        assert list(almost) == tokens
        assert almost.finish_reason == stream.finish_reason

    def test_async_and_batch_streams_end_at_stop_strings_and_say_why(
        self, model: TextModel
    ) -> None:
        tokens = self._greedy(model, _STOP_RUN)
        where, stop = _stop_string(tokens)

        async def run() -> tuple[list[Token], object, object, list[BatchResult]]:
            stream = model.agenerate(_PROMPT, max_tokens=_STOP_RUN, stop=stop)
            unended = stream.finish_reason
            got = [token async for token in stream]
            batch = await model.abatch_generate([_PROMPT, _PROMPT], max_tokens=_STOP_RUN, stop=stop)
            return got, unended, stream.finish_reason, batch

        got, unended, reason, batch = asyncio.run(run())
        assert got == tokens[:where]
        assert (unended, reason) == (None, "stop")
        cut = (tokens[:where], "stop")
        assert [(list(r.tokens), r.finish_reason) for r in batch] == [cut, cut]
        results = model.batch_generate([_PROMPT, "One two three four"], max_tokens=4)
        assert [(len(r.tokens), r.finish_reason) for r in results] == [(4, "length")] * 2
        results = model.batch_generate([_PROMPT, _PROMPT], max_tokens=_STOP_RUN, stop=[stop])
        assert [(list(r.tokens), r.finish_reason) for r in results] == [cut, cut]
        [failed] = model.batch_generate([_PROMPT], max_tokens=10_000, timeout=1e-6)
        assert isinstance(failed.error, GenerationTimeout) and failed.finish_reason is None

    # -- asyncio: the same tokens and errors, and a task's cancel stops the generation -----

    def test_async_stream_gives_the_sync_tokens(self, model: TextModel) -> None:
        async def read() -> tuple[list[Token], BaseException | None, object]:
            async with model.agenerate(_PROMPT, max_tokens=8) as stream:
                assert isinstance(stream, AsyncTokenStream)
                tokens = [token async for token in stream]
                return tokens, stream.err(), stream.metrics

        tokens, error, metrics = asyncio.run(read())
        assert tokens == self._greedy(model, 8) and error is None and metrics is not None

    def test_async_tasks_at_once_each_equal_their_sync_result(self, model: TextModel) -> None:
        prompts = [_PROMPT, "One two three four", "Hello there", "The sky is"]
        expected = [list(model.generate(prompt, max_tokens=6)) for prompt in prompts]

        async def read(prompt: str) -> list[Token]:
            return [token async for token in model.agenerate(prompt, max_tokens=6)]

        async def all_at_once() -> list[list[Token]]:
            return list(await asyncio.gather(*(read(prompt) for prompt in prompts)))

        assert asyncio.run(all_at_once()) == expected

    def test_async_text_chat_and_batch_match_the_sync_ones(self, model: TextModel) -> None:
        prompts: list[str | list[Message]] = [_PROMPT, "One two three four"]
        if self.supports_chat:
            prompts.append([Message("user", "Hi")])

        async def run() -> tuple[str, list[Token], list[list[Token]]]:
            text = await model.agenerate(_PROMPT, max_tokens=5).text()
            chat: list[Token] = []
            if self.supports_chat:
                chat = [t async for t in model.achat([Message("user", "Hi")], max_tokens=4)]
            results = await model.abatch_generate(prompts, max_tokens=5)
            assert [result.prompt for result in results] == prompts
            assert all(result.error is None for result in results)
            return text, chat, [list(result.tokens) for result in results]

        text, chat, batch = asyncio.run(run())
        assert text == "".join(token.text for token in self._greedy(model, 5))
        if self.supports_chat:
            assert chat == list(model.chat([Message("user", "Hi")], max_tokens=4))
        assert batch == [
            list(
                model.generate(p, max_tokens=5)
                if isinstance(p, str)
                else model.chat(p, max_tokens=5)
            )
            for p in prompts
        ]

    def test_cancelling_the_task_alone_stops_the_stream(
        self, model: TextModel, waiting_model: TextModel, waiting_prompt: str
    ) -> None:
        """No `aclose()`, which would cancel by itself: the task's cancel must stop the
        generation it waits on, and the model serve on."""

        async def run() -> BaseException | None:
            stream = waiting_model.agenerate(waiting_prompt, max_tokens=10_000)
            got: list[Token] = []

            async def read() -> None:
                async for token in stream:
                    got.append(token)

            task = asyncio.create_task(read())
            done, _ = await asyncio.wait([task], timeout=_SETTLE)
            assert not done and not got, "the waiting model answered: see the waiting_* fixtures"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            loop = asyncio.get_running_loop()
            end = loop.time() + _PROMPTLY
            while stream.err() is None and loop.time() < end:
                await asyncio.sleep(_SETTLE / 10)
            assert stream.finish_reason == ("cancelled" if stream.err() else None)
            return stream.err()

        error = asyncio.run(run())
        assert isinstance(error, Cancelled), (
            f"the generation runs on after the task's cancel: {error!r}"
        )
        assert self._greedy(model, 3)

    def test_async_timeout_and_errors_come_as_in_the_sync_api(self, model: TextModel) -> None:
        async def run() -> BaseException | None:
            stream = model.agenerate(_PROMPT, max_tokens=10_000, timeout=1e-6)
            with pytest.raises(GenerationTimeout):
                await stream.text()
            with pytest.raises(TypeError, match="max_tokens"):
                model.agenerate(_PROMPT, max_tokenz=3)
            return stream.err()

        assert isinstance(asyncio.run(run()), GenerationTimeout)

    # -- embeddings: a vector per text, or refused by name ----------------------------------

    def test_embed_gives_a_unit_vector_per_text_or_is_refused(self, model: TextModel) -> None:
        texts = ["The cat sat on the mat.", "Stock prices fell sharply.", "The cat sat on the mat."]
        vectors = _honoured("embed", lambda: model.embed(texts))
        assert len(vectors) == 3
        assert all(len(vector) == model.info.embedding_length for vector in vectors)
        assert all(abs(sum(x * x for x in vector) - 1.0) < 1e-3 for vector in vectors)
        assert vectors[0] == pytest.approx(vectors[2], abs=1e-4) != vectors[1]
        for got, want in zip(asyncio.run(model.aembed(texts)), vectors, strict=True):
            assert got == pytest.approx(want, abs=1e-4)
        assert model.embed([]) == []

    def test_embed_refuses_a_lone_string(self, model: TextModel) -> None:
        with pytest.raises(TypeError, match="wrap a single text in a list"):
            model.embed("a lone string")

    # -- tokens: counted as a generation reads them, or refused by name ---------------------

    def test_tokenize_and_detokenize_round_trip(self, model: TextModel) -> None:
        for text in _TEXTS:
            tokens = _honoured("tokenize", functools.partial(model.tokenize, text))
            assert tokens and all(isinstance(t, Token) and t.id >= 0 for t in tokens), tokens
            ids = [token.id for token in tokens]
            assert _honoured("detokenize", functools.partial(model.detokenize, ids)) == text

    def test_count_tokens_is_what_a_generation_reads(self, model: TextModel) -> None:
        def read(stream: TokenStream) -> int:
            for _ in stream:
                pass
            assert stream.metrics is not None, "a stream that ended has its metrics"
            return stream.metrics.prompt_tokens

        count = _honoured("count_tokens", lambda: model.count_tokens(_PROMPT))
        assert count == read(model.generate(_PROMPT, max_tokens=1))
        if not self.supports_chat:
            return
        chat = [Message("system", "Be brief."), Message("user", "Name a colour.")]
        assert model.count_tokens(chat) == read(model.chat(chat, max_tokens=1))
        if model.capabilities.tools != "none":
            counted = model.count_tokens(_QUESTION, tools=TOOLS, tool_choice="required")
            assert counted == read(model.chat(_QUESTION, tools=TOOLS, tool_choice="required"))

    def test_token_arguments_are_checked(self, model: TextModel) -> None:
        _honoured("tokenize", lambda: model.tokenize("probe"))
        with pytest.raises(TypeError):
            model.tokenize(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            model.detokenize("not ids")  # type: ignore[arg-type]
        with pytest.raises(InvalidValue):
            model.detokenize([-1])
        if model.info.vocab_size > 0:
            with pytest.raises(InvalidValue):
                model.detokenize([model.info.vocab_size])

    # -- capabilities: what a model declares, it does -----------------------------------------

    def test_capabilities_describe_the_model(self, model: TextModel) -> None:
        declared = model.capabilities
        assert isinstance(declared, Capabilities)
        assert declared.tools in TOOL_FORMATS
        assert declared.context_len == model.context_len
        assert declared.slots >= 1

    def test_declared_embeddings_are_computed_and_others_refused(self, model: TextModel) -> None:
        if model.capabilities.embeddings:
            vectors = model.embed(["a text", "another"])
            assert len(vectors) == 2 and all(vector for vector in vectors)
            return
        with pytest.raises(UnsupportedOption) as refused:
            model.embed(["a text"])
        assert refused.value.option == "embed"

    def test_declared_tools_are_called_and_none_refused(self, model: TextModel) -> None:
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        if model.capabilities.tools == "none":
            with pytest.raises(UnsupportedOption) as refused:
                model.chat(_QUESTION, tools=TOOLS)
            assert refused.value.option == "tools"
            return
        stream = model.chat(_QUESTION, tools=TOOLS, tool_choice="required")
        stream.text()
        assert stream.err() is None and stream.tool_calls, "declared tools, called none"
        assert all(_is_valid_call(call) for call in stream.tool_calls)
        if model.capabilities.parallel_tool_calls:
            return
        several = model.chat(
            _QUESTION, tools=TOOLS, tool_choice="required", parallel_tool_calls=True
        )
        several.text()
        assert len(several.tool_calls) == 1, "declared no parallel calls, made several"

    def test_declared_reasoning_is_kept_apart_from_the_answer(self, model: TextModel) -> None:
        """A model that declares reasoning thinks when asked, on the "reasoning" channel
        before its answer, within its budget; `text()` holds the answer alone. One that
        does not refuses think=True. Its declared `reasoning_tags` are what
        `reasoning_text()` leaves out (a reader shows the thinking live by them)."""
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        if not model.capabilities.reasoning:
            with pytest.raises(UnsupportedOption) as refused:
                model.chat(_QUESTION, think=True)
            assert refused.value.option == "think"
            return
        stream = model.chat(
            _QUESTION, think=True, reasoning_budget=_BUDGET, max_tokens=_BUDGET + 16
        )
        tokens = list(stream)
        channels = [token.channel for token in tokens]
        thought = channels.count("reasoning")
        assert 1 <= thought <= _BUDGET, f"{thought} reasoning tokens for a budget of {_BUDGET}"
        assert channels == ["reasoning"] * thought + ["content"] * (len(tokens) - thought), (
            f"the thinking must come before the answer, and the answer follow it: {channels}"
        )
        answer = "".join(token.text for token in tokens if token.channel == "content")
        assert stream.text() == answer and answer.strip(), (
            f"no answer after the thinking: {answer!r}"
        )
        reasoning = stream.reasoning_text()
        assert reasoning and reasoning not in answer
        tags = model.capabilities.reasoning_tags
        pieces = [token.text for token in tokens if token.channel == "reasoning"]
        assert reasoning == thinking(pieces, tags), (
            f"reasoning_text() must be the thinking without the declared reasoning_tags {tags}: "
            f"{reasoning!r}"
        )

    def test_think_false_gives_no_reasoning_tokens(self, model: TextModel) -> None:
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        stream = model.chat(_QUESTION, think=False, max_tokens=8)
        channels = [token.channel for token in stream]
        assert channels and set(channels) == {"content"}, channels
        assert stream.reasoning_text() == "" and stream.err() is None

    def test_declared_vision_reads_images_and_none_refuses_them(self, model: TextModel) -> None:
        """A model that declares vision reads an image (its chat reads more tokens than the
        same chat without it, and is answered); one that does not refuses an image with
        `UnsupportedOption` ("image") when the chat is asked for, never dropping it."""
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        question = {"type": "text", "text": "What is in this picture?"}
        seen = [Message("user", [question, image(_PICTURE)])]
        if not model.capabilities.vision:
            with pytest.raises(UnsupportedOption) as refused:
                model.chat(seen, max_tokens=4)
            assert refused.value.option == "image", refused.value
            return
        with_image, without = (
            model.chat(seen, max_tokens=4),
            model.chat([Message("user", [question])], max_tokens=4),
        )
        assert list(with_image) and with_image.err() is None, with_image.err()
        list(without)
        assert with_image.metrics is not None and without.metrics is not None
        assert with_image.metrics.prompt_tokens > without.metrics.prompt_tokens, (
            "a chat with an image must read the image's tokens too"
        )

    def test_declared_slots_run_at_once(self, model: TextModel) -> None:
        """As many long generations as the model has slots each give a token while all of
        them run: one run after the other would keep the last waiting past `_HANG`."""
        slots = min(model.capabilities.slots, _MOST_SLOTS)
        first = self._greedy(model, 1)
        streams = [model.generate(_PROMPT, max_tokens=10_000, timeout=_HANG) for _ in range(slots)]
        try:
            assert [[next(stream)] for stream in streams] == [first] * slots
        finally:
            for stream in streams:
                stream.close()
