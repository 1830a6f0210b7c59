"""The llama-server child process: spawn it, wait until it is ready, stop it.

The child dies with its parent: it is started with `PR_SET_PDEATHSIG`, from a
spawner thread that lives as long as the process (the signal fires when the
spawning *thread* exits, so spawning from a short-lived worker thread would
kill the server with that thread).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import io
import logging
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import IO, final

import attrs

from inference_core.errors import GenerationError, InferenceError, ServerCrashed, ServerStartError

from .binaries import BUILD_ADVICE
from .client import ServerClient
from .devices import SELECTORS

__all__ = [
    "Listen",
    "LlamaServer",
    "ServerOptions",
    "child_environment",
    "describe_exit",
    "port_in_use",
    "spawn_child",
    "stop_child",
]

logger = logging.getLogger(__name__)
# The child's own lines, apart from the library's messages (DEBUG: they are many).
server_output = logging.getLogger("inference_rocm.server.output")

HOST = "127.0.0.1"
# Where a build says which backends and CPU variant it loaded, and where the layers went.
_LOG_HEAD_LINES = 400
_LOG_TAIL_LINES = 60
_LOG_READ = 4096  # at most from the pipe at once (a request's burst of lines fits)
_LOG_LINE = 64 * 1024  # the longest line kept whole
_ERROR_TAIL_LINES = 25
_PR_SET_PDEATHSIG = 1
_BIND_FAILURE = re.compile(r"couldn't bind|failed to bind|address already in use", re.IGNORECASE)
_OUT_OF_MEMORY = re.compile(
    r"hipMalloc failed|out of memory|failed to allocate|ErrorOutOfDeviceMemory", re.IGNORECASE
)
# Variables the child may inherit: the loader's, the locale, and GPU selection.
# LLAMA_ARG_* is deliberately absent: it would let the environment override our flags.
_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH")
_ENV_PREFIXES = ("HIP_", "ROCR_", "HSA_", "GGML_", "VK_", "MESA_", "AMD_", *SELECTORS)


def describe_exit(returncode: int) -> str:
    """'exited with status 1' or 'was killed by SIGILL (...)', for messages."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = {
        "SIGILL": " (an illegal instruction: this llama-server build uses CPU instructions "
        "this machine does not allow)",
        "SIGABRT": " (it aborted; the log above says why, often a GPU driver or memory fault)",
        "SIGSEGV": " (it crashed with a segmentation fault)",
    }.get(name, "")
    return f"was killed by {name}{hint}"


def _advice(returncode: int) -> str:
    """What to do about an exit, where it has one fix whatever the machine."""
    return f"; {BUILD_ADVICE}" if returncode == -signal.SIGILL else ""


@attrs.frozen
class Listen:
    """Where a server that other programs use listens (`inference serve`): its host and
    port (0: a free one), and the key they must send (None: none), in place of our
    private loopback port and secret key."""

    host: str
    port: int
    api_key: str | None = attrs.field(default=None, repr=False)

    @property
    def connect_host(self) -> str:
        """Where we reach it: a server on every address answers on loopback."""
        return HOST if self.host in ("0.0.0.0", "::", "") else self.host


@attrs.frozen
class ServerOptions:
    """How to start one server; `args` are llama-server's flags beyond the fixed ones."""

    binary: str
    model_path: str
    args: tuple[str, ...] = ()
    environ: Mapping[str, str] | None = None  # what the child inherits from; None: ours
    gpu_selection: Mapping[str, str] | None = None  # replaces every GPU-choosing variable
    listen: Listen | None = None  # None: a private port on loopback, with a secret key
    load_timeout: float = 120.0  # seconds without log output or progress
    stop_grace: float = 5.0  # from SIGTERM to SIGKILL
    kill_wait: float = 5.0  # after SIGKILL, before giving up on a process stuck in the kernel
    port_attempts: int = 3


