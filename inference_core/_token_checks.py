"""The checks on what `tokenize`, `detokenize` and `count_tokens` are given, before any
backend sees it: the kind of value (a `TypeError`), then its size and range (an
`InvalidValue` naming the argument)."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Mapping

from .errors import InvalidValue
from .types import MAX_DETOKENIZE_IDS, MAX_TOKENIZE_CHARS

__all__ = ["checked_flag", "checked_ids", "checked_text"]

_MAX_ID = 2**31 - 1  # llama.cpp's ids are 32-bit: where the vocabulary's size is unknown


def checked_text(text: object, name: str) -> str:
    """A string of at most `MAX_TOKENIZE_CHARS` characters."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    if len(text) > MAX_TOKENIZE_CHARS:
        raise InvalidValue(
            name,
            f"{name} has {len(text)} characters, past the limit of {MAX_TOKENIZE_CHARS} taken "
            "at once: split it",
        )
    return text


def checked_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _token_id(value: object) -> int:
    """An int (or an integer type that says it is one, as numpy's do); never a bool."""
    if isinstance(value, bool):
        raise TypeError(f"token ids must be integers, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"token ids must be integers, got {value!r}") from None


def checked_ids(ids: object, vocab_size: int) -> list[int]:
    """A list of at most `MAX_DETOKENIZE_IDS` ids (from a list, a tuple, a numpy array...),
    each in [0, vocab_size) where the vocabulary's size is known (> 0): an id outside it
    names no token."""
    if not isinstance(ids, Iterable) or isinstance(ids, (str, bytes, bytearray, Mapping)):
        raise TypeError(f"ids must be a sequence of token ids, got {type(ids).__name__}")
    given = list(itertools.islice(ids, MAX_DETOKENIZE_IDS + 1))
    if len(given) > MAX_DETOKENIZE_IDS:
        raise InvalidValue(
            "ids", f"more than {MAX_DETOKENIZE_IDS} ids, the most taken at once: split them"
        )
    listed = [_token_id(value) for value in given]
    top = vocab_size - 1 if vocab_size > 0 else _MAX_ID
    bad = next((i for i in listed if not 0 <= i <= top), None)
    if bad is not None:
        raise InvalidValue(
            "ids", f"token id {bad} is not in the model's vocabulary (ids from 0 to {top})"
        )
    return listed
