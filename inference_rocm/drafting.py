"""Speculative decoding's checks: a draft model must share the model's vocabulary.

llama-server compares the two vocabularies as it starts and, when they differ, logs an
error and serves on without speculation: a user asking for a faster model would get a
slower one (the draft still loaded) and no word of it. So what the files' headers tell
is compared before anything starts, and what only the server sees (the tokens' texts)
is read from its log once it is up; either way the load fails with the difference.
"""

from __future__ import annotations

from typing import Any

from inference_core.errors import IncompatibleDraftModel, ModelLoadError

from .gguf_meta import GgufHeader

__all__ = ["check_vocabularies", "speculation_failure"]

# llama.cpp lets the two vocabularies' sizes differ by this much (added tokens at the end).
_MOST_SIZE_DIFFERENCE = 128
_TOKENIZER = "tokenizer.ggml."
# llama-server's words when it could not set speculation up; the reason follows them.
_FAILED = "failed to initialize speculative decoding context"


def _value(header: GgufHeader, key: str) -> Any:
    return header.metadata.get(_TOKENIZER + key)


def _differences(model: GgufHeader, draft: GgufHeader) -> list[str]:
    """What differs, in llama.cpp's own order of checks, as `what: model's vs draft's`."""
    found = []
    if _value(model, "model") != _value(draft, "model"):
        found.append(f"tokenizer: {_value(model, 'model')!r} vs {_value(draft, 'model')!r}")
    for end in ("bos", "eos"):
        adds = (_value(model, f"add_{end}_token"), _value(draft, f"add_{end}_token"))
        if None not in adds and adds[0] != adds[1]:
            found.append(f"adds a {end.upper()} token: {adds[0]} vs {adds[1]}")
        ids = (_value(model, f"{end}_token_id"), _value(draft, f"{end}_token_id"))
        if adds[0] and adds[1] and ids[0] != ids[1]:
            found.append(f"{end.upper()} token id: {ids[0]} vs {ids[1]}")
    sizes = (
        model.array_lengths.get(_TOKENIZER + "tokens", 0),
        draft.array_lengths.get(_TOKENIZER + "tokens", 0),
    )
    if abs(sizes[0] - sizes[1]) > _MOST_SIZE_DIFFERENCE:
        found.append(f"vocabulary size: {sizes[0]} vs {sizes[1]} tokens")
    return found


def check_vocabularies(model: GgufHeader, draft: GgufHeader) -> None:
    """Refuse a draft whose header shows another vocabulary than the model's."""
    differences = _differences(model, draft)
    if differences:
        raise IncompatibleDraftModel(
            draft.path,
            f"its vocabulary is not that of {model.path} ({'; '.join(differences)}), so "
            "its guesses cannot be checked: use a smaller model of the same family (the "
            "same tokenizer), or speculative='ngram', which needs no draft model",
        )


def speculation_failure(log: str, draft_path: str | None) -> ModelLoadError | None:
    """The error for a server that started but could not set speculation up, from its log;
    None when it did (or was not asked to)."""
    line = next((line for line in log.splitlines() if _FAILED in line), None)
    if line is None:
        return None
    reason = line.split(_FAILED, 1)[1].lstrip(": ").strip()[:300] or "no reason given"
    if draft_path is None:
        return ModelLoadError(
            f"llama-server could not set n-gram drafting up ({reason}) and would have run "
            "without it: load the model with speculative='off'"
        )
    return IncompatibleDraftModel(
        draft_path,
        f"llama-server could not use it to speculate ({reason}) and would have run "
        "without it: use a smaller model of the same family (the same tokenizer), or "
        "speculative='ngram', which needs no draft model",
    )
