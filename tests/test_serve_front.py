"""The front `inference serve MODEL` puts before llama-server, over plain HTTP: chats that
offer tools answered by the model, everything else passed through, the key checked at
both, bounded bodies, a dead server started again. The real llama-server and SmolLM2."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import inference_core as ic
from inference_core.types import LoadConfig
from inference_rocm import front, serve
from inference_rocm.front import MAX_BODY
from inference_rocm.server import Listen

from .procs import children, free_port, wait_for
from .test_wire import JSON

pytestmark = pytest.mark.server

KEY = "front-test-key"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def served(smollm2_path: str) -> Iterator[serve.Served]:
    listen = Listen("127.0.0.1", free_port(), KEY)
    running = serve.serve_model(
        smollm2_path, LoadConfig(context_len=4096), backend="llama_cpp", listen=listen
    )
    yield running
    running.stop()


def post(
    served: serve.Served, path: str, body: object, key: str | None = KEY, **headers: str
) -> tuple[int, bytes]:
    """A POST to the front, on a connection of its own: the status and the whole body."""
    connection = http.client.HTTPConnection(served.url.split("/")[2], timeout=120)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **headers}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        connection.request("POST", path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def events(body: bytes) -> list[Any]:
    """The JSON of each `data:` event of a server-sent stream, up to `[DONE]`."""
    found = []
    for line in body.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            found.append(json.loads(line.removeprefix("data: ")))
    return found


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "any", "messages": ASK, "max_tokens": 48, **extra}


def test_a_chat_offering_tools_gets_the_models_call(served: serve.Served) -> None:
    request = chat(tools=[WEATHER], tool_choice="required", n=1, presence_penalty=0, user="u")
    status, body = post(served, "/v1/chat/completions", request)
    assert status == 200, body
    answer = json.loads(body)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert "city" in json.loads(call["function"]["arguments"])
    assert answer["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert answer["usage"]["completion_tokens"] > 0


def test_a_streamed_chat_offering_tools_ends_with_the_call_and_the_usage(
    served: serve.Served,
) -> None:
    request = chat(
        tools=[WEATHER],
        tool_choice="required",
        stream=True,
        stream_options={"include_usage": True},
    )
    status, body = post(served, "/v1/chat/completions", request)
    assert status == 200, body
    assert body.rstrip().endswith(b"data: [DONE]")
    chunks = events(body)
    calls = [
        call for c in chunks for ch in c["choices"] for call in ch["delta"].get("tool_calls", [])
    ]
    assert [call["function"]["name"] for call in calls] == ["get_weather"]
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert len({c["id"] for c in chunks}) == 1


def test_a_chat_without_tools_is_llama_servers_answer(served: serve.Served) -> None:
    request = chat(temperature=0, max_tokens=8)
    status, through_front = post(served, "/v1/chat/completions", request)
    assert status == 200, through_front
    direct = served.server.current.client.request("POST", "/v1/chat/completions", request)
    front_text = json.loads(through_front)["choices"][0]["message"]["content"]
    assert front_text and front_text == direct["choices"][0]["message"]["content"]
    status, streamed = post(served, "/v1/chat/completions", {**request, "stream": True})
    pieces = [
        c["choices"][0]["delta"].get("content") or "" for c in events(streamed) if c["choices"]
    ]
    assert status == 200 and "".join(pieces) == front_text


@pytest.mark.parametrize("tools", [True, False], ids=["tools", "no-tools"])
@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_request_without_the_key_is_refused(
    served: serve.Served, tools: bool, key: str | None
) -> None:
    request = chat(tools=[WEATHER]) if tools else chat()
    status, body = post(served, "/v1/chat/completions", request, key=key)
    assert status == 401, body


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"n": 2}, "n=1"),
        ({"frequency_penalty": 0.2}, "frequency_penalty"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"messages": "hi"}, "messages"),
        ({"temperature": -1}, "temperature"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"max_tokens": 1}, "max_tokens ended the answer before it was whole"),
    ],
)
def test_a_chat_offering_tools_with_a_bad_option_is_a_400_naming_it(
    served: serve.Served, change: dict[str, Any], named: str
) -> None:
    status, body = post(served, "/v1/chat/completions", chat(tools=[WEATHER], **change))
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and named in error["message"]


def test_a_body_beyond_the_bound_is_refused_unread(served: serve.Served) -> None:
    host, port = served.url.split("/")[2].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n{" % (MAX_BODY + 1)
        )
        answer = raw.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_chunked_body_is_refused(served: serve.Served) -> None:
    status, body = post(served, "/v1/chat/completions", b"{}", **{"Transfer-Encoding": "chunked"})
    assert status == 411, body


def test_a_dead_server_is_started_again_by_the_next_request(served: serve.Served) -> None:
    first = served.server.current.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: not served.server.alive())
    status, body = post(served, "/v1/chat/completions", chat(max_tokens=4))
    assert status == 200, body
    assert served.server.current.pid != first and served.server.restarts >= 1


def test_a_taken_port_is_refused_before_any_server_starts(smollm2_path: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        before = children()
        with pytest.raises(ic.ServerStartError, match=f"port {port} on 127.0.0.1 is in use"):
            serve.serve_model(
                smollm2_path, LoadConfig(), backend="llama_cpp", listen=Listen("127.0.0.1", port)
            )
        assert children() == before


def _busy_slots(served: serve.Served) -> list[dict[str, Any]]:
    slots = served.server.current.client.request("GET", "/slots")
    return [slot for slot in slots if slot["is_processing"]]


def _decoded(slot: dict[str, Any]) -> int:
    progress = slot["next_token"]
    return int((progress[0] if isinstance(progress, list) else progress)["n_decoded"])


def test_a_client_that_leaves_stops_its_chat(
    served: serve.Served, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer is held (the generic tool format writes nothing before its end), so
    only the front's look at the connection between tokens can see the client go."""
    asked = 600
    request = {
        "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "tools": [WEATHER],
        "max_tokens": asked,
    }
    body = json.dumps(request).encode()
    host, port = served.url.split("/")[2].split(":")
    raw = socket.create_connection((host, int(port)), timeout=30)
    raw.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (KEY.encode(), len(body), body)
    )
    assert wait_for(lambda: any(_decoded(slot) > 5 for slot in _busy_slots(served)))
    with caplog.at_level("INFO", logger="inference_rocm.front"):
        raw.close()
        assert wait_for(lambda: not _busy_slots(served))
    assert "left before its answer, which was stopped" in caplog.text
    slots = served.server.current.client.request("GET", "/slots")
    assert max(_decoded(slot) for slot in slots if slot.get("next_token")) < asked


