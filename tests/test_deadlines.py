"""Every wait is bounded, a deadline or a cancel keeps its type whatever it interrupts, and
close() is exactly once.

A fake llama-server (tests/fakes) stands in where the real one cannot be made to go
quiet on demand: a request it never answers, a `/props` or `/tokenize` that never
comes back. It logs every request it receives, so a retry cannot hide.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import inference_core as ic
from inference_rocm import client as client_module
from inference_rocm import server as server_module
from inference_rocm.backends import LlamaCppBackend
from inference_rocm.keeper import KeptServer
from inference_rocm.model import LlamaServerModel
from inference_rocm.server import LlamaServer, ServerOptions

from .other_systems import wait_as_elsewhere
from .procs import children, make_executable, wait_for

FAKE_SERVER = Path(__file__).parent / "fakes" / "fake_llama_server.py"


def fake_binary(folder: Path) -> Path:
    return make_executable(folder / "llama-server", FAKE_SERVER.read_text())


def load_fake(
    binary: Path, model_path: str, *extra: str, load_timeout: float = 30.0
) -> ic.TextModel:
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(binary)})
    return backend.load_model(
        model_path, ic.LoadConfig(extra_args=extra, load_timeout=load_timeout)
    )


def log_lines(model: ic.TextModel) -> list[str]:
    assert isinstance(model, LlamaServerModel) and isinstance(model.server, KeptServer)
    return model.server.current.log_tail(60).splitlines()


def requests_seen(model: ic.TextModel, prompt: str, marker: str) -> int:
    """How many requests for `prompt` the fake logged, once it has logged one for `marker`
    (sent after everything the test sent before)."""
    list(model.generate(marker, max_tokens=10))
    seen = wait_for(lambda: f"request POST /completion {marker}" in log_lines(model), 10)
    assert seen, log_lines(model)
    return log_lines(model).count(f"request POST /completion {prompt}")


@pytest.fixture(scope="module")
def fake_model(
    smollm2_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ic.TextModel]:
    with load_fake(fake_binary(tmp_path_factory.mktemp("fake")), smollm2_path) as model:
        yield model


def test_a_deadline_before_the_response_head_is_a_timeout_sent_once(
    fake_model: ic.TextModel,
) -> None:
    list(fake_model.generate("fine", max_tokens=10))  # leaves a keep-alive connection idle
    stream = fake_model.generate("silent, timed out", max_tokens=10, timeout=0.5)
    with pytest.raises(ic.GenerationTimeout):
        next(stream)
    assert type(stream.err()) is ic.GenerationTimeout
    assert requests_seen(fake_model, "silent, timed out", "fine") == 1


def test_a_cancel_before_the_response_head_ends_the_stream_sent_once(
    fake_model: ic.TextModel,
) -> None:
    list(fake_model.generate("fine", max_tokens=10))
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    stream = fake_model.generate("silent, cancelled", max_tokens=10, cancel=cancel)
    assert list(stream) == []
    assert isinstance(stream.err(), ic.Cancelled)
    assert requests_seen(fake_model, "silent, cancelled", "fine") == 1


def test_the_model_serves_again_after_a_timeout(fake_model: ic.TextModel) -> None:
    with pytest.raises(ic.GenerationTimeout):
        list(fake_model.generate("silent", max_tokens=10, timeout=0.3))
    assert [t.id for t in fake_model.generate("fine", max_tokens=10)] == [100, 101, 102]


def test_a_server_that_never_answers_props_fails_the_load_within_its_timeout(
    tmp_path: Path, smollm2_path: str
) -> None:
    before = children()
    started = time.monotonic()
    with pytest.raises(ic.ServerStartError, match=r"not /props within 2 s") as caught:
        load_fake(fake_binary(tmp_path), smollm2_path, "--fake-silent", "/props", load_timeout=2)
    assert time.monotonic() - started < 30  # bounded; without the deadline it never returns
    assert "request GET /props" in caught.value.log_tail
    assert children() - before == set()


@pytest.fixture
def silent_tokenizer(smollm2_path: str, tmp_path: Path) -> Iterator[ic.TextModel]:
    with load_fake(fake_binary(tmp_path), smollm2_path, "--fake-silent", "/tokenize") as model:
        yield model


def test_the_byte_token_recovery_honours_the_generations_deadline(
    silent_tokenizer: ic.TextModel,
) -> None:
    stream = silent_tokenizer.generate("split", max_tokens=10, timeout=1.0)
    with pytest.raises(ic.GenerationTimeout):
        list(stream)
    assert wait_for(
        lambda: any(
            line.startswith("request POST /tokenize") for line in log_lines(silent_tokenizer)
        )
    )


def test_the_byte_token_recovery_honours_the_generations_cancel(
    silent_tokenizer: ic.TextModel,
) -> None:
    cancel = threading.Event()
    stream = silent_tokenizer.generate("split", max_tokens=10, cancel=cancel)
    threading.Timer(0.5, cancel.set).start()
    assert list(stream) == []
    assert isinstance(stream.err(), ic.Cancelled)


# -- abort(): a reader blocked with nothing arriving wakes at once ----------------------
# The fake sends one token of "stall" and then nothing. A reader also wakes to check its
# scope every _POLL_SECONDS; made a minute here, only abort() can end the wait sooner.


@pytest.fixture(params=["linux", "elsewhere"])
def polls_rarely(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """On Linux, and as on other systems (`wait_as_elsewhere`)."""
    monkeypatch.setattr(client_module, "_POLL_SECONDS", 60.0)
    if request.param == "elsewhere":
        wait_as_elsewhere(monkeypatch)


def blocked_reader(model: ic.TextModel) -> tuple[ic.TokenStream, threading.Thread]:
    """A stream of "stall" and a thread reading it to its end, past its one token."""
    stream = model.generate("stall", max_tokens=10)
    first = threading.Event()

    def read() -> None:
        for _ in stream:
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(30)
    return stream, reader


@pytest.mark.parametrize("stop", ["cancel", "close"])
def test_cancel_or_close_from_another_thread_wakes_a_reader_waiting_for_a_token(
    fake_model: ic.TextModel, polls_rarely: None, stop: str
) -> None:
    stream, reader = blocked_reader(fake_model)
    getattr(stream, stop)()
    reader.join(20)
    assert not reader.is_alive(), f"{stop}() left the reader waiting for its next poll"
    assert isinstance(stream.err(), ic.Cancelled)


def test_cancelling_an_async_stream_wakes_its_reading_thread(
    fake_model: ic.TextModel, polls_rarely: None
) -> None:
    async def run() -> list[ic.Token]:
        stream = fake_model.agenerate("stall", max_tokens=10)
        tokens = [await anext(stream)]
        reading = asyncio.create_task(anext(stream))  # waits on the thread blocked in recv
        await asyncio.sleep(0)  # the task begins to wait
        stream.cancel()
        with pytest.raises(StopAsyncIteration):  # a cancel ends the stream without error
            await asyncio.wait_for(reading, 20)
        return tokens

    assert [t.id for t in asyncio.run(run())] == [100]


def test_a_cancelled_task_of_an_async_stream_lets_aclose_return_at_once(
    fake_model: ic.TextModel, polls_rarely: None
) -> None:
    async def run() -> None:
        stream = fake_model.agenerate("stall", max_tokens=10)
        await anext(stream)
        reading = asyncio.create_task(anext(stream))
        await asyncio.sleep(0)  # the task begins to wait
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await asyncio.wait_for(stream.aclose(), 20)  # once the reading thread has ended
        assert isinstance(stream.err(), ic.Cancelled)

    asyncio.run(run())


# -- close(): bounded, and exactly once under threads ------------------------------------


def test_stop_gives_up_on_a_server_that_outlives_sigkill(
    tmp_path: Path,
    smollm2_path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ignores_sigterm = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    binary = make_executable(tmp_path / "llama-server", ignores_sigterm + FAKE_SERVER.read_text())
    options = ServerOptions(str(binary), smollm2_path, stop_grace=0.3, kill_wait=0.3)
    server = LlamaServer.start(options)
    real_signal = LlamaServer._signal

    def stuck_in_the_kernel(self: LlamaServer, signum: int) -> None:
        if signum != signal.SIGKILL:  # a process stuck in the kernel outlives SIGKILL
            real_signal(self, signum)

    monkeypatch.setattr(LlamaServer, "_signal", stuck_in_the_kernel)
    stopping = threading.Thread(target=server.stop)
    try:
        stopping.start()
        stopping.join(15)
        assert not stopping.is_alive(), "stop() waits forever for an unkillable process"
        assert server.alive()
        assert f"llama-server (pid {server.pid}) is still there" in caplog.text
    finally:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        stopping.join(15)


def test_close_from_two_threads_stops_once_and_returns_when_the_server_is_gone(
    tmp_path: Path, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_exit = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.0), os._exit(0)))\n"
    )
    binary = make_executable(tmp_path / "llama-server", slow_exit + FAKE_SERVER.read_text())
    model = load_fake(binary, smollm2_path)
    assert isinstance(model, LlamaServerModel)
    sent: list[int] = []
    real_signal = LlamaServer._signal

    def counted(self: LlamaServer, signum: int) -> None:
        sent.append(signum)
        real_signal(self, signum)

    monkeypatch.setattr(LlamaServer, "_signal", counted)
    first = threading.Thread(target=model.close)
    first.start()
    assert wait_for(lambda: bool(sent), 10)  # the first close() now waits for the exit
    model.close()
    assert not model.server.alive(), "close() returned while the server was still running"
    first.join(10)
    assert sent == [signal.SIGTERM]


# -- keep-alive connections the server has closed ----------------------------------------


def test_requests_on_connections_the_server_closed_are_sent_again_once_on_a_new_one(
    smollm2_path: str, tmp_path: Path
) -> None:
    with load_fake(fake_binary(tmp_path), smollm2_path, "--fake-close", "/props") as model:
        assert isinstance(model, LlamaServerModel)
        client = model.server.client
        asking = [threading.Thread(target=client.request, args=("GET", "/props")) for _ in "abc"]
        for thread in asking:  # side by side: three connections, all back in the pool,
            thread.start()  # and each closed by the server once it has answered
        for thread in asking:
            thread.join(30)

        def props_seen() -> int:
            return log_lines(model).count("request GET /props")

        assert wait_for(lambda: props_seen() == 4)  # the load's, and the three
        assert client.request("GET", "/props")["total_slots"] == 1
        assert wait_for(lambda: props_seen() > 4)
        assert props_seen() == 5, "sent again on a connection known to be closed"


# -- recovering the ids of a split character ---------------------------------------------


def test_a_split_character_arrives_with_every_id_the_tokenizer_gives(
    fake_model: ic.TextModel,
) -> None:
    tokens = list(fake_model.generate("split", max_tokens=10))
    assert [(t.id, t.text) for t in tokens] == [(10813, ""), (232, ""), (227, "🎉")]


def test_the_token_limit_inside_a_split_character_cuts_it_there(fake_model: ic.TextModel) -> None:
    tokens = list(fake_model.generate("split", max_tokens=2))
    assert [t.id for t in tokens] == [10813, 232]
    assert "".join(t.text for t in tokens) == bytes([240, 159, 142]).decode("utf-8", "replace")


def test_a_stop_id_inside_a_split_character_ends_before_it(fake_model: ic.TextModel) -> None:
    assert [t.id for t in fake_model.generate("split", max_tokens=10, stop_tokens=[232])] == [10813]


def test_ids_the_tokenizer_cannot_confirm_are_delivered_with_a_warning(
    fake_model: ic.TextModel, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = list(fake_model.generate("split, mismatched", max_tokens=10))
    assert [t.id for t in tokens] == [10813, 232, 227]  # the tokenizer's
    assert "could not verify the ids of '🎉'" in caplog.text


def test_a_port_clash_the_log_never_mentions_is_still_retried(
    tmp_path: Path, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama-server logs from a thread of its own: its "couldn't bind" line can be lost when
    it exits. The port, taken by someone else, tells the clash all the same."""
    taken = socket.create_server(("127.0.0.1", 0))
    ports = [taken.getsockname()[1]]
    real_free_port = server_module._free_port
    monkeypatch.setattr(
        server_module, "_free_port", lambda: ports.pop() if ports else real_free_port()
    )
    with taken, load_fake(fake_binary(tmp_path), smollm2_path, "--fake-quiet-bind") as model:
        assert isinstance(model, LlamaServerModel)
        assert model.server.current.port != taken.getsockname()[1]
        assert model.generate("Hi", max_tokens=3).text()
