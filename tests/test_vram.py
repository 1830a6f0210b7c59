"""The VRAM pre-flight: the estimate against the real server's own figures, and the plan.

The figures come from the pinned llama-server loading SmolLM2-135M on the CPU: at
``-lv 4`` it prints its model, KV cache and compute buffer sizes while loading.
"""

from __future__ import annotations

import logging
import re

import gguf
import pytest

from inference_core.errors import ModelLoadError
from inference_core.types import LoadConfig
from inference_rocm import gguf_meta
from inference_rocm.backends import load_with_server
from inference_rocm.devices import GpuDevice
from inference_rocm.gguf_meta import GgufHeader
from inference_rocm.vram import (
    FIT_CONTEXT_FLOOR,
    HEADROOM,
    ModelMemory,
    model_memory,
    plan_gpu_layers,
)

MIB = 1 << 20
GIB = 1 << 30
CONTEXT = 2048
BUFFER = re.compile(r"(model|KV|compute) buffer size\s*=\s*([0-9.]+) MiB")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(
    scope="module",
    params=[(CONTEXT, 0, "f16"), (512, 4, "f16"), (CONTEXT, 0, "q8_0"), (CONTEXT, 0, "q4_0")],
    ids=["2048-tokens", "4-slots-of-512", "q8_0-cache", "q4_0-cache"],
)
def measured(
    request: pytest.FixtureRequest, smollm2_path: str, llama_server_binary: str
) -> tuple[ModelMemory, dict[str, float]]:
    """Our estimate, and the MiB of each buffer kind the real server reports, for SmolLM2."""
    context_len, slots, cache_type = request.param
    server_log = logging.getLogger("inference_rocm.server.output")
    handler, level = _Lines(), server_log.level
    server_log.addHandler(handler)
    server_log.setLevel(logging.DEBUG)
    config = LoadConfig(
        context_len=context_len,
        parallel_slots=slots,
        cache_type=cache_type,
        extra_args=("-lv", "4"),
    )
    try:
        load_with_server(llama_server_binary, smollm2_path, config, gpu_layers=0).close()
    finally:
        server_log.removeHandler(handler)
        server_log.setLevel(level)
    figures: dict[str, float] = {}
    for line in handler.lines:
        for kind, mib in BUFFER.findall(line):
            figures[kind] = figures.get(kind, 0.0) + float(mib)
    assert set(figures) == {"model", "KV", "compute"}, "\n".join(handler.lines[-40:])
    header = gguf_meta.read_header(smollm2_path)
    return model_memory(header, context_len, max(1, slots), cache_type), figures


@pytest.fixture(scope="module")
def header(smollm2_path: str) -> GgufHeader:
    return gguf_meta.read_header(smollm2_path)


@pytest.fixture(scope="module")
def memory(header: GgufHeader) -> ModelMemory:
    return model_memory(header, CONTEXT)


def gpu(index: int, free: int, total: int = 24 * GIB) -> GpuDevice:
    return GpuDevice(index=index, gfx="gfx1100", native_gfx="gfx1100", name="test GPU",
                     vendor_id=0x1002, device_id=0x744C, vram_total=total,
                     vram_used=total - free, gtt_total=32 * GIB, integrated=False,
                     unique_id=None, pci_address=None, node=index + 1)  # fmt: skip


# SmolLM2-135M, worked by hand from its GGUF metadata (30 layers, n_embd 576, n_ff 1536,
# 3 KV heads of 64): the KV cache holds f16 K and V, 3 x (64 + 64) x 2 = 768 bytes a token
# and layer; the compute buffer, for a 512-token micro-batch, is f32 activations of
# 3 x 1536 + 4 x 576 = 6912 floats a token plus the f16 mask over the context:
# 512 x 6912 x 4 + 512 x context x 2 bytes; at 2048 tokens 16,252,928 (15.5 MiB, as
# llama-server reports), at 512 14,680,064, at 1024 15,204,352, at 4096 18,350,080.
KV_BYTES_PER_TOKEN_AND_LAYER = 768
COMPUTE = {512: 14_680_064, 1024: 15_204_352, 2048: 16_252_928, 4096: 18_350_080}