class _Spawner:
    """A long-lived thread that starts children, so PR_SET_PDEATHSIG outlives callers' threads."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def spawn(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="inference-rocm-spawner", daemon=True
                )
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((start, future))
        return future.result()

    def _run(self) -> None:
        while True:
            start, future = self._jobs.get()
            try:
                future.set_result(start())
            except BaseException as error:
                future.set_exception(error)


_spawner = _Spawner()
_libc_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        _libc_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def spawn_child(
    argv: Sequence[str], env: Mapping[str, str], *, output: int | None = None
) -> subprocess.Popen[bytes]:
    """Start a child that dies with this process, whichever thread asks (see the module's
    docstring). Its stdout and stderr go together to `output` (`subprocess.PIPE`:
    to us; `subprocess.DEVNULL`: nowhere); None: it writes where we do."""
    parent = os.getpid()
    return _spawner.spawn(
        lambda: subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=None if output is None else subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent(parent),
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the child
            close_fds=True,
        )
    )


def _send_signal(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)


def stop_child(
    process: subprocess.Popen[bytes],
    name: str,
    *,
    grace: float = 5.0,
    kill_wait: float = 5.0,
    send: Callable[[int], None] | None = None,
) -> None:
    """SIGTERM, wait `grace` seconds, then SIGKILL. The wait after SIGKILL is bounded:
    a process stuck in the kernel (a hung GPU driver) is logged and left. `send`
    signals the process (default: directly)."""
    signal_it = send or functools.partial(_send_signal, process)
    signal_it(signal.SIGTERM)
    try:
        process.wait(grace)
        return
    except subprocess.TimeoutExpired:
        logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, process.pid)
    signal_it(signal.SIGKILL)
    try:
        process.wait(kill_wait)
    except subprocess.TimeoutExpired:
        logger.error(
            "%s (pid %d) is still there %g s after SIGKILL, stuck in the kernel "
            "(a GPU driver hang?); no longer waiting for it",
            name,
            process.pid,
            kill_wait,
        )


def port_in_use(listen: Listen) -> ServerStartError:
    """The error of a server that cannot listen where the user asked."""
    return ServerStartError(
        f"port {listen.port} on {listen.host} is in use by another program: "
        "stop it, or choose another port (--port)"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def child_environment(
    binary: str,
    extra: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
    gpu_selection: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Only what llama-server needs, plus the user's GPU selection, or `gpu_selection`
    in place of every GPU-choosing variable when given (so none can disagree with it)."""
    source = os.environ if environ is None else environ
    env = {
        name: value
        for name, value in source.items()
        if (name in _ENV_NAMES or name.startswith(_ENV_PREFIXES))
        and (gpu_selection is None or name not in SELECTORS)
    }
    env.update(gpu_selection or {})
    env.setdefault("PATH", os.defpath)
    bin_dir = os.path.dirname(binary)  # prebuilt servers keep their libraries beside them
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [bin_dir, env.get("LD_LIBRARY_PATH")]))
    env.update(extra)
    return env


