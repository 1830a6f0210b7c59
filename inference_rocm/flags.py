"""LoadConfig to llama-server's command line: one table of field, flags and checks.

Each entry of `_FLAGS` turns one `LoadConfig` field into the flags it becomes (none at
its default), refusing a value llama-server would misread and a clash with the user's
own `extra_args`. `SERVER_FIELDS` is what the table (with the GPU plan and the user's
own flags) sets: the fields that shape a server as it starts, which the remote backend,
attaching to a running one, refuses.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence

from inference_core.errors import InvalidChatTemplate, InvalidValue
from inference_core.types import LoadConfig, refuse_options

from . import cpus

__all__ = [
    "SERVER_FIELDS",
    "VERBOSITY_FLAGS",
    "cache_type_args",
    "chat_template_args",
    "chat_template_error",
    "explains_refusal",
    "keep_alive_args",
    "refused_template",
    "server_args",
    "speculative_args",
    "user_sets",
]

_ALL_LAYERS = "999"  # llama-server clamps this to the model's layer count
# Linux takes no longer argument on a command line (MAX_ARG_STRLEN, its NUL included).
_MAX_ARGUMENT = 32 * 4096 - 1
_REMOTE_ONLY = ("api_key", "ca_bundle", "verify_tls", "model")  # for a server at a URL


def user_sets(flags: tuple[str, ...], user_args: Sequence[str]) -> bool:
    """Whether the user's own arguments hold one of ``flags`` (``--flag=value`` too)."""
    return any(arg.split("=", 1)[0] in flags for arg in user_args)


def _user_value(flags: tuple[str, ...], user_args: Sequence[str]) -> str | None:
    """The value the user's own arguments give one of ``flags`` (the last one wins)."""
    value = None
    for position, arg in enumerate(user_args):
        name, equals, given = arg.partition("=")
        if name in flags:
            if equals:
                value = given
            elif position + 1 < len(user_args):
                value = user_args[position + 1]
    return value


def _refuse_clash(config: LoadConfig, field: str, flags: tuple[str, ...]) -> None:
    """A field and the user's own flag for the same setting: keep one of them."""
    if user_sets(flags, config.extra_args):
        raise InvalidValue(
            field,
            f"{field} and a {flags[-1]} in extra_args {config.extra_args!r} both set it; "
            "keep one of them",
        )


def _threads(config: LoadConfig) -> list[str]:
    """--threads: the config's, or every core but one; none if extra_args sets it."""
    if not user_sets(("-t", "--threads"), config.extra_args):
        return ["--threads", str(config.threads or cpus.default_threads())]
    if config.threads:
        raise InvalidValue(
            "threads",
            f"threads={config.threads} and a --threads in extra_args {config.extra_args!r} "
            "disagree on one setting; keep one of them",
        )
    return []


def _rpc(config: LoadConfig) -> list[str]:
    """--rpc for the workers in rpc_servers; a --rpc in extra_args as well is a clash."""
    if not config.rpc_servers:
        return []
    if user_sets(("--rpc",), config.extra_args):
        raise InvalidValue(
            "rpc_servers",
            f"rpc_servers={config.rpc_servers!r} and a --rpc in extra_args "
            f"{config.extra_args!r} both name the workers; keep one of them",
        )
    return ["--rpc", ",".join(config.rpc_servers)]


def _context(config: LoadConfig) -> list[str]:
    """--ctx-size: llama-server divides its context among the slots; ours is per sequence."""
    if config.context_len <= 0:
        return []
    return ["--ctx-size", str(config.context_len * max(1, config.parallel_slots))]


def _parallel(config: LoadConfig) -> list[str]:
    """--parallel. Each slot gets its own part of the KV cache: with a unified cache the
    numerics of one sequence depend on what the others hold, and greedy output stops
    being reproducible under concurrency."""
    return ["--parallel", str(config.parallel_slots)] if config.parallel_slots > 0 else []


def _lora(config: LoadConfig) -> list[str]:
    return [] if config.adapter_path is None else ["--lora", config.adapter_path]


def _mmproj(config: LoadConfig) -> list[str]:
    """--mmproj: the projector that turns images into the model's embeddings."""
    return ["--mmproj", os.path.abspath(config.mmproj)] if config.mmproj else []


