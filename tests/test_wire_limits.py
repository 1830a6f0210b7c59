"""What a server sends is bounded: a response head, an SSE event, a chunk and a body each
have a cap, and a /health check a deadline on the whole call. The hostile server is a
raw socket (no llama-server sends such bytes on demand) behind the remote backend, so
each answer reaches the public API; each is refused with a typed error at once,
whatever the server would send after it.

The bounds on the waits (tens of seconds) are only reached by a hang: the code without
the caps read on until the caller's deadline, or forever, copying its buffer each time.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable

import pytest

import inference_core as ic

from .raw_peer import HANDSHAKE, RawPeer, chunk, client_for, stream_head

MiB = 2**20
TOKEN = b'data: {"content": " t0", "tokens": [100], "stop": false, "tokens_predicted": 1}\n\n'
NESTED = b"[" * 10_000 + b"]" * 10_000  # past what json.loads can decode (RecursionError)


def outcome_within(seconds: float, call: Callable[[], object]) -> object:
    """What `call` returned or raised, once it has, which must be within `seconds`."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return outcome[0]


def llama(
    path: str, answer: Callable[[socket.socket], None]
) -> Callable[[socket.socket, str], None]:
    """A llama-server that answers `path` ("GET /props") with `answer`, the rest well."""

    def respond(connection: socket.socket, request: str) -> None:
        if request == path:
            answer(connection)
        else:
            connection.sendall(HANDSHAKE[request])

    return respond


def attach(peer: RawPeer, load_timeout: float = 30.0) -> ic.TextModel:
    return ic.load(peer.url, load_timeout=load_timeout)


# -- /health while a server loads: a deadline on the whole call -------------------------


def trickle(connection: socket.socket, *_: object) -> None:
    """A status line a byte at a time, every quarter second, that never ends."""
    while True:
        connection.sendall(b"H")
        time.sleep(0.25)


def flood(connection: socket.socket, *_: object) -> None:
    """10 MB without a line break, then a trickle."""
    connection.sendall(b"HTTP/1.1 200 " + b"x" * (10 * MiB))
    trickle(connection)


def test_a_health_check_trickled_a_byte_at_a_time_ends_at_its_deadline() -> None:
    with RawPeer(trickle) as peer:
        client = client_for(peer.port)
        assert outcome_within(30, lambda: client.status_of("/health", timeout=2.0)) == 0


def test_a_health_check_flooded_without_a_line_break_reads_only_a_heads_worth() -> None:
    with RawPeer(flood) as peer:
        client = client_for(peer.port)  # its deadline is not what ends it: the cap is
        assert outcome_within(30, lambda: client.status_of("/health", timeout=600.0)) == 0


def test_a_load_from_a_server_trickling_its_health_fails_within_the_load_timeout() -> None:
    with RawPeer(llama("GET /health", trickle)) as peer:
        outcome = outcome_within(30, lambda: attach(peer, load_timeout=2.0))
    assert isinstance(outcome, (ic.UnexpectedServer, ic.ServerNotReady)), outcome


# -- a stream: an event, a chunk, a chunk-size line, deep nesting -----------------------


def endless_event(connection: socket.socket) -> None:
    connection.sendall(stream_head() + chunk(b'data: {"content": "'))
    for _ in range(300):
        connection.sendall(chunk(b"x" * MiB))


def huge_chunk(connection: socket.socket) -> None:
    connection.sendall(stream_head() + b"%x\r\ndata: " % (60 * MiB))  # then nothing


def endless_chunk_size(connection: socket.socket) -> None:
    connection.sendall(stream_head())
    for _ in range(300):
        connection.sendall(b"1" * MiB)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (endless_event, r"an event longer than \d+ bytes"),
        (huge_chunk, r"a chunk of 62914560 bytes, past the limit"),
        (endless_chunk_size, r"a chunk size line that never ends"),
    ],
    ids=["event", "chunk", "chunk-size line"],
)
def test_a_stream_past_a_cap_is_a_generation_error_at_once(
    answer: Callable[[socket.socket], None], problem: str
) -> None:
    with RawPeer(llama("POST /completion", answer)) as peer, attach(peer) as model:
        stream = model.generate("Hi", max_tokens=5, timeout=60)
        outcome = outcome_within(60, stream.text)
    assert type(outcome) is ic.GenerationError, outcome  # a timeout: it read on till then
    assert re.match(f"the server sent a malformed stream: {problem}", str(outcome)), outcome


def test_an_event_nested_too_deeply_is_a_generation_error_after_the_tokens_before_it() -> None:
    def nested(connection: socket.socket) -> None:  # the two in one chunk: one decode
        event = b'data: {"content": ' + NESTED + b"}\n\n"
        connection.sendall(stream_head() + chunk(TOKEN + event))

    with RawPeer(llama("POST /completion", nested)) as peer, attach(peer) as model:
        stream = model.generate("Hi", max_tokens=5)
        assert next(stream).id == 100
        with pytest.raises(ic.GenerationError, match="an event nested too deeply to decode"):
            next(stream)


# -- a JSON answer: its size, its framing, its nesting ----------------------------------


def huge_content_length(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n{" % (300 * MiB))
    for _ in range(300):
        connection.sendall(b" " * MiB)


def endless_chunks(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"["))
    for _ in range(300):
        connection.sendall(chunk(b"0," * (MiB // 2)))


def answer_with(data: bytes) -> Callable[[socket.socket], None]:
    def answer(connection: socket.socket) -> None:
        connection.sendall(data)

    return answer


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (huge_content_length, r"a body of 314572800 bytes, past the limit"),
        (endless_chunks, r"a body longer than \d+ bytes, past the limit"),
        (answer_with(CHUNKED + b"2\r\n{}XX\r\n0\r\n\r\n"), r"a chunk does not end where"),
        (answer_with(CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n"), r"bad chunk size line b'zz'"),
        (answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n{}"), r"not a size"),
        (
            answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (20_000, NESTED)),
            r"invalid JSON",
        ),
    ],
    ids=["content-length", "chunks", "chunk framing", "chunk size", "length", "nesting"],
)
def test_a_props_answer_past_a_cap_or_malformed_is_an_unexpected_server(
    answer: Callable[[socket.socket], None], problem: str
) -> None:
    with RawPeer(llama("GET /props", answer)) as peer:
        outcome = outcome_within(60, lambda: attach(peer))
    assert isinstance(outcome, ic.UnexpectedServer), outcome
    assert re.search(problem, str(outcome)), outcome
