"""The `inference` command line (also `python -m inference_core`).

It reaches backends only through the registry, so any installed plugin works
here, and plugins may add subcommands through the `register_commands` hook.
Exit status: 0 done, 1 an error (one line on stderr; --debug adds the
traceback and the server's log), 2 a usage error (bad option or value),
130 interrupted (Ctrl-C), 141 stdout closed early (e.g. `| head`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from . import __version__, hub, registry
from ._cli_models import (
    ModelEntry,
    cached_models,
    describe,
    entry_for,
    find_models,
    pulled,
    table,
)
from ._cli_progress import LATEST, Spinner
from ._cli_speed import add_speed_options, speed_fields
from ._locations import redacted, url_scheme
from .content import image
from .demo import demo_model_path
from .errors import (
    ContextOverflow,
    InferenceError,
    InvalidModelFile,
    InvalidValue,
    NoBackendAvailable,
    ServerCrashed,
    ServerStartError,
    SessionMismatch,
    TlsVerificationFailed,
    UnsupportedOption,
)
from .protocols import BackendStatus, SavesSessions, TextModel, TokenStream
from .tools import TOOL_CHOICES
from .types import GenerateConfig, LoadConfig, Message, Token

__all__ = ["build_parser", "main"]

_PROG = "inference"
_INTERRUPTED = 130
_BROKEN_PIPE = 141
# GenerateConfig/LoadConfig field -> the option that sets it, to name it in errors.
# a message's content is only ever the CLI's images (an undecodable one, from the server)
_OPTION_OF = {"context_len": "--ctx", "gpu_layers": "--gpu-layers", "content": "--image"}


class _UsageError(Exception):
    """A bad value the parser's types could not catch; exit status 2."""


# -- parser ---------------------------------------------------------------


def _gpu_layers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be -1 (all), 0 (none), a layer count or 'auto', got {value!r}"
        ) from None


def _file_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error.strerror}") from None


def _file(path: str) -> str:
    """A file's path, checked to be one before anything loads."""
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"{path} is not a file")
    return path


def _json_value(value: str) -> Any:
    """JSON given inline (it starts with { or [) or in a file."""
    text = value if value.lstrip().startswith(("{", "[")) else _file_text(value)
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None


def _json_schema(value: str) -> Any:
    schema = _json_value(value)
    if not isinstance(schema, dict):
        raise argparse.ArgumentTypeError("a JSON schema is an object: {...}")
    return schema


def _tools(value: str) -> Any:
    tools = _json_value(value)
    if not isinstance(tools, list):
        raise argparse.ArgumentTypeError('tools are a JSON list: [{"type": "function", ...}]')
    return tools


def _model_options(parser: argparse.ArgumentParser) -> None:
    _model_file_options(_load_options(parser))
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--max-tokens", "-n", type=int, metavar="N", help="default 256")
    sampling.add_argument("--temperature", "-t", type=float, metavar="T", help="0 = greedy")
    sampling.add_argument("--top-k", type=int, metavar="K", help="0 = off")
    sampling.add_argument("--top-p", type=float, metavar="P", help="0 = off")
    sampling.add_argument("--min-p", type=float, metavar="P", help="0 = off")
    sampling.add_argument("--repeat-penalty", type=float, metavar="R", help="1 = off")
    sampling.add_argument("--seed", type=int, metavar="S", help="for reproducible sampling")
    sampling.add_argument(
        "--stop",
        action="append",
        metavar="STR",
        help="end the answer where STR begins (repeatable)",
    )
    thinking = parser.add_argument_group(
        "thinking",
        "for a model whose chat template thinks; its thinking goes to stderr (dimmed on a "
        "terminal), the answer to stdout. run sends its prompt as a chat's user message "
        "when one of these is given",
    )
    thinking.add_argument(
        "--think",
        action=argparse.BooleanOptionalAction,
        help="think before answering, or not (default: the template's own)",
    )
    thinking.add_argument(
        "--reasoning-budget",
        type=int,
        metavar="N",
        help="the most tokens the thinking may take, its closing tag included (0: none)",
    )
    parser.add_argument(
        "--image",
        action="append",
        type=_image,
        metavar="FILE",
        help="an image for the model to see, after the prompt (repeatable; needs a "
        "projector: --mmproj)",
    )
    parser.add_argument("--stats", action="store_true", help="print timings to stderr")


