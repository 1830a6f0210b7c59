"""A chat template's thinking: its tags, and what a chat asks of it.

llama-server tells no client which tags a template thinks between (`/props` says only
whether it renders earlier thinking, `supports_preserve_reasoning`), so they are
found the way its own template analysis finds them: a short chat is rendered with
`enable_thinking` on and off, and what turning it off adds is the empty block that
closes the thinking ("\\n</think>\\n\\n" where the generation prompt opened "<think>"
already, "<think>\\n\\n</think>\\n\\n" where the model opens it itself). A template
that does not change with `enable_thinking` is taken as one that does not think.

A chat's thinking then maps onto llama-server as follows: `think` is the template's
`enable_thinking` (True, False, or not sent for None); a `json_schema` or `grammar`
holds every token the model writes, a thinking block's too, so a constrained chat is
rendered with thinking off; `reasoning_budget` N is the server's own budget on
`/completion` (`reasoning_budget_tokens` with `reasoning_budget_start_tag`,
`reasoning_budget_end_tag` and `generation_prompt`, which this build reads there,
measured), set so that at most N tokens are thinking's, closing tag included: the
server counts the tokens after the opening tag and then forces the closing one.
"""

from __future__ import annotations

from typing import Any

import attrs

from inference_core.errors import GenerationError, InvalidValue, UnsupportedOption
from inference_core.types import GenerateConfig, Message

from . import rendering, tokenizer
from .channels import Block
from .client import ServerClient

__all__ = ["REASONING", "Tags", "budget_fields", "detect", "opens", "template_kwargs", "thinks"]

REASONING = "reasoning"  # the channel of thinking's tokens
_PROBE = (Message("user", "Hi"),)


@attrs.frozen
class Tags:
    """The tags a template thinks between, and how many tokens each takes."""

    open: str
    close: str
    open_tokens: int
    close_tokens: int

    @property
    def block(self) -> Block:
        return Block(self.open, self.close, REASONING)


def _derive(on: str, off: str) -> tuple[str, str] | None:
    """The (opening, closing) tags from a prompt rendered with thinking on and off."""
    if on == off:
        return None
    same = 0
    while same < min(len(on), len(off)) and on[same] == off[same]:
        same += 1
    if on[same:].strip():  # thinking on adds text of its own: not a shape known here
        return None
    parts = off[same:].split()
    if len(parts) == 2:
        return parts[0], parts[1]
    if len(parts) == 1 and parts[0].startswith("</"):
        opening = "<" + parts[0][2:]
        return (opening, parts[0]) if on.rstrip().endswith(opening) else None
    return None


def detect(client: ServerClient) -> Tags | None:
    """The template's thinking tags, or None when it does not think (or renders no chat)."""
    try:
        on, off = (
            rendering.render(client, _PROBE, kwargs={"enable_thinking": thinking})
            for thinking in (True, False)
        )
    except GenerationError:  # a template that cannot render the probe
        return None
    tags = _derive(on, off)
    if tags is None:
        return None
    opening, closing = tags
    return Tags(
        opening,
        closing,
        len(tokenizer.tokenize(client, opening, special=True)),
        len(tokenizer.tokenize(client, closing, special=True)),
    )


def thinks(tags: Tags | None, config: GenerateConfig) -> bool:
    """Whether a chat with `config` may think."""
    constrained = config.json_schema is not None or config.grammar is not None
    return (
        tags is not None
        and config.think is not False
        and config.reasoning_budget != 0
        and not constrained
    )


def template_kwargs(tags: Tags | None, config: GenerateConfig) -> dict[str, Any]:
    """The template's keyword arguments for a chat with `config`."""
    if tags is None:
        return {}
    constrained = config.json_schema is not None or config.grammar is not None
    if constrained and config.think:
        raise UnsupportedOption(
            "think",
            "a json_schema or grammar holds every token the model writes, a thinking "
            "block's too: leave think unset (a constrained chat does not think)",
        )
    if not thinks(tags, config):
        return {"enable_thinking": False}
    return {"enable_thinking": True} if config.think else {}


def budget_fields(tags: Tags, config: GenerateConfig, opened: bool) -> dict[str, Any]:
    """The `/completion` fields that hold the thinking to `reasoning_budget` tokens, the
    closing tag (and an opening tag the model writes itself) included."""
    if config.reasoning_budget < 0:
        return {}
    markup = tags.close_tokens + (0 if opened else tags.open_tokens)
    if config.reasoning_budget < markup:
        raise InvalidValue(
            "reasoning_budget",
            f"reasoning_budget {config.reasoning_budget} is too small for this model's "
            f"thinking: its tags ({tags.open} {tags.close}) take {markup} tokens; give at "
            f"least {markup}, or 0 for no thinking",
        )
    fields: dict[str, Any] = {
        "reasoning_budget_tokens": config.reasoning_budget - markup,
        "reasoning_budget_start_tag": tags.open,
        "reasoning_budget_end_tag": tags.close,
        "reasoning_budget_message": "",
    }
    if opened:  # the server then counts from the prompt's opening tag
        fields["generation_prompt"] = tags.open
    return fields


def opens(tags: Tags, prompt: str) -> bool:
    """Whether the rendered prompt ends inside an open thinking block."""
    return prompt.rstrip().endswith(tags.open)
