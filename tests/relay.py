"""A relay before a real llama-server, as a proxy or a TLS front is: it passes the bytes
both ways unchanged, terminates TLS when given a server context (Python's own `ssl`, so
the default run needs no nginx), and keeps what its clients sent, so that a test reads
the requests that reached the wire."""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs

__all__ = ["Relay", "Request", "server_context"]

_READ = 65536


@attrs.frozen
class Request:
    method: str
    path: str
    body: bytes


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """What a TLS front presents: `cert`, signed by the test's CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def _requests(sent: bytes) -> Iterator[Request]:
    """The whole requests in what one connection sent (the client gives every body a
    Content-Length, as ours does)."""
    while b"\r\n\r\n" in sent:
        head, _, rest = sent.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        fields = (line.partition(":") for line in lines[1:])
        length = next((int(v) for k, _, v in fields if k.strip().lower() == "content-length"), 0)
        if len(rest) < length:
            return
        yield Request(method, path, rest[:length])
        sent = rest[length:]


class Relay:
    """Listens on a loopback port and relays each connection to `upstream` (a loopback
    port), one thread per connection; `close()` ends them all."""

    def __init__(self, upstream: int, tls: ssl.SSLContext | None = None) -> None:
        self._upstream, self._tls = upstream, tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sent: list[bytearray] = []
        self._upstreams: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="test-relay", daemon=True)
        self._thread.start()

    def requests(self) -> list[Request]:
        """Every whole request a client sent so far, connection by connection."""
        with self._lock:
            sent = [bytes(data) for data in self._sent]
        return [request for data in sent for request in _requests(data)]

    def close(self) -> None:
        """Stop listening and end every connection (each thread closes its client)."""
        self._stop.set()
        self._thread.join(10)
        self._listener.close()
        with self._lock:
            for upstream in self._upstreams:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        # A refused handshake, a reset, a server gone: the connection's end, not an error.
        with contextlib.ExitStack() as stack, contextlib.suppress(OSError):
            stack.enter_context(client)
            upstream = stack.enter_context(socket.create_connection(("127.0.0.1", self._upstream)))
            with self._lock:
                self._upstreams.add(upstream)
            stack.callback(self._forget, upstream)
            if self._tls is not None:
                client = stack.enter_context(self._tls.wrap_socket(client, server_side=True))
            self._pump(client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions on this one thread: an SSL socket is not for two at once."""
        sent = bytearray()
        with self._lock:
            self._sent.append(sent)
        other = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in other:
                selector.register(sock, selectors.EVENT_READ)
            while True:
                pending = isinstance(client, ssl.SSLSocket) and client.pending()
                ready = [client] if pending else [key.fileobj for key, _ in selector.select()]
                for source in ready:
                    assert isinstance(source, socket.socket)
                    data = source.recv(_READ)
                    if not data:
                        return
                    if source is client:
                        with self._lock:
                            sent += data
                    other[source].sendall(data)

    def _forget(self, upstream: socket.socket) -> None:
        with self._lock:
            self._upstreams.discard(upstream)
