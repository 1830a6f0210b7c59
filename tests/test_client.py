"""The HTTP client's JSON requests: the 401 of the real server, and bodies framed either
way (Content-Length, chunked) arriving in pieces, from a scripted loopback peer (the
real server cannot be made to split its answers where a test wants)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import inference_core as ic
from inference_core.streams import GenerationScope
from inference_rocm.client import ServerClient
from inference_rocm.model import LlamaServerModel

from .other_systems import wait_as_elsewhere
from .raw_peer import RawPeer, client_for, json_answer
from .tls_front import make_pki

BODY = json.dumps({"tokens": [{"id": 227, "piece": [137]}], "note": "é" * 50}).encode()


def scripted_peer(*answers: Sequence[bytes]) -> RawPeer:
    """A peer giving each request, on whichever connection it comes, the next answer,
    sent in the pieces given, 20 ms apart."""
    left = list(answers)

    def respond(connection: socket.socket, request: str) -> None:
        for piece in left.pop(0):
            connection.sendall(piece)
            time.sleep(0.02)

    return RawPeer(respond)


def in_pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


@pytest.mark.server
def test_a_refused_key_is_a_generation_error_saying_so(shared_model: ic.TextModel) -> None:
    assert isinstance(shared_model, LlamaServerModel)
    client = client_for(shared_model.server.current.port, key="not the key")
    with pytest.raises(ic.GenerationError, match="the server refused the request: Invalid API"):
        client.request("GET", "/props")
    client.close()


def test_a_content_length_body_in_pieces_is_read_whole_and_the_next_answer_too() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    answer = head + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
    with scripted_peer(in_pieces(answer, 7), [answer]) as peer:
        client = client_for(peer.port)
        assert client.request("POST", "/tokenize", {"content": "x"}) == json.loads(BODY)
        assert client.request("POST", "/tokenize", {"content": "x"}) == json.loads(BODY)
        assert peer.connections == 1  # the second on the same connection
        client.close()


def test_a_chunked_json_body_in_pieces_is_read_whole() -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in in_pieces(BODY, 13))
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    with scripted_peer(in_pieces(answer, 5)) as peer:
        client = client_for(peer.port)
        assert client.request("POST", "/tokenize", {"content": "x"}) == json.loads(BODY)
        client.close()


def test_an_error_status_with_a_body_is_the_servers_message() -> None:
    body = b'{"error": {"code": 400, "message": "bad grammar", "type": "invalid_request_error"}}'
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with scripted_peer([answer]) as peer:
        client = client_for(peer.port)
        with pytest.raises(ic.GenerationError, match="the server answered 400: bad grammar"):
            client.request("POST", "/completion", {"prompt": "x"})
        client.close()


def tls_peer(folder: Path, answer: bytes | None) -> tuple[int, Path]:
    """A TLS peer with a certificate from a CA made here, on one connection: it answers
    each request with `answer`, or says nothing after the handshake (None). Returns its
    port and the CA."""
    ca, cert, key = make_pki(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with (
                context.wrap_socket(connection, server_side=True) as secure,
                contextlib.suppress(OSError),
            ):
                while secure.recv(65536):  # a request, in one piece; open until the client closes
                    if answer is not None:
                        secure.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], ca


def tls_client(port: int, ca: Path) -> ServerClient:
    def diagnose(what: str) -> ic.InferenceError:
        return ic.GenerationError(what)

    tls = ssl.create_default_context(cafile=ca)
    return ServerClient("127.0.0.1", port, None, alive=lambda: True, diagnose=diagnose, tls=tls)


def test_json_requests_over_tls_are_read_whole_on_one_connection(tmp_path: Path) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    port, ca = tls_peer(tmp_path, answer)
    client = tls_client(port, ca)
    assert client.request("POST", "/tokenize", {"content": "x"}) == json.loads(BODY)
    # The peer accepts one connection: the second request reuses it (nothing that TLS
    # sends by itself makes it look as if bytes had come past the answer).
    assert client.request("POST", "/tokenize", {"content": "x"}) == json.loads(BODY)
    client.close()


def test_a_silent_tls_peer_ends_a_request_at_its_deadline(tmp_path: Path) -> None:
    """OpenSSL retries a read inside itself when the socket's receive timeout runs out:
    a TLS read must wake by Python's own timeout to see the deadline at all."""
    port, ca = tls_peer(tmp_path, None)
    client = tls_client(port, ca)
    outcome: list[BaseException] = []

    def request() -> None:
        try:
            client.request("GET", "/health", scope=GenerationScope(timeout=0.5))
        except BaseException as error:
            outcome.append(error)

    waiting = threading.Thread(target=request, daemon=True)
    waiting.start()
    waiting.join(30)
    assert not waiting.is_alive(), "the request outlived its deadline by far: it never woke"
    client.close()
    assert len(outcome) == 1 and isinstance(outcome[0], ic.GenerationTimeout), outcome


# -- an answer that does not match its framing: the connection is not reused ------------

SECOND = json_answer({"answer": "second"})
SMUGGLED = json_answer({"answer": "smuggled"})  # what a desynchronised reader would take
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "first",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}" + SMUGGLED,
        CHUNKED + b"2\r\n{}\r\n0\r\n\r\n" + SMUGGLED,
    ],
    ids=["short content-length", "chunked, then more"],
)
def test_bytes_past_an_answer_are_never_read_as_the_next_one(first: bytes) -> None:
    with scripted_peer([first], [SECOND]) as peer:
        client = client_for(peer.port)
        assert client.request("GET", "/props") == {}
        assert client.request("GET", "/props") == {"answer": "second"}
        assert peer.connections == 2
        client.close()


@pytest.mark.parametrize("system", ["linux", "elsewhere"])
def test_bytes_arriving_after_an_answer_are_never_read_as_the_next_one(
    system: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extra bytes come once the client has read its answer and pooled the connection."""
    if system == "elsewhere":
        wait_as_elsewhere(monkeypatch)
    go, sent = threading.Event(), threading.Event()

    def respond(connection: socket.socket, request: str) -> None:
        if go.is_set():
            connection.sendall(SECOND)
            return
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        go.wait(30)
        connection.sendall(SMUGGLED)
        sent.set()

    with RawPeer(respond) as peer:
        client = client_for(peer.port)
        assert client.request("GET", "/props") == {}
        go.set()
        assert sent.wait(30)
        assert client.request("GET", "/props") == {"answer": "second"}
        client.close()


def test_bytes_past_the_end_of_a_stream_are_never_read_as_the_next_answer() -> None:
    event = b'data: {"content": "", "stop": true}\n\n'
    stream = CHUNKED + b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event) + SMUGGLED
    with scripted_peer([stream], [SECOND]) as peer:
        client = client_for(peer.port)
        events = client.stream("/completion", {"prompt": "x"}, GenerationScope())
        assert list(events) == [{"content": "", "stop": True}]
        events.close()
        assert client.request("GET", "/props") == {"answer": "second"}
        client.close()


def test_a_status_line_that_is_not_http_is_a_generation_error() -> None:
    answer = "HTTP/1.1 ²00 OK\r\nContent-Length: 2\r\n\r\n{}".encode("latin-1")
    with scripted_peer([answer]) as peer:
        client = client_for(peer.port)
        with pytest.raises(ic.GenerationError, match="not an HTTP response"):
            client.request("GET", "/props")
        client.close()
