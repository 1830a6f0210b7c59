"""The backends: `llama_cpp` (any llama-server build) and `rocm` (AMD GPUs through ROCm)."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence

from inference_core.errors import InvalidModelFile
from inference_core.protocols import BackendStatus
from inference_core.types import LoadConfig

from . import gguf_meta
from .model import LlamaServerModel
from .server import BinaryLookup, LlamaServer, ServerOptions, find_binary

__all__ = ["LlamaCppBackend", "binary_version", "load_with_server", "server_args"]

logger = logging.getLogger(__name__)

_ALL_LAYERS = "999"  # llama-server clamps this to the model's layer count


@functools.lru_cache(maxsize=16)
def _version_of(path: str, mtime: float) -> str:
    try:
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({error})"
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    wanted = [line for line in lines if line.startswith(("version:", "built with"))]
    return "; ".join(wanted or lines[-2:]) or f"unknown (exit status {result.returncode})"


def binary_version(path: str) -> str:
    """`llama-server --version`, cached per binary and modification time."""
    try:
        return _version_of(path, os.stat(path).st_mtime)
    except OSError as error:
        return f"unknown ({error.strerror})"


def server_args(config: LoadConfig, gpu_layers: int | None) -> list[str]:
    """llama-server flags for a LoadConfig; gpu_layers None leaves offloading to the server."""
    args: list[str] = []
    if config.context_len > 0:
        # llama-server divides its context among the slots; context_len is per sequence.
        total = config.context_len * max(1, config.parallel_slots)
        args += ["--ctx-size", str(total)]
    if gpu_layers is not None:
        args += ["--n-gpu-layers", _ALL_LAYERS if gpu_layers < 0 else str(gpu_layers)]
    if config.parallel_slots > 0:
        # Each slot gets its own part of the KV cache: with a unified cache the
        # numerics of one sequence depend on what the others hold, and greedy
        # output stops being reproducible under concurrency.
        args += ["--parallel", str(config.parallel_slots)]
    if config.adapter_path is not None:
        args += ["--lora", config.adapter_path]
    return args + list(config.extra_args)


def load_with_server(
    binary: str,
    path: str,
    config: LoadConfig,
    *,
    gpu_layers: int | None,
    environ: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    load_timeout: float = 120.0,
) -> LlamaServerModel:
    """Check the file, start llama-server on it, read back what it really runs with."""
    header = gguf_meta.read_header(path)
    info = gguf_meta.model_info(header)
    if config.adapter_path is not None:
        try:
            gguf_meta.read_header(config.adapter_path)
        except InvalidModelFile as error:
            raise InvalidModelFile(
                config.adapter_path, f"(the LoRA adapter) {error.problem}"
            ) from None
    options = ServerOptions(
        binary=binary,
        model_path=info.path,
        args=(*server_args(config, gpu_layers), *extra_args),
        environ=dict(environ) if environ is not None else {},
        load_timeout=load_timeout,
    )
    server = LlamaServer.start(options)
    try:
        props = server.client.request("GET", "/props")
        settings = props.get("default_generation_settings", {})
        context_len = int(settings.get("n_ctx") or config.context_len or info.context_length)
        slots = int(props.get("total_slots") or config.parallel_slots or 1)
    except BaseException:
        server.stop()
        raise
    return LlamaServerModel(
        server,
        info,
        model_type=info.architecture or "unknown",
        context_len=context_len,
        slots=slots,
    )


class LlamaCppBackend:
    """Any llama-server build, the CPU included: the fallback backend."""

    name = "llama_cpp"
    priority = 10

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def _lookup(self) -> BinaryLookup:
        return find_binary(self._environ)

    def available(self) -> bool:
        return self._lookup().path is not None

    def status(self) -> BackendStatus:
        lookup = self._lookup()
        if lookup.path is None:
            return BackendStatus(self.name, self.priority, False, lookup.problems)
        details = (
            f"llama-server: {lookup.path} (from {lookup.source})",
            f"build: {binary_version(lookup.path)}",
            *(f"note: {problem}" for problem in lookup.problems),
        )
        return BackendStatus(self.name, self.priority, True, (), details)

    def load_model(self, path: str, config: LoadConfig) -> LlamaServerModel:
        lookup = self._lookup()
        if lookup.path is None:
            from inference_core.errors import BackendUnavailable

            raise BackendUnavailable(f"{self.name}: " + "; ".join(lookup.problems), lookup.problems)
        gpu_layers = None if config.gpu_layers == "auto" else int(config.gpu_layers)
        return load_with_server(
            lookup.path, path, config, gpu_layers=gpu_layers, environ=self._environ
        )
