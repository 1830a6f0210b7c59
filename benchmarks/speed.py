"""Letting llama-server do less work: speculative decoding, saved sessions, a quantized KV
cache, and many streams at once. Each comparison runs its two sides interleaved, round by
round, on the same prompt, and reports the ratio of each round's pair.

- n-gram drafting (`speculative="ngram"`) on a task that copies its prompt, and on one that
  copies nothing; with how far the greedy outputs agree, and how close the two best
  candidates were where they part (a near tie: batched verification computes slightly
  different numbers);
- a draft model: an f16 copy of SmolLM2 (dequantized with the `gguf` package) as the
  target, the packaged Q4_1 as its draft;
- a restored session against a cold prefill of a long conversation: time to first token;
- a q8_0 KV cache against f16 at an 8k context: the server's resident memory and decode;
- aggregate tokens/s of 1 to 8 streams on 8 slots, ours against raw HTTP to that server.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import inference_core as ic
from inference_rocm import gguf_meta, vram
from inference_rocm.model import LlamaServerModel
from tests.gguf_copies import f16_copy

from .concurrency import measure_concurrency
from .memory import resident_bytes
from .readers import Endpoint
from .report import Row
from .stats import figure, ratios

__all__ = ["interleaved", "measure_speed"]

_SECTION = "speed"
_MIB = 2**20
# Written for this benchmark: plain prose of about 290 tokens, for the copying task.
_PARAGRAPH = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a "
    "can of oil, a cloth and a small notebook in which he wrote the weather, the ships he "
    "saw and the birds that rested on the rail. In winter the wind came off the sea so "
    "hard that the glass hummed, and he would stand for a long time with his hand on the "
    "brass, listening. In summer the evenings were long and quiet, and fishing boats came "
    "home in a slow line, their engines low, their decks crowded with crates and nets. "
    "He knew every boat by the sound of its engine and every skipper by the way he "
    "brought his boat around the point. Once a year an inspector came from the city, "
    "read the notebook, checked the lamp and the clockwork, drank a cup of tea in the "
    "kitchen and left on the afternoon ferry. The keeper did not mind the inspector, nor "
    "the solitude, nor the stairs, which he counted each night: one hundred and twelve. "
    "What he minded was fog, because in fog the light could do nothing, and all he could "
    "do was sound the horn and wait for the morning."
)
_COPYING = f"Text: {_PARAGRAPH}\nCopy of the text: "
_FREE = "Write a long story about a dragon who learns to code."


def _facts(count: int) -> str:
    """`count` short facts, about 15 tokens each."""
    return " ".join(f"Fact {n}: the number {n} squared is {n * n}." for n in range(1, count + 1))


def _greedy(model: ic.TextModel, prompt: str, tokens: int) -> tuple[float, list[int]]:
    """The server's own decode rate of one greedy generation, and its ids."""
    stream = model.generate(prompt, max_tokens=tokens, temperature=0.0)
    ids = [token.id for token in stream]
    assert stream.metrics is not None
    return stream.metrics.decode_tokens_per_second, ids


