"""Record a real llama-server stream, byte for byte, to replay it later.

A greedy generation with `ignore_eos` is recorded once per run in both forms
a client may read: the native `/completion` stream (what our client asks for,
with `return_tokens` and `timings_per_token`) and the OpenAI-compatible
`/v1/completions` stream (what the `openai` client reads).
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from inference_core import GenerateConfig
from inference_rocm.model import request_body

from .readers import Endpoint

__all__ = ["NATIVE_PATH", "OPENAI_PATH", "Recording", "native_body", "record_both"]

NATIVE_PATH = "/completion"
OPENAI_PATH = "/v1/completions"
_END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked body


@dataclass(frozen=True, slots=True)
class Recording:
    """The raw HTTP responses (status line, headers, chunked body), by request path."""

    responses: dict[str, bytes]
    tokens: int  # tokens in each recorded stream


def native_body(prompt: str, tokens: int) -> dict[str, Any]:
    """The `/completion` body our client sends for `tokens` greedy tokens."""
    return request_body(prompt, GenerateConfig(max_tokens=tokens), stream=True)


def _openai_body(prompt: str, tokens: int) -> dict[str, Any]:
    return {
        "model": "local",
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": True,
        "ignore_eos": True,
    }


def _raw_response(endpoint: Endpoint, path: str, body: dict[str, Any]) -> bytes:
    """POST and keep every byte of the answer, up to the end of its chunked body."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\n"
        f"Authorization: Bearer {endpoint.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((endpoint.host, endpoint.port), timeout=120) as sock:
        sock.sendall(head + payload)
        data = b""
        while not (b"\r\n\r\n" in data and data.endswith(_END)):
            more = sock.recv(65536)
            if not more:
                raise RuntimeError(f"{path}: the server closed the stream before its end")
            data += more
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{path}: {data[:300]!r}")
    return data


def record_both(endpoint: Endpoint, prompt: str, tokens: int) -> Recording:
    """Both forms of one greedy `tokens`-token generation, recorded side by side."""
    native = dict(native_body(prompt, tokens), n_predict=tokens, ignore_eos=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        native_raw = pool.submit(_raw_response, endpoint, NATIVE_PATH, native)
        openai_raw = pool.submit(_raw_response, endpoint, OPENAI_PATH, _openai_body(prompt, tokens))
        responses = {NATIVE_PATH: native_raw.result(), OPENAI_PATH: openai_raw.result()}
    return Recording(responses, tokens)
