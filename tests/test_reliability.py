"""Faults a child server and its caller can meet: nothing lost, nothing leaked, nothing hung."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import inference_core as ic
from inference_rocm import server as server_module
from inference_rocm.backends import LlamaCppBackend
from inference_rocm.keeper import KeptServer
from inference_rocm.model import LlamaServerModel

from .procs import (
    children,
    library_growth,
    make_executable,
    new_fds,
    open_fds,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.server

FAKE_SERVER = Path(__file__).parent / "fakes" / "fake_llama_server.py"
# Bytes per call that count as a leak: about the least an object kept per call holds (a
# token, a scope, a request's head hold more). The bounded log tail's churn is a few KiB
# in all, however many calls.
LEAK_PER_CALL = 64
LONG = "Count from one to a thousand: 1, 2, 3, 4, 5, 6,"  # SmolLM2 keeps going, greedy
# Bounds on how long something may take are hang guards, not speed claims: generous
# enough for a loaded 2-core machine (speed is measured in benchmarks/).
HANG = 30.0


@pytest.fixture
def new_children() -> Callable[[], set[int]]:
    """Children started since the test began (the session's shared server is older)."""
    before = children()
    return lambda: children() - before


def load_fresh(path: str, **options: object) -> LlamaServerModel[KeptServer]:
    model = ic.load(path, backend="llama_cpp", **options)  # type: ignore[arg-type]
    assert isinstance(model, LlamaServerModel)
    return model


# -- the server dies or hangs while serving -------------------------------------


def test_sigkill_mid_stream_raises_server_crashed_and_the_model_is_dead(smollm2_path: str) -> None:
    model = load_fresh(smollm2_path, context_len=512, restart=False)
    pid = model.server.pid
    assert pid is not None
    stream = model.generate(LONG, max_tokens=2000)
    next(stream)
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(ic.ServerCrashed, match="killed by SIGKILL") as caught:
        list(stream)
    assert time.monotonic() - started < HANG
    assert caught.value.log_tail, "the crash carries the server's log"
    assert model.err() is caught.value
    started = time.monotonic()
    with pytest.raises(ic.ServerCrashed, match="has died"):
        list(model.generate("again", max_tokens=2))
    assert time.monotonic() - started < HANG
    model.close()
    model.close()


def test_sigstop_timeout_still_ends_the_call_and_close_returns(smollm2_path: str) -> None:
    model = load_fresh(smollm2_path, context_len=512)
    model.server.current.options = attrs.evolve(model.server.current.options, stop_grace=0.5)
    pid = model.server.pid
    assert pid is not None
    list(model.generate(LONG, max_tokens=1))  # the prompt is cached: its next first token is quick
    stream = model.generate(LONG, max_tokens=2000, timeout=5.0)
    next(stream)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ic.GenerationTimeout):
            list(stream)
        assert time.monotonic() - started < HANG
        started = time.monotonic()
        model.close()
        assert time.monotonic() - started < HANG
        assert wait_gone(pid, HANG)
    finally:
        if not wait_gone(pid, 0):
            os.kill(pid, signal.SIGKILL)


# -- the server fails to start ----------------------------------------------------

FAILURES = {
    "exit1": (
        "print('error: unknown model architecture: xyz', flush=True)\nraise SystemExit(1)",
        "exited with status 1",
        "unknown model architecture",
    ),
    "sigill": (
        "import os, signal\nprint('load_tensors: loading', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGILL)",
        "killed by SIGILL",
        "load_tensors",
    ),
    "sigabrt": (
        "import os, signal\nprint('ggml_abort: HIP error', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGABRT)",
        "killed by SIGABRT",
        "ggml_abort",
    ),
    "oom": (
        "print('alloc_buffer: hipMalloc failed: out of memory', flush=True)\nraise SystemExit(1)",
        "ran out of GPU memory",
        "hipMalloc failed",
    ),
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_a_server_that_dies_while_loading_gives_server_start_error(
    kind: str, tmp_path: Path, smollm2_path: str, new_children: Callable[[], set[int]]
) -> None:
    source, message, log_line = FAILURES[kind]
    binary = make_executable(tmp_path / "llama-server", source)
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(binary)})
    started = time.monotonic()
    with pytest.raises(ic.ServerStartError, match=message) as caught:
        backend.load_model(smollm2_path, ic.LoadConfig())
    assert time.monotonic() - started < HANG  # the exit ends the wait, not a timeout
    assert log_line in caught.value.log_tail
    assert new_children() == set()


def test_a_server_that_never_becomes_ready_times_out_on_its_stall(
    tmp_path: Path, smollm2_path: str, new_children: Callable[[], set[int]]
) -> None:
    binary = make_executable(
        tmp_path / "llama-server", "import time\nprint('loading', flush=True)\ntime.sleep(60)"
    )
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(binary)})
    started = time.monotonic()
    with pytest.raises(ic.ServerStartError, match="made no progress"):
        backend.load_model(smollm2_path, ic.LoadConfig(load_timeout=0.5))
    assert time.monotonic() - started < HANG
    assert new_children() == set()


