"""`inference serve`, driven as other programs drive it: the openai client and LangChain's
ChatOpenAI, against the real llama-server and SmolLM2; the remote backend naming a
router's model. The command runs as a child process and is stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

import inference_core as ic

from .procs import children, free_port, wait_gone
from .test_serve_front import WEATHER

pytestmark = [pytest.mark.frameworks, pytest.mark.server]

KEY = "serve-test-key"
MODEL = "SmolLM2-135M-Instruct.Q4_1"
START = 120.0  # a bound on the start only a hang reaches


class Serving:
    """One `inference serve` child: its URL, models, and what stops it."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inference_core", "serve", *args, "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "LLAMA_API_KEY": ""},
        )
        assert self.process.stdout is not None
        self.lines: list[str] = []
        deadline = time.monotonic() + START
        while not any(line.startswith("serving on") for line in self.lines):
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(
                    f"inference serve did not start: {self.lines} {self.process.stderr}"
                )
            self.lines.append(line.rstrip("\n"))
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.interrupt()


@pytest.fixture(scope="module")
def one_model(smollm2_path: str) -> Iterator[Serving]:
    serving = Serving(
        smollm2_path,
        *("--api-key", KEY, "--embeddings", "--context-len", "2048"),
    )
    yield serving
    serving.stop()


@pytest.fixture
def client(one_model: Serving) -> openai.OpenAI:
    return openai.OpenAI(base_url=one_model.url, api_key=KEY, max_retries=0)


def test_serve_prints_the_url_and_the_model_and_never_the_key(one_model: Serving) -> None:
    assert one_model.lines == [
        f"model: {MODEL}",
        "clients send the API key as a bearer token (not shown)",
        f"serving on {one_model.url} (OpenAI-compatible; Ctrl-C stops it)",
    ]
    assert all(KEY not in line for line in one_model.lines)


def test_the_openai_client_chats_and_streams(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the capital of France?"}
    ]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=12, temperature=0
    )
    text = answer.choices[0].message.content or ""
    assert text.strip() and answer.usage is not None and answer.usage.completion_tokens > 0
    pieces = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    chunks = [chunk for chunk in pieces if isinstance(chunk, ChatCompletionChunk)]
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == text


def test_the_openai_client_embeds(client: openai.OpenAI) -> None:
    answer = client.embeddings.create(model=MODEL, input=["a cat", "a dog"])
    vectors = [item.embedding for item in answer.data]
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 0
    assert vectors[0] != vectors[1]


def test_a_wrong_key_is_refused(one_model: Serving) -> None:
    wrong = openai.OpenAI(base_url=one_model.url, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=2,
        )


def chat_openai(serving: Serving, **options: Any) -> Any:
    """LangChain's `ChatOpenAI` on `serving`, with these options."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=serving.url,
        api_key=KEY,  # type: ignore[arg-type]
        model=MODEL,
        max_retries=0,
        **options,
    )


def test_langchains_chat_openai_chats_and_streams(one_model: Serving) -> None:
    chat = chat_openai(one_model, max_completion_tokens=12, temperature=0)
    answer = chat.invoke("What is the capital of France?")
    assert str(answer.content).strip()
    streamed = "".join(
        str(chunk.content) for chunk in chat.stream("What is the capital of France?")
    )
    assert streamed == answer.content


TOOLS = cast("list[ChatCompletionFunctionToolParam]", [WEATHER])


def test_the_openai_client_gets_tool_calls_whole_and_streamed(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    answer = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=48,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    pieces = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=48,
        stream=True,
    )
    deltas = [c.choices[0] for c in pieces if isinstance(c, ChatCompletionChunk) and c.choices]
    streamed = [call for d in deltas for call in d.delta.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in streamed if c.function] == [
        ("get_weather", call.function.arguments)
    ]
    assert deltas[-1].finish_reason == "tool_calls"


def test_langchains_chat_openai_binds_tools(one_model: Serving) -> None:
    from langchain_core.messages import AIMessage, AIMessageChunk

    chat = chat_openai(one_model, max_completion_tokens=48).bind_tools(
        [WEATHER], tool_choice="required"
    )
    answer = chat.invoke("What is the weather in Paris?")
    assert isinstance(answer, AIMessage)
    assert [call["name"] for call in answer.tool_calls] == ["get_weather"]
    assert "city" in answer.tool_calls[0]["args"]
    chunks = list(chat.stream("What is the weather in Paris?"))
    whole: Any = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert isinstance(whole, AIMessageChunk)
    assert [call["name"] for call in whole.tool_calls] == ["get_weather"]


def test_one_model_stops_with_ctrl_c_and_leaves_no_process(smollm2_path: str) -> None:
    serving = Serving(smollm2_path, "--context-len", "512")
    try:
        running = children(serving.process.pid)
        assert running, "llama-server runs as serve's child"
    finally:
        assert serving.interrupt() == 0
    for pid in running:
        assert wait_gone(pid, 30), f"process {pid} outlived inference serve"


# -- a folder on llama-server's router ------------------------------------------------


@pytest.fixture(scope="module")
def folder(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two models (SmolLM2 under two names: the router runs each in a child of its own)."""
    models = tmp_path_factory.mktemp("models")
    for name in ("first", "second"):
        (models / f"{name}.gguf").symlink_to(smollm2_path)
    return models


def greedy_ids(model: ic.TextModel) -> list[int]:
    stream = model.generate("The capital of France is", max_tokens=6, temperature=0.0)
    return [token.id for token in stream]


def _status(url: str) -> dict[str, str]:
    """Whether each of a router's models is loaded, on a connection of its own (the router
    closes a connection after a proxied answer, which a pooled client would reuse)."""
    with urllib.request.urlopen(f"{url}/models", timeout=30) as response:
        listing = json.loads(response.read())
    return {item["id"]: item["status"]["value"] for item in listing["data"]}


def test_a_folder_is_served_one_model_at_a_time_and_ctrl_c_stops_everything(
    folder: Path, smollm2_path: str
) -> None:
    serving = Serving("--models-dir", str(folder), "--max-models", "1")
    try:
        assert serving.lines[:2] == ["model: first", "model: second"]
        client = openai.OpenAI(base_url=serving.url, api_key="none", max_retries=0)
        answers = {}
        for name in ("first", "second"):
            answer = client.chat.completions.create(
                model=name,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=8,
                temperature=0,
            )
            answers[name] = answer.choices[0].message.content
            assert _status(serving.url)[name] == "loaded"
        assert _status(serving.url)["first"] != "loaded"  # the second request swapped them
        assert answers["first"] == answers["second"]
        with ic.load(serving.url.removesuffix("/v1"), model="first") as remote:
            ids = greedy_ids(remote)
        with ic.load(smollm2_path, backend="llama_cpp", context_len=512) as local:
            assert ids == greedy_ids(local)
        with pytest.raises(ic.InvalidValue, match="router serving several models") as error:
            ic.load(serving.url.removesuffix("/v1"))
        assert "first" in str(error.value) and "second" in str(error.value)
        running = children(serving.process.pid)
        assert running, "the router runs as serve's child"
        grandchildren = {child for pid in running for child in children(pid)}
    finally:
        assert serving.interrupt() == 0
    for pid in running | grandchildren:
        assert wait_gone(pid, 30), f"process {pid} outlived inference serve"


def test_serving_beyond_loopback_needs_a_key(smollm2_path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inference_core", "serve", smollm2_path, "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env={**os.environ, "LLAMA_API_KEY": ""},
        timeout=60,
    )
    assert result.returncode == 2
    assert "--api-key" in result.stderr and "0.0.0.0" in result.stderr
