"""llama-servers started the way a user starts one by hand, for the remote backend to
attach to: a plain child process with its key in LLAMA_API_KEY, which we never stop
through the model."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from .procs import free_port

KEY = secrets.token_urlsafe(24)  # the key the external servers are started with


def health(url: str) -> int:
    """The status of GET /health, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


class ExternalServer:
    """One llama-server on a loopback port, keyed; `restart()` keeps the port."""

    def __init__(
        self,
        binary: str,
        model: str,
        key: str,
        *args: str,
        log: Path,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.binary, self.model, self.key, self.args = binary, model, key, args
        self.environ = dict(environ or {})  # more variables for the child
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        env = {
            "PATH": os.defpath,
            "LD_LIBRARY_PATH": os.path.dirname(self.binary),
            "LLAMA_API_KEY": self.key,
            **self.environ,
        }
        argv = [self.binary, "-m", self.model, "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*argv, "--threads", "1", "--no-webui", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while health(self.url) != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama-server did not start: {self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
