"""What `chat(tools=..., tool_choice=...)` asks, and the generic tool-call format that any
backend able to follow a JSON schema can run.

`tool_request` checks the tools and the choice once for every backend: "auto", "required",
"none", or one tool forced by its name (or the OpenAI `{"type": "function", "function":
{"name": ...}}`). A backend handles a `ToolRequest` with a `ToolPlan`: the generic one
below, or its own for a model whose chat template has a tool format of its own.

In the generic format, the tools are described to the model in a system message, and
its answer is held to a JSON schema: `{"tool_calls": [{"name": ..., "arguments": {...}}]}`
(the arguments held to that tool's own `parameters`; one call unless `parallel`), or,
with `tool_choice="auto"`, also `{"response": "text"}`. Earlier tool calls and results
in the history are written out as assistant and user messages, so that templates that
know only system, user and assistant render them. This asks nothing of a model's chat
template, which is why it is ours: it serves templates without a tool format (the
bundled SmolLM2's among them) and backends that honour only `json_schema`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, final

import attrs

from ._nesting import json_depth
from ._relay import closing
from .content import content_text
from .errors import GenerationError, InvalidValue
from .types import MAX_JSON_DEPTH, GenerateConfig, Message, Token, ToolCall

__all__ = [
    "TOOL_CHOICES",
    "GenericToolPlan",
    "ToolPlan",
    "ToolRequest",
    "generic_plan",
    "plan_tools",
    "read_call",
    "refuse_constraints",
    "render_history",
    "tool_request",
]

TOOL_CHOICES = ("auto", "required", "none")
Choice = Literal["auto", "required", "none"]
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


def _instructions(functions: Sequence[Mapping[str, Any]], choice: Choice) -> str:
    listed = json.dumps(functions, ensure_ascii=False)
    calls = 'as {"tool_calls": [{"name": ..., "arguments": {...}}]}'
    answer = (
        f"Answer with the tool calls, {calls}."
        if choice == "required"
        else f"Answer either with tool calls, {calls}, or with text for the user, as "
        '{"response": "..."}.'
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
            rendered.append(Message("user", f"{name} returned: {content_text(message.content)}"))
        else:
            rendered.append(message)
    return rendered


@attrs.frozen
class ToolRequest:
    """What one chat asks of its tools, checked: the functions (OpenAI's `function` objects:
    name, description, parameters), whether a call may, must or must not be made, the one
    tool a call must be of (`forced`, with `choice` "required"), and whether one answer may
    make several calls (`parallel`)."""

    functions: tuple[dict[str, Any], ...]
    choice: Choice
    forced: str | None = None
    parallel: bool = False

    def callable(self) -> tuple[dict[str, Any], ...]:
        """The functions a call may be of: the forced one, or all."""
        return tuple(f for f in self.functions if self.forced in (None, f["name"]))


class ToolPlan(Protocol):
    """How one chat runs its tools on a backend: the messages and config it generates
    with, and its tokens watched to read the calls back (`calls`, once they end)."""

    @property
    def calls(self) -> tuple[ToolCall, ...]: ...

    def messages(self, messages: Sequence[Message]) -> Sequence[Message]: ...

    def config(self, config: GenerateConfig) -> GenerateConfig: ...

    def watch(self, tokens: Iterator[Token]) -> Iterator[Token]: ...


def refuse_constraints(config: GenerateConfig) -> None:
    """Tools hold the answer to a format of their own: no schema or grammar of the caller's."""
    if config.json_schema is not None or config.grammar is not None:
        raise InvalidValue(
            "tools",
            "tools hold the answer to a schema of their own: drop json_schema and grammar",
        )


@final
class GenericToolPlan:
    """The tools of one chat in the generic format: the messages and config to generate
    with, and the answer read back from the stream's text once it ends."""

    def __init__(self, request: ToolRequest) -> None:
        functions = request.callable()
        self.functions = {function["name"]: function for function in functions}
        calls: dict[str, Any] = {
            "type": "array",
            "minItems": 1,
            "items": {"anyOf": [_call_schema(function) for function in functions]},
        }
        if not request.parallel:
            calls["maxItems"] = 1
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {"tool_calls": calls},
            "required": ["tool_calls"],
        }
        if request.choice == "auto":
            text = {
                "type": "object",
                "properties": {"response": {"type": "string"}},
                "required": ["response"],
            }
            schema = {"anyOf": [schema, text]}
        self.schema = schema
        self.instructions = _instructions(functions, request.choice)
        self.calls: tuple[ToolCall, ...] = ()

    def messages(self, messages: Sequence[Message]) -> list[Message]:
        """The history in our format, the instructions added to (or as) the system message."""
        rendered = render_history(messages, calls_as_json=True)
        if rendered and rendered[0].role == "system":
            system = Message(
                "system", f"{content_text(rendered[0].content)}\n\n{self.instructions}"
            )
            return [system, *rendered[1:]]
        return [Message("system", self.instructions), *rendered]

    def config(self, config: GenerateConfig) -> GenerateConfig:
        refuse_constraints(config)
        return attrs.evolve(config, json_schema=self.schema)

    def watch(self, tokens: Iterator[Token]) -> Iterator[Token]:
        """Pass the tokens on; at the stream's end, read the tool calls from its answer's
        text (the thinking before it is no part of the JSON)."""
        pieces: list[str] = []
        with closing(tokens):
            for token in tokens:
                if token.channel == "content":
                    pieces.append(token.text)
                yield token
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
        listed = answer.get("tool_calls", []) if isinstance(answer, dict) else []
        if not isinstance(listed, list):
            raise GenerationError(f"the answer's tool_calls is not a list: {text[:200]!r}")
        return tuple(read_call(call, "arguments", self.functions) for call in listed)


