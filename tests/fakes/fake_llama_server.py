"""A stand-in for llama-server that misbehaves on demand, for faults the real one
cannot be made to show at a chosen moment.

Started like llama-server (`--model M --host H --port P ...`, key in LLAMA_API_KEY).
The prompt of a /completion request picks the stream it sends:
  "malformed"  a chunk that is not JSON
  "error"      two tokens, then an `error:` event
  "truncate"   two tokens, then the connection closes without the final chunk
  "eof-chunk"  two tokens, then a clean end of the body without the final `stop` event
  "silent..."  no answer at all: the connection stays open, the head never comes
  "stall"      one token, then nothing: the connection stays open, the next never comes
  "split"      one event whose one token (227) ends a character of three byte tokens, as
               llama-server sends an emoji: the client asks /tokenize for the rest
               (10813, 232, 227); then the final event
  "split, mismatched"  the same with an id (999) that is not the tokenizer's last
  anything else: three tokens and a proper final event
`--fake-silent PATH` (repeatable) makes every request to PATH go unanswered the same way.
`--fake-quiet-bind` exits with status 1 and no word when its port is taken.
`--fake-close PATH` closes the connection after answering PATH, as llama-server closes a
keep-alive connection left idle: the client's next request on it meets a closed socket.
`--fake-props BODY` answers /props with BODY as it is (JSON or not), and `--fake-exit-on PATH`
exits with status 3 when PATH is asked for: a server that is not llama-server, or one that
dies after /health: see `_scripted`.
Each request is logged as `request METHOD PATH PROMPT`, so a test can count them, and
the body of each /completion request as `body JSON`, so a test can read what was sent.
Connections are served side by side, each on its own thread.
"""

import contextlib
import json
import os
import socket
import sys
import threading


def _arg(name: str) -> str:
    return sys.argv[sys.argv.index(name) + 1]


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: dict[str, object]) -> bytes:
    return _chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")


# The last event of a stream of three tokens that ended on an end-of-generation token.
_END = {"content": "", "tokens": [], "stop": True, "stop_type": "eos", "tokens_predicted": 3}


def _token(i: int) -> bytes:
    return _event(
        {"content": f" t{i}", "tokens": [100 + i], "stop": False, "tokens_predicted": i + 1}
    )


def _respond(conn: socket.socket, status: str, body: dict[str, object]) -> None:
    data = json.dumps(body).encode()
    conn.sendall(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )


def _paths(flag: str) -> set[str]:
    return {sys.argv[i + 1] for i, arg in enumerate(sys.argv) if arg == flag}


def _serve(conn: socket.socket, key: str) -> None:
    silent, closing = _paths("--fake-silent"), _paths("--fake-close")
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        _, path, _ = lines[0].split(" ")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buffer) < length:
            buffer += conn.recv(65536)
        body, buffer = buffer[:length], buffer[length:]
        prompt = str(json.loads(body or b"{}").get("prompt", ""))
        print(f"request {lines[0].split(' ')[0]} {path} {prompt}", flush=True)
        if path == "/completion":
            print(f"body {body.decode()}", flush=True)
        if path in silent or prompt.startswith("silent"):
            continue  # read on: the next thing to arrive is the client closing
        if _scripted(conn, path):
            continue
        if path == "/health":
            _respond(conn, "200 OK", {"status": "ok"})
            continue
        if headers.get("authorization") != f"Bearer {key}":
            _respond(
                conn, "401 Unauthorized", {"error": {"message": "Invalid API Key", "code": 401}}
            )
            continue
        if path == "/tokenize":
            pieces = [[10813, [240, 159]], [232, [142]], [227, [137]]]
            _respond(conn, "200 OK", {"tokens": [{"id": i, "piece": p} for i, p in pieces]})
            continue
        if path == "/props":
            _respond(
                conn, "200 OK", {"default_generation_settings": {"n_ctx": 512}, "total_slots": 1}
            )
            if path in closing:
                return
            continue
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        if prompt == "malformed":
            conn.sendall(_token(0) + _chunk(b"data: {not json\n\n"))
        elif prompt == "error":
            conn.sendall(
                _token(0)
                + _token(1)
                + _chunk(
                    b'error: {"code": 500, "message": "slot exploded", "type": "server_error"}\n\n'
                )
            )
        elif prompt == "stall":
            conn.sendall(_token(0))
            continue  # read on: the next thing to arrive is the client closing
        elif prompt == "truncate":
            conn.sendall(_token(0) + _token(1))
            conn.shutdown(socket.SHUT_RDWR)
            return
        elif prompt.startswith("split"):
            last = 999 if prompt.endswith("mismatched") else 227
            conn.sendall(
                _event({"content": "🎉", "tokens": [last], "stop": False, "tokens_predicted": 3})
                + _event(_END)
                + b"0\r\n\r\n"
            )
            continue
        elif prompt == "eof-chunk":
            conn.sendall(_token(0) + _token(1) + b"0\r\n\r\n")
            continue
        else:
            conn.sendall(
                _token(0)
                + _token(1)
                + _token(2)
                + _event(
                    {
                        **_END,
                        "timings": {
                            "prompt_n": 1,
                            "prompt_ms": 1.0,
                            "predicted_n": 3,
                            "predicted_ms": 3.0,
                            "predicted_per_second": 1000.0,
                        },
                    }
                )
                + b"0\r\n\r\n"
            )
            continue
        conn.sendall(b"0\r\n\r\n")


# -- answers scripted on the command line -------------------------------------------------


def _scripted(conn: socket.socket, path: str) -> bool:
    """Answer PATH as `--fake-props` or `--fake-exit-on` script it; False when they do not."""
    if path in _paths("--fake-exit-on"):
        print(f"exiting on {path}", flush=True)
        os._exit(3)
    if path == "/props" and "--fake-props" in sys.argv:
        body = _arg("--fake-props").encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        return True
    return False


def main() -> None:
    key = os.environ["LLAMA_API_KEY"]
    try:
        listener = socket.create_server((_arg("--host"), int(_arg("--port"))))
    except OSError:
        if "--fake-quiet-bind" in sys.argv:  # as if the line saying so never reached the log
            sys.exit(1)
        raise
    print(f"main: server is listening on http://{_arg('--host')}:{_arg('--port')}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_and_close, args=(conn, key), daemon=True).start()


def _serve_and_close(conn: socket.socket, key: str) -> None:
    with conn, contextlib.suppress(OSError):
        _serve(conn, key)


if __name__ == "__main__":
    main()
