"""Build llama-server from pinned llama.cpp sources, prove it runs here, cache it.

Sources: the llama.cpp tree vendored in the `llama-cpp-python` sdist (MIT),
fetched with pip and checked by hash, or a local checkout. CPU builds use
ggml's dynamically loaded CPU variants, so one build runs on any x86-64 CPU
and loads the best kernels for the one it runs on; never `-march=native`.
A build is installed into the cache only after it has started on a small
model and generated; a CPU variant that dies there (a VM may advertise
instructions it does not allow) is removed and the proof run again.
Installation is a rename of a finished directory, so a half-finished build
is never found.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs

from inference_core.errors import InferenceError, ServerCrashed, ServerStartError
from inference_core.protocols import TextModel
from inference_core.types import LoadConfig

from .binaries import MANIFEST, WORKER_NAMES, CachedBuild, cache_root, cached_builds

__all__ = [
    "BACKENDS",
    "SDIST_SHA256",
    "SDIST_VERSION",
    "BuildError",
    "BuildPlan",
    "Loader",
    "build",
    "fetch_sources",
    "missing_toolchain",
    "plan",
    "prove",
    "remove_build",
    "stale_builds",
]

logger = logging.getLogger(__name__)

BACKENDS = ("cpu", "rocm", "vulkan")
SDIST_VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_SDIST = f"llama_cpp_python-{SDIST_VERSION}"
_STAGING = ".building-"  # a build's scratch folder in the cache, until it is renamed
_LOCK = ".lock"  # in the scratch folder, locked while its build runs
_UNLOCKED_GRACE = 60.0  # seconds a scratch folder may exist before its lock is taken
_VARIANT = re.compile(r"loaded CPU backend from (\S*libggml-cpu-([\w.]+)\.so)")
_NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_PROGRESS = re.compile(r"^\[\s*(\d+)%\]")
_GFX = re.compile(r"^gfx[0-9a-f]{3,4}$")
_WORKER_TARGET = re.compile(r"(?:set\(TARGET|add_executable\()\s*((?:ggml-)?rpc-server)\b")

Progress = Callable[[float, str], None]


class BuildError(InferenceError):
    """A build could not be made; the message says what is missing or what failed."""


# -- what to run ----------------------------------------------------------------


@attrs.frozen
class BuildPlan:
    """The cmake command lines for one build, decided before anything runs."""

    backend: str
    source: Path
    build_dir: Path
    flags: tuple[str, ...]
    compile: tuple[str, ...]
    generator: str | None = None
    gfx: tuple[str, ...] = ()

    @property
    def configure(self) -> tuple[str, ...]:
        generator = ("-G", self.generator) if self.generator else ()
        return ("cmake", "-S", str(self.source), "-B", str(self.build_dir), *generator, *self.flags)


_COMMON = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",  # the binary finds its libraries wherever it moves
    "-DGGML_NATIVE=OFF",  # never -march=native: it dies with SIGILL on other CPUs and in VMs
    "-DLLAMA_BUILD_SERVER=ON",
    "-DGGML_RPC=ON",  # llama-server's --rpc, and the worker (`inference rpc-worker`)
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # it would download the web UI, which we switch off anyway
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)


def _worker_target(source: Path) -> str:
    """The RPC worker's cmake target in `source`: ggml-rpc-server, or rpc-server in a
    checkout from before it was renamed. It lands in bin/ beside llama-server."""
    for folder in ("tools/rpc", "examples/rpc"):
        with contextlib.suppress(OSError):
            if match := _WORKER_TARGET.search((source / folder / "CMakeLists.txt").read_text()):
                return match[1]
    return WORKER_NAMES[0]


def plan(
    backend: str,
    source: Path,
    build_dir: Path,
    *,
    gfx: Sequence[str] = (),
    jobs: int | None = None,
    generator: str | None = None,
) -> BuildPlan:
    """The configure and compile commands for `backend` ("cpu", "rocm" or "vulkan")."""
    if backend not in BACKENDS:
        raise BuildError(f"unknown build backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    flags = list(_COMMON)
    targets = ["llama-server", _worker_target(source)]
    if backend == "cpu":
        flags += ["-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"]
    elif backend == "rocm":
        if not gfx:
            raise BuildError(
                "no gfx target for a ROCm build: no AMD GPU was found here; name the targets "
                "with --gfx (e.g. --gfx gfx1100,gfx90a)"
            )
        bad = [target for target in gfx if not _GFX.match(target)]
        if bad:
            raise BuildError(f"not gfx targets: {', '.join(bad)} (expected names like gfx1100)")
        rocm = _rocm_paths(os.environ)[0]
        flags += [
            "-DGGML_HIP=ON",
            f"-DGPU_TARGETS={';'.join(gfx)}",
            f"-DCMAKE_HIP_COMPILER={rocm / 'llvm' / 'bin' / 'clang++'}",  # ROCm's own clang
        ]
    else:
        flags += ["-DGGML_VULKAN=ON"]
    compile_ = ("cmake", "--build", str(build_dir), "--target", *targets)
    compile_ += ("-j", str(jobs or os.cpu_count() or 2))
    generator = generator or ("Ninja" if shutil.which("ninja") else None)
    return BuildPlan(backend, source, build_dir, tuple(flags), compile_, generator, tuple(gfx))


# -- toolchains -------------------------------------------------------------------


def _rocm_paths(environ: Mapping[str, str]) -> list[Path]:
    return [Path(p) for p in (environ.get("ROCM_PATH"), "/opt/rocm", "/usr") if p]


def _has_library(roots: Sequence[Path], name: str) -> bool:
    folders = ("lib", "lib64", "lib/x86_64-linux-gnu")
    return any(any((root / folder).glob(f"{name}.so*")) for root in roots for folder in folders)


def missing_toolchain(
    backend: str,
    environ: Mapping[str, str] | None = None,
    which: Callable[..., str | None] = shutil.which,
    system: Path = Path("/usr"),
) -> list[str]:
    """What the build needs and this machine lacks, one item each with where to get it.

    `system` is where the distribution's headers live (a seam for tests)."""
    env = os.environ if environ is None else environ
    path = env.get("PATH")
    missing = []
    if which("cmake", path=path) is None:
        missing.append("cmake (pip install cmake, or apt install cmake)")
    if which("c++", path=path) is None and which("g++", path=path) is None:
        missing.append("a C++ compiler (apt install g++)")
    if backend == "rocm":
        roots = _rocm_paths(env)
        rocm_bins = os.pathsep.join(str(root / "bin") for root in roots)
        if which("hipcc", path=rocm_bins + os.pathsep + (path or "")) is None:
            missing.append("hipcc, the HIP compiler (install ROCm: the rocm-hip-sdk package)")
        if not _has_library(roots, "librocblas"):
            missing.append("rocBLAS (the rocblas-dev package of ROCm)")
        if not _has_library(roots, "libhipblas"):
            missing.append("hipBLAS (the hipblas-dev package of ROCm)")
    elif backend == "vulkan":
        if which("glslc", path=path) is None:
            missing.append("glslc, the shader compiler (apt install glslc)")
        includes = [Path(root) / "include" for root in (env.get("VULKAN_SDK"), system) if root]
        if not any((root / "vulkan" / "vulkan.h").exists() for root in includes):
            missing.append("the Vulkan headers and loader (apt install libvulkan-dev)")
        if not any((root / "spirv" / "unified1" / "spirv.hpp").exists() for root in includes):
            missing.append("SPIRV-Headers (apt install spirv-headers)")
    return missing


