"""The llama.cpp RPC workers a model is split over: can they be reached, and what a
failed start means when they are in play.

llama-server given `--rpc` to a worker it cannot connect to logs "Failed to
connect to HOST:PORT" and then, in the pinned wheel, serves without that worker
(the sources `inference server build` compiles abort instead). So the workers
are checked with a TCP connect before the server starts, and its log is read
once it is up, for a worker that went away in between. A worker serves one
llama-server at a time: another one's connection waits unanswered, and the load
stalls.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from inference_core.errors import ServerStartError, WorkersUnreachable

from .server import LlamaServer, ServerOptions

__all__ = ["check_workers", "start_with_workers"]

_FAILED_CONNECT = re.compile(r"Failed to connect to (\S+)")
# How a start ends when a worker answers wrongly: a stall (no status), an abort on a
# malformed answer, or SIGPIPE when the other end hung up before llama-server wrote.
_WORKER_FAULTS = (None, -signal.SIGABRT, -signal.SIGPIPE)
_ADVICE = (
    "start `inference rpc-worker --host ADDRESS --port PORT` there (from the same "
    "llama.cpp build as this one), and check the host, the port and any firewall between"
)


def _plural(items: Sequence[str]) -> str:
    return f"RPC worker{'s' if len(items) > 1 else ''} {', '.join(items)}"


def _connect_problem(worker: str, timeout: float) -> str | None:
    """None when a TCP connection to `worker` ("host:port") opens within `timeout`."""
    host, _, port = worker.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host  # [::1]:50052
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as error:
        return error.strerror or str(error)


def check_workers(workers: Sequence[str], timeout: float) -> None:
    """Connect to every worker at once, each within `timeout` seconds; raise
    `WorkersUnreachable` naming each one that cannot be reached, and why."""
    with ThreadPoolExecutor(len(workers), thread_name_prefix="rpc-check") as pool:
        problems = list(pool.map(lambda worker: _connect_problem(worker, timeout), workers))
    failed = {w: problem for w, problem in zip(workers, problems, strict=True) if problem}
    if failed:
        listed = [f"{worker} ({problem})" for worker, problem in failed.items()]
        raise WorkersUnreachable(tuple(failed), f"cannot reach the {_plural(listed)}: {_ADVICE}")


def _unreached_in_log(workers: Sequence[str], log: str, model: str) -> WorkersUnreachable | None:
    """The error for the workers llama-server's log says it could not connect to, if any."""
    failed = set(_FAILED_CONNECT.findall(log))
    missing = tuple(worker for worker in workers if worker in failed)
    if not missing:
        return None
    return WorkersUnreachable(
        missing,
        f"llama-server could not connect to the {_plural(missing)} while loading {model}, "
        f"though {'they' if len(missing) > 1 else 'it'} answered a moment before; "
        f"the server was stopped: {_ADVICE}",
    )


def _start_failure(
    workers: Sequence[str], error: ServerStartError, model: str
) -> WorkersUnreachable | ServerStartError:
    """A failed start, told in terms of the workers: the ones it could not connect to,
    or else what a worker that answers wrongly does to a load."""
    unreached = _unreached_in_log(workers, error.log, model)
    if unreached is not None:
        return unreached
    if error.returncode not in _WORKER_FAULTS:
        return error
    return error.retold(
        ServerStartError,
        f"{error.summary}; it was to connect to the {_plural(workers)}: one that accepts "
        "the connection but never answers (it serves another llama-server: a worker serves "
        "one at a time) stalls the load, and one that is not an RPC worker of this llama.cpp "
        "version ends it (SIGABRT, or SIGPIPE when it hangs up first)",
    )


def start_with_workers(options: ServerOptions, workers: Sequence[str]) -> LlamaServer:
    """`LlamaServer.start`; with workers, only once each one answers, and the server is
    kept only if it reached them all."""
    if not workers:
        return LlamaServer.start(options)
    check_workers(workers, options.load_timeout)
    try:
        server = LlamaServer.start(options)
    except ServerStartError as error:
        raise _start_failure(workers, error, options.model_path) from None
    unreached = _unreached_in_log(workers, server.log(), options.model_path)
    if unreached is not None:
        server.stop()
        raise unreached
    return server
