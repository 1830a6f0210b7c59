"""A chat's images, to llama-server (measured on the pinned build).

The chat template renders each image as the server's media marker (`rendering.py` sends
a placeholder there, not the bytes); `/completion` then takes the rendered text with the
images' bytes in order (`multimodal_data`, plain base64), and gives every generated id
as for text. A chat's count, its images' tokens included, is the server's own
(`/v1/chat/completions/input_tokens`: what an image costs depends on the projector and,
for some, on the image's size). The server says only "Failed to load image" for an
image it cannot decode, never which: that one is found by asking for each image's count
alone, so that the error names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inference_core.content import content_images
from inference_core.errors import GenerationError, InvalidValue
from inference_core.streams import GenerationScope
from inference_core.types import Message

from . import rendering, wire
from .client import RequestRejected, ServerClient

__all__ = ["cache_failed", "chat_images", "completion_prompt", "count", "undecodable"]

_COUNT = "/v1/chat/completions/input_tokens"
_UNDECODED = "Failed to load image"  # the server's words for bytes it cannot decode
_CUT_BETWEEN_IMAGES = "Chunk not found"


def chat_images(prompt: str | Sequence[Message]) -> list[str]:
    """The images of a chat's messages, in order, as plain base64."""
    if isinstance(prompt, str):
        return []
    return [data for message in prompt for data in content_images(message.content)]


def completion_prompt(text: str, images: list[str]) -> str | dict[str, Any]:
    """`/completion`'s prompt: the text, with the images for its media markers."""
    return {"prompt_string": text, "multimodal_data": images} if images else text


def cache_failed(error: GenerationError) -> bool:
    """Whether llama-server's prompt cache refused the request: the pinned build cannot
    reuse a cached prompt that parts from this one between two adjacent images (it
    answers 500 "Chunk not found" before generating anything); such a request is sent
    again without the cache."""
    return not isinstance(error, RequestRejected) and _CUT_BETWEEN_IMAGES in str(error)


def count(
    client: ServerClient,
    messages: Sequence[Message],
    kwargs: Mapping[str, Any] | None,
    scope: GenerationScope | None = None,
) -> int:
    """How many tokens the chat reads, its images' included."""
    request = rendering.template_request(messages, kwargs, images=True)
    return wire.input_tokens(client.request("POST", _COUNT, request, scope=scope))


def undecodable(
    client: ServerClient, messages: Sequence[Message], refused: RequestRejected
) -> InvalidValue | None:
    """An `InvalidValue` naming the image the server could not decode, if that is what
    `refused` says (each image is asked about alone, in order, until one fails)."""
    if _UNDECODED not in refused.server_message:
        return None
    for number, message in enumerate(messages):
        if isinstance(message.content, str):
            continue
        for index, part in enumerate(message.content):
            if part["type"] != "image_url":
                continue
            alone = {"messages": [{"role": "user", "content": [part]}]}
            try:
                client.request("POST", _COUNT, alone)
            except GenerationError as failed:  # 500 there, where /completion says 400
                if _UNDECODED in str(failed):
                    return InvalidValue(
                        "content",
                        f"message {number}, content part {index}: llama-server cannot "
                        "decode this image (a broken or truncated file?); send a whole "
                        "PNG or JPEG",
                    )
                raise
    return InvalidValue(
        "content", f"llama-server cannot decode one of the chat's images: {refused.server_message}"
    )
