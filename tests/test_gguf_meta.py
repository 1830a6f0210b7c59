"""GGUF metadata: real files read right, broken ones rejected fast and typed."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inference_core as ic
from inference_core import InvalidModelFile
from inference_rocm import gguf_meta
from tests.procs import make_executable
from tests.test_cli import assert_one_line_error, cli


def write_gguf(path: Path, *, arch: str = "llama", layers: int = 2, extra: bool = True) -> Path:
    """A small but well-formed GGUF file written by the reference writer."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny test model")
    writer.add_context_length(512)
    writer.add_block_count(layers)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if extra:
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list([f"t{i}" for i in range(100)])
        writer.add_array("test.floats", [0.5, 1.5, 2.5])
    for layer in range(layers):
        writer.add_tensor(f"blk.{layer}.attn_q.weight", np.ones((8, 8), dtype=np.float32))
    writer.add_tensor("token_embd.weight", np.ones((100, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_reads_the_smollm2_model(smollm2_path: str) -> None:
    info = gguf_meta.model_info(gguf_meta.read_header(smollm2_path))
    assert (info.architecture, info.size_label, info.file_type) == ("llama", "135M", "Q4_1")
    assert (info.context_length, info.block_count, info.vocab_size) == (8192, 30, 49152)
    assert info.embedding_length == 576
    assert info.file_size == os.path.getsize(smollm2_path)
    assert 4.5 < info.quant_bits < 6.5  # Q4_1 is 5 bits a weight, some tensors are larger


def test_agrees_with_the_gguf_package(tiny: Path) -> None:
    header = gguf_meta.read_header(tiny)
    reference = gguf.GGUFReader(str(tiny))
    assert header.data_offset == reference.data_offset
    ours = {tensor.name: (tensor.n_elements, tensor.offset) for tensor in header.tensors}
    theirs = {
        t.name: (int(t.n_elements), int(t.data_offset) - reference.data_offset)
        for t in reference.tensors
    }
    assert ours == theirs
    assert header.array_lengths["tokenizer.ggml.tokens"] == 100
    assert header.metadata["general.name"] == "tiny test model"
    info = gguf_meta.model_info(header)
    assert (info.block_count, info.context_length, info.vocab_size) == (2, 512, 100)
    assert info.quant_bits == 32.0


def test_file_type_names_match_llama_cpp() -> None:
    for member in gguf.LlamaFileType:
        name = member.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        if member.value in gguf_meta._FILE_TYPES:
            assert gguf_meta.file_type_name(member.value) == name, member
    assert gguf_meta.file_type_name(999) == "type 999"


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "too short"),
        (lambda p: (p.write_bytes(b"PK\x03\x04" + b"\0" * 60), p)[1], "not a GGUF model file"),
    ],
    ids=["missing", "directory", "empty", "wrong-magic"],
)
def test_bad_paths_raise_invalid_model_file_naming_the_file(
    tmp_path: Path, make: object, problem: str
) -> None:
    path = make(tmp_path / "model.gguf")  # type: ignore[operator]
    with pytest.raises(InvalidModelFile, match=problem) as caught:
        gguf_meta.read_header(path)
    assert str(path) in str(caught.value)


