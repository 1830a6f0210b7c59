"""The `inference` command line, run as a real subprocess against llama-server and SmolLM2.

A bad option value (`--temperature -1`) is a usage error: exit status 2 and
the option named, checked before any model loads. Every other failure is
exit status 1 with one `inference: error: ...` line, and a traceback only
with --debug.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from inference_core.testing.contracts import TOOLS

server = pytest.mark.server

GREEDY = ("--temperature", "0", "--max-tokens", "8")
CUT_AT_8 = "inference: the answer was cut at --max-tokens 8; raise it (-n N) for a longer answer"
# Greedy SmolLM2 counts on for thousands of tokens (a minute and more): still generating when
# a test interrupts it, however fast the machine. "Tell a story" ends after 9 tokens.
ENDLESS = ("--max-tokens", "100000", "Count from one to a thousand: 1, 2, 3,")


def cli(
    *args: str,
    stdin: str | None = None,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`python -m inference_core ARGS`, with the environment this test process has,
    changed by `env` (a variable given None is unset)."""
    environ = {k: v for k, v in os.environ.items() if k != "INFERENCE_BACKENDS"}
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return subprocess.run(
        [sys.executable, "-m", "inference_core", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inference: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def children_of(pid: int) -> set[int]:
    """Direct children of every thread of `pid` (llama-server is spawned from a thread)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` no longer runs (reaped, or a zombie waiting for its new parent)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


# -- happy paths ----------------------------------------------------------------


@server
def test_backends_lists_llama_cpp_with_its_binary_and_version(llama_server_binary: str) -> None:
    result = cli("backends")
    assert result.returncode == 0, result.stderr
    assert "llama_cpp" in result.stdout and "available" in result.stdout
    assert llama_server_binary in result.stdout
    assert "build: version:" in result.stdout


@server
def test_backends_json_marks_the_default(llama_server_binary: str) -> None:
    statuses = json.loads(cli("backends", "--json").stdout)
    by_name = {status["name"]: status for status in statuses}
    assert by_name["llama_cpp"]["available"] is True
    [default] = [status for status in statuses if status["default"]]
    assert default["available"]
    assert default["priority"] == max(s["priority"] for s in statuses if s["available"])


@server
def test_run_streams_the_demo_model_to_stdout(smollm2_path: str) -> None:
    result = cli("run", *GREEDY, "The capital of France is")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and result.stdout.endswith("\n")
    # No spinner, no stats when stderr is not a terminal: only the answer's cut.
    assert result.stderr == f"{CUT_AT_8}\n"


@server
def test_run_with_model_and_stats_prints_metrics_to_stderr(smollm2_path: str) -> None:
    result = cli("run", "--model", smollm2_path, "--stats", *GREEDY, "Once upon a time")
    assert result.returncode == 0, result.stderr
    assert "generated: 8 tokens" in result.stderr and "tokens/s" in result.stderr
    assert "tokens/s" not in result.stdout


@server
def test_run_with_debug_says_where_the_layers_went(smollm2_path: str) -> None:
    result = cli("--debug", "run", "--model", smollm2_path, "--max-tokens", "1", "Hi")
    assert result.returncode == 0, result.stderr
    assert f"{smollm2_path} is placed: CPU 31 of 31 layers" in result.stderr


@server
def test_run_is_deterministic_when_greedy(smollm2_path: str) -> None:
    first = cli("run", *GREEDY, "One, two, three,")
    second = cli("run", "-m", smollm2_path, *GREEDY, "One, two, three,")
    assert first.stdout == second.stdout


@server
def test_run_reads_the_prompt_from_stdin(smollm2_path: str) -> None:
    piped = cli("run", *GREEDY, "-", stdin="One, two, three,\n")
    direct = cli("run", *GREEDY, "One, two, three,")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == direct.stdout


def test_info_shows_the_metadata_without_a_server(smollm2_path: str) -> None:
    result = cli("info", smollm2_path, env={"LLAMA_SERVER_PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert fields["architecture"].strip() == "llama"
    assert fields["parameters"].strip() == "135M"
    assert fields["quantisation"].strip().startswith("Q4_1")
    assert fields["context length"].strip().startswith("8192")
    assert fields["layers"].strip() == "30"
    assert fields["vocab size"].strip() == "49152"


def test_info_json_is_the_model_info(smollm2_path: str) -> None:
    data = json.loads(cli("info", "--json", smollm2_path).stdout)
    assert data["status"] == "ok" and data["error"] is None
    assert data["info"]["architecture"] == "llama"
    assert data["info"]["file_type"] == "Q4_1"
    assert data["info"]["file_size"] == os.path.getsize(smollm2_path)


@pytest.fixture
def model_dir(tmp_path: Path, smollm2_path: str) -> Path:
    """A symlinked model, a copy inside a split pair, a corrupt file and a non-model file."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "smol.gguf").symlink_to(smollm2_path)
    shutil.copyfile(smollm2_path, tmp_path / "sub" / "big-00001-of-00002.gguf")
    (tmp_path / "sub" / "big-00002-of-00002.gguf").symlink_to(smollm2_path)
    (tmp_path / "sub" / "broken.gguf").write_bytes(b"NOPE" + bytes(100))
    (tmp_path / "notes.txt").write_text("not a model")
    return tmp_path


def test_models_lists_files_groups_splits_and_flags_corrupt_ones(model_dir: Path) -> None:
    result = cli("models", str(model_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PATH", "ARCH", "PARAMS", "QUANT", "CONTEXT", "SIZE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == ["smol.gguf", "sub/big-00001-of-00002.gguf", "sub/broken.gguf"]
    assert rows["smol.gguf"].split()[1:5] == ["llama", "135M", "Q4_1", "8192"]
    assert "(2 parts)" in rows["sub/big-00001-of-00002.gguf"]
    assert "CORRUPT: is not a GGUF model file" in rows["sub/broken.gguf"]


def test_models_json(model_dir: Path) -> None:
    entries = json.loads(cli("models", "--json", str(model_dir)).stdout)
    by_name = {Path(entry["path"]).name: entry for entry in entries}
    assert by_name["smol.gguf"]["info"]["architecture"] == "llama"
    assert len(by_name["big-00001-of-00002.gguf"]["parts"]) == 2
    broken = by_name["broken.gguf"]
    assert broken["status"] == "corrupt" and broken["info"] is None
    assert "not a GGUF model file" in broken["error"]


def test_models_flags_a_split_model_with_missing_parts(tmp_path: Path, smollm2_path: str) -> None:
    (tmp_path / "half-00001-of-00003.gguf").symlink_to(smollm2_path)
    [entry] = json.loads(cli("models", "--json", str(tmp_path)).stdout)
    assert entry["status"] == "incomplete"
    assert "half-00002-of-00003.gguf, half-00003-of-00003.gguf" in entry["error"]


@server
def test_chat_through_a_pipe_answers_each_line_and_exits_at_eof(smollm2_path: str) -> None:
    result = cli(
        "chat", "--stats", *GREEDY, "--system", "Answer briefly.", stdin="Hello!\nWhat is 2+2?\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("generated:") == 2
    assert result.stdout.strip()
    assert "> " not in result.stdout  # no prompt when stdin is not a terminal


@server
def test_chat_reset_keeps_going_and_exit_stops(smollm2_path: str) -> None:
    result = cli("chat", "--stats", *GREEDY, stdin="Hi\n/reset\nHello\n/exit\nnever answered\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("generated:") == 2


# -- why an answer ended, and stop strings ------------------------------------------


def first_token_stop(tokens: list[dict[str, Any]]) -> tuple[int, str]:
    """A token of `tokens` (not the first) whose text first occurs in their text where it
    begins, and that text: a stop string that ends the answer just before that token."""
    text = "".join(token["text"] for token in tokens)
    offset = 0
    for index, token in enumerate(tokens):
        if index and token["text"].strip() and text.find(token["text"]) == offset:
            return index, token["text"]
        offset += len(token["text"])
    pytest.fail(f"every token of {text!r} repeats an earlier text")


@server
def test_run_json_ends_with_the_finish_reason_and_stop_cuts_the_answer_there() -> None:
    prompt = ("-n", "24", "The capital of France is")
    *tokens, end = [json.loads(line) for line in cli("run", "--json", *prompt).stdout.splitlines()]
    assert end == {"finish_reason": "length"} and len(tokens) == 24
    index, stop = first_token_stop(tokens)
    stopped = cli("run", "--json", "--stop", "never said", "--stop", stop, *prompt)
    assert stopped.returncode == 0, stopped.stderr
    *kept, end = [json.loads(line) for line in stopped.stdout.splitlines()]
    assert kept == tokens[:index] and end == {"finish_reason": "stop"}
    assert stopped.stderr == "", "an answer ended at a stop string was not cut"
    plain = cli("run", "--stop", stop, *prompt)
    assert plain.stdout == "".join(token["text"] for token in tokens[:index]) + "\n"


@server
def test_chat_stops_at_a_stop_string_and_says_when_max_tokens_cut_an_answer() -> None:
    whole = cli("chat", "-n", "200", stdin="Hi\n")
    assert whole.returncode == 0 and whole.stderr == "", "the greeting ends by itself"
    word = whole.stdout.split()[1]
    stopped = cli("chat", "-n", "200", "--stop", word, stdin="Hi\n")
    assert stopped.stdout.strip() and word not in stopped.stdout
    assert whole.stdout.startswith(stopped.stdout.rstrip("\n"))
    cut = cli("chat", *GREEDY, stdin="Hi\n")
    assert cut.stderr == f"{CUT_AT_8}\n"


@server
def test_an_answer_cut_by_a_full_context_says_so_and_not_max_tokens() -> None:
    result = cli("run", "--ctx", "128", "-n", "1000", "Count from one to a thousand: 1, 2, 3,")
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "inference: the answer was cut where the context filled; raise --ctx N, or shorten "
        "the prompt\n"
    )


def test_an_empty_stop_string_is_a_usage_error_naming_the_option() -> None:
    result = cli("run", "--stop", "", "hi")
    assert result.returncode == 2
    assert "argument --stop: stop must hold non-empty strings" in result.stderr


# -- errors -------------------------------------------------------------------


def test_missing_model_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.gguf")
    assert_one_line_error(cli("run", "--model", missing, "hi"), missing, "no such file")


def test_corrupt_model_file_is_one_line_naming_it(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\xff" * 60)
    for args in (("run", "--model", str(corrupt), "hi"), ("info", str(corrupt))):
        assert_one_line_error(cli(*args), str(corrupt))


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [("--temperature", "-1", "temperature"), ("--threads", "-2", "threads")],
)
def test_bad_option_value_is_a_usage_error_naming_the_option(
    option: str, value: str, field: str
) -> None:
    result = cli("run", option, value, "hi")
    assert result.returncode == 2
    assert f"argument {option}: {field} must be" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_option_and_missing_command_are_usage_errors() -> None:
    assert cli("run", "--max-tokens", "many", "hi").returncode == 2
    assert cli("run").returncode == 2
    assert cli().returncode == 2


def test_no_backend_available_says_so_and_names_the_filter(smollm2_path: str) -> None:
    result = cli("run", "hi", env={"INFERENCE_BACKENDS": "nonexistent"})
    assert_one_line_error(result, "no inference backend is available", "nonexistent")


def test_server_that_dies_while_loading_is_one_line_and_its_log_needs_debug(
    tmp_path: Path, smollm2_path: str
) -> None:
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\necho 'warming up the fake server'\nkill -ILL $$\n")
    fake.chmod(0o755)
    env = {"LLAMA_SERVER_PATH": str(fake)}
    result = cli("run", "hi", env=env)
    assert_one_line_error(result, "SIGILL", "--debug")
    assert "warming up" not in result.stderr
    debug = cli("run", "--debug", "hi", env=env)
    assert debug.returncode == 1
    assert "warming up the fake server" in debug.stderr and "Traceback" in debug.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_a_traceback_and_only_then(tmp_path: Path, where: str) -> None:
    missing = str(tmp_path / "nope.gguf")
    assert "Traceback" not in cli("info", missing).stderr
    args = ("--debug", "info", missing) if where == "before" else ("info", missing, "--debug")
    result = cli(*args)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "InvalidModelFile" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("inference: error: ")


# -- progress -------------------------------------------------------------------


@server
def test_loading_shows_a_spinner_on_a_terminal_and_clears_it(smollm2_path: str) -> None:
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "inference_core", "run", *GREEDY, "Hello"],
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    ) as process:
        os.close(terminal)
        stdout, _ = process.communicate(timeout=60)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the CLI closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.returncode == 0 and stdout.strip()
    assert b"loading SmolLM2-135M-Instruct.Q4_1.gguf" in shown
    # The spinner's line is wiped once the model is loaded; then only the answer's cut.
    assert shown.endswith(b"\r\x1b[K" + CUT_AT_8.encode() + b"\r\n")


# -- Ctrl-C ---------------------------------------------------------------------


@pytest.fixture
def sigint_handled() -> Iterator[None]:
    """A child started now gets SIGINT's default action (Python's KeyboardInterrupt), even
    when the tests run in a shell's background job, which ignores SIGINT and passes that on
    through exec (an ignored signal stays ignored; a handled one is reset)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt(after_output: bool) -> tuple[subprocess.Popen[str], set[int], str, str]:
    """Start a long generation, SIGINT it during load or once tokens flow; wait for its exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "inference_core", "run", *ENDLESS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "INFERENCE_BACKENDS"},
    )
    assert process.stdout is not None
    servers: set[int] = set()
    deadline = time.monotonic() + 30
    while not servers and time.monotonic() < deadline and process.poll() is None:
        servers = children_of(process.pid)
        time.sleep(0.01)
    if after_output:
        process.stdout.read(1)  # the first token: the server is loaded and generating
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    return process, servers, stdout, stderr


@server
@pytest.mark.parametrize("after_output", [False, True], ids=["during-load", "during-generation"])
@pytest.mark.usefixtures("sigint_handled")
def test_ctrl_c_stops_cleanly_and_leaves_no_server(smollm2_path: str, after_output: bool) -> None:
    process, servers, _, stderr = interrupt(after_output)
    assert servers, "the CLI never started a llama-server"
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    for pid in servers:
        assert gone(pid), f"llama-server {pid} is still running"


# -- plugins ----------------------------------------------------------------------


def install_plugin(folder: Path, name: str, source: str) -> dict[str, str]:
    """A plugin module and its entry point in `folder`; the environment that finds it."""
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[inference_core.backends]\n{name} = {name}\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.getenv("PYTHONPATH")]))}


