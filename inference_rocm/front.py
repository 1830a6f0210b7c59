"""The front `inference serve MODEL` puts before llama-server: chats that offer tools are
answered by the loaded model, every other request is passed through as it comes.

Why a front at all: llama-server finds tool calls through the model's chat template and
its own parsers of known call formats. A model whose template has no tool format answers
in prose: SmolLM2 made no call, even with `tool_choice: "required"` (measured on the
pinned build). Our `chat` plans the calls itself (`inference_core.tools`), so clients get
calls from any model. What the pass-through costs is measured by
`python -m benchmarks --only serve`.

The front checks no key: llama-server, listening on a loopback port of its own with the
user's key, checks it for every request passed through, and the front checks it (in
constant time) before answering a chat itself. Bodies are bounded, and so is the wait for
llama-server.
"""

from __future__ import annotations

import errno
import hmac
import http.client
import http.server
import io
import json
import logging
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Final, final

import attrs

from inference_core.errors import (
    ContextOverflow,
    GenerationError,
    InferenceError,
    InvalidChatTemplate,
    InvalidValue,
    ModelClosed,
    ServerCrashed,
    ServerStartError,
    UnsupportedOption,
)
from inference_core.integrations._shared import (
    AnswerReader,
    Ending,
    answer_reader,
    config_from,
    messages_from_openai,
    openai_tool_calls,
)
from inference_core.protocols import TextModel, TokenStream
from inference_core.types import GenerateConfig, Token

from .keeper import KeptServer
from .server import Listen, port_in_use

__all__ = ["Front"]

logger = logging.getLogger(__name__)

MAX_BODY: Final = 64 * 2**20  # a chat with images inline
UPSTREAM_WAIT: Final = 600.0  # seconds llama-server may go silent (a long prefill on a CPU)
_CHATS: Final = frozenset({"/v1/chat/completions", "/chat/completions"})
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# A chat's options, as OpenAI names them, and the `GenerateConfig` field each sets.
_SAMPLING: Final = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "seed": "seed",
    "stop": "stop",
}
_ZERO_ONLY: Final = ("frequency_penalty", "presence_penalty")  # OpenAI's, taken when 0
# What clients send that changes nothing here, or is read apart from the sampling.
_READ_ELSEWHERE: Final = frozenset(
    {
        "messages",
        "model",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "store",
        "metadata",
        "service_tier",
    }
)


class _ClientLeft(Exception):
    """The client closed its connection while its answer was being made."""


@final
@attrs.frozen
class _ToolChat:
    """One chat offering tools, checked: what `model.chat` is given, and how to answer."""

    messages: list[Any]
    config: GenerateConfig
    tools: list[Any]
    tool_choice: Any
    parallel_tool_calls: bool
    stream: bool
    usage_in_stream: bool

    def start(self, model: TextModel) -> TokenStream:
        return model.chat(
            self.messages,
            config=self.config,
            tools=self.tools,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
        )

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> _ToolChat:
        unknown = sorted(set(body) - set(_SAMPLING) - _READ_ELSEWHERE - {"n", *_ZERO_ONLY})
        if unknown:
            known = sorted({*_SAMPLING, *_READ_ELSEWHERE, *_ZERO_ONLY, "n"})
            raise UnsupportedOption(
                unknown[0],
                f"inference serve answers a chat offering tools itself and does not take "
                f"{', '.join(unknown)}; it takes {', '.join(known)}",
            )
        if body.get("n") not in (1, None):
            raise UnsupportedOption("n", "inference serve gives one answer (n=1): ask again")
        for name in _ZERO_ONLY:
            if body.get(name):
                raise UnsupportedOption(
                    name,
                    f"inference serve answers a chat offering tools itself and cannot "
                    f"honour {name}: use repeat_penalty, llama.cpp's",
                )
        settings = {_SAMPLING[name]: body[name] for name in _SAMPLING if name in body}
        stream_options = body.get("stream_options")
        return cls(
            messages=messages_from_openai(_list(body.get("messages"), "messages")),
            config=config_from(settings),
            tools=_list(body["tools"], "tools"),
            tool_choice=body.get("tool_choice", "auto"),
            parallel_tool_calls=body.get("parallel_tool_calls") is True,
            stream=body.get("stream") is True,
            usage_in_stream=isinstance(stream_options, dict)
            and stream_options.get("include_usage") is True,
        )


