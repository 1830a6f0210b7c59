"""The HTTP client for one llama-server: keep-alive JSON calls and SSE streams.

It speaks HTTP/1.1 over plain sockets because the stream is the hot path: one
large `recv` serves many events, chunked framing and SSE events are split with
`bytes.find`/`split` without copying the rest of the buffer, and the events
that arrived together are decoded with one `json.loads` (measured by
`python -m benchmarks`: a third less CPU per token on a fast stream). Unlike
`http.client`, a socket read that times out can be resumed, which is how a
waiting reader notices cancellation, its deadline or a dead server without a
watchdog thread. What a server sends is bounded: a response head, an event, a chunk
and a body have caps far above anything honest, and a large one is gathered in a
list of pieces joined once (or a bytearray), never copied again on every read.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast, final
from urllib.parse import quote

from inference_core.errors import (
    ContextOverflow,
    GenerationError,
    InferenceError,
)
from inference_core.streams import GenerationScope

from . import wire

if TYPE_CHECKING:
    import ssl  # only a TLS connection needs it: a fifth of a plain import's time

__all__ = ["REQUEST_TIMEOUT", "EventStream", "RequestRejected", "ServerClient", "error_for"]

REQUEST_TIMEOUT = 60.0  # seconds, for a JSON request made without a generation's scope
# llama-server (cpp-httplib) closes a keep-alive connection idle for 5 s; one idle nearly
# that long is dropped rather than reused, so a request rarely meets a closed socket.
_KEEP_ALIVE = 4.0
_RECV_SIZE = 65536
_POLL_SECONDS = 0.5  # how often an idle reader checks its scope and the server process
# Caps on what a server may send, each far above anything honest. Measured with the
# bundled model: a token with 20 logprobs is a 1.9 KB event; the last event of a stream
# repeats the prompt (11 KB for a prompt of 9,500 characters); /props is 2 KB (a large
# chat template adds tens of KB); an embedding is 21 bytes a dimension.
_MAX_HEAD = 65536  # a response head
_MAX_EVENT = 16 * 2**20  # one SSE event: a prompt of millions of characters
_MAX_CHUNK = _MAX_EVENT  # llama-server sends an event a chunk
_MAX_CHUNK_LINE = 1024  # a chunk-size line: a hex number, maybe an extension
_MAX_BODY = 64 * 2**20  # a JSON answer: 8 times the embeddings model.embed asks for at once
_HEX_DIGITS = b"0123456789abcdefABCDEF"

# Given what went wrong on the wire, the error to raise: ServerCrashed when the
# process has died (with its exit status and log), otherwise a GenerationError.
Diagnose = Callable[[str], InferenceError]


class _Disconnected(Exception):
    """The peer closed the connection or reset it."""


# SO_RCVTIMEO takes a struct timeval on Linux; elsewhere (Windows: milliseconds in a
# DWORD) the layout differs, so other systems wait with Python's own timeout.
_KERNEL_TIMEOUTS = sys.platform.startswith("linux")


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))


@final
class _Connection:
    """One keep-alive socket with a read buffer.

    Plain reads block in the kernel with SO_RCVTIMEO rather than Python's
    socket timeout, which would add a poll() before every recv(): one system
    call per wake-up instead of two, on the path every token takes. A TLS
    socket uses the Python timeout: its read retries inside OpenSSL when
    SO_RCVTIMEO runs out, so it would never come back to check the scope; so
    does a socket on a system other than Linux (see `_KERNEL_TIMEOUTS`).
    """

    __slots__ = ("buffer", "closed", "idle_since", "is_tls", "sock", "wait")

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10.0
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)  # handshake within `timeout`
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        self.sock = sock
        self.is_tls = tls is not None
        self.buffer = b""
        self.closed = False
        self.wait = 0.0
        self.idle_since = 0.0

    def _wait_at_most(self, seconds: float) -> None:
        if seconds != self.wait:  # set only when it changes: near a deadline, or once
            if self.is_tls or not _KERNEL_TIMEOUTS:
                self.sock.settimeout(seconds)
            else:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
            self.wait = seconds

    def recv(
        self, scope: GenerationScope | None, diagnose: Diagnose, alive: Callable[[], bool]
    ) -> bytes:
        """Wait for more bytes, checking the scope and the server while idle."""
        while True:
            wait = _POLL_SECONDS
            if scope is not None:
                scope.check()
                remaining = scope.remaining()
                if remaining is not None:
                    wait = max(0.001, min(wait, remaining))
            self._wait_at_most(wait)
            try:
                data = self.sock.recv(_RECV_SIZE)
            except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO ran out: EAGAIN
                if not alive():
                    raise diagnose("the server stopped answering") from None
                continue
            except OSError as error:
                if scope is not None:
                    scope.check()
                raise _Disconnected(str(error)) from None
            if not data:
                if scope is not None:
                    scope.check()  # an abort() from another thread looks like EOF
                raise _Disconnected("connection closed")
            return data

    def quiet(self) -> bool:
        """Nothing has arrived since the last answer, not even the end of the connection:
        bytes past an answer (a Content-Length shorter than the body) would be read as
        the next one, so a connection that has some is not reused."""
        if self.is_tls and cast("ssl.SSLSocket", self.sock).pending():
            return False
        if not hasattr(select, "poll"):  # Windows; select() is limited to low descriptors
            return not select.select([self.sock], [], [], 0)[0]
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()

    def abort(self) -> None:
        """Unblock a reader in another thread; the reader then closes the socket."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


