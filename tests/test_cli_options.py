"""Each option of the command line, through what its user sees: what reaches the server
(the requests, read off a relay before the real llama-server; the server's command line,
as --debug shows it), the exit status and the output."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .external import KEY, ExternalServer
from .procs import free_port
from .relay import Relay
from .test_build import fake_build
from .test_cli import GREEDY, assert_one_line_error, cli, install_plugin

server = pytest.mark.server

PROMPT = "The capital of France is"
KEYED = {"LLAMA_API_KEY": KEY}
# Option, the request field it sets and a value unlike the default.
SAMPLING = (
    ("--temperature", "temperature", 0.7),
    ("--top-k", "top_k", 17),
    ("--top-p", "top_p", 0.8),
    ("--min-p", "min_p", 0.1),
    ("--repeat-penalty", "repeat_penalty", 1.3),
    ("--seed", "seed", 42),
)


@pytest.fixture
def relay(external_server: ExternalServer) -> Iterator[Relay]:
    front = Relay(external_server.port)
    yield front
    front.close()


def completions(relay: Relay) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in relay.requests() if r.path == "/completion"]


def server_argv(stderr: str) -> list[str]:
    """The llama-server command line the CLI logged with --debug."""
    (line,) = [line for line in stderr.splitlines() if "inference_rocm.server: starting " in line]
    return line.split("starting ", 1)[1].split()


# -- sampling ----------------------------------------------------------------------------


@server
@pytest.mark.parametrize("command", ["run", "chat"])
def test_each_sampling_option_reaches_the_server(relay: Relay, command: str) -> None:
    options = [word for flag, _, value in SAMPLING for word in (flag, str(value))]
    prompt = [PROMPT] if command == "run" else []
    result = cli(
        command, "--model", relay.url, *options, "-n", "4", *prompt,
        stdin=f"{PROMPT}\n", env=KEYED,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (body,) = completions(relay)
    assert {field: body[field] for _, field, _ in SAMPLING} == {
        field: value for _, field, value in SAMPLING
    }


@server
def test_the_same_seed_samples_the_same_answer_and_another_seed_another(
    external_server: ExternalServer,
) -> None:
    def sample(seed: int) -> str:
        result = cli(
            "run", "--model", external_server.url, "--temperature", "1.5", "--seed", str(seed),
            "-n", "24", "Once upon a time", env=KEYED,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = sample(7)
    assert sample(7) == first
    assert sample(8) != first


# -- loading -----------------------------------------------------------------------------


@server
@pytest.mark.parametrize(("given", "flag"), [("7", "7"), ("auto", None)])
def test_gpu_layers_threads_and_ctx_reach_llama_servers_command_line(
    smollm2_path: str, given: str, flag: str | None
) -> None:
    result = cli(
        "run", "--debug", "--gpu-layers", given, "--threads", "1", "--ctx", "256",
        "-n", "1", "Hi",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    argv = server_argv(result.stderr)
    assert argv[argv.index("--threads") + 1] == "1"
    assert argv[argv.index("--ctx-size") + 1] == "256"
    if flag is None:  # auto: llama-server fits the layers to the memory itself
        assert "--n-gpu-layers" not in argv
    else:
        assert argv[argv.index("--n-gpu-layers") + 1] == flag


@server
def test_cache_type_and_a_draft_model_reach_llama_servers_command_line(
    smollm2_path: str,
) -> None:
    result = cli(
        "run", "--debug", "--ctx", "256", "--cache-type", "q4_0", "--draft-model",
        smollm2_path, "--draft-max", "5", "-n", "1", "Hi",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    argv = server_argv(result.stderr)
    assert argv[argv.index("--cache-type-k") + 1] == argv[argv.index("--cache-type-v") + 1]
    assert argv[argv.index("--cache-type-v") + 1] == "q4_0"
    assert argv[argv.index("--spec-type") + 1] == "draft-simple"  # a draft model: drafting
    assert argv[argv.index("--spec-draft-model") + 1] == smollm2_path
    assert argv[argv.index("--spec-draft-n-max") + 1] == "5"


@server
def test_embed_takes_ngram_drafting_and_refuses_a_draft_model(smollm2_path: str) -> None:
    result = cli("embed", "--debug", "--ctx", "256", "--speculative", "ngram", "Hi")
    assert result.returncode == 0, result.stderr
    argv = server_argv(result.stderr)
    assert argv[argv.index("--spec-type") + 1] == "ngram-mod"
    refused = cli("embed", "--ctx", "256", "--draft-model", smollm2_path, "Hi")
    assert refused.returncode == 2  # before any start: llama-server would abort
    assert "--draft-model" in refused.stderr and "embeddings" in refused.stderr


@pytest.mark.parametrize(
    "command", [("run", "Hi"), ("chat",), ("embed", "Hi")], ids=["run", "chat", "embed"]
)
def test_backend_names_the_backend_that_loads(command: tuple[str, ...]) -> None:
    result = cli(*command, "-b", "nosuch", stdin="Hi\n")
    assert_one_line_error(result, "no backend named 'nosuch'")


def test_rpc_names_the_workers_the_model_is_split_over() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    result = cli("run", "--rpc", nobody, "Hi")
    assert_one_line_error(result, f"cannot reach the RPC worker {nobody}")


# -- what is refused before anything loads -------------------------------------------------


@pytest.mark.parametrize("given", ["", "-"], ids=["argument", "stdin"])
def test_an_empty_prompt_is_a_usage_error(given: str) -> None:
    result = cli("run", given, stdin="\n")
    assert (result.returncode, result.stderr) == (2, "inference run: error: the prompt is empty\n")


def test_a_schema_that_is_json_but_not_an_object_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text("42")
    for given in ("[1, 2]", str(tmp_path / "schema.json")):
        result = cli("run", "--json-schema", given, "hi")
        assert result.returncode == 2
        assert "argument --json-schema: a JSON schema is an object" in result.stderr


def test_tools_that_are_not_a_list_are_a_usage_error() -> None:
    result = cli("chat", "--tools", '{"type": "function"}', stdin="hi\n")
    assert result.returncode == 2
    assert "argument --tools: tools are a JSON list" in result.stderr


def test_a_grammar_file_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gbnf"
    result = cli("run", "--grammar", str(missing), "hi")
    assert result.returncode == 2
    assert f"argument --grammar: cannot read {missing}: No such file or directory" in (
        result.stderr
    )


# -- other commands ----------------------------------------------------------------------


def test_version_is_the_packages() -> None:
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"inference {importlib.metadata.version('inference-core')}\n"


def test_models_given_a_file_asks_for_its_folder(smollm2_path: str) -> None:
    result = cli("models", smollm2_path)
    assert_one_line_error(result, smollm2_path, "is not a folder; give the folder to search")


def test_backends_says_when_none_is_registered_and_names_the_filter() -> None:
    result = cli("backends", env={"INFERENCE_BACKENDS": "nonexistent"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "no backends registered (INFERENCE_BACKENDS=nonexistent limits which backends load)\n"
    )


def test_a_bug_is_an_internal_error_whose_traceback_needs_debug(tmp_path: Path) -> None:
    env = install_plugin(
        tmp_path,
        "buggy_plugin",
        """
        import inference_core

        def trip(args):
            raise RuntimeError("the plugin tripped")

        @inference_core.hookimpl
        def register_commands(subparsers):
            subparsers.add_parser("trip").set_defaults(handler=trip)
        """,
    )
    result = cli("trip", env=env)
    assert_one_line_error(result)
    assert result.stderr == (
        "inference: error: internal error: the plugin tripped (run with --debug for the "
        "traceback)\n"
    )
    debug = cli("--debug", "trip", env=env)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and 'raise RuntimeError("the plugin tripped")' in (
        debug.stderr
    )
    assert debug.stderr.splitlines()[-1] == "inference: error: internal error: the plugin tripped"


def test_server_remove_all_deletes_every_cached_build(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    older = fake_build(cache / "inference-core", "0.3.36-cpu-1", "2026-01-01T00:00:00Z")
    newer = fake_build(cache / "inference-core", "0.3.36-cpu-2", "2026-02-01T00:00:00Z")
    result = cli("server", "remove", "--all", env={"XDG_CACHE_HOME": str(cache)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"removed {newer}", f"removed {older}"]
    assert not older.exists() and not newer.exists()


# -- chat --------------------------------------------------------------------------------


@server
def test_reset_in_chat_forgets_the_turns_and_keeps_the_system_message(
    external_server: ExternalServer,
) -> None:
    def chat(*lines: str, system: str = "Answer in French.") -> str:
        result = cli(
            "chat", "--model", external_server.url, "--system", system, *GREEDY, "-n", "16",
            stdin="".join(f"{line}\n" for line in lines), env=KEYED,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    once = chat("Hello!")
    assert chat("Hello!", "/reset", "Hello!") == once * 2
    # What makes the check above mean something: the turns before and the system
    # message each change the answer.
    assert chat("Hello!", "Hello!") != once * 2
    assert chat("Hello!", system="Answer in English.") != once
