"""inference_rocm: llama.cpp's llama-server as an inference_core backend.

Backends `rocm` (AMD GPUs through ROCm) and `llama_cpp` (any llama-server
build, the CPU included), registered through the `inference_core.backends`
entry point on Linux x86_64 only; `remote` (a llama-server someone else runs, at
an http(s):// URL) on every platform.
"""

from __future__ import annotations

__all__: list[str] = []
