"""Start-up costs: `load()` beyond the server's own readiness, and `import inference_core`.

The server's "listening on" log line carries its own clock (minutes.seconds.
milliseconds.microseconds since it started). That clock is mapped onto ours by
the smallest gap between a line's stamp and the moment our log handler saw
it (the line that waited least in the pipe), so the pipe's delay does not
count as the server's time.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

import inference_core as ic

from .report import Row, Target
from .stats import figure

__all__ = ["measure_import", "measure_readiness"]

_SECTION = "startup"
_STAMP = re.compile(r"^\[\d+\] (\d+)\.(\d{2})\.(\d{3})\.(\d{3}) ")
_LISTENING = "listening on http://"


class _Lines(logging.Handler):
    """Keeps each server log line with the moment it was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.created, record.getMessage()))


def _server_seconds(line: str) -> float | None:
    match = _STAMP.match(line)
    if match is None:
        return None
    minutes, seconds, millis, micros = (int(group) for group in match.groups())
    return minutes * 60 + seconds + millis / 1e3 + micros / 1e6


def _listening_at(lines: list[tuple[float, str]]) -> float | None:
    """When the server said it was listening, on our `time.time()` clock."""
    stamped = [
        (seen, stamp, line) for seen, line in lines if (stamp := _server_seconds(line)) is not None
    ]
    listening = [stamp for _, stamp, line in stamped if _LISTENING in line]
    if not listening:
        return None
    return min(seen - stamp for seen, stamp, _ in stamped) + listening[0]


def _one_load(path: str, lines: _Lines) -> tuple[float, float]:
    """Seconds from `load()` to its return, and from the server's "listening" to that return."""
    lines.lines.clear()
    called = time.time()
    model = ic.load(path, backend="llama_cpp", context_len=2048, parallel_slots=4)
    returned = time.time()
    try:
        deadline = time.monotonic() + 5
        while (listening := _listening_at(lines.lines)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("llama-server never logged that it was listening")
            time.sleep(0.01)
    finally:
        model.close()
    return returned - called, returned - listening


def measure_readiness(path: str, loads: int) -> list[Row]:
    """Loads of the model, each on a fresh server."""
    server_log = logging.getLogger("inference_rocm.server.output")
    handler, level = _Lines(), server_log.level
    server_log.addHandler(handler)
    server_log.setLevel(logging.DEBUG)
    try:
        results = [_one_load(path, handler) for _ in range(loads)]
    finally:
        server_log.removeHandler(handler)
        server_log.setLevel(level)
    return [
        Row(_SECTION, "load() until ready", "ms", figure([total * 1e3 for total, _ in results])),
        Row(
            _SECTION,
            "readiness overhead: load() - server listening",
            "ms",
            figure([overhead * 1e3 for _, overhead in results]),
            Target(100),
        ),
    ]


def _interpreter_seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def _importtime_ms(module: str) -> float:
    """The interpreter's own cumulative import time for `module` (`-X importtime`)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        check=True,
        capture_output=True,
        text=True,
    )
    for line in result.stderr.splitlines():
        fields = [field.strip() for field in line.removeprefix("import time:").split("|")]
        if len(fields) == 3 and fields[2] == module:
            return int(fields[1]) / 1e3
    raise RuntimeError(f"-X importtime did not report {module}")


def measure_status(runs: int) -> list[Row]:
    """`inference_core.backends()`: every backend's status, as `auto` asks for it on each
    load (the rocm backend reads /dev/kfd and sysfs; binaries' versions are cached)."""
    ic.backends()  # discovery and the version cache, once
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        ic.backends()
        samples.append((time.perf_counter() - started) * 1e3)
    return [Row(_SECTION, "backends(): every backend's status", "ms", figure(samples))]


def measure_import(runs: int) -> list[Row]:
    """A fresh interpreter importing inference_core, minus an empty one, paired run by run."""
    _interpreter_seconds("import inference_core")  # warm the file cache and bytecode
    wall = [
        (_interpreter_seconds("import inference_core") - _interpreter_seconds("pass")) * 1e3
        for _ in range(runs)
    ]
    cumulative = [_importtime_ms("inference_core") for _ in range(runs)]
    return [
        Row(
            _SECTION,
            "import inference_core (fresh interpreter - empty one)",
            "ms",
            figure(wall),
            Target(100),
        ),
        Row(
            _SECTION, "import inference_core (-X importtime, cumulative)", "ms", figure(cumulative)
        ),
    ]
