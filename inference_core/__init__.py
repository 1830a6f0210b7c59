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
    ConnectionLost,
    ContextOverflow,
    GenerationError,
    GenerationTimeout,
    InferenceError,
    InvalidModelFile,
    InvalidValue,
    KeyRefused,
    ModelClosed,
    ModelLoadError,
    NoBackendAvailable,
    ServerCrashed,
    ServerNotReady,
    ServerStartError,
    ServerUnreachable,
    TlsVerificationFailed,
    UnexpectedServer,
    UnsupportedOption,
    WorkersUnreachable,
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
    "ConnectionLost",
    "ContextOverflow",
    "GenerateConfig",
    "GenerateMetrics",
    "GenerationError",
    "GenerationTimeout",
    "InferenceError",
    "InvalidModelFile",
    "InvalidValue",
    "KeyRefused",
    "LoadConfig",
    "Message",
    "ModelClosed",
    "ModelInfo",
    "ModelLoadError",
    "NoBackendAvailable",
    "ServerCrashed",
    "ServerNotReady",
    "ServerStartError",
    "ServerUnreachable",
    "TextModel",
    "TlsVerificationFailed",
    "Token",
    "TokenStream",
    "ToolCall",
    "UnexpectedServer",
    "UnsupportedOption",
    "WorkersUnreachable",
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
