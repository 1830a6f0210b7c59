"""Tools in the model's own format under a template that also thinks: the tools template
(tests/templates/tools.jinja) with the thinking template's generation prompt, which
opens a <think> block. A forced call does not think; with "auto" the thinking comes
first, on its own channel, and calls are looked for in the answer only. (llama-server's
own analysis of this template finds no thinking, so its default, think=None, is off.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

import inference_core as ic
from inference_core.testing.contracts import TOOLS
from inference_core.tools import Choice, ToolRequest
from inference_rocm.model import LlamaServerModel
from inference_rocm.native_tools import NativeToolPlan

pytestmark = pytest.mark.server

TEMPLATES = Path(__file__).parent / "templates"
PROMPT = "{%- if add_generation_prompt -%}"
QUESTION = [ic.Message("user", "What is the weather in Paris?")]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}


def thinking_tools_template() -> str:
    """tools.jinja up to its generation prompt, then think.jinja's."""
    tools = (TEMPLATES / "tools.jinja").read_text()
    think = (TEMPLATES / "think.jinja").read_text()
    return tools[: tools.index(PROMPT)] + think[think.index(PROMPT) :]


@pytest.fixture(scope="module")
def model(smollm2_path: str, llama_server_binary: str) -> Iterator[ic.TextModel]:
    with ic.load(
        smollm2_path,
        backend="llama_cpp",
        context_len=2048,
        chat_template=thinking_tools_template(),
    ) as loaded:
        yield loaded


def test_the_template_both_thinks_and_has_its_own_tool_format(model: ic.TextModel) -> None:
    assert model.capabilities.tools == "native" and model.capabilities.reasoning


@pytest.mark.parametrize("choice", ["required", "get_time"])
def test_a_forced_call_does_not_think(model: ic.TextModel, choice: str) -> None:
    stream = model.chat(QUESTION, tools=TOOLS, tool_choice=choice, max_tokens=60)
    tokens = list(stream)
    assert stream.err() is None and stream.finish_reason == "tool_calls"
    assert [token.channel for token in tokens] == ["content"] * len(tokens)
    assert stream.reasoning_text() == "" and len(stream.tool_calls) == 1
    call = stream.tool_calls[0]
    jsonschema.validate(call.arguments, PARAMETERS[call.name])
    assert choice == "required" or call.name == choice
    prompt = model.count_tokens(QUESTION, tools=TOOLS, think=False)
    assert stream.metrics is not None and stream.metrics.prompt_tokens == prompt


def test_think_true_with_a_forced_call_is_refused(model: ic.TextModel) -> None:
    with pytest.raises(ic.UnsupportedOption) as refused:
        model.chat(QUESTION, tools=TOOLS, tool_choice="required", think=True, max_tokens=8)
    assert refused.value.option == "think" and "tool_choice='auto'" in str(refused.value)
    assert model.chat(QUESTION, max_tokens=2).err() is None  # the model keeps serving


def test_with_auto_the_thinking_comes_first_on_its_own_channel(model: ic.TextModel) -> None:
    stream = model.chat(QUESTION, tools=TOOLS, think=True, reasoning_budget=8, max_tokens=30)
    tokens = list(stream)
    assert stream.err() is None
    channels = [token.channel for token in tokens]
    thought = channels.count("reasoning")
    assert 1 <= thought <= 8 and channels[:thought] == ["reasoning"] * thought
    assert all(token.text for token in tokens[:thought])  # thinking is never read as calls
    assert "<think>" not in stream.text() and "</think>" not in stream.text()
    answer = "".join(token.text for token in tokens[thought:])
    assert stream.text() == answer


def plan(model: ic.TextModel, choice: Choice) -> NativeToolPlan:
    assert isinstance(model, LlamaServerModel)
    tool_format = model._native_format()
    assert tool_format is not None
    return NativeToolPlan(ToolRequest(tuple(t["function"] for t in TOOLS), choice), tool_format)


@pytest.mark.parametrize(
    ("choice", "forced"), [("auto", False), ("none", False), ("required", True)]
)
def test_only_a_forced_call_renders_the_chat_with_thinking_off(
    model: ic.TextModel, choice: Choice, forced: bool
) -> None:
    """llama-server's default for this template is off already, so the plan's config is
    what shows that a forced call turns thinking off where the default would be on."""
    config = plan(model, choice).config(ic.GenerateConfig(reasoning_budget=8))
    assert config.think is (False if forced else None) and config.reasoning_budget == 8


def test_a_call_written_in_the_thinking_is_not_a_call(model: ic.TextModel) -> None:
    """The server's lazy grammar could wake on a trigger inside the thinking; the calls are
    read from the answer only (tokens made here: SmolLM2 does not think of tools)."""
    thought = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    tokens = [
        ic.Token(1, "<think>", channel="reasoning"),
        ic.Token(2, thought, channel="reasoning"),
        ic.Token(3, "</think>", channel="reasoning"),
        ic.Token(4, "It is noon.", channel="content"),
    ]
    auto = plan(model, "auto")
    assert list(auto.watch(iter(tokens))) == tokens and auto.calls == ()