def test_a_malformed_chat_is_llama_servers_to_refuse_and_the_front_stays_up(
    served: serve.Served,
) -> None:
    status, body = post(served, "/v1/chat/completions", b'{"messages": [', key=KEY)
    assert 400 <= status < 600 and b"error" in body
    status, body = post(served, "/v1/chat/completions", chat(max_tokens=2))
    assert status == 200, body


SETTINGS = [*sorted(front._SAMPLING), "n", "presence_penalty", "tool_choice", "stream_options"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.just(ASK)
    | st.lists(
        st.dictionaries(st.sampled_from(["role", "content", "tool_calls"]), JSON), max_size=2
    )
    | JSON,
    tools=st.just([WEATHER]) | st.lists(JSON, min_size=1, max_size=2),
    extra=st.dictionaries(st.sampled_from(SETTINGS) | st.text(max_size=8), JSON, max_size=3),
)
def test_any_chat_offering_tools_is_answered_or_refused_with_a_400(
    served: serve.Served, messages: Any, tools: Any, extra: dict[str, Any]
) -> None:
    assume(extra.get("tool_choice") != "none")  # llama-server's to answer
    body = {"messages": messages, "tools": tools, **extra, "max_tokens": 1, "stream": False}
    status, answer = post(served, "/v1/chat/completions", body)
    assert status in (200, 400), (status, answer)
    if status == 400:
        assert json.loads(answer)["error"]["type"] == "invalid_request_error"
