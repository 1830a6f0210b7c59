"""A scripted HTTP server for what the real llama-server cannot be made to answer on
demand: one still loading, a proxy before one that is down, one sending bad values.

Each path is answered as the test says: a status and a body, a JSON body (200), or
the `data:` events of a chunked stream (200). A POST to /completion that is not
streamed (`stream` false: what `classify` sends) is answered as "/completion, whole".
Anything else is a 404. Keep-alive, as llama-server.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar

__all__ = ["Answer", "Serve", "scripted_servers"]

Answer = bytes | list[bytes] | tuple[int, bytes]
Serve = Callable[[Mapping[str, Answer]], str]  # the answers of a new server: its URL


class _Scripted(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ANSWERS: ClassVar[Mapping[str, Answer]] = {}

    def do_GET(self) -> None:
        self._answer(self.path)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        whole = self.path == "/completion" and not body.get("stream")
        self._answer("/completion, whole" if whole else self.path)

    def _answer(self, key: str) -> None:
        answer = self.ANSWERS.get(key, (404, b"not found"))
        if isinstance(answer, tuple):
            self._send(*answer)
        elif isinstance(answer, bytes):
            self._send(200, answer)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for item in answer:
                data = b"data: " + item + b"\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def scripted_servers() -> Iterator[Serve]:
    """Start servers with `serve(answers)`; all are shut down on leaving."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(answers: Mapping[str, Answer]) -> str:
        handler = type("Handler", (_Scripted,), {"ANSWERS": answers})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield serve
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
