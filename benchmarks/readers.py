"""Ways to read one streamed completion, each stopping after `limit` tokens.

All of them do the same work per token (take its id or text, and the server's
timings where the form carries them) so that their costs compare: ours
(`TextModel.generate`), a bare `http.client` + split + `json.loads` reader,
`requests` + `iter_lines`, and the `openai` client on `/v1/completions`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai
    import requests

    from inference_core import GenerateMetrics, TextModel, Token

__all__ = [
    "Endpoint",
    "Reading",
    "read_bare",
    "read_openai",
    "read_ours",
    "read_ours_async",
    "read_requests",
]

_READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a llama-server (or a replay of one) listens, and its API key."""

    host: str
    port: int
    key: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Reading:
    """One stream read: tokens, `perf_counter` times, and the server's timings if it sent them."""

    tokens: int
    characters: int  # of text delivered: readers of the same stream must agree
    started_at: float
    first_at: float
    ended_at: float
    decode_rate: float | None = None  # the server's tokens/s over the tokens read
    prompt_seconds: float | None = None  # the server's prompt (prefill) time

    @property
    def time_to_first_token(self) -> float:
        return self.first_at - self.started_at

    @property
    def delivered_rate(self) -> float:
        """Tokens/s between the first and the last token, the way llama-server counts its own."""
        return self.tokens / (self.ended_at - self.first_at)

    @property
    def delivered_share(self) -> float:
        """The delivered rate ÷ the server's own decode rate: 1.0 loses nothing."""
        if self.decode_rate is None:
            raise RuntimeError("the server sent no timings")
        return self.delivered_rate / self.decode_rate


def _native_reading(events: Iterable[dict[str, Any]], limit: int, started_at: float) -> Reading:
    """Count the tokens of native `/completion` events, keeping the latest timings."""
    tokens, characters, first_at, timings = 0, 0, 0.0, None
    for event in events:
        ids = event["tokens"]
        characters += len(event["content"])
        timings = event.get("timings", timings)
        if ids and not tokens:
            first_at = time.perf_counter()
        tokens += len(ids)
        if tokens >= limit or event["stop"]:
            break
    ended_at = time.perf_counter()
    if timings is None:
        return Reading(tokens, characters, started_at, first_at, ended_at)
    return Reading(
        tokens,
        characters,
        started_at,
        first_at,
        ended_at,
        decode_rate=float(timings["predicted_per_second"]),
        prompt_seconds=float(timings["prompt_ms"]) / 1000,
    )


def _sse_data(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The `data:` events of an SSE body, split on blank lines, decoded with `json.loads`."""
    pending, loads = b"", json.loads
    while data := response.read1(_READ_SIZE):
        events = (pending + data).split(b"\n\n")
        pending = events.pop()
        for event in events:
            if event.startswith(b"data: "):
                yield loads(event[6:])


def read_bare(endpoint: Endpoint, body: dict[str, Any], limit: int) -> Reading:
    """The least a Python caller can do: `http.client`, `bytes.split`, `json.loads`."""
    started_at = time.perf_counter()
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port)
    try:
        connection.request("POST", "/completion", json.dumps(body), endpoint.headers())
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"/completion answered {response.status}: {response.read()!r}")
        return _native_reading(_sse_data(response), limit, started_at)
    finally:
        connection.close()


def read_requests(
    session: requests.Session, endpoint: Endpoint, body: dict[str, Any], limit: int
) -> Reading:
    """What most Python code would write: `requests` with `stream=True` and `iter_lines`."""
    started_at = time.perf_counter()
    loads = json.loads
    with session.post(
        f"{endpoint.url}/completion", json=body, headers=endpoint.headers(), stream=True
    ) as response:
        response.raise_for_status()
        events = (loads(line[6:]) for line in response.iter_lines() if line.startswith(b"data: "))
        return _native_reading(events, limit, started_at)


def read_openai(client: openai.OpenAI, prompt: str, limit: int) -> Reading:
    """The `openai` client on llama-server's `/v1/completions`, streamed."""
    started_at = time.perf_counter()
    tokens, characters, first_at = 0, 0, 0.0
    stream = client.completions.create(
        model="local", prompt=prompt, max_tokens=limit, temperature=0.0, stream=True
    )
    with stream:
        for chunk in stream:
            choice = chunk.choices[0]
            if choice.finish_reason is not None:
                break
            characters += len(choice.text)
            if not tokens:
                first_at = time.perf_counter()
            tokens += 1
            if tokens >= limit:
                break
    return Reading(tokens, characters, started_at, first_at, time.perf_counter())


class _Tally:
    """What `read_ours` and `read_ours_async` count as tokens arrive, and the Reading."""

    def __init__(self) -> None:
        self.started_at = time.perf_counter()
        self.tokens, self.characters, self.first_at = 0, 0, 0.0

    def add(self, token: Token) -> None:
        self.characters += len(token.text)
        if not self.tokens:
            self.first_at = time.perf_counter()
        self.tokens += 1

    def reading(self, metrics: GenerateMetrics | None) -> Reading:
        ended_at = time.perf_counter()
        if metrics is None:
            return Reading(self.tokens, self.characters, self.started_at, self.first_at, ended_at)
        return Reading(
            self.tokens,
            self.characters,
            self.started_at,
            self.first_at,
            ended_at,
            decode_rate=metrics.decode_tokens_per_second,
            prompt_seconds=metrics.prefill_seconds,
        )


def read_ours_async(model: TextModel, prompt: str, limit: int) -> Reading:
    """`TextModel.agenerate`, greedy, read by a task on a fresh event loop."""

    async def read() -> Reading:
        tally = _Tally()
        stream = model.agenerate(prompt, max_tokens=limit, temperature=0.0)
        async for token in stream:
            tally.add(token)
        return tally.reading(stream.metrics)

    return asyncio.run(read())


def read_ours(model: TextModel, prompt: str, limit: int) -> Reading:
    """`TextModel.generate`, greedy, as a user calls it."""
    tally = _Tally()
    stream = model.generate(prompt, max_tokens=limit, temperature=0.0)
    for token in stream:
        tally.add(token)
    return tally.reading(stream.metrics)
