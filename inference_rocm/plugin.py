"""The `inference_core.backends` entry point: offers this package's backends."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable

import inference_core
from inference_core.protocols import Backend

__all__ = ["inspect_model", "register_backends", "register_commands", "supported_platform"]


def supported_platform() -> bool:
    """llama-server builds and ROCm are only wired up for Linux on x86-64."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


@inference_core.hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    """`remote` everywhere: it starts no binary, so a laptop of any kind reaches a
    llama-server on a GPU machine; the local backends only where their builds run."""
    if supported_platform():
        from .backends import LlamaCppBackend, RocmBackend

        register(RocmBackend())
        register(LlamaCppBackend())
    from .remote import RemoteBackend

    register(RemoteBackend())


@inference_core.hookimpl
def inspect_model(path: str) -> inference_core.ModelInfo | None:
    """GGUF metadata on any platform: reading a header needs no server.

    A file is ours when it ends in `.gguf` or starts with the GGUF magic; a
    broken one of ours raises `InvalidModelFile` saying what is wrong.
    """
    from . import gguf_meta

    if not path.lower().endswith(".gguf") and not gguf_meta.starts_with_magic(path):
        return None
    return gguf_meta.model_info(gguf_meta.read_header(path))


@inference_core.hookimpl
def register_commands(subparsers: object) -> None:
    """`inference server build|list|remove`, `inference serve` and `inference rpc-worker`."""
    from .commands import add_serve_command, add_server_commands
    from .rpc_worker import add_worker_command

    add_server_commands(subparsers)
    add_serve_command(subparsers)
    add_worker_command(subparsers)
