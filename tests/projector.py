"""A stand-in for a vision model's part: a projector GGUF for SmolLM2.

No vision model ships in a package the tests can install, so they build a projector:
llama.cpp's simplest kind, LLaVA's "mlp" (a ViT of one block whose output two linear
layers with a GELU between take to the text model's width). Its weights are random from a
fixed seed, so it describes nothing, but llama-server runs its whole image path with it:
every image becomes `IMAGE_TOKENS` embeddings, the same ones for the same pixels.
The key and tensor names are the ones the pinned build's loader (tools/mtmd/clip.cpp)
reads; shapes are given in numpy's order, the reverse of ggml's.
"""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

from inference_rocm import gguf_meta

__all__ = ["IMAGE_SIZE", "IMAGE_TOKENS", "PATCH_SIZE", "SEED", "write_projector"]

SEED = 23
# Every image is resized to IMAGE_SIZE pixels square and cut into patches of PATCH_SIZE:
# one embedding (one prompt token) a patch, whatever the image's own size.
IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
_WIDTH = 32  # the encoder's hidden size
_HEADS = 2
_FEED_FORWARD = 64  # unlike _WIDTH: the loader takes an ffn_down of input width _WIDTH as swapped
_PROJECTOR_HIDDEN = 64
_BLOCKS = 1
# The last layer's weights are scaled toward the spread of the text model's token
# embeddings (SmolLM2-135M's: 0.136), so that an image's embeddings are of a size the
# model is used to and sway what it says.
_EMBEDDING_SPREAD = 0.14
_CHANNELS = 3
_Floats = npt.NDArray[np.float32]


def _text_width(text_model: str) -> int:
    width = gguf_meta.model_info(gguf_meta.read_header(text_model)).embedding_length
    assert width, f"{text_model} states no embedding width"
    return width


def _tensors(rng: np.random.Generator, text_width: int) -> dict[str, _Floats]:
    """The weights the loader needs for an "mlp" projector, each scaled by its fan-in."""

    def weight(*shape: int, fan_in: int, spread: float = 1.0) -> _Floats:
        values: _Floats = rng.standard_normal(shape, dtype=np.float32) * (
            spread / math.sqrt(fan_in)
        )
        return values

    def ones(size: int) -> _Floats:
        return np.ones(size, dtype=np.float32)

    def zeros(size: int) -> _Floats:
        return np.zeros(size, dtype=np.float32)

    patches = IMAGE_TOKENS  # no class embedding: each position is a patch
    patch_inputs = _CHANNELS * PATCH_SIZE * PATCH_SIZE
    tensors = {
        "v.patch_embd.weight": weight(
            _WIDTH, _CHANNELS, PATCH_SIZE, PATCH_SIZE, fan_in=patch_inputs
        ),
        "v.position_embd.weight": weight(patches, _WIDTH, fan_in=_WIDTH),
    }
    for block in range(_BLOCKS):
        layer = f"v.blk.{block}"
        for norm in ("ln1", "ln2"):
            tensors[f"{layer}.{norm}.weight"] = ones(_WIDTH)
            tensors[f"{layer}.{norm}.bias"] = zeros(_WIDTH)
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{layer}.{part}.weight"] = weight(_WIDTH, _WIDTH, fan_in=_WIDTH)
        tensors[f"{layer}.ffn_up.weight"] = weight(_FEED_FORWARD, _WIDTH, fan_in=_WIDTH)
        tensors[f"{layer}.ffn_down.weight"] = weight(_WIDTH, _FEED_FORWARD, fan_in=_FEED_FORWARD)
    tensors["mm.0.weight"] = weight(_PROJECTOR_HIDDEN, _WIDTH, fan_in=_WIDTH)
    tensors["mm.0.bias"] = zeros(_PROJECTOR_HIDDEN)
    tensors["mm.2.weight"] = weight(
        text_width, _PROJECTOR_HIDDEN, fan_in=_PROJECTOR_HIDDEN, spread=_EMBEDDING_SPREAD
    )
    tensors["mm.2.bias"] = zeros(text_width)
    return tensors


def write_projector(path: Path, text_model: str, *, seed: int = SEED) -> Path:
    """A random-weight "mlp" projector at `path` whose output width is `text_model`'s
    embedding width, as llama-server's --mmproj checks."""
    text_width = _text_width(text_model)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("inference-core test projector")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", _WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", _FEED_FORWARD)
    writer.add_uint32("clip.vision.block_count", _BLOCKS)
    writer.add_uint32("clip.vision.projection_dim", text_width)
    writer.add_uint32("clip.vision.attention.head_count", _HEADS)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5] * _CHANNELS)
    writer.add_array("clip.vision.image_std", [0.5] * _CHANNELS)
    # LLaVA feeds the projector the second-to-last block's output, which for one block
    # would run none: naming the last block's output runs it.
    writer.add_array("clip.vision.feature_layer", [_BLOCKS])
    for name, values in _tensors(np.random.default_rng(seed), text_width).items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
