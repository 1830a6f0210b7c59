"""Tool formats measured from what a template renders, the calls read back from them, and
the tokens of a stream split into content and the calls' markup; no server needed here
(tests/test_native_tools.py runs them on the real llama-server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest

import inference_core as ic
from inference_core.testing.contracts import TOOLS
from inference_core.tools import tool_request
from inference_rocm.client import RequestRejected, ServerClient
from inference_rocm.native_tools import FormatProbe, NativeToolPlan
from inference_rocm.tool_formats import ToolFormat, measure
from inference_rocm.wire import Props

HEAD = "<|im_start|>user\nprobe text of the user<|im_end|>\n<|im_start|>assistant\n"
TAIL = "<|im_end|>\n<|im_start|>user\nprobe text of the user<|im_end|>\n"
TEXT = f"{HEAD}probe text of the assistant{TAIL}"
ONE = '{"name": "probe_tool_one", "arguments": {"probe_argument": "probe value"}}'
TWO = '{"name": "probe_tool_two", "arguments": {"probe_argument": "another value"}}'
TAGGED = ToolFormat("tagged", "<tool_call>\n", "\n</tool_call>\n<tool_call>\n", "\n</tool_call>\n")
FUNCTIONS = {tool["function"]["name"]: tool["function"] for tool in TOOLS}


def test_calls_in_tags_of_their_own_are_tagged() -> None:
    one = f"{HEAD}<tool_call>\n{ONE}\n</tool_call>\n{TAIL}"
    two = f"{HEAD}<tool_call>\n{ONE}\n</tool_call>\n<tool_call>\n{TWO}\n</tool_call>\n{TAIL}"
    assert measure([TEXT, one, two]) == TAGGED
    single = measure([TEXT, one])
    assert single == ToolFormat("tagged", "<tool_call>\n", None, "\n</tool_call>\n")
    assert single.trigger == "<tool_call>"


def test_calls_in_one_list_after_a_marker_are_listed() -> None:
    compact = [c.replace(", ", ",").replace(": ", ":") for c in (ONE, TWO)]
    head, tail = "[INST]probe text of the user[/INST]", "</s>[INST]probe text of the user[/INST]"
    one = f"{head}[TOOL_CALLS][{compact[0]}]{tail}"
    two = f"{head}[TOOL_CALLS][{compact[0]},{compact[1]}]{tail}"
    found = measure([f"{head}probe text of the assistant{tail}", one, two])
    assert found == ToolFormat("listed", "[TOOL_CALLS][", ",", "]", layout=(",", ":"))
    assert found.trigger == "[TOOL_CALLS]["


def test_a_call_alone_with_its_parameters_is_bare() -> None:
    call = '{"name": "probe_tool_one", "parameters": {"probe_argument": "probe value"}}'
    found = measure([TEXT, HEAD + call + TAIL])
    assert found == ToolFormat("bare", "", None, "", arguments="parameters")
    assert found.trigger == '{"name"'


@pytest.mark.parametrize(
    "turn",
    [
        f"<tool_call>\n{ONE.replace(': ', ':  ')}\n</tool_call>\n",  # spaced its own way
        f'<tool_call>{ONE[:-1]}, "id": "call_0"}}</tool_call>',  # a key more
        "<tool_call>probe_tool_one(probe_argument='probe value')</tool_call>",
        "<tool_call></tool_call>",  # the call left out
        f"<tool_call>{' ' * 5000}{ONE}</tool_call>",  # too long a turn to search
    ],
    ids=["spacing", "extra-key", "not-json", "no-call", "too-long"],
)
def test_calls_written_otherwise_have_no_format_known_here(turn: str) -> None:
    assert measure([TEXT, HEAD + turn + TAIL]) is None


def test_the_calls_are_read_back_from_exactly_the_format() -> None:
    weather = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    time = '{"name": "get_time", "arguments": {"zone": "UTC"}}'
    text = f"<tool_call>\n{weather}\n</tool_call>\n<tool_call>\n{time}\n</tool_call>\n"
    calls = TAGGED.read(text, FUNCTIONS, from_trigger=False)
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "UTC"}),
    ]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    with pytest.raises(ic.GenerationError, match="raise max_tokens"):
        TAGGED.read(text[:-3], FUNCTIONS, from_trigger=False)  # cut off in the closing tag
    with pytest.raises(ic.GenerationError, match="a tool it was not given: 'rm'"):
        TAGGED.read(text.replace("get_time", "rm"), FUNCTIONS, from_trigger=False)


def test_calls_that_began_at_the_trigger_are_read_from_it() -> None:
    """With "auto", the grammar and the reading begin where the model wrote the trigger,
    not at the whitespace a template may put before it."""
    spaced = ToolFormat("tagged", "\n\n<tool_call>\n", None, "\n</tool_call>")
    text = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
    assert [c.name for c in spaced.read(text, FUNCTIONS, from_trigger=True)] == ["get_time"]
    with pytest.raises(ic.GenerationError):
        spaced.read(text, FUNCTIONS, from_trigger=False)
    grammar = spaced.grammar([FUNCTIONS["get_time"]], several=False, from_trigger=True)
    assert grammar.startswith(r'root ::= "<tool_call>\n" call')
    bare = ToolFormat("bare", "", None, "", arguments="parameters")
    assert bare.trigger == '{"name"' and bare.start(from_trigger=True) == ""


def test_a_grammar_holds_the_calls_to_the_format_and_the_tools_parameters() -> None:
    grammar = TAGGED.grammar([FUNCTIONS["get_time"]], several=False, from_trigger=False)
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["root"] == r'"<tool_call>\n" call "\n</tool_call>\n"'
    assert rules["call"] == "tool0"
    assert rules["tool0"] == (
        r'"{" "\"name\": \"get_time\"" ", " "\"arguments\": " tool0-arguments "}"'
    )
    assert rules["tool0-arguments-0-value"] == r'"\"UTC\"" | "\"CET\"" | "\"EST\""'
    several = TAGGED.grammar(list(FUNCTIONS.values()), several=True, from_trigger=True)
    assert several.splitlines()[0] == (
        r'root ::= "<tool_call>\n" call ("\n</tool_call>\n<tool_call>\n" call)* "\n</tool_call>\n"'
    )


# -- the tokens of a stream: content, then the calls' markup -----------------------------


def watched(choice: str, pieces: list[str]) -> tuple[list[ic.Token], NativeToolPlan]:
    request = tool_request(TOOLS, choice)
    assert request is not None
    plan = NativeToolPlan(request, TAGGED)
    tokens: Iterator[ic.Token] = iter([ic.Token(n, piece) for n, piece in enumerate(pieces)])
    return list(plan.watch(tokens)), plan


CALL = ["<", "tool", "_", "call", ">\n", '{"name": "get_time", "arguments": {"zone": "CET"}}']


def test_text_before_the_trigger_is_content_and_the_calls_carry_no_text() -> None:
    pieces = ["Let me", " check.", " <", *CALL[1:], "\n</tool_call>\n", ""]
    tokens, plan = watched("auto", pieces)
    assert [t.id for t in tokens] == list(range(len(pieces)))
    assert [t.text for t in tokens] == ["Let me", " check.", " "] + [""] * (len(pieces) - 3)
    assert [(c.name, c.arguments) for c in plan.calls] == [("get_time", {"zone": "CET"})]


def test_a_text_that_only_began_the_trigger_is_content() -> None:
    tokens, plan = watched("auto", ["a", " <", "tool", " is", " used"])
    assert "".join(t.text for t in tokens) == "a <tool is used" and plan.calls == ()


def test_a_required_call_is_markup_from_its_first_token() -> None:
    tokens, plan = watched("required", [*CALL, "\n</tool_call>\n"])
    assert all(t.text == "" for t in tokens) and len(plan.calls) == 1


def test_a_stream_that_ends_inside_a_call_is_a_generation_error() -> None:
    with pytest.raises(ic.GenerationError, match="ended inside its tool calls"):
        watched("required", CALL[:4])


def test_with_tool_choice_none_the_tokens_pass_as_they_are() -> None:
    tokens, plan = watched("none", CALL)
    assert [t.text for t in tokens] == CALL and plan.calls == ()


# -- asking the server: only where /props says the template renders calls ----------------


class Refusing:
    """Stands in for a llama-server whose template /props says renders calls, but which
    refuses to render the probe chats with `status` (the real one cannot be made to)."""

    def __init__(self, status: int) -> None:
        self.status, self.asked = status, 0

    def request(self, method: str, path: str, body: object = None, **_: object) -> object:
        self.asked += 1
        raise RequestRejected(self.status, "no probe here")


def client(refusing: Refusing) -> ServerClient:
    return cast(ServerClient, refusing)


def props(template_tools: bool) -> Props:
    return Props(2048, 4, "model.gguf", "Q4_1", template_tools=template_tools)


def test_a_template_that_cannot_render_the_probe_keeps_the_generic_format() -> None:
    refusing = Refusing(400)
    probe = FormatProbe(lambda: client(refusing), props(True))
    assert probe.pending and probe.format() is None and not probe.pending
    assert probe.format() is None and refusing.asked == 1  # measured once
    with pytest.raises(RequestRejected):  # any other refusal is the server's error
        FormatProbe(lambda: client(Refusing(404)), props(True)).format()


def test_a_template_without_calls_is_never_probed() -> None:
    refusing = Refusing(400)
    for probe in (
        FormatProbe(lambda: client(refusing), props(False)),
        FormatProbe(lambda: client(refusing), None),
    ):
        assert not probe.pending and probe.format() is None
    assert refusing.asked == 0
