"""`inference serve`: an OpenAI-compatible endpoint for other programs, on llama-server.

One model is served as `load()` runs it (the backend's binary and GPU choice, the VRAM
pre-flight), on a loopback port of its own, behind a thin front (`front.Front`) on the
address asked for: the front answers chats that offer tools with the model's own tool
planning, which works whatever the model's template, and passes all else through.
Folders of models, and the Hugging Face cache, are served by llama-server's own router
(`--models-dir`, no `--model`) with no front: a request naming a model loads it in a
child process, and `--models-max` bounds how many stay loaded. Either way the server is
kept (`keeper.KeptServer`): one that dies is started again, within the same bound.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import final

import attrs

from inference_core import registry
from inference_core._cli_models import ModelEntry, cached_models, find_models
from inference_core.errors import InvalidValue, ModelLoadError
from inference_core.hub import fetched, resolve
from inference_core.types import LoadConfig

from . import cpus, wire
from .backends import LlamaCppBackend, RocmBackend, check_keep_alive
from .flags import cache_type_args, chat_template_args, keep_alive_args, speculative_args
from .front import Front
from .keeper import KeptServer
from .model import LlamaServerModel
from .server import HOST, Listen, LlamaServer, ServerOptions

__all__ = ["Served", "check_listen", "describe", "serve_folders", "serve_model"]

logger = logging.getLogger(__name__)

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@final
@attrs.frozen
class Served:
    """What `inference serve` started: where clients connect, the models they can name,
    the kept server, and what else stops with it: the front and the model it serves, or
    the folder of links the router reads."""

    url: str
    models: tuple[str, ...]
    server: KeptServer
    model: LlamaServerModel[KeptServer] | None = None
    front: Front | None = None
    catalog: str | None = None
    keyed: bool = False  # whether clients must send a key

    def stop(self) -> None:
        """Stop the front and the server (a router stops its children), remove the links."""
        if self.front is not None:
            self.front.stop()
        if self.model is not None:
            self.model.close()  # which stops its server
        else:
            self.server.stop()
        if self.catalog is not None:
            shutil.rmtree(self.catalog, ignore_errors=True)


def check_listen(host: str, port: int, api_key: str | None) -> Listen:
    """Loopback needs no key; any other address does, or anyone who reaches it uses it."""
    if not 1 <= port <= 65535:
        raise InvalidValue("port", f"--port must be in 1-65535, got {port}")
    if host not in _LOOPBACK and not api_key:
        raise InvalidValue(
            "api_key",
            f"serving on {host} lets other machines in: give them a key with --api-key "
            "(or LLAMA_API_KEY), or serve on 127.0.0.1",
        )
    return Listen(host, port, api_key or None)


def _backend(
    name: str, location: str, listen: Listen, environ: Mapping[str, str] | None
) -> LlamaCppBackend | RocmBackend:
    """The backend `load()` would choose, made to listen where asked."""
    chosen = registry.choose_backend(location, name).name
    if chosen == "rocm":
        return RocmBackend(environ=environ, listen=listen)
    if chosen == "llama_cpp":
        return LlamaCppBackend(environ, listen=listen)
    raise InvalidValue(
        "backend", f"inference serve runs llama-server: backend rocm or llama_cpp, not {chosen}"
    )


def _url(listen: Listen) -> str:
    """Where clients connect: the address asked for, and llama-server's OpenAI paths."""
    return LlamaServer.url_of(listen.host, listen.port) + "/v1"


def _model_ids(server: KeptServer) -> tuple[str, ...]:
    """The ids `GET /v1/models` lists: the names clients send as `model`."""
    return tuple(sorted(wire.model_ids(server.client.request("GET", "/v1/models"))))


def serve_model(
    location: str,
    config: LoadConfig,
    *,
    backend: str,
    listen: Listen,
    environ: Mapping[str, str] | None = None,
) -> Served:
    """One model, loaded as `load()` loads it, behind a front on `listen`."""
    front = Front(listen)  # the port is taken before the model loads, or refused at once
    try:
        private = Listen(HOST, 0, listen.api_key)  # the key checks what the front passes on
        chosen = _backend(backend, location, private, environ)
        path, mmproj = resolve(location, config.mmproj)
        name = os.path.basename(path).removesuffix(".gguf")  # as the router names a model
        loading = attrs.evolve(
            config,
            backend=chosen.name,
            mmproj=mmproj,
            draft_model=fetched(config.draft_model),
            extra_args=("--alias", name, *config.extra_args),
        )
        model = chosen.load_model(path, loading)
    except BaseException:
        front.stop()
        raise
    front.start(model, model.server, name)
    return Served(
        _url(listen),
        _model_ids(model.server),
        model.server,
        model,
        front=front,
        keyed=bool(listen.api_key),
    )


