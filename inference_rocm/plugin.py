"""The `inference_core.backends` entry point: offers this package's backends."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable

import inference_core
from inference_core.protocols import Backend

__all__ = ["register_backends", "supported_platform"]


def supported_platform() -> bool:
    """llama-server builds and ROCm are only wired up for Linux on x86-64."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


@inference_core.hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    if not supported_platform():
        return
    from .backends import LlamaCppBackend

    register(LlamaCppBackend())