def read_call(call: object, arguments: str, functions: Mapping[str, Any]) -> ToolCall:
    """A call the model wrote, `{"name": ..., arguments: {...}}`, as a `ToolCall` with an
    id of its own; a `GenerationError` when it calls a tool not in `functions`, or with
    arguments that are no JSON object (or nest too deep)."""
    name = call.get("name") if isinstance(call, dict) else None
    if not isinstance(name, str) or name not in functions:
        shown = repr(name[:100]) if isinstance(name, str) else "a call without a name"
        raise GenerationError(f"the model called a tool it was not given: {shown}")
    assert isinstance(call, dict)
    try:
        return ToolCall(f"call_{os.urandom(12).hex()}", name, call.get(arguments, {}))
    except InvalidValue:
        raise GenerationError(
            f"the model called {name} with arguments that are not a JSON object nested "
            f"at most {MAX_JSON_DEPTH} deep"
        ) from None


def _forced(tool_choice: object) -> str | None:
    """The tool a choice names: its name, or OpenAI's `{"type": "function", "function":
    {"name": ...}}`; None for any other choice."""
    if isinstance(tool_choice, str):
        return None if tool_choice in TOOL_CHOICES else tool_choice
    if isinstance(tool_choice, Mapping) and tool_choice.get("type") == "function":
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str):
            return name
    raise InvalidValue(
        "tool_choice",
        f"tool_choice must be one of {', '.join(TOOL_CHOICES)}, a tool's name or "
        f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r}",
    )


def tool_request(
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: str | Mapping[str, Any],
    parallel_tool_calls: bool = False,
) -> ToolRequest | None:
    """The checked request of `chat(tools=..., tool_choice=..., parallel_tool_calls=...)`;
    None without tools."""
    forced = _forced(tool_choice)
    if isinstance(tools, (str, Mapping)):
        raise InvalidValue("tools", f"tools must be a list of tools, got {tools!r}")
    if type(parallel_tool_calls) is not bool:
        raise InvalidValue(
            "parallel_tool_calls",
            f"parallel_tool_calls must be True or False, got {parallel_tool_calls!r}",
        )
    functions = tuple(_function(tool) for tool in tools or ())
    names = [function["name"] for function in functions]
    if len(set(names)) != len(names):
        raise InvalidValue("tools", f"tool names must be unique, got {names}")
    if forced is not None and forced not in names:
        raise InvalidValue(
            "tool_choice",
            f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or the name of one of the "
            f"tools {names}, got {forced!r:.100}",
        )
    if tool_choice == "required" and not functions:
        raise InvalidValue("tool_choice", "tool_choice='required' needs tools")
    if not functions:
        return None
    choice: Choice = "required" if forced is not None else tool_choice  # type: ignore[assignment]
    return ToolRequest(functions, choice, forced, parallel_tool_calls)


def generic_plan(request: ToolRequest) -> GenericToolPlan | None:
    """The generic plan for a request; None when no tool may be called."""
    return None if request.choice == "none" else GenericToolPlan(request)


def plan_tools(
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: str | Mapping[str, Any],
    parallel_tool_calls: bool = False,
) -> GenericToolPlan | None:
    """The generic plan for `chat(tools=..., tool_choice=...)`; None when no tool may be called."""
    request = tool_request(tools, tool_choice, parallel_tool_calls)
    return None if request is None else generic_plan(request)


def _wrapping() -> int:
    """How many levels the answer's schema (with tool_choice="auto", the deepest) wraps
    around a tool's parameters."""
    function = {"name": "f", "description": "", "parameters": _ANY_OBJECT}
    probe = GenericToolPlan(ToolRequest((function,), "auto"))
    return json_depth(probe.schema) - json_depth(_ANY_OBJECT)


_WRAPPING = _wrapping()
