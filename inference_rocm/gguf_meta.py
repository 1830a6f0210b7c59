"""GGUF metadata -> ModelInfo, read before any server starts.

A small reader of the GGUF spec (header, key/values, tensor infos) over an
`mmap`: it touches only the header pages, never the weights, and skips the
tokenizer's arrays by length. The `gguf` package would do the same work but
imports numpy and decodes every array, which costs more than the whole
header read here; a bad file must fail in well under a second.
"""

from __future__ import annotations

import logging
import mmap
import os
import stat
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

import attrs

from inference_core._model_files import open_problem, type_problem
from inference_core.errors import InvalidModelFile
from inference_core.types import ModelInfo

__all__ = [
    "GgufHeader",
    "TensorInfo",
    "file_type_name",
    "model_info",
    "read_header",
    "starts_with_magic",
]

logger = logging.getLogger(__name__)

_MAGIC = b"GGUF"
_MAX_TENSORS = 1_000_000
_MAX_KEYS = 100_000
_MAX_DIMS = 8
_MAX_ARRAY_DEPTH = 8  # arrays of arrays: far deeper than any real file nests them
# Strings and inner arrays stepped over one by one in one header, each a loop turn (about
# a quarter of a microsecond): the largest vocabularies with their merges come to under
# a million, and a sparse file may claim tens of millions of empty strings.
_MAX_WALKED = 1 << 21
_MAX_ELEMENTS = (1 << 63) - 1  # ggml counts a tensor's elements in an int64
_MIN_BITS_PER_WEIGHT = 1  # no ggml type stores a weight in less (the 1-bit types use 1.5+)
# The fewest bytes an entry can take: a key/value (key length, type, one-byte value) and
# a tensor info (name length, dimension count, type, offset).
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8
_DEFAULT_ALIGNMENT = 32
# An open that never waits on a FIFO or a device; no effect on a regular file.
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # Windows has neither the flag nor FIFOs

# value type -> struct format of one element (strings and arrays are handled apart)
_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"),
    1: struct.Struct("<b"),
    2: struct.Struct("<H"),
    3: struct.Struct("<h"),
    4: struct.Struct("<I"),
    5: struct.Struct("<i"),
    6: struct.Struct("<f"),
    7: struct.Struct("<?"),
    10: struct.Struct("<Q"),
    11: struct.Struct("<q"),
    12: struct.Struct("<d"),
}
_STRING, _ARRAY = 8, 9
_SMALLEST = {_STRING: 8, _ARRAY: 4 + 8}  # bytes: a string's length; an array's type, count
# Keys some architectures store per layer; the largest value sizes the KV cache.
_PER_LAYER_KEYS = (".attention.head_count", ".attention.head_count_kv")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# general.file_type, as llama.cpp's llama_ftype numbers it
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip


def file_type_name(file_type: int) -> str:
    return _FILE_TYPES.get(file_type, f"type {file_type}")


@attrs.frozen
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    n_bytes: int

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@attrs.frozen
class GgufHeader:
    """A GGUF file's key/values (arrays as their lengths) and tensor table."""

    path: str
    version: int
    metadata: Mapping[str, Any]
    array_lengths: Mapping[str, int]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_size: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str, default: int = 0) -> int:
        """An integer `<architecture>.<key>` value (head counts may be per-layer arrays)."""
        value = self.metadata.get(f"{self.architecture}.{key}", default)
        return int(value) if isinstance(value, (int, float)) else default

    @property
    def weights_bytes(self) -> int:
        return sum(tensor.n_bytes for tensor in self.tensors)