def interleaved(
    sides: dict[str, ic.TextModel], prompt: str, tokens: int, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Decode rates of each side, alternating which goes first; the last round's ids."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    ids: dict[str, list[int]] = {}
    names = list(sides)
    _greedy(sides[names[0]], prompt, 4)  # both read the prompt once before the rounds
    _greedy(sides[names[1]], prompt, 4)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            rate, ids[name] = _greedy(sides[name], prompt, tokens)
            rates[name].append(rate)
    return rates, ids


def _divergence(model: ic.TextModel, prompt: str, other: list[int]) -> Row:
    """Where a greedy run of `model`, with its figures, first parts from the ids `other`
    (-1: nowhere), and the gap in log probability between its two best candidates
    there: near 0, a near tie that numbers differing in the last bits may break."""
    plain = list(model.generate(prompt, max_tokens=len(other), temperature=0.0, logprobs=2))
    at = next((n for n, (a, b) in enumerate(zip(plain, other, strict=False)) if a.id != b), -1)
    gap = float("nan")
    if at >= 0:
        best = plain[at].top_logprobs
        if len(best) >= 2 and best[0].logprob is not None and best[1].logprob is not None:
            gap = abs(best[0].logprob - best[1].logprob)
    return Row(
        _SECTION,
        f"first divergence at token {at} of {len(other)}"
        + ("" if at < 0 else f", log-probability gap {gap:.3f}"),
        "token",
        figure([float(at)]),
    )


def _ngram(path: str, tokens: int, rounds: int) -> list[Row]:
    with ExitStack() as stack:
        sides = {
            name: stack.enter_context(
                ic.load(path, backend="llama_cpp", context_len=2048, speculative=mode)
            )
            for name, mode in (("off", "off"), ("ngram", "ngram"))
        }
        rows = []
        for task, prompt in (("copying", _COPYING), ("copying nothing", _FREE)):
            rates, ids = interleaved(sides, prompt, tokens, rounds)
            rows += [
                Row(_SECTION, f"n-gram, {task}: decode without", "tok/s", figure(rates["off"])),
                Row(_SECTION, f"n-gram, {task}: decode with", "tok/s", figure(rates["ngram"])),
                Row(
                    _SECTION,
                    f"n-gram, {task}: with ÷ without",
                    "x",
                    ratios(rates["ngram"], rates["off"]),
                ),
                _divergence(sides["off"], prompt, ids["ngram"]),
            ]
        return rows


def _draft(path: str, tokens: int, rounds: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-f16-") as folder:
        target = f16_copy(path, Path(folder, "smollm2-f16.gguf"))
        with (
            ic.load(target, backend="llama_cpp", context_len=2048) as alone,
            ic.load(target, backend="llama_cpp", context_len=2048, draft_model=path) as drafted,
        ):
            sides = {"off": alone, "draft": drafted}
            rates, ids = interleaved(sides, _FREE, tokens, rounds)
            return [
                Row(_SECTION, "f16 target: decode without a draft", "tok/s", figure(rates["off"])),
                Row(_SECTION, "f16 target: decode with the Q4_1 as draft", "tok/s",
                    figure(rates["draft"])),
                Row(_SECTION, "draft model: with ÷ without", "x",
                    ratios(rates["draft"], rates["off"])),
                _divergence(alone, _FREE, ids["draft"]),
            ]  # fmt: skip


def _first_token_seconds(model: ic.TextModel, messages: list[ic.Message]) -> float:
    started = time.perf_counter()
    stream = model.chat(messages, max_tokens=1)
    next(iter(stream))
    elapsed = time.perf_counter() - started
    stream.close()
    return elapsed


def _sessions(path: str, facts: int, rounds: int) -> list[Row]:
    conversation = [ic.Message("user", f"Remember these facts. {_facts(facts)}")]
    turn = ic.Message("user", "What is 12 squared?")
    with ic.load(path, backend="llama_cpp", context_len=4096, parallel_slots=1) as model:
        assert isinstance(model, LlamaServerModel)
        model.chat(conversation, max_tokens=1).text()
        saved = model.save_session("bench-conversation", conversation)
        cold: list[float] = []
        restored: list[float] = []
        for _ in range(rounds):
            model.server.client.request("POST", "/slots/0?action=erase")
            cold.append(_first_token_seconds(model, [*conversation, turn]))
            model.server.client.request("POST", "/slots/0?action=erase")
            model.restore_session("bench-conversation")
            restored.append(_first_token_seconds(model, [*conversation, turn]))
    return [
        Row(_SECTION, f"a {saved.tokens}-token conversation: first token, cold", "ms",
            figure([s * 1e3 for s in cold])),
        Row(_SECTION, "the same, its session restored first", "ms",
            figure([s * 1e3 for s in restored])),
        Row(_SECTION, "restored session: cold ÷ restored", "x", ratios(cold, restored)),
    ]  # fmt: skip


@contextmanager
def _two_caches(path: str, context: int) -> Iterator[dict[str, ic.TextModel]]:
    with ExitStack() as stack:
        yield {
            kind: stack.enter_context(
                ic.load(path, backend="llama_cpp", context_len=context, cache_type=kind)
            )
            for kind in ("f16", "q8_0")
        }


def _cache_type(path: str, tokens: int, rounds: int, context: int = 8192) -> list[Row]:
    header = gguf_meta.read_header(path)
    with _two_caches(path, context) as sides:
        rates, _ = interleaved(sides, _FREE, tokens, rounds)
        rss: dict[str, float] = {}
        for kind, model in sides.items():
            assert isinstance(model, LlamaServerModel)
            rss[kind] = resident_bytes(model.server.current.pid) / _MIB
    kv = {
        kind: vram.model_memory(header, context, cache_type=kind).kv_cache / _MIB for kind in sides
    }
    return [
        Row(_SECTION, f"KV cache at {context} tokens, f16 / q8_0: {kv['f16']:.1f} / "
            f"{kv['q8_0']:.1f} MiB; server resident, f16", "MiB", figure([rss["f16"]])),
        Row(_SECTION, "server resident, q8_0", "MiB", figure([rss["q8_0"]])),
        Row(_SECTION, "q8_0 cache: decode ÷ f16", "x", ratios(rates["q8_0"], rates["f16"])),
    ]  # fmt: skip


def _streams(path: str, tokens: int, rounds: int) -> list[Row]:
    with ic.load(path, backend="llama_cpp", context_len=1024, parallel_slots=8) as model:
        assert isinstance(model, LlamaServerModel)
        server = model.server.current
        endpoint = Endpoint("127.0.0.1", server.port, server._api_key)
        return measure_concurrency(
            model, endpoint, _FREE, tokens, rounds, (1, 2, 4, 8), floor=0.97, section=_SECTION
        )


def measure_speed(path: str, tokens: int, rounds: int, facts: int) -> list[Row]:
    """Every comparison above; `facts` sizes the conversation (100: about 1,500 tokens)."""
    steps: list[Callable[[], list[Row]]] = [
        lambda: _ngram(path, tokens, rounds),
        lambda: _draft(path, tokens, rounds),
        lambda: _sessions(path, facts, rounds),
        lambda: _cache_type(path, tokens, rounds),
        lambda: _streams(path, tokens, rounds),
    ]
    return [row for step in steps for row in step()]
