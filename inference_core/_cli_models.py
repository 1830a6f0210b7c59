"""What `inference info`, `models` and `pull` show: model files found, grouped, described.

Metadata comes from the plugins' `inspect_model` hook through the registry,
so no server starts and this module knows no file format beyond the naming
of llama.cpp's split files (`name-00001-of-00003.gguf`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import attrs

from ._splits import SPLIT_NAME, split_parts
from .demo import demo_model_path
from .errors import HubNotInstalled, InvalidModelFile
from .hub import cached_snapshots
from .registry import inspect_model
from .types import Capabilities, ModelInfo

__all__ = [
    "ModelEntry",
    "cached_models",
    "describe",
    "entry_for",
    "find_models",
    "human_size",
    "pulled",
    "table",
]

logger = logging.getLogger(__name__)


@attrs.frozen
class ModelEntry:
    """One model: a file, or the parts of a split file (first part first), and what it is."""

    path: str
    parts: tuple[str, ...]
    info: ModelInfo | None = None
    error: str | None = None
    status: str = "ok"  # "ok", "corrupt" (unreadable) or "incomplete" (split parts missing)
    name: str | None = None  # the hf:// name of a file in the Hugging Face cache

    @property
    def total_size(self) -> int:
        """The parts' sizes; a model that is no file here (on a server) says its own."""
        if not self.parts:
            return self.info.file_size if self.info is not None else 0
        return sum(os.path.getsize(part) for part in self.parts if os.path.exists(part))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "parts": list(self.parts),
            "total_size": self.total_size,
            "info": attrs.asdict(self.info) if self.info is not None else None,
            "status": self.status,
            "error": self.error,
        }


def entry_for(path: str, parts: tuple[str, ...] | None = None) -> ModelEntry:
    """Inspect one model (its first part); a bad or incomplete one gets `error`, never raises."""
    parts = parts if parts is not None else split_parts(path)
    missing = [os.path.basename(part) for part in parts if not os.path.exists(part)]
    lacking = f"split model is missing {', '.join(missing)}"
    if missing and len(parts) > 1 and not os.path.exists(parts[0]):
        return ModelEntry(path, parts, None, lacking, "incomplete")
    try:
        info = inspect_model(parts[0])
    except InvalidModelFile as error:
        return ModelEntry(path, parts, None, error.problem, "corrupt")
    if missing:
        return ModelEntry(path, parts, info, lacking, "incomplete")
    return ModelEntry(path, parts, info)


