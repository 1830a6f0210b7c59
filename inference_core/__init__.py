"""inference_core: run local LLMs through pluggable backends.

import inference_core as ic
with ic.load("model.gguf", context_len=4096) as model:
    for token in model.generate("The capital of France is", max_tokens=16):
        print(token.text, end="", flush=True)
"""

from __future__ import annotations

from .errors import (
    BackendNotFound,
    BackendUnavailable,
    Cancelled,
    ContextOverflow,
    GenerationError,
    GenerationTimeout,
    InferenceError,
    InvalidModelFile,
    InvalidValue,
    ModelClosed,
    ModelLoadError,
    NoBackendAvailable,
    ServerCrashed,
    ServerStartError,
    UnsupportedOption,
)
from .hookspecs import hookimpl
from .protocols import (
    AsyncTokenStream,
    Backend,
    BackendStatus,
    CancelSignal,
    TextModel,
    TokenStream,
)
from .registry import (
    aload,
    backends,
    default_backend,
    get_backend,
    inspect_model,
    load,
    register,
    unregister,
)
from .types import (
    BatchResult,
    GenerateConfig,
    GenerateMetrics,
    LoadConfig,
    Message,
    ModelInfo,
    Token,
    ToolCall,
)

__all__ = [
    "AsyncTokenStream",
    "Backend",
    "BackendNotFound",
    "BackendStatus",
    "BackendUnavailable",
    "BatchResult",
    "CancelSignal",
    "Cancelled",
    "ContextOverflow",
    "GenerateConfig",
    "GenerateMetrics",
    "GenerationError",
    "GenerationTimeout",
    "InferenceError",
    "InvalidModelFile",
    "InvalidValue",
    "LoadConfig",
    "Message",
    "ModelClosed",
    "ModelInfo",
    "ModelLoadError",
    "NoBackendAvailable",
    "ServerCrashed",
    "ServerStartError",
    "TextModel",
    "Token",
    "TokenStream",
    "ToolCall",
    "UnsupportedOption",
    "aload",
    "backends",
    "default_backend",
    "get_backend",
    "hookimpl",
    "inspect_model",
    "load",
    "register",
    "unregister",
]

__version__ = "0.1.0"
