"""Structured output, grammars, log-probabilities and tool calls on the real llama-server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

import inference_core as ic
from inference_core.testing.contracts import PERSON, TOOLS

pytestmark = pytest.mark.server

NAMES = [
    "Ada", "Alan", "Grace", "Linus", "Guido", "Barbara", "Dennis", "Ken", "Margaret", "Edsger",
    "Donald", "Frances", "John", "Radia", "Tim", "Vint", "Katherine", "Niklaus", "Bjarne", "Anita",
]  # fmt: skip


@pytest.fixture(scope="module")
def model(smollm2_path: str) -> Iterator[ic.TextModel]:
    with ic.load(smollm2_path, backend="llama_cpp", context_len=1024, parallel_slots=4) as loaded:
        yield loaded


def test_twenty_greedy_generations_keep_to_the_schema(model: ic.TextModel) -> None:
    prompts = [f"A JSON record about {name}, a programmer:" for name in NAMES]
    results = model.batch_generate(prompts, json_schema=PERSON, max_tokens=300)
    assert [result.error for result in results] == [None] * 20
    answers = [json.loads(result.text) for result in results]
    for answer in answers:
        jsonschema.validate(answer, PERSON)
    assert len({json.dumps(answer) for answer in answers}) > 1, "the prompts made no difference"


def test_a_grammar_gives_exactly_one_of_its_words(model: ic.TextModel) -> None:
    for question in ("Is the sky blue?", "Is fire cold?", "Do fish swim?"):
        answer = model.generate(question, grammar='root ::= "yes" | "no"', max_tokens=8).text()
        assert answer in ("yes", "no")


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("json_schema", {"type": "wibble"}, "Unrecognized schema"),
        ("grammar", "root ::= undefined-rule", "grammar"),
    ],
)
def test_a_constraint_the_server_cannot_use_is_invalid_before_any_token(
    model: ic.TextModel, option: str, value: object, words: str
) -> None:
    options: dict[str, Any] = {option: value}
    stream = model.generate("Hello", max_tokens=4, **options)
    with pytest.raises(ic.InvalidValue, match=words) as caught:
        next(stream)
    assert caught.value.field == option
    assert isinstance(stream.err(), ic.InvalidValue) and isinstance(model.err(), ic.InvalidValue)
    assert len(list(model.generate("Hello", max_tokens=3))) == 3


def test_greedy_logprobs_rank_the_chosen_token_first(model: ic.TextModel) -> None:
    prompt = "The three primary colours are"
    plain = list(model.generate(prompt, max_tokens=16))
    ranked = list(model.generate(prompt, max_tokens=16, logprobs=5))
    assert [t.id for t in ranked] == [t.id for t in plain]
    assert [t.text for t in ranked] == [t.text for t in plain]
    for token in ranked:
        figures = [candidate.logprob for candidate in token.top_logprobs]
        assert len(figures) == 5 and token.top_logprobs[0].id == token.id
        assert token.logprob == figures[0]
        assert all(f is not None and f <= 0.0 for f in figures)
        assert figures == sorted(figures, reverse=True)  # type: ignore[type-var]
    assert any(token.logprob < -1e-3 for token in ranked if token.logprob is not None)


def test_logprobs_of_a_split_character_belong_to_its_last_token(model: ic.TextModel) -> None:
    tokens = list(model.generate("Party emoji: 🎉🎉🎉 Party emoji:", max_tokens=12, logprobs=2))
    recovered = [t for t in tokens if t.text == ""]
    assert recovered, "no character was split across tokens"
    assert all(t.logprob is None and t.top_logprobs == () for t in recovered)
    completing = [t for t in tokens if t.text and "\ufffd" not in t.text]
    assert any("🎉" in t.text for t in completing)
    assert all(t.logprob is not None for t in completing)


def test_required_tool_choice_calls_a_tool_with_valid_arguments(model: ic.TextModel) -> None:
    question = [{"role": "user", "content": "What time is it in Berlin?"}]
    stream = model.chat(question, tools=TOOLS, tool_choice="required", max_tokens=200)
    stream.text()
    assert stream.err() is None and stream.tool_calls
    parameters = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
    for call in stream.tool_calls:
        jsonschema.validate(call.arguments, parameters[call.name])


def test_a_whole_tool_round_trip_ends_in_a_text_answer(model: ic.TextModel) -> None:
    messages: list[ic.Message] = [ic.Message("user", "What is the weather in Paris?")]
    asked = model.chat(messages, tools=TOOLS, tool_choice="required", max_tokens=200)
    asked.text()
    calls = asked.tool_calls
    assert calls
    messages.append(ic.Message("assistant", "", tool_calls=calls))
    for call in calls:
        result = {"celsius": 21, "sky": "sunny"} if call.name == "get_weather" else "14:05"
        messages.append(ic.Message("tool", json.dumps(result), tool_call_id=call.id))
    answer = model.chat(messages, tools=TOOLS, tool_choice="none", max_tokens=40)
    text = answer.text()
    assert text.strip() and answer.err() is None and answer.tool_calls == ()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # prose, not the tool format


def test_a_tool_answer_cut_off_by_max_tokens_is_a_generation_error(model: ic.TextModel) -> None:
    stream = model.chat(
        [ic.Message("user", "Weather in Rome?")], tools=TOOLS, tool_choice="required", max_tokens=4
    )
    with pytest.raises(ic.GenerationError, match="raise max_tokens"):
        stream.text()
    assert stream.tool_calls == () and isinstance(stream.err(), ic.GenerationError)
