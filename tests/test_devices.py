"""AMD GPU discovery from sysfs, on fake trees shaped like real machines.

Values come from public bug reports and project pages, cited beside each one;
a value no dump showed is marked "illustrative".
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_rocm.devices import (
    GpuDevice,
    discover,
    gfx_from_target_version,
    parse_hsa_override,
)

GIB = 1 << 30
MIB = 1 << 20
NODES = "sys/class/kfd/kfd/topology/nodes"
GFX_NAME = re.compile(r"gfx[1-9][0-9]?[0-9a-f]{2}")


# --- the fake tree builder ------------------------------------------------------------


def make_node(
    root: Path, node: int, text: str | None = None, gpu_id: int | None = None, **props: int
) -> Path:
    """Write KFD node ``node``: ``props`` as "key value" lines (or raw ``text``), and gpu_id."""
    directory = root / NODES / str(node)
    directory.mkdir(parents=True, exist_ok=True)
    if gpu_id is not None:
        (directory / "gpu_id").write_text(f"{gpu_id}\n")
    path = directory / "properties"
    path.write_text(text if text is not None else "".join(f"{k} {v}\n" for k, v in props.items()))
    return path


def make_cpu_node(root: Path, node: int, cores: int) -> None:
    """A CPU node as kfd prints it: cores, no SIMDs, gfx_target_version 0."""
    make_node(root, node, gpu_id=0, cpu_cores_count=cores, simd_count=0, gfx_target_version=0,
              vendor_id=0, device_id=0, drm_render_minor=0)  # fmt: skip


def make_gpu(
    root: Path,
    node: int,
    *,
    target: int,
    device_id: int,
    simds: int,
    minor: int,
    pci: str,
    vram: int,
    gtt: int,
    vram_used: int = 0,
    vram_vendor: str | None = "samsung",
    unique_id: int = 0,
    cpu_cores: int = 0,
    vendor: str = "0x1002",
    driver: str = "amdgpu",
    absolute_links: bool = False,
    gpu_id: int = 4242,
) -> None:
    """A GPU node plus its PCI device and DRM render node, linked the way a real /sys is.

    The PCI device sits under /sys/devices, /sys/class/drm/renderD<minor> points at its
    drm/renderD<minor>, whose ``device`` link points back up to it. ``absolute_links``
    writes the class link as a real machine's absolute path ("/sys/devices/..."),
    which must be taken under ``root``, never the host's.
    """
    make_node(root, node, gpu_id=gpu_id, cpu_cores_count=cpu_cores, simd_count=simds,
              gfx_target_version=target, vendor_id=0x1002, device_id=device_id,
              drm_render_minor=minor, unique_id=unique_id)  # fmt: skip
    device = root / "sys/devices/pci0000:00/0000:00:01.1" / pci
    render = device / "drm" / f"renderD{minor}"
    render.mkdir(parents=True)
    (render / "device").symlink_to(f"../../../{pci}")
    drivers = root / "sys/bus/pci/drivers" / driver
    drivers.mkdir(parents=True, exist_ok=True)
    (device / "driver").symlink_to(os.path.relpath(drivers, device))
    files = {"vendor": vendor, "device": f"0x{device_id:04x}", "mem_info_vram_total": vram,
             "mem_info_vram_used": vram_used, "mem_info_gtt_total": gtt}  # fmt: skip
    if vram_vendor is not None:
        files["mem_info_vram_vendor"] = vram_vendor
    for name, value in files.items():
        (device / name).write_text(f"{value}\n")
    link = root / "sys/class/drm" / f"renderD{minor}"
    link.parent.mkdir(parents=True, exist_ok=True)
    target_path = "/" + str(render.relative_to(root))
    link.symlink_to(target_path if absolute_links else os.path.relpath(render, link.parent))


# --- machines -------------------------------------------------------------------------

# XTX_UUID is a real RX 7900 XTX's ROCm UUID, "GPU-398a3f843a146602"
# (github.com/ollama/ollama/issues/3158).
XTX_UUID = 0x398A3F843A146602
# The first MI210's unique id, 0x67c63ac3c3c637f9 from `rocm-smi --showuniqueid`
# (github.com/ROCm/legacy-rocm-build/issues/5480); the second card's is illustrative.
MI210_UUIDS = (0x67C63AC3C3C637F9, 0x5F3B1C2D4E6A7081)


def workstation(root: Path, **xtx: object) -> None:
    """Ryzen 7 7800X3D (Raphael iGPU) + Radeon RX 7900 XTX.

    The pair and its numbering come from github.com/ROCm/rocm-systems/issues/11549:
    KFD node 1 is the 7900 XTX (0x744c, gfx1100), node 2 the Raphael iGPU (0x164e,
    gfx_target_version 100306; its fault reads "GPU node-2").
    """
    # 16 "Compute Unit"s on the 7800X3D's CPU agent: github.com/ollama/ollama/issues/11420.
    make_cpu_node(root, 0, cores=16)
    # 96 CUs x 2 SIMDs (rocminfo in github.com/ollama/ollama/issues/3158); 24560 MiB of
    # Samsung VRAM at 0000:03:00.0 (`lact cli info` in
    # github.com/ilya-zlobintsev/LACT/pull/533). GTT and VRAM in use: illustrative.
    options: dict[str, object] = {"target": 110000, "device_id": 0x744C, "simds": 192,
                                  "minor": 128, "pci": "0000:03:00.0", "vram": 24560 * MIB,
                                  "vram_used": 1 * GIB, "gtt": 32 * GIB,
                                  "unique_id": XTX_UUID} | xtx  # fmt: skip
    make_gpu(root, 1, **options)  # type: ignore[arg-type]
    # Raphael has 2 CUs x 2 SIMDs; a 512 MiB carve-out ("unsupported Radeon iGPU detected
    # skipping ... total=512.0 MiB", github.com/ollama/ollama/issues/2637); a GPU pool of
    # 65475328 KB (github.com/ROCm/k8s-device-plugin/issues/130); no unique id ("Uuid:
    # GPU-XX", github.com/ROCm/legacy-rocm-build/issues/3015); no mem_info_vram_vendor, which amdgpu
    # hides when the vendor is unknown. PCI address: illustrative.
    make_gpu(root, 2, target=100306, device_id=0x164E, simds=4, minor=129, pci="0000:13:00.0",
             vram=512 * MIB, vram_used=30 * MIB, gtt=65475328 * 1024, vram_vendor=None)  # fmt: skip


def mi210_server(root: Path) -> None:
    """A dual-socket server with two Instinct MI210s (Aldebaran, 0x740f, gfx90a).

    github.com/ROCm/legacy-rocm-build/issues/5480 shows an MI210 at 0000:03:00.0 as KFD node 2 (two
    CPU nodes before it) with the unique id above. 104 CUs x 4 SIMDs and 64 GiB of HBM2e
    are AMD's MI210 spec; the second card's address and the VRAM vendor are illustrative.
    """
    make_cpu_node(root, 0, cores=64)
    make_cpu_node(root, 1, cores=64)
    for node, (pci, uuid) in enumerate(
        zip(("0000:03:00.0", "0000:83:00.0"), MI210_UUIDS, strict=True), 2
    ):
        make_gpu(root, node, target=90010, device_id=0x740F, simds=416, minor=126 + node,
                 pci=pci, vram=64 * GIB, gtt=256 * GIB, vram_vendor="hynix",
                 unique_id=uuid)  # fmt: skip


def found(root: Path, env: Mapping[str, str] | None = None) -> list[tuple[int, str]]:
    return [(d.index, d.native_gfx) for d in discover(root, env or {})]


# --- (1) workstation: a discrete RDNA3 card and an APU iGPU ---------------------------


def test_workstation_finds_the_discrete_card_as_gpu_0(tmp_path: Path) -> None:
    workstation(tmp_path)
    xtx = discover(tmp_path, {})[0]
    assert xtx == GpuDevice(
        index=0, gfx="gfx1100", native_gfx="gfx1100", name="AMD Radeon RX 7900 XTX / 7900 XT",
        vendor_id=0x1002, device_id=0x744C, vram_total=24560 * MIB, vram_used=1 * GIB,
        gtt_total=32 * GIB, integrated=False, unique_id=XTX_UUID, pci_address="0000:03:00.0",
        node=1,
    )  # fmt: skip
    assert xtx.vram_free == 24560 * MIB - 1 * GIB


def test_workstation_finds_the_raphael_igpu_as_integrated_gpu_1(tmp_path: Path) -> None:
    workstation(tmp_path)
    igpu = discover(tmp_path, {})[1]
    assert (igpu.index, igpu.node, igpu.gfx, igpu.name) == (
        1, 2, "gfx1036", "AMD Radeon Graphics (Raphael iGPU)")  # fmt: skip
    assert igpu.integrated
    assert (igpu.vram_total, igpu.gtt_total) == (512 * MIB, 65475328 * 1024)
    assert igpu.unique_id is None


def test_links_copied_from_a_real_machine_are_followed_inside_root(tmp_path: Path) -> None:
    workstation(tmp_path / "m", absolute_links=True)
    assert found(tmp_path / "m") == [(0, "gfx1100"), (1, "gfx1036")]


def test_absolute_links_into_the_fake_tree_are_followed(tmp_path: Path) -> None:
    workstation(tmp_path)
    link = tmp_path / "sys/class/drm/renderD128"
    target = (link.parent / os.readlink(link)).resolve()
    link.unlink()
    link.symlink_to(target)  # absolute, and inside tmp_path
    assert discover(tmp_path, {})[0].pci_address == "0000:03:00.0"


# --- (2) a CDNA server with unique ids ------------------------------------------------


def test_server_finds_both_mi210s_after_two_cpu_nodes(tmp_path: Path) -> None:
    mi210_server(tmp_path)
    devices = discover(tmp_path, {})
    assert [(d.index, d.node, d.gfx, d.unique_id) for d in devices] == [
        (0, 2, "gfx90a", MI210_UUIDS[0]), (1, 3, "gfx90a", MI210_UUIDS[1])]  # fmt: skip
    assert all(d.name == "AMD Instinct MI210" and not d.integrated for d in devices)
    assert [d.pci_address for d in devices] == ["0000:03:00.0", "0000:83:00.0"]


# --- (3), (4) no GPU ------------------------------------------------------------------


def test_cpu_only_topology_has_no_gpus_and_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A CPU-only host still has a KFD CPU node (Device Type CPU, 12 compute units:
    # github.com/ROCm/legacy-rocm-build/issues/795).
    make_cpu_node(tmp_path, 0, cores=12)
    with caplog.at_level(logging.DEBUG, "inference_rocm.devices"):
        assert discover(tmp_path, {}) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_no_kfd_directory_means_no_gpus(tmp_path: Path) -> None:
    (tmp_path / "sys/class").mkdir(parents=True)
    assert discover(tmp_path, {}) == []


def test_a_missing_root_means_no_gpus(tmp_path: Path) -> None:
    assert discover(tmp_path / "nowhere", {}) == []


# --- (5) what cannot be read is skipped, with the reason logged ------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x00\xff\xfe garbage \x80", "not text"),
        (b"the quick brown fox\n", "not a KFD properties file"),
        (b"cpu_cores_count 0\nsimd_count 4\ngfx_target_version 11.0.0\n", "not an integer"),
        (b"cpu_cores_count 0\nsimd_count 4\ngfx_target_version 100306\n", "missing"),
        (b"simd_count 4\ngfx_target_version 90099\n", "names no gfx target"),
    ],
    ids=["binary", "no-keys", "non-integer", "missing-keys", "impossible-target"],
)
def test_a_malformed_node_is_skipped_and_the_others_still_found(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    workstation(tmp_path)
    (tmp_path / NODES / "2" / "properties").write_bytes(content)
    with caplog.at_level(logging.WARNING, "inference_rocm.devices"):
        assert found(tmp_path) == [(0, "gfx1100")]
    assert reason in caplog.text
    assert "KFD node 2" in caplog.text


def test_an_unreadable_properties_file_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workstation(tmp_path)
    path = tmp_path / NODES / "1" / "properties"
    path.unlink()
    path.mkdir()  # reading it fails with EISDIR (root is never denied by permissions)
    with caplog.at_level(logging.WARNING, "inference_rocm.devices"):
        assert found(tmp_path) == [(1, "gfx1036")]  # node 1's nonzero gpu_id still counts
    assert "cannot read properties" in caplog.text


def test_a_gpu_whose_node_counts_but_cannot_be_used_keeps_later_indices(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The XTX bound to vfio-pci for a VM: still GPU 0 to KFD, so the iGPU stays GPU 1.
    workstation(tmp_path, driver="vfio-pci")
    with caplog.at_level(logging.WARNING, "inference_rocm.devices"):
        assert found(tmp_path) == [(1, "gfx1036")]
    assert "bound to vfio-pci, not amdgpu" in caplog.text


def test_a_render_node_of_another_vendor_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workstation(tmp_path, vendor="0x10de")
    with caplog.at_level(logging.WARNING, "inference_rocm.devices"):
        assert found(tmp_path) == [(1, "gfx1036")]
    assert "not AMD" in caplog.text


def test_a_missing_render_node_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    workstation(tmp_path)
    (tmp_path / "sys/class/drm/renderD129").unlink()
    with caplog.at_level(logging.WARNING, "inference_rocm.devices"):
        assert found(tmp_path) == [(0, "gfx1100")]
    assert "no DRM device for renderD129" in caplog.text


def test_a_symlink_loop_is_skipped_not_followed_forever(tmp_path: Path) -> None:
    workstation(tmp_path)
    link = tmp_path / "sys/class/drm/renderD129"
    link.unlink()
    link.symlink_to("renderD129")
    assert found(tmp_path) == [(0, "gfx1100")]


# --- integrated or discrete -----------------------------------------------------------


def test_an_apu_sharing_one_node_with_its_cpu_is_integrated(tmp_path: Path) -> None:
    # Raven Ridge, node 0: "cpu_cores_count 8 / simd_count 44 / device_id 5597"
    # (github.com/ROCm/amdgpu/issues/66). Its 512 MiB carve-out is the usual default.
    make_gpu(tmp_path, 0, target=90002, device_id=5597, simds=44, cpu_cores=8, minor=128,
             pci="0000:0a:00.0", vram=512 * MIB, gtt=3 * GIB, vram_vendor=None)  # fmt: skip
    (device,) = discover(tmp_path, {})
    assert (device.index, device.gfx, device.integrated) == (0, "gfx902", True)
    assert device.name == "AMD GPU 1002:15dd"


def test_an_apu_with_a_big_carve_out_is_still_integrated(tmp_path: Path) -> None:
    # A 780M with an 8 GiB BIOS carve-out (github.com/ollama/ollama/issues/16040).
    make_gpu(tmp_path, 1, target=110003, device_id=0x1900, simds=24, minor=128,
             pci="0000:e5:00.0", vram=8 * GIB, gtt=8 * GIB, vram_vendor=None)  # fmt: skip
    assert discover(tmp_path, {})[0].integrated


def test_an_unknown_gpu_with_a_carve_out_and_no_vram_vendor_is_integrated(
    tmp_path: Path,
) -> None:
    # Illustrative: a future APU neither table knows yet.
    make_gpu(tmp_path, 1, target=120500, device_id=0x1234, simds=16, minor=128,
             pci="0000:c4:00.0", vram=512 * MIB, gtt=16 * GIB, vram_vendor=None)  # fmt: skip
    assert discover(tmp_path, {})[0].integrated


def test_a_small_discrete_card_with_a_vram_vendor_is_not_integrated(tmp_path: Path) -> None:
    # RX 6500 XT (0x743f, gfx1034): 4 GiB of GDDR6, the GTT bigger than that.
    make_gpu(tmp_path, 1, target=100304, device_id=0x743F, simds=32, minor=128,
             pci="0000:03:00.0", vram=4 * GIB, gtt=16 * GIB, vram_vendor="hynix")  # fmt: skip
    (device,) = discover(tmp_path, {})
    assert (device.gfx, device.integrated) == ("gfx1034", False)


# --- (6) HIP_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES, GPU_DEVICE_ORDINAL -----------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HIP_VISIBLE_DEVICES": "1"}, [1]),
        ({"HIP_VISIBLE_DEVICES": "1,0"}, [1, 0]),
        ({"HIP_VISIBLE_DEVICES": " 0 , 1 "}, [0, 1]),
        ({"CUDA_VISIBLE_DEVICES": "1"}, [1]),
        ({"GPU_DEVICE_ORDINAL": "1"}, [1]),
        ({"ROCR_VISIBLE_DEVICES": "1"}, [1]),
        ({"ROCR_VISIBLE_DEVICES": f"GPU-{MI210_UUIDS[1]:016x}"}, [1]),
        ({"ROCR_VISIBLE_DEVICES": f"gpu-{MI210_UUIDS[1]:X}"}, [1]),
        ({"ROCR_VISIBLE_DEVICES": "1", "HIP_VISIBLE_DEVICES": "0"}, [1]),
        ({"HIP_VISIBLE_DEVICES": "0", "GPU_DEVICE_ORDINAL": "1"}, [0]),
        ({"HIP_VISIBLE_DEVICES": ""}, [0, 1]),
    ],
    ids=["hip", "hip-reorders", "hip-spaces", "cuda", "ordinal", "rocr", "rocr-uuid",
         "rocr-uuid-case", "hip-counts-after-rocr", "hip-over-ordinal", "empty-is-unset"],
)  # fmt: skip
def test_visible_devices_select_and_keep_original_indices(
    tmp_path: Path, env: dict[str, str], expected: list[int]
) -> None:
    mi210_server(tmp_path)
    assert [d.index for d in discover(tmp_path, env)] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0,x,1", [0]), ("-1", []), ("7", []), ("GPU-XX", []), ("GPU-0123", []), ("0,0,1", [0, 1])],
)
def test_a_bad_visible_devices_entry_ends_the_list_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: str, expected: list[int]
) -> None:
    mi210_server(tmp_path)
    with caplog.at_level(logging.WARNING, "inference_rocm.devices"):
        assert [d.index for d in discover(tmp_path, {"HIP_VISIBLE_DEVICES": value})] == expected
    assert ("HIP_VISIBLE_DEVICES" in caplog.text) == (expected != [0, 1])


def test_environ_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mi210_server(tmp_path)
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")
    monkeypatch.delenv("ROCR_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("HSA_OVERRIDE_GFX_VERSION", raising=False)
    assert [d.index for d in discover(str(tmp_path))] == [1]


# --- (7) HSA_OVERRIDE_GFX_VERSION -----------------------------------------------------


def test_hsa_override_sets_the_effective_target_of_every_gpu(tmp_path: Path) -> None:
    # "HSA_OVERRIDE_GFX_VERSION=10.3.0 (since the ISA is identical to gfx1030)" is the
    # advice for gfx1036 in github.com/ROCm/Tensile/issues/1907.
    workstation(tmp_path)
    devices = discover(tmp_path, {"HSA_OVERRIDE_GFX_VERSION": "10.3.0"})
    assert [(d.gfx, d.native_gfx) for d in devices] == [
        ("gfx1030", "gfx1100"), ("gfx1030", "gfx1036")]  # fmt: skip


def test_an_invalid_hsa_override_is_logged_and_native_targets_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # "HSA_OVERRIDE_GFX_VERSION=gfx1102" was tried in github.com/ollama/ollama/issues/6685.
    workstation(tmp_path)
    with caplog.at_level(logging.WARNING, "inference_rocm.devices"):
        devices = discover(tmp_path, {"HSA_OVERRIDE_GFX_VERSION": "gfx1102"})
    assert [d.gfx for d in devices] == ["gfx1100", "gfx1036"]
    assert "HSA_OVERRIDE_GFX_VERSION='gfx1102'" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10.3.0", "gfx1030"), ("11.0.0", "gfx1100"), ("11.0.2", "gfx1102"), ("9.0.10", "gfx90a"),
     ("9.4.2", "gfx942"), ("11.5.1", "gfx1151"), (" 10.3.0\n", "gfx1030"), ("010.03.00", "gfx1030"),
     ("9.0.a", None), ("gfx1030", None), ("10.3", None), ("10.3.0.0", None), ("", None),
     ("10.3.0x", None), ("64.0.0", None), ("0.0.0", None), ("10.16.0", None),
     ("\u0661\u0660.\u0663.\u0660", None), ("1" * 5000 + ".0.0", None)],
)  # fmt: skip
def test_parse_hsa_override(value: str, expected: str | None) -> None:
    assert parse_hsa_override(value) == expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [(110000, "gfx1100"), (90010, "gfx90a"), (90402, "gfx942"), (100301, "gfx1031"),
     (90008, "gfx908"), (110001, "gfx1101"), (110501, "gfx1151"), (100306, "gfx1036"),
     (90012, "gfx90c"), (120001, "gfx1201")],
)  # fmt: skip
def test_gfx_from_target_version(number: int, expected: str) -> None:
    assert gfx_from_target_version(number) == expected


@pytest.mark.parametrize("number", [0, -1, 90099, 92000, 640000, 9999])
def test_gfx_from_target_version_rejects_numbers_with_no_target(number: int) -> None:
    with pytest.raises(ValueError, match="names no gfx target"):
        gfx_from_target_version(number)


@given(st.integers())
def test_gfx_from_target_version_names_a_target_or_raises_value_error(number: int) -> None:
    try:
        name = gfx_from_target_version(number)
    except ValueError:
        return
    assert GFX_NAME.fullmatch(name)


@given(st.integers(1, 63), st.integers(0, 15), st.integers(0, 15))
def test_target_names_round_trip(major: int, minor: int, stepping: int) -> None:
    name = gfx_from_target_version(major * 10000 + minor * 100 + stepping)
    assert parse_hsa_override(f"{major}.{minor}.{stepping}") == name
    # The name is unambiguous: it decodes back to the numbers it came from.
    assert (int(name[3:-2]), int(name[-2], 16), int(name[-1], 16)) == (major, minor, stepping)


@given(st.text())
def test_parse_hsa_override_never_raises(value: str) -> None:
    result = parse_hsa_override(value)
    assert result is None or GFX_NAME.fullmatch(result)


@given(st.none() | st.integers() | st.binary() | st.floats())
def test_parse_hsa_override_returns_none_for_non_strings(value: object) -> None:
    assert parse_hsa_override(value) is None  # type: ignore[arg-type]


@given(st.none() | st.booleans() | st.text() | st.binary() | st.floats())
def test_gfx_from_target_version_raises_value_error_for_non_ints(value: object) -> None:
    with pytest.raises(ValueError, match="must be an int"):
        gfx_from_target_version(value)  # type: ignore[arg-type]
