"""Tool calls in the model's own format (`tool_formats.py`): the chat template renders the
tools, earlier calls and tool results; a grammar holds the answer to the template's call
markup, each call's arguments to its tool's parameters; the calls are read back from the
markup. All of it over `/apply-template` and `/completion`, so every token keeps its id
(llama-server's `/v1/chat/completions` parses these formats but drops the ids of the
markup tokens it holds back).

What the tokens carry: every token the model wrote comes, in order, with its real id.
Text before the calls is content and streams as it comes (a token that might begin the
calls' trigger, `<tool_call>`, waits until it is known not to). The calls' tokens (markup
and JSON) are not content: they carry no text, so `stream.text()` is the answer alone,
and the calls are `stream.tool_calls` once the stream ends; a token that begins in the
content and ends in the markup carries its content part. `model.detokenize()` of the ids
gives the raw output.

tool_choice "required" or a tool's name: the grammar holds the answer to calls (of that
tool) from its first token, so no text comes first (llama-server's own "required"
grammar lets text come first, and a small model writes text until max_tokens). "auto":
the grammar waits (llama-server's lazy grammar) for the trigger; until then the model
writes text. "none": the template still renders the tools and the history's calls; the
answer is text, and no calls are read from it. One call, or several with
`parallel_tool_calls` where the template renders several.

A template that thinks: with "auto" or "none" the model may think first, and its thinking
passes through as the reasoning channel (calls are looked for in the answer only); a
forced call's grammar holds every token from the first, so that chat is rendered with
thinking off, as one held to a json_schema is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, final

import attrs

from inference_core._relay import relayed
from inference_core._stops import StopMatcher
from inference_core.errors import UnsupportedOption
from inference_core.tools import ToolRequest, refuse_constraints
from inference_core.types import GenerateConfig, Message, Token, ToolCall

from . import wire
from .client import RequestRejected, ServerClient
from .rendering import ToolChat
from .tool_formats import PROBE_TOOLS, ToolFormat, measure, probe_chats
from .wire import Props

__all__ = ["FormatProbe", "NativeToolPlan"]

logger = logging.getLogger(__name__)

_WORD_TRIGGER = 1  # llama.cpp's COMMON_GRAMMAR_TRIGGER_TYPE_WORD, in a grammar trigger


@final
class FormatProbe:
    """A model's tool format, measured once, on first need, where `/props` says its
    template renders tools and calls (`chat_template_caps`); None: it has none known here."""

    def __init__(self, client: Callable[[], ServerClient], props: Props | None) -> None:
        self._client = client  # the server's client now (a server started again has another)
        self._props = props
        self._lock = threading.Lock()
        self._measured = props is None or not props.template_tools
        self._format: ToolFormat | None = None

    @property
    def pending(self) -> bool:
        """True until the format is known (asking for it then asks the server)."""
        return not self._measured

    def format(self) -> ToolFormat | None:
        with self._lock:
            if not self._measured:
                self._format = self._measure()
                self._measured = True
            return self._format

    def _measure(self) -> ToolFormat | None:
        """The format, from the probe chats; None where the template cannot render them."""
        assert self._props is not None

        def render(messages: list[dict[str, Any]]) -> str:
            request = {"messages": messages, "tools": PROBE_TOOLS, "add_generation_prompt": False}
            return wire.prompt(self._client().request("POST", "/apply-template", request))

        try:
            return measure(probe_chats(render, self._props.template_parallel_calls))
        except RequestRejected as refused:
            if refused.status != 400:
                raise
            logger.info("the chat template renders no probe calls: %s", refused.server_message)
            return None


@final
class NativeToolPlan:
    """The tools of one chat in the model's own format (see the module's docstring)."""

    def __init__(self, request: ToolRequest, tool_format: ToolFormat) -> None:
        self._request = request
        self._format = tool_format
        self._functions = {f["name"]: f for f in request.callable()}
        self.calls: tuple[ToolCall, ...] = ()

    def messages(self, messages: Sequence[Message]) -> ToolChat:
        tools = [{"type": "function", "function": f} for f in self._request.functions]
        return ToolChat(messages, tools, self._fields())

    def _fields(self) -> dict[str, Any]:
        """The `/completion` fields that hold the answer to the format's calls."""
        request, form = self._request, self._format
        if request.choice == "none":
            return {}
        lazy = request.choice == "auto"
        grammar = form.grammar(request.callable(), several=request.parallel, from_trigger=lazy)
        preserved = [mark for mark in (form.trigger, form.closing.strip()) if mark]
        fields: dict[str, Any] = {"grammar": grammar, "preserved_tokens": preserved}
        if lazy:
            fields["grammar_lazy"] = True
            fields["grammar_triggers"] = [{"type": _WORD_TRIGGER, "value": form.trigger}]
        return fields

    def config(self, config: GenerateConfig) -> GenerateConfig:
        """A forced call's grammar holds every token from the first, so that chat does not
        think (as one held to a json_schema does not)."""
        refuse_constraints(config)
        if self._request.choice in ("auto", "none"):
            return config
        if config.think:
            raise UnsupportedOption(
                "think",
                "a forced tool call holds every token the model writes from the first, a "
                "thinking block's too: leave think unset (a chat that must call a tool "
                "does not think), or use tool_choice='auto'",
            )
        return attrs.evolve(config, think=False)

    def watch(self, tokens: Iterator[Token]) -> Iterator[Token]:
        """The tokens, the calls' without text; at the end, the calls read from them."""
        if self._request.choice == "none":
            yield from tokens
            return
        lazy = self._request.choice == "auto"
        reader = _MarkupReader(self._format.trigger if lazy else None)
        yield from relayed(tokens, reader.feed, reader.end)
        if reader.markup is not None:
            self.calls = self._format.read(reader.markup, self._functions, from_trigger=lazy)


@final
class _MarkupReader:
    """Tokens in; out, as soon as it is known, each token as content (its text) or as the
    calls' markup (no text). With a trigger, tokens are content until the trigger;
    without, all are markup. `markup` is the raw text of the calls (None: none began)."""

    def __init__(self, trigger: str | None) -> None:
        self._matcher = None if trigger is None else StopMatcher((trigger,))
        self._trigger = trigger
        self.markup: str | None = None if trigger is not None else ""

    def feed(self, token: Token) -> list[Token]:
        if token.channel != "content" and self.markup is None:
            return [token]  # the thinking, which comes before any call
        if self._matcher is None or self.markup is not None:
            assert self.markup is not None
            self.markup += token.text
            return [attrs.evolve(token, text="")]
        content = self._matcher.feed(token)
        if not self._matcher.matched:
            return content
        assert self._trigger is not None
        rest = self._matcher.rest
        raw = "".join(held.text for held in rest)
        at = raw.find(self._trigger)  # the first: none began in the tokens before `rest`
        self.markup = raw[at:]
        offset = 0
        for held in rest:  # the token the trigger begins inside keeps the text before it
            kept = held.text[: max(0, at - offset)]
            offset += len(held.text)
            content.append(attrs.evolve(held, text=kept))
        return content

    def end(self) -> list[Token]:
        if self._matcher is None or self.markup is not None:
            return []
        return self._matcher.end()
