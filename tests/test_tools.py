"""The generic tool-call format: what the model is told, held to, and what is read back."""

from __future__ import annotations

import json
import re

import pytest

import inference_core as ic
from inference_core.content import content_text
from inference_core.testing import FakeBackend
from inference_core.testing.contracts import TOOLS
from inference_core.tools import plan_tools, render_history

CALL = ic.ToolCall("call_1", "get_weather", {"city": "Paris"})
HISTORY = [
    ic.Message("system", "Be brief."),
    ic.Message("user", "Weather in Paris?"),
    ic.Message("assistant", "", tool_calls=(CALL,)),
    ic.Message("tool", '{"celsius": 21}', tool_call_id="call_1"),
]


def test_the_history_is_written_for_templates_without_tools() -> None:
    assert render_history(HISTORY) == [
        HISTORY[0],
        HISTORY[1],
        ic.Message("assistant", 'I call get_weather with {"city": "Paris"}.'),
        ic.Message("user", 'get_weather returned: {"celsius": 21}'),
    ]
    as_json = render_history(HISTORY, calls_as_json=True)[2]
    assert json.loads(content_text(as_json.content)) == {
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    }


def test_required_holds_the_answer_to_calls_of_the_given_tools() -> None:
    plan = plan_tools(TOOLS, "required")
    assert plan is not None
    calls = plan.schema["properties"]["tool_calls"]
    assert plan.schema["required"] == ["tool_calls"] and calls["minItems"] == 1
    choices = calls["items"]["anyOf"]
    assert [c["properties"]["name"] for c in choices] == [
        {"const": "get_weather"},
        {"const": "get_time"},
    ]
    assert choices[1]["properties"]["arguments"] == TOOLS[1]["function"]["parameters"]


def test_auto_also_lets_the_model_answer_in_text() -> None:
    plan = plan_tools(TOOLS, "auto")
    assert plan is not None
    calls, text = plan.schema["anyOf"]
    assert calls["required"] == ["tool_calls"]
    assert text == {
        "type": "object",
        "properties": {"response": {"type": "string"}},
        "required": ["response"],
    }


def test_the_instructions_join_the_callers_system_message() -> None:
    plan = plan_tools(TOOLS, "required")
    assert plan is not None
    messages = plan.messages(HISTORY)
    system = content_text(messages[0].content)
    assert messages[0].role == "system" and system.startswith("Be brief.\n\n")
    assert "get_time" in system and len(messages) == len(HISTORY)
    bare = plan.messages(HISTORY[1:2])
    assert [m.role for m in bare] == ["system", "user"]


def test_no_tools_or_none_means_no_plan() -> None:
    assert plan_tools(None, "auto") is None
    assert plan_tools([], "auto") is None
    assert plan_tools(TOOLS, "none") is None
    with pytest.raises(ic.InvalidValue, match="needs tools"):
        plan_tools(None, "required")


@pytest.mark.parametrize(
    ("tools", "words"),
    [
        ("get_weather", "must be a list"),
        ([{"type": "retrieval"}], "each tool must be"),
        ([{"type": "function", "function": {"name": ""}}], "non-empty 'name'"),
        ([{"type": "function", "function": {"name": "f", "parameters": "x"}}], "JSON schema"),
        ([TOOLS[0], TOOLS[0]], "unique"),
    ],
)
def test_malformed_tools_are_invalid_values(tools: object, words: str) -> None:
    with pytest.raises(ic.InvalidValue, match=words) as caught:
        plan_tools(tools, "auto")  # type: ignore[arg-type]
    assert caught.value.field == "tools"


def test_tools_with_a_schema_of_ones_own_are_refused() -> None:
    model = FakeBackend().load_model("fake", ic.LoadConfig())
    with pytest.raises(ic.InvalidValue, match="drop json_schema and grammar"):
        model.chat(HISTORY[1:2], tools=TOOLS, json_schema={"type": "object"})


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ('{"tool_calls": [{"name": "get_wea', "raise max_tokens"),
        ('{"tool_calls": [{"name": "rm_rf", "arguments": {}}]}', "a tool it was not given"),
    ],
)
def test_an_answer_that_cannot_be_read_is_a_generation_error(answer: str, words: str) -> None:
    plan = plan_tools(TOOLS, "required")
    assert plan is not None
    tokens = plan.watch(iter([ic.Token(1, answer)]))
    assert next(tokens).text == answer
    with pytest.raises(ic.GenerationError, match=words):
        next(tokens)


@pytest.mark.parametrize(
    "choice", ["get_time", {"type": "function", "function": {"name": "get_time"}}]
)
def test_a_named_tool_choice_holds_the_answer_to_calls_of_that_tool(choice: object) -> None:
    plan = plan_tools(TOOLS, choice)  # type: ignore[arg-type]
    assert plan is not None and list(plan.functions) == ["get_time"]
    calls = plan.schema["properties"]["tool_calls"]  # a call is required: no text answer
    assert [c["properties"]["name"] for c in calls["items"]["anyOf"]] == [{"const": "get_time"}]
    assert "get_weather" not in plan.instructions


def test_the_fake_backend_calls_the_tool_named_by_tool_choice() -> None:
    model = FakeBackend().load_model("fake", ic.LoadConfig())
    first = model.chat(HISTORY[1:2], tools=TOOLS, tool_choice="required")
    named = model.chat(HISTORY[1:2], tools=TOOLS, tool_choice="get_time")
    first.text(), named.text()
    assert [c.name for c in first.tool_calls] == ["get_weather"]
    assert [c.name for c in named.tool_calls] == ["get_time"]
    assert named.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("choice", "words"),
    [
        ("get_date", "or the name of one of the tools ['get_weather', 'get_time'], got 'get_date'"),
        ({"type": "function", "function": {"name": 3}}, "a tool's name or"),
        ({"type": "retrieval"}, "a tool's name or"),
        (None, "a tool's name or"),
    ],
)
def test_a_tool_choice_naming_no_tool_is_an_invalid_value(choice: object, words: str) -> None:
    with pytest.raises(ic.InvalidValue, match=re.escape(words)) as caught:
        plan_tools(TOOLS, choice)  # type: ignore[arg-type]
    assert caught.value.field == "tool_choice"


def test_one_call_unless_parallel_calls_are_asked_for() -> None:
    single, several = plan_tools(TOOLS, "required"), plan_tools(TOOLS, "required", True)
    assert single is not None and several is not None
    assert single.schema["properties"]["tool_calls"]["maxItems"] == 1
    assert "maxItems" not in several.schema["properties"]["tool_calls"]
    with pytest.raises(ic.InvalidValue, match="parallel_tool_calls must be True or False"):
        plan_tools(TOOLS, "auto", 1)  # type: ignore[arg-type]