def _list(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidValue(name, f"{name} must be a list, got {value!r:.100}")
    return value


_FAILURES: Final = (InferenceError, InvalidValue)  # InvalidValue: a ValueError


def _status_of(error: InferenceError | InvalidValue) -> tuple[int, str]:
    """The HTTP status and OpenAI error type a failure of ours is answered with."""
    if isinstance(error, (InvalidValue, UnsupportedOption, ContextOverflow, InvalidChatTemplate)):
        return 400, "invalid_request_error"
    if isinstance(error, (ModelClosed, ServerCrashed)):
        return 503, "server_error"
    return 500, "server_error"


def _error_body(message: str, kind: str, status: int) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


@final
class _Answer:
    """The OpenAI-shaped answer to one chat: its id, time and model name on every part."""

    def __init__(self, name: str) -> None:
        self._head = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time())}
        self._name = name

    def whole(self, ending: Ending) -> dict[str, Any]:
        calls = openai_tool_calls(ending.tool_calls)
        message: dict[str, Any] = {"role": "assistant", "content": ending.text or None}
        if calls:
            message["tool_calls"] = calls
        if ending.reasoning:
            message["reasoning_content"] = ending.reasoning
        choice = {"index": 0, "message": message, "finish_reason": _finish(ending)}
        return {**self._whole("chat.completion", [choice]), "usage": ending.openai_usage}

    def chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": dict(delta), "finish_reason": finish_reason}
        return _event(self._whole("chat.completion.chunk", [choice]))

    def last_chunks(self, ending: Ending, with_usage: bool) -> Iterator[bytes]:
        """What the end adds: held text and thinking, the calls, why it ended, the usage."""
        if ending.late_reasoning:
            yield self.chunk({"reasoning_content": ending.late_reasoning})
        if ending.late_text:
            yield self.chunk({"content": ending.late_text})
        calls = openai_tool_calls(ending.tool_calls)
        if calls:
            yield self.chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
        yield self.chunk({}, _finish(ending))
        if with_usage:
            yield _event({**self._whole("chat.completion.chunk", []), "usage": ending.openai_usage})
        yield b"data: [DONE]\n\n"

    def _whole(self, kind: str, choices: list[Any]) -> dict[str, Any]:
        return {**self._head, "object": kind, "model": self._name, "choices": choices}


def _finish(ending: Ending) -> str:
    return "tool_calls" if ending.tool_calls else ending.finish_reason or "stop"