@final
class EventStream:
    """The SSE events of one streamed response, as decoded JSON objects."""

    def __init__(
        self, client: ServerClient, connection: _Connection, scope: GenerationScope
    ) -> None:
        self._client = client
        self._connection = connection
        self._scope = scope
        self.finished = False

    def abort(self) -> None:
        self._connection.abort()

    def close(self) -> None:
        self._client._forget(self)
        if self.finished:
            self._client._release(self._connection)
        else:
            self._connection.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Events until the chunked body ends; a body cut short raises."""
        client = self._client
        # An event begun in an earlier piece (rare: llama-server sends an event a chunk).
        pending: bytes | bytearray = b""
        loads = json.loads
        try:
            for piece in _chunks(self._connection, self._scope, client):
                if pending:
                    pending, piece = _resume(pending, piece)
                    if not piece:
                        continue
                events = piece.split(b"\n\n")
                pending = events.pop()
                if len(events) > 1 and (values := _decode_batch(events, loads)) is not None:
                    yield from values
                    continue
                for event in events:
                    if event and (value := _decode_event(event, loads)) is not None:
                        yield value
            self.finished = True
            if pending.strip() and (value := _decode_event(bytes(pending), loads)) is not None:
                yield value
        except _Disconnected as error:
            raise client.diagnose(f"the stream broke off before its end ({error})") from None
        except ValueError as error:
            raise GenerationError(f"the server sent a malformed stream: {error}") from None
        except RecursionError:
            raise GenerationError(
                "the server sent a malformed stream: an event nested too deeply to decode"
            ) from None


def _resume(pending: bytes | bytearray, piece: bytes) -> tuple[bytes | bytearray, bytes]:
    """`piece` added to the event begun in `pending`: what is still pending and what is
    ready to split into events. An event growing over many pieces is a bytearray that
    grows in place, and only its new bytes are searched: linear time up to its cap (an
    event within one piece is within the cap of a chunk)."""
    searched = len(pending) - 1  # the blank line may begin in the bytes kept
    grown = pending if isinstance(pending, bytearray) else bytearray(pending)
    grown += piece
    if grown.find(b"\n\n", searched) >= 0:
        return b"", bytes(grown)
    if len(grown) > _MAX_EVENT:
        raise ValueError(f"an event longer than {_MAX_EVENT} bytes, past the limit")
    return grown, b""


def _chunk_size(line: bytes) -> int:
    """The size of a chunk-size line with an extension (after `;`, ignored)."""
    digits = line.split(b";", 1)[0].rstrip(b" \t")
    if not digits or digits.strip(_HEX_DIGITS):
        raise ValueError(f"bad chunk size line {line[:40]!r}")
    return int(digits, 16)


def _fill(
    data: bytes,
    wanted: int,
    connection: _Connection,
    scope: GenerationScope | None,
    client: ServerClient,
) -> bytes:
    """`data` and what arrives after it, `wanted` bytes at least: read in pieces and joined
    once, so a large chunk or body is copied once, not on every read."""
    pieces, have = [data], len(data)
    while have < wanted:
        data = connection.recv(scope, client.diagnose, client.alive)
        pieces.append(data)
        have += len(data)
    return b"".join(pieces)


def _chunks(
    connection: _Connection, scope: GenerationScope | None, client: ServerClient
) -> Iterator[bytes]:
    """The payload of a chunked body as it arrives: each piece joins every complete chunk
    received so far. Leaves what follows the body in the connection's buffer."""
    buffer, connection.buffer = connection.buffer, b""
    recv, diagnose, alive = connection.recv, client.diagnose, client.alive
    start = 0  # where the unparsed part of `buffer` begins
    payloads: list[bytes] = []
    while True:
        line_end = buffer.find(b"\r\n", start)
        if line_end >= 0:
            try:
                size = int(buffer[start:line_end], 16)  # a bare hex number, as llama-server's
            except ValueError:
                size = _chunk_size(buffer[start:line_end])
            end = line_end + 2 + size
            if size > 0 and len(buffer) >= end + 2:  # a chunk received whole
                if buffer[end : end + 2] != b"\r\n":
                    raise ValueError(f"a chunk does not end where its size ({size}) says")
                payloads.append(buffer[line_end + 2 : end])
                start = end + 2
                continue
            if size == 0 and (trailer_end := buffer.find(b"\r\n\r\n", line_end)) >= 0:
                connection.buffer = buffer[trailer_end + 4 :]  # what came past the body
                if payloads:
                    yield b"".join(payloads)
                return
            if size < 0:
                raise ValueError(f"bad chunk size line {buffer[start:line_end][:40]!r}")
            if size > _MAX_CHUNK:
                raise ValueError(f"a chunk of {size} bytes, past the limit of {_MAX_CHUNK}")
            if size == 0 and len(buffer) - line_end > _MAX_HEAD:  # trailer lines, never ending
                raise ValueError("the trailer after the last chunk never ends")
        elif len(buffer) - start >= _MAX_CHUNK_LINE:
            raise ValueError(f"a chunk size line that never ends: {buffer[start : start + 40]!r}")
        if payloads:  # everything received is delivered before waiting for more
            yield b"".join(payloads)
            payloads = []
        data = recv(scope, diagnose, alive)
        if line_end >= 0 and size > 0:  # the rest of a chunk begun, read at once
            data = _fill(data, end + 2 - len(buffer), connection, scope, client)
        buffer = buffer[start:] + data
        start = 0


