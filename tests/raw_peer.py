"""A loopback peer that answers HTTP requests with whatever bytes a test scripts: the
hostile, broken or slow answers no real llama-server gives on demand."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from types import TracebackType

import inference_core as ic
from inference_rocm.client import ServerClient

__all__ = ["HANDSHAKE", "RawPeer", "chunk", "client_for", "json_answer", "stream_head"]

# Given the connection and the request ("GET /health"), write an answer (or nothing).
Respond = Callable[[socket.socket, str], None]


def client_for(port: int, key: str = "key") -> ServerClient:
    """A client of the server on `port` at 127.0.0.1; a broken connection is a
    GenerationError."""

    def diagnose(what: str) -> ic.InferenceError:
        return ic.GenerationError(what)

    return ServerClient("127.0.0.1", port, key, alive=lambda: True, diagnose=diagnose)


def json_answer(value: object, status: str = "200 OK") -> bytes:
    body = json.dumps(value).encode()
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_head() -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )


# What the remote backend asks before a model is ready: a llama-server with a 512 context.
HANDSHAKE = {
    "GET /health": json_answer({"status": "ok"}),
    "GET /props": json_answer({"default_generation_settings": {"n_ctx": 512}, "total_slots": 1}),
    "GET /v1/models": json_answer({"data": []}),
}


class RawPeer:
    """Serves each connection on a thread of its own: each request is read whole (head
    and Content-Length body), then `respond` writes what it likes. `requests` lists them
    in order and `connections` counts the connections accepted. Leaving the `with`
    closes every socket, which also ends an answer still being written."""

    def __init__(self, respond: Respond) -> None:
        self._respond = respond
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self._listener.accept()
                with self._lock:
                    self._sockets.append(connection)
                    self.connections += 1
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for request in _requests(connection):
                with self._lock:
                    self.requests.append(request)
                self._respond(connection, request)


def _requests(connection: socket.socket) -> Iterator[str]:
    """Each request on the connection as "METHOD /path", once it has arrived whole."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            data = connection.recv(65536)
            if not data:
                return
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(buffer) < length:
            data = connection.recv(65536)
            if not data:
                return
            buffer += data
        buffer = buffer[length:]
        method, path, _ = lines[0].split(" ")
        yield f"{method} {path}"
