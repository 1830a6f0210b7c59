"""A server that dies is started again on the next request, within a bound; one left idle
gives its memory back and comes back on the next request. The real llama-server and
SmolLM2 throughout; a wrapper script stands in for a binary that crashes when restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import inference_core as ic
from inference_rocm.backends import LlamaCppBackend
from inference_rocm.keeper import KeptServer
from inference_rocm.model import LlamaServerModel

from .procs import children, make_executable, resident_bytes, wait_for

pytestmark = pytest.mark.server

PROMPT = "The capital of France is"
LONG = "Count from one to a thousand: 1, 2, 3, 4, 5, 6,"  # SmolLM2 keeps going, greedy
HANG = 60.0  # a bound only a hang reaches


def load_fresh(path: str, **options: object) -> LlamaServerModel[KeptServer]:
    model = ic.load(path, backend="llama_cpp", **options)  # type: ignore[arg-type]
    assert isinstance(model, LlamaServerModel)
    assert isinstance(model.server, KeptServer)
    return model


def greedy_ids(model: ic.TextModel, prompt: str = PROMPT) -> list[int]:
    return [token.id for token in model.generate(prompt, max_tokens=8, temperature=0.0)]


def kill(model: LlamaServerModel[KeptServer]) -> int:
    """SIGKILL the model's server and wait until it has ended; its pid. (Its main thread
    ends first: until the others have, the process is still there to send a request to.)"""
    pid = model.server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not model.server.alive(), HANG)
    return pid


@pytest.fixture
def new_children() -> Callable[[], set[int]]:
    before = children()
    return lambda: children() - before


# -- a crash between requests, and during them ---------------------------------------


def test_a_server_killed_between_requests_is_started_again_and_answers_the_same(
    smollm2_path: str,
) -> None:
    with load_fresh(smollm2_path, context_len=512) as model:
        before = greedy_ids(model)
        old = kill(model)
        assert greedy_ids(model) == before
        assert model.restarts == 1
        assert model.server.pid not in (None, old)
        assert greedy_ids(model) == before  # the new server stays: no second restart
        assert model.restarts == 1


def test_streams_in_flight_fail_with_server_crashed_and_the_next_requests_succeed(
    smollm2_path: str,
) -> None:
    with load_fresh(smollm2_path, context_len=512, parallel_slots=4) as model:
        before = greedy_ids(model)
        started = threading.Barrier(5)
        failures: list[BaseException | None] = [None] * 4

        def stream(index: int) -> None:
            tokens = model.generate(LONG, max_tokens=2000)
            next(tokens)
            started.wait(HANG)
            try:
                list(tokens)
            except BaseException as error:
                failures[index] = error

        threads = [threading.Thread(target=stream, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        started.wait(HANG)
        kill(model)
        for thread in threads:
            thread.join(HANG)
        assert all(isinstance(failure, ic.ServerCrashed) for failure in failures), failures
        assert all("SIGKILL" in str(failure) for failure in failures)

        after: list[list[int] | BaseException] = [[] for _ in range(4)]

        def again(index: int) -> None:
            try:
                after[index] = greedy_ids(model)
            except BaseException as error:
                after[index] = error

        threads = [threading.Thread(target=again, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG)
        assert after == [before] * 4
        assert model.restarts == 1  # four threads, one restart


def test_async_and_batch_requests_start_a_dead_server_again(smollm2_path: str) -> None:
    with load_fresh(smollm2_path, context_len=512, parallel_slots=2) as model:
        before = greedy_ids(model)
        kill(model)

        async def agreedy() -> list[int]:
            stream = model.agenerate(PROMPT, max_tokens=8, temperature=0.0)
            return [token.id async for token in stream]

        assert asyncio.run(agreedy()) == before
        kill(model)
        results = model.batch_generate([PROMPT, PROMPT], max_tokens=8, temperature=0.0)
        assert [result.error for result in results] == [None, None]
        assert [[token.id for token in result.tokens] for result in results] == [before] * 2
        assert model.restarts == 2


# -- the bound ------------------------------------------------------------------------


def test_a_server_that_keeps_crashing_is_left_dead_saying_so(
    smollm2_path: str, new_children: Callable[[], set[int]]
) -> None:
    with load_fresh(smollm2_path, context_len=256) as model:
        before = greedy_ids(model)
        for restart in (1, 2, 3):
            kill(model)
            assert greedy_ids(model) == before
            assert model.restarts == restart
        kill(model)
        with pytest.raises(ic.ServerCrashed, match="keeps crashing") as caught:
            greedy_ids(model)
        assert "killed by SIGKILL" in str(caught.value)
        assert caught.value.log_tail, "the verdict carries the server's last lines"
        started = time.monotonic()
        with pytest.raises(ic.ServerCrashed, match="keeps crashing"):
            model.tokenize("still dead")
        assert time.monotonic() - started < 5.0  # nothing was started to find it out
        assert model.restarts == 3
        assert new_children() == set()


def wrapped_server(tmp_path: Path, real: str, before: str) -> tuple[LlamaCppBackend, Path]:
    """A backend whose llama-server is a script that runs `before` (which sees `real`, the
    real binary, and `starts`, a file with a line for each start on a model), then the
    real server; and that file."""
    starts = tmp_path / "starts"
    script = make_executable(
        tmp_path / "llama-server",
        f"""import os, signal, subprocess, sys
