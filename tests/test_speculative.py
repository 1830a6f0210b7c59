"""Speculative decoding and the KV cache's type, through `load` and the command line,
against the real llama-server: n-gram drafting on SmolLM2, an f16 copy of SmolLM2 drafted
for by the packaged Q4_1, and drafts llama-server cannot use, refused by name."""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import pytest

import inference_core as ic
from inference_rocm import drafting
from inference_rocm.flags import server_args

from .gguf_copies import f16_copy, other_vocabulary_copy
from .procs import children
from .test_cli import cli

pytestmark = pytest.mark.server

# A task that copies much of its prompt, with no near tie in its greedy answer.
PARAGRAPH = (
    "The river rises in the hills above the town, runs past the mill and the old stone "
    "bridge, and reaches the sea after forty miles. In spring it floods the meadows; in "
    "summer children swim in it below the bridge; in autumn the mill wheel turns again."
)
COPYING = f"Text: {PARAGRAPH}\nThe same text, word for word: {PARAGRAPH[:60]}"
TOKENS = 48


def greedy_ids(model: ic.TextModel, prompt: str) -> tuple[list[int], ic.GenerateMetrics]:
    stream = model.generate(prompt, max_tokens=TOKENS, temperature=0.0)
    ids = [token.id for token in stream]
    assert stream.metrics is not None
    return ids, stream.metrics


@pytest.fixture(scope="module")
def f16_target(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """SmolLM2 with its weights dequantized to f16: four times the bytes to read a token."""
    return f16_copy(smollm2_path, tmp_path_factory.mktemp("f16") / "smollm2-f16.gguf")


def test_ngram_drafting_keeps_the_greedy_answer_and_drafts(
    smollm2_path: str, shared_model: ic.TextModel
) -> None:
    plain, _ = greedy_ids(shared_model, COPYING)
    with ic.load(smollm2_path, backend="llama_cpp", context_len=2048, speculative="ngram") as model:
        drafted, metrics = greedy_ids(model, COPYING)
    assert drafted == plain
    assert metrics.drafted_tokens > 0
    assert 0 < metrics.accepted_tokens <= metrics.drafted_tokens


def test_a_draft_model_keeps_the_greedy_answer_and_its_guesses_are_counted(
    f16_target: str, smollm2_path: str
) -> None:
    prompt = "Once upon a time, in a small village by the sea,"
    with ic.load(f16_target, backend="llama_cpp", context_len=1024) as model:
        plain, alone = greedy_ids(model, prompt)
    assert (alone.drafted_tokens, alone.accepted_tokens) == (0, 0)
    with ic.load(
        f16_target, backend="llama_cpp", context_len=1024, draft_model=smollm2_path, draft_max=4
    ) as model:
        drafted, metrics = greedy_ids(model, prompt)
    assert drafted == plain
    assert metrics.drafted_tokens > 0 and metrics.accepted_tokens > 0


def test_a_draft_whose_tokens_differ_is_refused_and_its_server_stopped(
    smollm2_path: str, tmp_path: Path
) -> None:
    other = tmp_path / "other-vocabulary.gguf"
    token = other_vocabulary_copy(smollm2_path, other, 1000)
    before = children()
    with pytest.raises(ic.IncompatibleDraftModel, match="vocab") as refused:
        ic.load(smollm2_path, backend="llama_cpp", context_len=512, draft_model=other)
    assert refused.value.path == str(other)
    assert "speculative='ngram'" in str(refused.value)
    assert token >= 1000
    assert children() <= before


def test_a_draft_whose_header_shows_another_vocabulary_is_refused_before_any_start(
    smollm2_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "adds-bos.gguf"
    other.write_bytes(Path(smollm2_path).read_bytes())
    reader = gguf.GGUFReader(other, "r+")
    field = reader.fields["tokenizer.ggml.add_bos_token"]
    field.parts[field.data[0]][0] = not bool(field.parts[field.data[0]][0])
    del reader, field  # the memory map writes it back
    started: list[object] = []
    monkeypatch.setattr("inference_rocm.server.LlamaServer._spawn", started.append)
    with pytest.raises(ic.IncompatibleDraftModel, match="adds a BOS token: False vs True"):
        ic.load(smollm2_path, backend="llama_cpp", draft_model=other)
    assert started == []


def test_a_draft_that_is_not_a_model_is_an_invalid_model_file(
    smollm2_path: str, tmp_path: Path
) -> None:
    broken = tmp_path / "draft.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(ic.InvalidModelFile, match="the draft model"):
        ic.load(smollm2_path, backend="llama_cpp", draft_model=broken)


def test_a_quantized_cache_serves_and_keeps_the_greedy_answer(
    smollm2_path: str, shared_model: ic.TextModel
) -> None:
    prompt = "The capital of France is"
    plain = [token.id for token in shared_model.generate(prompt, max_tokens=8)]
    with ic.load(smollm2_path, backend="llama_cpp", context_len=2048, cache_type="q8_0") as model:
        assert [token.id for token in model.generate(prompt, max_tokens=8)][:3] == plain[:3]


def test_the_command_line_drafts_and_says_how_much(smollm2_path: str) -> None:
    result = cli("run", "--stats", "--speculative", "ngram", "-n", str(TOKENS), "-t", "0", COPYING)
    assert result.returncode == 0, result.stderr
    assert "reaches the sea after forty miles. In spring" in result.stdout  # copied
    assert "drafted:" in result.stderr and "accepted" in result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--speculative", "draft"], "speculative='draft' needs draft_model"),
        (["--draft-max", "4"], "draft_max and draft_min are for"),
        (["--speculative", "ngram", "--draft-max", "2", "--draft-min", "3"], "above draft_max"),
    ],
)
def test_the_command_line_refuses_speculation_that_does_not_add_up(
    options: list[str], message: str
) -> None:
    result = cli("run", *options, "hello")
    assert result.returncode == 2
    assert message in result.stderr


