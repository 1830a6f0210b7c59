"""Value types: immutable, validated on construction, cheap to pass between threads."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs

from ._nesting import gbnf_depth, gbnf_rules, json_depth
from .content import Content, checked_content, content_images, shown_content
from .errors import InvalidValue

__all__ = [
    "CACHE_TYPES",
    "CHANNELS",
    "FINISH_REASONS",
    "MAX_DETOKENIZE_IDS",
    "MAX_GRAMMAR_DEPTH",
    "MAX_GRAMMAR_RULES",
    "MAX_JSON_DEPTH",
    "MAX_LOGPROBS",
    "MAX_STOPS",
    "MAX_STOP_LENGTH",
    "MAX_TOKENIZE_CHARS",
    "MAX_TOKENS",
    "ROLES",
    "SPECULATIVE_MODES",
    "TOOL_FORMATS",
    "BatchResult",
    "Capabilities",
    "FinishReason",
    "GenerateConfig",
    "GenerateMetrics",
    "LoadConfig",
    "Message",
    "MessageLike",
    "ModelInfo",
    "Session",
    "Token",
    "ToolCall",
    "build_config",
    "refuse_options",
    "to_message",
]

ROLES = ("system", "user", "assistant", "tool")
# llama-server parses a grammar recursively: the pinned build dies by SIGSEGV on one whose
# parentheses nest about 17,000 deep (8 MiB of stack); 2,000 leaves it a margin of eight.
MAX_GRAMMAR_DEPTH = 2_000
# A chain of rules that each name the next kills it the same way: 60,000 run, 120,000 do
# not. Real grammars define tens or hundreds.
MAX_GRAMMAR_RULES = 10_000
# It turns a schema into a grammar recursively too: it dies on one nested 8,000 deep, after
# a minute (the time grows with the square of the depth: 2 s at 1,000), and Python's json
# recurses as well, up to about 1,000. No real schema comes near 256.
MAX_JSON_DEPTH = 256

#: Why a stream ended: an end-of-generation token, a stop token or a stop string ("stop"),
#: max_tokens or a full context ("length"), calls of the tools it was given ("tool_calls"),
#: or a cancel, break or close ("cancelled").
FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]
FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "tool_calls", "cancelled")
#: What part of the output a token belongs to: the answer ("content") or the model's
#: thinking ("reasoning", the tags that open and close it included).
CHANNELS = ("content", "reasoning")

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]
_Item = TypeVar("_Item")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(low: int, high: int | None = None) -> _Validator:
    """An integer in [low, high]; the message names the field and the range."""
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise InvalidValue(
                attribute.name, f"{attribute.name} must be an integer {allowed}, got {value!r}"
            )

    return check


def _float_in(low: float, high: float, *, low_open: bool = False) -> _Validator:
    """A finite number in [low, high] (or (low, high] when `low_open`)."""
    allowed = f"{'(' if low_open else '['}{low}, {high}]"

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (value > low if low_open else value >= low)
            and value <= high
        )
        if not ok:
            raise InvalidValue(
                attribute.name, f"{attribute.name} must be a number in {allowed}, got {value!r}"
            )

    return check


def _one_of(choices: tuple[str, ...]) -> _Validator:
    """One of a few named strings; the message lists them."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not (isinstance(value, str) and value in choices):
            raise InvalidValue(
                attribute.name,
                f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}",
            )

    return check


def _bool(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidValue(attribute.name, f"{attribute.name} must be True or False, got {value!r}")


def _str(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidValue(attribute.name, f"{attribute.name} must be a string, got {value!r}")


def _is_sequence(value: object) -> bool:
    """A list, tuple, set or generator of items; not a string, whose letters would
    pass for items, nor a dict, whose keys would."""
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, bytearray, Mapping))


def _as_tuple(value: Iterable[_Item]) -> tuple[_Item, ...]:
    """A tuple of the items; anything else is left to the validator, which names the field."""
    return tuple(value) if _is_sequence(value) else value  # type: ignore[return-value]


