"""`python -m benchmarks [--quick] [--only GROUP,...] [--plot DIR [--from FILE]]`: run the
benchmarks, print the table, write the JSON, and draw the charts (of this run, or of the
recorded run in FILE, which runs nothing)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Any, TypeVar

import inference_core as ic
from inference_core.demo import demo_model_path
from inference_rocm.backends import binary_version
from inference_rocm.binaries import find_binary
from inference_rocm.model import LlamaServerModel

from .async_streams import measure_async
from .concurrency import measure_concurrency
from .contention import measure_contention
from .devices import measure_devices
from .distributed import measure_distributed
from .front import measure_front
from .lifecycle import measure_lifecycle
from .live import measure_live, measure_time_to_first_token
from .memory import measure_memory
from .plot import plot
from .readers import Endpoint
from .recording import record_both
from .replay_cost import measure_replay
from .report import Row, markdown, table, write_json
from .servers import measure_servers
from .speed import measure_speed
from .startup import measure_import, measure_readiness, measure_status

_T = TypeVar("_T")
_RESULTS = os.path.join(os.path.dirname(__file__), "results", "latest.json")
# Greedy SmolLM2 keeps writing on this prompt for well over 1,000 tokens.
PROMPT = "Write a long story about a dragon who learns to code."


@dataclass(frozen=True, slots=True)
class Settings:
    """How much to measure: runs of each figure and the sizes of the streams."""

    replay_tokens: int
    replay_rounds: int
    live_tokens: int
    live_rounds: int
    ttft_rounds: int
    concurrent_tokens: int
    concurrent_rounds: int
    generations: int
    loads: int
    import_runs: int
    server_tokens: int
    server_rounds: int
    contention_tokens: int
    contention_rounds: int
    distributed_tokens: int
    distributed_rounds: int
    lifecycle_rounds: int
    front_tokens: int
    front_rounds: int
    speed_tokens: int
    speed_rounds: int
    speed_facts: int
    lavapipe_tokens: int  # lavapipe decodes 1 to 2 tokens a second


FULL = Settings(
    replay_tokens=1000,
    replay_rounds=15,
    live_tokens=256,
    live_rounds=9,
    ttft_rounds=21,
    concurrent_tokens=96,
    concurrent_rounds=5,
    generations=1000,
    loads=5,
    import_runs=7,
    server_tokens=200,
    server_rounds=5,
    contention_tokens=12,
    contention_rounds=3,
    distributed_tokens=128,
    distributed_rounds=5,
    lifecycle_rounds=3,
    front_tokens=128,
    front_rounds=5,
    speed_tokens=200,
    speed_rounds=3,
    speed_facts=100,
    lavapipe_tokens=24,
)
QUICK = Settings(
    replay_tokens=200,
    replay_rounds=3,
    live_tokens=16,
    live_rounds=2,
    ttft_rounds=3,
    concurrent_tokens=8,
    concurrent_rounds=1,
    generations=40,
    loads=2,
    import_runs=2,
    server_tokens=16,
    server_rounds=1,
    contention_tokens=4,
    contention_rounds=1,
    distributed_tokens=16,
    distributed_rounds=1,
    lifecycle_rounds=1,
    front_tokens=16,
    front_rounds=1,
    speed_tokens=16,
    speed_rounds=1,
    speed_facts=10,
    lavapipe_tokens=4,
)


def _machine() -> dict[str, Any]:
    binary = find_binary().path
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_server": binary_version(binary) if binary else None,
        "openai": version("openai"),
        "requests": version("requests"),
    }


def _step(name: str, run: Callable[[], _T]) -> _T:
    """Run one benchmark, saying on stderr what runs and how long it took."""
    print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = run()
    print(f"benchmarks: {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return result


GROUPS = (
    "startup",
    "streams",
    "servers",
    "contention",
    "distributed",
    "lifecycle",
    "serve",
    "speed",
    "devices",
)


def run(settings: Settings, groups: Sequence[str] = GROUPS) -> list[Row]:
    """The benchmarks of `groups`, on the bundled SmolLM2 model; one model serves every
    stream benchmark."""
    path = demo_model_path()
    binary = find_binary().path
    assert binary is not None, "no llama-server found; see docs/getting-started.md"
    rows: list[Row] = []
    if "startup" in groups:
        rows += _step("import", lambda: measure_import(settings.import_runs))
        rows += _step("load", lambda: measure_readiness(path, settings.loads))
        rows += _step("status", lambda: measure_status(settings.import_runs))
    if "streams" in groups:
        rows += _streams(settings, path)
    # Then, with the shared server closed: each load runs alone on the cores.
    if "servers" in groups:
        rows += _step(
            "server builds",
            lambda: measure_servers(path, settings.server_tokens, settings.server_rounds),
        )
    if "contention" in groups:
        rows += _step(
            "contention",
            lambda: measure_contention(
                binary, path, settings.contention_tokens, settings.contention_rounds
            ),
        )
    if "distributed" in groups:
        rows += _step(
            "distributed",
            lambda: measure_distributed(
                binary, path, settings.distributed_tokens, settings.distributed_rounds
            ),
        )
    if "lifecycle" in groups:
        rows += _step("lifecycle", lambda: measure_lifecycle(path, settings.lifecycle_rounds))
    if "serve" in groups:
        rows += _step(
            "serve", lambda: measure_front(path, settings.front_tokens, settings.front_rounds)
        )
    if "speed" in groups:
        rows += _step(
            "speed",
            lambda: measure_speed(
                path, settings.speed_tokens, settings.speed_rounds, settings.speed_facts
            ),
        )
    if "devices" in groups:
        rows += _step(
            "devices",
            lambda: measure_devices(
                path, settings.speed_tokens, settings.speed_rounds, settings.lavapipe_tokens
            ),
        )
    return rows


def _streams(settings: Settings, path: str) -> list[Row]:
    """The client on the hot path, against the alternatives, all on one shared server."""
    rows: list[Row] = []
    with ic.load(path, backend="llama_cpp", context_len=2048, parallel_slots=4) as model:
        assert isinstance(model, LlamaServerModel)
        server = model.server.current
        endpoint = Endpoint("127.0.0.1", server.port, server._api_key)
        recording = _step(
            "recording", lambda: record_both(endpoint, PROMPT, settings.replay_tokens)
        )
        rows += _step(
            "replay",
            lambda: measure_replay(recording, PROMPT, model.info, settings.replay_rounds),
        )
        rows += _step(
            "live",
            lambda: (
                measure_live(model, endpoint, PROMPT, settings.live_tokens, settings.live_rounds)
                + measure_time_to_first_token(model, endpoint, PROMPT, settings.ttft_rounds)
            ),
        )
        rows += _step(
            "concurrent",
            lambda: measure_concurrency(
                model, endpoint, PROMPT, settings.concurrent_tokens, settings.concurrent_rounds
            ),
        )
        rows += _step(
            "async",
            lambda: measure_async(
                model, endpoint, PROMPT, settings.live_tokens, settings.live_rounds
            ),
        )
        rows += _step("memory", lambda: measure_memory(model, PROMPT, settings.generations))
    return rows


def _groups(value: str) -> tuple[str, ...]:
    chosen = tuple(group.strip() for group in value.split(",") if group.strip())
    unknown = [group for group in chosen if group not in GROUPS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown group {', '.join(unknown) or '(none)'}; the groups are {', '.join(GROUPS)}"
        )
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="few runs and short streams: checks that it runs"
    )
    parser.add_argument(
        "--output", help=f"the JSON file (default: {_RESULTS}, or GROUP.json beside it with --only)"
    )
    parser.add_argument("--markdown", help="also write the table as Markdown to this file")
    parser.add_argument(
        "--only",
        type=_groups,
        default=GROUPS,
        metavar="GROUP,...",
        help=f"run only these groups, of {', '.join(GROUPS)} (default: all)",
    )
    parser.add_argument("--plot", metavar="DIR", help="also draw the charts, as SVG, into DIR")
    parser.add_argument(
        "--from",
        dest="recorded",
        metavar="FILE",
        help="with --plot: draw the run recorded in FILE (a results JSON) and measure nothing",
    )
    args = parser.parse_args(argv)
    if args.recorded:
        if not args.plot:
            parser.error("--from draws a recorded run: give --plot DIR too")
        return _draw(args.recorded, args.plot)
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    rows = run(settings, args.only)
    print(table(rows))
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    context = {
        "command": command + ("" if args.only == GROUPS else f" --only {','.join(args.only)}"),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": _machine(),
        "settings": asdict(settings),
    }
    default = _RESULTS if args.only == GROUPS else _RESULTS.replace("latest", "-".join(args.only))
    write_json(args.output or default, rows, context)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as file:
            file.write(markdown(rows))
    if args.plot:
        _draw(args.output or default, args.plot)
    missed = [row.name for row in rows if row.verdict == "MISSED"]
    print(f"targets missed: {', '.join(missed)}" if missed else "all targets met")
    if args.quick:
        print("(--quick checks that the suite runs: its few short runs do not judge the targets)")
    return 0


def _draw(results: str, folder: str) -> int:
    """The charts of the run recorded in `results`, each noting the command and machine."""
    with open(results, encoding="utf-8") as file:
        recorded = json.load(file)
    machine = recorded["machine"]
    note = (
        f"{recorded['command']}; {machine['cpus']} CPUs, {machine['platform']}, "
        f"Python {machine['python']}, llama-server {machine['llama_server']}"
    )
    for path in plot(recorded["rows"], folder, note):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
