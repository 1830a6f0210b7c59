"""What every framework adapter shares, with no framework imported.

- One loaded model per location and load options for the whole process (`shared_model`):
  frameworks build a new model object per call site, per test, per agent step, and each
  must not start a server of its own. Models loaded here stop when the process ends.
- Messages and options in OpenAI's shapes, which every framework can produce, as ours.
- A chat's answer read the way frameworks want it (`AnswerReader`): the text to show as
  it comes, then the thinking, the tool calls, the usage and why it ended. In the generic
  tool format (`inference_core.tools`) the answer is JSON; while tools are offered it is
  held back and, unless it calls a tool, unwrapped to its text at the end. The thinking
  is shown as it comes, without the tags around it (`Capabilities.reasoning_tags`):
  what may yet be a tag is held until it is one or is not.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, final

import attrs

from ..errors import InvalidValue
from ..protocols import AsyncTokenStream, TextModel, TokenStream
from ..registry import load
from ..types import (
    FinishReason,
    GenerateConfig,
    GenerateMetrics,
    Message,
    Token,
    ToolCall,
    build_config,
    to_message,
)

__all__ = [
    "SAMPLING_FIELDS",
    "AnswerReader",
    "Ending",
    "ModelSource",
    "Shown",
    "answer_reader",
    "checked_source",
    "config_from",
    "generic_tools",
    "messages_from_openai",
    "model_name",
    "openai_logprobs",
    "openai_tool_calls",
    "require",
    "schema_of_response_format",
    "shared_model",
    "usage",
]

ModelSource = str | os.PathLike[str] | TextModel

# GenerateConfig's sampling and thinking options, which every adapter exposes as settings
# of its own under the same names.
SAMPLING_FIELDS: Final = (
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "seed",
    "think",
    "reasoning_budget",
)

_models: dict[tuple[str, str], TextModel] = {}
_loading = threading.Lock()


@atexit.register
def _close_all() -> None:
    for model in _models.values():
        model.close()


def require(module: str, extra: str, note: str = "") -> None:
    """An `ImportError` that names the extra to install when `module` (an adapter's
    framework) is missing; called before an adapter imports it."""
    if importlib.util.find_spec(module.partition(".")[0]) is None:
        raise ImportError(
            f"this adapter needs {module.partition('.')[0]}{note}: "
            f'pip install "inference-core[{extra}]"',
            name=module,
        )


def _where(location: str) -> str:
    """One key for every spelling of a local file; URLs and hub names as written."""
    return os.path.realpath(location) if os.path.exists(location) else location


def checked_source(model: object, load_options: Mapping[str, Any] | None = None) -> ModelSource:
    """`model` if it names a model (path, URL, hf:// name) or is one loaded already, which
    takes no load options; else an `InvalidValue` saying what it may be."""
    if isinstance(model, TextModel):
        if load_options:
            raise InvalidValue(
                "load_options", "a model loaded already takes no load options: load it with them"
            )
        return model
    if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
        raise InvalidValue(
            "model",
            f"model must be a path, URL or hf:// name, or a loaded TextModel, got {model!r:.100}",
        )
    return model


def shared_model(model: ModelSource, load_options: Mapping[str, Any] | None = None) -> TextModel:
    """`model` when it is loaded already, else the process's one model loaded from that
    location with these `LoadConfig` options (loading it on first use)."""
    source = checked_source(model, load_options)
    if isinstance(source, TextModel):
        return source
    location = os.fspath(source)
    options = dict(load_options or {})
    key = (_where(location), json.dumps(options, sort_keys=True, default=repr))
    with _loading:
        if key not in _models:
            _models[key] = load(location, **options)
        return _models[key]


def model_name(model: ModelSource) -> str:
    """What a framework shows as the model's name: its location, or a loaded one's path."""
    if isinstance(model, TextModel):
        return model.info.path or model.info.name
    return os.fspath(model)


def config_from(options: Mapping[str, Any]) -> GenerateConfig:
    """A `GenerateConfig` from options named as its fields, None meaning "the default"."""
    given = {name: value for name, value in options.items() if value is not None}
    return build_config(GenerateConfig, None, given)


def schema_of_response_format(response_format: object) -> dict[str, Any] | None:
    """The JSON schema an OpenAI `response_format` holds the answer to; None for text."""
    if response_format is None:
        return None
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "text":
            return None
        if kind == "json_object":
            return {"type": "object"}
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, Mapping) else None
            if isinstance(schema, Mapping):
                return dict(schema)
    raise InvalidValue(
        "response_format",
        "response_format must be {'type': 'text'}, {'type': 'json_object'} or "
        "{'type': 'json_schema', 'json_schema': {'schema': {...}}}, "
        f"got {response_format!r:.200}",
    )


def _text_of(content: object) -> str:
    """The text of a message's content given as parts (only a user message has images)."""
    if not isinstance(content, Sequence) or isinstance(content, str):
        raise InvalidValue(
            "content", f"a message's content must be text or parts, got {content!r:.100}"
        )
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "".join(texts)


def _message(message: Mapping[str, Any]) -> Message:
    """One OpenAI-shaped message as ours: "developer" is a system message, thinking comes
    as `reasoning_content`, keys we have no use for (`name`) are left out."""
    if not isinstance(message, Mapping):
        raise InvalidValue("messages", f"a message must be a dict, got {message!r:.100}")
    role = message.get("role")
    content = message.get("content")
    calls = message.get("tool_calls") or ()
    if content is None:
        if not calls:
            raise InvalidValue("content", f"a message needs its content, got {message!r:.200}")
        content = ""
    elif role != "user" and not isinstance(content, str):
        content = _text_of(content)
    thinking = message.get("reasoning_content", message.get("reasoning"))
    return to_message(
        {
            "role": "system" if role == "developer" else role,
            "content": content,
            "tool_calls": calls,
            "tool_call_id": message.get("tool_call_id"),
            "reasoning": thinking if isinstance(thinking, str) and thinking else None,
        }
    )


def messages_from_openai(messages: Iterable[Mapping[str, Any]]) -> list[Message]:
    """Messages in OpenAI's chat shape, as every framework can write them, as ours."""
    return [_message(message) for message in messages]


def generic_tools(model: TextModel, tools: object, tool_choice: object) -> bool:
    """Whether a chat with these tools answers in the generic format's JSON."""
    return bool(tools) and tool_choice != "none" and model.capabilities.tools == "generic"


def openai_tool_calls(calls: Iterable[ToolCall]) -> list[dict[str, Any]]:
    """Tool calls in OpenAI's shape, arguments as a JSON string."""
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for call in calls
    ]