# One per item type: mypy's attrs plugin types __init__ from a converter's argument,
# and cannot solve a generic one.
def _int_tuple(value: Iterable[int]) -> tuple[int, ...]:
    return _as_tuple(value)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return _as_tuple(value)


def _check_sequence(field: str, value: object, items: str) -> None:
    if not isinstance(value, tuple):
        raise InvalidValue(
            field, f"{field} must be a sequence (a list or tuple) of {items}, got {value!r}"
        )


def _non_negative_ints(_: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    _check_sequence(attribute.name, value, "integers >= 0")
    for item in value:
        if not _is_int(item) or item < 0:
            raise InvalidValue(
                attribute.name,
                f"{attribute.name} must hold integers >= 0, got {item!r} in {value!r}",
            )


def _logprob(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, float) and value <= 0.0):
        raise InvalidValue(
            attribute.name, f"{attribute.name} must be None or a float <= 0, got {value!r}"
        )


def _channel(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in CHANNELS:
        raise InvalidValue(
            attribute.name, f"channel must be one of {', '.join(CHANNELS)}, got {value!r}"
        )


def _tuple(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple):
        raise InvalidValue(attribute.name, f"{attribute.name} must be a tuple, got {value!r}")


@attrs.frozen
class Token:
    """One generated token: its vocabulary id and the text it adds to the output.

    `text` may be empty for a token that is only part of a multi-byte character;
    the token completing the character carries the whole character.

    With `logprobs=N` asked for, `logprob` is the natural log of the token's
    probability (<= 0) and `top_logprobs` the N most likely tokens at its
    position, best first, each a `Token` with its own `logprob`. Otherwise they
    are None and empty, as they are where the backend has no figures (the
    docstring of the backend's model says where).

    `channel` is "content" for the answer and "reasoning" for the model's thinking,
    the tags that open and close it included (they keep their ids; `text()` leaves
    them out, `reasoning_text()` gives the thinking without them).
    """

    id: int = attrs.field(validator=_int_in(0))
    text: str = attrs.field(validator=_str)
    logprob: float | None = attrs.field(default=None, validator=_logprob)
    top_logprobs: tuple[Token, ...] = attrs.field(default=(), validator=_tuple)
    channel: str = attrs.field(default="content", validator=_channel)


def _json_object(value: Any, field: str) -> dict[str, Any]:
    """A deep copy through JSON: the value is checked to be JSON, and the caller's later
    changes to their own dict cannot reach a frozen value. Its depth is checked first,
    without recursion: a deep one would crash the parsers on its way (json's among them)."""
    try:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a JSON object (a dict), got {value!r}")
        depth = json_depth(value)
        copied: dict[str, Any] = json.loads(json.dumps(value)) if depth <= MAX_JSON_DEPTH else {}
    except (TypeError, ValueError) as error:
        raise InvalidValue(field, f"{field} must be a JSON object: {error}") from None
    if depth > MAX_JSON_DEPTH:
        raise InvalidValue(
            field,
            f"{field} nests {depth} deep (dicts and lists), past the limit of {MAX_JSON_DEPTH}: "
            "deeper JSON is refused before it crashes a parser on its way (llama-server "
            "turns a schema into a grammar recursively); flatten it",
        )
    return copied


def _arguments(value: Any) -> dict[str, Any]:  # named: mypy's attrs plugin needs a function
    return _json_object(value, "arguments")


@attrs.frozen
class ToolCall:
    """A call of one of the tools passed to `chat(tools=...)`, as the model asked for it."""

    id: str = attrs.field(validator=_str)
    name: str = attrs.field(validator=_str)
    arguments: dict[str, Any] = attrs.field(converter=_arguments, hash=False)


def _tool_calls(value: Iterable[ToolCall]) -> tuple[ToolCall, ...]:
    calls = _as_tuple(value)
    _check_sequence("tool_calls", calls, "ToolCall values")
    for call in calls:
        if not isinstance(call, ToolCall):
            raise InvalidValue("tool_calls", f"tool_calls must hold ToolCall values, got {call!r}")
    return calls


@attrs.frozen
class Message:
    """One chat message. Plain dicts are accepted too (see `to_message`).

    An assistant message may carry the `tool_calls` the model made, and the thinking
    that came before its answer as `reasoning` (a stream's `reasoning_text()`), which
    goes back to the chat template as the message's `reasoning_content`: a template
    that renders earlier thinking gets it, one that drops it (many render only the
    latest turn's) leaves it out of the prompt. A `"tool"` message carries a tool's
    result as its content, and the `tool_call_id` of the call it answers.

    `content` is a string or a sequence of parts in OpenAI's shapes, text and (in a user
    message) images: see `inference_core.content`; images are read and checked here.
    """

    role: str = attrs.field()
    content: Content = attrs.field(converter=checked_content, hash=False, repr=shown_content)
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_tool_calls)
    tool_call_id: str | None = attrs.field(default=None, validator=attrs.validators.optional(_str))
    reasoning: str | None = attrs.field(default=None, validator=attrs.validators.optional(_str))

    @role.validator
    def _check_role(self, attribute: attrs.Attribute[str], value: object) -> None:
        if value not in ROLES:
            raise InvalidValue("role", f"role must be one of {', '.join(ROLES)}, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.tool_calls and self.role != "assistant":
            raise InvalidValue(
                "tool_calls", f"only an assistant message makes tool calls, not {self.role!r}"
            )
        if self.tool_call_id is not None and self.role != "tool":
            raise InvalidValue(
                "tool_call_id", f"only a 'tool' message answers a tool call, not {self.role!r}"
            )
        if self.role != "user" and content_images(self.content):
            raise InvalidValue("content", f"only a user message carries images, not {self.role!r}")
        if self.reasoning is not None and self.role != "assistant":
            raise InvalidValue(
                "reasoning", f"only an assistant message carries thinking, not {self.role!r}"
            )


MessageLike = Message | Mapping[str, Any]
_MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "reasoning"}


