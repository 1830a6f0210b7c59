"""The text a generation continues: a prompt as it is, a chat's messages rendered by
llama-server with the model's chat template (its own, or `LoadConfig.chat_template`).

`chat()` and `count_tokens()` both render here, so that a count is of exactly what a
chat sends; what else the template is given (tools, its keyword arguments) belongs
in `template_request`. An assistant message's earlier thinking (`Message.reasoning`)
goes to the template as its `reasoning_content`, which a template renders or drops as
it was written to; `kwargs` are the template's keyword arguments
(`chat_template_kwargs`, such as `enable_thinking`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inference_core.errors import GenerationError
from inference_core.streams import GenerationScope
from inference_core.types import Message

from . import wire
from .client import RequestRejected, ServerClient

__all__ = ["render", "template_request"]


def _message(message: Message) -> dict[str, Any]:
    rendered = {"role": message.role, "content": message.content}
    if message.reasoning is not None:
        rendered["reasoning_content"] = message.reasoning
    return rendered


def template_request(
    messages: Sequence[Message], kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The `/apply-template` request for `messages`, with the template's keyword arguments."""
    request: dict[str, Any] = {"messages": [_message(message) for message in messages]}
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