def _logprob(token: Token) -> dict[str, Any]:
    return {
        "token": token.text,
        "logprob": token.logprob,
        "bytes": list(token.text.encode()),
    }


def openai_logprobs(tokens: Iterable[Token]) -> list[dict[str, Any]]:
    """The log-probabilities of tokens that carry them, in OpenAI's `logprobs.content` shape."""
    return [
        {**_logprob(token), "top_logprobs": [_logprob(top) for top in token.top_logprobs]}
        for token in tokens
        if token.logprob is not None
    ]


def usage(metrics: GenerateMetrics | None, reasoning_tokens: int) -> dict[str, int] | None:
    """Token counts as frameworks report them: input, output (thinking included), total,
    the input read from the server's cache, the output spent thinking."""
    if metrics is None:
        return None
    return {
        "input": metrics.prompt_tokens,
        "output": metrics.generated_tokens,
        "total": metrics.prompt_tokens + metrics.generated_tokens,
        "cached": metrics.cached_tokens,
        "reasoning": reasoning_tokens,
    }


@attrs.frozen
class Shown:
    """What one token adds to what the user sees: answer text, thinking text."""

    text: str = ""
    thinking: str = ""


@attrs.frozen
class Ending:
    """A chat's answer once its stream has ended.

    text: the answer's text (empty when it calls tools); late_text: the part of it not
    shown while streaming (the generic format's answer, unwrapped at the end);
    reasoning: the whole thinking, late_reasoning the part of it not shown yet;
    tokens: the answer's tokens, thinking left out.
    """

    text: str
    late_text: str
    reasoning: str
    late_reasoning: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason | None
    metrics: GenerateMetrics | None
    tokens: tuple[Token, ...]
    reasoning_tokens: int

    @property
    def usage(self) -> dict[str, int] | None:
        return usage(self.metrics, self.reasoning_tokens)

    @property
    def openai_usage(self) -> dict[str, Any] | None:
        """The counts as OpenAI's API names them: what `inference serve` answers and
        LiteLLM's `Usage` takes."""
        counts = self.usage
        if counts is None:
            return None
        return {
            "prompt_tokens": counts["input"],
            "completion_tokens": counts["output"],
            "total_tokens": counts["total"],
            "prompt_tokens_details": {"cached_tokens": counts["cached"]},
            "completion_tokens_details": {"reasoning_tokens": counts["reasoning"]},
        }


