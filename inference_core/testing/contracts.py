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
Capability flags (`supports_chat = False`, ...) skip what a backend does not offer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from ..errors import Cancelled, GenerationTimeout, InferenceError, ModelClosed
from ..protocols import Backend, BackendStatus, TextModel, TokenStream
from ..types import GenerateConfig, LoadConfig, Message, ModelInfo, Token

__all__ = ["BackendContract", "TextModelContract"]

_PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown"
_HANG = 60.0  # seconds: what would only be exceeded by a hang, on any machine


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
        assert isinstance(backend.priority, int)

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

    def _greedy(self, model: TextModel, max_tokens: int = 8) -> list[Token]:
        return list(model.generate(_PROMPT, max_tokens=max_tokens, temperature=0.0))

    def test_generate_yields_tokens_with_ids(self, model: TextModel) -> None:
        tokens = self._greedy(model)
        assert tokens
        assert all(isinstance(token, Token) and token.id >= 0 for token in tokens)

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
        stop = ids[min(3, len(ids) - 1)]
        got = [t.id for t in model.generate(_PROMPT, max_tokens=8, stop_tokens=[stop])]
        assert got == ids[: ids.index(stop)]

    def test_seed_makes_sampling_reproducible(self, model: TextModel) -> None:
        if not self.supports_seed:
            pytest.skip("backend does not support seeds")
        options: dict[str, Any] = {"max_tokens": 8, "temperature": 1.5, "seed": 1234}
        assert list(model.generate(_PROMPT, **options)) == list(model.generate(_PROMPT, **options))

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
        assert self._greedy(model, 3)

    def test_cancel_event_wakes_a_reader_in_another_thread(self, model: TextModel) -> None:
        """The event is set while another thread reads the stream, waiting for tokens."""
        event = threading.Event()
        stream = model.generate(_PROMPT, max_tokens=10_000, cancel=event)
        got: list[Token] = []
        reading = threading.Event()

        def read() -> None:
            try:
                for token in stream:
                    got.append(token)
                    reading.set()
            finally:
                reading.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert reading.wait(_HANG), "no token came"
        if not reader.is_alive() and stream.err() is None:
            pytest.skip("the model gave its whole answer before it could be cancelled")
        event.set()
        reader.join(_HANG)
        assert not reader.is_alive(), "setting cancel= did not wake the reading thread"
        assert isinstance(stream.err(), Cancelled)
        assert len(got) < 10_000

    def test_timeout_raises_generation_timeout(self, model: TextModel) -> None:
        stream = model.generate(_PROMPT, max_tokens=10_000, timeout=1e-6)
        with pytest.raises(GenerationTimeout):
            list(stream)
        assert isinstance(model.err(), GenerationTimeout)
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

    def test_chat_rejects_an_unknown_role(self, model: TextModel) -> None:
        if not self.supports_chat:
            pytest.skip("backend does not support chat")
        with pytest.raises(ValueError, match="role"):
            model.chat([{"role": "wizard", "content": "hi"}], max_tokens=2)

    def test_batch_matches_one_by_one(self, model: TextModel) -> None:
        if not self.supports_batch:
            pytest.skip("backend does not support batches")
        prompts = [_PROMPT, "One two three four", "Hello there"]
        results = model.batch_generate(prompts, max_tokens=5)
        assert [r.prompt for r in results] == prompts
        for prompt, result in zip(prompts, results, strict=True):
            assert result.error is None
            assert list(result.tokens) == list(model.generate(prompt, max_tokens=5))

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