def _model_file_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--chat-template",
        type=_file,
        metavar="FILE",
        help="a Jinja chat template to use instead of the model's own",
    )
    group.add_argument(
        "--mmproj",
        metavar="FILE",
        help="the model's multimodal projector (a GGUF path or hf:// name), to see images",
    )


def _image(path: str) -> dict[str, Any]:
    """An image part, read and checked before anything loads."""
    try:
        return image(path)
    except InvalidValue as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _load_options(
    parser: argparse.ArgumentParser, *, model: bool = True
) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("model")
    if model:
        group.add_argument(
            "--model",
            "-m",
            metavar="PATH",
            help="GGUF file, hf://OWNER/REPO/FILE.gguf, or the http(s):// URL of a running "
            "llama-server (default: the demo model); a server's key is read from LLAMA_API_KEY",
        )
    group.add_argument(
        "--backend", "-b", default="auto", metavar="NAME", help="backend name (default: auto)"
    )
    group.add_argument("--ctx", type=int, default=0, metavar="N", help="context length (0: model)")
    group.add_argument(
        "--gpu-layers", type=_gpu_layers, default=-1, metavar="N", help="-1 all, 0 none, auto"
    )
    group.add_argument(
        "--threads", type=int, default=0, metavar="N", help="CPU threads (0: all cores but one)"
    )
    group.add_argument(
        "--rpc", default="", metavar="HOST:PORT,...", help="split the model over RPC workers"
    )
    group.add_argument(
        "--load-timeout",
        type=float,
        default=LoadConfig().load_timeout,
        metavar="SECONDS",
        help="how long loading may go without progress (a server at a URL: in all); "
        "default %(default)g",
    )
    add_speed_options(group)
    group.add_argument(
        "--ca-bundle", metavar="FILE", help="the CA that signs an https:// server's certificate"
    )
    group.add_argument(
        "--no-verify-tls",
        dest="verify_tls",
        action="store_false",
        help="do not check an https:// server's certificate (unsafe; prefer --ca-bundle)",
    )
    return group