def test_a_server_that_cannot_bind_is_retried_then_reported(
    tmp_path: Path, smollm2_path: str, new_children: Callable[[], set[int]]
) -> None:
    binary = make_executable(
        tmp_path / "llama-server",
        'print("couldn\'t bind HTTP server socket, hostname: 127.0.0.1", flush=True)\n'
        "raise SystemExit(1)",
    )
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(binary)})
    with pytest.raises(ic.ServerStartError, match="could not bind a port"):
        backend.load_model(smollm2_path, ic.LoadConfig())
    assert new_children() == set()


def test_a_port_clash_is_retried_on_a_new_port(
    smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    taken = socket.create_server(("127.0.0.1", 0))
    ports = [taken.getsockname()[1]]
    real_free_port = server_module._free_port
    monkeypatch.setattr(
        server_module, "_free_port", lambda: ports.pop() if ports else real_free_port()
    )
    with taken, load_fresh(smollm2_path, context_len=256) as model:
        assert model.server.current.port != taken.getsockname()[1]
        assert len(list(model.generate("Hi", max_tokens=2))) == 2


# -- bad files never start a process ----------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "wrong-magic", "truncated"])
def test_bad_model_files_fail_before_any_process_starts(
    kind: str, tmp_path: Path, smollm2_path: str, new_children: Callable[[], set[int]]
) -> None:
    path = tmp_path / "model.gguf"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong-magic":
        path.write_bytes(b"\x7fELF" + b"\0" * 100)
    elif kind == "truncated":
        path.write_bytes(Path(smollm2_path).read_bytes()[:5000])
    with pytest.raises(ic.InvalidModelFile) as caught:
        ic.load(path, backend="llama_cpp")
    assert str(path) in str(caught.value)
    assert new_children() == set()


@pytest.mark.parametrize("name", ["with spaces in it.gguf", "-starts-with-a-dash.gguf"])
def test_awkward_model_paths_are_passed_as_single_arguments(
    name: str, tmp_path: Path, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    awkward = tmp_path / name
    awkward.symlink_to(smollm2_path)
    monkeypatch.chdir(tmp_path)  # a relative path starting with "-" is the hard case
    with load_fresh(name, context_len=256) as model:
        argv = Path(f"/proc/{model.server.pid}/cmdline").read_bytes().split(b"\0")
        assert str(awkward).encode() in argv
        assert len(list(model.generate("Hi", max_tokens=2))) == 2


# -- the parent dies -------------------------------------------------------------

ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import inference_core as ic
    holder = []
    def load():  # from a short-lived thread: PR_SET_PDEATHSIG must not fire when it ends
        holder.append(ic.load(sys.argv[1], backend="llama_cpp", context_len=256))
    worker = threading.Thread(target=load)
    worker.start()
    worker.join()
    time.sleep(0.5)
    model = holder[0]
    assert len(list(model.generate("Hi", max_tokens=2))) == 2
    print(model.server.pid, flush=True)
    time.sleep(60)
    """
)


def test_the_server_dies_when_its_parent_is_killed(smollm2_path: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, smollm2_path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        assert not wait_gone(server_pid, 2.0), "the server died with the loading thread"
        parent.kill()
        parent.wait()
        assert wait_gone(server_pid, HANG), "the server outlived its parent"
    finally:
        parent.kill()


# -- many threads, churn ------------------------------------------------------------


def test_sixteen_threads_cancel_time_out_and_close_without_deadlock(smollm2_path: str) -> None:
    """Four roles, four threads each (four closing at once); the close waits until a
    timeout has happened, so the outcome does not depend on the machine's load."""
    model = load_fresh(smollm2_path, context_len=256, parallel_slots=4)
    pid = model.server.pid
    outcomes: dict[int, object] = {}
    timed_out = threading.Event()

    def cancelling() -> object:
        stream = model.generate(LONG, max_tokens=400)
        next(stream)
        stream.cancel()
        after = list(stream)
        return ("cancelled", after, type(stream.err()))

    def timing_out() -> object:
        try:
            list(model.generate(LONG, max_tokens=400, timeout=0.2))
        except ic.GenerationTimeout as error:
            timed_out.set()
            return error
        return "finished within 0.2 s"

    def closing() -> object:
        timed_out.wait(HANG)
        model.close()
        return "closed"

    def counting() -> object:
        return len(list(model.generate("Count to ten:", max_tokens=30)))

    roles = [cancelling, timing_out, closing, counting]

    def work(index: int) -> None:
        try:
            outcomes[index] = roles[index % 4]()
        except ic.InferenceError as error:
            outcomes[index] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert sorted(outcomes) == list(range(16))
    closed_first = (ic.ModelClosed,)
    for index, outcome in outcomes.items():
        role = roles[index % 4]
        if role is cancelling:
            assert outcome == ("cancelled", [], ic.Cancelled) or isinstance(
                outcome, closed_first
            ), (index, outcome)
        elif role is timing_out:
            assert isinstance(outcome, (ic.GenerationTimeout, *closed_first)), (index, outcome)
        elif role is closing:
            assert outcome == "closed", (index, outcome)
        else:
            counted = type(outcome) is int and 1 <= outcome <= 30
            assert counted or isinstance(outcome, closed_first), (index, outcome)
    assert sum(outcome == "closed" for outcome in outcomes.values()) == 4  # four at once
    assert any(isinstance(o, ic.GenerationTimeout) for o in outcomes.values())
    model.close()
    assert pid is not None and wait_gone(pid, HANG)
    with pytest.raises(ic.ModelClosed):
        model.generate("Hi")


def test_fifty_load_close_cycles_leave_nothing_behind(
    smollm2_path: str, new_children: Callable[[], set[int]]
) -> None:
    load_fresh(smollm2_path, context_len=128).close()  # warm caches and the spawner thread
    fds, threads = open_fds(), set(threading.enumerate())
    for _ in range(50):
        model = load_fresh(smollm2_path, context_len=128)
        assert len(list(model.generate("Hi", max_tokens=1))) == 1
        model.close()
    assert wait_for(lambda: new_children() == set()), new_children()
    assert wait_for(lambda: not new_fds(fds)), new_fds(fds)
    assert wait_for(lambda: not set(threading.enumerate()) - threads), threading.enumerate()


def test_generations_do_not_grow_the_librarys_memory(shared_model: ic.TextModel) -> None:
    def run(count: int) -> None:
        for _ in range(count):
            stream = shared_model.generate("Hi", max_tokens=1)
            assert len(list(stream)) == 1

    run(100)  # warm up: caches, connection pool
    growth = library_growth(lambda: run(400))
    assert growth < 400 * LEAK_PER_CALL, f"{growth} bytes more held after 400 generations"


# -- a misbehaving stream -------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_model(
    smollm2_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ic.TextModel]:
    binary = make_executable(
        tmp_path_factory.mktemp("fake") / "llama-server", FAKE_SERVER.read_text()
    )
    model = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(binary)}).load_model(
        smollm2_path, ic.LoadConfig()
    )
    yield model
    model.close()


