"""`inference rpc-worker`: a llama.cpp RPC worker in the foreground, which lends this
machine's CPU (or GPUs) to a llama-server elsewhere (`LoadConfig.rpc_servers`)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from inference_core.errors import BackendUnavailable, InferenceError

from . import cpus
from .binaries import find_binary, worker_beside
from .server import child_environment, describe_exit, spawn_child, stop_child

__all__ = ["add_worker_command"]

_LOOPBACK = "127.0.0.1"
_DEFAULT_PORT = 50052  # llama.cpp's own
_SIGNAL_CHECK = 0.2  # seconds: how soon a signal another thread received is acted on


class _Terminated(Exception):
    """SIGTERM arrived: stop the worker, and call it a clean stop."""


def add_worker_command(subparsers: Any) -> None:
    """The `rpc-worker` command, added through the `register_commands` hook."""
    worker = subparsers.add_parser(
        "rpc-worker",
        help="lend this machine to a llama-server elsewhere: a llama.cpp RPC worker",
        description="Run llama.cpp's RPC worker in the foreground until Ctrl-C or SIGTERM. "
        "A llama-server loaded with rpc_servers='HOST:PORT' puts layers of its model here.",
    )
    worker.add_argument(
        "--host",
        default=_LOOPBACK,
        help="the address to listen on (default: 127.0.0.1, this machine only)",
    )
    worker.add_argument(
        "--port", type=_whole_number(1, 65535), default=_DEFAULT_PORT, help="default: 50052"
    )
    worker.add_argument(
        "--threads", type=_whole_number(1, 1024), help="CPU threads (default: every core but one)"
    )
    worker.set_defaults(handler=_serve)


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit() or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"not a whole number from {low} to {high}: {value!r}")
        return int(value)

    return parse


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _say(message: str) -> None:
    print(f"inference rpc-worker: {message}", file=sys.stderr, flush=True)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(process: subprocess.Popen[bytes]) -> int:
    """Its exit status, waited for in slices: the kernel may hand Ctrl-C or SIGTERM to
    another of our threads (the spawner's), and Python then runs the handler only once
    the main thread runs again, which a waitpid() with no end would never let it do."""
    while True:
        try:
            return process.wait(_SIGNAL_CHECK)
        except subprocess.TimeoutExpired:
            continue


def _serve(args: argparse.Namespace) -> int:
    lookup = find_binary()
    if lookup.path is None:
        raise BackendUnavailable("; ".join(lookup.problems), lookup.problems)
    binary = worker_beside(lookup.path)
    if binary is None:
        raise BackendUnavailable(
            f"no RPC worker (ggml-rpc-server or rpc-server) beside {lookup.path} (from "
            f"{lookup.source}), the llama-server in use: `inference server build` makes a "
            "build with both (some minutes), or build llama.cpp with -DGGML_RPC=ON and put "
            "its ggml-rpc-server beside that llama-server"
        )
    threads = args.threads or cpus.default_threads()
    if not _loopback(args.host):
        _say(
            f"WARNING: listening on {args.host}, not on this machine alone. The RPC protocol "
            "has no authentication and no encryption: whoever reaches this port can use this "
            "machine's devices and see the model's data. Run it only on a trusted network "
            "(or keep the default 127.0.0.1 and reach it through an SSH tunnel or a VPN)."
        )
    argv = [binary, "--host", args.host, "--port", str(args.port), "--threads", str(threads)]
    _say(f"serving on {args.host}:{args.port} with --threads {threads} ({binary}); Ctrl-C stops it")
    process = spawn_child(argv, child_environment(binary, {}))  # it dies with us, whatever happens
    try:
        with _sigterm_raises():
            returncode = _wait(process)
    except _Terminated:
        return 0
    finally:
        stop_child(process, "the RPC worker")
    raise InferenceError(
        f"the RPC worker {describe_exit(returncode)}; its output above says why (where it "
        'says "Failed to create server socket", the port is in use or the host is not an '
        "address of this machine)"
    )