def _tool_call(value: ToolCall | Mapping[str, Any]) -> ToolCall:
    """A ToolCall, or the OpenAI shape: `{"id", "type": "function", "function": {"name",
    "arguments"}}`, where `arguments` is a JSON string (or already a dict)."""
    if isinstance(value, ToolCall):
        return value
    try:
        function = value["function"]
        arguments = function["arguments"]
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        return ToolCall(id=value["id"], name=function["name"], arguments=arguments)
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidValue(
            "tool_calls",
            "a tool call must be a ToolCall or {'id': ..., 'type': 'function', 'function': "
            f"{{'name': ..., 'arguments': ...}}}}, got {value!r} ({error})",
        ) from None


def to_message(message: MessageLike) -> Message:
    """Accept a `Message` or a dict with `role` and `content`, and optionally
    `tool_calls` (ToolCalls or the OpenAI shape), `tool_call_id` and `reasoning`."""
    if isinstance(message, Message):
        return message
    if not isinstance(message, Mapping):
        raise TypeError(f"a message must be a Message or a dict, got {message!r}")
    unknown = set(message) - _MESSAGE_KEYS
    if unknown or "role" not in message or "content" not in message:
        raise ValueError(
            "a message dict needs 'role' and 'content' (and may have 'tool_calls', "
            f"'tool_call_id' and 'reasoning'), got {dict(message)!r}"
        )
    content, calls = message["content"], message.get("tool_calls") or ()
    return Message(
        role=message["role"],
        content="" if content is None and calls else content,
        tool_calls=tuple(map(_tool_call, calls)) if _is_sequence(calls) else calls,
        tool_call_id=message.get("tool_call_id"),
        reasoning=message.get("reasoning"),
    )


