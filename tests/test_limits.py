"""What we send is bounded before it is sent: a count the server cannot hold, or a grammar
or schema nested deep enough to crash it (for every caller of the model), is the caller's
`InvalidValue`, naming the field, the depth and the limit; up to the limits the real
llama-server takes them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

import inference_core as ic
from inference_core.testing import FakeBackend
from inference_core.testing.contracts import TOOLS
from inference_core.tools import plan_tools
from inference_core.types import MAX_GRAMMAR_DEPTH, MAX_GRAMMAR_RULES, MAX_JSON_DEPTH, MAX_TOKENS

YES_OR_NO = 'root ::= "yes" | "no"'


def nested_grammar(depth: int) -> str:
    return "root ::= " + "(" * depth + '"a"' + ")" * depth


def nested_schema(depth: int) -> dict[str, Any]:
    """Arrays of arrays ... of strings, `depth` dicts deep."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


def tool(depth: int) -> dict[str, Any]:
    """A tool whose parameters (an object, as arguments are) nest `depth` dicts deep."""
    parameters = {"type": "object", "properties": {"a": nested_schema(depth - 2)}}
    return {"type": "function", "function": {"name": "deep", "parameters": parameters}}


@pytest.fixture(scope="module")
def model(smollm2_path: str) -> Iterator[ic.TextModel]:
    """A server of this module's own: a grammar that crashes it must not take others'."""
    with ic.load(smollm2_path, backend="llama_cpp", context_len=512, parallel_slots=2) as loaded:
        yield loaded


@pytest.mark.server
def test_the_most_tokens_allowed_is_a_count_the_server_takes(model: ic.TextModel) -> None:
    answer = model.generate("Is the sky blue?", grammar=YES_OR_NO, max_tokens=MAX_TOKENS)
    assert answer.text() in ("yes", "no")


@pytest.mark.server
def test_a_grammar_nested_to_the_limit_runs(model: ic.TextModel) -> None:
    assert model.generate("Say a", grammar=nested_grammar(MAX_GRAMMAR_DEPTH)).text() == "a"


@pytest.mark.server
def test_a_grammar_nested_deep_enough_to_crash_the_server_never_reaches_it(
    model: ic.TextModel,
) -> None:
    with pytest.raises(
        ic.InvalidValue, match=f"20000 deep, past the limit of {MAX_GRAMMAR_DEPTH}"
    ) as caught:
        model.generate("Say a", grammar=nested_grammar(20_000))
    assert caught.value.field == "grammar"
    assert model.generate("Is the sky blue?", grammar=YES_OR_NO).text() in ("yes", "no")


def chained_rules(count: int) -> str:
    """`count` rules, each naming the next, the last "a"."""
    return (
        "".join(f"r{i} ::= r{i + 1}\n" for i in range(count - 1)).replace("r0 ::=", "root ::=", 1)
        + f'r{count - 1} ::= "a"\n'
    )


@pytest.mark.server
def test_a_chain_of_rules_to_the_limit_runs(model: ic.TextModel) -> None:
    assert model.generate("Say a", grammar=chained_rules(MAX_GRAMMAR_RULES)).text() == "a"


@pytest.mark.server
def test_a_chain_of_rules_long_enough_to_crash_the_server_never_reaches_it(
    model: ic.TextModel,
) -> None:
    with pytest.raises(
        ic.InvalidValue, match=f"defines 120000 rules, past the limit of {MAX_GRAMMAR_RULES}"
    ) as caught:
        model.generate("Say a", grammar=chained_rules(120_000))
    assert caught.value.field == "grammar"
    assert model.generate("Is the sky blue?", grammar=YES_OR_NO).text() in ("yes", "no")


@pytest.mark.server
def test_parentheses_in_strings_classes_and_comments_do_not_nest(model: ic.TextModel) -> None:
    """As the counter skips them, llama-server reads them without recursing: 20,000 of
    each, where as many nested groups would crash it."""
    many = "(" * 20_000
    grammar = f'root ::= "a" | "{many}" | [{many}] # {many}\n'
    assert model.generate("Say a", grammar=grammar, max_tokens=1).text() in ("a", "(")


@pytest.mark.server
def test_a_schema_nested_to_the_limit_runs(model: ic.TextModel) -> None:
    stream = model.generate("A list:", json_schema=nested_schema(MAX_JSON_DEPTH), max_tokens=4)
    assert stream.text().startswith("[") and stream.err() is None


@pytest.mark.parametrize("backend", [pytest.param("llama_cpp", marks=pytest.mark.server), "fake"])
def test_a_schema_nested_past_the_limit_is_refused_by_every_backend(
    request: pytest.FixtureRequest, backend: str
) -> None:
    target: ic.TextModel = (
        request.getfixturevalue("model")
        if backend == "llama_cpp"
        else FakeBackend().load_model("fake", ic.LoadConfig())
    )
    for depth in (MAX_JSON_DEPTH + 1, 5_000):  # 5,000: deeper than Python's json recurses
        with pytest.raises(
            ic.InvalidValue, match=f"{depth} deep .*, past the limit of {MAX_JSON_DEPTH}"
        ) as caught:
            target.generate("A list:", json_schema=nested_schema(depth))
        assert caught.value.field == "json_schema"


def test_tool_parameters_nested_to_their_limit_run_and_past_it_are_refused() -> None:
    """The answer's schema wraps each tool's parameters: their limit is what is left of
    MAX_JSON_DEPTH, and the message says how much that is."""
    fake = FakeBackend().load_model("fake", ic.LoadConfig())
    ask = [ic.Message("user", "Go deep.")]
    with pytest.raises(
        ic.InvalidValue, match=r"tool 'deep': 'parameters' nests 5000 deep"
    ) as caught:
        fake.chat(ask, tools=[tool(5_000)])
    assert caught.value.field == "tools"
    found = re.search(r"past the limit of (\d+)", str(caught.value))
    assert found is not None
    limit = int(found.group(1))
    assert MAX_JSON_DEPTH - 16 < limit < MAX_JSON_DEPTH
    for choice in ("auto", "required"):
        stream = fake.chat(ask, tools=[tool(limit)], tool_choice=choice)
        stream.text()
        assert [call.name for call in stream.tool_calls] == ["deep"]
    with pytest.raises(ic.InvalidValue, match=f"nests {limit + 1} deep"):
        fake.chat(ask, tools=[tool(limit + 1)])


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ("[" * 5_000 + "]" * 5_000, "nests deeper than JSON can be read"),
        ('{"a": ' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}", "nested at most"),
        ("5", "nested at most"),
    ],
)
def test_a_model_answer_too_deep_to_take_is_a_generation_error(arguments: str, words: str) -> None:
    """The server's answer is never the caller's mistake (InvalidValue) nor a crash."""
    plan = plan_tools(TOOLS, "required")
    assert plan is not None
    answer = '{"tool_calls": [{"name": "get_weather", "arguments": ' + arguments + "}]}"
    tokens = plan.watch(iter([ic.Token(1, answer)]))
    next(tokens)
    with pytest.raises(ic.GenerationError, match=words):
        next(tokens)
