"""Logging is for people, not a channel: each part logs to its own logger and nothing
reconfigures logging at run time; what needs a server's log gets it from the server."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

import pytest

import inference_core as ic
from inference_core._cli_progress import Spinner
from inference_rocm import build
from inference_rocm.backends import LlamaCppBackend, load_with_server
from inference_rocm.model import LlamaServerModel

from .procs import make_executable

OUTPUT = "inference_rocm.server.output"


def logging_state() -> list[tuple[str, int, tuple[logging.Handler, ...]]]:
    names = ["", "inference_core", "inference_rocm", "inference_rocm.server", OUTPUT]
    loggers = [logging.getLogger(name) for name in names]
    return [(name, lg.level, tuple(lg.handlers)) for name, lg in zip(names, loggers, strict=True)]


@pytest.mark.server
def test_the_servers_lines_and_the_librarys_messages_have_loggers_of_their_own(
    smollm2_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with ic.load(smollm2_path, backend="llama_cpp", context_len=128) as model:
        assert isinstance(model, LlamaServerModel)
        port = model.server.current.port
        # the server answers before its log thread may have read its last lines: wait for them
        deadline = time.monotonic() + 60
        while not any("listening" in r.getMessage() for r in caplog.records if r.name == OUTPUT):
            assert time.monotonic() < deadline, "the server's 'listening' line never came"
            time.sleep(0.05)
    output = [r.getMessage() for r in caplog.records if r.name == OUTPUT]
    library = [r.getMessage() for r in caplog.records if r.name == "inference_rocm.server"]
    assert any("listening" in line for line in output)
    assert all(line.startswith(f"[{port}] ") for line in output)
    assert any(line.startswith("starting ") for line in library)
    assert not any(line.startswith(f"[{port}] ") for line in library)


def test_a_failed_start_carries_the_first_lines_of_a_long_log(
    tmp_path: Path, smollm2_path: str
) -> None:
    chatty = make_executable(
        tmp_path / "llama-server",
        "for n in range(500):\n    print(f'line {n}', flush=True)\nraise SystemExit(1)",
    )
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(chatty)})
    with pytest.raises(ic.ServerStartError) as caught:
        backend.load_model(smollm2_path, ic.LoadConfig())
    kept = caught.value.log.splitlines()
    assert kept[:400] == [f"line {n}" for n in range(400)]
    assert kept[400] == "... (40 lines left out)"
    assert kept[401:] == [f"line {n}" for n in range(440, 500)]
    assert caught.value.log_tail.splitlines() == [f"line {n}" for n in range(475, 500)]


def test_the_build_proof_leaves_logging_alone(tmp_path: Path, smollm2_path: str) -> None:
    seen: list[list[tuple[str, int, tuple[logging.Handler, ...]]]] = []

    def watching(binary: str, path: str, config: ic.LoadConfig, **options: Any) -> ic.TextModel:
        seen.append(logging_state())
        return load_with_server(binary, path, config, **options)

    before = logging_state()
    crash = "import os, signal\nprint('up', flush=True)\nos.kill(os.getpid(), signal.SIGILL)"
    binary = make_executable(tmp_path / "bin" / "llama-server", crash)
    with pytest.raises(build.BuildError, match="does not run here"):
        build.prove(binary, smollm2_path, load=watching)
    assert len(seen) == 2  # the first try, then one at a higher log level after the signal
    assert seen == [before, before]
    assert logging_state() == before


def test_the_spinner_leaves_logging_alone() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    before = logging_state()
    terminal = Terminal()
    with Spinner(terminal, "loading model.gguf", enabled=True, interval=0.01):
        assert logging_state() == before
    assert logging_state() == before
    assert "loading model.gguf" in terminal.getvalue()


def failed_start_log(tmp_path: Path, smollm2_path: str, writes: str) -> str:
    """The log of a start whose server writes ``writes`` (Python: `key` holds its API
    key) and exits with status 1."""
    script = (
        "import os, sys\n"
        "key = os.environ['LLAMA_API_KEY']\n"
        f"sys.stdout.write({writes})\n"
        "sys.stdout.flush()\n"
        "raise SystemExit(1)\n"
    )
    chatty = make_executable(tmp_path / "llama-server", script)
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(chatty)})
    with pytest.raises(ic.ServerStartError) as caught:
        backend.load_model(smollm2_path, ic.LoadConfig())
    return caught.value.log


def test_lines_longer_than_a_read_are_kept_whole_and_an_endless_one_in_pieces(
    tmp_path: Path, smollm2_path: str
) -> None:
    """The log is read from the pipe in blocks: a line across blocks is one line, and a
    line with no end in sight is kept in pieces of 64 KiB, not held without bound."""
    writes = "'a' * 10000 + '\\n' + 'b' * 200000 + '\\nend\\n'"
    lines = failed_start_log(tmp_path, smollm2_path, writes).splitlines()
    assert lines[0] == "a" * 10000 and lines[-1] == "end"
    pieces = lines[1:-1]
    assert "".join(pieces) == "b" * 200000
    assert len(pieces) > 1 and all(len(piece) <= 64 * 1024 + 4096 for piece in pieces)


def test_the_key_is_masked_in_a_line_without_end_wherever_it_is_cut(
    tmp_path: Path, smollm2_path: str
) -> None:
    log = failed_start_log(tmp_path, smollm2_path, "('z' * 7 + key) * 5000").replace("\n", "")
    assert log.count("***") == 5000 and log.replace("***", "") == "z" * 7 * 5000
