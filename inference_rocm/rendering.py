"""The text a generation continues: a prompt as it is, a chat's messages rendered by
llama-server with the model's chat template (its own, or `LoadConfig.chat_template`).

`chat()` and `count_tokens()` both render here, so that a count is of exactly what a
chat sends; what else the template is given (tools, its keyword arguments) belongs
in `template_request`. Messages go to the template in OpenAI's shape: an assistant's
calls as `tool_calls` (their arguments as objects), a tool's result with its
`tool_call_id`, and an assistant's earlier thinking (`Message.reasoning`) as its
`reasoning_content`, which a template renders or drops as it was written to; `kwargs`
are the template's keyword arguments (`chat_template_kwargs`, such as `enable_thinking`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, final, overload

from inference_core.content import Content
from inference_core.errors import GenerationError
from inference_core.streams import GenerationScope
from inference_core.types import Message, ToolCall

from . import wire
from .client import RequestRejected, ServerClient

__all__ = ["ToolChat", "render", "template_request", "tool_calls_field"]


@final
class ToolChat(Sequence[Message]):
    """A chat's messages, with the tools its template renders (OpenAI function tools) and
    the fields the completion request adds for them (the grammar of the tool format)."""

    __slots__ = ("_messages", "fields", "tools")

    def __init__(
        self,
        messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]],
        fields: Mapping[str, Any],
    ) -> None:
        self._messages = tuple(messages)
        self.tools = [dict(tool) for tool in tools]
        self.fields = dict(fields)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Message]: ...

    def __getitem__(self, index: int | slice) -> Message | Sequence[Message]:
        return self._messages[index]

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._messages)


# /apply-template puts the server's media marker for an image part without decoding it:
# the bytes go once, with the completion (measured on the pinned build).
_PLACEHOLDER = {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}


def _content(content: Content, images: bool) -> str | list[dict[str, Any]]:
    """The content for the template: its images as placeholders unless `images`."""
    if isinstance(content, str):
        return content
    return [part if images or part["type"] == "text" else _PLACEHOLDER for part in content]


def tool_calls_field(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """A message's calls in OpenAI's shape, their arguments as an object (as chat
    templates and `to_message` read them)."""
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in calls
    ]


def _message(message: Message, images: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"role": message.role, "content": _content(message.content, images)}
    if message.tool_calls:
        fields["tool_calls"] = tool_calls_field(message.tool_calls)
    if message.tool_call_id is not None:
        fields["tool_call_id"] = message.tool_call_id
    if message.reasoning is not None:
        fields["reasoning_content"] = message.reasoning
    return fields


def template_request(
    messages: Sequence[Message], kwargs: Mapping[str, Any] | None = None, *, images: bool = False
) -> dict[str, Any]:
    """The `/apply-template` request for `messages` (and the tools of a `ToolChat`), with
    the template's keyword arguments; with `images`, the images' bytes too (for a server
    that reads them, as its token count does)."""
    request: dict[str, Any] = {"messages": [_message(message, images) for message in messages]}
    if isinstance(messages, ToolChat):
        request["tools"] = messages.tools
    if kwargs:
        request["chat_template_kwargs"] = dict(kwargs)
    return request


def render(
    client: ServerClient,
    prompt: str | Sequence[Message],
    scope: GenerationScope | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> str:
    """The text to complete: the prompt, or the messages in the model's chat template.

    A template that cannot render these messages (it raised, or the server could not
    use it with them) is a `GenerationError` in its own words."""
    if isinstance(prompt, str):
        return prompt
    try:
        answer = client.request(
            "POST", "/apply-template", template_request(prompt, kwargs), scope=scope
        )
    except RequestRejected as refused:
        if refused.status != 400:
            raise
        raise GenerationError(
            f"the model's chat template cannot render these messages: {refused.server_message}"
        ) from None
    return wire.prompt(answer)