def sizes_of_tensors(path: str) -> dict[str, int]:
    """Each tensor's size as the gguf package (not our reader) reads the file."""
    return {t.name: int(t.n_bytes) for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def tensor_bytes(smollm2_path: str) -> dict[str, int]:
    return sizes_of_tensors(smollm2_path)


def room_for(sizes: dict[str, int], gpu_layers: int, context: int = CONTEXT) -> int:
    """The free VRAM one GPU needs for ``--n-gpu-layers gpu_layers`` (-1: all 31) at
    ``context`` tokens: the output layer (a copy of the tied token embeddings) and the
    last ``gpu_layers - 1`` repeating layers with their KV cache."""
    count = 31 if gpu_layers < 0 else gpu_layers
    layers = max(0, count - 1)
    layer = sum(n for name, n in sizes.items() if name.startswith("blk.0."))
    kv = layers * KV_BYTES_PER_TOKEN_AND_LAYER * context
    output = sizes["token_embd.weight"] + sizes["output_norm.weight"] if count else 0
    return layers * layer + kv + output + COMPUTE[context] + HEADROOM


# --- the estimate against llama-server's own figures -----------------------------------


def within(estimate: int, server_mib: float, tolerance: float = 0.20) -> bool:
    return abs(estimate / MIB - server_mib) <= tolerance * server_mib


@pytest.mark.server
def test_weights_estimate_matches_the_server_model_buffer(
    measured: tuple[ModelMemory, dict[str, float]],
) -> None:
    estimate, figures = measured
    assert within(estimate.weights, figures["model"])  # 92.10 MiB both


@pytest.mark.server
def test_kv_cache_estimate_matches_the_server_kv_buffer(
    measured: tuple[ModelMemory, dict[str, float]],
) -> None:
    estimate, figures = measured
    # 2048 cells in all: 45.00 MiB at f16, 23.91 at q8_0 and 12.66 at q4_0, both sides
    assert round(estimate.kv_cache / MIB, 2) == figures["KV"]


@pytest.mark.server
def test_compute_estimate_matches_the_server_compute_buffer(
    measured: tuple[ModelMemory, dict[str, float]],
) -> None:
    estimate, figures = measured
    assert within(estimate.compute, figures["compute"])  # 15.51 and 14.01 MiB


@pytest.mark.server
def test_total_estimate_matches_the_server_total(
    measured: tuple[ModelMemory, dict[str, float]],
) -> None:
    estimate, figures = measured
    assert within(estimate.total, sum(figures.values()), tolerance=0.05)


# --- the estimate's parts ---------------------------------------------------------------


def test_weights_are_split_by_layer_with_the_rest_on_the_host(
    header: GgufHeader, memory: ModelMemory
) -> None:
    assert memory.layers == 30
    assert sum(memory.layer_weights) + memory.host_weights == header.weights_bytes
    assert len(set(memory.layer_weights)) == 1  # SmolLM2's layers are all alike


def test_a_tied_output_layer_costs_a_copy_of_the_token_embeddings(
    header: GgufHeader, memory: ModelMemory
) -> None:
    sizes = {t.name: t.n_bytes for t in header.tensors}
    assert "output.weight" not in sizes
    assert memory.output_weights == sizes["token_embd.weight"] + sizes["output_norm.weight"]


def test_kv_cache_grows_with_the_context(header: GgufHeader) -> None:
    # 30 layers x 3 kv heads x (64 + 64) x 2 bytes = 23040 bytes a token.
    assert model_memory(header, 4096).kv_cache == 2 * model_memory(header, 2048).kv_cache
    assert model_memory(header, 1).kv_cache == 30 * 3 * 128 * 2


def test_each_slot_gets_a_kv_cache_of_context_len(header: GgufHeader) -> None:
    assert model_memory(header, 512, 4).kv_cache == model_memory(header, 2048).kv_cache
    assert model_memory(header, 512, 4).compute < model_memory(header, 2048).compute


def test_slots_multiply_the_kv_cache_the_plan_checks(
    header: GgufHeader, tensor_bytes: dict[str, int]
) -> None:
    device = [gpu(0, room_for(tensor_bytes, -1, context=1024))]
    assert plan_gpu_layers(header, LoadConfig(context_len=1024), device) == -1
    with pytest.raises(ModelLoadError, match="1024-token context for each of 4 slots"):
        plan_gpu_layers(header, LoadConfig(context_len=1024, parallel_slots=4), device)


def test_offloading_some_layers_takes_the_output_first_then_the_last_ones(
    memory: ModelMemory,
) -> None:
    assert memory.offloaded(10) == (
        sum(memory.layer_weights[21:]) + 9 * memory.kv_per_layer,
        memory.output_weights,
    )
    assert memory.offloaded(1) == (0, memory.output_weights)
    assert memory.offloaded(-1) == memory.offloaded(31) == memory.offloaded(999)
    assert memory.offloaded(-1)[0] == sum(memory.layer_weights) + 30 * memory.kv_per_layer
    assert memory.gpu_bytes(0) == 0


# --- the plan: fail with the numbers, or pick what fits --------------------------------


def test_all_layers_that_fit_are_kept(header: GgufHeader) -> None:
    config = LoadConfig(context_len=CONTEXT)
    assert plan_gpu_layers(header, config, [gpu(0, 23 * GIB)]) == -1


def test_all_layers_that_do_not_fit_raise_with_the_numbers_and_the_fix(
    header: GgufHeader, tensor_bytes: dict[str, int]
) -> None:
    device = gpu(0, room_for(tensor_bytes, 12) + MIB, total=8 * GIB)
    with pytest.raises(ModelLoadError) as caught:
        plan_gpu_layers(header, LoadConfig(context_len=CONTEXT), [device])
    message = str(caught.value)
    assert header.path in message
    assert "all of 31 layers (the output layer counted)" in message
    assert "2048-token context" in message
    assert "weights 92 MiB" in message  # 30 layers and the tied output copy
    assert "KV cache 45 MiB at f16" in message
    assert re.search(
        r"in the [0-9]+ MiB free on GPU 0: gfx1100 test GPU, VRAM [0-9]+ MiB free of 8.0 GiB\.",
        message,
    )
    assert "gpu_layers=12 (or gpu_layers='auto') fits" in message


@pytest.mark.parametrize(("cache_type", "ratio"), [("q8_0", 34 / 64), ("q4_0", 18 / 64)])
def test_a_quantized_cache_takes_its_share_of_the_f16_one(
    header: GgufHeader, cache_type: str, ratio: float
) -> None:
    quantized = model_memory(header, CONTEXT, cache_type=cache_type)
    assert quantized.kv_cache == pytest.approx(model_memory(header, CONTEXT).kv_cache * ratio)
    assert quantized.cache_type == cache_type


def test_a_load_that_fits_with_a_smaller_cache_is_told_so_and_it_fits(
    header: GgufHeader, tensor_bytes: dict[str, int]
) -> None:
    long = 4 * CONTEXT  # a long context: the cache outweighs the weights
    q8_0 = model_memory(header, long, cache_type="q8_0")
    device = gpu(0, q8_0.gpu_bytes(-1) + HEADROOM + MIB)
    with pytest.raises(ModelLoadError, match=r"cache_type='q8_0' fits") as caught:
        plan_gpu_layers(header, LoadConfig(context_len=long), [device])
    assert "q4_0" not in str(caught.value)  # the first that fits, not every one
    smaller = LoadConfig(context_len=long, cache_type="q8_0")
    assert plan_gpu_layers(header, smaller, [device]) == -1


def test_the_suggested_context_really_fits(
    header: GgufHeader, tensor_bytes: dict[str, int]
) -> None:
    device = gpu(0, room_for(tensor_bytes, 28))
    with pytest.raises(ModelLoadError) as caught:
        plan_gpu_layers(header, LoadConfig(context_len=CONTEXT), [device])
    match = re.search(r"context_len=([0-9]+) fits", str(caught.value))
    assert match is not None
    assert plan_gpu_layers(header, LoadConfig(context_len=int(match[1])), [device]) == -1


def test_no_room_for_one_layer_suggests_cpu_only(header: GgufHeader) -> None:
    with pytest.raises(ModelLoadError, match="use gpu_layers=0"):
        plan_gpu_layers(header, LoadConfig(context_len=CONTEXT), [gpu(0, HEADROOM)])


def test_auto_picks_the_largest_layer_count_that_fits(
    header: GgufHeader, tensor_bytes: dict[str, int]
) -> None:
    config = LoadConfig(context_len=CONTEXT, gpu_layers="auto")
    assert plan_gpu_layers(header, config, [gpu(0, room_for(tensor_bytes, 12))]) == 12
    assert plan_gpu_layers(header, config, [gpu(0, room_for(tensor_bytes, 12) - 1)]) == 11


def test_auto_offloads_everything_when_it_fits(
    header: GgufHeader, tensor_bytes: dict[str, int]
) -> None:
    config = LoadConfig(context_len=CONTEXT, gpu_layers="auto")
    assert plan_gpu_layers(header, config, [gpu(0, room_for(tensor_bytes, -1))]) == -1
    # the output and 29 repeating layers: 30, not "all"
    assert plan_gpu_layers(header, config, [gpu(0, room_for(tensor_bytes, -1) - 1)]) == 30


def test_auto_with_no_room_for_one_layer_runs_on_the_cpu(header: GgufHeader) -> None:
    config = LoadConfig(context_len=CONTEXT, gpu_layers="auto")
    assert plan_gpu_layers(header, config, [gpu(0, HEADROOM)]) == 0


def test_an_explicit_layer_count_that_fits_is_kept(
    header: GgufHeader, tensor_bytes: dict[str, int]
) -> None:
    device = gpu(0, room_for(tensor_bytes, 12))
    assert plan_gpu_layers(header, LoadConfig(context_len=CONTEXT, gpu_layers=12), [device]) == 12
    with pytest.raises(ModelLoadError, match="with 13 of 31 layers"):
        plan_gpu_layers(header, LoadConfig(context_len=CONTEXT, gpu_layers=13), [device])


def test_cpu_only_is_never_checked(header: GgufHeader) -> None:
    assert plan_gpu_layers(header, LoadConfig(gpu_layers=0), [gpu(0, 0)]) == 0


def test_two_gpus_share_the_layers_in_proportion_to_free_vram(
    header: GgufHeader, tensor_bytes: dict[str, int]
) -> None:
    # Each holds half the layers, a compute buffer and headroom; the last one the output too
    # (room for 16: the output and 15 layers).
    first = gpu(0, room_for(tensor_bytes, 16) + MIB)
    second = gpu(1, room_for(tensor_bytes, 16) + MIB)
    config = LoadConfig(context_len=CONTEXT)
    assert plan_gpu_layers(header, config, [first, second]) == -1
    with pytest.raises(ModelLoadError, match=r"free on GPU 0: .*; GPU 1: "):
        plan_gpu_layers(header, config, [gpu(0, first.vram_free // 2), second])


def test_an_unset_context_needs_only_the_size_llama_server_can_shrink_to(
    header: GgufHeader, tensor_bytes: dict[str, int]
) -> None:
    # SmolLM2 was trained for 8192 tokens; --fit shrinks an unset context to 4096 at least.
    device = [gpu(0, room_for(tensor_bytes, -1, context=FIT_CONTEXT_FLOOR))]
    assert plan_gpu_layers(header, LoadConfig(), device) == -1
    with pytest.raises(ModelLoadError, match="8192-token context"):
        plan_gpu_layers(header, LoadConfig(context_len=8192), device)