def _decode_batch(events: list[bytes], loads: Callable[[bytes], Any]) -> list[Any] | None:
    """Several `data:` objects with one `json.loads`, which shares the decoder's per-call
    work and key strings among them; None unless each is one, to decode them one by one."""
    if not all(event[:7] == b"data: {" and event[-1:] == b"}" for event in events):
        return None
    try:
        values: list[Any] = loads(b"[" + b",".join([event[6:] for event in events]) + b"]")
    except (ValueError, RecursionError):  # one by one, each error its own
        return None
    if len(values) != len(events) or not all(type(value) is dict for value in values):
        return None
    return values


def _decode_event(event: bytes, loads: Callable[[bytes], Any]) -> dict[str, Any] | None:
    """`data: {...}` is a result; `error: {...}` (or a data object with "error") a failure;
    comment lines (from ":", as llama-server's keep-alive ping) are skipped: None if
    the event has nothing else."""
    if event.startswith(b"data: "):
        value = loads(event[6:])
    elif event.startswith(b"error: "):
        value = {"error": loads(event[7:])}
    elif event.startswith(b":"):
        start = 0
        while event.startswith(b":", start):
            start = event.find(b"\n", start) + 1
            if not start:
                return None
        return _decode_event(event[start:], loads) if start < len(event) else None
    else:
        field, _, rest = event.partition(b":")
        if field in (b"data", b"error"):
            return _decode_event(field + b": " + rest.lstrip(), loads)
        raise ValueError(f"unexpected SSE event {event[:80]!r}")
    if not isinstance(value, dict):
        raise ValueError(f"an event is not a JSON object: {event[:80]!r}")
    return value


def _status_code(status_line: str) -> int | None:
    """The status of an `HTTP/1.x NNN reason` line, or None if it is not one."""
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
        return None
    return int(code)


