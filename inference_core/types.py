"""Value types: immutable, validated on construction, cheap to pass between threads."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

import attrs

from .errors import InvalidValue

__all__ = [
    "ROLES",
    "BatchResult",
    "GenerateConfig",
    "GenerateMetrics",
    "LoadConfig",
    "Message",
    "MessageLike",
    "ModelInfo",
    "Token",
    "build_config",
    "to_message",
]

ROLES = ("system", "user", "assistant", "tool")

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


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


def _str(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidValue(attribute.name, f"{attribute.name} must be a string, got {value!r}")


def _int_tuple(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def _non_negative_ints(_: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    for item in value:
        if not _is_int(item) or item < 0:
            raise InvalidValue(
                attribute.name,
                f"{attribute.name} must hold integers >= 0, got {item!r} in {value!r}",
            )


@attrs.frozen
class Token:
    """One generated token: its vocabulary id and the text it adds to the output.

    `text` may be empty for a token that is only part of a multi-byte character;
    the token completing the character carries the whole character.
    """

    id: int = attrs.field(validator=_int_in(0))
    text: str = attrs.field(validator=_str)


@attrs.frozen
class Message:
    """One chat message. Plain `{"role": ..., "content": ...}` dicts are accepted too."""

    role: str = attrs.field()
    content: str = attrs.field(validator=_str)

    @role.validator
    def _check_role(self, attribute: attrs.Attribute[str], value: object) -> None:
        if value not in ROLES:
            raise InvalidValue("role", f"role must be one of {', '.join(ROLES)}, got {value!r}")


MessageLike = Message | Mapping[str, str]


def to_message(message: MessageLike) -> Message:
    """Accept a `Message` or a dict with exactly `role` and `content`."""
    if isinstance(message, Message):
        return message
    if not isinstance(message, Mapping):
        raise TypeError(f"a message must be a Message or a dict, got {message!r}")
    unknown = set(message) - {"role", "content"}
    if unknown or "role" not in message or "content" not in message:
        raise ValueError(
            f"a message dict needs exactly 'role' and 'content', got {dict(message)!r}"
        )
    return Message(role=message["role"], content=message["content"])


@attrs.frozen
class GenerateConfig:
    """How to sample. 0 means off for top_k, top_p and min_p; temperature 0 is greedy."""

    max_tokens: int = attrs.field(default=256, validator=_int_in(1))
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


def _optional_path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise InvalidValue(
            "extra_args", f"extra_args must be a sequence of strings, got the string {value!r}"
        )
    return tuple(value)


@attrs.frozen
class LoadConfig:
    """How to load a model.

    context_len is the context of one sequence (each parallel slot gets this
    much); 0 leaves it to the backend (llama-server fits the model's own
    length to memory; the real value is `model.context_len`). gpu_layers -1
    offloads every layer, 0 none, "auto" as many as fit. parallel_slots 0 is the
    backend's default. threads is how many CPU threads compute; 0 lets the
    backend choose (llama-server's backends leave one CPU free, since their
    threads stall beside any other busy process).
    """

    backend: str = attrs.field(default="", validator=_str)
    context_len: int = attrs.field(default=0, validator=_int_in(0))
    gpu_layers: int | Literal["auto"] = attrs.field(default=-1)
    parallel_slots: int = attrs.field(default=0, validator=_int_in(0, 256))
    devices: tuple[int, ...] = attrs.field(
        default=(), converter=_int_tuple, validator=_non_negative_ints
    )
    adapter_path: str | None = attrs.field(default=None, converter=_optional_path)
    extra_args: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    threads: int = attrs.field(default=0, validator=_int_in(0, 1024))

    @gpu_layers.validator
    def _check_gpu_layers(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if value != "auto" and not (_is_int(value) and value >= -1):  # type: ignore[operator]
            raise InvalidValue(
                "gpu_layers",
                f"gpu_layers must be -1 (all), 0 (none), a layer count or 'auto', got {value!r}",
            )

    @extra_args.validator
    def _check_extra_args(self, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
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
    """Timings of one generation, as the backend itself measured them."""

    prompt_tokens: int
    generated_tokens: int
    prefill_seconds: float
    decode_seconds: float
    total_seconds: float
    prefill_tokens_per_second: float
    decode_tokens_per_second: float


@attrs.frozen
class BatchResult:
    """One prompt's outcome in `batch_generate`: its tokens, or the error that ended it."""

    prompt: str
    tokens: tuple[Token, ...]
    error: BaseException | None = None
    metrics: GenerateMetrics | None = None

    @property
    def text(self) -> str:
        return "".join(token.text for token in self.tokens)

    @property
    def ok(self) -> bool:
        return self.error is None


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
    return attrs.evolve(config, **options) if options else config