# What tokenize, count_tokens and detokenize take at once: about a million tokens, more
# than any context, and answers well within what a client reads from a server.
MAX_TOKENIZE_CHARS = 2**22
MAX_DETOKENIZE_IDS = 2**20
MAX_LOGPROBS = 20  # as OpenAI's top_logprobs
# Far past any context, and with room below 2**31 for the few tokens a backend adds
# (llama-server reads the count as a signed 32-bit integer).
MAX_TOKENS = 2**30
# Stop strings are looked for in the text after every token, and a stream holds back up to
# the longest one's length of text: these bound that work (OpenAI takes 4 strings).
MAX_STOPS = 32
MAX_STOP_LENGTH = 1_000


def _schema(value: Any) -> dict[str, Any]:
    return _json_object(value, "json_schema")


def _stop_strings(value: str | Iterable[str]) -> tuple[str, ...]:
    """One stop string may be given alone, as OpenAI's `stop` takes it."""
    return (value,) if isinstance(value, str) else _str_tuple(value)


def _stops(_: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    _check_sequence(attribute.name, value, "non-empty strings")
    if len(value) > MAX_STOPS:
        raise InvalidValue(
            "stop", f"stop holds {len(value)} strings, past the limit of {MAX_STOPS}"
        )
    for item in value:
        if not isinstance(item, str) or not item or len(item) > MAX_STOP_LENGTH:
            raise InvalidValue(
                "stop",
                f"stop must hold non-empty strings of at most {MAX_STOP_LENGTH} characters, "
                f"got {item!r:.100}",
            )


def _grammar(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _str(_, attribute, value)
    depth = gbnf_depth(value)
    if depth > MAX_GRAMMAR_DEPTH:
        raise InvalidValue(
            "grammar",
            f"grammar nests parentheses {depth} deep, past the limit of {MAX_GRAMMAR_DEPTH}: "
            "llama-server parses them recursively and crashes on deep ones, for every caller "
            "of the model; flatten it, e.g. by naming inner groups as rules",
        )
    rules = gbnf_rules(value)
    if rules > MAX_GRAMMAR_RULES:
        raise InvalidValue(
            "grammar",
            f"grammar defines {rules} rules, past the limit of {MAX_GRAMMAR_RULES}: llama-server "
            "follows rules that name one another recursively and crashes on long chains, for "
            "every caller of the model; write repeated parts with *, + or {m,n}",
        )


@attrs.frozen
class GenerateConfig:
    """How to sample. 0 means off for top_k, top_p and min_p; temperature 0 is greedy.

    json_schema (a JSON schema) or grammar (GBNF) constrains the output; neither may nest
    deeper than MAX_JSON_DEPTH or MAX_GRAMMAR_DEPTH, and a grammar may define at most
    MAX_GRAMMAR_RULES rules (a deep one, or a long chain of rules, crashes llama-server).
    logprobs N gives every token its log-probability and the N most likely candidates.
    stop holds strings (at most MAX_STOPS, each at most MAX_STOP_LENGTH characters) that end
    the output where the first of them begins: it and all after it are never delivered, and
    the stream ends with finish_reason "stop". Tokens stay whole, with their real ids: when
    a stop string begins inside a token (or inside a character spread over several), that
    token is left out too, so the text ends a little before the stop string. Stop strings
    are looked for in the answer only, never in the thinking.

    think turns a chat's thinking on (True) or off (False) where the model's chat template
    can (None: the template's default); True for a model that cannot think is an
    `UnsupportedOption`. reasoning_budget (-1: none) is the most tokens a chat's thinking
    may take, its closing tag included: then the thinking is closed and the answer
    follows; 0 turns thinking off, as think=False. Both are a chat's: a raw prompt
    (`generate`) is continued as it is.
    """

    max_tokens: int = attrs.field(default=256, validator=_int_in(1, MAX_TOKENS))
    temperature: float = attrs.field(default=0.0, validator=_float_in(0.0, 100.0))
    top_k: int = attrs.field(default=0, validator=_int_in(0))
    top_p: float = attrs.field(default=0.0, validator=_float_in(0.0, 1.0))
    stop_tokens: tuple[int, ...] = attrs.field(
        default=(), converter=_int_tuple, validator=_non_negative_ints
    )
    repeat_penalty: float = attrs.field(default=1.0, validator=_float_in(0.0, 100.0, low_open=True))
    min_p: float = attrs.field(default=0.0, validator=_float_in(0.0, 1.0))
    seed: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_int_in(0, 2**32 - 2))
    )
    json_schema: dict[str, Any] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_schema), hash=False
    )
    grammar: str | None = attrs.field(default=None, validator=attrs.validators.optional(_grammar))
    logprobs: int = attrs.field(default=0, validator=_int_in(0, MAX_LOGPROBS))
    stop: tuple[str, ...] = attrs.field(default=(), converter=_stop_strings, validator=_stops)
    think: bool | None = attrs.field(default=None, validator=attrs.validators.optional(_bool))
    reasoning_budget: int = attrs.field(default=-1, validator=_int_in(-1, MAX_TOKENS))

    def __attrs_post_init__(self) -> None:
        if self.json_schema is not None and self.grammar is not None:
            raise InvalidValue(
                "grammar", "json_schema and grammar both constrain the output: set one of them"
            )


