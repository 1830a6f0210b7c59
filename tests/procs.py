"""What this process has left behind: child processes, open descriptors, memory."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping
from pathlib import Path

import inference_core
import inference_rocm

# Enough frames to reach the library's from where the standard library allocates for it.
_TRACED_FRAMES = 25


def children(pid: int | None = None) -> set[int]:
    """Live (not zombie) direct children of `pid` (default: this process)."""
    parent = os.getpid() if pid is None else pid
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def child_argv(pid: int | None) -> list[str]:
    """A process's command line, as it was started."""
    assert pid is not None, "no process to read"
    return [arg.decode() for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]


def open_fds() -> dict[int, str]:
    """This process's open descriptors and what each names (a path, socket:[inode], ...)."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (listdir's own, for one)
            found[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
    return found


# What the library opens: connections, a child's output pipe, files. Not the event
# loops' epoll and eventfd descriptors (anon_inode:) that other tests' threads may hold.
_LIBRARY_KINDS = ("socket:[", "pipe:[", "/")


def new_fds(before: Mapping[int, str]) -> dict[int, str]:
    """Descriptors of the kinds the library opens that were not open at `before` (a number
    reused for something else counts as new)."""
    return {
        fd: target
        for fd, target in open_fds().items()
        if before.get(fd) != target and target.startswith(_LIBRARY_KINDS)
    }


def library_growth(action: Callable[[], object]) -> int:
    """Bytes that `action` left allocated by inference_core and inference_rocm code (any
    frame of the allocation in them), whatever other threads do meanwhile."""
    library = [
        tracemalloc.Filter(
            True, os.path.join(os.path.dirname(module.__file__ or ""), "*"), all_frames=True
        )
        for module in (inference_core, inference_rocm)
    ]
    tracemalloc.start(_TRACED_FRAMES)
    try:
        before = tracemalloc.take_snapshot().filter_traces(library)
        action()
        after = tracemalloc.take_snapshot().filter_traces(library)
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def connection_inodes(port: int) -> frozenset[str]:
    """This process's established TCP connections to `port` (IPv4), by socket inode: the
    ones a test opened are those not open before it (another model may hold some)."""
    inodes = {t[len("socket:[") : -1] for t in open_fds().values() if t.startswith("socket:[")}
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port, state, inode = int(fields[2].split(":")[1], 16), fields[3], fields[9]
        if remote_port == port and state == "01" and inode in inodes:  # 01: ESTABLISHED
            established.add(inode)
    return frozenset(established)


def wait_gone(pid: int, seconds: float) -> bool:
    """True once `pid` no longer exists (or is a zombie), within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Whether `condition` comes true within `seconds`: for what happens on other threads
    or processes (a log line, a closed descriptor), on a machine of any load."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def make_executable(path: Path, source: str) -> Path:
    """A fake llama-server: a Python script run by this interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def resident_bytes(pid: int | None) -> int:
    """A process's resident memory (VmRSS), as /proc tells it."""
    assert pid is not None, "no process to read"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no VmRSS")
