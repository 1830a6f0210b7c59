"""`load_timeout` (LoadConfig, `--load-timeout`) bounds the load of every backend: a
server started here fails once it makes no progress for that long, and may take longer
in all while it does; a server at a URL has the whole load within it.

Fakes stand in for servers that stall, which the real one cannot be made to do on demand.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import inference_core as ic
from inference_core.testing import FakeBackend
from inference_rocm.backends import RocmBackend

from .procs import make_executable
from .test_cli import assert_one_line_error, cli
from .test_deadlines import FAKE_SERVER
from .test_devices import workstation
from .test_rocm_backend import with_kfd

# Far under the default of 120 s, far over any load on a busy machine: only a load that
# ignored the timeout it was given takes this long.
HANG = 60.0


def fake_server(folder: Path, loading: str) -> str:
    """A llama-server that runs `loading` when started on a model; asked for its version
    or its devices, it has none."""
    guard = "import os, sys, time\nif '--model' not in sys.argv:\n    sys.exit(0)\n"
    return str(make_executable(folder / "llama-server", guard + loading))


@pytest.fixture
def stalling(tmp_path: Path) -> str:
    """A llama-server that logs one line, then makes no progress."""
    return fake_server(tmp_path, "print('loading', flush=True)\ntime.sleep(600)\n")


def test_a_local_server_that_stalls_fails_after_the_stall_configured(
    stalling: str, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_SERVER_PATH", stalling)
    started = time.monotonic()
    with pytest.raises(ic.ServerStartError, match=r"made no progress .* for 1\.5 s"):
        ic.load(smollm2_path, backend="llama_cpp", load_timeout=1.5)
    assert time.monotonic() - started < HANG


def test_a_local_server_making_progress_may_load_for_longer_than_the_timeout(
    tmp_path: Path, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log line is progress: a big model that keeps reporting is not cut off."""
    slow = fake_server(
        tmp_path,
        "for _ in range(12):\n"
        "    print('loading tensors', flush=True)\n"
        "    time.sleep(0.25)\n"
        f"os.execv(sys.executable, [sys.executable, {str(FAKE_SERVER)!r}, *sys.argv[1:]])\n",
    )
    monkeypatch.setenv("LLAMA_SERVER_PATH", slow)
    started = time.monotonic()
    with ic.load(smollm2_path, backend="llama_cpp", load_timeout=1) as model:
        assert time.monotonic() - started > 2  # twelve lines, a quarter of a second apart
        assert model.generate("fine", max_tokens=3).text() == " t0 t1 t2"


def test_the_rocm_backend_fails_after_the_stall_configured(
    tmp_path: Path, stalling: str, smollm2_path: str
) -> None:
    workstation(with_kfd(tmp_path / "root"))
    environ = {"PATH": os.defpath, "ROCM_LLAMA_SERVER_PATH": stalling}
    backend = RocmBackend(tmp_path / "root", environ)
    started = time.monotonic()
    with pytest.raises(ic.ServerStartError, match=r"made no progress .* for 1\.5 s"):
        backend.load_model(smollm2_path, ic.LoadConfig(load_timeout=1.5))
    assert time.monotonic() - started < HANG


@pytest.fixture
def health_only() -> Iterator[Callable[[int], str]]:
    """Servers that answer /health with a status and say nothing to anything else: one
    still loading its model (503), or one that is up (200) and never answers /props."""
    done = threading.Event()
    listeners: list[socket.socket] = []

    def serve(conn: socket.socket, answer: bytes) -> None:
        with conn:
            while not done.is_set() and (head := conn.recv(65536)):
                if head.startswith(b"GET /health "):
                    conn.sendall(answer)

    def accept(listener: socket.socket, answer: bytes) -> None:
        with contextlib.suppress(OSError):  # closed at teardown
            while True:
                conn = listener.accept()[0]
                threading.Thread(target=serve, args=(conn, answer), daemon=True).start()

    def start(status: int) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        answer = b"HTTP/1.1 %d Status\r\nContent-Length: 2\r\n\r\n{}" % status
        threading.Thread(target=accept, args=(listener, answer), daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    done.set()
    for listener in listeners:
        listener.close()


def test_a_remote_server_still_loading_fails_the_load_at_its_timeout(
    health_only: Callable[[int], str],
) -> None:
    started = time.monotonic()
    with pytest.raises(ic.ServerNotReady, match=r"still not ready .* after 1\.5 s"):
        ic.load(health_only(503), load_timeout=1.5)
    assert 1.0 < time.monotonic() - started < HANG


def test_a_remote_load_has_all_its_requests_within_its_timeout(
    health_only: Callable[[int], str],
) -> None:
    started = time.monotonic()
    with pytest.raises(ic.ServerNotReady, match="/props did not answer within the load timeout"):
        ic.load(health_only(200), load_timeout=1.5)
    assert time.monotonic() - started < HANG


@pytest.mark.parametrize("command", [["run", "hi"], ["chat"], ["embed", "hi"]])
def test_the_command_line_passes_its_load_timeout_to_the_backend(
    stalling: str, smollm2_path: str, command: list[str]
) -> None:
    name, *rest = command
    argv = [name, "--model", smollm2_path, "-b", "llama_cpp", "--load-timeout", "1.5", *rest]
    result = cli(*argv, stdin="", env={"LLAMA_SERVER_PATH": stalling})
    assert_one_line_error(result, "made no progress", "for 1.5 s", "(--load-timeout)")


def test_the_command_line_passes_its_load_timeout_to_a_remote_load(
    health_only: Callable[[int], str],
) -> None:
    result = cli("run", "--model", health_only(503), "--load-timeout", "1.5", "hi")
    assert_one_line_error(result, "still not ready", "after 1.5 s")


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "1e9"])
def test_a_load_timeout_that_is_not_a_time_is_a_usage_error(value: str) -> None:
    result = cli("run", f"--load-timeout={value}", "hi")
    assert result.returncode == 2
    assert "argument --load-timeout: load_timeout must be a number in (0.0" in result.stderr


def test_a_backend_with_nothing_to_wait_for_takes_a_load_timeout_too() -> None:
    with FakeBackend().load_model("fake", ic.LoadConfig(load_timeout=0.5)) as model:
        assert model.generate("one two", max_tokens=2).text() == "one two"
