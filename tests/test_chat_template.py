"""`LoadConfig.chat_template` and `--chat-template`: a Jinja template, by path or as text,
renders chats in place of the model's own, against the real llama-server and SmolLM2.

What chat renders is seen through the public API: a greedy chat gives the tokens a
greedy generation gives for the text the template should make of the messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import inference_core as ic
from inference_rocm.backends import LlamaCppBackend, server_args

from .procs import children, make_executable
from .test_cli import assert_one_line_error, cli

server = pytest.mark.server

# ChatML without a default system message, its generation prompt opening with a marker
# of its own: written here, not taken from a model. The guard makes a five-message chat
# fail to render, after the server's own check at start (a short one) has passed.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\nReply:{% endif %}"
)
GUARDED = (
    "{% if messages|length > 4 %}{{ raise_exception('at most four messages') }}{% endif %}" + CHATML
)
UNPARSED = "{% for m in messages %}{{ m.content }\n"  # a }} short
UNRENDERED = (
    "{{ raise_exception('never renders') }}{% for m in messages %}{{ m.content }}{% endfor %}"
)
MESSAGES = [ic.Message("system", "Be brief."), ic.Message("user", "Name a colour.")]
RENDERED = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
    "<|im_start|>assistant\nReply:"
)


def ids(stream: ic.TokenStream) -> list[int]:
    return [token.id for token in stream]


@pytest.fixture(scope="module")
def template_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("templates") / "chatml.jinja"
    path.write_text(CHATML)
    return path


@pytest.fixture(scope="module", params=["path", "text"])
def templated(
    request: pytest.FixtureRequest, template_file: Path, smollm2_path: str
) -> Iterator[ic.TextModel]:
    """SmolLM2 with CHATML given as a file's path, or GUARDED given as text."""
    template = str(template_file) if request.param == "path" else GUARDED
    with ic.load(
        smollm2_path, backend="llama_cpp", context_len=512, chat_template=template
    ) as model:
        yield model


@server
def test_the_template_renders_the_chat(templated: ic.TextModel) -> None:
    assert ids(templated.chat(MESSAGES, max_tokens=8)) == ids(
        templated.generate(RENDERED, max_tokens=8)
    )
    assert templated.count_tokens(MESSAGES) == len(templated.tokenize(RENDERED, special=True))


@server
def test_without_a_template_the_models_own_renders_the_chat(shared_model: ic.TextModel) -> None:
    assert shared_model.count_tokens(MESSAGES) != len(shared_model.tokenize(RENDERED, special=True))


@server
def test_messages_the_template_cannot_render_are_a_generation_error(
    smollm2_path: str,
) -> None:
    history = [ic.Message("user" if n % 2 == 0 else "assistant", f"turn {n}") for n in range(5)]
    with ic.load(
        smollm2_path, backend="llama_cpp", context_len=512, chat_template=GUARDED
    ) as model:
        with pytest.raises(ic.GenerationError, match="at most four messages") as caught:
            list(model.chat(history, max_tokens=4))
        assert "chat template cannot render these messages" in str(caught.value)
        assert isinstance(model.err(), ic.GenerationError)
        with pytest.raises(ic.GenerationError, match="at most four messages"):
            model.count_tokens(history)
        assert ids(model.chat(history[:3], max_tokens=2))  # it serves on


@server
@pytest.mark.parametrize(
    ("given", "said"),
    [("file", "Expected }}"), ("text", "Jinja Exception: never renders")],
)
def test_a_template_that_does_not_parse_or_render_fails_the_load_naming_why(
    tmp_path: Path, smollm2_path: str, given: str, said: str
) -> None:
    template = UNPARSED if given == "file" else UNRENDERED
    if given == "file":
        (tmp_path / "broken.jinja").write_text(template)
        template = str(tmp_path / "broken.jinja")
    before = children()
    with pytest.raises(ic.InvalidChatTemplate, match="does not parse or render") as caught:
        ic.load(smollm2_path, backend="llama_cpp", chat_template=template)
    assert said in caught.value.problem
    assert caught.value.template == (template if given == "file" else "given as text")
    assert isinstance(caught.value, ic.ModelLoadError)
    assert children() == before


def test_a_path_that_is_no_file_is_an_invalid_value_before_any_start(
    tmp_path: Path, smollm2_path: str
) -> None:
    before = children()
    with pytest.raises(ic.InvalidValue, match="is not a file, nor a template") as caught:
        ic.load(smollm2_path, backend="llama_cpp", chat_template=tmp_path / "missing.jinja")
    assert caught.value.field == "chat_template"
    assert children() == before


