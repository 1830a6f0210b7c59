"""Models made from the packaged SmolLM2 with the `gguf` package, for speculative decoding.

An f16 copy is the target a Q4_1 draft can speed up (the same model, its weights four
times the bytes); a copy whose vocabulary differs is a draft llama-server must refuse.
The benchmarks use them too.
"""

from __future__ import annotations

import os
import shutil

import gguf
import numpy as np

__all__ = ["f16_copy", "other_vocabulary_copy"]

# 1-D tensors (norms) stay f32, as llama.cpp's own converter keeps them.
_KEPT_TYPES = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)


def f16_copy(source: str, target: str | os.PathLike[str]) -> str:
    """`source` with every quantized tensor dequantized to f16; its metadata unchanged
    but for the file type."""
    reader = gguf.GGUFReader(source)
    architecture = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(os.fspath(target), architecture)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by the writer itself
        sub_type = field.types[1] if len(field.types) > 1 else None
        value = (
            int(gguf.LlamaFileType.MOSTLY_F16) if name == "general.file_type" else field.contents()
        )
        writer.add_key_value(name, value, field.types[0], sub_type)
    for tensor in reader.tensors:
        if tensor.tensor_type in _KEPT_TYPES:
            writer.add_tensor(tensor.name, np.array(tensor.data), raw_dtype=tensor.tensor_type)
            continue
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        writer.add_tensor(tensor.name, weights.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return os.fspath(target)


def other_vocabulary_copy(source: str, target: str | os.PathLike[str], first: int) -> int:
    """Copy `source` to `target` with one vocabulary entry from `first` on spelled
    backwards (a spelling no other entry has, its length kept): a model whose metadata
    agrees with the source's in everything but that token, whose id is returned."""
    shutil.copyfile(source, target)
    reader = gguf.GGUFReader(target, "r+")
    field = reader.fields["tokenizer.ggml.tokens"]
    texts = [bytes(field.parts[index]) for index in field.data]
    spelled = set(texts)
    token = next(
        n for n in range(first, len(texts)) if texts[n][::-1] not in spelled and texts[n].isascii()
    )
    field.parts[field.data[token]][:] = np.frombuffer(texts[token][::-1], dtype=np.uint8)
    del reader, field  # the memory map writes it back
    return token
