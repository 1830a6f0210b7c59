"""VRAM pre-flight: will the model fit on the chosen GPUs, and with how many layers?

llama-server that runs out of GPU memory dies half-way through a load with a
`hipMalloc failed` deep in its log; checking first turns that into an error with
the numbers and the fix, and lets ``gpu_layers="auto"`` pick a layer count.

The estimate follows how llama.cpp places a model: it counts the output layer as
one more layer, offloaded first, so ``--n-gpu-layers k`` puts the output layer and
the last k - 1 repeating layers (weights and their KV cache) on the GPUs (read back
from the pinned build's log: 1 offloads the output alone, 31 all of SmolLM2's 30
layers); the token embeddings stay on the host. With several GPUs the layers are
split in proportion to free VRAM (our ``--tensor-split``), and every GPU holds a
compute buffer.

Context: ``LoadConfig.context_len`` is per sequence, and each of the
``parallel_slots`` gets a KV cache that long. When it is 0 the server starts
from the model's trained length (shared by the slots) but, with ``--fit`` (on
by default), shrinks an unset context down to 4096 tokens before giving up; so
the estimate reports the trained length, while the check only requires the
smaller of the two to fit. The KV cache is counted at ``LoadConfig.cache_type``
(one quantised through ``extra_args`` instead makes the estimate pessimistic).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Protocol

import attrs

from inference_core.errors import ModelLoadError
from inference_core.types import LoadConfig

from .devices import size_text
from .gguf_meta import GgufHeader

__all__ = [
    "FIT_CONTEXT_FLOOR",
    "HEADROOM",
    "Device",
    "ModelMemory",
    "model_memory",
    "plan_gpu_layers",
]

logger = logging.getLogger(__name__)

_MIB = 1 << 20
_GIB = 1 << 30
# Left free on each GPU for the HIP runtime, its code objects and fragmentation
# (a HIP context alone takes a few hundred MiB; llama.cpp's --fit keeps 1 GiB).
HEADROOM = 512 * _MIB
FIT_CONTEXT_FLOOR = 4096  # llama-server's --fit-ctx default: it shrinks no further
_UBATCH = 512  # llama-server's default micro-batch (-ub)
_F16 = 2
_F32 = 4
# Bytes of 32 cached values: f16, and llama.cpp's blocks of 32 (an f16 scale and 32
# 8- or 4-bit values).
_CACHE_BYTES_PER_32 = {"f16": 32 * _F16, "q8_0": 2 + 32, "q4_0": 2 + 16}
_LAYER = re.compile(r"blk\.([0-9]+)\.")
_OUTPUT = ("output.weight", "output_norm.weight")


class Device(Protocol):
    """What the plan needs of a GPU: ROCm's (`devices.GpuDevice`) and one a llama-server
    lists (`server_devices.ServerDevice`, e.g. Vulkan) alike."""

    @property
    def vram_free(self) -> int: ...

    def describe(self) -> str: ...


@attrs.frozen
class ModelMemory:
    """What one model needs, in bytes, for ``sequences`` of ``context_len`` tokens.

    ``layer_weights`` are the repeating layers' tensors (``blk.N.*``) by layer;
    ``host_weights`` the rest of the file (token embeddings, output); and
    ``output_weights`` what offloading the output layer puts on a GPU (the output
    matrix, or a copy of the token embeddings when the model ties them).
    """

    context_len: int
    sequences: int
    layer_weights: tuple[int, ...]
    host_weights: int
    output_weights: int
    kv_per_layer: int
    compute: int
    cache_type: str = "f16"

    @property
    def layers(self) -> int:
        return len(self.layer_weights)

    @property
    def weights(self) -> int:
        """All tensors in the file: what a CPU-only server maps."""
        return sum(self.layer_weights) + self.host_weights

    @property
    def kv_cache(self) -> int:
        return self.kv_per_layer * self.layers

    @property
    def total(self) -> int:
        """Weights, KV cache and one compute buffer: the whole model on one device."""
        return self.weights + self.kv_cache + self.compute

    def on_gpus(self, gpu_layers: int) -> tuple[int, bool]:
        """(repeating layers, whether the output layer) that ``--n-gpu-layers`` offloads:
        the output first, then the last repeating layers; -1 or any count above the
        layer count offloads everything."""
        count = self.layers + 1 if gpu_layers < 0 else min(gpu_layers, self.layers + 1)
        return max(0, count - 1), count > 0

    def offloaded(self, gpu_layers: int) -> tuple[int, int]:
        """(bytes split across the GPUs, bytes on the last GPU only) for ``--n-gpu-layers``."""
        repeating, output = self.on_gpus(gpu_layers)
        split = sum(self.layer_weights[self.layers - repeating :]) + repeating * self.kv_per_layer
        return split, self.output_weights if output else 0

    def gpu_bytes(self, gpu_layers: int) -> int:
        """Everything the GPUs hold with ``gpu_layers`` offloaded, one compute buffer."""
        split, last = self.offloaded(gpu_layers)
        return split + last + (self.compute if gpu_layers != 0 else 0)


def model_memory(
    header: GgufHeader, context_len: int, sequences: int = 1, cache_type: str = "f16"
) -> ModelMemory:
    """Estimate weights, KV cache and compute buffer for ``sequences`` x ``context_len``.

    Weights are the GGUF tensor sizes. The KV cache is K and V for every layer: kv heads
    x (key + value head size) x all sequences' tokens, at 2 bytes a value for f16 and
    34 or 18 bytes a block of 32 for q8_0 or q4_0. The compute
    buffer (its attention mask spans one sequence) is
    llama.cpp's worst-case graph for one micro-batch with flash attention: f32
    activations of about 3 x n_ff + 4 x n_embd floats a token and the f16 attention
    mask over the context; fitted to the figures llama-server prints on the CPU (15.51
    MiB for SmolLM2-135M at 2048 tokens, 21.51 at 8192). GPU backends without flash
    attention need more; the per-GPU headroom absorbs that.
    """
    by_layer: dict[int, int] = {}
    host = 0
    sizes: dict[str, int] = {}
    for tensor in header.tensors:
        match = _LAYER.match(tensor.name)
        if match:
            layer = int(match.group(1))
            by_layer[layer] = by_layer.get(layer, 0) + tensor.n_bytes
        else:
            host += tensor.n_bytes
            sizes[tensor.name] = tensor.n_bytes
    layers = max(header.arch_value("block_count"), max(by_layer, default=-1) + 1)
    layer_weights = tuple(by_layer.get(index, 0) for index in range(layers))
    output = sizes.get("output.weight", sizes.get("token_embd.weight", 0))
    output += sizes.get("output_norm.weight", 0)

    n_embd = header.arch_value("embedding_length")
    n_head = header.arch_value("attention.head_count") or 1
    n_head_kv = header.arch_value("attention.head_count_kv") or n_head
    key = header.arch_value("attention.key_length") or n_embd // n_head
    value = header.arch_value("attention.value_length") or n_embd // n_head
    values = n_head_kv * (key + value) * context_len * sequences
    kv_per_layer = -(-values * _CACHE_BYTES_PER_32[cache_type] // 32)

    n_ff = header.arch_value("feed_forward_length") or 4 * n_embd
    ubatch = max(1, min(_UBATCH, context_len))
    padded = -(-context_len // 256) * 256
    compute = _F32 * ubatch * (3 * n_ff + 4 * n_embd) + _F16 * ubatch * padded
    return ModelMemory(
        context_len, sequences, layer_weights, host, output, kv_per_layer, compute, cache_type
    )


def _shares(devices: Sequence[Device]) -> list[float]:
    """Each device's part of the layers: proportional to free VRAM, as our --tensor-split."""
    free = [device.vram_free for device in devices]
    total = sum(free)
    return [f / total if total else 1 / len(devices) for f in free]