def build_parser() -> argparse.ArgumentParser:
    """The full parser, plugins' subcommands included."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log to stderr and show tracebacks",
    )
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Run local LLMs (GGUF) through the installed inference backends."
    )
    # Its own action: `common`'s is shared with the subcommands, whose default must stay unset
    # so that `inference --debug run ...` is not undone by `run`'s parser.
    parser.add_argument("--debug", action="store_true", help="log to stderr and show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub = commands.add_parser("backends", parents=[common], help="list backends and their status")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(handler=_cmd_backends)

    sub = commands.add_parser("run", parents=[common], help="generate from a prompt")
    sub.add_argument("prompt", metavar="PROMPT", help="the prompt, or - to read stdin")
    _model_options(sub)
    output = sub.add_argument_group("output")
    output.add_argument(
        "--json-schema", type=_json_schema, metavar="FILE|JSON", help="hold the output to a schema"
    )
    output.add_argument(
        "--grammar", type=_file_text, metavar="FILE", help="hold the output to a GBNF grammar"
    )
    output.add_argument(
        "--logprobs", type=int, metavar="N", help="each token's log-probability and N candidates"
    )
    output.add_argument("--json", action="store_true", help="one JSON object per token")
    sub.set_defaults(handler=_cmd_run)

    sub = commands.add_parser(
        "chat", parents=[common], help="talk to a model (stdin may be a pipe)"
    )
    sub.add_argument("--system", "-s", metavar="TEXT", help="a system message")
    sub.add_argument(
        "--tools", type=_tools, metavar="FILE", help="a JSON list of tools the model may call"
    )
    sub.add_argument(
        "--tool-choice",
        default="auto",
        metavar="|".join((*TOOL_CHOICES, "NAME")),
        help="whether the model may, must or must not call a tool, or the name of the tool "
        "it must call (default: %(default)s)",
    )
    _model_options(sub)
    sub.set_defaults(handler=_cmd_chat)

    sub = commands.add_parser("embed", parents=[common], help="embed texts: JSON vectors")
    sub.add_argument("texts", nargs="*", metavar="TEXT", help="texts (none: a text per stdin line)")
    sub.add_argument("--raw", action="store_true", help="vectors as computed, not unit length")
    _load_options(sub)
    sub.set_defaults(handler=_cmd_embed)

    sub = commands.add_parser(
        "info", parents=[common], help="a model file's metadata; with --load, its capabilities"
    )
    sub.add_argument("path", metavar="PATH", help="a GGUF file, an hf:// name, or a server URL")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_argument(
        "--load",
        action="store_true",
        help="also load the model and show what it runs with: context, slots, capabilities "
        "(always, for a server URL)",
    )
    _model_file_options(_load_options(sub, model=False))
    sub.set_defaults(handler=_cmd_info)

    sub = commands.add_parser(
        "models", parents=[common], help="GGUF models in a folder, or in the Hugging Face cache"
    )
    sub.add_argument("folder", metavar="DIR", nargs="?", help="default: the Hugging Face cache")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(handler=_cmd_models)

    sub = commands.add_parser(
        "pull", parents=[common], help="download a model from the Hugging Face Hub"
    )
    sub.add_argument("name", metavar="hf://OWNER/REPO[@REVISION]/FILE.gguf")
    sub.add_argument("--json", action="store_true", help="path, size and sha256 as JSON")
    sub.set_defaults(handler=_cmd_pull)

    registry.register_commands(commands)
    return parser


# -- backends, info, models ---------------------------------------------------


def _status_json(status: BackendStatus, default: str | None) -> dict[str, Any]:
    return {**attrs.asdict(status), "default": status.name == default}


def _cmd_backends(args: argparse.Namespace) -> int:
    statuses = registry.backends()
    try:
        default: str | None = registry.default_backend().name
    except NoBackendAvailable:
        default = None
    if args.json:
        print(json.dumps([_status_json(s, default) for s in statuses], indent=2))
        return 0
    if not statuses:
        print("no backends registered" + _filter_note())
        return 0
    width = max(len(status.name) for status in statuses)
    for status in statuses:
        state = "available" if status.available else "unavailable"
        mark = "  (default)" if status.name == default else ""
        print(f"{status.name:<{width}}  priority {status.priority:<4} {state}{mark}")
        for reason in status.reasons:
            print(f"    - {reason}")
        for detail in status.details:
            print(f"    {detail}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    """The file's header; with --load (a server URL has no file to read: always), what
    the loaded model reports as well."""
    served = url_scheme(args.path) is not None and not hub.is_hub_name(args.path)
    entry = ModelEntry(args.path, ())
    if not served:
        local = hub.is_hub_name(args.path)
        entry = entry_for(hub.fetch(args.path, local_only=True) if local else args.path)
        if entry.info is None:
            raise InvalidModelFile(args.path, entry.error or "cannot be read")
    capabilities = None
    if args.load or served:
        args.model = entry.path
        with _loaded(args, _load_config(args)) as model:
            capabilities = model.capabilities
            entry = attrs.evolve(entry, info=entry.info or model.info)
    if args.json:
        shown = entry.to_json()
        if capabilities is not None:
            shown["capabilities"] = attrs.asdict(capabilities)
        print(json.dumps(shown, indent=2))
    else:
        print("\n".join(describe(entry, capabilities)))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    if args.folder is None:
        entries = cached_models()
        where = "in the Hugging Face cache, and no demo model"
    elif not os.path.isdir(args.folder):
        raise InvalidModelFile(args.folder, "is not a folder; give the folder to search")
    else:
        entries, where = find_models(args.folder), f"under {args.folder}"
    if args.json:
        print(json.dumps([entry.to_json() for entry in entries], indent=2))
    elif entries:
        print("\n".join(table(entries, args.folder)))
    else:
        print(f"no GGUF files {where}", file=sys.stderr)
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    if not hub.is_hub_name(args.name):
        raise _UsageError(f"pull takes an hf://OWNER/REPO/FILE.gguf name, not {args.name!r}")
    path = hub.fetch(args.name)  # the library draws its progress bar on a terminal's stderr
    projector = hub.projector(args.name, path)
    if args.json:
        found = pulled(args.name, path)
        if projector is not None:
            found["projector"] = {k: v for k, v in pulled("", projector).items() if k != "name"}
        print(json.dumps(found, indent=2))
    else:
        print(path)
        if projector is not None:  # stdout stays the model's path alone, for scripts
            print(f"and its projector, to see images: {projector}", file=sys.stderr)
    return 0


# -- run, chat --------------------------------------------------------------


def _generate_config(args: argparse.Namespace) -> GenerateConfig:
    names = (
        "max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed",
        "stop", "json_schema", "grammar", "logprobs", "think", "reasoning_budget",
    )  # fmt: skip
    given: dict[str, Any] = {name: getattr(args, name, None) for name in names}
    options = {name: value for name, value in given.items() if value is not None}
    return GenerateConfig(**options)


def _load_config(args: argparse.Namespace, *, embeddings: bool = False) -> LoadConfig:
    return LoadConfig(
        context_len=args.ctx,
        gpu_layers=args.gpu_layers,
        threads=args.threads,
        embeddings=embeddings,
        rpc_servers=args.rpc,
        ca_bundle=args.ca_bundle,
        verify_tls=args.verify_tls,
        load_timeout=args.load_timeout,
        chat_template=getattr(args, "chat_template", None),
        mmproj=getattr(args, "mmproj", None),
        **speed_fields(args),
    )


def _checked_configs(args: argparse.Namespace) -> tuple[GenerateConfig, LoadConfig]:
    """Both configs, validated before anything loads (a bad value is an `InvalidValue`)."""
    return _generate_config(args), _load_config(args)


@contextlib.contextmanager
def _loaded(args: argparse.Namespace, load: LoadConfig) -> Iterator[TextModel]:
    """Load with a spinner; always close, with Ctrl-C held off so no server is left behind."""
    path = args.model or demo_model_path()
    if hub.is_hub_name(path):  # before the spinner: a download draws its own progress bar
        registry.choose_backend(path, args.backend)  # and a wrong backend downloads nothing
        name, path = path, hub.fetch(path)
        if load.mmproj is None:  # the projector beside it, as load() fetches it
            load = attrs.evolve(load, mmproj=hub.projector(name, path))
    show = _spinner_wanted(args.debug)
    with Spinner(sys.stderr, f"loading {os.path.basename(redacted(path))}", enabled=show):
        model = registry.load(path, backend=args.backend, config=load)
    try:
        yield model
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            model.close()
        finally:
            signal.signal(signal.SIGINT, previous)


def _dimmed() -> tuple[str, str]:
    """The ANSI codes around thinking on stderr: dim on a terminal, unless NO_COLOR."""
    if sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
        return "\x1b[2m", "\x1b[0m"
    return "", ""


def _stream_out(stream: TokenStream) -> list[Token]:
    """Write tokens as they come: the answer to stdout, the thinking to stderr (dimmed on
    a terminal), and the blank lines between them once; the tokens, for chat history
    and figures."""
    tokens: list[Token] = []
    dim, undim = _dimmed()
    thought = answered = False
    try:
        for token in stream:
            tokens.append(token)
            if token.channel != "content":
                sys.stderr.write(f"{dim}{token.text}{undim}")
                sys.stderr.flush()
                thought = True
                continue
            text = token.text if answered or not thought else token.text.lstrip()
            if thought and not answered and text:
                sys.stderr.write("\n")
            answered = answered or bool(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    finally:
        stream.close()
        if tokens:
            with contextlib.suppress(OSError):
                (sys.stdout if answered or not thought else sys.stderr).write("\n")
                sys.stdout.flush()
    return tokens


def _token_json(token: Token) -> dict[str, Any]:
    figures: dict[str, Any] = {"id": token.id, "text": token.text, "channel": token.channel}
    if token.logprob is not None:
        figures["logprob"] = token.logprob
    if token.top_logprobs:
        figures["top_logprobs"] = [_token_json(candidate) for candidate in token.top_logprobs]
    return figures


def _stream_json(stream: TokenStream) -> list[Token]:
    """One JSON object per token on stdout, as it comes, and one last for the end:
    `{"finish_reason": ...}`."""
    tokens: list[Token] = []
    try:
        for token in stream:
            print(json.dumps(_token_json(token), ensure_ascii=False), flush=True)
            tokens.append(token)
    finally:
        stream.close()
    print(json.dumps({"finish_reason": stream.finish_reason}), flush=True)
    return tokens


def _say_if_cut(stream: TokenStream, tokens: list[Token], config: GenerateConfig) -> None:
    """One line on stderr when the answer did not end by itself, and how to get more."""
    if stream.finish_reason != "length":
        return
    if len(tokens) >= config.max_tokens:
        why = f"at --max-tokens {config.max_tokens}; raise it (-n N) for a longer answer"
    else:
        why = "where the context filled; raise --ctx N, or shorten the prompt"
    print(f"{_PROG}: the answer was cut {why}", file=sys.stderr)


def _print_figures(tokens: list[Token]) -> None:
    """Each token's log-probability and its candidates', on stderr."""
    for token in tokens:
        if token.logprob is None:
            print(f"{token.text!r}: no figures (part of a split character)", file=sys.stderr)
            continue
        candidates = ", ".join(f"{c.text!r} {c.logprob:.3f}" for c in token.top_logprobs)
        print(f"{token.text!r} {token.logprob:.3f}  [{candidates}]", file=sys.stderr)


def _print_stats(stream: TokenStream) -> None:
    metrics = stream.metrics
    if metrics is None:
        print("stats: the backend reported no timings", file=sys.stderr)
        return
    cached = f" ({metrics.cached_tokens} cached)" if metrics.cached_tokens else ""
    drafted = (
        f"drafted: {metrics.drafted_tokens} tokens, {metrics.accepted_tokens} accepted; "
        if metrics.drafted_tokens
        else ""
    )
    print(
        f"prompt: {metrics.prompt_tokens} tokens{cached}, "
        f"{metrics.prefill_tokens_per_second:.1f} tokens/s ({metrics.prefill_seconds:.3f} s); "
        f"generated: {metrics.generated_tokens} tokens, "
        f"{metrics.decode_tokens_per_second:.1f} tokens/s ({metrics.decode_seconds:.3f} s); "
        f"{drafted}total {metrics.total_seconds:.3f} s",
        file=sys.stderr,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    config, load = _checked_configs(args)
    prompt: str = sys.stdin.read().rstrip("\n") if args.prompt == "-" else args.prompt
    if not prompt:
        raise _UsageError("the prompt is empty")
    as_chat = args.think is not None or args.reasoning_budget is not None or args.image
    with _loaded(args, load) as model:
        stream = (
            model.chat([Message("user", _with_images(prompt, args.image))], config)
            if as_chat
            else model.generate(prompt, config)
        )
        if args.json:
            tokens = _stream_json(stream)
        else:
            tokens = _stream_out(stream)
            if config.logprobs:
                _print_figures(tokens)
        _say_if_cut(stream, tokens, config)
        if args.stats:
            _print_stats(stream)
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    """One JSON array per text, a line each, in the order of the texts."""
    load = _load_config(args, embeddings=True)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise _UsageError("no texts: give them as arguments or one per line on stdin")
    with _loaded(args, load) as model:
        for vector in model.embed(texts, normalize=not args.raw):
            print(json.dumps(vector))
    return 0


def _read_turn(interactive: bool) -> str | None:
    """The next user line; None at end of input."""
    if interactive:
        try:
            return input("> ")
        except EOFError:
            print(file=sys.stderr)
            return None
    line = sys.stdin.readline()
    return None if line == "" else line


def _with_images(text: str, images: list[dict[str, Any]] | None) -> str | list[dict[str, Any]]:
    """A user turn's content: the text, then the images, if any."""
    return [{"type": "text", "text": text}, *images] if images else text