def _event(data: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    """One client connection (keep-alive): each request answered or passed through."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a token is sent at once, not held for an ACK
    timeout = 300  # seconds a client may leave its connection idle, or a request half sent
    front: ClassVar[Front]

    def do_POST(self) -> None:
        body = self._body()
        if body is None:
            return
        request = _offering_tools(self.path, body)
        if request is None:
            self._pass(body)
        elif not self._allowed():
            self._refuse(401, "Invalid API Key", "authentication_error")
        else:
            try:
                self._answer_chat(_ToolChat.of(request))
            except _FAILURES as error:
                self._fail(error)
            except (_ClientLeft, ConnectionError):
                logger.info("%s left before its answer, which was stopped", self.address_string())
                self.close_connection = True

    def do_GET(self) -> None:
        self._pass(b"")

    do_DELETE = do_GET
    do_OPTIONS = do_GET

    def do_PUT(self) -> None:
        body = self._body()
        if body is not None:
            self._pass(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s: " + format, self.address_string(), *args)

    def _body(self) -> bytes | None:
        """The request's body, read whole within `MAX_BODY` (None: refused already)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(411, "send the body with a Content-Length")
            return None
        try:
            size = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_BODY:
            self._refuse(413, f"a request body is at most {MAX_BODY} bytes")
            return None
        return self.rfile.read(size)

    def _refuse(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send_whole(status, _error_body(message, kind, status))
        self.close_connection = status in (411, 413)  # the body was not read

    def _fail(self, error: InferenceError | InvalidValue) -> None:
        status, kind = _status_of(error)
        self._refuse(status, str(error), kind)

    def _send_whole(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _allowed(self) -> bool:
        key = self.front.api_key
        if key is None:
            return True
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), key.encode())

    def _answer_chat(self, chat: _ToolChat) -> None:
        """The model's answer, whole or streamed; a failure before the first token is an
        error status (raised)."""
        model = self.front.model
        answer = _Answer(self.front.name)
        reader = answer_reader(model, chat.tools, chat.tool_choice)
        stream = chat.start(model)
        try:
            if chat.stream:
                self._stream(chat, answer, reader, stream)
                return
            for token in self._while_asked(stream, chat.config.max_tokens):
                reader.take(token)
            ending = reader.end(stream, stream.reasoning_text())
            self._send_whole(200, json.dumps(answer.whole(ending)).encode())
        finally:
            stream.close()

    def _while_asked(self, stream: TokenStream, limit: int) -> Iterator[Token]:
        """The stream's tokens while the client still waits for them: a held answer
        writes nothing until its end, so a client that left is only seen by looking.
        An answer that `limit` (max_tokens) cut short of its JSON is the client's to mend."""
        made = 0
        try:
            for token in stream:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    raise _ClientLeft
                made += 1
                yield token
        except GenerationError as error:
            if made < limit:  # not cut short by max_tokens
                raise
            raise InvalidValue(  # the client's to mend: a 400, not a 500 it would retry
                "max_tokens", f"max_tokens ended the answer before it was whole: {error}"
            ) from None

    def _stream(
        self, chat: _ToolChat, answer: _Answer, reader: AnswerReader, stream: TokenStream
    ) -> None:
        """Server-sent events as the tokens come; a failure after the first is told as an
        error event, and the stream ends."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        out = _Chunked(self.wfile)
        out.write(answer.chunk({"role": "assistant", "content": ""}))
        try:
            for token in self._while_asked(stream, chat.config.max_tokens):
                shown = reader.take(token)
                if shown.thinking:
                    out.write(answer.chunk({"reasoning_content": shown.thinking}))
                elif shown.text:
                    out.write(answer.chunk({"content": shown.text}))
            ending = reader.end(stream, stream.reasoning_text())
            for part in answer.last_chunks(ending, chat.usage_in_stream):
                out.write(part)
        except _FAILURES as error:
            status, kind = _status_of(error)
            out.write(b"data: " + _error_body(str(error), kind, status) + b"\n\n")
        out.end()

    def _pass(self, body: bytes) -> None:
        """Send the request on to llama-server and its answer back, as it comes."""
        try:
            upstream = self.front.upstream()
        except InferenceError as error:
            self._fail(error)
            return
        headers = {
            name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP
        }
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
        except OSError as error:
            upstream.close()
            self._refuse(502, f"llama-server did not answer: {error}", "server_error")
            return
        try:
            self._relay(response)
        except ConnectionError:  # the client left: closing upstream stops llama-server too
            self.close_connection = True
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        length = response.getheader("Content-Length")
        if length is not None:
            self.send_header("Content-Length", length)
            self.end_headers()
            while piece := response.read(65536):
                self.wfile.write(piece)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        out = _Chunked(self.wfile)
        while piece := response.read1(65536):
            out.write(piece)
        out.end()


@final
class _Chunked:
    """HTTP/1.1 chunked transfer, each piece sent at once (a stream's tokens as they come)."""

    def __init__(self, out: io.BufferedIOBase) -> None:
        self._out = out

    def write(self, piece: bytes) -> None:
        if piece:
            self._out.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self._out.flush()

    def end(self) -> None:
        self._out.write(b"0\r\n\r\n")
        self._out.flush()


def _offering_tools(path: str, body: bytes) -> dict[str, Any] | None:
    """The chat request offering tools that `body` is, or None: one llama-server answers
    (a malformed one included: it says what is wrong)."""
    if path.partition("?")[0] not in _CHATS:
        return None
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or not request.get("tools"):
        return None
    return None if request.get("tool_choice") == "none" else request


class _Listener(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed unforeseen is logged (the base prints it to stderr)."""
        logger.exception("inference serve: a request from %s failed", client_address)


class _Listener6(_Listener):
    address_family = socket.AF_INET6


@final
class Front:
    """The front of one served model. Bind it (`Front(listen)`, which fails at once when
    the port is taken), then `start` it with the model once loaded; `stop` ends it."""

    def __init__(self, listen: Listen) -> None:
        self.api_key = listen.api_key
        kind = _Listener6 if ":" in listen.host else _Listener
        try:
            self._listener = kind((listen.host, listen.port), _Handler)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise port_in_use(listen) from None
            raise ServerStartError(
                f"cannot listen on {listen.host} port {listen.port}: {error.strerror or error}"
            ) from None
        self._thread: threading.Thread | None = None
        self.model: TextModel
        self.name = ""
        self._server: KeptServer

    def start(self, model: TextModel, server: KeptServer, name: str) -> None:
        """Serve `model` (named `name` in answers), passing all else to `server`."""
        self.model, self._server, self.name = model, server, name
        self._listener.RequestHandlerClass = type("Handler", (_Handler,), {"front": self})
        self._thread = threading.Thread(
            target=self._listener.serve_forever, name="inference-serve-front", daemon=True
        )
        self._thread.start()

    def upstream(self) -> http.client.HTTPConnection:
        """A connection to llama-server (started again first if it died)."""
        server = self._server.current
        return http.client.HTTPConnection(server.host, server.port, timeout=UPSTREAM_WAIT)

    def stop(self) -> None:
        if self._thread is not None:
            self._listener.shutdown()
        self._listener.server_close()
