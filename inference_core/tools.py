"""Tool calls in a generic format that any backend able to follow a JSON schema can run.

The tools are described to the model in a system message, and its answer is held to
a JSON schema: `{"tool_calls": [{"name": ..., "arguments": {...}}]}` (the arguments
held to that tool's own `parameters`), or, with `tool_choice="auto"`, also
`{"response": "text"}`. Earlier tool calls and results in the history are written
out as assistant and user messages, so that templates that know only system, user
and assistant render them. This asks nothing of a model's chat
template, which is why it is ours: llama-server follows each template's own tool
syntax, and ignores tools for templates that have none (the bundled SmolLM2 among
them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, final

import attrs

from ._nesting import json_depth
from .errors import GenerationError, InvalidValue
from .types import MAX_JSON_DEPTH, GenerateConfig, Message, Token, ToolCall

__all__ = ["TOOL_CHOICES", "ToolPlan", "plan_tools", "render_history"]

TOOL_CHOICES = ("auto", "required", "none")
_ANY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def _function(tool: object) -> dict[str, Any]:
    """One tool in the OpenAI function-tool shape, checked: name, description, parameters."""
    if not isinstance(tool, Mapping) or tool.get("type") != "function":
        raise InvalidValue(
            "tools",
            "each tool must be {'type': 'function', 'function': {'name': ..., "
            f"'description': ..., 'parameters': {{...}}}}}}, got {tool!r}",
        )
    function = tool.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str) or not name:
        raise InvalidValue("tools", f"a tool's function needs a non-empty 'name', got {tool!r}")
    assert isinstance(function, Mapping)
    parameters = function.get("parameters", _ANY_OBJECT)
    description = function.get("description", "")
    if not isinstance(parameters, Mapping) or not isinstance(description, str):
        raise InvalidValue(
            "tools",
            f"tool {name!r}: 'parameters' must be a JSON schema object and 'description' a string",
        )
    _check_depth(name, parameters)
    return {"name": name, "description": description, "parameters": dict(parameters)}


def _check_depth(name: str, parameters: Mapping[str, Any]) -> None:
    """Parameters that fit in the answer's schema, whose own nesting wraps them."""
    try:
        depth = json_depth(parameters)
    except ValueError as error:
        raise InvalidValue("tools", f"tool {name!r}: 'parameters' {error}") from None
    limit = MAX_JSON_DEPTH - _WRAPPING
    if depth > limit:
        raise InvalidValue(
            "tools",
            f"tool {name!r}: 'parameters' nests {depth} deep (dicts and lists), past the limit "
            f"of {limit} (MAX_JSON_DEPTH, {MAX_JSON_DEPTH}, less the {_WRAPPING} levels of the "
            "schema the answer is held to, around them); flatten it",
        )


def _call_schema(function: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function["parameters"],
        },
        "required": ["name", "arguments"],
    }


def _instructions(functions: Sequence[Mapping[str, Any]], choice: str) -> str:
    listed = json.dumps(functions, ensure_ascii=False)
    answer = (
        'Answer with the tool calls, as {"tool_calls": [{"name": ..., "arguments": {...}}]}.'
        if choice == "required"
        else 'Answer either with tool calls, as {"tool_calls": [{"name": ..., "arguments": '
        '{...}}]}, or with text for the user, as {"response": "..."}.'
    )
    return f"You can call these tools:\n{listed}\n{answer}"