def test_fake_server_speaks_well_when_asked(fake_model: ic.TextModel) -> None:
    stream = fake_model.generate("fine", max_tokens=10)
    assert [t.id for t in stream] == [100, 101, 102]
    assert stream.metrics is not None and stream.metrics.generated_tokens == 3


def test_generate_sends_each_option_on_the_wire_and_stops_on_a_stop_id(
    fake_model: ic.TextModel,
) -> None:
    assert isinstance(fake_model, LlamaServerModel)
    options: dict[str, Any] = {"temperature": 0.7, "top_k": 17, "top_p": 0.8, "min_p": 0.1}
    stream = fake_model.generate(
        "wire", max_tokens=5, repeat_penalty=1.3, seed=42, stop_tokens=[101], **options
    )
    assert [token.id for token in stream] == [100]  # the fake sends 100, 101, 102

    def sent() -> list[dict[str, Any]]:  # the fake's log reaches us on a thread of its own
        lines = fake_model.server.current.log_tail(60).splitlines()
        bodies = [json.loads(line[5:]) for line in lines if line.startswith("body ")]
        return [body for body in bodies if body["prompt"] == "wire"]

    assert wait_for(lambda: bool(sent()))
    (body,) = sent()
    assert {key: body[key] for key in options} == options
    assert (body["repeat_penalty"], body["seed"], body["stream"]) == (1.3, 42, True)
    assert body["n_predict"] == 5 + 3  # room for a character the limit would cut in two
    assert body["return_tokens"] is True and body["timings_per_token"] is True


def test_malformed_json_mid_stream_is_a_generation_error(fake_model: ic.TextModel) -> None:
    stream = fake_model.generate("malformed", max_tokens=10)
    assert next(stream).id == 100
    with pytest.raises(ic.GenerationError, match="malformed stream"):
        next(stream)


def test_an_error_event_mid_stream_raises_the_servers_message(fake_model: ic.TextModel) -> None:
    tokens: list[ic.Token] = []
    with pytest.raises(ic.GenerationError, match="slot exploded"):
        tokens.extend(fake_model.generate("error", max_tokens=10))
    assert [t.id for t in tokens] == [100, 101]


@pytest.mark.parametrize("prompt", ["truncate", "eof-chunk"])
def test_a_stream_without_its_final_event_is_never_a_silent_truncation(
    fake_model: ic.TextModel, prompt: str
) -> None:
    with pytest.raises(
        ic.GenerationError, match=r"before its end|without the server's final event"
    ):
        list(fake_model.generate(prompt, max_tokens=10))
    assert [t.id for t in fake_model.generate("fine", max_tokens=10)] == [100, 101, 102]