class _Reader:
    """Bounds-checked little-endian reads from a buffer; overruns mean a truncated file.

    `walked` counts the strings and inner arrays of arrays, each stepped over one by
    one, against `_MAX_WALKED`: a sparse file can claim millions of empty ones.
    """

    __slots__ = ("buffer", "pos", "size", "walked")

    def __init__(self, buffer: mmap.mmap | bytes) -> None:
        self.buffer = buffer
        self.pos = 0
        self.size = len(buffer)
        self.walked = 0

    def take(self, fmt: struct.Struct) -> Any:
        end = self.pos + fmt.size
        if end > self.size:
            raise _Truncated
        (value,) = fmt.unpack_from(self.buffer, self.pos)
        self.pos = end
        return value

    def skip(self, count: int) -> None:
        if count < 0 or self.pos + count > self.size:
            raise _Truncated
        self.pos += count

    def string(self) -> str:
        length = self.take(_U64)
        start = self.pos
        self.skip(length)
        return bytes(self.buffer[start : self.pos]).decode("utf-8", errors="replace")

    def value(self, value_type: int) -> Any:
        if value_type == _STRING:
            return self.string()
        fmt = _SCALARS.get(value_type)
        if fmt is None:
            raise _Corrupt(f"unknown value type {value_type}")
        return self.take(fmt)

    def expect(self, count: int, smallest: int) -> None:
        """Refuse `count` entries of at least `smallest` bytes each that the rest of the
        file cannot hold, before walking any of them."""
        if count * smallest > self.size - self.pos:
            raise _Truncated

    def skip_array(self, key: str, element_type: int, count: int, depth: int = 1) -> None:
        if depth > _MAX_ARRAY_DEPTH:
            raise _Corrupt(f"array {key!r} nests arrays more than {_MAX_ARRAY_DEPTH} deep")
        scalar = _SCALARS.get(element_type)
        smallest = scalar.size if scalar is not None else _SMALLEST.get(element_type)
        if smallest is None:
            raise _Corrupt(f"unknown array element type {element_type}")
        self.expect(count, smallest)
        if scalar is not None:
            self.skip(smallest * count)
            return
        self.walked += count
        if self.walked > _MAX_WALKED:
            raise _Corrupt(
                f"array {key!r} takes the header past {_MAX_WALKED} strings and inner arrays"
            )
        if element_type == _STRING:
            self._skip_strings(count)
            return
        for _ in range(count):
            inner_type, inner_count = self.take(_U32), self.take(_U64)
            self.skip_array(key, inner_type, inner_count, depth + 1)

    def _skip_strings(self, count: int) -> None:
        """Step over `count` strings: the one loop a vocabulary makes long, kept tight."""
        buffer, pos, size, unpack = self.buffer, self.pos, self.size, _U64.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise _Truncated
            pos += 8 + unpack(buffer, pos)[0]
        if pos > size:
            raise _Truncated
        self.pos = pos


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


def _open_model_file(path: str) -> BinaryIO:
    """The one place the file is opened (a seam for permission tests: root is never denied).

    Without blocking: opening a FIFO would wait for a writer; its type is checked once open.
    """
    return open(path, "rb", opener=_open_without_blocking)


def _open_without_blocking(path: str, flags: int) -> int:
    return os.open(path, flags | _NONBLOCK)


def starts_with_magic(path: str) -> bool:
    """Whether `path` is a regular file that starts like a GGUF file (never blocks)."""
    try:
        with _open_model_file(path) as handle:
            regular = stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
            return regular and handle.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False