def _optional_path(value: str | os.PathLike[str] | None) -> str | None:
    """A path as a string; anything else is left to the validator, which names the field."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _endpoints(value: str | Iterable[str]) -> tuple[str, ...]:
    """A tuple of "host:port"; one string may list several, comma-separated, as `--rpc` does."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return _str_tuple(value)


def _check_endpoints(_: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    _check_sequence(attribute.name, value, '"host:port" addresses')
    for item in value:
        host, colon, port = item.rpartition(":") if isinstance(item, str) else ("", "", "")
        bare_host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        good = (
            colon
            and bare_host
            and not any(c.isspace() or c in ",/[]" for c in bare_host.replace(":", ""))
            and port.isascii()
            and port.isdigit()
            and 0 < int(port) < 65536
        )
        if not good:
            raise InvalidValue(
                attribute.name,
                f'{attribute.name} must hold "host:port" addresses (port 1-65535), '
                f"got {item!r} in {value!r}",
            )


def _text(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidValue(
            attribute.name, f"{attribute.name} must be a non-empty string, got {value!r}"
        )


def _header_value(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A value sent in an HTTP header: a line break in it would forge headers."""
    if value is not None and (
        not isinstance(value, str) or not value or any(c in value for c in "\r\n\0")
    ):
        raise InvalidValue(
            attribute.name,
            f"{attribute.name} must be a non-empty string without line breaks",  # never the key
        )


# A load not done in a day is stuck; a far larger bound overflows the waits it is given to.
_MAX_LOAD_TIMEOUT = 86_400.0
_MAX_KEEP_ALIVE = 30 * 86_400.0  # a month; longer is "always", which is None
# KV cache element types: f16 as llama-server's default, and the two quantized ones
# that halve and quarter it with flash attention (which quantized values need).
CACHE_TYPES = ("f16", "q8_0", "q4_0")
# "ngram" drafts from the text so far (no second model); "draft" from a draft model.
SPECULATIVE_MODES = ("off", "ngram", "draft")
_MAX_DRAFT = 1024


def _speculative_default(config: LoadConfig) -> str:
    """A draft model given means drafting with it, unless `speculative` says otherwise."""
    return "draft" if config.draft_model is not None else "off"


def _masked(value: str | None) -> str:
    return "None" if value is None else "'***'"


@attrs.frozen
class LoadConfig:
    """How to load a model.

    context_len is the context of one sequence (each parallel slot gets this
    much); 0 leaves it to the backend (llama-server fits the model's own
    length to memory; the real value is `model.context_len`). gpu_layers -1
    offloads every layer, 0 none, "auto" as many as fit. parallel_slots 0 is the
    backend's default. threads is how many CPU threads compute; 0 lets the
    backend choose (llama-server's backends leave one CPU free, since their
    threads stall beside any other busy process). embeddings True readies the
    model for `embed()` as well as for generation.

    load_timeout (seconds, 120 by default) bounds how long a load waits. For a server
    started here (llama_cpp, rocm) it is the longest llama-server may go without a
    line in its log while it starts (a load that keeps logging may take longer in
    all; a big model on a slow disk, or a first ROCm start compiling kernels, can be
    quiet for minutes), and how long /props and each RPC worker may take to answer.
    For the remote backend it is the whole load, from the first connection to the
    last answer.

    chat_template is a Jinja chat template used instead of the one in the model file:
    the template's text (anything holding "{{" or "{%"), or the path of a file holding
    it. A template the backend cannot parse or render fails the load.

    mmproj is the multimodal projector that lets the model see images: a GGUF file's
    path (or an hf:// name); "" loads none even where one would be found with the model.

    rpc_servers ("host:port" each) splits the model's layers over llama.cpp RPC
    workers. api_key, ca_bundle and verify_tls are for a server reached over the
    network (the `remote` backend): the key is sent as a bearer token and never
    shown in a repr; ca_bundle names the CA file that signs its certificate, and
    verify_tls=False turns checking off (a warning says so). model names the model
    of a llama-server router (`inference serve` on a folder) that the requests are for.

    restart (True by default) starts a server that died again on the next request, with
    the same settings; the request in flight fails with ServerCrashed. A server that keeps
    dying, or cannot be started again, is left dead and says so. keep_alive (seconds;
    None: always resident) lets the server give its memory back after that long without
    requests; the next request brings it back (about half a second for a small model).
    Both are for a server started here, not one at a URL.

    cache_type is the element type of the KV cache: "f16", or "q8_0" and "q4_0", which
    take about a half and a quarter of its memory (counted by the VRAM pre-flight).

    speculative lets the server guess several tokens ahead and check them in one step:
    "ngram" guesses from the text so far (no second model; a gain where the answer copies
    its prompt), "draft" with `draft_model`, a small model of the same vocabulary (a path
    or an hf:// name; giving one means "draft"). draft_max and draft_min are the most and
    fewest tokens guessed at a time; 0 leaves them to the server. Greedy output stays the
    model's own, but for a near tie between two candidates, which the batched check may
    break the other way.
    """

    backend: str = attrs.field(default="", validator=_str)
    context_len: int = attrs.field(default=0, validator=_int_in(0))
    gpu_layers: int | Literal["auto"] = attrs.field(default=-1)
    parallel_slots: int = attrs.field(default=0, validator=_int_in(0, 256))
    devices: tuple[int, ...] = attrs.field(
        default=(), converter=_int_tuple, validator=_non_negative_ints
    )
    adapter_path: str | None = attrs.field(
        default=None, converter=_optional_path, validator=attrs.validators.optional(_str)
    )
    extra_args: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    threads: int = attrs.field(default=0, validator=_int_in(0, 1024))
    embeddings: bool = attrs.field(default=False, validator=_bool)
    rpc_servers: tuple[str, ...] = attrs.field(
        default=(), converter=_endpoints, validator=_check_endpoints
    )
    api_key: str | None = attrs.field(default=None, repr=_masked, validator=_header_value)
    ca_bundle: str | None = attrs.field(
        default=None, converter=_optional_path, validator=attrs.validators.optional(_str)
    )
    verify_tls: bool = attrs.field(default=True, validator=_bool)
    load_timeout: float = attrs.field(
        default=120.0, validator=_float_in(0.0, _MAX_LOAD_TIMEOUT, low_open=True)
    )
    chat_template: str | None = attrs.field(
        default=None, converter=_optional_path, validator=attrs.validators.optional(_text)
    )
    mmproj: str | None = attrs.field(
        default=None, converter=_optional_path, validator=attrs.validators.optional(_str)
    )
    model: str | None = attrs.field(default=None, validator=_header_value)
    restart: bool = attrs.field(default=True, validator=_bool)
    keep_alive: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(_float_in(0.0, _MAX_KEEP_ALIVE, low_open=True)),
    )
    cache_type: str = attrs.field(default="f16", validator=_one_of(CACHE_TYPES))
    draft_model: str | None = attrs.field(
        default=None, converter=_optional_path, validator=attrs.validators.optional(_str)
    )
    speculative: str = attrs.field(
        default=attrs.Factory(_speculative_default, takes_self=True),
        validator=_one_of(SPECULATIVE_MODES),
    )
    draft_max: int = attrs.field(default=0, validator=_int_in(0, _MAX_DRAFT))
    draft_min: int = attrs.field(default=0, validator=_int_in(0, _MAX_DRAFT))

    def __attrs_post_init__(self) -> None:
        """Speculation's fields must agree: each is checked alone by its validator."""
        if self.speculative == "draft" and self.draft_model is None:
            raise InvalidValue(
                "draft_model", "speculative='draft' needs draft_model, the model that drafts"
            )
        if self.speculative != "draft" and self.draft_model is not None:
            raise InvalidValue(
                "speculative",
                f"draft_model is given but speculative={self.speculative!r}: leave "
                "speculative unset (or 'draft') to draft with it, or drop draft_model",
            )
        if self.speculative == "off" and (self.draft_max or self.draft_min):
            raise InvalidValue(
                "draft_max", "draft_max and draft_min are for speculative='ngram' or 'draft'"
            )
        if self.draft_max and self.draft_min > self.draft_max:
            raise InvalidValue(
                "draft_min",
                f"draft_min={self.draft_min} is above draft_max={self.draft_max}",
            )

    @gpu_layers.validator
    def _check_gpu_layers(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if value != "auto" and not (_is_int(value) and value >= -1):  # type: ignore[operator]
            raise InvalidValue(
                "gpu_layers",
                f"gpu_layers must be -1 (all), 0 (none), a layer count or 'auto', got {value!r}",
            )

    @extra_args.validator
    def _check_extra_args(self, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        _check_sequence(attribute.name, value, "strings")
        if not all(isinstance(arg, str) for arg in value):
            raise InvalidValue(
                "extra_args", f"extra_args must be a sequence of strings, got {value!r}"
            )


@attrs.frozen
class ModelInfo:
    """What the model file says about itself, read before any server starts.

    `context_length` is the length the model was trained for; `quant_bits` the
    average bits per weight of the file's tensors.
    """

    architecture: str
    name: str
    context_length: int
    block_count: int
    vocab_size: int
    embedding_length: int
    file_type: str
    quant_bits: float
    size_label: str
    path: str
    file_size: int


@attrs.frozen
class GenerateMetrics:
    """Timings of one generation, as the backend itself measured them.

    `prompt_tokens` is the whole prompt's length in tokens (what `count_tokens` gives),
    `cached_tokens` how many of them the backend took from its cache rather than read
    again; the prefill figures are for the tokens it read. With speculative decoding
    (`LoadConfig.speculative`), `drafted_tokens` were guessed ahead and `accepted_tokens`
    of them turned out the model's own; both 0 where nothing was drafted.
    """

    prompt_tokens: int
    generated_tokens: int
    prefill_seconds: float
    decode_seconds: float
    total_seconds: float
    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    cached_tokens: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0


def _messages(value: Iterable[MessageLike]) -> tuple[Message, ...]:
    return tuple(to_message(message) for message in value)


@attrs.frozen
class Session:
    """A conversation saved with `save_session` and read back with `restore_session`.

    `tokens` is how many tokens of it the backend holds in its cache; `messages` (a
    chat's) or `prompt` (a completion's) the conversation as saved: send it again, with
    a new turn, and the backend reads only the new turn.
    """

    name: str
    tokens: int
    messages: tuple[Message, ...] = attrs.field(default=(), converter=_messages)
    prompt: str | None = None


TOOL_FORMATS = ("native", "generic", "none")


def _tag_texts(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_sequence(attribute.name, value, "strings")
    if not all(isinstance(tag, str) and tag for tag in value):
        raise InvalidValue(
            attribute.name, f"{attribute.name} must be non-empty strings, got {value!r}"
        )


@attrs.frozen
class Capabilities:
    """What a loaded model does, as its backend honours it (the conformance kit checks
    each claim against what the model then does).

    tools: "native" when `chat(tools=...)` uses the model's own tool format (its chat
    template renders the tools and its calls are parsed), "generic" when it uses this
    library's JSON format held to a schema (see `inference_core.tools`), "none" when
    `chat(tools=...)` is an `UnsupportedOption`. parallel_tool_calls: one answer may
    hold several calls. reasoning: thinking is kept apart from the answer. vision and
    audio: messages may carry images or sound. embeddings: `embed()` works.
    context_len: tokens per sequence, as `model.context_len`; slots: how many
    generations run side by side. reasoning_tags: the texts of the tags around the
    thinking, which a chat's reasoning channel carries and `reasoning_text()` leaves out
    (so that a reader can show the thinking as it comes, without them).
    """

    tools: Literal["native", "generic", "none"] = attrs.field(validator=_one_of(TOOL_FORMATS))
    parallel_tool_calls: bool = attrs.field(validator=_bool)
    reasoning: bool = attrs.field(validator=_bool)
    vision: bool = attrs.field(validator=_bool)
    audio: bool = attrs.field(validator=_bool)
    embeddings: bool = attrs.field(validator=_bool)
    context_len: int = attrs.field(validator=_int_in(1))
    slots: int = attrs.field(validator=_int_in(1))
    reasoning_tags: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=_tag_texts
    )


@attrs.frozen
class BatchResult:
    """One prompt's outcome in `batch_generate` (a text, or a chat's messages, as given):
    its tokens, or the error that ended it,
    and why it ended (`finish_reason`, as a stream's: None after an error). `text` is
    the answer's, as a stream's `text()`: tokens of the reasoning channel are left out."""

    prompt: str | Sequence[MessageLike]
    tokens: tuple[Token, ...]
    error: BaseException | None = None
    metrics: GenerateMetrics | None = None
    finish_reason: FinishReason | None = None

    @property
    def text(self) -> str:
        return "".join(token.text for token in self.tokens if token.channel == "content")

    @property
    def ok(self) -> bool:
        return self.error is None


def refuse_options(config: LoadConfig, names: Iterable[str], why: Callable[[str], str]) -> None:
    """Raise `InvalidValue` for the first of `names` set away from its default: for a
    backend to which an option means nothing, and which must say so, never ignore it."""
    defaults = LoadConfig()
    for name in names:
        if getattr(config, name) != getattr(defaults, name):
            raise InvalidValue(name, why(name))


_Config = TypeVar("_Config", GenerateConfig, LoadConfig)


def build_config(cls: type[_Config], config: _Config | None, options: Mapping[str, Any]) -> _Config:
    """Build a config from keyword options, on top of `config` when one is given.

    An unknown option is a `TypeError` that lists the known ones, so a typo
    never silently does nothing.
    """
    known = [field.name for field in attrs.fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known options: {', '.join(known)}"
        )
    if config is None:
        return cls(**options)
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    if isinstance(config, LoadConfig):
        options = _following_the_draft(config, options)
    return attrs.evolve(config, **options) if options else config


def _following_the_draft(config: LoadConfig, options: Mapping[str, Any]) -> Mapping[str, Any]:
    """A config's `speculative` that is what its `draft_model` implies follows a new
    `draft_model` given without one: giving a draft means drafting with it."""
    if "draft_model" not in options or "speculative" in options:
        return options
    if config.speculative != _speculative_default(config):
        return options  # said otherwise ("ngram"): kept, and checked against the draft
    follows = "draft" if options["draft_model"] is not None else "off"
    return {**options, "speculative": follows}