def _content_length(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ValueError(f"a Content-Length that is not a size: {value[:40]!r}")
    length = int(value)
    if length > _MAX_BODY:
        raise ValueError(f"a body of {length} bytes, past the limit of {_MAX_BODY}")
    return length


def _loads(raw: bytes) -> Any:
    """JSON from the server; a ValueError for nesting too deep to decode, as for any
    other JSON that is not to be had."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply to decode") from None


class RequestRejected(GenerationError):
    """The server refused the request as it was (a 4xx): `status` and its own words."""

    def __init__(self, status: int, server_message: str, message: str = "") -> None:
        super().__init__(message or f"the server answered {status}: {server_message}")
        self.status = status
        self.server_message = server_message


def error_for(status: int, body: Any, *, endpoint: str = "") -> InferenceError:
    """Turn a server's error object into our exception type; counts in it that are not
    counts make it a GenerationError saying so (`endpoint` names where it came from)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": error or body}
    said = error.get("message", "unknown error")
    message = said if isinstance(said, str) else wire.shown(said)
    if error.get("type") == "exceed_context_size_error":
        try:
            prompt_tokens, context = wire.overflow_counts(error, endpoint or "an error answer")
        except wire.BadAnswer as bad:
            return GenerationError(
                f"the server answered {status} ({message}) unlike a llama-server: {bad}"
            )
        return ContextOverflow(
            f"the prompt ({prompt_tokens} tokens) does not fit the context ({context} tokens): "
            "shorten it, or load the model with a larger context_len",
            prompt_tokens=prompt_tokens,
            context_len=context,
        )
    if status == 401:
        return RequestRejected(status, message, f"the server refused the request: {message}")
    if 400 <= status < 500:
        return RequestRejected(status, message)
    return GenerationError(f"the server answered {status}: {message}")


@final
class ServerClient:
    """Requests to one server. Thread-safe: each request holds its own connection.

    `tls` makes every connection HTTPS with that context; `base_path` is put
    before every path (a server behind a proxy at `https://host/llm/`); `model` names
    the model of a llama-server router that every request is for (in a body's "model",
    or a GET's `?model=`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        api_key: str | None,
        *,
        alive: Callable[[], bool],
        diagnose: Diagnose,
        tls: ssl.SSLContext | None = None,
        base_path: str = "",
        model: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._model = model
        self.alive, self.diagnose = alive, diagnose
        self._tls = tls
        self._base = base_path.encode()
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        authorization = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self._headers = (
            f"Host: {authority}\r\n{authorization}Content-Type: application/json\r\n"
        ).encode()
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._streams: set[EventStream] = set()
        self._closed = False

    def _acquire(self, *, fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection, and whether it was reused from the idle pool (it may have been
        closed by the server since: the caller retries such a one on a `fresh` one)."""
        stale: list[_Connection] = []
        pooled = None
        with self._lock:
            if self._closed:
                raise InferenceError("the client is closed")
            now = time.monotonic()
            while self._idle and not fresh and pooled is None:
                candidate = self._idle.pop()
                if now - candidate.idle_since < _KEEP_ALIVE and candidate.quiet():
                    pooled = candidate
                else:
                    stale.append(candidate)
        for connection in stale:
            connection.close()
        if pooled is not None:
            return pooled, True
        try:
            return self.connect(), False
        except OSError as error:
            raise self.diagnose(f"cannot connect to the server ({error})") from None

    def connect(self, timeout: float = 10.0) -> _Connection:
        """A new connection (TLS included); a failure raises its own OSError."""
        return _Connection(self.host, self.port, self._tls, timeout)

    def _release(self, connection: _Connection) -> None:
        """Back to the pool, unless bytes arrived past the answer's end: its framing lied,
        and they would be read as the next answer."""
        with self._lock:
            if not self._closed and not connection.closed and not connection.buffer:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
                return
        connection.close()

    def _forget(self, stream: EventStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def _send(
        self, method: str, path: str, body: Any, scope: GenerationScope | None
    ) -> tuple[_Connection, int, dict[str, str]]:
        """Send a request and read the response head; retries once on a stale keep-alive socket."""
        if self._model is not None:
            if isinstance(body, dict):
                body = {**body, "model": self._model}
            elif method == "GET":
                path += ("&" if "?" in path else "?") + "model=" + quote(self._model, safe="")
        payload = b"" if body is None else json.dumps(body).encode()
        request = (
            f"{method} ".encode()
            + self._base
            + f"{path} HTTP/1.1\r\n".encode()
            + self._headers
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        for attempt in (1, 2):
            connection, reused = self._acquire(fresh=attempt == 2)
            try:
                connection.sock.sendall(request)
                status, headers = self._read_head(connection, scope)
                return connection, status, headers
            except InferenceError:
                # A deadline or a cancel (GenerationTimeout is an OSError too): the
                # request was sent, so it is never retried, and it keeps its type.
                connection.close()
                raise
            except (_Disconnected, OSError) as error:
                connection.close()
                if not reused:  # a fresh connection that fails is the server's failure
                    raise self.diagnose(f"the request {method} {path} failed ({error})") from None
            except BaseException:
                connection.close()
                raise
        raise AssertionError("unreachable")

    def _read_head(
        self, connection: _Connection, scope: GenerationScope | None
    ) -> tuple[int, dict[str, str]]:
        buffer = connection.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > _MAX_HEAD:
                raise _Disconnected("response head too large")
            buffer += connection.recv(scope, self.diagnose, self.alive)
        head, connection.buffer = buffer[:end].decode("latin-1"), buffer[end + 4 :]
        status_line, *lines = head.split("\r\n")
        status = _status_code(status_line)
        if status is None:
            raise _Disconnected(f"not an HTTP response: {status_line[:60]!r}")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _read_body(
        self, connection: _Connection, headers: dict[str, str], scope: GenerationScope | None
    ) -> bytes:
        """The body as its framing says, within `_MAX_BODY`; a bad framing is a ValueError."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            pieces, size = [], 0
            for piece in _chunks(connection, scope, self):
                size += len(piece)
                if size > _MAX_BODY:
                    raise ValueError(f"a body longer than {_MAX_BODY} bytes, past the limit")
                pieces.append(piece)
            return b"".join(pieces)
        length = _content_length(headers.get("content-length", "0"))
        received = connection.buffer
        if len(received) < length:
            received = _fill(received, length, connection, scope, self)
        connection.buffer = received[length:]
        return received[:length]

    def _body(
        self,
        connection: _Connection,
        what: str,
        headers: dict[str, str],
        scope: GenerationScope | None,
    ) -> bytes:
        """The body of the response to `what`; then the connection goes back to the pool
        if the answer ended where its framing said (and the server keeps it open)."""
        try:
            raw = self._read_body(connection, headers, scope)
        except _Disconnected as error:
            connection.close()
            raise self.diagnose(f"the response to {what} broke off ({error})") from None
        except ValueError as error:
            connection.close()
            raise GenerationError(f"{what}: the server sent a malformed answer: {error}") from None
        except BaseException:
            connection.close()
            raise
        if headers.get("connection", "").lower() == "close":
            connection.close()
        else:
            self._release(connection)
        return raw

    def request(
        self, method: str, path: str, body: Any = None, *, scope: GenerationScope | None = None
    ) -> Any:
        """One JSON request; an error status raises the matching `InferenceError`.

        Without a scope it gets a deadline of its own: a server that is alive but
        never answers ends the call with `GenerationTimeout`, never hangs it.
        """
        if scope is None:
            scope = GenerationScope(timeout=REQUEST_TIMEOUT)
        connection, status, headers = self._send(method, path, body, scope)
        raw = self._body(connection, f"{method} {path}", headers, scope)
        try:
            value = _loads(raw) if raw else None
        except ValueError:
            if status >= 400:  # an error page (a proxy's): its status still says what it is
                raise error_for(status, raw[:200].decode("utf-8", "replace")) from None
            raise GenerationError(
                f"{method} {path}: the server sent invalid JSON: {raw[:200]!r}"
            ) from None
        if status >= 400:
            raise error_for(status, value)
        return value

    def status_of(self, path: str, timeout: float) -> int:
        """The status code of a GET (for /health), or 0 when the server cannot be reached
        or does not answer HTTP within `timeout`: a deadline on the whole call, so a server
        trickling bytes cannot hold it, and only a status line's worth is read."""
        deadline = time.monotonic() + timeout
        try:
            connection = self.connect(timeout)
        except OSError:
            return 0
        sock = connection.sock
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(
                b"GET "
                + self._base
                + f"{path} HTTP/1.1\r\n".encode()
                + self._headers
                + b"Connection: close\r\n\r\n"
            )
            head = b""
            while (line_end := head.find(b"\r\n")) < 0:
                remaining = deadline - time.monotonic()
                if len(head) > _MAX_HEAD or remaining <= 0:
                    return 0
                sock.settimeout(remaining)
                data = sock.recv(4096)
                if not data:
                    return 0
                head += data
            return _status_code(head[:line_end].decode("latin-1")) or 0
        except OSError:
            return 0
        finally:
            connection.close()

    def stream(self, path: str, body: Any, scope: GenerationScope) -> EventStream:
        """Start a streamed request; an error status before the stream raises here."""
        connection, status, headers = self._send("POST", path, body, scope)
        if status >= 400 or headers.get("transfer-encoding", "").lower() != "chunked":
            raw = self._body(connection, f"POST {path}", headers, scope)
            try:
                value = _loads(raw)
            except ValueError:
                value = {"error": {"message": raw[:200].decode("utf-8", "replace")}}
            raise error_for(status, value)
        stream = EventStream(self, connection, scope)
        with self._lock:
            self._streams.add(stream)
        return stream

    def close(self) -> None:
        """Abort open streams and drop idle connections (before the server is stopped)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            streams = list(self._streams)
        for stream in streams:
            stream.abort()
        for connection in idle:
            connection.close()
