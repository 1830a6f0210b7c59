"""Why a stream ended, and stop strings, with the real llama-server and SmolLM2: a model
loaded here and the same model through the remote backend.

Each end is checked against what llama-server itself says of the same greedy request
(`stop_type`, `truncated`, its token ids), asked without streaming.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import inference_core as ic
from inference_core.testing.contracts import TOOLS
from inference_rocm.model import LlamaServerModel, request_body

from .external import KEY, ExternalServer
from .slots import wait_until_idle

pytestmark = pytest.mark.server

PROMPTS = {
    "english": "The capital of France is",
    "emoji": "Party emoji: 🎉🎉🎉 Party emoji:",
    "cjk": "日本の首都は",
}
HI = [ic.Message("user", "Hi")]  # SmolLM2 greets back and ends, in well under 100 tokens
# Greedy SmolLM2 counts on until the context is full: thousands of tokens.
ENDLESS = "Count from one to a thousand: 1, 2, 3,"
FREED = 10.0  # seconds for a slot to be free after a stop string; left running, 20 s and more
RUN = 40  # tokens of a greedy answer in which stop strings are tried


@pytest.fixture(scope="module")
def remote(external_server: ExternalServer) -> Iterator[ic.TextModel]:
    with ic.load(external_server.url, api_key=KEY) as model:
        yield model


@pytest.fixture(params=["local", "remote"])
def model(request: pytest.FixtureRequest, shared_model: ic.TextModel) -> ic.TextModel:
    if request.param == "local":
        return shared_model
    found: ic.TextModel = request.getfixturevalue("remote")
    return found


def server(model: ic.TextModel) -> LlamaServerModel[Any]:
    assert isinstance(model, LlamaServerModel)
    return model


def servers_answer(model: ic.TextModel, prompt: str, max_tokens: int) -> dict[str, Any]:
    """llama-server's own answer to the same greedy request, not streamed."""
    body = request_body(prompt, ic.GenerateConfig(max_tokens=max_tokens), stream=False)
    answer: dict[str, Any] = server(model).server.client.request("POST", "/completion", body)
    return answer


def rendered(model: ic.TextModel, messages: list[ic.Message]) -> str:
    payload = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
    prompt: str = server(model).server.client.request("POST", "/apply-template", payload)["prompt"]
    return prompt


REASON_OF = {"eos": "stop", "limit": "length"}  # llama-server's stop_type, as ours


def ids(tokens: list[ic.Token]) -> list[int]:
    return [token.id for token in tokens]


# -- each end, as llama-server says it --------------------------------------------------


def test_the_end_of_generation_is_stop(model: ic.TextModel) -> None:
    stream = model.chat(HI, max_tokens=200)
    tokens = list(stream)
    assert stream.finish_reason == "stop" and 0 < len(tokens) < 200
    answer = servers_answer(model, rendered(model, HI), 200)
    assert answer["stop_type"] == "eos" and ids(tokens) == answer["tokens"]


@pytest.mark.parametrize("max_tokens", [12, 13])
@pytest.mark.parametrize("kind", sorted(PROMPTS))
def test_max_tokens_is_length_as_the_server_says(
    model: ic.TextModel, kind: str, max_tokens: int
) -> None:
    """Split characters included: the emoji's ids come in groups the limit may cut."""
    stream = model.generate(PROMPTS[kind], max_tokens=max_tokens)
    tokens = list(stream)
    answer = servers_answer(model, PROMPTS[kind], max_tokens)
    assert ids(tokens) == answer["tokens"]
    assert stream.finish_reason == REASON_OF[answer["stop_type"]] == "length"


@pytest.mark.parametrize("kind", ["english", "emoji"])  # the emoji's: inside a split character
def test_a_stop_token_is_stop(model: ic.TextModel, kind: str) -> None:
    full = ids(list(model.generate(PROMPTS[kind], max_tokens=12)))
    where = next(n for n in range(1, len(full)) if full[n] not in full[:n])
    stream = model.generate(PROMPTS[kind], max_tokens=12, stop_tokens=[full[where]])
    assert ids(list(stream)) == full[:where] and stream.finish_reason == "stop"


