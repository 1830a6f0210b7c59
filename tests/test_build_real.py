"""A real CPU build from the pinned sources: minutes, so CI runs it on its own (tox -e build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference_core import LoadConfig
from inference_rocm.backends import LlamaCppBackend
from inference_rocm.binaries import find_binary

pytestmark = [pytest.mark.build, pytest.mark.server]


def test_cpu_build_is_found_automatically_and_runs_here(tmp_path: Path, smollm2_path: str) -> None:
    environ = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "inference_core", "server", "build", "--backend", "cpu"]
    result = subprocess.run(
        [*command, "--jobs", "2", "--json"],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads(result.stdout)
    assert manifest["decode_tokens_per_second"] > 0
    binary = Path(manifest["path"]) / "bin" / "llama-server"
    assert find_binary({"PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}).path == str(binary)
    assert not list((tmp_path / "inference-core" / "builds").glob(".building-*"))

    backend = LlamaCppBackend(environ={"PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)})
    assert any(str(binary) in detail for detail in backend.status().details)
    with backend.load_model(smollm2_path, LoadConfig(context_len=512)) as model:
        assert len(list(model.generate("The capital of France is", max_tokens=32))) == 32

    listed = subprocess.run(
        [sys.executable, "-m", "inference_core", "server", "list", "--json"],
        env=environ, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert [entry["name"] for entry in json.loads(listed.stdout)] == [binary.parents[1].name]
