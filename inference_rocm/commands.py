"""`inference server build|list|remove`: llama-server builds for this machine, in the cache."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from inference_core.demo import demo_model_path

from . import build as builds
from .backends import load_with_server
from .binaries import cache_root, cached_builds
from .devices import discover

__all__ = ["add_server_commands"]

_BAR_WIDTH = 30


def add_server_commands(subparsers: Any) -> None:
    """The `server` command group, added through the `register_commands` hook."""
    server = subparsers.add_parser("server", help="build and manage llama-server binaries")
    actions = server.add_subparsers(dest="server_command", metavar="ACTION", required=True)

    make = actions.add_parser(
        "build", help="build llama-server from pinned llama.cpp sources for this machine"
    )
    make.add_argument("--backend", choices=builds.BACKENDS, default="cpu")
    make.add_argument("--gfx", help="ROCm targets, comma separated (default: the GPUs found)")
    make.add_argument("--source", metavar="DIR", help="a local llama.cpp checkout")
    make.add_argument("--jobs", "-j", type=int, help="parallel compile jobs (default: all cores)")
    make.add_argument("--model", metavar="PATH", help="the model the build is proven on")
    make.add_argument("--json", action="store_true", help="print the manifest as JSON")
    make.set_defaults(handler=_build)

    listing = actions.add_parser("list", help="the builds in the cache, newest first")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_list)

    remove = actions.add_parser("remove", help="delete cached builds")
    remove.add_argument("names", metavar="NAME", nargs="*", help="builds to delete")
    remove.add_argument("--all", action="store_true", help="delete every cached build")
    remove.set_defaults(handler=_remove)


def _progress_bar(started: float) -> builds.Progress:
    def draw(fraction: float, line: str) -> None:
        filled = int(fraction * _BAR_WIDTH)
        elapsed = time.monotonic() - started
        width = shutil.get_terminal_size().columns
        text = f"\r[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {fraction:4.0%} {elapsed:5.0f}s "
        sys.stderr.write((text + line)[: width - 1] + "\x1b[K")
        sys.stderr.flush()

    return draw


def _say(message: str) -> None:
    print(f"inference server build: {message}", file=sys.stderr, flush=True)


def _build(args: argparse.Namespace) -> int:
    gfx = [g.strip() for g in args.gfx.split(",") if g.strip()] if args.gfx else []
    if args.backend == "rocm" and not gfx:
        gfx = sorted({device.gfx for device in discover() if not device.integrated})
    tty = sys.stderr.isatty()
    try:
        made = builds.build(
            args.backend,
            proof_model=args.model or demo_model_path(),
            load=load_with_server,
            source=Path(args.source).resolve() if args.source else None,
            gfx=gfx,
            jobs=args.jobs,
            progress=_progress_bar(time.monotonic()) if tty else None,
            log=_say,
        )
    except builds.BuildError as error:
        if tty:
            sys.stderr.write("\n")
        print(f"inference: error: {error}", file=sys.stderr)
        return 1
    if tty:
        sys.stderr.write("\r\x1b[K")
    if args.json:
        print(json.dumps({"name": made.name, "path": str(made.path), **made.manifest}, indent=2))
    else:
        rate = made.manifest.get("decode_tokens_per_second")
        print(f"built {made.name}: {made.binary}")
        print(f"proven on {made.manifest.get('proof_model')}: {rate} tokens/s decode")
        print("the llama_cpp and rocm backends now find it (see `inference backends`)")
    return 0


def _list(args: argparse.Namespace) -> int:
    found = cached_builds()
    if args.json:
        print(json.dumps([{"name": b.name, "path": str(b.path), **b.manifest} for b in found]))
        return 0
    if not found:
        print(f"no builds in {cache_root() / 'builds'}; make one with `inference server build`")
    for cached in found:
        manifest = cached.manifest
        print(
            f"{cached.name}  {manifest.get('backend')}  built {manifest.get('built')}  "
            f"{manifest.get('decode_tokens_per_second')} tokens/s on {manifest.get('proof_model')}"
        )
        print(f"    {cached.binary}")
    for stale in builds.stale_builds():
        size = sum(f.stat().st_size for f in stale.rglob("*") if f.is_file() and not f.is_symlink())
        print(
            f"{stale.name}  stopped before it finished, {size / (1 << 20):.0f} MiB: "
            "the next `inference server build` removes it"
        )
    return 0


def _remove(args: argparse.Namespace) -> int:
    names = [b.name for b in cached_builds()] if args.all else args.names
    if not names:
        print("inference server remove: error: name builds to remove, or --all", file=sys.stderr)
        return 2
    for name in names:
        print(f"removed {builds.remove_build(name)}")
    return 0
