"""The conformance kit run against FakeBackend, and FakeBackend's own promises."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from inference_core import GenerationTimeout, LoadConfig, ModelClosed
from inference_core.protocols import Backend, TextModel, TokenStream
from inference_core.streams import run_batch
from inference_core.testing import BackendContract, FakeBackend, FakeModel, TextModelContract
from inference_core.testing.fake import fake_token


class TestFakeBackendContract(BackendContract):
    @pytest.fixture
    def backend(self) -> Backend:
        return FakeBackend()

    @pytest.fixture
    def model_path(self) -> str:
        return "fake.gguf"


WAITING = 3600.0  # seconds before each token: the kit's cancels and deadlines end the wait


@pytest.fixture(scope="module")
def fake_model() -> Iterator[TextModel]:
    # A token a millisecond: slow enough that a reader waits for each, like a real model.
    model = FakeBackend(token_delay=0.001).load_model("fake.gguf", LoadConfig())
    yield model
    model.close()


class TestFakeModelContract(TextModelContract):
    @pytest.fixture
    def model(self, fake_model: TextModel) -> TextModel:
        return fake_model

    @pytest.fixture
    def waiting_model(self) -> TextModel:
        return FakeBackend(token_delay=WAITING).load_model("fake.gguf", LoadConfig())


def test_unavailable_fake_backend_reports_its_reason() -> None:
    status = FakeBackend(available=False, reasons=["switched off"]).status()
    assert not status.available and status.reasons == ("switched off",)


def test_fake_model_echoes_the_prompt_cyclically() -> None:
    model = FakeModel("m", LoadConfig())
    assert model.generate("a b", max_tokens=5).text() == "a b a b a"


def test_slow_fake_model_honours_timeout_while_waiting() -> None:
    model = FakeBackend(token_delay=10.0).load_model("m", LoadConfig())
    with pytest.raises(GenerationTimeout):
        list(model.generate("a b", timeout=0.05))


def test_close_from_another_thread_ends_a_running_stream() -> None:
    model = FakeBackend(token_delay=0.01).load_model("m", LoadConfig())
    stream = model.generate("a b", max_tokens=100_000)
    threading.Timer(0.05, model.close).start()
    with pytest.raises(ModelClosed):
        list(stream)


def test_run_batch_gives_each_prompt_its_own_result_whatever_fails() -> None:
    model = FakeModel("fake.gguf", LoadConfig())

    prompts = ["a b c", "refused", "d e f"]

    def start(index: int) -> TokenStream:
        if prompts[index] == "refused":
            raise ModelClosed("closed before this prompt began")
        return model.generate(prompts[index], max_tokens=3)

    results = run_batch(start, prompts, workers=1)
    assert [result.prompt for result in results] == ["a b c", "refused", "d e f"]
    assert [result.ok for result in results] == [True, False, True]
    assert isinstance(results[1].error, ModelClosed) and results[1].tokens == ()
    assert "".join(token.text for token in results[2].tokens) == "d e f"


def test_fake_model_says_why_it_ended() -> None:
    model = FakeModel("m", LoadConfig())
    echo, stopped = (
        model.generate("a b", max_tokens=3),
        model.generate("a b", stop_tokens=[fake_token(" b").id]),
    )
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    whole, cut = (
        model.generate("a", json_schema=schema),
        model.generate("a", json_schema=schema, max_tokens=2),
    )
    assert [s.text() for s in (echo, stopped, whole, cut)] == ["a b a", "a", '{"n": 0}', '{"']
    assert [s.finish_reason for s in (echo, stopped, whole, cut)] == [
        "length",
        "stop",
        "stop",
        "length",
    ]
