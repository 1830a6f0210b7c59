"""A chat template's own tool-call format, measured from what the template renders, and
the calls read back from a model's output in it.

The shapes known here (`ToolFormat.shape`), each a call's JSON object of its name and
its arguments in markup of the template's:
- "tagged": each call in tags of its own, several one after the other, as Hermes and
  Qwen write them: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`;
- "listed": one marker, then the calls as a JSON list, as Mistral writes them:
  `[TOOL_CALLS][{"name": ..., "arguments": {...}}]`;
- "bare": the call's JSON alone, one a turn, as Llama 3.x writes it:
  `{"name": ..., "parameters": {...}}`.

How it is measured: llama-server renders (`/apply-template`) a chat whose assistant turn
is a text, then one probe call and, where the template takes several
(`chat_template_caps`), two. Where these chats differ is the assistant's turn; the text
around and between the probe calls' JSON in it is the format, to the character: the
grammar of a chat with tools holds the model to it, and the calls are read back from
exactly it. A template whose calls are not a JSON object of a name and its arguments (or
parameters), written by Jinja's `tojson` (or without spaces), in one of these shapes,
has no format known here: its chats use the generic format (`inference_core.tools`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs

from inference_core.errors import GenerationError
from inference_core.tools import read_call
from inference_core.types import ToolCall

from .schema_grammar import SchemaGrammar, literal

__all__ = ["LAYOUTS", "PROBE_TOOLS", "ToolFormat", "measure", "probe_chats"]

Shape = Literal["tagged", "listed", "bare"]
LAYOUTS = ((", ", ": "), (",", ":"))  # Jinja's tojson, and JSON without spaces
_ARGUMENT_KEYS = ("arguments", "parameters")
# The probe calls: their names and arguments, and the tools the probe chats list.
_PROBES = (
    ("probe_tool_one", {"probe_argument": "probe value"}),
    ("probe_tool_two", {"probe_argument": "another value"}),
)
PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {"probe_argument": {"type": "string"}}},
        },
    }
    for name, _ in _PROBES
]
_MOST_TURN = 4096  # characters of a turn with probe calls that are searched for them
_TEXT = "probe text of the assistant"
_USER = "probe text of the user"


@attrs.frozen
class ToolFormat:
    """The markup of a template's tool calls: `opening` before the first call's JSON,
    `between` two calls (None: one call a turn), `closing` after the last; the key of a
    call's arguments, and the JSON's separators (`layout`: between items, after keys)."""

    shape: Shape
    opening: str
    between: str | None
    closing: str
    arguments: str = "arguments"
    name_first: bool = True
    layout: tuple[str, str] = LAYOUTS[0]

    @property
    def trigger(self) -> str:
        """The text that begins the calls: a model that writes it is making one (for a bare
        call, its JSON up to the end of the first key)."""
        first = "name" if self.name_first else self.arguments
        return self.opening.strip() or "{" + json.dumps(first)

    def start(self, from_trigger: bool) -> str:
        """The opening, or its part from the trigger on (empty where the trigger is the
        call's own JSON)."""
        if not from_trigger:
            return self.opening
        at = self.opening.find(self.trigger)
        return self.opening[at:] if at >= 0 else ""

    def grammar(
        self, functions: Sequence[Mapping[str, Any]], *, several: bool, from_trigger: bool
    ) -> str:
        """A GBNF grammar of calls of `functions` (OpenAI's `function` objects) in this
        format, their arguments held to each one's parameters (see `schema_grammar`):
        one call, or `several` where the format allows, from the opening (or the trigger,
        `from_trigger`) to the closing."""
        rules = SchemaGrammar(self.layout)
        comma, colon = self.layout
        tools = []
        for index, function in enumerate(functions):
            arguments = rules.rule(function["parameters"], f"tool{index}-arguments")
            name = literal(f'"name"{colon}' + json.dumps(function["name"], ensure_ascii=False))
            members = [name, f"{literal(json.dumps(self.arguments) + colon)} {arguments}"]
            first, second = members if self.name_first else members[::-1]
            tools.append(rules.add(f"tool{index}", f'"{{" {first} {literal(comma)} {second} "}}"'))
        call = rules.add("call", " | ".join(tools))
        more = f" ({literal(self.between)} {call})*" if several and self.between else ""
        opening, closing = self.start(from_trigger), self.closing
        parts = [literal(opening)] if opening else []
        parts += [f"{call}{more}", *([literal(closing)] if closing else [])]
        root = " ".join(parts)
        return "\n".join(
            f"{name} ::= {body}" for name, body in {"root": root, **rules.rules}.items()
        )

    def read(
        self, text: str, functions: Mapping[str, Any], *, from_trigger: bool
    ) -> tuple[ToolCall, ...]:
        """The calls in `text`, the model's output from the beginning of its calls (from
        the trigger, `from_trigger`, or from the opening) to its end; a `GenerationError`
        when the text is not calls in this format, as when it was cut off."""
        opening = self.start(from_trigger)
        decoder = json.JSONDecoder()
        calls, at, separator = [], 0, opening
        while text.startswith(separator, at):
            try:
                call, at = decoder.raw_decode(text, at + len(separator))
            except (ValueError, RecursionError):
                break
            calls.append(read_call(call, self.arguments, functions))
            if text[at:] == self.closing:
                return tuple(calls)
            if self.between is None:
                break
            separator = self.between
        raise GenerationError(
            f"the answer ended inside its tool calls, or outside the template's format "
            f"(raise max_tokens?): {text[-200:]!r}"
        )


Render = Callable[[list[dict[str, Any]]], str]  # a chat, with PROBE_TOOLS, as rendered


def probe_chats(render: Render, parallel: bool) -> list[str]:
    """A chat of a user's turn, the assistant's and another user's, as the template renders
    it with the assistant's turn a text, then one probe call (then two, `parallel`). The
    last turn is a user's: llama-server would continue a last assistant turn."""
    user = {"role": "user", "content": _USER}
    turns: list[dict[str, Any]] = [{"role": "assistant", "content": _TEXT}]
    for count in (1, 2) if parallel else (1,):
        probes = [
            {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": args}}
            for n, (name, args) in enumerate(_PROBES[:count])
        ]
        turns.append({"role": "assistant", "content": "", "tool_calls": probes})
    return [render([user, turn, user]) for turn in turns]


def measure(chats: Sequence[str]) -> ToolFormat | None:
    """The format of the calls in the probe chats (see `probe_chats`); None when they are
    in no shape known here. The assistant's turn is where a chat with calls differs from
    the one with a text: what is before and after is the same."""
    text, *with_calls = chats
    turns = [_turn(text, chat) for chat in with_calls]
    if any(len(turn) > _MOST_TURN for turn in turns):
        return None  # no template writes a probe call so long: no reading it either
    found = [_find_calls(turn, count) for count, turn in enumerate(turns, start=1)]
    if not found or any(calls is None for calls in found):
        return None
    one = found[0]
    assert one is not None
    start, stop, arguments, name_first, layout = one[0]
    opening, closing = turns[0][:start], turns[0][stop:]
    between = None
    if len(found) > 1:
        two = found[1]
        assert two is not None
        between = turns[1][two[0][1] : two[1][0]]
    if not opening.strip():  # bare: one call a turn, whatever the template renders
        return ToolFormat("bare", opening, None, closing, arguments, name_first, layout)
    shape: Shape = "tagged" if between in (None, closing + opening) else "listed"
    return ToolFormat(shape, opening, between, closing, arguments, name_first, layout)


def _turn(text: str, chat: str) -> str:
    """The part of `chat` where it differs from `text`: the assistant's turn with calls,
    where the one in `text` has the probe text."""
    head = _shared(text, chat)
    tail = _shared(text[head:][::-1], chat[head:][::-1])
    return chat[head : len(chat) - tail]


def _shared(one: str, other: str) -> int:
    """How many characters the two strings begin with alike."""
    return next(
        (n for n, (a, b) in enumerate(zip(one, other, strict=False)) if a != b),
        min(len(one), len(other)),
    )


_Found = tuple[int, int, str, bool, tuple[str, str]]


def _find_calls(turn: str, count: int) -> list[_Found] | None:
    """Where each of the first `count` probe calls is in `turn`: its JSON's start and end,
    the key of its arguments, whether its name comes first, and its separators."""
    decoder = json.JSONDecoder()
    found: list[_Found] = []
    at = turn.find("{")
    while at >= 0 and len(found) < count:
        try:
            value, end = decoder.raw_decode(turn, at)
        except ValueError:
            at = turn.find("{", at + 1)
            continue
        shape = _call_shape(value, turn[at:end], _PROBES[len(found)])
        if shape is not None:
            found.append((at, end, *shape))
            at = end
        at = turn.find("{", at + 1)
    return found if len(found) == count else None


def _call_shape(
    value: object, text: str, probe: tuple[str, dict[str, str]]
) -> tuple[str, bool, tuple[str, str]] | None:
    """How a JSON object writes the probe call: its arguments' key, whether the name comes
    first, its separators; None when it is not that call, written as known here."""
    if not isinstance(value, dict) or value.get("name") != probe[0] or len(value) != 2:
        return None
    keys = list(value)
    arguments = next((key for key in keys if key in _ARGUMENT_KEYS), None)
    if arguments is None or value[arguments] != probe[1]:
        return None
    for layout in LAYOUTS:
        if json.dumps(value, ensure_ascii=False, separators=layout) == text:
            return arguments, keys[0] == "name", layout
    return None
