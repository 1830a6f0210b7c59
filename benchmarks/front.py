"""What `inference serve`'s front costs a client: the same streamed chat sent through the
front and straight to the llama-server behind it, read by the same plain HTTP client,
interleaved round by round. Also the time of a chat offering tools, which the front
answers with the model's own tool planning (no direct figure: llama-server makes no call).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

from inference_core.types import LoadConfig
from inference_rocm import serve
from inference_rocm.server import Listen

from .report import Row
from .stats import figure, ratios

__all__ = ["measure_front"]

_SECTION = "serve"
_ASK = [{"role": "user", "content": "Tell me about the sea."}]
_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _streamed(host: str, port: int, body: dict[str, Any]) -> tuple[float, float, int]:
    """Seconds to the first content, seconds in all, and the content events read."""
    connection = http.client.HTTPConnection(host, port, timeout=600)
    started = time.perf_counter()
    first = 0.0
    pieces = 0
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            json.dumps(body),
            {"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        for line in response:
            if not line.startswith(b"data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                pieces += 1
                first = first or time.perf_counter() - started
    finally:
        connection.close()
    return first, time.perf_counter() - started, pieces


def measure_front(path: str, tokens: int, rounds: int) -> list[Row]:
    """First token and decode rate through the front against llama-server directly."""
    listen = Listen("127.0.0.1", _free_port())
    served = serve.serve_model(
        path, LoadConfig(context_len=2048), backend="llama_cpp", listen=listen
    )
    chat = {"messages": _ASK, "max_tokens": tokens, "ignore_eos": True, "stream": True}
    firsts: dict[str, list[float]] = {"front": [], "direct": []}
    rates: dict[str, list[float]] = {"front": [], "direct": []}
    tools: list[float] = []
    try:
        server = served.server.current
        where = {"front": (listen.host, listen.port), "direct": (server.host, server.port)}
        _streamed(*where["direct"], chat)  # warm the prompt cache alike for both
        for _ in range(rounds):
            for name, (host, port) in where.items():
                first, whole, pieces = _streamed(host, port, chat)
                assert pieces >= tokens // 2, f"{name}: {pieces} pieces for {tokens} tokens"
                firsts[name].append(first)
                rates[name].append(pieces / (whole - first))
        for _ in range(rounds):  # after the rounds: its prompt would evict theirs
            started = time.perf_counter()
            _streamed(
                listen.host,
                listen.port,
                {"messages": _ASK, "tools": [_WEATHER], "tool_choice": "required", "stream": True},
            )
            tools.append(time.perf_counter() - started)
    finally:
        served.stop()
    return [
        Row(_SECTION, "first token through the front", "ms",
            figure([s * 1e3 for s in firsts["front"]])),
        Row(_SECTION, "first token from llama-server directly", "ms",
            figure([s * 1e3 for s in firsts["direct"]])),
        Row(_SECTION, "decode rate, front / direct", "ratio",
            ratios(rates["front"], rates["direct"])),
        Row(_SECTION, "a chat offering a tool, answered with its call", "ms",
            figure([s * 1e3 for s in tools])),
    ]  # fmt: skip