def _gguf_files(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(".gguf"):
                yield os.path.join(root, name)


def find_models(folder: str) -> list[ModelEntry]:
    """Every GGUF model under `folder`, split files grouped under their first part."""
    groups: dict[str, list[str]] = {}
    for path in _gguf_files(folder):
        match = SPLIT_NAME.match(os.path.basename(path))
        key = (
            path
            if match is None
            else os.path.join(os.path.dirname(path), f"{match['stem']}-of-{match['count']}")
        )
        groups.setdefault(key, []).append(path)
    entries = []
    for found in groups.values():
        expected = split_parts(found[0])
        entries.append(entry_for(expected[0], expected if len(expected) > 1 else None))
    return sorted(entries, key=lambda entry: entry.path)


def cached_models() -> list[ModelEntry]:
    """The demo model, then every GGUF model in the Hugging Face cache, by its hf:// name."""
    entries = []
    with contextlib.suppress(InvalidModelFile):  # not installed: nothing to list
        entries.append(entry_for(demo_model_path()))
    try:
        snapshots = cached_snapshots()
    except HubNotInstalled as error:
        logger.warning("%s", error)
        return entries
    for snapshot in snapshots:
        for entry in find_models(snapshot.folder):
            name = snapshot.prefix + os.path.relpath(entry.path, snapshot.folder)
            entries.append(attrs.evolve(entry, name=name))
    return entries


def _digest(path: str) -> dict[str, Any]:
    sha256 = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            sha256.update(chunk)
    return {"path": path, "size": os.path.getsize(path), "sha256": sha256.hexdigest()}


def pulled(name: str, path: str) -> dict[str, Any]:
    """`inference pull --json`: the file loaded (a split model's first part) and every part."""
    parts = [_digest(part) for part in split_parts(path)]
    return {"name": name, **parts[0], "parts": parts}


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _parameters(info: ModelInfo) -> str:
    if info.size_label:
        return info.size_label
    if info.quant_bits > 0:
        estimate = info.file_size * 8 / info.quant_bits
        return f"~{estimate / 1e9:.1f}B" if estimate >= 1e9 else f"~{estimate / 1e6:.0f}M"
    return "unknown"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _capability_rows(capabilities: Capabilities) -> list[tuple[str, str]]:
    parallel = _yes(capabilities.parallel_tool_calls)
    return [
        ("context (running)", f"{capabilities.context_len} tokens per sequence"),
        ("slots", str(capabilities.slots)),
        ("tools", f"{capabilities.tools} (parallel calls: {parallel})"),
        ("reasoning", _yes(capabilities.reasoning)),
        ("vision", _yes(capabilities.vision)),
        ("audio", _yes(capabilities.audio)),
        ("embeddings", _yes(capabilities.embeddings)),
    ]


def describe(entry: ModelEntry, capabilities: Capabilities | None = None) -> list[str]:
    """`inference info`: one "field: value" line each, for people; what a loaded model
    reports after the file's own."""
    info = entry.info
    assert info is not None
    rows = [
        ("path", info.path),
        ("name", info.name),
        ("architecture", info.architecture or "unknown"),
        ("parameters", _parameters(info)),
        ("quantisation", f"{info.file_type} ({info.quant_bits:g} bits per weight)"),
        ("context length", f"{info.context_length} (trained)"),
        ("layers", str(info.block_count)),
        ("embedding length", str(info.embedding_length)),
        ("vocab size", str(info.vocab_size)),
        ("file size", f"{human_size(entry.total_size)} ({entry.total_size} bytes)"),
    ]
    if len(entry.parts) > 1:
        rows.append(("parts", str(len(entry.parts))))
    if entry.error:
        rows.append(("warning", entry.error))
    if capabilities is not None:
        rows += _capability_rows(capabilities)
    width = max(len(label) for label, _ in rows) + 1
    return [f"{label + ':':<{width}} {value}" for label, value in rows]


def table(entries: list[ModelEntry], folder: str | None) -> list[str]:
    """`inference models`: aligned columns, paths relative to the folder searched (or
    hf:// names and full paths, for the cache and the demo model)."""
    header = ("PATH", "ARCH", "PARAMS", "QUANT", "CONTEXT", "SIZE")
    rows: list[tuple[str, ...]] = []
    for entry in entries:
        shown = entry.name or (
            entry.path if folder is None else os.path.relpath(entry.path, folder)
        )
        if len(entry.parts) > 1:
            shown += f" ({len(entry.parts)} parts)"
        if entry.info is None:
            rows.append((shown, f"{entry.status.upper()}: {entry.error}"))
            continue
        info = entry.info
        row = (
            shown,
            info.architecture or "?",
            _parameters(info),
            info.file_type,
            str(info.context_length),
            human_size(entry.total_size),
        )
        rows.append(row if entry.error is None else (*row, f"INCOMPLETE: {entry.error}"))
    full = [header, *(row for row in rows if len(row) > 2)]
    widths = [max(len(row[i]) for row in full) for i in range(5)]
    widths[0] = max(widths[0], *(len(row[0]) for row in rows))

    def line(row: tuple[str, ...]) -> str:
        if len(row) == 2:  # a corrupt file: its reason runs on past the columns
            return f"{row[0]:<{widths[0]}}  {row[1]}"
        cells = [f"{cell:<{widths[i]}}" if i < 5 else cell for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    return [line(header), *(line(row) for row in rows)]