# -- sources ------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sources(cache: Path, *, log: Callable[[str], None] = logger.info) -> Path:
    """The pinned llama.cpp tree, fetched with pip into the cache once and checked by hash."""
    tree = cache / "sources" / f"llama.cpp-{SDIST_VERSION}"
    if (tree / "CMakeLists.txt").exists():
        return tree
    downloads = cache / "sources" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / f"{_SDIST}.tar.gz"
    if not archive.exists() or _sha256(archive) != SDIST_SHA256:
        log(f"fetching llama-cpp-python {SDIST_VERSION} sources with pip (about 75 MB)")
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--disable-pip-version-check", "-d", str(downloads),
            f"llama-cpp-python=={SDIST_VERSION}",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not archive.exists():
            raise BuildError(f"pip could not fetch the sources:\n{result.stderr[-2000:]}")
    digest = _sha256(archive)
    if digest != SDIST_SHA256:
        archive.unlink()
        raise BuildError(f"{archive.name} has sha256 {digest}, expected {SDIST_SHA256}; not used")
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=tree.parent))
    prefix = f"{_SDIST}/vendor/llama.cpp/"
    with tarfile.open(archive) as sdist:
        members = [m for m in sdist.getmembers() if m.name.startswith(prefix)]
        for member in members:
            member.name = member.name[len(prefix) :]
        wanted = [m for m in members if m.name]
        if hasattr(tarfile, "data_filter"):  # the archive is hash-checked; this is belt and braces
            sdist.extractall(staging, members=wanted, filter="data")
        else:
            sdist.extractall(staging, members=wanted)
    os.replace(staging, tree)
    return tree


