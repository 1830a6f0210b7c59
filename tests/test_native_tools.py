"""Tools in the model's own format, on the real llama-server and SmolLM2 with a template
written for the purpose (tests/templates/tools.jinja: tools in a <tools> system block,
calls in <tool_call> blocks): rendered by the template, held by a grammar to its markup
and the tools' parameters, read back with every token's id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import inference_core as ic
from inference_core.testing import TextModelContract
from inference_core.testing.contracts import TOOLS
from inference_rocm.model import LlamaServerModel

from .external import KEY, ExternalServer

pytestmark = pytest.mark.server

TEMPLATE = Path(__file__).parent / "templates" / "tools.jinja"
QUESTION = [ic.Message("user", "What is the weather in Paris?")]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
CALL = ic.ToolCall("call_1", "get_weather", {"city": "Paris"})
ROUND_TRIP = [
    *QUESTION,
    ic.Message("assistant", "", tool_calls=(CALL,)),
    ic.Message("tool", '{"sky": "sunny", "celsius": 21}', tool_call_id="call_1"),
]


@pytest.fixture(scope="module")
def native(smollm2_path: str, llama_server_binary: str) -> Iterator[ic.TextModel]:
    with ic.load(
        smollm2_path,
        backend="llama_cpp",
        context_len=2048,
        parallel_slots=4,
        chat_template=str(TEMPLATE),
    ) as model:
        yield model


def valid(call: ic.ToolCall) -> bool:
    jsonschema.validate(call.arguments, PARAMETERS[call.name])
    return True


def markup(calls: tuple[ic.ToolCall, ...]) -> str:
    """The calls as the template writes them."""
    return "".join(
        f"<tool_call>\n{json.dumps({'name': c.name, 'arguments': c.arguments})}\n</tool_call>\n"
        for c in calls
    )


def ids(tokens: list[ic.Token]) -> list[int]:
    return [token.id for token in tokens]


def test_a_template_with_its_own_tool_format_is_native(native: ic.TextModel) -> None:
    assert native.capabilities.tools == "native"
    assert native.capabilities.parallel_tool_calls  # the template loops over the calls


def test_required_gives_a_call_that_keeps_to_its_parameters_with_every_id(
    native: ic.TextModel,
) -> None:
    stream = native.chat(QUESTION, tools=TOOLS, tool_choice="required", max_tokens=60)
    tokens = list(stream)
    assert stream.err() is None and stream.finish_reason == "tool_calls"
    assert len(stream.tool_calls) == 1 and valid(stream.tool_calls[0])
    assert stream.text() == "" and all(token.text == "" for token in tokens)  # no content
    # the ids are the tokens the model wrote: the call's markup, then the end of its turn
    assert native.detokenize(ids(tokens)) == markup(stream.tool_calls) + "<|im_end|>"
    assert stream.metrics is not None and stream.metrics.generated_tokens == len(tokens)


@pytest.mark.parametrize(
    "choice",
    ["get_time", {"type": "function", "function": {"name": "get_time"}}],
    ids=["name", "openai"],
)
def test_a_named_tool_is_the_one_called(native: ic.TextModel, choice: Any) -> None:
    stream = native.chat(QUESTION, tools=TOOLS, tool_choice=choice, max_tokens=60)
    stream.text()
    assert stream.err() is None and stream.finish_reason == "tool_calls"
    assert [call.name for call in stream.tool_calls] == ["get_time"]
    assert valid(stream.tool_calls[0])


def test_a_round_trip_of_call_result_and_answer_completes(native: ic.TextModel) -> None:
    asked = native.chat(QUESTION, tools=TOOLS, tool_choice="required", max_tokens=60)
    asked.text()
    history = [*QUESTION, ic.Message("assistant", "", tool_calls=asked.tool_calls)]
    for call in asked.tool_calls:
        history.append(ic.Message("tool", '{"sky": "sunny"}', tool_call_id=call.id))
    answer = native.chat(history, tools=TOOLS, max_tokens=40)
    text = answer.text()
    assert answer.err() is None and answer.tool_calls == () and answer.finish_reason == "stop"
    assert "sunny" in text and "<tool_call>" not in text


def test_with_auto_the_text_before_any_call_streams_as_content(native: ic.TextModel) -> None:
    stream = native.chat(QUESTION, tools=TOOLS, max_tokens=12)
    first = next(stream)
    assert first.text and stream.finish_reason is None  # delivered while the model writes
    tokens = [first, *stream]
    assert stream.err() is None and stream.tool_calls == () and stream.finish_reason == "length"
    assert native.detokenize(ids(tokens)) == stream.text() == "".join(t.text for t in tokens)


def test_a_call_streams_and_its_calls_come_at_the_end(native: ic.TextModel) -> None:
    stream = native.chat(QUESTION, tools=TOOLS, tool_choice="required", max_tokens=60)
    next(stream)
    assert stream.finish_reason is None and stream.tool_calls == ()
    stream.text()
    assert stream.tool_calls and stream.finish_reason == "tool_calls"


def test_count_tokens_is_what_the_chat_and_llama_servers_own_rendering_read(
    native: ic.TextModel,
) -> None:
    assert isinstance(native, LlamaServerModel)
    conversations = [
        QUESTION,
        [ic.Message("system", "Be brief."), *QUESTION],
        ROUND_TRIP,
        [*ROUND_TRIP, ic.Message("assistant", "It is sunny."), ic.Message("user", "And Rome?")],
    ]
    for messages in conversations:
        counted = native.count_tokens(messages, tools=TOOLS)
        stream = native.chat(messages, tools=TOOLS, max_tokens=1)
        stream.text()
        assert stream.metrics is not None and stream.metrics.prompt_tokens == counted
        own = native.server.client.request(
            "POST",
            "/v1/chat/completions",
            {"messages": openai(messages), "tools": TOOLS, "max_tokens": 1},
        )
        assert own["usage"]["prompt_tokens"] == counted, messages


def openai(messages: list[ic.Message]) -> list[dict[str, Any]]:
    """Messages as an OpenAI client sends them: a call's arguments as a JSON string."""
    sent: list[dict[str, Any]] = []
    for message in messages:
        fields: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            fields["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in message.tool_calls
            ]
        if message.tool_call_id:
            fields["tool_call_id"] = message.tool_call_id
        sent.append(fields)
    return sent


