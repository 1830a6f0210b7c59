"""`inference server build`: its command lines, toolchain checks, cache and proof."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from inference_rocm import build
from inference_rocm.backends import load_with_server
from inference_rocm.binaries import SourceKind, cached_builds, find_binary, worker_beside

from .procs import make_executable

FAKE_SERVER = Path(__file__).parent / "fakes" / "fake_llama_server.py"


def flags_of(backend: str, **options: object) -> tuple[str, ...]:
    return build.plan(backend, Path("/src"), Path("/out"), **options).flags  # type: ignore[arg-type]


def test_cpu_build_uses_loadable_variants_and_never_native() -> None:
    flags = flags_of("cpu")
    assert "-DGGML_BACKEND_DL=ON" in flags and "-DGGML_CPU_ALL_VARIANTS=ON" in flags
    assert "-DGGML_NATIVE=OFF" in flags
    assert not any("march=native" in flag for flag in flags)
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in flags  # nothing is downloaded during the build


def test_rocm_build_turns_on_hip_for_the_given_targets() -> None:
    the_plan = build.plan("rocm", Path("/src"), Path("/out"), gfx=["gfx1100", "gfx90a"], jobs=2)
    assert "-DGGML_HIP=ON" in the_plan.flags
    assert "-DGPU_TARGETS=gfx1100;gfx90a" in the_plan.flags
    assert "-DGGML_CPU_ALL_VARIANTS=ON" not in the_plan.flags
    assert the_plan.compile[-5:] == ("--target", "llama-server", "ggml-rpc-server", "-j", "2")
    assert the_plan.configure[:5] == ("cmake", "-S", "/src", "-B", "/out")


@pytest.mark.parametrize("backend", build.BACKENDS)
def test_every_build_has_rpc_and_builds_the_worker_beside_llama_server(backend: str) -> None:
    the_plan = build.plan(backend, Path("/src"), Path("/out"), gfx=["gfx1100"])
    assert "-DGGML_RPC=ON" in the_plan.flags
    targets = the_plan.compile[the_plan.compile.index("--target") + 1 : -2]
    assert targets == ("llama-server", "ggml-rpc-server")


@pytest.mark.parametrize(
    ("cmake_file", "line", "target"),
    [
        ("tools/rpc", "set(TARGET ggml-rpc-server)", "ggml-rpc-server"),
        ("tools/rpc", "set(TARGET rpc-server)", "rpc-server"),
        ("examples/rpc", "add_executable(rpc-server rpc-server.cpp)", "rpc-server"),
    ],
    ids=["current", "before-the-rename", "in-examples"],
)
def test_the_worker_target_is_the_one_the_sources_name(
    tmp_path: Path, cmake_file: str, line: str, target: str
) -> None:
    (tmp_path / cmake_file).mkdir(parents=True)
    (tmp_path / cmake_file / "CMakeLists.txt").write_text(f"{line}\n")
    the_plan = build.plan("cpu", tmp_path, tmp_path / "out")
    assert the_plan.compile[the_plan.compile.index("--target") + 2] == target


FAKE_CMAKE = """
import os, shutil, sys
if "--build" in sys.argv:  # each target into bin/, where llama.cpp's tree puts them
    bin_dir = os.path.join(sys.argv[sys.argv.index("--build") + 1], "bin")
    os.makedirs(bin_dir, exist_ok=True)
    for target in sys.argv[sys.argv.index("--target") + 1 : sys.argv.index("-j")]:
        made = os.environ["FAKE_" + target.replace("-", "_").upper()]
        shutil.copy(made, os.path.join(bin_dir, target))
