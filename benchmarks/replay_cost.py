"""The client's own work per token, on a recorded stream replayed at full speed.

Each round runs every reader once, in a rotating order, on the same recording
served by a `ReplayServer` in another process. Ours is the real
`LlamaServerModel` over a `LlamaServer` object that points at the replay
server instead of spawning a child: the same client, stream and token code a
user runs, with nothing faked inside it.
"""

from __future__ import annotations

from collections.abc import Callable

import openai
import requests

from inference_core import ModelInfo
from inference_rocm.model import LlamaServerModel
from inference_rocm.remote import RemoteServer

from .cpu import cpu_per_token
from .readers import (
    Endpoint,
    Reading,
    read_bare,
    read_openai,
    read_ours,
    read_ours_async,
    read_requests,
)
from .recording import NATIVE_PATH, Recording, native_body
from .replay import ReplayServer
from .report import Row, Target
from .stats import figure, ratios

__all__ = ["measure_replay"]

_SECTION = "replay"
OURS, OURS_ASYNC, BARE, REQUESTS, OPENAI = (
    "ours: generate()",
    "ours: agenerate() (asyncio)",
    "bare http.client + split + json.loads",
    "requests + iter_lines",
    "openai client, /v1/completions",
)


def _replay_model(endpoint: Endpoint, info: ModelInfo) -> LlamaServerModel[RemoteServer]:
    """Our model, talking to the replay server as to a server someone else runs."""
    server = RemoteServer(
        endpoint.url, endpoint.host, endpoint.port, endpoint.key, tls=None, base_path=""
    )
    return LlamaServerModel(
        server, info, model_type=info.architecture, context_len=info.context_length, slots=1
    )


def measure_replay(recording: Recording, prompt: str, info: ModelInfo, rounds: int) -> list[Row]:
    """CPU µs per token of each reader, and ours against the others round by round."""
    limit = recording.tokens
    body = native_body(prompt, limit)
    with ReplayServer(recording.responses) as endpoint:
        model = _replay_model(endpoint, info)
        session = requests.Session()
        client = openai.OpenAI(base_url=f"{endpoint.url}/v1", api_key=endpoint.key, max_retries=0)
        readers: dict[str, Callable[[], Reading]] = {
            OURS: lambda: read_ours(model, prompt, limit),
            OURS_ASYNC: lambda: read_ours_async(model, prompt, limit),
            BARE: lambda: read_bare(endpoint, body, limit),
            REQUESTS: lambda: read_requests(session, endpoint, body, limit),
            OPENAI: lambda: read_openai(client, prompt, limit),
        }
        try:
            costs = _rounds(readers, limit, rounds)
        finally:
            client.close()
            session.close()
            model.close()
    rows = [Row(_SECTION, f"{name} (CPU/token)", "µs", figure(costs[name])) for name in readers]
    return [
        *rows,
        Row(
            _SECTION, "ours ÷ bare (CPU/token)", "x", ratios(costs[OURS], costs[BARE]), Target(1.5)
        ),
        Row(
            _SECTION,
            "openai ÷ ours (CPU/token)",
            "x",
            ratios(costs[OPENAI], costs[OURS]),
            Target(10, at_most=False),
        ),
        Row(_SECTION, "requests ÷ bare (CPU/token)", "x", ratios(costs[REQUESTS], costs[BARE])),
        Row(
            _SECTION,
            "ours: agenerate() ÷ generate() (CPU/token)",
            "x",
            ratios(costs[OURS_ASYNC], costs[OURS]),
            Target(1.5),
        ),
    ]


def _rounds(
    readers: dict[str, Callable[[], Reading]], limit: int, rounds: int
) -> dict[str, list[float]]:
    """A warm-up read each, then `rounds` rounds; the readers of the native form must agree."""
    names = list(readers)
    for name in names:
        readers[name]()
    costs: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        characters: dict[str, int] = {}
        for name in names[shift:] + names[:shift]:
            cost, reading = cpu_per_token(readers[name])
            if reading.tokens != limit:
                raise RuntimeError(f"{name} read {reading.tokens} tokens, not {limit}")
            costs[name].append(cost)
            characters[name] = reading.characters
        if len({characters[n] for n in (OURS, OURS_ASYNC, BARE, REQUESTS)}) != 1:
            raise RuntimeError(f"readers of {NATIVE_PATH} disagree on the text: {characters}")
    return costs
