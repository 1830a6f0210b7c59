"""Figures from repeated runs: the median, with the smallest and largest run."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Figure", "figure", "ratios"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured quantity over several runs; `median` is what the targets are held to."""

    median: float
    low: float
    high: float
    runs: int


def figure(samples: Sequence[float]) -> Figure:
    if not samples:
        raise ValueError("a figure needs at least one run")
    return Figure(statistics.median(samples), min(samples), max(samples), len(samples))


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Figure:
    """Run-by-run ratios (each pair measured in the same round), summarised."""
    if len(numerators) != len(denominators):
        raise ValueError("ratios pair runs one to one")
    return figure([a / b for a, b in zip(numerators, denominators, strict=True)])
