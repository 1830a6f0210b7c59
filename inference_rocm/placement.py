"""Where llama-server put a model's layers, read from its log.

At log verbosity 4 llama.cpp says how many layers it offloaded (``load_tensors:
offloaded 20/31 layers to GPU``, the output layer counted as one) and the KV cache
each device holds (``llama_kv_cache: Vulkan0 KV buffer size = 7.12 MiB``). The
offloaded layers are shared among the GPUs as their KV caches are (every repeating
layer keeps the same cache), so the per-device counts come from the server itself,
after any shrinking its ``--fit`` did, not from what we asked for.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["CPU", "Placement", "read_placement"]

CPU = "CPU"
_OFFLOADED = re.compile(r"load_tensors: offloaded ([0-9]{1,6})/([0-9]{1,6}) layers to GPU")
_KV_BUFFER = re.compile(r"llama_kv_cache: +([^\s=]{1,80}) KV buffer size = +([0-9.]{1,12}) MiB")
# Buffer names: "CPU_Mapped", "Vulkan0", "ROCm1", "RPC0[10.0.0.2:50052]".
_MODEL_BUFFER = re.compile(r"load_tensors: +([^\s=]{1,80}) model buffer size")


@attrs.frozen
class Placement:
    """How many of a model's ``total`` layers each device holds, as llama.cpp counts them
    (the repeating layers and the output layer): ``(("CPU", 11), ("Vulkan0", 20))``."""

    layers: tuple[tuple[str, int], ...]
    total: int

    def on(self, device: str) -> int:
        """The layers ``device`` ("CPU", "Vulkan0", "ROCm1", ...) holds; 0 if none."""
        return sum(count for name, count in self.layers if name == device)

    @property
    def gpu_layers(self) -> int:
        """Layers on any device but the CPU."""
        return self.total - self.on(CPU)

    def describe(self) -> str:
        """'Vulkan0 31 of 31 layers' or 'CPU 11, Vulkan0 20 of 31 layers'."""
        held = ", ".join(f"{name} {count}" for name, count in self.layers)
        return f"{held} of {self.total} layers"


def read_placement(log: str) -> Placement | None:
    """The placement a llama-server log reports; None where it says nothing of it (a
    verbosity below 4, a server that has not loaded yet, a build that names its buffers
    otherwise). Never raises."""
    offloaded = _OFFLOADED.search(log)
    if offloaded is None:
        return None
    total = int(offloaded[2])
    if not _MODEL_BUFFER.search(log):
        return None  # a build whose buffers this reading does not know: no guess
    gpus = _gpu_shares(log)
    # A build with no GPU says it "offloaded" the layers all the same, to the CPU.
    count = min(int(offloaded[1]), total) if gpus else 0
    layers: list[tuple[str, int]] = []
    if count < total:
        layers.append((CPU, total - count))
    left = count
    for position, (name, share) in enumerate(gpus.items()):
        held = left if position == len(gpus) - 1 else min(left, round(count * share))
        left -= held
        if held:
            layers.append((name, held))
    return Placement(tuple(layers), total)


def _gpu_shares(log: str) -> dict[str, float]:
    """Each GPU's part of the offloaded layers: its part of the GPUs' KV cache, or equal
    parts among the GPUs that hold weights where there is no cache (an embedding model)."""
    caches: dict[str, float] = {}
    for name, size in _KV_BUFFER.findall(log):
        if not _on_host(name):
            try:
                caches[name] = caches.get(name, 0.0) + float(size)
            except ValueError:
                continue
    total = sum(caches.values())
    if total > 0:
        return {name: size / total for name, size in caches.items()}
    holding = dict.fromkeys(n for n in _MODEL_BUFFER.findall(log) if not _on_host(n))
    return {name: 1 / len(holding) for name in holding}


def _on_host(buffer: str) -> bool:
    """CPU buffers ("CPU", "CPU_Mapped", "CPU_REPACK") and GPU-visible host memory
    ("Vulkan_Host", "ROCm_Host") are the host's; an RPC worker's ("RPC0[host:port]") not."""
    return buffer.startswith(CPU) or buffer.endswith("_Host")