def test_parallel_calls_only_where_asked_for(native: ic.TextModel) -> None:
    both = [ic.Message("user", "What is the weather in Paris and in Rome?")]
    one = native.chat(both, tools=TOOLS, tool_choice="required", max_tokens=60)
    one.text()
    assert len(one.tool_calls) == 1 and one.finish_reason == "tool_calls"
    several = native.chat(
        both, tools=TOOLS, tool_choice="required", parallel_tool_calls=True, max_tokens=60
    )
    tokens: list[ic.Token] = []
    with pytest.raises(ic.GenerationError, match="raise max_tokens"):
        tokens.extend(several)  # SmolLM2 calls on for every city it knows, past max_tokens
    written = native.detokenize(ids(tokens))
    assert written.startswith(markup(one.tool_calls)) and written.count("<tool_call>") >= 2


def test_arguments_keep_to_richer_parameters(native: ic.TextModel) -> None:
    """Sampled, so that the grammar and not greedy luck keeps them to the schema."""
    parameters = {
        "$defs": {"place": {"type": "object", "properties": {"city": {"type": "string"}}}},
        "type": "object",
        "properties": {
            "where": {"$ref": "#/$defs/place"},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "units": {"enum": ["C", "F"]},
            "hours": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
            "note": {"type": ["string", "null"], "maxLength": 10},
        },
        "required": ["where", "days"],
    }
    tool = {"type": "function", "function": {"name": "forecast", "parameters": parameters}}
    for seed in range(4):
        stream = native.chat(
            QUESTION, tools=[tool], tool_choice="forecast", max_tokens=120, temperature=1.0,
            seed=seed,
        )  # fmt: skip
        stream.text()
        assert stream.err() is None and len(stream.tool_calls) == 1
        jsonschema.validate(stream.tool_calls[0].arguments, parameters)


def test_a_call_cut_off_by_max_tokens_is_a_generation_error(native: ic.TextModel) -> None:
    stream = native.chat(QUESTION, tools=TOOLS, tool_choice="required", max_tokens=8)
    with pytest.raises(ic.GenerationError, match="raise max_tokens") as caught:
        list(stream)
    assert native.err() is caught.value and stream.tool_calls == ()
    assert stream.finish_reason is None


@pytest.mark.parametrize(
    ("contract", "arguments"),
    [
        ("test_required_tool_choice_calls_one_of_the_tools", {}),
        ("test_a_tool_named_in_tool_choice_is_the_one_called", {"choice": "get_time"}),
        ("test_a_tool_round_trip_ends_in_a_text_answer", {}),
        ("test_declared_tools_are_called_and_none_refused", {}),
        ("test_constrained_streams_cancel_time_out_and_share_threads", {"option": "tools"}),
        ("test_count_tokens_is_what_a_generation_reads", {}),
    ],
)
def test_the_kits_contracts_on_tools_hold(
    native: ic.TextModel, contract: str, arguments: dict[str, Any]
) -> None:
    """What the kit asks of any backend's tools, asked of native ones: calls that keep to
    their parameters, a named tool forced, cancel, deadline, 4 threads, counts."""
    getattr(TextModelContract(), contract)(native, **arguments)