def read_header(path: str | os.PathLike[str]) -> GgufHeader:
    """Read and check a GGUF file's header; raise `InvalidModelFile` naming it otherwise."""
    name = os.fspath(path)
    try:
        handle = _open_model_file(name)
    except OSError as error:
        raise InvalidModelFile(name, open_problem(error)) from None
    with handle:
        status = os.fstat(handle.fileno())
        problem = type_problem(status.st_mode)
        if problem is not None:
            raise InvalidModelFile(name, problem)
        size = status.st_size
        if size < 24:
            raise InvalidModelFile(name, f"is {size} bytes long, too short to be a GGUF model file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            try:
                return _parse(name, buffer, size)
            except _Truncated:
                raise InvalidModelFile(
                    name, "is truncated: its header runs past the end of the file"
                ) from None
            except _Corrupt as error:
                raise InvalidModelFile(name, f"is corrupt: {error}") from None


def _parse(name: str, buffer: mmap.mmap, size: int) -> GgufHeader:
    if buffer[:4] != _MAGIC:
        raise InvalidModelFile(
            name, f"is not a GGUF model file (it starts with {bytes(buffer[:4])!r}, not b'GGUF')"
        )
    reader = _Reader(buffer)
    reader.skip(4)
    version = reader.take(_U32)
    if version not in (2, 3):
        raise _Corrupt(f"GGUF version {version} is not supported (2 and 3 are)")
    tensor_count, kv_count = reader.take(_U64), reader.take(_U64)
    if tensor_count > _MAX_TENSORS or kv_count > _MAX_KEYS:
        raise _Corrupt(f"absurd counts ({tensor_count} tensors, {kv_count} keys)")
    reader.expect(kv_count, _MIN_KV_BYTES)
    metadata: dict[str, Any] = {}
    array_lengths: dict[str, int] = {}
    for _ in range(kv_count):
        key = reader.string()
        value_type = reader.take(_U32)
        if value_type == _ARRAY:
            element_type, count = reader.take(_U32), reader.take(_U64)
            reader.skip_array(key, element_type, count)
            array_lengths[key] = count
            if element_type in _SCALARS and count and key.endswith(_PER_LAYER_KEYS):
                metadata[key] = _array_max(buffer, reader.pos, element_type, count)
        else:
            metadata[key] = reader.value(value_type)
    reader.expect(tensor_count, _MIN_TENSOR_BYTES)
    raw_tensors = []
    for _ in range(tensor_count):
        tensor_name = reader.string()
        n_dims = reader.take(_U32)
        if n_dims > _MAX_DIMS:
            raise _Corrupt(f"tensor {tensor_name!r} has {n_dims} dimensions")
        shape = tuple(reader.take(_U64) for _ in range(n_dims))
        ggml_type, offset = reader.take(_U32), reader.take(_U64)
        raw_tensors.append((tensor_name, shape, ggml_type, offset))
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment {alignment!r} is not a power of two")
    data_offset = -(-reader.pos // alignment) * alignment
    tensors = _sized(raw_tensors, size - data_offset)
    for tensor in tensors:
        _check_shape(tensor)
    _check_context_length(metadata)
    if not tensors and not _is_split(metadata):
        raise InvalidModelFile(
            name, "has no tensors: it holds no weights to run (a vocabulary-only file?)"
        )
    return GgufHeader(name, version, metadata, array_lengths, tensors, data_offset, size)


def _check_shape(tensor: TensorInfo) -> None:
    """Dimensions llama-server could use: counted in an int64, and no more weights than
    the tensor's bytes can hold."""
    elements = tensor.n_elements
    if elements > _MAX_ELEMENTS or any(dim > _MAX_ELEMENTS for dim in tensor.shape):
        raise _Corrupt(f"tensor {tensor.name!r} has dimensions {tensor.shape} that overflow")
    if elements * _MIN_BITS_PER_WEIGHT > tensor.n_bytes * 8:
        raise _Corrupt(
            f"tensor {tensor.name!r} of dimensions {tensor.shape} claims {elements} weights, "
            f"more than its {tensor.n_bytes} bytes hold"
        )


def _check_context_length(metadata: Mapping[str, Any]) -> None:
    key = f"{metadata.get('general.architecture', '')}.context_length"
    value = metadata.get(key)
    if value is not None and (type(value) is not int or value <= 0):
        raise _Corrupt(f"{key} is {value!r}, not a positive number of tokens")


def _is_split(metadata: Mapping[str, Any]) -> bool:
    """Part of a split model (llama-gguf-split), whose first part may hold metadata only."""
    count = metadata.get("split.count")
    return isinstance(count, int) and count > 1


def _array_max(buffer: mmap.mmap, end: int, element_type: int, count: int) -> Any:
    """The largest of a per-layer array (e.g. head_count_kv), read back from its end."""
    fmt = _SCALARS[element_type]
    start = end - fmt.size * count
    return max(fmt.unpack_from(buffer, start + i * fmt.size)[0] for i in range(count))


def _sized(
    raw: list[tuple[str, tuple[int, ...], int, int]], data_size: int
) -> tuple[TensorInfo, ...]:
    """Tensor sizes from the gaps between their offsets: no table of ggml types needed."""
    if data_size < 0:
        raise _Truncated
    by_offset = sorted(raw, key=lambda item: item[3])
    sizes: dict[str, int] = {}
    for index, (tensor_name, _, _, offset) in enumerate(by_offset):
        end = by_offset[index + 1][3] if index + 1 < len(by_offset) else data_size
        if offset > data_size or end < offset:
            raise _Truncated if offset > data_size else _Corrupt("overlapping tensor offsets")
        sizes[tensor_name] = end - offset
    return tuple(
        TensorInfo(tensor_name, shape, ggml_type, offset, sizes[tensor_name])
        for tensor_name, shape, ggml_type, offset in raw
    )


def model_info(header: GgufHeader) -> ModelInfo:
    """The `ModelInfo` a file describes."""
    meta = header.metadata
    elements = sum(tensor.n_elements for tensor in header.tensors)
    quant_bits = round(header.weights_bytes * 8 / elements, 2) if elements else 0.0
    file_type = meta.get("general.file_type")
    return ModelInfo(
        architecture=header.architecture,
        name=str(meta.get("general.name") or os.path.basename(header.path)),
        context_length=header.arch_value("context_length"),
        block_count=header.arch_value("block_count"),
        vocab_size=header.arch_value("vocab_size")
        or header.array_lengths.get("tokenizer.ggml.tokens", 0),
        embedding_length=header.arch_value("embedding_length"),
        file_type=file_type_name(file_type) if isinstance(file_type, int) else "unknown",
        quant_bits=quant_bits,
        size_label=str(meta.get("general.size_label", "")),
        path=os.path.abspath(header.path),
        file_size=header.file_size,
    )
