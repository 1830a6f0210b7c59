"""`tokenize`, `detokenize` and `count_tokens` against the real llama-server and SmolLM2:
a count is the prompt the server then reads (`metrics.prompt_tokens`), ids are the
server's own, and what is given is checked before anything is sent."""

from __future__ import annotations

import json
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import gguf
import numpy
import pytest

import inference_core as ic
from inference_core.testing.contracts import TOOLS
from inference_core.types import MAX_DETOKENIZE_IDS, MAX_TOKENIZE_CHARS, MessageLike

from .external import KEY, ExternalServer
from .relay import Relay
from .test_cli import cli

pytestmark = pytest.mark.server

CALL = ic.ToolCall("call_1", "get_weather", {"city": "Paris"})
CONVERSATIONS: list[list[MessageLike]] = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Sky?"}],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ],
    [{"role": "user", "content": "Translate: 日本語のテキストです。"}],
    [{"role": "user", "content": "Which emoji is this? 🎉🎉 and this? 👩‍👩‍👧"}],
    [{"role": "user", "content": "Write <|im_start|> and <|im_end|> literally."}],
    [{"role": "user", "content": " leading and trailing spaces \n\n"}],
    [{"role": "user", "content": "count " * 300}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the weather in Paris?"},
        ic.Message("assistant", "", tool_calls=(CALL,)),
        ic.Message("tool", '{"sky": "sunny"}', tool_call_id="call_1"),
    ],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
        {"role": "user", "content": "e"},
    ],
]
PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "日本語 🎉 mixed text",
    "   spaced   ",
]
TEXTS = {
    "ascii": "The quick brown fox jumps over the lazy dog.",
    "cjk": "日本語のテキストと中文文本",
    "emoji": "party 🎉🎉 time 👩‍👩‍👧 done",
}


def prompt_tokens(stream: ic.TokenStream) -> int:
    for _ in stream:
        pass
    assert stream.err() is None and stream.metrics is not None
    return stream.metrics.prompt_tokens


@pytest.fixture(scope="module")
def remote_relay(external_server: ExternalServer) -> Iterator[tuple[ic.TextModel, Relay]]:
    """SmolLM2 through the remote backend, each request read off a relay on the way."""
    relay = Relay(external_server.port)
    with ic.load(relay.url, api_key=KEY) as model:
        yield model, relay
    relay.close()


