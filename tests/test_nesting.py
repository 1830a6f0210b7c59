"""The nesting counters behind the grammar and schema limits: exact on any grammar or
JSON value, and at any depth (they never recurse)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_core._nesting import gbnf_depth, gbnf_rules, json_depth

# Mostly the characters GBNF gives a meaning to, or any at all.
_ANY = st.text(st.sampled_from('()[]"\\# \n'), max_size=12) | st.text(
    st.characters(codec="utf-8"), max_size=12
)
_Part = tuple[str, int]  # GBNF text, and how deep its groups nest


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _char_class(text: str) -> str:
    return "[" + text.replace("\\", "\\\\").replace("]", "\\]") + "]"


def _comment(text: str) -> str:
    return "# " + text.replace("\r", " ").replace("\n", " ") + "\n"


def _group(parts: list[_Part]) -> _Part:
    return "(" + " ".join(text for text, _ in parts) + ")", 1 + max(
        (d for _, d in parts), default=0
    )


def _sequence(parts: list[_Part]) -> _Part:
    return " ".join(text for text, _ in parts), max((d for _, d in parts), default=0)


# Text whose parentheses, quotes and brackets are characters: none of them nests.
_flat = st.one_of(
    _ANY.map(_quoted),
    _ANY.map(_char_class),
    _ANY.map(_comment),
    st.sampled_from(["root ::= ", "ws", "|", "*", "+", "?", "{1,3}", ".", "\n", "[^\\]]"]),
).map(lambda text: (text, 0))
grammars = st.recursive(
    _flat,
    lambda inner: (
        st.lists(inner, max_size=4).map(_group) | st.lists(inner, max_size=4).map(_sequence)
    ),
    max_leaves=40,
)


@given(grammars)
def test_grammar_depth_counts_groups_and_not_what_strings_classes_or_comments_hold(
    grammar: _Part,
) -> None:
    text, depth = grammar
    assert gbnf_depth(text) == depth


@given(st.text(alphabet="()a |\n"))
def test_bare_parentheses_nest_as_deep_as_the_most_left_open(text: str) -> None:
    open_now = deepest = 0
    for char in text:
        if char in "()":
            open_now = open_now + 1 if char == "(" else max(0, open_now - 1)
            deepest = max(deepest, open_now)
    assert gbnf_depth(text) == deepest


# Text holding "::=" as characters: in a string, a character class or a comment.
_decoys = st.lists(
    st.one_of(
        _ANY.map(lambda text: _quoted(text + "::=")),
        _ANY.map(lambda text: _char_class("::=" + text)),
        _ANY.map(lambda text: _comment("::= " + text)),
    ),
    max_size=4,
)


@given(st.lists(_decoys, max_size=6))
def test_grammar_rules_are_counted_by_their_definitions_and_not_what_strings_hold(
    rules: list[list[str]],
) -> None:
    text = "".join(f"r{i} ::= " + " ".join(decoys) + "\n" for i, decoys in enumerate(rules))
    assert gbnf_rules(text) == len(rules)


def test_an_unclosed_string_or_class_runs_to_the_end() -> None:
    assert gbnf_depth('root ::= "((((') == 0
    assert gbnf_depth("root ::= [((((") == 0
    assert gbnf_depth('root ::= ((( "\\') == 3


def test_a_grammar_nested_far_past_the_recursion_limit_is_measured() -> None:
    assert gbnf_depth("root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000) == 100_000


def _reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_reference_depth, value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max(map(_reference_depth, value), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=30,
)


@given(json_values)
def test_json_depth_counts_dicts_and_lists(value: object) -> None:
    assert json_depth(value) == _reference_depth(value)


def test_json_nested_far_past_the_recursion_limit_is_measured() -> None:
    value: Any = "leaf"
    for level in range(100_000):
        value = [value] if level % 2 else {"a": value}
    assert json_depth(value) == 100_000


def test_a_value_that_holds_itself_has_no_depth_but_one_held_twice_does() -> None:
    shared = [1]
    assert json_depth({"a": shared, "b": [shared]}) == 3
    loop: dict[str, Any] = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(ValueError, match="holds itself"):
        json_depth(loop)