def test_a_bad_cache_type_on_the_command_line_lists_the_types() -> None:
    result = cli("run", "--cache-type", "q5_1", "hello")
    assert result.returncode == 2
    assert "f16" in result.stderr and "q4_0" in result.stderr


def test_flags_name_each_kind_of_drafter_as_llama_server_does(tmp_path: Path) -> None:
    draft = tmp_path / "draft.gguf"
    ngram = server_args(ic.LoadConfig(speculative="ngram", draft_max=16), None)
    assert ngram[ngram.index("--spec-type") + 1] == "ngram-mod"
    # llama-server's n-gram drafter guesses nothing shorter than its minimum (48)
    assert ngram[ngram.index("--spec-ngram-mod-n-max") + 1] == "16"
    assert ngram[ngram.index("--spec-ngram-mod-n-min") + 1] == "16"
    drafted = server_args(ic.LoadConfig(draft_model=draft, draft_max=6, draft_min=2), None)
    assert drafted[drafted.index("--spec-type") + 1] == "draft-simple"
    assert drafted[drafted.index("--spec-draft-model") + 1] == str(draft)
    assert drafted[drafted.index("--spec-draft-n-max") + 1] == "6"
    assert drafted[drafted.index("--spec-draft-n-min") + 1] == "2"
    cache = server_args(ic.LoadConfig(cache_type="q4_0"), None)
    assert cache[cache.index("--cache-type-k") + 1] == cache[cache.index("--cache-type-v") + 1]
    assert "q4_0" in cache
    assert not {"--spec-type", "--cache-type-k"} & set(server_args(ic.LoadConfig(), None))


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"cache_type": "q8_0", "extra_args": ("-ctk", "q4_0")}, "cache_type"),
        ({"cache_type": "q8_0", "extra_args": ("--flash-attn", "off")}, "cache_type"),
        ({"cache_type": "q4_0", "extra_args": ("-fa=off",)}, "cache_type"),
        ({"speculative": "ngram", "extra_args": ("--spec-type", "ngram-simple")}, "speculative"),
    ],
)
def test_a_field_and_a_flag_of_the_user_for_one_setting_clash(
    config: dict[str, object], field: str
) -> None:
    with pytest.raises(ic.InvalidValue) as clash:
        server_args(ic.LoadConfig(**config), None)  # type: ignore[arg-type]
    assert clash.value.field == field


def test_a_quantized_cache_beside_flash_attention_on_is_passed(tmp_path: Path) -> None:
    args = server_args(ic.LoadConfig(cache_type="q8_0", extra_args=("-fa", "on")), None)
    assert args[-2:] == ["-fa", "on"] and "q8_0" in args


def test_a_draft_model_for_a_folder_of_models_is_refused_before_any_start(
    smollm2_path: str, tmp_path: Path
) -> None:
    (tmp_path / "smollm2.gguf").symlink_to(smollm2_path)
    before = children()
    result = cli("serve", "--models-dir", str(tmp_path), "--draft-model", smollm2_path)
    assert result.returncode != 0
    assert "a draft model drafts for one model" in result.stderr
    assert children() <= before


def test_n_gram_drafting_that_fails_to_start_is_not_called_a_vocabulary_mismatch() -> None:
    said = "0.00.543 E srv    load_model: failed to initialize speculative decoding context: odd"
    error = drafting.speculation_failure(said, None)
    assert isinstance(error, ic.ModelLoadError)
    assert not isinstance(error, ic.IncompatibleDraftModel)
    assert "(odd)" in str(error) and "speculative='off'" in str(error)
    assert drafting.speculation_failure("all is well", None) is None