def raw_tokenize(server: ExternalServer, text: str) -> list[int]:
    """llama-server's own /tokenize, asked without this library."""
    request = urllib.request.Request(
        f"{server.url}/tokenize",
        data=json.dumps({"content": text}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        tokens: list[int] = json.load(answer)["tokens"]
        return tokens


# -- a count is the prompt the server reads -------------------------------------------------


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=range(len(CONVERSATIONS)))
def test_a_chats_count_is_its_prompt_tokens(
    shared_model: ic.TextModel, messages: list[MessageLike]
) -> None:
    counted = shared_model.count_tokens(messages)
    assert counted == prompt_tokens(shared_model.chat(messages, max_tokens=1))
    assert counted == prompt_tokens(shared_model.chat(messages, max_tokens=1))  # from the cache


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_prompts_count_is_its_prompt_tokens(shared_model: ic.TextModel, prompt: str) -> None:
    assert shared_model.count_tokens(prompt) == prompt_tokens(
        shared_model.generate(prompt, max_tokens=1)
    )


@pytest.mark.parametrize("choice", ["auto", "required"])
@pytest.mark.parametrize("messages", [CONVERSATIONS[1], CONVERSATIONS[8]], ids=["ask", "answered"])
def test_a_count_with_tools_is_the_prompt_tokens_of_that_chat(
    shared_model: ic.TextModel, messages: list[MessageLike], choice: str
) -> None:
    counted = shared_model.count_tokens(messages, tools=TOOLS, tool_choice=choice)
    assert counted > shared_model.count_tokens(messages)  # the tools are described
    stream = shared_model.chat(messages, tools=TOOLS, tool_choice=choice, max_tokens=1)
    with pytest.raises(ic.GenerationError, match="ended before its JSON did"):
        list(stream)  # one token of the answer's JSON: the prompt is what counts here
    assert stream.metrics is not None and stream.metrics.prompt_tokens == counted


def test_a_prompt_read_again_is_counted_whole_with_its_cached_part(
    shared_model: ic.TextModel,
) -> None:
    prompt = "Tell me about the history of the city of Lyon, in France."
    first = shared_model.generate(prompt, max_tokens=1)
    second = shared_model.generate(prompt, max_tokens=1)
    assert prompt_tokens(first) == prompt_tokens(second) == shared_model.count_tokens(prompt)
    assert second.metrics is not None and second.metrics.cached_tokens > 0


def test_stats_on_the_command_line_say_what_the_cache_held(smollm2_path: str) -> None:
    result = cli("chat", "--stats", "-n", "4", stdin="Hello there!\nAnd again?\n")
    assert result.returncode == 0, result.stderr
    first, second = [line for line in result.stderr.splitlines() if line.startswith("prompt:")]
    assert "cached" not in first.split(",")[0]
    assert re.match(r"prompt: \d+ tokens \(\d+ cached\),", second), second  # the first turn's


@pytest.fixture(scope="module")
def bos_model(
    smollm2_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ic.TextModel]:
    """SmolLM2 whose vocabulary asks for a BOS before every prompt, as many models' do."""
    path = tmp_path_factory.mktemp("bos") / "smollm2-bos.gguf"
    shutil.copyfile(smollm2_path, path)
    reader = gguf.GGUFReader(path, "r+")
    field = reader.fields["tokenizer.ggml.add_bos_token"]
    field.parts[field.data[0]][0] = True
    del reader, field  # the memory map writes it back
    with ic.load(path, backend="llama_cpp", context_len=512, parallel_slots=1) as model:
        yield model


def test_a_count_holds_the_bos_the_model_adds(bos_model: ic.TextModel) -> None:
    prompt = "The capital of France is"
    counted = bos_model.count_tokens(prompt)
    assert counted == len(bos_model.tokenize(prompt)) + 1  # tokenize adds nothing
    assert counted == prompt_tokens(bos_model.generate(prompt, max_tokens=1))
    chat = CONVERSATIONS[2]
    assert bos_model.count_tokens(chat) == prompt_tokens(bos_model.chat(chat, max_tokens=1))


# -- ids are the server's own, and text comes back whole ------------------------------------


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS)
def test_tokenize_gives_the_servers_ids_and_detokenize_their_text(
    remote_relay: tuple[ic.TextModel, Relay], external_server: ExternalServer, text: str
) -> None:
    model, _ = remote_relay
    tokens = model.tokenize(text)
    assert [token.id for token in tokens] == raw_tokenize(external_server, text)
    assert "".join(token.text for token in tokens) == text
    assert model.detokenize([token.id for token in tokens]) == text


def test_a_character_split_over_tokens_is_on_the_token_that_completes_it(
    shared_model: ic.TextModel,
) -> None:
    tokens = shared_model.tokenize("party 🎉")
    assert len(tokens) == 4  # "party", then " " with the emoji's first bytes, then its last
    assert [token.text for token in tokens] == ["party", "", "", " 🎉"]  # as a stream has it
    assert shared_model.detokenize([tokens[1].id]) == " \ufffd"  # an unfinished character


SPLIT_PROMPTS = ["Emoji party: 🎉🎉🎉", "Chinese: " + "你好\uff0c" * 3]  # a full-width comma


@pytest.mark.parametrize("prompt", SPLIT_PROMPTS)
def test_tokenize_gives_the_tokens_a_stream_gives(shared_model: ic.TextModel, prompt: str) -> None:
    """Greedy SmolLM2 goes on in characters of several byte tokens each: its stream's
    tokens, ids and texts, are those tokenize gives for the text they make."""
    streamed = list(shared_model.generate(prompt, max_tokens=12))
    assert any(token.text == "" for token in streamed)  # characters split over tokens
    assert shared_model.tokenize("".join(token.text for token in streamed)) == streamed


def test_special_reads_the_markup_of_special_tokens_as_those_tokens(
    shared_model: ic.TextModel,
) -> None:
    markup = "<|im_start|>user"
    special = shared_model.tokenize(markup, special=True)
    assert special[0] == ic.Token(1, "<|im_start|>") and len(special) == 2
    plain = shared_model.tokenize(markup)
    assert 1 not in [token.id for token in plain]
    assert "".join(token.text for token in plain) == markup
    assert shared_model.detokenize([token.id for token in special]) == markup


