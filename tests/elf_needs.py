"""What an x86-64 ELF file needs of the machine, read from the file alone.

Every instruction in its code sections is decoded (iced-x86) and mapped to the
CPUID features it needs; the symbol versions it imports say which glibc and
libstdc++ it needs. Nothing is run, so the answer is the same on every host:
an AVX-512 machine cannot hide an AVX-512 instruction by executing it fine.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection
from iced_x86 import CpuidFeature, Decoder, DecoderOptions

__all__ = [
    "FLOOR",
    "VARIANT_LIBRARY",
    "code_features",
    "elf_files",
    "features_beyond",
    "file_features",
    "needed_versions",
]

_NAMES = {value: name for name, value in vars(CpuidFeature).items() if name.isupper()}
_SHF_EXECINSTR = 0x4

# x86-64-v3 (Haswell, 2013; AMD Excavator and every Zen), as iced-x86 names its parts,
# plus the hints that older CPUs execute as no-ops (ENDBR64 is CET_IBT).
FLOOR = frozenset(
    {
        *("INTEL8086", "INTEL186", "INTEL286", "INTEL386", "INTEL486", "X64"),
        *("FPU", "FPU287", "FPU387", "CMOV", "CX8", "CMPXCHG16B", "MMX", "FXSR"),
        *("SSE", "SSE2", "SSE3", "SSSE3", "SSE4_1", "SSE4_2", "POPCNT"),
        *("AVX", "AVX2", "FMA", "F16C", "BMI1", "BMI2", "LZCNT", "MOVBE", "XSAVE"),
        *("CPUID", "TSC", "RDTSCP", "SYSCALL", "PAUSE", "MULTIBYTENOP", "CET_IBT", "CLFSH"),
    }
)

# ggml's per-CPU libraries (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS): ggml scores each
# against the running CPU's features and loads only one the CPU has, so their
# instructions are allowed beyond the floor.
VARIANT_LIBRARY = re.compile(r"^libggml-cpu-[\w.]+\.so(\.[\d.]+)?$")


def code_features(code: bytes, address: int = 0) -> collections.Counter[str]:
    """How many instructions of `code` need each CPUID feature."""
    counts: collections.Counter[str] = collections.Counter()
    for instruction in Decoder(64, code, DecoderOptions.NONE, ip=address):
        for feature in instruction.cpuid_features():
            counts[_NAMES[feature]] += 1
    return counts


def _code_sections(path: Path) -> Iterator[tuple[bytes, int]]:
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        for section in elf.iter_sections():
            if section["sh_type"] == "SHT_PROGBITS" and section["sh_flags"] & _SHF_EXECINSTR:
                yield section.data(), section["sh_addr"]


def file_features(path: Path) -> collections.Counter[str]:
    """The CPUID features the code of one ELF file needs, with instruction counts."""
    counts: collections.Counter[str] = collections.Counter()
    for code, address in _code_sections(path):
        counts += code_features(code, address)
    return counts


def elf_files(directory: Path) -> list[Path]:
    """Each ELF file in `directory` once (symbolic links to them are left out)."""
    found = []
    for entry in sorted(directory.iterdir()):
        if entry.is_symlink() or not entry.is_file():
            continue
        with entry.open("rb") as handle:
            if handle.read(4) == b"\x7fELF":
                found.append(entry)
    return found


def features_beyond(
    directory: Path, floor: frozenset[str] = FLOOR
) -> dict[str, collections.Counter[str]]:
    """For each ELF file outside ggml's CPU variants, the features it needs beyond `floor`."""
    beyond = {}
    for path in elf_files(directory):
        if VARIANT_LIBRARY.match(path.name):
            continue
        extra = collections.Counter(
            {name: n for name, n in file_features(path).items() if name not in floor}
        )
        if extra:
            beyond[path.name] = extra
    return beyond


def needed_versions(path: Path, prefix: str) -> list[tuple[int, ...]]:
    """The versions of symbols named `prefix`_X.Y (GLIBC, GLIBCXX) that `path` imports."""
    versions = []
    with path.open("rb") as handle:
        for section in ELFFile(handle).iter_sections():
            if not isinstance(section, GNUVerNeedSection):
                continue
            for _, auxiliaries in section.iter_versions():
                for auxiliary in auxiliaries:
                    name = auxiliary.name
                    if name.startswith(prefix + "_") and name[len(prefix) + 1 :][:1].isdigit():
                        versions.append(tuple(map(int, name[len(prefix) + 1 :].split("."))))
    return sorted(versions)
