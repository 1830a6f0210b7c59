"""The CLI's load spinner: elapsed time and the backend's latest log line, on a terminal only.

Backends log what their server is doing (llama-server's own lines arrive at
DEBUG). The CLI, when it configures logging at startup, attaches `LATEST`, a
handler that keeps the latest line; while a model loads, a thread redraws one
status line on stderr from it. The spinner itself never touches logging's
configuration. Nothing is drawn when stderr is not a terminal, so pipes and
logs stay clean.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from types import TracebackType
from typing import TextIO, final

__all__ = ["LATEST", "LatestLine", "Spinner"]

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_ASCII_FRAMES = "|/-\\"
# "[port] 0.00.028.099 I " before llama-server's words: the port, its clock, the level.
_NOISE = re.compile(r"^\[\d+\]\s*(?:\d+(?:\.\d+)+\s+[DIWE]\s+)?")
_SPACES = re.compile(r"\s+")
_CLEAR_LINE = "\r\x1b[K"


@final
class LatestLine(logging.Handler):
    """Remembers the last log message, without formatting or keeping history."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.latest = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = _SPACES.sub(" ", _NOISE.sub("", record.getMessage())).strip()
        except Exception:  # a bad log call must not break the spinner
            return
        if text:
            self.latest = text


LATEST = LatestLine()


@final
class Spinner:
    """`with Spinner(stream, "loading model.gguf"):` draws until the block ends.

    Disabled (a no-op) unless `enabled`; the CLI enables it only when stderr
    is a terminal and --debug is off (debug logs would interleave with it).
    """

    def __init__(self, stream: TextIO, label: str, *, enabled: bool, interval: float = 0.1) -> None:
        self._stream = stream
        self._label = label
        self._enabled = enabled
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        encoding = (getattr(stream, "encoding", None) or "ascii").lower()
        self._frames = _FRAMES if encoding.startswith("utf") else _ASCII_FRAMES

    def __enter__(self) -> Spinner:
        if not self._enabled:
            return self
        LATEST.latest = ""
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="inference-spinner", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._write(_CLEAR_LINE)

    def _run(self) -> None:
        frame = 0
        while frame == 0 or not self._stop.wait(self._interval):
            elapsed = time.monotonic() - self._started
            status = f"{self._frames[frame % len(self._frames)]} {self._label} {elapsed:4.1f}s"
            latest = LATEST.latest
            width = self._columns() - 1
            line = f"{status}  {latest}" if latest else status
            self._write(_CLEAR_LINE + line[:width])
            frame += 1

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self._stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return 80

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken terminal: stop drawing quietly
            self._stop.set()