def test_four_threads_count_and_tokenize_alike(shared_model: ic.TextModel) -> None:
    def work() -> tuple[list[int], list[int]]:
        counts = [shared_model.count_tokens(messages) for messages in CONVERSATIONS[:5]]
        ids = [token.id for text in TEXTS.values() for token in shared_model.tokenize(text)]
        return counts, ids

    expected = work()
    results: list[object] = [None] * 4

    def run(slot: int) -> None:
        results[slot] = work()

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [expected] * 4


def test_the_remote_backend_counts_what_it_sends(
    remote_relay: tuple[ic.TextModel, Relay],
) -> None:
    model, _ = remote_relay
    for messages in CONVERSATIONS[:3]:
        assert model.count_tokens(messages) == prompt_tokens(model.chat(messages, max_tokens=1))


# -- what is given is checked before anything is sent ---------------------------------------

BAD: list[tuple[str, Any, type[Exception], str]] = [
    ("tokenize", 5, TypeError, "text must be a string"),
    ("tokenize", b"bytes", TypeError, "text must be a string"),
    ("tokenize", "x" * (MAX_TOKENIZE_CHARS + 1), ic.InvalidValue, "past the limit"),
    ("detokenize", "abc", TypeError, "ids must be a sequence"),
    ("detokenize", [1.5], TypeError, "token ids must be integers"),
    ("detokenize", [True], TypeError, "token ids must be integers"),
    ("detokenize", [49152], ic.InvalidValue, "49152 is not in the model's vocabulary"),
    ("detokenize", [-1], ic.InvalidValue, "-1 is not in the model's vocabulary"),
    ("detokenize", [1] * (MAX_DETOKENIZE_IDS + 1), ic.InvalidValue, "the most taken at once"),
    ("detokenize", {1: 2}, TypeError, "ids must be a sequence"),
    ("count_tokens", 5, TypeError, "takes a prompt .a string. or a list of messages"),
    ("count_tokens", [5], TypeError, "a message must be a Message or a dict"),
    ("count_tokens", [], ValueError, "messages must not be empty"),
    ("count_tokens", "x" * (MAX_TOKENIZE_CHARS + 1), ic.InvalidValue, "past the limit"),
]


@pytest.mark.parametrize(("method", "value", "error", "message"), BAD)
def test_a_bad_argument_is_refused_before_anything_is_sent(
    remote_relay: tuple[ic.TextModel, Relay],
    method: str,
    value: Any,
    error: type[Exception],
    message: str,
) -> None:
    model, relay = remote_relay
    before = len(relay.requests())
    with pytest.raises(error, match=message):
        getattr(model, method)(value)
    assert len(relay.requests()) == before


def test_ids_come_in_any_sequence_of_integers(shared_model: ic.TextModel) -> None:
    ids = [token.id for token in shared_model.tokenize("Hello world")]
    for given in (tuple(ids), iter(ids), numpy.array(ids, dtype=numpy.int64)):
        assert shared_model.detokenize(given) == "Hello world"


def test_special_and_tools_are_checked_too(shared_model: ic.TextModel) -> None:
    with pytest.raises(TypeError, match="special must be True or False"):
        shared_model.tokenize("hi", special="yes")  # type: ignore[arg-type]
    with pytest.raises(ic.InvalidValue, match="tools go with a chat's messages") as caught:
        shared_model.count_tokens("hi", tools=TOOLS)
    assert caught.value.field == "tools"
    with pytest.raises(TypeError, match="max_tokenz"):
        shared_model.count_tokens("hi", max_tokenz=3)


def test_a_closed_model_counts_nothing(smollm2_path: str) -> None:
    model = ic.load(smollm2_path, backend="llama_cpp", context_len=256)
    model.close()
    for call in (
        lambda: model.tokenize("hi"),
        lambda: model.detokenize([1]),
        lambda: model.count_tokens("hi"),
    ):
        with pytest.raises(ic.ModelClosed):
            call()


def test_the_pinned_server_answers_an_id_outside_the_vocabulary_with_an_error(
    external_server: ExternalServer,
) -> None:
    """Why ids are checked here: llama-server itself only fails the request (a 500 naming
    its range check), where a better answer would say which id is wrong."""
    request = urllib.request.Request(
        f"{external_server.url}/detokenize",
        data=json.dumps({"tokens": [49152]}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 500
    assert external_server.running() and raw_tokenize(external_server, "hi")  # it serves on