def _is_template_text(value: str) -> bool:
    """A template's text, not a path: every chat template has a `{{` or a `{%`."""
    return "{{" in value or "{%" in value


def chat_template_args(config: LoadConfig) -> list[str]:
    """--jinja (before the template: builds where it is off accept only the templates
    they know by name otherwise), then --chat-template-file for a path or
    --chat-template for the text; llama-server reads either once, as it starts."""
    template = config.chat_template
    if template is None:
        return []
    if user_sets(("--chat-template", "--chat-template-file"), config.extra_args):
        raise InvalidValue(
            "chat_template",
            f"chat_template and a --chat-template in extra_args {config.extra_args!r} both "
            "name the template; keep one of them",
        )
    if not _is_template_text(template):
        if not os.path.isfile(template):
            raise InvalidValue(
                "chat_template",
                f"chat_template {template!r} is not a file, nor a template's text (which "
                "holds {{ or {%): give the path of a Jinja template file, or the template",
            )
        return ["--jinja", "--chat-template-file", os.path.abspath(template)]
    size = len(template.encode("utf-8", "surrogatepass"))
    if "\0" in template or size > _MAX_ARGUMENT:
        raise InvalidValue(
            "chat_template",
            f"the chat template's text ({size} bytes) cannot be passed on a command line "
            f"(at most {_MAX_ARGUMENT} bytes, no NUL): write it to a file and give its path",
        )
    return ["--jinja", "--chat-template", template]


def cache_type_args(config: LoadConfig) -> list[str]:
    """--cache-type-k/-v: a quantized V cache needs flash attention (on unless turned off)."""
    if config.cache_type == "f16":
        return []
    _refuse_clash(config, "cache_type", ("-ctk", "-ctv", "--cache-type-k", "--cache-type-v"))
    if _user_value(("-fa", "--flash-attn"), config.extra_args) in ("off", "0", "false"):
        raise InvalidValue(
            "cache_type",
            f"cache_type={config.cache_type!r} needs flash attention, which extra_args "
            f"{config.extra_args!r} turns off: drop that flag, or use cache_type='f16'",
        )
    return ["--cache-type-k", config.cache_type, "--cache-type-v", config.cache_type]


_SPECULATION_FLAGS = ("--spec-type", "-md", "--model-draft", "--spec-draft-model")
# llama-server's n-gram drafter guesses nothing shorter than this (--spec-ngram-mod-n-min).
_NGRAM_FEWEST = 48


def speculative_args(config: LoadConfig) -> list[str]:
    """--spec-type and the draft limits: llama-server names them per kind of drafter."""
    if config.speculative == "off":
        return []
    _refuse_clash(config, "speculative", _SPECULATION_FLAGS)
    if config.speculative == "ngram":
        args = ["--spec-type", "ngram-mod"]
        most, fewest = "--spec-ngram-mod-n-max", "--spec-ngram-mod-n-min"
        least = config.draft_min or min(_NGRAM_FEWEST, config.draft_max)
    else:
        assert config.draft_model is not None  # LoadConfig checks the two agree
        if config.embeddings:
            raise InvalidValue(
                "draft_model",
                "llama-server aborts loading a draft model beside embeddings=True (a "
                "failed assertion, measured on the pinned build): load the model for "
                "embeddings on its own, or use speculative='ngram'",
            )
        args = ["--spec-type", "draft-simple", "--spec-draft-model"]
        args.append(os.path.abspath(config.draft_model))
        most, fewest = "--spec-draft-n-max", "--spec-draft-n-min"
        least = config.draft_min
    if config.draft_max:
        args += [most, str(config.draft_max)]
    if least:
        args += [fewest, str(least)]
    return args


# The table: each field and the flags it becomes, in the order they are passed.
def keep_alive_args(config: LoadConfig) -> list[str]:
    """llama-server's sleep: after so many idle seconds (whole ones) it frees the model."""
    if config.keep_alive is None:
        return []
    return ["--sleep-idle-seconds", str(math.ceil(config.keep_alive))]