@final
class LlamaServer:
    """One running llama-server. Create it with `LlamaServer.start(options)`."""

    def __init__(self, options: ServerOptions, port: int) -> None:
        self.options = options
        self.port = port
        listen = options.listen
        self.host = HOST if listen is None else listen.host
        self._api_key = secrets.token_urlsafe(32) if listen is None else listen.api_key
        self._head: list[str] = []
        self._tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL_LINES)
        self._lines_seen = 0
        self._activity = threading.Condition()
        self._last_activity = time.monotonic()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_thread: threading.Thread | None = None
        self._stopped = False
        self._stop_lock = threading.Lock()
        self.client = ServerClient(
            HOST if listen is None else listen.connect_host,
            port,
            self._api_key,
            alive=self.alive,
            diagnose=self.diagnose,
        )

    @classmethod
    def start(cls, options: ServerOptions) -> LlamaServer:
        """Spawn and wait until ready; a port clash is retried on a new port (on the
        port asked for, it is an error)."""
        listen = options.listen
        if listen is not None and listen.port:
            try:
                return cls._started(options, listen.port)
            except _PortClash:
                raise port_in_use(listen) from None
        for attempt in range(1, options.port_attempts + 1):
            port = _free_port()
            try:
                return cls._started(options, port)
            except _PortClash:
                logger.info("port %d was taken; retrying (attempt %d)", port, attempt)
        raise ServerStartError(
            f"llama-server could not bind a port on {HOST} after {options.port_attempts} attempts"
        )

    @classmethod
    def _started(cls, options: ServerOptions, port: int) -> LlamaServer:
        """A server spawned on `port` and ready, or stopped again (`_PortClash`: taken)."""
        server = cls(options, port)
        try:
            server._spawn()
            server._wait_ready()
            return server
        except BaseException:
            server.stop()
            raise

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def url(self) -> str:
        return self.url_of(self.host, self.port)

    @staticmethod
    def url_of(host: str, port: int) -> str:
        """The URL of a server on `host` (brackets around an IPv6 address) and `port`."""
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def where(self) -> str:
        return f"pid={self.pid} port={self.port}"

    def argv(self) -> list[str]:
        model = ["--model", self.options.model_path] if self.options.model_path else []
        return [
            self.options.binary,
            *model,  # none: llama-server's router, which serves the models of --models-dir
            "--host", self.host,
            "--port", str(self.port),
            "--no-webui",
            *self.options.args,
        ]  # fmt: skip

    def _spawn(self) -> None:
        env = child_environment(
            self.options.binary,
            {} if self._api_key is None else {"LLAMA_API_KEY": self._api_key},
            self.options.environ,
            self.options.gpu_selection,
        )
        argv = self.argv()
        logger.info("starting %s", " ".join(argv))
        try:
            self._process = spawn_child(argv, env, output=subprocess.PIPE)
        except OSError as error:
            raise ServerStartError(
                f"cannot start {self.options.binary}: {error.strerror or error}"
            ) from None
        stdout = self._process.stdout
        assert stdout is not None
        self._log_thread = threading.Thread(
            target=self._pump_log, args=(stdout,), name=f"llama-server-log-{self.port}", daemon=True
        )
        self._log_thread.start()

    def _pump_log(self, stream: IO[bytes]) -> None:
        """Keep the first lines and a bounded tail; forward each line to its logger.

        Whatever the pipe holds is taken at once, and the waiters woken once for it: the
        lines of a request come in bursts, and one wake-up a line cost the streaming
        thread measurably (about 0.2 ms of CPU a request at log verbosity 4)."""
        assert isinstance(stream, io.BufferedReader)  # Popen's, buffered: read1 takes what is there
        key = b"" if self._api_key is None else self._api_key.encode()
        pending = b""
        while chunk := stream.read1(_LOG_READ):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > _LOG_LINE:  # a line without end: keep what there is of it,
                pending = pending.replace(key, b"***") if key else pending
                cut = len(pending) - max(0, len(key) - 1)  # less a key's start, if cut
                lines.append(pending[:cut])
                pending = pending[cut:]
            self._keep(lines)  # partial lines count as activity too
        self._keep([pending] if pending else [])
        stream.close()
        with self._activity:
            self._activity.notify_all()

    def _keep(self, lines: list[bytes]) -> None:
        key = self._api_key
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if key is not None and key in line:
                line = line.replace(key, "***")
            if len(self._head) < _LOG_HEAD_LINES:
                self._head.append(line)
            self._tail.append(line)
            self._lines_seen += 1
            server_output.debug("[%d] %s", self.port, line)
        with self._activity:
            self._last_activity = time.monotonic()
            self._activity.notify_all()

    def log_tail(self, lines: int = _ERROR_TAIL_LINES) -> str:
        return "\n".join(list(self._tail)[-lines:])

    def log(self) -> str:
        """The log as kept: its first lines and its last, with how many were left out."""
        after_head = self._lines_seen - len(self._head)
        tail = list(self._tail)[-after_head:] if after_head > 0 else []
        left_out = after_head - len(tail)
        gap = [f"... ({left_out} lines left out)"] if left_out > 0 else []
        return "\n".join([*self._head, *gap, *tail])

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def returncode(self, wait: float = 0.0) -> int | None:
        """The exit status, waiting up to `wait` seconds for the process to be reaped."""
        if self._process is None:
            return None
        try:
            return self._process.wait(wait) if wait > 0 else self._process.poll()
        except subprocess.TimeoutExpired:
            return None

    def _log_after_exit(self) -> str:
        if self._log_thread is not None:
            self._log_thread.join(timeout=5.0)  # EOF follows the exit; slow only under load
        return self.log_tail()

    def diagnose(self, what: str) -> InferenceError:
        """What a broken connection means: a dead server, or a transport problem."""
        returncode = self.returncode(wait=1.0)
        if returncode is None:
            return GenerationError(f"llama-server (pid {self.pid}) is running but {what}")
        return ServerCrashed(
            f"llama-server (pid {self.pid}, model {self.options.model_path}) "
            f"{describe_exit(returncode)}: {what}{_advice(returncode)}",
            log_tail=self._log_after_exit(),
            returncode=returncode,
            log=self.log(),
        )

    def _wait_ready(self) -> None:
        """Alive and /health 200; a stall (no log output, no progress) times out."""
        assert self._process is not None
        started = time.monotonic()
        while True:
            returncode = self._process.poll()
            if returncode is not None:
                tail = self._log_after_exit()
                if _BIND_FAILURE.search(tail) or _port_taken(self.host, self.port):
                    raise _PortClash
                raise ServerStartError(
                    self._start_failure(returncode, tail),
                    log_tail=tail,
                    returncode=returncode,
                    log=self.log(),
                )
            status = self.client.status_of("/health", timeout=1.0)
            if status == 200:
                logger.info(
                    "llama-server ready on port %d after %.2f s",
                    self.port,
                    time.monotonic() - started,
                )
                return
            with self._activity:
                stalled = time.monotonic() - self._last_activity
                if stalled > self.options.load_timeout:
                    break
                self._activity.wait(0.02 if status else 0.01)
        tail = self.log_tail()
        raise ServerStartError(
            f"llama-server made no progress loading {self.options.model_path} for "
            f"{self.options.load_timeout:g} s and was stopped; a larger model may need a "
            "longer load_timeout (--load-timeout)",
            log_tail=tail,
            log=self.log(),
        )

    def _start_failure(self, returncode: int, tail: str) -> str:
        message = (
            f"llama-server {describe_exit(returncode)} while loading {self.options.model_path}"
        )
        if _OUT_OF_MEMORY.search(tail):
            message += "; it ran out of GPU memory: load fewer gpu_layers or a smaller context_len"
        message += _advice(returncode)
        return message

    def stop(self) -> None:
        """Close our connections, SIGTERM, wait, then SIGKILL. Idempotent; never raises.

        Exactly once under threads: a second caller waits for the first to finish,
        so the server is gone whenever `stop()` returns. After SIGKILL the wait is
        bounded: a process stuck in the kernel (a hung GPU driver) is logged and left.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self.client.close()
            process = self._process
            if process is not None and process.poll() is None:
                self._terminate(process)
            if self._log_thread is not None:
                self._log_thread.join(timeout=2.0)

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        stop_child(
            process,
            "llama-server",
            grace=self.options.stop_grace,
            kill_wait=self.options.kill_wait,
            send=self._signal,
        )

    def _signal(self, signum: int) -> None:
        assert self._process is not None
        _send_signal(self._process, signum)


def _port_taken(host: str, port: int) -> bool:
    """Whether another process holds `port` now: a failed start then was a clash, even
    when the server's own line saying so was lost (it logs from a thread of its own,
    which may not flush before the process exits)."""
    try:
        with socket.create_server((host, port)):
            return False
    except OSError:
        return True


class _PortClash(Exception):
    """The chosen port was taken between picking it and the server binding it."""