def _added_image(path: str, interactive: bool) -> list[dict[str, Any]]:
    """`/image FILE`: the image for the next message; at a terminal, a bad file is said
    and the chat goes on (from a pipe, it ends the chat as any bad input does)."""
    try:
        part = image(path)
    except InvalidValue as error:
        if not interactive:
            raise _UsageError(f"/image: {error}") from None
        print(f"{_PROG}: /image: {error}", file=sys.stderr)
        return []
    if interactive:
        print(f"(image {path} added to your next message)", file=sys.stderr)
    return [part]


def _session_command(
    model: TextModel, text: str, history: list[Message], interactive: bool
) -> list[Message]:
    """`/save NAME` (the history and the server's cache of it) or `/restore NAME`; the
    history to go on with. At a terminal a failure is said and the chat goes on."""
    command, _, name = text.partition(" ")
    saving = command == "/save"
    try:
        if not isinstance(model, SavesSessions):
            raise UnsupportedOption("sessions", "this model's backend does not save sessions")
        session = (
            model.save_session(name.strip(), history)
            if saving
            else model.restore_session(name.strip())
        )
        if not saving and session.prompt is not None:
            raise SessionMismatch(
                session.name, f"session {session.name!r} holds a prompt, not a chat's messages"
            )
    except (InvalidValue, InferenceError, OSError) as error:
        if not interactive:
            raise
        print(f"{_PROG}: {command}: {_one_line(error)}", file=sys.stderr)
        return history
    done = "saved" if saving else "restored"
    print(f"({done} session {session.name}: {session.tokens} tokens)", file=sys.stderr)
    return history if saving else list(session.messages)