def long_prompt(model: ic.TextModel, room: int) -> tuple[str, int]:
    """A prompt that leaves about `room` tokens of the context, and its length in tokens."""
    client = server(model).server.client
    words = "apple river " * ((model.context_len - room) // 2)
    count = len(client.request("POST", "/tokenize", {"content": words})["tokens"])
    words += "stone " * (model.context_len - room - count)
    return words, len(client.request("POST", "/tokenize", {"content": words})["tokens"])


def test_a_full_context_is_length_with_fewer_tokens_than_asked(model: ic.TextModel) -> None:
    prompt, length = long_prompt(model, room=40)
    assert model.context_len - 60 < length < model.context_len - 20
    stream = model.generate(prompt, max_tokens=200)
    tokens = list(stream)
    assert stream.finish_reason == "length" and stream.err() is None
    assert length + len(tokens) == model.context_len
    answer = servers_answer(model, prompt, 200)
    assert answer["stop_type"] == "limit" and answer["truncated"] is True
    # Not the same ids: a prompt read in another slot may part greedy ways at near ties.
    assert len(answer["tokens"]) == len(tokens)


def test_a_cancel_a_close_and_a_break_are_cancelled(model: ic.TextModel) -> None:
    cancelled = model.generate(ENDLESS, max_tokens=10_000)
    next(cancelled)
    cancelled.cancel()
    assert list(cancelled) == [] and cancelled.finish_reason == "cancelled"
    closed = model.generate(ENDLESS, max_tokens=10_000)
    for _ in closed:
        break
    assert closed.finish_reason is None, "left mid-way, the stream has not ended yet"
    closed.close()
    assert closed.finish_reason == "cancelled" and isinstance(closed.err(), ic.Cancelled)


def test_a_tool_call_is_tool_calls(model: ic.TextModel) -> None:
    stream = model.chat(
        [ic.Message("user", "What is the weather in Paris?")],
        tools=TOOLS,
        tool_choice="required",
        max_tokens=200,
    )
    stream.text()
    assert stream.tool_calls and stream.finish_reason == "tool_calls"


def test_an_error_leaves_no_finish_reason(model: ic.TextModel) -> None:
    stream = model.generate(ENDLESS, max_tokens=10_000, timeout=0.5)
    with pytest.raises(ic.GenerationTimeout):
        list(stream)
    assert stream.finish_reason is None and isinstance(model.err(), ic.GenerationTimeout)


# -- stop strings --------------------------------------------------------------------------


def stop_at_a_token(tokens: list[ic.Token]) -> tuple[int, str]:
    """A word's token after the first token, with the next token's text: a stop string
    (of a few letters, unlike other answers) whose first place is where that token begins."""
    text = "".join(token.text for token in tokens)
    offset = len(tokens[0].text)
    for index in range(1, len(tokens) - 1):
        stop = tokens[index].text + tokens[index + 1].text
        word = tokens[index].text.strip()
        if word.isalpha() and len(stop) >= 8 and text.find(stop) == offset:
            return index, stop
        offset += len(tokens[index].text)
    pytest.fail(f"no stop string to try in {text!r}")


def test_a_stop_string_ends_the_stream_and_the_ids_before_it_are_the_servers(
    model: ic.TextModel,
) -> None:
    prompt = PROMPTS["english"]
    tokens = list(model.generate(prompt, max_tokens=RUN))
    where, stop = stop_at_a_token(tokens)
    stream = model.generate(prompt, max_tokens=RUN, stop=stop)
    got = list(stream)
    assert got == tokens[:where] and stop not in "".join(token.text for token in got)
    assert ids(got) == servers_answer(model, prompt, RUN)["tokens"][:where]
    assert stream.finish_reason == "stop"
    assert stream.err() is None and model.err() is None


def test_a_stop_string_in_a_split_character_leaves_all_its_tokens_out(
    model: ic.TextModel,
) -> None:
    """SmolLM2 writes " 🎉" as three tokens: " " with the emoji's first two bytes (text ""),
    its third byte (""), and its last, which carries the text. A stop string "🎉" begins
    inside that character's tokens: all three are left out, the space with them."""
    prompt = PROMPTS["emoji"]
    tokens = list(model.generate(prompt, max_tokens=RUN))
    last = next(index for index, token in enumerate(tokens) if "🎉" in token.text)
    first = last
    while first and not tokens[first - 1].text:
        first -= 1
    assert last - first >= 2, f"the emoji came in {last - first + 1} token(s)"
    stream = model.generate(prompt, max_tokens=RUN, stop="🎉")
    assert list(stream) == tokens[:first] and stream.finish_reason == "stop"


def test_a_stop_string_frees_the_servers_slot_at_once(shared_model: ic.TextModel) -> None:
    stream = shared_model.generate(ENDLESS, max_tokens=100_000, stop=", 9,")
    assert stream.text().endswith(" 8") and stream.finish_reason == "stop"
    wait_until_idle(shared_model, FREED)
    assert stream.finish_reason == "stop"  # the stream, still held, changed nothing


def test_stop_strings_and_finish_reasons_in_four_threads(model: ic.TextModel) -> None:
    tokens = list(model.generate(PROMPTS["english"], max_tokens=RUN))
    where, stop = stop_at_a_token(tokens)
    results: list[object] = [None] * 4

    def work(slot: int) -> None:
        stopped = model.generate(PROMPTS["english"], max_tokens=RUN, stop=stop)
        ended = model.chat(HI, max_tokens=200)
        results[slot] = (list(stopped), stopped.finish_reason, ended.text(), ended.finish_reason)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    greeting = model.chat(HI, max_tokens=200).text()
    assert results == [(tokens[:where], "stop", greeting, "stop")] * 4


def test_async_and_batch_say_why_each_ended(model: ic.TextModel) -> None:
    prompt, _ = long_prompt(model, room=40)
    greeting = rendered(model, HI)
    tokens = list(model.generate(PROMPTS["english"], max_tokens=RUN))
    where, stop = stop_at_a_token(tokens)
    prompts = [greeting, prompt, PROMPTS["english"]]
    expected = ["stop", "length", "stop"]
    batch = model.batch_generate(prompts, max_tokens=200, stop=[stop])
    assert [result.finish_reason for result in batch] == expected
    assert list(batch[2].tokens) == tokens[:where]

    async def run() -> tuple[list[object], list[object]]:
        streams = [model.agenerate(p, max_tokens=200, stop=[stop]) for p in prompts]
        for stream in streams:
            await stream.text()
        results = await model.abatch_generate(prompts, max_tokens=200, stop=[stop])
        return [s.finish_reason for s in streams], [r.finish_reason for r in results]

    assert asyncio.run(run()) == (expected, expected)