def _usable(entries: Iterable[ModelEntry]) -> list[ModelEntry]:
    """Models a router can load: whole, readable, and not a projector."""
    usable = []
    for entry in entries:
        if entry.status != "ok" or entry.info is None:
            logger.warning("not serving %s: %s", entry.path, entry.error or entry.status)
        elif entry.info.architecture != "clip":
            usable.append(entry)
    return usable


def _link(entries: Sequence[ModelEntry], catalog: str) -> None:
    """One link per model in `catalog`, named for it (a split model's parts in a folder
    of their own), so the router sees every folder's models in one place."""
    taken: set[str] = set()
    for entry in entries:
        stem = os.path.basename(entry.path).removesuffix(".gguf")
        name, number = stem, 1
        while name.lower() in taken:
            number += 1
            name = f"{stem}-{number}"
        taken.add(name.lower())
        if len(entry.parts) > 1:
            folder = os.path.join(catalog, name)
            os.mkdir(folder)
            for part in entry.parts:
                os.symlink(os.path.realpath(part), os.path.join(folder, os.path.basename(part)))
        else:
            os.symlink(os.path.realpath(entry.path), os.path.join(catalog, name + ".gguf"))


def serve_folders(
    folders: Sequence[str],
    *,
    include_cache: bool,
    backend: str,
    listen: Listen,
    max_models: int,
    config: LoadConfig,
    environ: Mapping[str, str] | None = None,
) -> Served:
    """Every model of `folders` (and of the Hugging Face cache), on llama-server's router."""
    if max_models < 1:
        raise InvalidValue("max_models", f"--max-models must be 1 or more, got {max_models}")
    for folder in folders:
        if not os.path.isdir(folder):
            raise InvalidValue("models_dir", f"--models-dir {folder!r} is not a folder")
    found = [entry for folder in folders for entry in find_models(folder)]
    entries = _usable([*found, *(cached_models() if include_cache else [])])
    if not entries:
        where = ", ".join(folders) or "the Hugging Face cache"
        raise ModelLoadError(f"no GGUF model to serve in {where}")
    launch = _backend(backend, entries[0].path, listen, environ).router_launch()
    check_keep_alive(launch.binary, config)
    if config.draft_model is not None:
        raise InvalidValue(
            "draft_model",
            "a draft model drafts for one model, and a folder holds many: serve that model "
            "alone (inference serve MODEL --draft-model DRAFT), or use --speculative ngram",
        )
    catalog = tempfile.mkdtemp(prefix="inference-serve-")
    try:
        _link(entries, catalog)
        args = (
            "--models-dir", catalog,
            "--models-max", str(max_models),
            "--threads", str(config.threads or cpus.default_threads()),
            *(["--ctx-size", str(config.context_len)] if config.context_len else []),
            *(["--embeddings"] if config.embeddings else []),
            *chat_template_args(config),
            *keep_alive_args(config),
            *cache_type_args(config),
            *speculative_args(config),
            *launch.args,
        )  # fmt: skip
        options = ServerOptions(
            binary=launch.binary,
            model_path="",  # the router: models come from --models-dir
            args=args,
            environ=environ,
            gpu_selection=launch.gpu_selection,
            listen=listen,
            load_timeout=config.load_timeout,
        )
        router = LlamaServer.start(options)
        server = KeptServer(router, lambda: LlamaServer.start(options))
        return Served(
            _url(listen), _model_ids(server), server, catalog=catalog, keyed=bool(listen.api_key)
        )
    except BaseException:
        shutil.rmtree(catalog, ignore_errors=True)
        raise


def describe(served: Served) -> list[str]:
    """What `inference serve` prints once it serves: its last line says where."""
    keyed = ["clients send the API key as a bearer token (not shown)"] if served.keyed else []
    return [
        *(f"model: {name}" for name in served.models),
        *keyed,
        f"serving on {served.url} (OpenAI-compatible; Ctrl-C stops it)",
    ]