def _answered(answer: str, reasoning: str) -> Message:
    """The assistant's turn for the history: with its thinking, for the template to
    render, and its answer without the blank lines it began with after the thinking
    (the template writes its own)."""
    if not reasoning:
        return Message("assistant", answer)
    return Message("assistant", answer.strip(), reasoning=reasoning)


def _cmd_chat(args: argparse.Namespace) -> int:
    config, load = _checked_configs(args)
    interactive = sys.stdin.isatty()
    start = [Message("system", args.system)] if args.system else []
    with _loaded(args, load) as model:
        if interactive:
            print(
                f"chatting with {model.info.name} (context {model.context_len}); "
                "/image FILE adds an image to your next message, /save NAME and "
                "/restore NAME keep the conversation for later, /reset clears the "
                "history, /exit or Ctrl-D quits",
                file=sys.stderr,
            )
        history, pending = list(start), list(args.image or [])
        while (line := _read_turn(interactive)) is not None:
            text = line.strip()
            if not text:
                continue
            if text == "/exit":
                break
            if text == "/reset":
                history, pending = list(start), []
                if interactive:
                    print("(history cleared)", file=sys.stderr)
                continue
            if text.startswith("/image "):
                added = _added_image(text.removeprefix("/image ").strip(), interactive)
                pending += added
                continue
            if text.startswith(("/save ", "/restore ")):
                history = _session_command(model, text, history, interactive)
                continue
            history.append(Message("user", _with_images(text, pending)))
            pending = []
            try:
                stream = model.chat(history, config, tools=args.tools, tool_choice=args.tool_choice)
                tokens = _stream_out(stream)
                answer = stream.text()
            except ContextOverflow as error:
                if not interactive:
                    raise
                history.pop()
                print(f"{_PROG}: {_one_line(error)}; /reset to start over", file=sys.stderr)
                continue
            _say_if_cut(stream, tokens, config)
            for call in stream.tool_calls:
                print(f"tool call {call.id}: {call.name} {json.dumps(call.arguments)}")
            history.append(
                Message("assistant", "", tool_calls=stream.tool_calls)
                if stream.tool_calls
                else _answered(answer, stream.reasoning_text())
            )
            if args.stats:
                _print_stats(stream)
    return 0


