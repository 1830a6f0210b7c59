"""A fake llama-server in another process that replays recorded streams at full speed.

It answers a POST to a recorded path with the recorded response, byte for
byte (llama-server's own headers and chunk framing), written at once: the
client then reads as fast as it can parse, so its CPU per token is its own
work, not wake-ups. The key is not checked. Connections are kept alive, as
llama-server keeps them.
"""

from __future__ import annotations

import multiprocessing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from types import TracebackType

from .readers import Endpoint

__all__ = ["ReplayServer"]

_HOST = "127.0.0.1"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Readers hang up at their token limit, mid-response: that is expected."""


def _serve(responses: dict[str, bytes], ready: Connection) -> None:
    """The child process: serve until terminated."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            response = responses.get(self.path)
            if response is None:
                self.send_error(404, f"nothing recorded for {self.path}")
                return
            self.wfile.write(response)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: a request log would cost the machine CPU during the measurements."""

    with _QuietServer((_HOST, 0), Handler) as server:
        ready.send(server.server_address[1])
        ready.close()
        server.serve_forever()


class ReplayServer:
    """`with ReplayServer(responses) as endpoint:` a replay server for the block's duration."""

    def __init__(self, responses: dict[str, bytes]) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._ready, child_end = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve, args=(responses, child_end), name="replay-server", daemon=True
        )
        self._child_end = child_end

    def __enter__(self) -> Endpoint:
        self._process.start()
        self._child_end.close()
        if not self._ready.poll(30):
            self._process.terminate()
            raise RuntimeError("the replay server did not start within 30 s")
        return Endpoint(_HOST, int(self._ready.recv()), key="replay")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._process.terminate()
        self._process.join(5)
        self._ready.close()