def _fits(memory: ModelMemory, gpu_layers: int, devices: Sequence[Device]) -> bool:
    if gpu_layers == 0:
        return True
    split, last = memory.offloaded(gpu_layers)
    for position, (device, share) in enumerate(zip(devices, _shares(devices), strict=True)):
        need = share * split + memory.compute + HEADROOM
        need += last if position == len(devices) - 1 else 0
        if need > device.vram_free:
            return False
    return True


def _most_layers(memory: ModelMemory, devices: Sequence[Device]) -> int:
    """The largest --n-gpu-layers that fits: layers + 1 means all."""
    count = memory.layers + 1
    while count > 0 and not _fits(memory, count, devices):
        count -= 1
    return count


def _largest_context(header: GgufHeader, devices: Sequence[Device], memory: ModelMemory) -> int:
    """The largest context_len (a multiple of 256, below ``memory``'s) that fits all layers."""
    low, high = 0, memory.context_len // 256
    while low < high:
        middle = (low + high + 1) // 2
        smaller = model_memory(header, middle * 256, memory.sequences, memory.cache_type)
        if _fits(smaller, -1, devices):
            low = middle
        else:
            high = middle - 1
    return low * 256


def plan_gpu_layers(header: GgufHeader, config: LoadConfig, devices: Sequence[Device]) -> int:
    """The ``--n-gpu-layers`` to run with (-1 = all) after checking the model fits.

    An explicit count (-1 included) that does not fit raises ``ModelLoadError`` with
    the numbers and the fix; ``"auto"`` returns the largest count that fits (0 when
    none does: the model then runs on the CPU). 0 is never checked.
    """
    slots, cache = max(1, config.parallel_slots), config.cache_type
    if config.context_len:
        memory = required = model_memory(header, config.context_len, slots, cache)
    else:  # the server's own length, shared by the slots; --fit may shrink it to the floor
        total = header.arch_value("context_length") or FIT_CONTEXT_FLOOR
        memory = required = model_memory(header, max(1, total // slots), slots, cache)
        if total > FIT_CONTEXT_FLOOR:
            required = model_memory(header, max(1, FIT_CONTEXT_FLOOR // slots), slots, cache)
    if config.gpu_layers == "auto":
        count = _most_layers(required, devices)
        logger.info(
            "gpu_layers='auto': %s of %d layers (the output layer counted) fit in %s with %s",
            "all" if count > required.layers else count,
            required.layers + 1,
            _describe(devices),
            _context(required),
        )
        return -1 if count > required.layers else count
    gpu_layers = int(config.gpu_layers)
    if _fits(required, gpu_layers, devices):
        if required is not memory and not _fits(memory, gpu_layers, devices):
            logger.info(
                "%s does not fit in %s; llama-server will shrink it (--fit)",
                _context(memory),
                _describe(devices),
            )
        return gpu_layers
    raise ModelLoadError(_not_fit_message(header, required, gpu_layers, devices))


def _not_fit_message(
    header: GgufHeader, memory: ModelMemory, gpu_layers: int, devices: Sequence[Device]
) -> str:
    layers = "all" if gpu_layers < 0 or gpu_layers > memory.layers else str(gpu_layers)
    split, last = memory.offloaded(gpu_layers)
    kv = memory.on_gpus(gpu_layers)[0] * memory.kv_per_layer
    weights = split + last - kv
    need = split + last + (memory.compute + HEADROOM) * len(devices)
    fits = _most_layers(memory, devices)
    context = _largest_context(header, devices, memory)
    fixes = [
        f"gpu_layers={fits} (or gpu_layers='auto') fits"
        if fits
        else "not even one layer fits: use gpu_layers=0 (CPU only)",
    ]
    if context >= 256:
        fixes.append(f"context_len={context} fits with every layer on the GPU")
    fixes += [
        f"cache_type={smaller!r} fits"
        for smaller in _SMALLER_CACHES.get(memory.cache_type, ())
        if _fits(_with_cache(header, memory, smaller), gpu_layers, devices)
    ][:1]
    compute, headroom = memory.compute * len(devices), HEADROOM * len(devices)
    return (
        f"{header.path} does not fit in GPU memory with {layers} of {memory.layers + 1} layers "
        f"(the output layer counted) offloaded and {_context(memory)}: it needs about "
        f"{size_text(need)} "
        f"(weights {size_text(weights)}, KV cache {size_text(kv)} at {memory.cache_type}, "
        f"compute buffers {size_text(compute)}, headroom {size_text(headroom)}), "
        f"which does not fit in the {size_text(sum(d.vram_free for d in devices))} free on "
        f"{_describe(devices)}. Load fewer layers or a smaller context: {'; '.join(fixes)}; "
        "or free GPU memory, or add a GPU with LoadConfig.devices."
    )


_SMALLER_CACHES = {"f16": ("q8_0", "q4_0"), "q8_0": ("q4_0",)}


def _with_cache(header: GgufHeader, memory: ModelMemory, cache_type: str) -> ModelMemory:
    return model_memory(header, memory.context_len, memory.sequences, cache_type)


def _context(memory: ModelMemory) -> str:
    if memory.sequences == 1:
        return f"a {memory.context_len}-token context"
    return f"a {memory.context_len}-token context for each of {memory.sequences} slots"


def _describe(devices: Sequence[Device]) -> str:
    return "; ".join(device.describe() for device in devices)