def test_an_async_chat_gives_the_sync_calls_and_ids(native: ic.TextModel) -> None:
    sync = native.chat(QUESTION, tools=TOOLS, tool_choice="required", max_tokens=60)
    expected = ids(list(sync))

    async def run() -> tuple[list[int], tuple[ic.ToolCall, ...], str | None]:
        stream = native.achat(QUESTION, tools=TOOLS, tool_choice="required", max_tokens=60)
        tokens = [token async for token in stream]
        return ids(tokens), stream.tool_calls, stream.finish_reason

    got, calls, reason = asyncio.run(run())
    assert got == expected and reason == "tool_calls"
    assert [(c.name, c.arguments) for c in calls] == [
        (c.name, c.arguments) for c in sync.tool_calls
    ]


def test_the_remote_backend_calls_tools_in_the_servers_format(
    llama_server_binary: str, smollm2_path: str, tmp_path: Path
) -> None:
    server = ExternalServer(
        llama_server_binary, smollm2_path, KEY, "--jinja", "--chat-template-file", str(TEMPLATE),
        log=tmp_path / "server.log",
    )  # fmt: skip
    try:
        with ic.load(server.url, api_key=KEY) as model:
            assert model.capabilities.tools == "native"
            stream = model.chat(QUESTION, tools=TOOLS, tool_choice="get_time", max_tokens=60)
            stream.text()
            assert [c.name for c in stream.tool_calls] == ["get_time"]
            assert valid(stream.tool_calls[0]) and stream.finish_reason == "tool_calls"
    finally:
        server.stop()


# Two more shapes of today's families, written here: Mistral's (a marker, then the calls
# as one list; the tools listed before the last user turn, so that a chat with a turn
# more renders them elsewhere) and Llama 3.x's (a call's JSON alone, with "parameters").
LISTED = (
    "{%- for m in messages -%}{%- if m.role == 'user' -%}"
    "{% if tools and loop.last %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}"
    "[INST]{{ m.content }}[/INST]"
    "{%- elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]"
    "{%- elif m.tool_calls %}[TOOL_CALLS][{% for c in m.tool_calls %}"
    '{"name": {{ c.function.name | tojson }}, "arguments": {{ c.function.arguments | tojson }}}'
    '{{ ", " if not loop.last }}{% endfor %}]</s>'
    "{%- else %}{{ m.content }}</s>{%- endif -%}{%- endfor -%}"
)
BARE = (
    "{%- for m in messages -%}<|im_start|>{{ 'ipython' if m.role == 'tool' else m.role }}\n"
    "{% if m.role == 'user' and loop.last and tools %}Answer with a call, as "
    '{"name": ..., "parameters": ...}, of one of:\n'
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}{% endif -%}"
    "{%- if m.tool_calls %}{% set c = m.tool_calls[0] %}"
    '{"name": {{ c.function.name | tojson }}, "parameters": {{ c.function.arguments | tojson }}}'
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor -%}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}"
)


@pytest.mark.parametrize(
    ("template", "opening", "parallel"),
    [(LISTED, '[TOOL_CALLS][{"name": "get_time"', True), (BARE, '{"name": "get_time"', False)],
    ids=["listed", "bare"],
)
def test_other_shapes_of_tool_calls_are_native_too(
    smollm2_path: str, template: str, opening: str, parallel: bool
) -> None:
    with ic.load(
        smollm2_path, backend="llama_cpp", context_len=1024, chat_template=template
    ) as model:
        assert model.capabilities.tools == "native"
        assert model.capabilities.parallel_tool_calls is parallel
        stream = model.chat(QUESTION, tools=TOOLS, tool_choice="get_time", max_tokens=60)
        tokens = list(stream)
        assert stream.finish_reason == "tool_calls" and stream.text() == ""
        assert [c.name for c in stream.tool_calls] == ["get_time"] and valid(stream.tool_calls[0])
        assert model.detokenize(ids(tokens)).startswith(opening)


# Calls whose markup is words SmolLM2 writes unasked (it never writes <tool_call> by
# itself), so that "auto" is seen to let it write text, then wake the grammar at them.
WORDS = (
    "{% for m in messages %}<|im_start|>{{ 'user' if m.role == 'tool' else m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}in Paris is "
    '{"name": {{ c.function.name | tojson }}, "arguments": {{ c.function.arguments | tojson }}}'
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_with_auto_text_comes_first_then_the_calls_it_begins(smollm2_path: str) -> None:
    with ic.load(smollm2_path, backend="llama_cpp", context_len=1024, chat_template=WORDS) as model:
        stream = model.chat(QUESTION, tools=TOOLS, max_tokens=100)
        tokens = list(stream)
        assert stream.finish_reason == "tool_calls" and len(stream.tool_calls) == 1
        assert valid(stream.tool_calls[0])
        text = stream.text()
        assert text.endswith(". The weather ")  # the token " in" keeps its space as content
        call = stream.tool_calls[0]
        written = json.dumps({"name": call.name, "arguments": call.arguments})
        assert model.detokenize(ids(tokens)) == f"{text}in Paris is {written}<|im_end|>"
