"""`python -m benchmarks --plot DIR`: the charts say what the rows say, and only what a
run measured. Drawn from a results file written by the suite's own writer."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.report import Row, write_json
from benchmarks.stats import Figure

SVG = "{http://www.w3.org/2000/svg}"
MACHINE = {
    "cpus": 2,
    "platform": "Linux-test",
    "python": "3.11.7",
    "llama_server": "b1",
    "openai": "1",
    "requests": "2",
}


def results(tmp_path: Path, rows: list[Row]) -> Path:
    path = tmp_path / "latest.json"
    write_json(str(path), rows, {"command": "python -m benchmarks", "machine": MACHINE})
    return path


def texts(svg: Path) -> list[str]:
    """Every piece of text the chart shows (SVG text is kept as text, not outlines)."""
    tree = ElementTree.parse(svg)
    return ["".join(node.itertext()).strip() for node in tree.iter(f"{SVG}text")]


def stream_rows() -> list[Row]:
    return [
        Row("replay", "ours: generate() (CPU/token)", "µs", Figure(7.22, 6.77, 8.94, 15)),
        Row("replay", "openai client, /v1/completions (CPU/token)", "µs", Figure(72, 70, 107, 15)),
        Row("replay", "ours ÷ bare (CPU/token)", "x", Figure(0.846, 0.5, 0.9, 15)),
        Row("concurrent", "1 stream(s): ours, aggregate", "tok/s", Figure(78.0, 75, 81, 5)),
        Row("concurrent", "1 stream(s): raw HTTP, aggregate", "tok/s", Figure(79.1, 78, 80, 5)),
        Row("concurrent", "4 stream(s): ours, aggregate", "tok/s", Figure(99.6, 96, 111, 5)),
        Row("concurrent", "4 stream(s): raw HTTP, aggregate", "tok/s", Figure(101, 97, 112, 5)),
        Row("concurrent", "4 stream(s): ours ÷ raw", "x", Figure(0.98, 0.9, 1.0, 5)),
    ]


def test_plot_draws_each_measured_chart_with_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = results(tmp_path, stream_rows())
    charts = tmp_path / "charts"
    assert main(["--plot", str(charts), "--from", str(recorded)]) == 0
    # no live or distributed rows in this run: no chart of them
    assert sorted(p.name for p in charts.iterdir()) == ["concurrency.svg", "cpu-per-token.svg"]
    assert capsys.readouterr().out.count("wrote ") == 2

    cpu = texts(charts / "cpu-per-token.svg")
    assert "ours: generate()" in cpu and "openai client, /v1/completions" in cpu
    assert "7.22" in cpu and "72" in cpu
    assert "0.846" not in cpu  # a ratio row is not a client's cost
    assert any("python -m benchmarks; 2 CPUs, Linux-test" in text for text in cpu)

    concurrency = texts(charts / "concurrency.svg")
    assert {"1 stream(s)", "4 stream(s)", "ours", "raw HTTP"} <= set(concurrency)
    assert {"78", "79.1", "99.6", "101"} <= set(concurrency)


def test_the_same_run_draws_the_same_files(tmp_path: Path) -> None:
    recorded = results(tmp_path, stream_rows())
    drawn = []
    for attempt in ("a", "b"):
        main(["--plot", str(tmp_path / attempt), "--from", str(recorded)])
        drawn.append((tmp_path / attempt / "concurrency.svg").read_bytes())
    assert drawn[0] == drawn[1]  # no date, no random ids: a re-plot changes no committed file


def test_from_without_plot_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recorded = results(tmp_path, stream_rows())
    with pytest.raises(SystemExit) as exited:
        main(["--from", str(recorded)])
    assert exited.value.code == 2
    assert "--plot" in capsys.readouterr().err