# -- building --------------------------------------------------------------------------


def _run(command: Sequence[str], log_file: Path, progress: Progress | None) -> None:
    """Run a step, its output appended to the log; progress from ninja's or make's counters."""
    with log_file.open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if progress is not None:
                if match := _NINJA_PROGRESS.match(line):
                    progress(int(match[1]) / int(match[2]), line.strip())
                elif match := _MAKE_PROGRESS.match(line):
                    progress(int(match[1]) / 100, line.strip())
        status = process.wait()
    if status != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
        raise BuildError(
            f"{command[0]} {command[1]} failed (status {status}); log: {log_file}\n{tail}"
        )


class Loader(Protocol):
    """Starts one llama-server binary on a model: `backends.load_with_server`, passed in
    by the caller so that building needs nothing of the backends."""

    def __call__(
        self,
        binary: str,
        path: str,
        config: LoadConfig,
        *,
        gpu_layers: int | None,
        extra_args: Sequence[str] = (),
    ) -> TextModel: ...


def prove(
    binary: Path, model: str, *, load: Loader, log: Callable[[str], None] = logger.info
) -> tuple[float, list[str]]:
    """Run a short generation; remove CPU variants that crash here. Decode tokens/s, removed.

    The first try runs at the server's normal log level, so the rate it reports
    is the everyday one; after a crash by a signal the next try raises the log
    level to learn which CPU variant was loaded.
    """
    removed: list[str] = []
    verbose = False
    while True:
        try:
            with load(
                str(binary),
                model,
                LoadConfig(context_len=512, load_timeout=60),
                gpu_layers=-1,
                extra_args=("-lv", "4") if verbose else (),  # 4 logs the CPU variant loaded
            ) as loaded:
                stream = loaded.generate("The capital of France is", max_tokens=64)
                if not list(stream):
                    raise BuildError("the built server generated nothing")
                metrics = stream.metrics
                return (metrics.decode_tokens_per_second if metrics else 0.0), removed
        except (ServerStartError, ServerCrashed) as error:
            variant = _crashed_variant(error)
            if variant is None and not verbose and _by_signal(error):
                verbose = True
                continue
            if variant is None:
                raise BuildError(f"the built llama-server does not run here: {error}") from None
            path, name = variant
            log(f"the CPU variant {name} crashes here ({_signal_name(error)}); removing it")
            Path(path).unlink()
            removed.append(name)


def _by_signal(error: ServerStartError | ServerCrashed) -> bool:
    return error.returncode is not None and error.returncode < 0


def _signal_name(error: ServerStartError | ServerCrashed) -> str:
    code = error.returncode
    if code is not None and code < 0:
        return signal.Signals(-code).name
    return f"status {code}"


