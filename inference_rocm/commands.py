"""`inference server build|list|remove`: llama-server builds for this machine, in the cache;
`inference serve`: an OpenAI-compatible endpoint for other programs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from inference_core._cli_speed import add_speed_options, speed_fields
from inference_core.demo import demo_model_path
from inference_core.types import LoadConfig

from . import build as builds
from . import serve as serving
from .backends import load_with_server
from .binaries import cache_root, cached_builds
from .devices import discover

__all__ = ["add_serve_command", "add_server_commands"]

_BAR_WIDTH = 30
_WATCH_SECONDS = 1.0  # how often `serve` checks that its server still runs


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


def add_serve_command(subparsers: Any) -> None:
    """`inference serve MODEL | --models-dir DIR...`, added through `register_commands`."""
    serve = subparsers.add_parser(
        "serve",
        help="serve models to other programs over llama-server's OpenAI-compatible API",
        description="Serve one model, or every model of folders (and the Hugging Face "
        "cache, the default without either) on llama-server's router, which loads the "
        "model a request names. Runs until Ctrl-C, which stops everything it started.",
    )
    serve.add_argument("model", nargs="?", help="a model's path or hf:// name")
    serve.add_argument(
        "--models-dir", action="append", default=[], metavar="DIR", help="a folder of models"
    )
    serve.add_argument(
        "--hf-cache", action="store_true", help="the Hugging Face cache's models besides"
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address (default: loopback)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--api-key",
        help="the key clients must send (default: LLAMA_API_KEY); needed off loopback",
    )
    serve.add_argument(
        "--max-models", type=int, default=1, help="models loaded at once (default: 1)"
    )
    serve.add_argument(
        "--keep-alive", type=float, metavar="S", help="free a model's memory after S idle seconds"
    )
    serve.add_argument("--backend", default="auto", help="rocm, llama_cpp or auto")
    serve.add_argument("--context-len", type=int, default=0, help="tokens per sequence")
    serve.add_argument("--embeddings", action="store_true", help="serve /v1/embeddings as well")
    serve.add_argument(
        "--chat-template", metavar="FILE", help="a Jinja chat template in place of the model's"
    )
    add_speed_options(serve.add_argument_group("speed"))
    serve.set_defaults(handler=_serve)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    if args.model and args.models_dir:
        print("inference serve: error: give a MODEL or --models-dir, not both", file=sys.stderr)
        return 2
    listen = serving.check_listen(
        args.host, args.port, args.api_key or os.environ.get("LLAMA_API_KEY")
    )
    config = LoadConfig(
        context_len=args.context_len,
        keep_alive=args.keep_alive,
        embeddings=args.embeddings,
        chat_template=args.chat_template,
        **speed_fields(args),
    )
    if args.model:
        served = serving.serve_model(args.model, config, backend=args.backend, listen=listen)
    else:
        served = serving.serve_folders(
            args.models_dir,
            include_cache=args.hf_cache or not args.models_dir,
            backend=args.backend,
            listen=listen,
            max_models=args.max_models,
            config=config,
        )
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop, as Ctrl-C
    try:
        for line in serving.describe(served):
            print(line, flush=True)
        while True:
            time.sleep(_WATCH_SECONDS)
            served.server.watch()  # ServerCrashed ends it once the server keeps dying
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr, flush=True)
        return 0
    finally:
        served.stop()