def render_history(messages: Sequence[Message], *, calls_as_json: bool = False) -> list[Message]:
    """Each tool result as a user message in plain words, naming the tool whose call it
    answers; tool calls as the assistant's JSON in our format when the model is to answer
    in it, else in plain words too (a small model copies the form of its last turn)."""
    names = {call.id: call.name for message in messages for call in message.tool_calls}
    rendered = []
    for message in messages:
        if message.tool_calls:
            calls = [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
            said = (
                json.dumps({"tool_calls": calls})
                if calls_as_json
                else " ".join(
                    f"I call {c['name']} with {json.dumps(c['arguments'])}." for c in calls
                )
            )
            rendered.append(Message("assistant", said))
        elif message.role == "tool":
            name = names.get(message.tool_call_id or "", "the tool")
            rendered.append(Message("user", f"{name} returned: {message.content}"))
        else:
            rendered.append(message)
    return rendered


@final
class ToolPlan:
    """The tools of one chat: the messages and config to generate with, and the answer
    read back from the stream's text once it ends."""

    def __init__(self, functions: Sequence[Mapping[str, Any]], choice: str) -> None:
        self.functions = {function["name"]: function for function in functions}
        calls = {
            "type": "array",
            "minItems": 1,
            "items": {"anyOf": [_call_schema(function) for function in functions]},
        }
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {"tool_calls": calls},
            "required": ["tool_calls"],
        }
        if choice == "auto":
            text = {
                "type": "object",
                "properties": {"response": {"type": "string"}},
                "required": ["response"],
            }
            schema = {"anyOf": [schema, text]}
        self.schema = schema
        self.instructions = _instructions(functions, choice)
        self.calls: tuple[ToolCall, ...] = ()

    def messages(self, messages: Sequence[Message]) -> list[Message]:
        """The history in our format, the instructions added to (or as) the system message."""
        rendered = render_history(messages, calls_as_json=True)
        if rendered and rendered[0].role == "system":
            system = Message("system", f"{rendered[0].content}\n\n{self.instructions}")
            return [system, *rendered[1:]]
        return [Message("system", self.instructions), *rendered]

    def config(self, config: GenerateConfig) -> GenerateConfig:
        if config.json_schema is not None or config.grammar is not None:
            raise InvalidValue(
                "tools",
                "tools hold the answer to a schema of their own: drop json_schema and grammar",
            )
        return attrs.evolve(config, json_schema=self.schema)

    def watch(self, tokens: Iterator[Token]) -> Iterator[Token]:
        """Pass the tokens on; at the stream's end, read the tool calls from its answer's
        text (the thinking before it is no part of the JSON)."""
        pieces: list[str] = []
        try:
            for token in tokens:
                if token.channel == "content":
                    pieces.append(token.text)
                yield token
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:  # closed early: the backend's generator frees its slot
                close()
        self.calls = self._parse("".join(pieces))

    def _parse(self, text: str) -> tuple[ToolCall, ...]:
        try:
            answer = json.loads(text)
        except ValueError:
            raise GenerationError(
                f"the answer ended before its JSON did (raise max_tokens?): {text[-200:]!r}"
            ) from None
        except RecursionError:  # what the server sends is the server's fault, never ours
            raise GenerationError(
                f"the answer nests deeper than JSON can be read here: {text[:200]!r}..."
            ) from None
        calls = []
        listed = answer.get("tool_calls", []) if isinstance(answer, dict) else []
        if not isinstance(listed, list):
            raise GenerationError(f"the answer's tool_calls is not a list: {text[:200]!r}")
        for call in listed:
            name = call.get("name") if isinstance(call, dict) else None
            if not isinstance(name, str) or name not in self.functions:
                shown = repr(name[:100]) if isinstance(name, str) else "a call without a name"
                raise GenerationError(f"the model called a tool it was not given: {shown}")
            arguments = call.get("arguments", {})
            try:
                calls.append(ToolCall(f"call_{os.urandom(12).hex()}", name, arguments))
            except InvalidValue:
                raise GenerationError(
                    f"the model called {name} with arguments that are not a JSON object nested "
                    f"at most {MAX_JSON_DEPTH} deep"
                ) from None
        return tuple(calls)


def plan_tools(tools: Sequence[Mapping[str, Any]] | None, tool_choice: str) -> ToolPlan | None:
    """The plan for `chat(tools=..., tool_choice=...)`; None when no tool may be called."""
    if tool_choice not in TOOL_CHOICES:
        raise InvalidValue(
            "tool_choice",
            f"tool_choice must be one of {', '.join(TOOL_CHOICES)}, got {tool_choice!r}",
        )
    if isinstance(tools, (str, Mapping)):
        raise InvalidValue("tools", f"tools must be a list of tools, got {tools!r}")
    functions = [_function(tool) for tool in tools or ()]
    names = [function["name"] for function in functions]
    if len(set(names)) != len(names):
        raise InvalidValue("tools", f"tool names must be unique, got {names}")
    if tool_choice == "required" and not functions:
        raise InvalidValue("tool_choice", "tool_choice='required' needs tools")
    return ToolPlan(functions, tool_choice) if functions and tool_choice != "none" else None


def _wrapping() -> int:
    """How many levels the answer's schema (with tool_choice="auto", the deepest) wraps
    around a tool's parameters."""
    probe = ToolPlan([{"name": "f", "description": "", "parameters": _ANY_OBJECT}], "auto")
    return json_depth(probe.schema) - json_depth(_ANY_OBJECT)


_WRAPPING = _wrapping()