"""


def test_a_cached_build_keeps_the_worker_beside_its_llama_server(
    tmp_path: Path, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "tools"
    make_executable(tools / "cmake", FAKE_CMAKE)
    make_executable(tools / "c++", "")
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    fake_server = make_executable(tmp_path / "fake-server", FAKE_SERVER.read_text())
    monkeypatch.setenv("FAKE_LLAMA_SERVER", str(fake_server))
    monkeypatch.setenv("FAKE_GGML_RPC_SERVER", str(make_executable(tmp_path / "fake-worker", "")))
    source = tmp_path / "llama.cpp"
    (source / "tools" / "rpc").mkdir(parents=True)
    (source / "CMakeLists.txt").write_text("project(llama.cpp)\n")
    (source / "tools" / "rpc" / "CMakeLists.txt").write_text("set(TARGET ggml-rpc-server)\n")
    made = build.build(
        "cpu", proof_model=smollm2_path, load=load_with_server, source=source, cache=tmp_path / "c"
    )
    assert worker_beside(str(made.binary)) == str(made.path / "bin" / "ggml-rpc-server")
    assert "-DGGML_RPC=ON" in made.manifest["cmake"]  # type: ignore[operator]


def test_rocm_build_without_targets_says_to_name_them() -> None:
    with pytest.raises(build.BuildError, match="--gfx"):
        flags_of("rocm")


def test_rocm_build_rejects_what_is_not_a_gfx_target() -> None:
    with pytest.raises(build.BuildError, match="navi31"):
        flags_of("rocm", gfx=["navi31"])


def test_vulkan_build_turns_on_vulkan() -> None:
    flags = flags_of("vulkan")
    assert "-DGGML_VULKAN=ON" in flags and "-DGGML_HIP=ON" not in flags


def test_unknown_backend_is_a_build_error() -> None:
    with pytest.raises(build.BuildError, match="cpu, rocm, vulkan"):
        flags_of("cuda")


def test_missing_rocm_toolchain_is_named_item_by_item(tmp_path: Path) -> None:
    environ = {"PATH": str(tmp_path), "ROCM_PATH": str(tmp_path / "rocm")}
    missing = " | ".join(build.missing_toolchain("rocm", environ))
    for needed in ("cmake", "C++ compiler", "hipcc", "rocBLAS", "hipBLAS"):
        assert needed in missing


def test_a_complete_rocm_toolchain_passes_the_check(tmp_path: Path) -> None:
    rocm = tmp_path / "rocm"
    for tool in ("bin/hipcc", "tools/cmake", "tools/c++"):
        make_executable(rocm / tool if tool.startswith("bin") else tmp_path / tool, "")
    for library in ("librocblas.so.4", "libhipblas.so.2"):
        (rocm / "lib").mkdir(exist_ok=True)
        (rocm / "lib" / library).write_bytes(b"")
    environ = {"PATH": str(tmp_path / "tools"), "ROCM_PATH": str(rocm)}
    assert build.missing_toolchain("rocm", environ) == []


def test_missing_vulkan_toolchain_is_named(tmp_path: Path) -> None:
    environ = {"PATH": str(tmp_path), "VULKAN_SDK": str(tmp_path / "sdk")}
    missing = build.missing_toolchain("vulkan", environ, system=tmp_path / "usr")
    assert [item.split(",")[0].split(" (")[0] for item in missing] == [
        "cmake",
        "a C++ compiler",
        "glslc",
        "the Vulkan headers and loader",
        "SPIRV-Headers",
    ]


def test_vulkan_headers_in_the_sdk_or_the_system_count(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    for tool in ("cmake", "c++", "glslc"):
        make_executable(tools / tool, "")
    system = tmp_path / "usr"
    (system / "include" / "vulkan").mkdir(parents=True)
    (system / "include" / "vulkan" / "vulkan.h").write_text("")
    sdk = tmp_path / "sdk"
    (sdk / "include" / "spirv" / "unified1").mkdir(parents=True)
    (sdk / "include" / "spirv" / "unified1" / "spirv.hpp").write_text("")
    environ = {"PATH": str(tools), "VULKAN_SDK": str(sdk)}
    assert build.missing_toolchain("vulkan", environ, system=system) == []


def test_build_stops_before_fetching_when_the_toolchain_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("ROCM_PATH", str(tmp_path / "rocm"))
    with pytest.raises(build.BuildError, match=r"cannot build for rocm: missing .*hipcc"):
        build.build(
            "rocm",
            proof_model="m.gguf",
            load=load_with_server,
            gfx=["gfx1100"],
            cache=tmp_path / "cache",
        )
    assert not (tmp_path / "cache" / "sources").exists()


def fake_build(cache: Path, name: str, built: str, backend: str = "cpu") -> Path:
    folder = cache / "builds" / name
    make_executable(folder / "bin" / "llama-server", "")
    (folder / "manifest.json").write_text(
        json.dumps({"backend": backend, "built": built, "decode_tokens_per_second": 95.0})
    )
    return folder


def test_cache_lists_finished_builds_newest_first_and_never_a_half_finished_one(
    tmp_path: Path,
) -> None:
    old = fake_build(tmp_path, "0.3.36-cpu-1", "2026-01-01T00:00:00Z")
    new = fake_build(tmp_path, "0.3.36-cpu-2", "2026-02-01T00:00:00Z")
    fake_build(tmp_path, ".building-x", "2027-01-01T00:00:00Z")  # staging: not finished
    make_executable(tmp_path / "builds" / "no-manifest" / "bin" / "llama-server", "")
    assert [b.path for b in cached_builds(tmp_path)] == [new, old]
    build.remove_build("0.3.36-cpu-2", tmp_path)
    assert [b.path for b in cached_builds(tmp_path)] == [old]
    with pytest.raises(build.BuildError, match="no cached build"):
        build.remove_build("nope", tmp_path)


def test_lookup_takes_a_cached_build_after_path_and_before_the_wheel(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fake_build(cache / "inference-core", "0.3.36-cpu-1", "2026-01-01T00:00:00Z")
    environ = {"PATH": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(cache)}
    lookup = find_binary(environ)
    assert lookup.path == str(folder / "bin" / "llama-server")
    assert (lookup.kind, lookup.runs_on) == (SourceKind.CACHE, frozenset({"cpu"}))
    assert "95.0 tokens/s" in lookup.source
    on_path = make_executable(tmp_path / "bin" / "llama-server", "")
    first = find_binary({**environ, "PATH": str(on_path.parent)})
    assert (first.path, first.kind, first.runs_on) == (str(on_path), SourceKind.PATH, None)


def test_proof_removes_a_cpu_variant_that_crashes_here(tmp_path: Path, smollm2_path: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "libggml-cpu-zen4.so").write_bytes(b"")
    (bin_dir / "libggml-cpu-sapphirerapids.so").write_bytes(b"")
    crash_if_amx = (
        "import os, signal, sys\n"
        "here = os.path.dirname(os.path.abspath(sys.argv[0]))\n"
        "amx = os.path.join(here, 'libggml-cpu-sapphirerapids.so')\n"
        "if os.path.exists(amx):\n"
        "    if '-lv' in sys.argv:  # llama-server names the variant only at a higher level\n"
        "        print('load_backend: loaded CPU backend from ' + amx, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGILL)\n"
    )
    binary = make_executable(bin_dir / "llama-server", crash_if_amx + FAKE_SERVER.read_text())
    rate, removed = build.prove(binary, smollm2_path, load=load_with_server)
    assert removed == ["sapphirerapids"]
    assert sorted(os.listdir(bin_dir)) == ["libggml-cpu-zen4.so", "llama-server"]
    assert rate == 1000.0  # the fake server's own figure, as the proof's generation reports it


def test_a_proof_that_fails_for_another_reason_is_a_build_error(
    tmp_path: Path, smollm2_path: str
) -> None:
    binary = make_executable(tmp_path / "llama-server", "raise SystemExit(3)")
    with pytest.raises(build.BuildError, match=r"does not run here.*status 3"):
        build.prove(binary, smollm2_path, load=load_with_server)


def run_cli(*args: str, cache: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    if path is not None:
        environ["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "inference_core", "server", *args],
        env=environ, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_server_list_and_remove_on_the_command_line(tmp_path: Path) -> None:
    fake_build(tmp_path / "inference-core", "0.3.36-cpu-1", "2026-01-01T00:00:00Z")
    listed = run_cli("list", "--json", cache=tmp_path)
    assert [entry["name"] for entry in json.loads(listed.stdout)] == ["0.3.36-cpu-1"]
    assert "95.0 tokens/s" in run_cli("list", cache=tmp_path).stdout
    assert run_cli("remove", cache=tmp_path).returncode == 2
    removed = run_cli("remove", "0.3.36-cpu-1", cache=tmp_path)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert "no builds" in run_cli("list", cache=tmp_path).stdout
    missing = run_cli("remove", "nope", cache=tmp_path)
    assert missing.returncode == 1 and "no cached build named 'nope'" in missing.stderr


def test_server_build_without_a_toolchain_fails_in_one_line(tmp_path: Path) -> None:
    result = run_cli("build", "--backend", "vulkan", cache=tmp_path, path=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("inference: error: cannot build for vulkan: missing cmake")
    assert "glslc" in result.stderr and "Traceback" not in result.stderr


def scratch_folder(cache: Path, name: str, *, age: float) -> Path:
    folder = cache / "builds" / name
    (folder / "cmake").mkdir(parents=True)
    (folder / "cmake" / "object.o").write_bytes(b"\0" * (3 << 20))
    then = time.time() - age
    os.utime(folder, (then, then))
    return folder


def test_the_next_build_removes_the_scratch_of_a_stopped_one_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "inference-core"  # what XDG_CACHE_HOME=tmp_path names
    stopped = scratch_folder(cache, ".building-stopped", age=3600)
    (stopped / ".lock").write_text("")  # its build was killed: nobody holds the lock
    unlocked = scratch_folder(cache, ".building-old-version", age=3600)  # no lock at all
    running = scratch_folder(cache, ".building-running", age=3600)
    just_made = scratch_folder(cache, ".building-just-made", age=0)  # lock not taken yet
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(running / ".lock")], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert build.stale_builds(cache) == [unlocked, stopped]
        listed = run_cli("list", cache=tmp_path)
        assert ".building-stopped  stopped before it finished, 3 MiB" in listed.stdout
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        with pytest.raises(build.BuildError, match="missing cmake"):
            build.build("cpu", proof_model="m.gguf", load=load_with_server, cache=cache)
        assert not stopped.exists() and not unlocked.exists()
        assert running.exists() and just_made.exists()
    finally:
        holder.kill()
        holder.wait()


HOLD_LOCK = """
import fcntl, os, sys, time
handle = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