_GENERIC_TEXT: Final = "response"


@final
class _LiveThinking:
    """The thinking without its tags and the blank space around, as it comes: text that
    may still be a tag's beginning, or space that may end the thinking, waits."""

    def __init__(self, tags: Sequence[str]) -> None:
        self._tags = tuple(tags)
        self._waiting = ""
        self.shown = ""

    def take(self, piece: str) -> str:
        text = self._waiting + piece
        for tag in self._tags:
            text = text.replace(tag, "")
        if not self.shown:
            text = text.lstrip()
        cut = len(text) - _tag_start(text, self._tags)
        ready = text[:cut].rstrip()
        self._waiting = text[len(ready) :]
        self.shown += ready
        return ready


def _tag_start(text: str, tags: Sequence[str]) -> int:
    """How long the end of `text` that begins one of `tags` (and may yet become it) is."""
    return max(
        (size for tag in tags for size in range(len(tag) - 1, 0, -1) if text.endswith(tag[:size])),
        default=0,
    )


@final
class AnswerReader:
    """Reads one chat's stream: `take` each token for what to show now, then `end`.

    held: the answer is the generic tool format's JSON (see `generic_tools`), shown only
    at the end; tags: the model's `capabilities.reasoning_tags`.
    """

    def __init__(self, *, held: bool, tags: Sequence[str] = ()) -> None:
        self._held = held
        self._answer: list[Token] = []
        self._thinking = _LiveThinking(tags)
        self._thinking_tokens = 0

    def take(self, token: Token) -> Shown:
        """What this token adds to the answer or the thinking shown (while held, nothing)."""
        if token.channel == "reasoning":
            self._thinking_tokens += 1
            return Shown(thinking=self._thinking.take(token.text))
        self._answer.append(token)
        return Shown() if self._held else Shown(text=token.text)

    def end(self, stream: TokenStream | AsyncTokenStream, reasoning: str) -> Ending:
        """The whole answer of the ended `stream`, whose `reasoning_text()` is `reasoning`."""
        calls = stream.tool_calls
        text = "".join(token.text for token in self._answer)
        late = ""
        if self._held:
            text = late = "" if calls else _unwrapped(text)
        shown = self._thinking.shown
        return Ending(
            text=text,
            late_text=late,
            reasoning=reasoning,
            late_reasoning=reasoning[len(shown) :] if reasoning.startswith(shown) else "",
            tool_calls=calls,
            finish_reason=stream.finish_reason,
            metrics=stream.metrics,
            tokens=tuple(self._answer),
            reasoning_tokens=self._thinking_tokens,
        )


def answer_reader(
    model: TextModel, tools: object = None, tool_choice: object = "auto"
) -> AnswerReader:
    """The reader of a chat with the model, offering it `tools` with `tool_choice`."""
    return AnswerReader(
        held=generic_tools(model, tools, tool_choice), tags=model.capabilities.reasoning_tags
    )


def _unwrapped(text: str) -> str:
    """The text of a generic-format answer that calls no tool: `{"response": "..."}`
    (checked whole by the tool plan before the stream ended)."""
    answer = json.loads(text)
    return answer[_GENERIC_TEXT] if isinstance(answer, dict) else text
