"""The devices a llama-server build computes on, as its own `--list-devices` names them.

ggml lists each device its backends see, one a line: ``Vulkan0: AMD Radeon RX 7900 XTX
(RADV NAVI31) (24560 MiB, 23800 MiB free)``. That is the truth for the build at hand in
the environment at hand (a Vulkan build with no Vulkan driver lists nothing; ggml hides
CPU-type Vulkan devices such as Mesa's lavapipe unless ``GGML_VK_VISIBLE_DEVICES`` names
them), so the `llama_cpp` backend plans offloading from it rather than from sysfs.

The binary's output is bounded (size, lines, time): it is a program we did not build.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Mapping

import attrs

from .devices import size_text
from .server import child_environment, describe_exit, spawn_child

__all__ = [
    "LISTING_TIMEOUT",
    "Listing",
    "ServerDevice",
    "list_devices",
    "parse_listing",
    "run_flag",
]

_MIB = 1 << 20
_MAX_OUTPUT = 64 * 1024  # --list-devices, --version and --help are a few KiB
_MAX_DEVICES = 64
LISTING_TIMEOUT = 20.0  # a listing takes some 50 ms; a slow driver can take seconds
_EXIT_WAIT = 2.0
_LINE = re.compile(
    r"\s*(?P<kind>[A-Za-z][A-Za-z_-]{0,30}?)(?P<number>[0-9]{1,3}): (?P<description>.{1,300}?)"
    r" \((?P<total>[0-9]{1,9}) MiB, (?P<free>[0-9]{1,9}) MiB free\)\s*"
)
# What a Vulkan device's name says of its driver: RADV and lavapipe put their own names
# in it; AMDVLK and AMD's proprietary driver give the bare marketing name.
_DRIVERS = (
    (re.compile(r"\bRADV\b"), "Mesa RADV"),
    (re.compile(r"^llvmpipe\b"), "Mesa lavapipe (runs on the CPU)"),
    (re.compile(r"\b(AMD|Radeon)\b"), "AMDVLK or AMD's own Vulkan driver"),
)
_BACKEND_DRIVERS = {"ROCm": "ROCm (HIP)", "CUDA": "CUDA", "Metal": "Metal", "RPC": "RPC"}


@attrs.frozen
class ServerDevice:
    """One device as llama-server lists it; ``name`` is what its ``--device`` flag takes.

    ``index`` is the position in the listing, as ``LoadConfig.devices`` counts; sizes
    are bytes, ``vram_free`` as the driver reported it when listed.
    """

    index: int
    name: str  # "Vulkan0"
    description: str  # "llvmpipe (LLVM 15.0.6, 256 bits)"
    vram_total: int
    vram_free: int

    @property
    def backend(self) -> str:
        """The ggml backend that drives it: "Vulkan", "ROCm", "CUDA", ..."""
        return self.name.rstrip("0123456789")

    @property
    def driver(self) -> str:
        """The driver, as far as the device's name tells; "unknown" where it does not."""
        if self.backend != "Vulkan":
            return _BACKEND_DRIVERS.get(self.backend, "unknown")
        return next((name for rule, name in _DRIVERS if rule.search(self.description)), "unknown")

    def describe(self) -> str:
        """'Vulkan0: llvmpipe (...), 2.0 GiB free of 2.0 GiB, driver Mesa lavapipe (...)'."""
        return (
            f"{self.name}: {self.description}, {size_text(self.vram_free)} free of "
            f"{size_text(self.vram_total)}, driver {self.driver}"
        )


def parse_listing(text: str) -> tuple[ServerDevice, ...]:
    """The devices in ``--list-devices`` output; lines of any other shape are skipped.

    Never raises: at most 64 devices, each line read only if it is of sane length.
    """
    devices: list[ServerDevice] = []
    for line in text[:_MAX_OUTPUT].splitlines():
        match = _LINE.fullmatch(line) if len(line) < 512 else None
        if match is None:
            continue
        name = match["kind"] + match["number"]
        if any(device.name == name for device in devices):
            continue
        total, free = int(match["total"]) * _MIB, int(match["free"]) * _MIB
        devices.append(
            ServerDevice(len(devices), name, match["description"], total, min(free, total))
        )
        if len(devices) == _MAX_DEVICES:
            break
    return tuple(devices)


@attrs.frozen
class Listing:
    """What a build lists in an environment; ``problem`` says why the listing may be
    short (the run failed, timed out or said too much), None when it ran cleanly."""

    devices: tuple[ServerDevice, ...]
    problem: str | None = None


@attrs.frozen
class _Output:
    text: str
    problem: str | None


def run_flag(binary: str, flag: str, environ: Mapping[str, str] | None = None) -> str:
    """What ``binary flag`` prints (stdout and stderr), cut at 64 KiB and 20 seconds;
    "" for a binary that cannot be run (the start itself says what is wrong)."""
    return _run(binary, flag, child_environment(binary, {}, environ), LISTING_TIMEOUT).text


def list_devices(
    binary: str, environ: Mapping[str, str] | None = None, timeout: float = LISTING_TIMEOUT
) -> Listing:
    """The devices ``binary`` computes on in the environment a server of it would get,
    with the free memory of now (a listing takes some 50 ms); ``timeout`` (at most 20 s)
    lets a load keep its own bound."""
    env = child_environment(binary, {}, environ)
    output = _run(binary, "--list-devices", env, min(timeout, LISTING_TIMEOUT))
    return Listing(parse_listing(output.text), output.problem)


def _run(binary: str, flag: str, env: Mapping[str, str], timeout: float) -> _Output:
    """Run ``binary flag`` in a session of its own, so that a timeout or a read cut short
    ends whatever it started too; every wait is bounded."""
    try:
        child = spawn_child([binary, flag], env, output=subprocess.PIPE)
    except OSError as error:
        return _Output("", f"cannot be run ({error.strerror or error})")
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _end(child)

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        assert child.stdout is not None
        with child.stdout:
            data = child.stdout.read(_MAX_OUTPUT + 1)
        if len(data) <= _MAX_OUTPUT:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(_EXIT_WAIT)  # it closed its output: let it exit by itself
    finally:
        timer.cancel()
        _end(child)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(_EXIT_WAIT)  # one stuck in the kernel is left, not waited for
    text = data[:_MAX_OUTPUT].decode("utf-8", errors="replace")
    if timed_out.is_set():
        return _Output(text, f"did not finish within {timeout:g} s")
    if len(data) > _MAX_OUTPUT:
        return _Output(text, f"printed more than {_MAX_OUTPUT // 1024} KiB")
    if child.returncode:
        return _Output(text, describe_exit(child.returncode))
    return _Output(text, None)


def _end(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole session (it leads it), whatever is left of it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