def test_plugins_add_commands_and_a_failing_one_is_left_out(tmp_path: Path) -> None:
    install_plugin(
        tmp_path,
        "hello_plugin",
        """
        import inference_core

        def hello(args):
            print(f"hello, {args.who}")
            return 0

        @inference_core.hookimpl
        def register_commands(subparsers):
            sub = subparsers.add_parser("hello", help="say hello")
            sub.add_argument("who")
            sub.set_defaults(handler=hello)
        """,
    )
    env = install_plugin(
        tmp_path,
        "faulty_plugin",
        """
        import inference_core

        @inference_core.hookimpl
        def register_commands(subparsers):
            subparsers.add_parser("faulty", help="half-added")
            raise RuntimeError("faulty plugin exploded")
        """,
    )
    result = cli("hello", "world", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello, world\n"
    assert "faulty plugin exploded" in result.stderr  # logged as a warning, not fatal
    help_text = cli("--help", env=env).stdout
    assert "hello" in help_text and "faulty" not in help_text
    assert cli("faulty", env=env).returncode == 2


def test_a_plugin_whose_inspector_raises_does_not_hide_the_model(
    tmp_path: Path, smollm2_path: str
) -> None:
    env = install_plugin(
        tmp_path,
        "faulty_inspector",
        """
        import inference_core

        # Asked first, whatever order the plugins are found in (which depends on sys.path:
        # the working directory, an egg-info in it, PYTHONPATH).
        @inference_core.hookimpl(tryfirst=True)
        def inspect_model(path):
            raise RuntimeError("faulty inspector")
        """,
    )
    result = cli("info", "--json", smollm2_path, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["info"]["architecture"] == "llama"
    assert "faulty inspector" in result.stderr


# -- pipes and terminals -----------------------------------------------------------


@server
def test_a_reader_that_goes_away_is_exit_141_without_a_traceback(smollm2_path: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "inference_core", "run", *ENDLESS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(1)  # a token arrived: the generation is under way
    process.stdout.close()  # `| head -c 1`
    stderr = process.stderr.read().decode()
    assert process.wait(60) == 141
    assert "Traceback" not in stderr and "error" not in stderr


@server
def test_interactive_chat_survives_a_turn_that_overflows_the_context(smollm2_path: str) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "inference_core", "chat", "--ctx", "128", *GREEDY],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    try:
        shown = read_until(controller, b"/exit or Ctrl-D quits")
        os.write(controller, ("word " * 300 + "\n").encode())
        shown += read_until(controller, b"/reset to start over")
        assert b"does not fit the context" in shown
        os.write(controller, b"Hi\n/exit\n")
        assert process.stdout is not None
        answer = process.stdout.read().decode()
        assert process.wait(60) == 0
        assert answer.strip(), "no answer after the overflowing turn"
    finally:
        process.kill()
        os.close(controller)


def read_until(fd: int, marker: bytes, seconds: float = 60) -> bytes:
    """What a pseudo-terminal shows until `marker` (the CLI's stderr goes there)."""
    shown, deadline = b"", time.monotonic() + seconds
    while marker not in shown:
        assert time.monotonic() < deadline, shown.decode(errors="replace")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            shown += os.read(fd, 65536)
    return shown


# -- structured output, log-probabilities, tools -----------------------------------


@server
def test_run_holds_the_output_to_a_schema_given_inline_or_in_a_file(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    for given in (json.dumps(schema), str(tmp_path / "schema.json")):
        result = cli("run", "--json-schema", given, "-n", "40", "A number, as JSON:")
        assert result.returncode == 0, result.stderr
        assert isinstance(json.loads(result.stdout)["n"], int)


@server
def test_run_holds_the_output_to_a_grammar_file(tmp_path: Path) -> None:
    (tmp_path / "yes-no.gbnf").write_text('root ::= "yes" | "no"\n')
    result = cli("run", "--grammar", str(tmp_path / "yes-no.gbnf"), "Is the sky blue?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("yes", "no")


@server
def test_run_prints_logprobs_to_stderr_or_as_json_lines() -> None:
    shown = cli("run", "--logprobs", "2", "-n", "4", "The capital of France is")
    assert shown.returncode == 0, shown.stderr
    figures = [line for line in shown.stderr.splitlines() if line.startswith("'")]
    assert len(figures) == 4 and all(line.count(" -") == 3 for line in figures), shown.stderr
    lines = cli("run", "--json", "--logprobs", "2", "-n", "4", "The capital of France is")
    *tokens, end = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(tokens) == 4 and end == {"finish_reason": "length"}
    for token in tokens:
        assert token["logprob"] <= 0 and len(token["top_logprobs"]) == 2
        assert token["top_logprobs"][0]["id"] == token["id"]


def test_a_schema_that_is_not_json_is_a_usage_error() -> None:
    result = cli("run", "--json-schema", "{not json", "hi")
    assert result.returncode == 2
    assert "argument --json-schema: not valid JSON" in result.stderr


@server
def test_a_schema_the_server_refuses_is_a_usage_error_naming_the_option() -> None:
    result = cli("run", "--json-schema", '{"type": "wibble"}', "hi")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "argument --json-schema: " in lines[0] and "wibble" in lines[0]


@server
@pytest.mark.parametrize(
    ("choice", "names"), [("required", {"get_weather", "get_time"}), ("get_time", {"get_time"})]
)
def test_chat_with_tools_prints_the_calls_it_received(
    tmp_path: Path, choice: str, names: set[str]
) -> None:
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    result = cli(
        "chat", "--tools", str(tmp_path / "tools.json"), "--tool-choice", choice,
        "-n", "200", stdin="What is the weather in Paris?\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = [line for line in result.stdout.splitlines() if line.startswith("tool call call_")]
    assert calls and {c.split(": ")[1].split(" {")[0] for c in calls} <= names, calls


# -- embed ------------------------------------------------------------------------------


@server
def test_embed_prints_a_json_vector_per_text_from_arguments_or_stdin() -> None:
    given = cli("embed", "--ctx", "256", "The cat sat.", "Stocks fell.")
    assert given.returncode == 0, given.stderr
    vectors = [json.loads(line) for line in given.stdout.splitlines()]
    assert [len(vector) for vector in vectors] == [576, 576]
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3
    piped = cli("embed", "--ctx", "256", stdin="The cat sat.\n\nStocks fell.\n")
    assert [json.loads(line) for line in piped.stdout.splitlines()] == vectors
    raw = cli("embed", "--ctx", "256", "--raw", "The cat sat.")
    assert abs(sum(x * x for x in json.loads(raw.stdout)) - 1.0) > 0.1


def test_embed_without_texts_is_a_usage_error() -> None:
    result = cli("embed", stdin="")
    assert result.returncode == 2 and "no texts" in result.stderr
