"""A llama-server started here, kept serving: started again after it dies.

A crash fails what was in flight (`ServerCrashed`, with the log's tail, raised by the
client); the next request finds the process gone and starts it again with the same
binary, flags and environment. Restarts are bounded: a server that dies more than
`limit` times within `window` seconds, or that cannot be started again, stays dead
and says so, so a crash on every request never becomes a restart loop. Nothing is
started after `stop()`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import final

from inference_core.errors import ServerCrashed, ServerStartError

from . import wire
from .client import ServerClient
from .server import LlamaServer, describe_exit

__all__ = ["KeptServer"]

logger = logging.getLogger(__name__)

RESTART_LIMIT = 3
RESTART_WINDOW = 60.0  # seconds


@final
class KeptServer:
    """The `ServerHandle` of a model whose server we start: the running `LlamaServer`
    (`current`), started again on first use after it died, when `restart` allows."""

    def __init__(
        self,
        server: LlamaServer,
        start: Callable[[], LlamaServer],
        *,
        restart: bool = True,
        limit: int = RESTART_LIMIT,
        window: float = RESTART_WINDOW,
    ) -> None:
        self._server = server
        self._start = start
        self._restart = restart
        self._limit = limit
        self._window = window
        self._lock = threading.Lock()
        self._restarted_at: collections.deque[float] = collections.deque()
        self._dead: ServerCrashed | None = None  # the verdict once it is not started again
        self._stopped = False
        self.restarts = 0

    @property
    def current(self) -> LlamaServer:
        """The server running now: one that died is started again first (or, where it
        may not be, `ServerCrashed` says why)."""
        with self._lock:
            server = self._server
            if self._stopped or server.alive():
                return server
            return self._revive(server)

    def watch(self) -> None:
        """Start a server that died again now, not on the next request (`inference serve`,
        whose requests do not pass through us)."""
        _ = self.current

    @property
    def client(self) -> ServerClient:
        return self.current.client

    @property
    def pid(self) -> int | None:
        return self._server.pid

    @property
    def asleep(self) -> bool:
        """Whether the server has given its memory back after `keep_alive` idle seconds
        (its own sleep mode; the next request wakes it)."""
        if not self.alive():
            return False
        return wire.props(self._server.client.request("GET", "/props")).sleeping

    def alive(self) -> bool:
        """Whether the server runs now (asking starts none)."""
        return not self._stopped and self._server.alive()

    def where(self) -> str:
        return self._server.where()

    def stop(self) -> None:
        """Stop the server, and any restart: none happens after this."""
        with self._lock:
            self._stopped = True
            server = self._server
        server.stop()

    def _revive(self, dead: LlamaServer) -> LlamaServer:
        """Start `dead` again, within the bound; the lock is held, so once for all threads."""
        if self._dead is None:
            self._dead = self._verdict(dead)
        if self._dead is not None:
            raise _copy(self._dead)
        logger.warning(
            "llama-server (pid %s) %s; starting it again (restart %d within %g s)",
            dead.pid,
            _ending(dead),
            len(self._restarted_at) + 1,
            self._window,
        )
        dead.stop()
        self._restarted_at.append(time.monotonic())
        started = time.monotonic()
        try:
            server = self._start()
        except ServerStartError as error:
            self._dead = error.retold(
                ServerCrashed,
                f"llama-server of {dead.options.model_path} died ({_ending(dead)}) and could "
                f"not be started again: {error.summary}. It is not tried again; fix the cause "
                "and load the model again",
            )
            logger.error("%s", self._dead.summary)
            raise _copy(self._dead) from None
        self._server = server
        self.restarts += 1
        logger.info(
            "llama-server of %s started again in %.2f s (%s)",
            dead.options.model_path,
            time.monotonic() - started,
            server.where(),
        )
        return server

    def _verdict(self, dead: LlamaServer) -> ServerCrashed | None:
        """Why `dead` is not started again, or None where it may be."""
        if not self._restart:
            reason = "restart=False leaves it dead: load the model again"
        else:
            now = time.monotonic()
            while self._restarted_at and now - self._restarted_at[0] > self._window:
                self._restarted_at.popleft()
            if len(self._restarted_at) < self._limit:
                return None
            reason = (
                f"it keeps crashing ({self._limit} restarts within {self._window:g} s), so it "
                "is not started again: find the cause in its log, then load the model again"
            )
        return ServerCrashed(
            f"the server of {dead.options.model_path} has died ({_ending(dead)}); {reason}",
            log_tail=dead.log_tail(),
            returncode=dead.returncode(),
            log=dead.log(),
        )


def _ending(server: LlamaServer) -> str:
    returncode = server.returncode(wait=1.0)
    return "it ended" if returncode is None else describe_exit(returncode)


def _copy(error: ServerCrashed) -> ServerCrashed:
    """A fresh exception for each caller: one raised from many threads would share
    (and grow) a single traceback."""
    return error.retold(ServerCrashed)
