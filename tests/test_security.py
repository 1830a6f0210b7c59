"""The doors a local server opens, closed: loopback only, a secret key, a clean environment."""

from __future__ import annotations

import http.client
import logging
import os
from pathlib import Path

import pytest

import inference_core as ic
from inference_rocm.backends import LlamaCppBackend, load_with_server
from inference_rocm.keeper import KeptServer
from inference_rocm.model import LlamaServerModel

from .procs import child_argv, make_executable

pytestmark = pytest.mark.server


def child_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def listening_addresses(pid: int, port: int) -> set[str]:
    """Local addresses of the process's listening TCP sockets on `port` (hex, as /proc shows)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(address)
    return found


@pytest.fixture
def model(shared_model: ic.TextModel) -> LlamaServerModel[KeptServer]:
    assert isinstance(shared_model, LlamaServerModel)
    return shared_model


def test_the_server_listens_on_loopback_only(model: LlamaServerModel[KeptServer]) -> None:
    assert model.server.pid is not None
    assert listening_addresses(model.server.pid, model.server.current.port) == {
        "0100007F"
    }  # 127.0.0.1


def test_the_key_is_in_the_environment_never_on_argv(model: LlamaServerModel[KeptServer]) -> None:
    assert model.server.pid is not None
    key = child_environ(model.server.pid)["LLAMA_API_KEY"]
    assert len(key) >= 32
    assert not any(key in arg for arg in child_argv(model.server.pid))


def test_each_server_gets_a_fresh_key(
    model: LlamaServerModel[KeptServer], smollm2_path: str
) -> None:
    assert model.server.pid is not None
    with ic.load(smollm2_path, backend="llama_cpp", context_len=128) as other:
        assert isinstance(other, LlamaServerModel) and other.server.pid is not None
        assert (
            child_environ(other.server.pid)["LLAMA_API_KEY"]
            != child_environ(model.server.pid)["LLAMA_API_KEY"]
        )


def test_a_request_without_the_key_is_refused(model: LlamaServerModel[KeptServer]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", model.server.current.port, timeout=10)
    connection.request("POST", "/completion", body=b'{"prompt": "hi", "n_predict": 1}')
    assert connection.getresponse().status == 401
    connection.close()


def test_the_web_ui_is_off(model: LlamaServerModel[KeptServer]) -> None:
    assert model.server.pid is not None
    assert "--no-webui" in child_argv(model.server.pid)
    connection = http.client.HTTPConnection("127.0.0.1", model.server.current.port, timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status != 200 or b"<html" not in response.read().lower()
    connection.close()


def test_the_child_environment_carries_only_what_it_needs(
    smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("LLAMA_ARG_HOST", "0.0.0.0")  # would override our --host
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "0")
    with ic.load(smollm2_path, backend="llama_cpp", context_len=128) as loaded:
        assert isinstance(loaded, LlamaServerModel) and loaded.server.pid is not None
        env = child_environ(loaded.server.pid)
        assert "AWS_SECRET_ACCESS_KEY" not in env and "LLAMA_ARG_HOST" not in env
        assert env["HIP_VISIBLE_DEVICES"] == "0"
        assert set(env) <= {
            "PATH",
            "HOME",
            "LANG",
            "LC_ALL",
            "TMPDIR",
            "LD_LIBRARY_PATH",
            "LLAMA_API_KEY",
        } | {name for name in env if name.startswith(("HIP_", "ROCR_", "HSA_", "GGML_", "VK_"))}


@pytest.mark.parametrize(("environ", "inherited"), [(None, True), ({}, False)])
def test_an_empty_environment_is_empty_and_only_none_inherits(
    smollm2_path: str,
    llama_server_binary: str,
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str] | None,
    inherited: bool,
) -> None:
    monkeypatch.setenv("GGML_SENTINEL", "from the parent")
    config = ic.LoadConfig(context_len=128)
    with load_with_server(
        llama_server_binary, smollm2_path, config, gpu_layers=0, environ=environ
    ) as loaded:
        assert loaded.server.pid is not None
        assert ("GGML_SENTINEL" in child_environ(loaded.server.pid)) is inherited


def test_no_shell_starts_the_server(
    model: LlamaServerModel[KeptServer], llama_server_binary: str
) -> None:
    assert model.server.pid is not None
    argv = child_argv(model.server.pid)
    assert os.path.realpath(argv[0]) == os.path.realpath(llama_server_binary)
    assert argv[argv.index("--model") + 1] == model.info.path


def test_the_key_never_reaches_our_logs(
    tmp_path: Path, smollm2_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    leaky = make_executable(
        tmp_path / "llama-server",
        "import os\nprint('my key is', os.environ['LLAMA_API_KEY'], flush=True)\n"
        "raise SystemExit(1)",
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ic.ServerStartError) as caught:
        LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(leaky)}).load_model(
            smollm2_path, ic.LoadConfig()
        )
    assert "my key is ***" in caught.value.log_tail
    forwarded = [r.getMessage() for r in caplog.records if r.name == "inference_rocm.server.output"]
    assert any("my key is ***" in line for line in forwarded)


def test_a_real_load_and_generation_log_no_key(
    smollm2_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with ic.load(smollm2_path, backend="llama_cpp", context_len=128) as loaded:
        assert isinstance(loaded, LlamaServerModel) and loaded.server.pid is not None
        key = child_environ(loaded.server.pid)["LLAMA_API_KEY"]
        assert list(loaded.generate("Hi", max_tokens=2))
    assert caplog.records
    assert not any(key in record.getMessage() for record in caplog.records)
