"""Thinking kept apart, with the real llama-server and SmolLM2 under a ChatML template
whose generation prompt opens a `<think>` block (tests/templates/think.jinja, written
here), loaded with `chat_template=` and through the remote backend from a server
started by hand with that template.

What we deliver is checked against what llama-server itself does with the same chat:
its ids against a non-streamed `/completion` of the same request (every id, the
closing tag's included, in order), and the split against its own chat endpoint,
`/v1/chat/completions`, with the same budget (its `reasoning_content` and `content`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import inference_core as ic
from inference_core.content import content_text
from inference_core.testing import TextModelContract
from inference_core.testing.contracts import TOOLS
from inference_rocm import rendering, thinking
from inference_rocm.model import LlamaServerModel, request_body

from .external import KEY, ExternalServer
from .test_cli import assert_one_line_error, cli

pytestmark = pytest.mark.server

TEMPLATE = Path(__file__).parent / "templates" / "think.jinja"
QUESTIONS = [
    [ic.Message("user", "Write a story about a cat.")],
    [ic.Message("user", "What is the capital of France?")],
    [ic.Message("system", "Be brief."), ic.Message("user", "Describe the sea.")],
    [ic.Message("user", "How do birds fly?")],
]
BUDGET = 8
CLOSING = 3  # SmolLM2 reads "</think>" as three tokens: "</", "think", ">"
TAGS = ("<think>", "</think>")
# SmolLM2 ends its turn inside the thinking here, before its budget runs out
ENDS_THINKING = [ic.Message("system", "Be brief."), ic.Message("user", "Name three colours.")]


@pytest.fixture(scope="module")
def local(smollm2_path: str) -> Iterator[ic.TextModel]:
    with ic.load(
        smollm2_path,
        backend="llama_cpp",
        context_len=1024,
        parallel_slots=4,
        chat_template=str(TEMPLATE),
    ) as model:
        yield model


@pytest.fixture(scope="module")
def external_thinker(
    llama_server_binary: str, smollm2_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExternalServer]:
    log = tmp_path_factory.mktemp("external-think") / "server.log"
    args = ("--ctx-size", "4096", "--parallel", "4", "--jinja", "--chat-template-file")
    server = ExternalServer(llama_server_binary, smollm2_path, KEY, *args, str(TEMPLATE), log=log)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote(external_thinker: ExternalServer) -> Iterator[ic.TextModel]:
    with ic.load(external_thinker.url, api_key=KEY) as model:
        yield model


@pytest.fixture(params=["local", "remote"])
def model(request: pytest.FixtureRequest) -> ic.TextModel:
    found: ic.TextModel = request.getfixturevalue(request.param)
    return found


def served(model: ic.TextModel) -> LlamaServerModel[Any]:
    assert isinstance(model, LlamaServerModel)
    return model


def channels(tokens: list[ic.Token]) -> list[str]:
    return [token.channel for token in tokens]


def split_at(tokens: list[ic.Token]) -> int:
    """How many reasoning tokens lead, after checking that only content follows them."""
    thought = channels(tokens).count("reasoning")
    assert channels(tokens) == ["reasoning"] * thought + ["content"] * (len(tokens) - thought)
    return thought


# -- what the template is and does ---------------------------------------------------------


def test_the_thinking_template_declares_reasoning_and_the_models_own_does_not(
    model: ic.TextModel, shared_model: ic.TextModel
) -> None:
    assert model.capabilities.reasoning
    assert model.capabilities.reasoning_tags == ("<think>", "</think>")
    assert not shared_model.capabilities.reasoning
    assert shared_model.capabilities.reasoning_tags == ()
    with pytest.raises(ic.UnsupportedOption) as refused:
        shared_model.chat(QUESTIONS[0], think=True)
    assert refused.value.option == "think"
    plain = shared_model.chat(QUESTIONS[1], max_tokens=6, think=False)
    assert set(channels(list(plain))) == {"content"}


def test_the_tags_are_found_by_rendering_with_thinking_on_and_off(model: ic.TextModel) -> None:
    client = served(model).server.client
    assert thinking.detect(client) == thinking.Tags("<think>", "</think>", 3, CLOSING)
    on = rendering.render(client, QUESTIONS[0], kwargs={"enable_thinking": True})
    assert on.endswith("<|im_start|>assistant\n<think>\n")


# -- a budget: 1 to BUDGET reasoning tokens, then the answer ---------------------------------


@pytest.mark.parametrize("question", range(len(QUESTIONS)))
def test_a_budget_gives_some_thinking_then_the_answer(model: ic.TextModel, question: int) -> None:
    stream = model.chat(QUESTIONS[question], reasoning_budget=BUDGET, max_tokens=BUDGET + 12)
    tokens = list(stream)
    thought = split_at(tokens)
    assert 1 <= thought <= BUDGET and thought < len(tokens)
    assert "".join(token.text for token in tokens[thought - CLOSING : thought]) == "</think>"
    text, reasoning = stream.text(), stream.reasoning_text()
    assert not any(tag in text or tag in reasoning for tag in TAGS)
    assert text == "".join(token.text for token in tokens[thought:])
    assert reasoning and stream.finish_reason in ("stop", "length")


def test_the_ids_are_those_llama_server_generates_for_the_same_request(
    model: ic.TextModel,
) -> None:
    """Every id in order, the closing tag's included, against the same `/completion`
    request not streamed; and the split against llama-server's own chat endpoint, whose
    budget also counts the newline the generation prompt puts after "<think>"."""
    config = ic.GenerateConfig(reasoning_budget=BUDGET, max_tokens=24)
    stream = model.chat(QUESTIONS[0], config)
    tokens = list(stream)
    client = served(model).server.client
    prompt = rendering.render(client, QUESTIONS[0])
    tags = thinking.detect(client)
    assert tags is not None
    body = {
        **request_body(prompt, config, stream=False),
        **thinking.budget_fields(tags, config, opened=True),
    }
    assert [token.id for token in tokens] == client.request("POST", "/completion", body)["tokens"]
    chat = client.request(
        "POST",
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": QUESTIONS[0][0].content}],
            "max_tokens": 24,
            "temperature": 0,
            "reasoning_budget_tokens": BUDGET - CLOSING + 1,
        },
    )["choices"][0]["message"]
    assert stream.reasoning_text() == chat["reasoning_content"].strip()
    assert stream.text().lstrip() == chat["content"]


def test_an_answer_that_ends_inside_its_thinking_has_no_text(model: ic.TextModel) -> None:
    stream = model.chat(ENDS_THINKING, reasoning_budget=BUDGET, max_tokens=BUDGET + 12)
    tokens = list(stream)
    assert split_at(tokens) == len(tokens) < BUDGET
    assert stream.text() == "" and stream.finish_reason == "stop"


def test_a_budget_too_small_for_the_closing_tag_is_refused_from_the_stream(
    model: ic.TextModel,
) -> None:
    stream = model.chat(QUESTIONS[1], reasoning_budget=CLOSING - 1, max_tokens=4)
    with pytest.raises(ic.InvalidValue, match="at least 3") as refused:
        next(stream)
    assert refused.value.field == "reasoning_budget"
    assert stream.err() is refused.value and model.err() is refused.value
    assert split_at(list(model.chat(QUESTIONS[1], reasoning_budget=CLOSING, max_tokens=6))) == 3


# -- no thinking, and thinking without a budget -------------------------------------------------


@pytest.mark.parametrize("off", [{"think": False}, {"reasoning_budget": 0}])
def test_think_false_gives_no_reasoning_tokens(model: ic.TextModel, off: dict[str, Any]) -> None:
    stream = model.chat(QUESTIONS[0], max_tokens=8, **off)
    assert set(channels(list(stream))) == {"content"}
    assert stream.reasoning_text() == "" and not any(tag in stream.text() for tag in TAGS)
    assert stream.metrics is not None
    assert stream.metrics.prompt_tokens == model.count_tokens(QUESTIONS[0], **off)
    assert model.count_tokens(QUESTIONS[0], **off) == model.count_tokens(QUESTIONS[0]) + 4


def test_unbudgeted_thinking_runs_until_max_tokens(model: ic.TextModel) -> None:
    stream = model.chat(QUESTIONS[0], think=True, max_tokens=6)
    assert channels(list(stream)) == ["reasoning"] * 6
    assert stream.text() == "" and stream.reasoning_text() and stream.finish_reason == "length"


def test_a_schema_turns_thinking_off_and_think_true_with_one_is_refused(
    model: ic.TextModel,
) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    stream = model.chat(QUESTIONS[1], json_schema=schema, max_tokens=24)
    assert set(channels(list(stream))) == {"content"} and '"ok"' in stream.text()
    with pytest.raises(ic.UnsupportedOption) as refused:
        list(model.chat(QUESTIONS[1], json_schema=schema, think=True))
    assert refused.value.option == "think"


# -- earlier thinking goes back to the template ------------------------------------------------


def test_a_second_turn_passes_the_first_turns_thinking_back(model: ic.TextModel) -> None:
    first = model.chat(QUESTIONS[1], reasoning_budget=BUDGET, max_tokens=16)
    answer, reasoning = first.text().strip(), first.reasoning_text()
    bare = [*QUESTIONS[1], ic.Message("assistant", answer), ic.Message("user", "And Spain?")]
    kept = [*bare[:1], ic.Message("assistant", answer, reasoning=reasoning), bare[2]]
    rendered = rendering.render(served(model).server.client, kept)
    assert f"<|im_start|>assistant\n<think>\n{reasoning}\n</think>\n\n{answer}" in rendered
    assert model.count_tokens(kept) == len(model.tokenize(rendered, special=True))
    assert model.count_tokens(kept) > model.count_tokens(bare)
    second = model.chat(kept, reasoning_budget=BUDGET, max_tokens=12)
    assert split_at(list(second)) >= 1
    assert second.metrics is not None
    assert second.metrics.prompt_tokens == model.count_tokens(kept, reasoning_budget=BUDGET)


# -- stop strings, cancel, timeout, threads, asyncio ---------------------------------------------


def test_a_stop_string_ends_the_answer_not_the_thinking(model: ic.TextModel) -> None:
    unstopped = model.chat(QUESTIONS[0], reasoning_budget=BUDGET, max_tokens=20)
    whole = list(unstopped)
    thought = split_at(whole)
    assert "cat" in unstopped.reasoning_text() and "cat" in unstopped.text()
    stream = model.chat(QUESTIONS[0], reasoning_budget=BUDGET, max_tokens=20, stop=["cat"])
    tokens = list(stream)
    assert tokens == whole[: len(tokens)] and len(tokens) > thought  # all the thinking
    assert "cat" not in stream.text() and stream.finish_reason == "stop"


def test_a_cancel_during_the_thinking_ends_the_stream(model: ic.TextModel) -> None:
    stream = model.chat(QUESTIONS[0], think=True, max_tokens=200)
    assert next(stream).channel == "reasoning"
    stream.cancel()
    assert list(stream) == [] and isinstance(stream.err(), ic.Cancelled)
    assert stream.finish_reason == "cancelled" and stream.text() == ""
    assert split_at(list(model.chat(QUESTIONS[1], reasoning_budget=BUDGET, max_tokens=10))) >= 1


def test_a_timeout_during_the_thinking_raises(model: ic.TextModel) -> None:
    stream = model.chat(QUESTIONS[0], think=True, max_tokens=100_000, timeout=1.0)
    with pytest.raises(ic.GenerationTimeout):
        list(stream)
    assert isinstance(model.err(), ic.GenerationTimeout) and stream.finish_reason is None


def test_four_threads_each_get_their_own_split(model: ic.TextModel) -> None:
    alone = [
        [t.id for t in model.chat(q, reasoning_budget=BUDGET, max_tokens=14)] for q in QUESTIONS
    ]
    together: dict[int, list[ic.Token]] = {}

    def ask(index: int) -> None:
        together[index] = list(model.chat(QUESTIONS[index], reasoning_budget=BUDGET, max_tokens=14))

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [[t.id for t in together[index]] for index in range(4)] == alone
    assert all(1 <= split_at(together[index]) <= BUDGET for index in range(4))


def test_the_async_stream_splits_as_the_sync_one(model: ic.TextModel) -> None:
    sync = model.chat(QUESTIONS[2], reasoning_budget=BUDGET, max_tokens=14)
    expected = list(sync)

    async def run() -> tuple[list[ic.Token], str, str]:
        stream = model.achat(QUESTIONS[2], reasoning_budget=BUDGET, max_tokens=14)
        tokens = [token async for token in stream]
        return tokens, await stream.text(), await stream.reasoning_text()

    tokens, text, reasoning = asyncio.run(run())
    assert tokens == expected and (text, reasoning) == (sync.text(), sync.reasoning_text())


# -- the command line ------------------------------------------------------------------------


def test_run_shows_the_thinking_on_stderr_and_the_answer_on_stdout(local: ic.TextModel) -> None:
    stream = local.chat(QUESTIONS[0], reasoning_budget=BUDGET, max_tokens=20)
    stream.text()
    result = cli(
        "run", "--chat-template", str(TEMPLATE), "--reasoning-budget", "8", "-n", "20",
        content_text(QUESTIONS[0][0].content),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == stream.text().lstrip() + "\n"
    assert stream.reasoning_text() in result.stderr and "the answer was cut" in result.stderr
    assert not any(tag in result.stdout for tag in TAGS)


def test_run_json_lines_carry_each_tokens_channel(local: ic.TextModel) -> None:
    expected = list(local.chat(QUESTIONS[0], reasoning_budget=BUDGET, max_tokens=12))
    result = cli(
        "run", "--chat-template", str(TEMPLATE), "--reasoning-budget", "8", "-n", "12",
        "--json", content_text(QUESTIONS[0][0].content),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1] == {"finish_reason": "length"}
    assert [(line["id"], line["channel"]) for line in lines[:-1]] == [
        (token.id, token.channel) for token in expected
    ]


def test_chat_without_thinking_and_with_earlier_thinking_passed_back(local: ic.TextModel) -> None:
    off = cli(
        "chat", "--chat-template", str(TEMPLATE), "--no-think", "-n", "8",
        stdin="Describe the sea.\n",
    )  # fmt: skip
    assert off.returncode == 0, off.stderr
    assert off.stdout == local.chat(QUESTIONS[2][1:], think=False, max_tokens=8).text() + "\n"
    assert "</think>" not in off.stderr
    turns = cli(
        "chat", "--chat-template", str(TEMPLATE), "--reasoning-budget", "8", "-n", "16",
        "--stats", stdin="Describe the sea.\nAnd the sky?\n",
    )  # fmt: skip
    assert turns.returncode == 0, turns.stderr
    first = local.chat(QUESTIONS[2][1:], reasoning_budget=BUDGET, max_tokens=16)
    history = [
        *QUESTIONS[2][1:],
        ic.Message("assistant", first.text().strip(), reasoning=first.reasoning_text()),
        ic.Message("user", "And the sky?"),
    ]
    counted = local.count_tokens(history, reasoning_budget=BUDGET)
    prompts = [line for line in turns.stderr.splitlines() if line.startswith("prompt: ")]
    assert len(prompts) == 2 and prompts[1].startswith(f"prompt: {counted} tokens")


def test_think_on_a_model_that_cannot_is_one_line_of_error() -> None:
    assert_one_line_error(cli("run", "--think", "-n", "4", "Hi"), "think")


def test_the_kits_channel_contracts_hold(model: ic.TextModel) -> None:
    kit = TextModelContract()
    kit.test_declared_reasoning_is_kept_apart_from_the_answer(model)
    kit.test_think_false_gives_no_reasoning_tokens(model)


def test_generic_tools_turn_thinking_off(model: ic.TextModel) -> None:
    stream = model.chat(QUESTIONS[1], tools=TOOLS, tool_choice="required", max_tokens=60)
    assert set(channels(list(stream))) == {"content"} and stream.err() is None
    assert stream.tool_calls and stream.finish_reason == "tool_calls"