def test_truncated_file_is_rejected(tiny: Path, tmp_path: Path) -> None:
    data = tiny.read_bytes()
    for cut in (30, len(data) // 3, 400):
        broken = tmp_path / f"cut{cut}.gguf"
        broken.write_bytes(data[:cut])
        with pytest.raises(InvalidModelFile, match=r"truncated|corrupt"):
            gguf_meta.read_header(broken)


def test_absurd_counts_are_rejected_at_once(tiny: Path, tmp_path: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[8:16] = (2**60).to_bytes(8, "little")  # tensor count
    broken = tmp_path / "absurd.gguf"
    broken.write_bytes(bytes(data))
    started = time.monotonic()
    with pytest.raises(InvalidModelFile, match="absurd counts"):
        gguf_meta.read_header(broken)
    assert time.monotonic() - started < 30  # a hang guard: 2**60 of anything never ends


def test_unreadable_file_says_how_to_fix_it(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: str) -> object:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(gguf_meta, "_open_model_file", denied)
    with pytest.raises(InvalidModelFile, match=r"permission denied.*chmod"):
        gguf_meta.read_header(tiny)


def test_paths_with_spaces_and_leading_dashes_work(tiny: Path, tmp_path: Path) -> None:
    for name in ("with space.gguf", "-starts-with-dash.gguf"):
        target = tmp_path / name
        shutil.copy(tiny, target)
        assert gguf_meta.read_header(target).architecture == "llama"


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers_raise_only_invalid_model_file(
    data: st.DataObject, tiny: Path, tmp_path: Path
) -> None:
    original = tiny.read_bytes()
    header_end = gguf_meta.read_header(tiny).data_offset
    mutated = bytearray(original[: header_end + 64])
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, header_end - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    path = tmp_path / "mutated.gguf"
    path.write_bytes(bytes(mutated[: data.draw(st.integers(0, len(mutated)))]))
    with contextlib.suppress(InvalidModelFile):
        gguf_meta.read_header(path)


# -- paths that are no regular file ----------------------------------------------------------


HANG = 20  # seconds: a guard only a call blocked for good would reach


@pytest.fixture
def spawned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """LLAMA_SERVER_PATH names a script that records each run's arguments in the file
    returned (the backend also runs it for --version); started as a server, it exits."""
    record = tmp_path / "runs.txt"
    script = f"import sys\nopen({str(record)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
    monkeypatch.delenv("ROCM_LLAMA_SERVER_PATH", raising=False)
    recorder = make_executable(tmp_path / "bin" / "llama-server", script)
    monkeypatch.setenv("LLAMA_SERVER_PATH", str(recorder))
    return record


def refused_by_both(path: Path, spawned: Path, problem: str) -> None:
    """`load` and `inspect_model` raise the same `InvalidModelFile`; no server started."""
    with pytest.raises(InvalidModelFile, match=problem) as loading:
        ic.load(str(path), backend="llama_cpp")
    with pytest.raises(InvalidModelFile, match=problem) as inspecting:
        ic.inspect_model(path)
    assert str(loading.value) == str(inspecting.value)
    runs = spawned.read_text() if spawned.exists() else ""
    assert str(path) not in runs, runs


def outcome_of(call: Callable[[], object], fifo: Path) -> BaseException | None:
    """What `call` raised, run on a thread of its own; one still blocked after HANG is let
    go (a writer opens the FIFO and closes it: end of file) and the test fails."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # handed to the test, whatever it is
            raised.append(error)
        else:
            raised.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(HANG)
        pytest.fail(f"blocked on the FIFO {fifo} for {HANG} s")
    return raised[0]


@pytest.mark.parametrize("name", ["model.gguf", "model"])
def test_a_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, spawned: Path, name: str
) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    calls: list[Callable[[], object]] = [
        lambda: ic.load(str(fifo), backend="llama_cpp"),
        lambda: ic.inspect_model(fifo),
    ]
    for call in calls:
        error = outcome_of(call, fifo)
        assert isinstance(error, InvalidModelFile), repr(error)
        assert str(error) == f"{fifo}: is a named pipe (FIFO), not a model file"
    assert not spawned.exists() or str(fifo) not in spawned.read_text()


def test_info_on_a_fifo_is_an_error_not_a_wait(tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    assert_one_line_error(cli("info", str(fifo), timeout=HANG), "is a named pipe (FIFO)")


def test_a_symlink_loop_says_so_from_load_and_inspect_model(tmp_path: Path, spawned: Path) -> None:
    (tmp_path / "a.gguf").symlink_to(tmp_path / "b.gguf")
    (tmp_path / "b.gguf").symlink_to(tmp_path / "a.gguf")
    refused_by_both(tmp_path / "a.gguf", spawned, "is a symlink loop")


def test_refusing_a_path_by_its_type_leaves_no_descriptor_open(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.gguf")
    before = len(os.listdir("/proc/self/fd"))
    for path in (tmp_path, tmp_path / "pipe.gguf", Path("/dev/zero")) * 10:
        with pytest.raises(InvalidModelFile, match="not a model file"):
            gguf_meta.read_header(path)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_device_is_refused_by_its_type(spawned: Path) -> None:
    refused_by_both(Path("/dev/zero"), spawned, "is a character device, not a model file")


# -- hostile files: refused from the header, before any process starts ------------------------


def raw_string(text: str) -> bytes:
    encoded = text.encode()
    return struct.pack("<Q", len(encoded)) + encoded


def raw_kv(key: str, value_type: int, payload: bytes) -> bytes:
    return raw_string(key) + struct.pack("<I", value_type) + payload


def raw_tensor(name: str, shape: tuple[int, ...], offset: int = 0) -> bytes:
    dims = struct.pack(f"<I{len(shape)}Q", len(shape), *shape)
    return raw_string(name) + dims + struct.pack("<IQ", 0, offset)  # type 0: F32


LLAMA = raw_kv("general.architecture", 8, raw_string("llama"))
ONE_TENSOR = [raw_tensor("token_embd.weight", (8,))]  # 8 F32 weights: 32 bytes of data


def raw_gguf(
    path: Path, kvs: list[bytes], tensors: list[bytes] = ONE_TENSOR, data: int = 32
) -> Path:
    """A GGUF file written field by field, for what no well-behaved writer produces."""
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    header += b"".join(kvs) + b"".join(tensors)
    path.write_bytes(header + bytes(-len(header) % 32 + data))
    return path


def test_a_valid_raw_file_is_read(tmp_path: Path) -> None:  # the builder is sound
    info = ic.inspect_model(raw_gguf(tmp_path / "ok.gguf", [LLAMA]))
    assert (info.architecture, info.file_size) == ("llama", os.path.getsize(info.path))


def test_arrays_nested_60000_deep_are_refused(tmp_path: Path, spawned: Path) -> None:
    nested = struct.pack("<IQ", 9, 1) * 60_000 + struct.pack("<IQ", 0, 0)
    path = raw_gguf(tmp_path / "deep.gguf", [LLAMA, raw_kv("deep", 9, nested)])
    refused_by_both(path, spawned, "array 'deep' nests arrays more than 8 deep")


def test_millions_of_empty_strings_in_a_sparse_file_are_refused_at_once(
    tmp_path: Path, spawned: Path
) -> None:
    claim = raw_kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 25_000_000))
    path = raw_gguf(tmp_path / "sparse.gguf", [LLAMA, claim], [], data=0)
    with path.open("r+b") as handle:  # 200 MB of zeros: 25 million strings of length 0
        handle.truncate(path.stat().st_size + 200_000_000)
    refused_by_both(path, spawned, "takes the header past 2097152 strings")


def test_more_entries_than_the_file_holds_are_refused(tmp_path: Path, spawned: Path) -> None:
    claim = raw_kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 1 << 20))
    path = raw_gguf(tmp_path / "short.gguf", [LLAMA, claim])
    refused_by_both(path, spawned, "is truncated: its header runs past the end of the file")


def test_a_file_without_tensors_is_refused(tmp_path: Path, spawned: Path) -> None:
    path = raw_gguf(tmp_path / "vocab.gguf", [LLAMA], [], data=0)
    refused_by_both(path, spawned, "has no tensors")


def test_the_first_part_of_a_split_model_may_hold_no_tensors(tmp_path: Path) -> None:
    split = raw_kv("split.count", 2, struct.pack("<H", 3))  # llama-gguf-split's u16
    path = raw_gguf(tmp_path / "m-00001-of-00003.gguf", [LLAMA, split], [], data=0)
    assert ic.inspect_model(path).architecture == "llama"


@pytest.mark.parametrize("value", [-1, 0])
def test_a_context_length_below_one_is_refused(tmp_path: Path, spawned: Path, value: int) -> None:
    context = raw_kv("llama.context_length", 5, struct.pack("<i", value))  # an int32
    path = raw_gguf(tmp_path / "context.gguf", [LLAMA, context])
    refused_by_both(path, spawned, f"llama.context_length is {value}, not a positive number")


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ((2**63, 1), r"dimensions \(9223372036854775808, 1\) that overflow"),
        ((2**40, 2**40), "that overflow"),
        ((1 << 20, 1 << 10), r"claims 1073741824 weights, more than its 32 bytes hold"),
    ],
    ids=["dimension", "product", "past-the-file"],
)
def test_impossible_tensor_dimensions_are_refused(
    tmp_path: Path, spawned: Path, shape: tuple[int, ...], problem: str
) -> None:
    path = raw_gguf(tmp_path / "shape.gguf", [LLAMA], [raw_tensor("token_embd.weight", shape)])
    refused_by_both(path, spawned, problem)