# -- main ---------------------------------------------------------------------


def _filter_note() -> str:
    value = os.environ.get("INFERENCE_BACKENDS")
    return f" (INFERENCE_BACKENDS={value} limits which backends load)" if value else ""


def _one_line(error: BaseException) -> str:
    """The message without a server log tail; other extra lines joined into one."""
    failed = error if isinstance(error, (ServerStartError, ServerCrashed)) else None
    message = str(error) if failed is None else failed.summary
    lines = [line.strip(" -") for line in message.splitlines() if line.strip()]
    text = lines[0].rstrip(":") if lines else type(error).__name__
    if len(lines) > 1:
        text += ": " + "; ".join(lines[1:])
    if isinstance(error, NoBackendAvailable):
        text += _filter_note()
    if isinstance(error, ContextOverflow):
        text += " (here: --ctx N)"
    if isinstance(error, TlsVerificationFailed) and "ca_bundle=" in text:
        text += " (here: --ca-bundle FILE)"
    if failed is not None and failed.log_tail:
        text += " (run with --debug to see the server's log)"
    return text


def _spinner_wanted(debug: bool) -> bool:
    """A load spinner on a terminal; never with --debug, whose lines would cut through it."""
    return sys.stderr.isatty() and not debug


def _configure_logging(debug: bool) -> None:
    """Only the CLI configures logging, once, at startup. On a terminal the spinner's
    handler takes the DEBUG lines of a loading server; stderr shows warnings only."""
    level = logging.DEBUG if debug else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(f"{_PROG}: %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if _spinner_wanted(debug):
        root.addHandler(LATEST)
        level = logging.DEBUG
    root.setLevel(level)
    # huggingface_hub prints its records through a handler of its own, added when it is
    # imported (for hf:// names); passed on to ours as well, each would show twice.
    logging.getLogger("huggingface_hub").propagate = False


def _fail(error: BaseException, debug: bool, *, internal: bool = False) -> int:
    if debug:
        traceback.print_exception(error)
    prefix = "internal error: " if internal else ""
    hint = " (run with --debug for the traceback)" if internal and not debug else ""
    print(f"{_PROG}: error: {prefix}{_one_line(error)}{hint}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    _configure_logging("--debug" in arguments)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except _UsageError as error:
        print(f"{_PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except InvalidValue as error:  # before loading, or from the backend (a schema it refused)
        option = _OPTION_OF.get(error.field, "--" + error.field.replace("_", "-"))
        print(
            f"{_PROG} {args.command}: error: argument {option}: {_one_line(error)}", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print(f"\n{_PROG}: interrupted", file=sys.stderr)
        return _INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit flush quiet too.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _BROKEN_PIPE
    except InferenceError as error:
        return _fail(error, args.debug)
    except OSError as error:
        return _fail(error, args.debug)
    except Exception as error:
        return _fail(error, args.debug, internal=True)
