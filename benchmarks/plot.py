"""Charts of a benchmark run, as SVG: where a reader would rather look than read a table.

Each chart picks its rows by section and a pattern of their names; the pattern's `group`
names a cluster of bars and its `series` (if any) the bar within it, so a chart of
"1 stream(s): ours" against "1 stream(s): raw HTTP" reads from the rows as they are.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CHARTS", "Chart", "plot"]


@dataclass(frozen=True, slots=True)
class Chart:
    """One picture: the rows of `sections` in `unit` whose names match `pattern`, each
    bar labelled with its median in `label`'s format."""

    file: str
    title: str
    axis: str
    sections: tuple[str, ...]
    unit: str
    pattern: str
    label: str = "{:.3g}"

    def bars(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Mapping[str, Any]]]:
        """Group → series → row, in the rows' order ("" is the series of a lone bar)."""
        found: dict[str, dict[str, Mapping[str, Any]]] = {}
        for row in rows:
            match = re.fullmatch(self.pattern, row["name"])
            if row["section"] in self.sections and row["unit"] == self.unit and match:
                named = match.groupdict()
                found.setdefault(named["group"], {})[named.get("series") or ""] = row
        return found


CHARTS = (
    Chart(
        "cpu-per-token.svg",
        "Client CPU per token, a replayed 1,000-token stream (lower is better)",
        "µs of process CPU per token",
        ("replay",),
        "µs",
        r"(?P<group>.+) \(CPU/token\)",
    ),
    Chart(
        "tokens-per-second.svg",
        "Tokens/s each client delivers, as a share of llama-server's decode rate",
        "delivered ÷ server decode rate",
        ("live", "async"),
        "x",
        r"(?P<group>ours|bare|agenerate\(\)): delivered ÷ server decode rate",
        label="{:.3f}",
    ),
    Chart(
        "concurrency.svg",
        "Streams side by side on a 4-slot server: aggregate tokens/s",
        "tokens/s, all streams together",
        ("concurrent",),
        "tok/s",
        r"(?P<group>\d+ stream\(s\)): (?P<series>ours|raw HTTP), aggregate",
    ),
    Chart(
        "local-remote-split.svg",
        "Local, remote (over http) and split over 2 RPC workers: tokens/s",
        "tokens/s",
        ("distributed",),
        "tokens/s",
        r"(?P<group>[^:]+): (?P<series>decode rate \(server\)|delivered rate \(caller\))",
    ),
)


def plot(rows: Sequence[Mapping[str, Any]], folder: str, note: str) -> list[str]:
    """Writes each chart whose rows the run has into `folder`; returns their paths.
    `note` (the command and machine) goes under each chart."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the environment says
    from matplotlib import pyplot

    pyplot.rcParams.update(
        {"svg.fonttype": "none", "svg.hashsalt": "inference-core", "font.size": 9}
    )
    os.makedirs(folder, exist_ok=True)
    written = []
    for chart in CHARTS:
        bars = chart.bars(rows)
        if not bars:
            continue  # a run without that group (--only, or no RPC worker)
        figure = _draw(pyplot, chart, bars, note)
        path = os.path.join(folder, chart.file)
        figure.savefig(path, format="svg", metadata={"Date": None})  # the same run, same file
        pyplot.close(figure)
        written.append(path)
    return written


def _draw(pyplot: Any, chart: Chart, bars: Mapping[str, Mapping[str, Any]], note: str) -> Any:
    """Horizontal bars, one cluster a group, each with its min-max whisker."""
    series = list(dict.fromkeys(name for cluster in bars.values() for name in cluster))
    groups = list(bars)
    height = 0.8 / len(series)
    figure, axes = pyplot.subplots(figsize=(7.5, 1.2 + 0.45 * len(groups) * len(series)))
    for index, name in enumerate(series):
        places: list[float] = []
        medians: list[float] = []
        whiskers: tuple[list[float], list[float]] = ([], [])  # below, above the median
        for position, group in enumerate(groups):
            row = bars[group].get(name)
            if row is None:
                continue
            places.append(position + (index - (len(series) - 1) / 2) * height)
            medians.append(row["median"])
            whiskers[0].append(row["median"] - row["low"])
            whiskers[1].append(row["high"] - row["median"])
        drawn = axes.barh(places, medians, height, xerr=whiskers, capsize=3, label=name or None)
        axes.bar_label(drawn, labels=[chart.label.format(value) for value in medians], padding=4)
    axes.set_yticks(range(len(groups)), groups)
    axes.invert_yaxis()  # the first row on top, as in the table
    axes.set_xlabel(chart.axis)
    axes.margins(x=0.12)  # room for the figure printed after the longest whisker
    figure.suptitle(textwrap.fill(chart.title, 80), x=0.01, ha="left")
    axes.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:  # above the bars, never over them
        axes.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=len(series), frameon=False)
    figure.text(0.01, 0.01, note, fontsize=7, color="0.4")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return figure
