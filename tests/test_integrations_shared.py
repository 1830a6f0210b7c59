"""What the framework adapters share (`inference_core.integrations._shared`), without
any framework: the per-process models, OpenAI-shaped input, and a chat's answer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import inference_core as ic
from inference_core._channels import thinking
from inference_core.integrations._shared import (
    AnswerReader,
    config_from,
    generic_tools,
    messages_from_openai,
    schema_of_response_format,
    shared_model,
)

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def test_openai_messages_become_ours() -> None:
    messages = messages_from_openai(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Add 2 and 3.", "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "They want a sum.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                    }
                ],
            },
            {"role": "tool", "content": [{"type": "text", "text": "5"}], "tool_call_id": "c1"},
            {"role": "assistant", "content": [{"type": "text", "text": "It is "}, "5."]},
        ]
    )
    assert [message.role for message in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert messages[2].reasoning == "They want a sum."
    assert messages[2].tool_calls == (ic.ToolCall("c1", "add", {"a": 2, "b": 3}),)
    assert messages[3].content == "5" and messages[3].tool_call_id == "c1"
    assert messages[4].content == "It is 5."


@pytest.mark.parametrize(
    "message",
    [
        {"role": "robot", "content": "Hi"},
        {"role": "user"},
        "Hi",
        {"role": "assistant", "content": 5},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}]},
    ],
)
def test_a_bad_message_is_an_invalid_value(message: Any) -> None:
    with pytest.raises(ic.InvalidValue):
        messages_from_openai([message])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(
    ["role", "content", "tool_calls", "tool_call_id", "reasoning_content", "name", "x"]
)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "robot"])


@given(st.dictionaries(KEYS, JSON, max_size=6), ROLES)
def test_whatever_a_framework_sends_is_a_message_or_an_invalid_value(
    message: dict[str, Any], role: str
) -> None:
    try:
        converted = messages_from_openai([{**message, "role": role}])
    except ic.InvalidValue:
        return
    assert [type(one) for one in converted] == [ic.Message]


def test_response_formats_become_schemas() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    wrapped = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    assert schema_of_response_format(wrapped) == schema
    assert schema_of_response_format({"type": "json_object"}) == {"type": "object"}
    assert schema_of_response_format({"type": "text"}) is None
    assert schema_of_response_format(None) is None
    for bad in ({"type": "json_schema"}, {"type": "xml"}, "json"):
        with pytest.raises(ic.InvalidValue, match="response_format"):
            schema_of_response_format(bad)


def test_options_become_a_config_and_a_typo_is_refused() -> None:
    config = config_from({"max_tokens": 5, "temperature": None, "stop": ["x"]})
    assert config == ic.GenerateConfig(max_tokens=5, stop=("x",))
    with pytest.raises(TypeError, match="temprature"):
        config_from({"temprature": 0.5})
    with pytest.raises(ic.InvalidValue, match="top_p"):
        config_from({"top_p": 2.0})


def test_a_model_source_must_be_a_location_or_a_loaded_model(shared_model: ic.TextModel) -> None:
    with pytest.raises(ic.InvalidValue, match="model must be"):
        shared_model_of(42)
    with pytest.raises(ic.InvalidValue, match="model must be"):
        shared_model_of("")
    with pytest.raises(ic.InvalidValue, match="load options"):
        shared_model_of(shared_model, {"context_len": 512})
    assert shared_model_of(shared_model) is shared_model


def shared_model_of(model: Any, options: dict[str, Any] | None = None) -> ic.TextModel:
    return shared_model(model, options)


THINK = ("<think>", "</think>")
TAGS = st.sampled_from([("<think>", "</think>"), ("[THINK]", "[/THINK]"), ("<|begin|>",)])


# pieces of tags, of text and of space, as a tokenizer cuts them
PIECES = st.sampled_from(
    [
        "<",
        "think",
        ">",
        "</",
        "<th",
        "ink>",
        "[",
        "THINK]",
        "[/",
        "<|",
        "begin|>",
        " ",
        "\n",
        "a",
        "b c",
    ]
) | st.text(alphabet="<>/[]|thinkTHINK begin\n", max_size=4)


@given(st.lists(PIECES, max_size=20), TAGS)
@example(["<think>", "\n", "a", "<th", "ink>", " b", " ", "</", "think", ">", "\n"], THINK)
@example(["[", "THINK]", "a [", "b", "[/", "THINK]"], ("[THINK]", "[/THINK]"))
def test_thinking_shown_as_it_comes_adds_up_to_the_whole(
    pieces: list[str], tags: tuple[str, ...]
) -> None:
    """Each piece shows what cannot change any more; at the end, what `reasoning_text()`
    gives (the text without the tags, stripped) begins with all that was shown."""
    reader = AnswerReader(held=False, tags=tags)
    shown = ""
    for piece in pieces:
        shown += reader.take(ic.Token(0, piece, channel="reasoning")).thinking
        assert thinking(pieces, tags).startswith(shown)
    whole = thinking(pieces, tags)
    if not any(whole.endswith(tag[:size]) for tag in tags for size in range(1, len(tag))):
        assert shown == whole.rstrip()


@pytest.mark.server
def test_every_spelling_of_a_file_loads_one_model(smollm2_path: str, tmp_path: Path) -> None:
    link = tmp_path / "smol.gguf"
    link.symlink_to(smollm2_path)
    spelled = os.path.join(os.path.dirname(smollm2_path), ".", os.path.basename(smollm2_path))
    model = shared_model(smollm2_path, {"context_len": 1024})
    assert shared_model(spelled, {"context_len": 1024}) is model
    assert shared_model(link, {"context_len": 1024}) is model
    assert shared_model(smollm2_path, {"context_len": 2048}) is not model


@pytest.mark.server
def test_a_generic_tool_answer_is_read_as_calls_or_as_text(shared_model: ic.TextModel) -> None:
    assert generic_tools(shared_model, [ADD], "auto")
    assert not generic_tools(shared_model, [ADD], "none")
    assert not generic_tools(shared_model, [], "auto")

    def ask(question: str, choice: str) -> tuple[str, Any]:
        stream = shared_model.chat(
            [{"role": "user", "content": question}], max_tokens=96, tools=[ADD], tool_choice=choice
        )
        reader = AnswerReader(held=True)
        shown = "".join(reader.take(token).text for token in stream)
        return shown, reader.end(stream, stream.reasoning_text())

    shown, ending = ask("What is 2 plus 3?", "add")
    assert shown == "" and ending.text == ""
    assert [call.name for call in ending.tool_calls] == ["add"]
    assert ending.finish_reason == "tool_calls"
    assert ending.usage is not None and ending.usage["output"] == len(ending.tokens)
    shown, ending = ask("What is the capital of France?", "auto")  # SmolLM2 calls nothing
    assert shown == "" and not ending.tool_calls
    assert "Paris" in ending.late_text and ending.text == ending.late_text
    assert not ending.text.startswith("{")