@pytest.mark.parametrize(
    ("template", "extra_args", "problem"),
    [
        (CHATML, ("--chat-template", "chatml"), "both name the template"),
        (CHATML, ("--chat-template-file=x.jinja",), "both name the template"),
        ("{{ x }}" * 20_000, (), "cannot be passed on a command line"),
        ("{{ x }}\0", (), "cannot be passed on a command line"),
    ],
)
def test_a_template_the_command_line_cannot_carry_is_an_invalid_value(
    template: str, extra_args: tuple[str, ...], problem: str
) -> None:
    config = ic.LoadConfig(chat_template=template, extra_args=extra_args)
    with pytest.raises(ic.InvalidValue, match=problem) as caught:
        server_args(config, gpu_layers=None)
    assert caught.value.field == "chat_template"


def test_the_template_goes_to_llama_server_after_jinja(template_file: Path) -> None:
    for template, flag in (
        (str(template_file), "--chat-template-file"),
        (CHATML, "--chat-template"),
    ):
        args = server_args(ic.LoadConfig(chat_template=template), gpu_layers=None)
        assert args[args.index(flag) - 1 : args.index(flag) + 2] == ["--jinja", flag, template]
    assert "--jinja" not in server_args(ic.LoadConfig(), gpu_layers=None)


@pytest.mark.parametrize("value", ["", 3, b"{{ x }}"])
def test_a_template_that_is_not_a_string_is_refused_by_the_config(value: object) -> None:
    with pytest.raises(ic.InvalidValue, match="chat_template must be a non-empty string"):
        ic.LoadConfig(chat_template=value)  # type: ignore[arg-type]


def test_the_remote_backend_refuses_a_template_it_cannot_give_the_server() -> None:
    with pytest.raises(
        ic.InvalidValue, match="chat_template is chosen by whoever starts"
    ) as caught:
        ic.load("http://127.0.0.1:1", chat_template=CHATML)
    assert caught.value.field == "chat_template"


# -- the command line -------------------------------------------------------------------------


@server
def test_chat_on_the_command_line_uses_the_template_file(
    template_file: Path, shared_model: ic.TextModel
) -> None:
    result = cli(
        "chat", "--chat-template", str(template_file), "-t", "0", "-n", "8",
        "--system", "Be brief.", stdin="Name a colour.\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == shared_model.generate(RENDERED, max_tokens=8).text().strip()


@server
def test_run_with_a_broken_template_is_one_line_naming_the_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jinja"
    broken.write_text(UNPARSED)
    result = cli("run", "--chat-template", str(broken), "-n", "2", "Hi")
    assert_one_line_error(result, str(broken), "Expected }}")


def test_a_template_option_naming_no_file_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("run", "--chat-template", str(tmp_path / "missing.jinja"), "Hi")
    assert result.returncode == 2
    assert "--chat-template" in result.stderr and "is not a file" in result.stderr


# llama-server's refusal as the pinned build logs it; its logging thread can lose the
# engine's reason at exit (one start in 6 to 40 here), leaving only the generic lines.
_REFUSAL = [
    "error: the supplied chat template is not supported: {{ m.content ",
    "",
    "0.00.004.093 E common_chat_templates_init: error: parser: Parser Error: Expected }} (Got )",
    "0.00.004.101 E common_chat_templates_init: failed to initialize chat template",
    "0.00.004.114 E common_chat_verify_template: failed to apply template: std::exception",
]
_LOSES_THE_REASON = """
import pathlib, sys
if "--list-devices" in sys.argv:  # the backend asks before any start: not a start
    print("Available devices:")
    sys.exit(0)
count = pathlib.Path({count!r})
n = int(count.read_text())
count.write_text(str(n + 1))
lines = {lines!r}
print("\\n".join(lines if n >= {lost} else [l for l in lines if "Expected" not in l]))
sys.exit(1)
"""


@pytest.mark.parametrize(("lost", "starts"), [(1, 2), (0, 1)], ids=["lost", "kept"])
def test_a_refusal_whose_reason_was_lost_at_exit_is_asked_once_more(
    tmp_path: Path, smollm2_path: str, lost: int, starts: int
) -> None:
    """The first start loses the reason (`lost` 1) or keeps it: the error names it either
    way, starting the server a second time only when it was lost."""
    count = tmp_path / "starts"
    count.write_text("0")
    source = _LOSES_THE_REASON.format(count=str(count), lines=_REFUSAL, lost=lost)
    binary = make_executable(tmp_path / "llama-server", source)
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(binary)})
    with pytest.raises(ic.InvalidChatTemplate) as caught:
        backend.load_model(smollm2_path, ic.LoadConfig(chat_template=UNPARSED))
    assert "Expected }} (Got )" in caught.value.problem
    assert count.read_text() == str(starts)