def _crashed_variant(error: ServerStartError | ServerCrashed) -> tuple[str, str] | None:
    """The CPU variant a server that died by a signal had loaded, if it was a variant
    (from the start of its log, which the error carries)."""
    if not _by_signal(error):
        return None
    found = _VARIANT.findall(error.log)
    if not found:
        return None
    path, name = found[-1]
    return (path, name) if os.path.exists(path) else None


def build(
    backend: str,
    *,
    proof_model: str,
    load: Loader,
    source: Path | None = None,
    gfx: Sequence[str] = (),
    jobs: int | None = None,
    cache: Path | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] = logger.info,
) -> CachedBuild:
    """Fetch (or take) sources, configure, compile, prove, and install into the cache."""
    root = cache or cache_root()
    for stale in stale_builds(root):
        log(f"removing {stale.name}, the scratch folder of a build that was stopped")
        shutil.rmtree(stale, ignore_errors=True)
    missing = missing_toolchain(backend)
    if missing:
        raise BuildError(f"cannot build for {backend}: missing " + "; ".join(missing))
    tree = source or fetch_sources(root, log=log)
    if not (tree / "CMakeLists.txt").exists():
        raise BuildError(f"{tree} is not a llama.cpp source tree (no CMakeLists.txt)")
    builds = root / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=builds))
    lock = os.open(staging / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # held until the end: the folder is in use
    try:
        the_plan = plan(backend, tree, staging / "cmake", gfx=gfx, jobs=jobs)
        log_file = staging / "build.log"
        log(f"configuring ({log_file})")
        _run(the_plan.configure, log_file, None)
        log("compiling llama-server and its RPC worker")
        _run(the_plan.compile, log_file, progress)
        bin_dir = staging / "bin"
        shutil.copytree(the_plan.build_dir / "bin", bin_dir, symlinks=True)
        shutil.rmtree(the_plan.build_dir)
        log("proving the build on a short generation")
        tokens_per_second, removed = prove(
            bin_dir / "llama-server", proof_model, load=load, log=log
        )
        source_label = f"llama-cpp-python-{SDIST_VERSION}" if source is None else str(tree)
        manifest = {
            "backend": backend,
            "source": source_label,
            "gfx": list(gfx),
            "cmake": list(the_plan.configure[the_plan.configure.index(str(tree)) + 3 :]),
            "removed_variants": removed,
            "decode_tokens_per_second": round(tokens_per_second, 1),
            "proof_model": os.path.basename(proof_model),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        label = "" if source is None else "-local"
        name = f"{SDIST_VERSION}{label}-{backend}{'-' + '-'.join(gfx) if gfx else ''}"
        final = builds / f"{name}-{time.strftime('%Y%m%d%H%M%S')}"
        os.replace(staging, final)  # atomic: the lookup never sees a half-finished build
        (final / _LOCK).unlink()
        return CachedBuild(final, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(lock)


def _in_progress(staging: Path) -> bool:
    """True while a build (in any process) holds this scratch folder's lock."""
    try:
        handle = os.open(staging / _LOCK, os.O_RDWR)
    except FileNotFoundError:  # just made, its lock not taken yet; or from an old version
        return time.time() - staging.stat().st_mtime < _UNLOCKED_GRACE
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)  # and with it the lock we may have taken
    return False


def stale_builds(cache: Path | None = None) -> list[Path]:
    """Scratch folders of builds that were stopped (killed, or the machine went down)."""
    builds = (cache or cache_root()) / "builds"
    folders = sorted(builds.glob(_STAGING + "*")) if builds.is_dir() else []
    return [folder for folder in folders if folder.is_dir() and not _in_progress(folder)]


def remove_build(name: str, cache: Path | None = None) -> Path:
    for cached in cached_builds(cache):
        if cached.name == name:
            shutil.rmtree(cached.path)
            return cached.path
    raise BuildError(f"no cached build named {name!r}; `inference server list` shows them")