# -- the pinned sources ---------------------------------------------------------------


def sdist(folder: Path, members: dict[str, bytes]) -> Path:
    """A .tar.gz laid out like the llama-cpp-python sdist, with these files."""
    archive = folder / f"llama_cpp_python-{build.SDIST_VERSION}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_sources_whose_hash_differs_are_refused_and_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads = tmp_path / "sources" / "downloads"

    def fake_pip(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        sdist(downloads, {"llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt": b"evil"})
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    with pytest.raises(build.BuildError, match=f"expected {build.SDIST_SHA256}; not used"):
        build.fetch_sources(tmp_path)
    assert list(downloads.iterdir()) == []


def test_the_vendored_tree_alone_is_extracted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"llama_cpp_python-{build.SDIST_VERSION}/"
    downloads = tmp_path / "sources" / "downloads"
    downloads.mkdir(parents=True)
    archive = sdist(
        downloads,
        {
            prefix + "setup.py": b"not part of llama.cpp",
            prefix + "vendor/llama.cpp/CMakeLists.txt": b"project(llama.cpp)",
            prefix + "vendor/llama.cpp/tools/server/server.cpp": b"int main() {}",
        },
    )
    monkeypatch.setattr(build, "SDIST_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    tree = build.fetch_sources(tmp_path)
    assert (tree / "CMakeLists.txt").read_bytes() == b"project(llama.cpp)"
    assert (tree / "tools" / "server" / "server.cpp").exists()
    assert not list(tree.rglob("setup.py"))
    archive.unlink()  # a second call finds the tree and needs no archive
    assert build.fetch_sources(tmp_path) == tree