real, starts = {real!r}, {str(starts)!r}
if "--model" in sys.argv:
    with open(starts, "a") as log:
        log.write("start\\n")
{before}
os.execv(real, [real, *sys.argv[1:]])
""",
    )
    return LlamaCppBackend(environ={**os.environ, "LLAMA_SERVER_PATH": str(script)}), starts


def test_a_binary_that_crashes_when_started_again_is_not_retried(
    tmp_path: Path,
    smollm2_path: str,
    llama_server_binary: str,
    new_children: Callable[[], set[int]],
) -> None:
    crashing_after_the_first_start = """
if "--model" in sys.argv and os.path.getsize(starts) > len("start\\n"):
    print("ggml_backend: device lost, aborting", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
"""
    backend, starts = wrapped_server(tmp_path, llama_server_binary, crashing_after_the_first_start)
    with backend.load_model(smollm2_path, ic.LoadConfig(context_len=256)) as model:
        assert len(greedy_ids(model)) == 8
        kill(model)
        with pytest.raises(ic.ServerCrashed, match="could not be started again") as caught:
            greedy_ids(model)
        assert "SIGSEGV" in str(caught.value)
        assert "device lost" in caught.value.log_tail
        with pytest.raises(ic.ServerCrashed, match="could not be started again"):
            greedy_ids(model)
        assert starts.read_text().count("start") == 2  # the load, and one restart: no loop
        assert new_children() == set()
    assert new_children() == set()


# -- what turns it off ----------------------------------------------------------------


def test_restart_false_leaves_a_dead_server_dead(
    smollm2_path: str, new_children: Callable[[], set[int]]
) -> None:
    with load_fresh(smollm2_path, context_len=256, restart=False) as model:
        stream = model.generate(LONG, max_tokens=2000)
        next(stream)
        kill(model)
        with pytest.raises(ic.ServerCrashed, match="killed by SIGKILL"):
            list(stream)
        with pytest.raises(ic.ServerCrashed, match="restart=False"):
            greedy_ids(model)
        assert model.restarts == 0
        assert new_children() == set()


def test_nothing_is_started_again_after_close(
    smollm2_path: str, new_children: Callable[[], set[int]]
) -> None:
    model = load_fresh(smollm2_path, context_len=256)
    old = kill(model)
    model.close()
    with pytest.raises(ic.ModelClosed):
        greedy_ids(model)
    # a request that passed the model's check just before close() asks the keeper next
    assert model.server.current.pid == old
    assert not model.asleep
    assert model.restarts == 0
    assert new_children() == set()


def test_close_during_a_restart_leaves_no_server(
    smollm2_path: str, new_children: Callable[[], set[int]]
) -> None:
    model = load_fresh(smollm2_path, context_len=256)
    kill(model)
    outcome: list[BaseException | list[int]] = []
    restarting = threading.Thread(target=lambda: outcome.append(_attempt(model)))
    restarting.start()
    assert wait_for(lambda: bool(new_children()), HANG)  # the new server is starting
    model.close()
    restarting.join(HANG)
    assert wait_for(lambda: new_children() == set(), HANG)
    assert len(outcome) == 1


def _attempt(model: ic.TextModel) -> BaseException | list[int]:
    try:
        return greedy_ids(model)
    except ic.InferenceError as error:
        return error


# -- idle release ---------------------------------------------------------------------


def test_an_idle_server_gives_its_memory_back_and_wakes_to_the_same_answer(
    smollm2_path: str,
) -> None:
    with load_fresh(smollm2_path, context_len=512, keep_alive=2) as model:
        before = greedy_ids(model)
        pid = model.server.pid
        assert not model.asleep
        awake = resident_bytes(pid)
        assert wait_for(lambda: model.asleep, HANG)  # /props, which asks, does not wake it
        asleep = resident_bytes(pid)
        model_bytes = os.path.getsize(smollm2_path)
        assert awake - asleep > model_bytes // 2, (awake, asleep, model_bytes)
        assert greedy_ids(model) == before
        assert not model.asleep
        assert model.server.pid == pid  # woken, not started again
        assert model.restarts == 0


def test_keep_alive_on_a_build_without_sleep_mode_is_refused_before_any_start(
    tmp_path: Path,
    smollm2_path: str,
    llama_server_binary: str,
    new_children: Callable[[], set[int]],
) -> None:
    without_sleep_mode = """
if "--help" in sys.argv:  # the real help, less the flag an older build lacks
    help = subprocess.run([real, "--help"], capture_output=True, text=True).stdout
    print("\\n".join(line for line in help.splitlines() if "sleep-idle" not in line))
    raise SystemExit(0)
"""
    backend, starts = wrapped_server(tmp_path, llama_server_binary, without_sleep_mode)
    with pytest.raises(ic.UnsupportedOption, match="no sleep mode") as refused:
        backend.load_model(smollm2_path, ic.LoadConfig(context_len=256, keep_alive=5))
    assert refused.value.option == "keep_alive"
    assert not starts.exists() and new_children() == set()
    with backend.load_model(smollm2_path, ic.LoadConfig(context_len=256)) as model:
        assert len(greedy_ids(model)) == 8  # without keep_alive the build loads


def test_a_server_without_keep_alive_stays_resident(shared_model: ic.TextModel) -> None:
    assert isinstance(shared_model, LlamaServerModel)
    list(shared_model.generate(PROMPT, max_tokens=2))
    time.sleep(2.5)
    assert not shared_model.asleep


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "2", True, 31 * 86_400])
def test_keep_alive_refuses_what_is_not_a_duration(value: object) -> None:
    with pytest.raises(ic.InvalidValue, match="keep_alive"):
        ic.LoadConfig(keep_alive=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1, "yes", None])
def test_restart_takes_only_true_or_false(value: object) -> None:
    with pytest.raises(ic.InvalidValue, match="restart"):
        ic.LoadConfig(restart=value)  # type: ignore[arg-type]
