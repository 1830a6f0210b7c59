"""The text a generation continues: a prompt as it is, a chat's messages rendered by
llama-server with the model's chat template (its own, or `LoadConfig.chat_template`).

`chat()` and `count_tokens()` both render here, so that a count is of exactly what a
chat sends; what else the template is given (tools, its keyword arguments) belongs
in `template_request`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference_core.errors import GenerationError
from inference_core.streams import GenerationScope
from inference_core.types import Message

from . import wire
from .client import RequestRejected, ServerClient

__all__ = ["render", "template_request"]


def template_request(messages: Sequence[Message]) -> dict[str, Any]:
    """The `/apply-template` request for `messages`."""
    return {"messages": [{"role": m.role, "content": m.content} for m in messages]}


def render(
    client: ServerClient, prompt: str | Sequence[Message], scope: GenerationScope | None = None
) -> str:
    """The text to complete: the prompt, or the messages in the model's chat template.

    A template that cannot render these messages (it raised, or the server could not
    use it with them) is a `GenerationError` in its own words."""
    if isinstance(prompt, str):
        return prompt
    try:
        answer = client.request("POST", "/apply-template", template_request(prompt), scope=scope)
    except RequestRejected as refused:
        if refused.status != 400:
            raise
        raise GenerationError(
            f"the model's chat template cannot render these messages: {refused.server_message}"
        ) from None
    return wire.prompt(answer)
