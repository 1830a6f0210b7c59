"""llama-server's answers, read and checked where they enter.

A server we did not start, a broken build or something else on its port can
send any JSON. Each reader here takes one answer shape (a `/completion` event,
`/tokenize`, `/detokenize`, `/embedding`, `/apply-template`, `/props`, `/v1/models`, timings,
an error object) and returns typed values, or raises `BadAnswer` naming the
endpoint and the field. Its callers turn that into the error their own caller
expects: `GenerationError` during a generation, `UnexpectedServer` during a
load. Nothing else escapes a reader: no `TypeError`, `KeyError` or
`OverflowError`, and no `InvalidValue`, which would blame the caller for what
the server said.

The one-token event is the hot path of every stream: `token` checks it with a
handful of type tests before building the Token.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from typing import Any, TypeGuard, final

import attrs

from inference_core.types import FinishReason, GenerateMetrics, Token

__all__ = [
    "BadAnswer",
    "Figures",
    "ModelMeta",
    "Props",
    "count",
    "detokenized",
    "embeddings",
    "figures",
    "finish_reason",
    "first_token",
    "flag",
    "ids",
    "input_tokens",
    "metrics",
    "model_meta",
    "overflow_counts",
    "pieces",
    "prompt",
    "props",
    "shown",
    "text",
    "token",
    "token_count",
]

# llama-server counts in 64-bit integers: a larger count, size or id is not one of its own,
# and one this large still converts to a float (a size per parameter) without overflow.
_MAX_INT = 2**63 - 1
_BYTE = 255

_SHOWN = 80  # characters of a server's value in a message
_REPR = reprlib.Repr()  # bounds the work on a long or deep value, not the length shown
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = _SHOWN
_REPR.maxlevel = 3


def shown(value: object) -> str:
    """A server's value for a message: short however long or deep it is."""
    text = _REPR.repr(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."


@final
class BadAnswer(Exception):
    """An answer llama-server would not give: `endpoint` and `field` say where it is."""

    def __init__(self, endpoint: str, field: str, problem: str) -> None:
        super().__init__(f"{endpoint}: {field} {problem}")
        self.endpoint = endpoint
        self.field = field
        self.problem = problem


def _bad(endpoint: str, field: str, value: object, expected: str) -> BadAnswer:
    if value is None:
        return BadAnswer(endpoint, field, f"is missing, where {expected} belongs")
    return BadAnswer(endpoint, field, f"is {shown(value)}, not {expected}")


def _int(value: Any, endpoint: str, field: str, low: int = 0) -> int:
    if type(value) is int and low <= value <= _MAX_INT:
        return value
    raise _bad(endpoint, field, value, f"an integer >= {low}")


def _optional_int(value: Any, endpoint: str, field: str) -> int:
    """A count llama-server may leave out or send as null: 0 then."""
    return 0 if value is None else _int(value, endpoint, field)


def _object(value: Any, endpoint: str, field: str) -> Mapping[str, Any]:
    if type(value) is dict:
        return value
    raise _bad(endpoint, field, value, "a JSON object")


def _list(value: Any, endpoint: str, field: str) -> list[Any]:
    if type(value) is list:
        return value
    raise _bad(endpoint, field, value, "a list")


def _is_text(value: object) -> TypeGuard[str]:
    """A string that is text: JSON can carry a lone surrogate, which no UTF-8 holds and
    no output could print (an ASCII string, the common case, is known at once)."""
    if type(value) is not str:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _str(value: Any, endpoint: str, field: str) -> str:
    if _is_text(value):
        return value
    raise _bad(endpoint, field, value, "a string of text")


def _optional_str(value: Any, endpoint: str, field: str) -> str:
    return "" if value is None else _str(value, endpoint, field)


def _number(value: Any, endpoint: str, field: str) -> float:
    """A finite number >= 0: a time or a rate."""
    if type(value) is float and 0.0 <= value < math.inf:
        return value
    if type(value) is int and 0 <= value <= _MAX_INT:
        return float(value)
    raise _bad(endpoint, field, value, "a number >= 0")


def _bytes(value: Any, endpoint: str, field: str) -> bytes:
    """A piece of a token as its bytes (a list of integers in [0, 255])."""
    if type(value) is list and all(type(b) is int and 0 <= b <= _BYTE for b in value):
        return bytes(value)
    raise _bad(endpoint, field, value, "a list of bytes")


# -- /completion -----------------------------------------------------------------------

_COMPLETION = "/completion"


def ids(value: Any) -> list[int]:
    """The `tokens` of a `/completion` event or answer: ids, none when it has none."""
    if value is None:
        return []
    if type(value) is list and all(type(i) is int and 0 <= i <= _MAX_INT for i in value):
        return value
    raise _bad(_COMPLETION, "tokens", value, "a list of token ids")


def text(value: Any) -> str:
    """The `content` of a `/completion` event that carries tokens."""
    return _str(value, _COMPLETION, "content")


def count(value: Any, field: str) -> int:
    """A count of a `/completion` event (`tokens_predicted`)."""
    return _int(value, _COMPLETION, field)


def held_in(answer: Any) -> tuple[int, int]:
    """The slot a whole `/completion` answer says served it (`id_slot`), and how many
    tokens of prompt it then holds (`tokens_evaluated`)."""
    fields = _object(answer, _COMPLETION, "the answer")
    return (
        _int(fields.get("id_slot"), _COMPLETION, "id_slot"),
        _int(fields.get("tokens_evaluated"), _COMPLETION, "tokens_evaluated"),
    )


def slot_tokens(answer: Any, field: str) -> int:
    """How many tokens a `/slots` save or restore wrote or read (`n_saved`, `n_restored`)."""
    return _int(_object(answer, "/slots", "the answer").get(field), "/slots", field)


def flag(value: Any, field: str) -> bool:
    """A yes-or-no of a `/completion` event (`stop`), absent meaning no."""
    if value is None or type(value) is bool:
        return value is True
    raise _bad(_COMPLETION, field, value, "true or false")


# The `stop_type` of a final event, as the finish reason llama-server's own OpenAI-style
# endpoints give for it: "limit" is max_tokens or a full context (measured: a prompt near
# the context length ends with "limit" and `truncated`), and "none", an end it names no
# reason for, is "length" there too. "word" is a stop word, which we never send.
_FINISH_REASONS: dict[str, FinishReason] = {
    "eos": "stop",
    "word": "stop",
    "limit": "length",
    "none": "length",
}


def finish_reason(value: Any) -> FinishReason:
    """The `stop_type` of a `/completion` stream's final event, as a finish reason."""
    reason = _FINISH_REASONS.get(value) if type(value) is str else None
    if reason is None:
        raise _bad(_COMPLETION, "stop_type", value, f"one of {', '.join(_FINISH_REASONS)}")
    return reason


def token(token_id: Any, content: Any, probabilities: Any) -> Token:
    """The one token of an event: its id, its text, and the figures sent with it
    (`completion_probabilities`, when asked for)."""
    if type(token_id) is not int or not 0 <= token_id <= _MAX_INT:
        raise _bad(_COMPLETION, "tokens[0]", token_id, "a token id")
    if not (type(content) is str and content.isascii()) and not _is_text(content):
        raise _bad(_COMPLETION, "content", content, "a string of text")
    if probabilities is None:
        return Token(token_id, content)
    last = figures(probabilities)
    return Token(token_id, content) if last is None else last.token(token_id, content)


@attrs.frozen
class Figures:
    """One entry of `completion_probabilities`: the token it is for, its log-probability
    and the candidates at its position, best first."""

    id: int
    logprob: float
    candidates: tuple[Token, ...]

    def token(self, token_id: int, content: str) -> Token:
        """The token these figures belong to, given its id and text (both read already)."""
        return Token(token_id, content, logprob=self.logprob, top_logprobs=self.candidates)


def _logprob(value: Any, field: str) -> float:
    """A log-probability, <= 0. The server's JSON writes a probability of 0 (a log of
    minus infinity) as null."""
    if value is None:
        return -math.inf
    if type(value) is float and not math.isnan(value) and value < math.inf:
        return min(0.0, value)
    if type(value) is int and -_MAX_INT <= value <= _MAX_INT:
        return min(0.0, float(value))
    raise _bad(_COMPLETION, field, value, "a log-probability")


def _piece(entry: Mapping[str, Any], field: str) -> tuple[int, str]:
    """The id and text of an entry of `completion_probabilities`; a piece of a multi-byte
    character shows as U+FFFD."""
    token_id = _int(entry.get("id"), _COMPLETION, f"{field}.id")
    return token_id, _bytes(entry.get("bytes"), _COMPLETION, f"{field}.bytes").decode(
        "utf-8", "replace"
    )


def _candidate(value: Any, field: str) -> Token:
    """A candidate token (`{id, bytes, logprob}`) at a token's position."""
    entry = _object(value, _COMPLETION, field)
    token_id, piece = _piece(entry, field)
    return Token(token_id, piece, logprob=_logprob(entry.get("logprob"), f"{field}.logprob"))


def first_token(answer: Any) -> Token:
    """The first token a whole (not streamed) `/completion` answer generated, from its
    `completion_probabilities` (asked for with `n_probs`)."""
    field = "completion_probabilities"
    entries = _list(_object(answer, _COMPLETION, "the answer").get(field), _COMPLETION, field)
    if not entries:
        raise BadAnswer(_COMPLETION, field, "is empty")
    return Token(*_piece(_object(entries[0], _COMPLETION, f"{field}[0]"), f"{field}[0]"))


def figures(value: Any) -> Figures | None:
    """The figures of an event's last token, from its `completion_probabilities`; None
    when it has none."""
    if value is None:
        return None
    entries = _list(value, _COMPLETION, "completion_probabilities")
    if not entries:
        return None
    field = f"completion_probabilities[{len(entries) - 1}]"
    entry = _object(entries[-1], _COMPLETION, field)
    top = entry.get("top_logprobs")
    listed = [] if top is None else _list(top, _COMPLETION, f"{field}.top_logprobs")
    return Figures(
        _int(entry.get("id"), _COMPLETION, f"{field}.id"),
        _logprob(entry.get("logprob"), f"{field}.logprob"),
        tuple(_candidate(c, f"{field}.top_logprobs[{i}]") for i, c in enumerate(listed)),
    )


def metrics(timings: Any) -> GenerateMetrics | None:
    """The server's own timings of a generation (`timings`); None when it sent none.
    A rate the server could not compute (no time elapsed) comes as null: 0 then. The
    prompt's tokens are those it read (`prompt_n`) and those its cache held (`cache_n`);
    `draft_n` and `draft_n_accepted` come only where speculation drafted something."""
    if not timings:
        return None
    fields = _object(timings, _COMPLETION, "timings")

    def number(name: str) -> float:
        value = fields.get(name)
        return 0.0 if value is None else _number(value, _COMPLETION, f"timings.{name}")

    prefill, decode = number("prompt_ms") / 1000, number("predicted_ms") / 1000
    read = _optional_int(fields.get("prompt_n"), _COMPLETION, "timings.prompt_n")
    cached = _optional_int(fields.get("cache_n"), _COMPLETION, "timings.cache_n")
    drafted = _optional_int(fields.get("draft_n"), _COMPLETION, "timings.draft_n")
    accepted = _optional_int(
        fields.get("draft_n_accepted"), _COMPLETION, "timings.draft_n_accepted"
    )
    return GenerateMetrics(
        prompt_tokens=read + cached,
        generated_tokens=_optional_int(
            fields.get("predicted_n"), _COMPLETION, "timings.predicted_n"
        ),
        prefill_seconds=prefill,
        decode_seconds=decode,
        total_seconds=prefill + decode,
        prefill_tokens_per_second=number("prompt_per_second"),
        decode_tokens_per_second=number("predicted_per_second"),
        cached_tokens=cached,
        drafted_tokens=drafted,
        accepted_tokens=accepted,
    )


def overflow_counts(error: Mapping[str, Any], endpoint: str) -> tuple[int, int]:
    """`n_prompt_tokens` and `n_ctx` of an error object saying the prompt does not fit."""
    return (
        _optional_int(error.get("n_prompt_tokens"), endpoint, "error.n_prompt_tokens"),
        _optional_int(error.get("n_ctx"), endpoint, "error.n_ctx"),
    )


# -- /tokenize, /apply-template, /embedding --------------------------------------------


def pieces(answer: Any) -> list[tuple[int, bytes]]:
    """The ids and bytes of `/tokenize` with `with_pieces`: a piece is text, or a list of
    bytes where it is not valid UTF-8."""
    listed = _list(_object(answer, "/tokenize", "the answer").get("tokens"), "/tokenize", "tokens")
    group = []
    for index, value in enumerate(listed):
        entry = _object(value, "/tokenize", f"tokens[{index}]")
        piece = entry.get("piece")
        field = f"tokens[{index}].piece"
        group.append(
            (
                _int(entry.get("id"), "/tokenize", f"tokens[{index}].id"),
                _bytes(piece, "/tokenize", field)
                if type(piece) is list
                else _str(piece, "/tokenize", field).encode(),
            )
        )
    return group


def token_count(answer: Any) -> int:
    """How many ids `/tokenize` (without pieces) gave."""
    listed = _list(_object(answer, "/tokenize", "the answer").get("tokens"), "/tokenize", "tokens")
    for index, value in enumerate(listed):
        _int(value, "/tokenize", f"tokens[{index}]")
    return len(listed)


_INPUT_TOKENS = "/v1/chat/completions/input_tokens"


def input_tokens(answer: Any) -> int:
    """How many tokens a chat reads, its images' included (`input_tokens`)."""
    return _int(
        _object(answer, _INPUT_TOKENS, "the answer").get("input_tokens"),
        _INPUT_TOKENS,
        "input_tokens",
    )


def detokenized(answer: Any) -> str:
    """The text `/detokenize` made of ids."""
    return _str(
        _object(answer, "/detokenize", "the answer").get("content"), "/detokenize", "content"
    )


def prompt(answer: Any) -> str:
    """The prompt `/apply-template` rendered."""
    return _str(
        _object(answer, "/apply-template", "the answer").get("prompt"), "/apply-template", "prompt"
    )


def _vector(value: Any, field: str) -> list[float]:
    if (
        type(value) is list
        and value
        and all(
            (type(x) is float and math.isfinite(x)) or (type(x) is int and abs(x) <= _MAX_INT)
            for x in value
        )
    ):
        return [float(x) for x in value]
    raise _bad("/embedding", field, value, "a list of finite numbers")


def embeddings(answer: Any, count: int) -> list[list[float]]:
    """One vector per text from `/embedding`, in the order of the texts (`index`)."""
    listed = _list(answer, "/embedding", "the answer")
    if len(listed) != count:
        raise BadAnswer("/embedding", "the answer", f"holds {len(listed)} items for {count} texts")
    vectors: list[list[float] | None] = [None] * count
    for position, value in enumerate(listed):
        item = _object(value, "/embedding", f"[{position}]")
        index = item.get("index")
        if type(index) is not int or not 0 <= index < count or vectors[index] is not None:
            raise _bad("/embedding", f"[{position}].index", index, f"a new index below {count}")
        pooled = _list(item.get("embedding"), "/embedding", f"[{position}].embedding")
        vectors[index] = _vector(pooled[0] if pooled else None, f"[{position}].embedding[0]")
    result = [vector for vector in vectors if vector is not None]  # all: count new indexes
    if len({len(vector) for vector in result}) > 1:
        raise BadAnswer("/embedding", "the answer", "holds vectors of different lengths")
    return result


# -- /props, /v1/models ----------------------------------------------------------------


@attrs.frozen
class Props:
    """What `/props` says of the server: the context it runs with, its slots (None when
    it does not say), and the model's file name and type, where it names them; whether
    the chat template renders tools and several calls at once (`chat_template_caps`),
    and what the server reads besides text (`modalities`: "vision", "audio"); whether it
    sleeps now, its memory given back after `--sleep-idle-seconds` (`sleeping`)."""

    context_len: int
    slots: int | None
    model_path: str
    file_type: str
    template_tools: bool = False
    template_parallel_calls: bool = False
    modalities: frozenset[str] = frozenset()
    sleeping: bool = False


def _flags(value: Any, where: str, names: tuple[str, ...]) -> dict[str, bool]:
    """The yes-or-no fields `names` of an optional object (absent ones: no)."""
    fields = {} if value is None else _object(value, "/props", where)
    found = {}
    for name in names:
        flag = fields.get(name)
        if flag is not None and type(flag) is not bool:
            raise _bad("/props", f"{where}.{name}", flag, "true or false")
        found[name] = flag is True
    return found


_CAPS = ("supports_tool_calls", "supports_parallel_tool_calls")
_MODALITIES = ("vision", "audio")


def props(answer: Any) -> Props:
    """`/props`; its `default_generation_settings.n_ctx` is the context the server runs with."""
    where = "/props"
    fields = _object(answer, where, "the answer")
    settings = fields.get("default_generation_settings")
    if type(settings) is not dict or "n_ctx" not in settings:
        raise BadAnswer(where, "default_generation_settings", "has no n_ctx")
    slots = fields.get("total_slots")
    caps = _flags(fields.get("chat_template_caps"), "chat_template_caps", _CAPS)
    modalities = _flags(fields.get("modalities"), "modalities", _MODALITIES)
    sleeping = _flags(fields, "props", ("is_sleeping",))["is_sleeping"]
    return Props(
        context_len=_int(settings["n_ctx"], where, "default_generation_settings.n_ctx", low=1),
        slots=None if slots is None else _int(slots, where, "total_slots", low=1),
        model_path=_optional_str(fields.get("model_path"), where, "model_path")
        or _optional_str(fields.get("model_alias"), where, "model_alias"),
        file_type=_optional_str(fields.get("model_ftype"), where, "model_ftype"),
        template_tools=caps["supports_tool_calls"],
        template_parallel_calls=caps["supports_parallel_tool_calls"],
        modalities=frozenset(name for name, present in modalities.items() if present),
        sleeping=sleeping,
    )


@attrs.frozen
class ModelMeta:
    """What `/v1/models` says of the model (0 or "" where it says nothing)."""

    parameters: int
    size: int
    trained_context: int
    vocab_size: int
    embedding_length: int
    file_type: str


def _models(answer: Any) -> list[Mapping[str, Any]]:
    where = "/v1/models"
    data = _object(answer, where, "the answer").get("data")
    entries = [] if data is None else _list(data, where, "data")
    return [_object(entry, where, f"data[{index}]") for index, entry in enumerate(entries)]


def model_ids(answer: Any) -> list[str]:
    """The ids of the models `/v1/models` lists (a router's: the names it serves)."""
    return [entry["id"] for entry in _models(answer) if isinstance(entry.get("id"), str)]


def is_router(answer: Any) -> bool:
    """Whether `/props` is a llama-server router's, which serves no model of its own."""
    return isinstance(answer, dict) and answer.get("role") == "router"


def model_meta(answer: Any, model: str | None = None) -> ModelMeta:
    """The `meta` of the model `/v1/models` lists as `model`, else of its first."""
    where = "/v1/models"
    entries = _models(answer)
    named = [entry for entry in entries if model is not None and entry.get("id") == model]
    chosen = named or entries[:1]
    meta_value = chosen[0].get("meta") if chosen else None
    meta = {} if meta_value is None else _object(meta_value, where, "data[0].meta")

    def number_of(name: str) -> int:
        return _optional_int(meta.get(name), where, f"data[0].meta.{name}")

    return ModelMeta(
        parameters=number_of("n_params"),
        size=number_of("size"),
        trained_context=number_of("n_ctx_train"),
        vocab_size=number_of("n_vocab"),
        embedding_length=number_of("n_embd"),
        file_type=_optional_str(meta.get("ftype"), where, "data[0].meta.ftype"),
    )
