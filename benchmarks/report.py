"""The results: a table for the terminal, a Markdown table for the Performance page, and JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .stats import Figure

__all__ = ["Row", "Target", "markdown", "table", "write_json"]


@dataclass(frozen=True, slots=True)
class Target:
    """What the median must be: at most (or at least) `bound`."""

    bound: float
    at_most: bool = True

    def met(self, value: float) -> bool:
        return value <= self.bound if self.at_most else value >= self.bound

    def __str__(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {_number(self.bound)}"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results: a measured figure, and the target it is held to, if any."""

    section: str
    name: str
    unit: str
    value: Figure
    target: Target | None = None

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "met" if self.target.met(self.value.median) else "MISSED"

    def cells(self) -> list[str]:
        value = self.value
        return [
            self.section,
            self.name,
            self.unit,
            _number(value.median),
            _number(value.low),
            _number(value.high),
            str(value.runs),
            "" if self.target is None else str(self.target),
            self.verdict,
        ]


_HEADER = ["section", "figure", "unit", "median", "min", "max", "runs", "target", ""]


def _number(value: float) -> str:
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(rows: Sequence[Row]) -> str:
    """Aligned columns for the terminal; numbers right-aligned."""
    lines = [_HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(_HEADER))]
    numeric = {3, 4, 5, 6}
    return "\n".join(
        "  ".join(
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def markdown(rows: Sequence[Row]) -> str:
    """The same table in Markdown, for the Performance page (docs/performance.md)."""
    lines = [
        "| " + " | ".join([*_HEADER[:-1], "met"]) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * 4 + ["---"] * 2) + "|",
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_json(path: str, rows: Sequence[Row], context: Mapping[str, Any]) -> None:
    """`context` (machine, settings) and every row, with its verdict."""
    document = {
        **context,
        "rows": [
            {
                "section": row.section,
                "name": row.name,
                "unit": row.unit,
                **asdict(row.value),
                "target": None if row.target is None else str(row.target),
                "met": None if row.target is None else row.target.met(row.value.median),
            }
            for row in rows
        ],
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=2, ensure_ascii=False)
        file.write("\n")