_FLAGS: tuple[tuple[str, Callable[[LoadConfig], list[str]]], ...] = (
    ("threads", _threads),
    ("rpc_servers", _rpc),
    ("context_len", _context),
    ("parallel_slots", _parallel),
    ("adapter_path", _lora),
    ("chat_template", chat_template_args),
    ("mmproj", _mmproj),
    ("keep_alive", keep_alive_args),
    ("cache_type", cache_type_args),
    ("speculative", speculative_args),
)
# gpu_layers and devices are planned against the GPUs (--n-gpu-layers, the GPU variables).
# restart is the keeper's (keeper.py).
SERVER_FIELDS = (
    *(field for field, _ in _FLAGS),
    "gpu_layers",
    "devices",
    "draft_model",
    "draft_max",
    "draft_min",
    "extra_args",
    "restart",
)


# Verbosity 4 logs where the layers went (placement.py), a few lines a load and a request.
VERBOSITY_FLAGS = ("-lv", "--verbosity", "--log-verbosity", "-v", "--verbose", "--log-verbose")


def _verbosity(config: LoadConfig) -> list[str]:
    return [] if user_sets(VERBOSITY_FLAGS, config.extra_args) else ["-lv", "4"]


def server_args(config: LoadConfig, gpu_layers: int | None) -> list[str]:
    """llama-server flags for a LoadConfig, the user's own last; gpu_layers None leaves
    offloading to the server.

    A server we start on a file has no key to send nor certificate to check: an option
    for one at a URL is refused, never ignored."""
    refuse_options(
        config,
        _REMOTE_ONLY,
        lambda name: (
            f"{name} is for a llama-server at an http(s):// URL (the remote "
            "backend), not for a model file, whose server is started here"
        ),
    )
    args = [*_verbosity(config), *(flag for _, flags in _FLAGS for flag in flags(config))]
    if gpu_layers is not None:
        args += ["--n-gpu-layers", _ALL_LAYERS if gpu_layers < 0 else str(gpu_layers)]
    return args + list(config.extra_args)


# llama-server checks a chat template as it starts, before loading the model: one it
# cannot parse or render ends it (status 1) with this line on stdout, and the engine's
# own words in its log (which may come out after it).
_REFUSED = "the supplied chat template is not supported"
_LOG_PREFIX = re.compile(r"^\d+\.\d+\.\d+\.\d+ [A-Z] \w+: ")
_TEMPLATE_ERROR = re.compile(r"^\d+\.\d+\.\d+\.\d+ E common_chat")
_GENERIC = (
    "failed to initialize chat template",
    "please consider disabling jinja",
    "failed to apply template: std::exception",
    "------------",
    _REFUSED,
)
_PROBLEM_LINES = 12
_PROBLEM_WIDTH = 300


def refused_template(config: LoadConfig, log: str) -> bool:
    """Whether a server that ended at start refused `config.chat_template`."""
    return config.chat_template is not None and _REFUSED in log


def _engine_words(log: str) -> list[str]:
    """The template engine's lines in a refusing server's log, its generic ones last."""
    lines = log.splitlines()
    start = next((n for n, line in enumerate(lines) if _TEMPLATE_ERROR.match(line)), len(lines))
    said = [_LOG_PREFIX.sub("", line).rstrip() for line in lines[start:]]
    kept = [line for line in said if line.strip() and _REFUSED not in line]
    return [line for line in kept if not line.strip().startswith(_GENERIC)] or kept


def explains_refusal(log: str) -> bool:
    """Whether the log holds the engine's reason, not only its generic lines: llama-server
    can exit before its logging thread writes the reason (upstream leaves that thread
    unflushed at exit), measured as 1 start in 6 to 40 here."""
    return any(not line.strip().startswith(_GENERIC) for line in _engine_words(log))


def chat_template_error(config: LoadConfig, logs: Sequence[str]) -> InvalidChatTemplate:
    """The `InvalidChatTemplate` of a server that refused `config.chat_template` at start,
    in the template engine's own words from the first of its `logs` that gives them."""
    assert config.chat_template is not None
    log = next((log for log in logs if explains_refusal(log)), logs[0])
    kept = _engine_words(log)
    problem = "\n".join(line[:_PROBLEM_WIDTH] for line in kept[:_PROBLEM_LINES])
    template = config.chat_template
    where = "given as text" if _is_template_text(template) else template
    return InvalidChatTemplate(
        where,
        f"llama-server does not parse or render it:\n{problem or 'it gave no reason'}\n"
        "Fix the template, or leave chat_template unset to use the model's own",
    )
