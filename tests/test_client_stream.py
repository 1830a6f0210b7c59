"""The SSE/chunked parser on every split of the bytes: exact events, or a typed error."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_core import GenerationError, InferenceError
from inference_core.streams import GenerationScope
from inference_rocm import client as client_module
from inference_rocm.client import EventStream

EVENTS: list[dict[str, Any]] = [
    {"content": " Paris", "tokens": [7042], "stop": False, "tokens_predicted": 1},
    {"content": "🎉", "tokens": [227], "stop": False, "tokens_predicted": 4},
    {"content": "日本", "tokens": [112], "stop": False, "tokens_predicted": 6},
    {"content": "", "tokens": [], "stop": True, "tokens_predicted": 6, "timings": {"prompt_n": 5}},
]


def chunked(events: list[dict[str, Any]], *, per_chunk: int = 1) -> bytes:
    """The body llama-server sends: SSE events in HTTP chunks, then the last chunk."""
    payload = [b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events]
    groups = [b"".join(payload[i : i + per_chunk]) for i in range(0, len(payload), per_chunk)]
    return b"".join(b"%x\r\n%s\r\n" % (len(g), g) for g in groups) + b"0\r\n\r\n"


class _Pieces:
    """A connection whose reads return the given pieces, then report the peer gone."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.buffer = b""
        self._pieces = list(pieces)

    def recv(self, scope: object, diagnose: object, alive: object) -> bytes:
        if not self._pieces:
            raise client_module._Disconnected("connection closed")
        return self._pieces.pop(0)


class _Client:
    alive = staticmethod(lambda: True)

    @staticmethod
    def diagnose(what: str) -> InferenceError:
        return GenerationError(what)


def parse(pieces: list[bytes]) -> list[dict[str, Any]]:
    stream = EventStream(_Client(), _Pieces(pieces), GenerationScope())  # type: ignore[arg-type]
    return list(stream)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *cuts})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@given(st.lists(st.integers(0, len(chunked(EVENTS))), max_size=20), st.integers(1, 4))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: list[int], per_chunk: int) -> None:
    data = chunked(EVENTS, per_chunk=per_chunk)
    assert parse(split_at(data, cuts)) == EVENTS


def test_every_single_byte_boundary_is_handled() -> None:
    data = chunked(EVENTS)
    for cut in range(len(data) + 1):
        assert parse(split_at(data, [cut])) == EVENTS


def test_byte_by_byte_delivery_works() -> None:
    data = chunked(EVENTS)
    assert parse([data[i : i + 1] for i in range(len(data))]) == EVENTS


@given(st.data())
def test_a_body_cut_short_anywhere_raises_never_truncates_silently(data: st.DataObject) -> None:
    body = chunked(EVENTS)
    end = data.draw(st.integers(0, len(body) - 1))
    cuts = data.draw(st.lists(st.integers(0, end), max_size=5))
    with pytest.raises(GenerationError):
        parse(split_at(body[:end], cuts))


def test_malformed_json_is_a_generation_error() -> None:
    with pytest.raises(GenerationError, match="malformed"):
        parse([b"10\r\ndata: {nope}\n\n\n\r\n0\r\n\r\n"])


def test_a_bad_chunk_size_is_a_generation_error() -> None:
    with pytest.raises(GenerationError, match="malformed"):
        parse([b"zz\r\ndata: {}\n\n\r\n"])


def test_an_error_event_is_decoded_as_an_error() -> None:
    body = b'error: {"code": 500, "message": "boom"}\n\n'
    assert parse([b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)]) == [
        {"error": {"code": 500, "message": "boom"}}
    ]


def test_comment_lines_are_skipped_as_llama_servers_keep_alive_ping() -> None:
    """llama-server sends `:` alone as an event when a stream waits long for a token."""
    body = b':\n\ndata: {"content": "a"}\n\n: note\n:\ndata: {"content": "b"}\n\n:'
    assert parse([b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)]) == [
        {"content": "a"},
        {"content": "b"},
    ]


def test_an_event_of_megabytes_over_many_chunks_and_reads_is_decoded_whole() -> None:
    event = b'data: {"content": "' + b"x" * (4 * 2**20) + b'"}\n\n'
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in split_every(event, 4096))
    pieces = split_every(body + b"0\r\n\r\n", 1000)
    assert parse(pieces) == [{"content": "x" * (4 * 2**20)}]


def test_trailer_lines_after_the_last_chunk_end_the_body() -> None:
    body = b'data: {"content": "a"}\n\n'
    data = b"%x\r\n%s\r\n0\r\nX-Checksum: 1\r\n\r\n" % (len(body), body)
    assert parse(split_at(data, list(range(0, len(data), 3)))) == [{"content": "a"}]


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]
