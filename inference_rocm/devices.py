"""AMD GPU discovery from sysfs: the KFD topology names the GPUs, DRM gives their memory.

A few small files are read, nothing is run and no ROCm library loaded, so ``status()``
can call this freely; every path is taken under ``root``, so tests can use a fake tree.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import NamedTuple

import attrs

__all__ = [
    "HIP_SELECTORS",
    "SELECTORS",
    "GpuDevice",
    "discover",
    "gfx_from_target_version",
    "parse_hsa_override",
    "size_text",
]

_log = logging.getLogger(__name__)

# The variables that choose GPUs: ROCR's, then HIP's own (the first one set wins).
HIP_SELECTORS = ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")
SELECTORS = ("ROCR_VISIBLE_DEVICES", *HIP_SELECTORS)

_AMD = 0x1002
_MIB = 1 << 20
_GIB = 1 << 30
_MAX_READ = 64 * 1024  # a properties file is one page; anything bigger is not one
_MAX_MAJOR = 63  # HsaEngineId keeps 6 bits of major (libhsakmt topology.c checks the same)
_NODES = "sys/class/kfd/kfd/topology/nodes"
_INT = re.compile(r"-?[0-9]{1,20}")
_OVERRIDE = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_MEM_FILES = ("vram_total", "vram_used", "gtt_total")
_PCI = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")

# Marketing names for common device ids (PCI id database; libhsakmt's gfxip
# table), and whether the id is an APU's integrated GPU.
_NAMES: dict[int, tuple[str, bool]] = {
    0x744C: ("AMD Radeon RX 7900 XTX / 7900 XT", False),
    0x73BF: ("AMD Radeon RX 6800 / 6800 XT / 6900 XT", False),
    0x738C: ("AMD Instinct MI100", False),
    0x740C: ("AMD Instinct MI250X / MI250", False),
    0x740F: ("AMD Instinct MI210", False),
    0x74A1: ("AMD Instinct MI300X", False),
    0x15BF: ("AMD Radeon 780M (Phoenix APU)", True),
    0x1900: ("AMD Radeon 780M (Hawk Point APU)", True),
    0x1681: ("AMD Radeon 680M (Rembrandt APU)", True),
    0x163F: ("AMD Steam Deck GPU (Van Gogh APU)", True),
    0x164E: ("AMD Radeon Graphics (Raphael iGPU)", True),
    0x150E: ("AMD Radeon 890M (Strix Point APU)", True),
    0x1586: ("AMD Radeon 8060S (Strix Halo APU)", True),
}

# Targets that only ever ship inside an APU (LLVM's AMDGPU processor table):
# Raven, Raven2, Renoir/Cezanne, Van Gogh, Rembrandt, Raphael, Mendocino,
# Phoenix, Strix Point, Strix Halo, Krackan. The kernel's AMD_IS_APU flag is
# per ASIC too, but it is only reachable by ioctl, not sysfs.
_APU_TARGETS = frozenset(
    {"gfx902", "gfx909", "gfx90c", "gfx1033", "gfx1035", "gfx1036", "gfx1037",
     "gfx1103", "gfx1150", "gfx1151", "gfx1152", "gfx1153"}
)  # fmt: skip


@attrs.frozen
class GpuDevice:
    """One AMD GPU as ROCm numbers it.

    ``index`` is the ROCR/HIP device index with nothing hidden (the position
    among the KFD GPU nodes); ``gfx`` is the target ROCm will load code for,
    after ``HSA_OVERRIDE_GFX_VERSION``, and ``native_gfx`` the silicon's own.
    Sizes are bytes.
    """

    index: int
    gfx: str
    native_gfx: str
    name: str
    vendor_id: int
    device_id: int
    vram_total: int
    vram_used: int
    gtt_total: int
    integrated: bool
    unique_id: int | None
    pci_address: str | None
    node: int

    @property
    def vram_free(self) -> int:
        """VRAM not in use right now, never negative."""
        return max(0, self.vram_total - self.vram_used)

    def describe(self) -> str:
        """'GPU 0: gfx1100 AMD Radeon RX 7900 XTX, VRAM 23.0 GiB free of 24.0 GiB', for
        messages and `inference backends` alike."""
        gfx = self.gfx if self.gfx == self.native_gfx else f"{self.gfx} (native {self.native_gfx})"
        return (
            f"GPU {self.index}: {gfx} {self.name}, VRAM {size_text(self.vram_free)} free of "
            f"{size_text(self.vram_total)}"
        )


def size_text(n: float) -> str:
    """Bytes for people: GiB with one decimal from 1 GiB up, whole MiB below."""
    return f"{n / _GIB:.1f} GiB" if n >= _GIB else f"{n / _MIB:.0f} MiB"


def gfx_from_target_version(n: int) -> str:
    """Name the LLVM target for a KFD ``gfx_target_version`` (110000 -> "gfx1100").

    The number is major*10000 + minor*100 + stepping; LLVM writes minor and
    stepping as one hex digit each, so 90010 -> "gfx90a". Raises ValueError
    (and nothing else) for 0, which is a CPU node, and for any value with no
    such name: a non-int, major outside 1..63, minor or stepping above 15.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"gfx_target_version must be an int, not {n!r}")
    major, minor, stepping = n // 10000, n // 100 % 100, n % 100
    if not (1 <= major <= _MAX_MAJOR and minor <= 15 and stepping <= 15):
        raise ValueError(f"gfx_target_version {n} names no gfx target")
    return f"gfx{major}{minor:x}{stepping:x}"


def parse_hsa_override(value: str) -> str | None:
    """The target ``HSA_OVERRIDE_GFX_VERSION`` asks for ("10.3.0" -> "gfx1030"), or None.

    libhsakmt reads the variable with ``sscanf("%u.%u.%u")``: three decimal
    fields. So "9.0.10" means gfx90a, while "9.0.a" and "gfx1030" are invalid
    (ROCm then fails to start); we accept exactly what ROCm accepts, minus
    fields above 15, which have no target name. Never raises.
    """
    if not isinstance(value, str):
        return None
    match = _OVERRIDE.fullmatch(value.strip())
    if match is None:
        return None
    major, minor, stepping = (int(part) for part in match.groups())
    try:
        return gfx_from_target_version(major * 10000 + minor * 100 + stepping)
    except ValueError:
        return None


def discover(
    root: str | os.PathLike[str] = "/", environ: Mapping[str, str] | None = None
) -> list[GpuDevice]:
    """The AMD GPUs ROCm would show a process with this environment, in its order.

    ``ROCR_VISIBLE_DEVICES``, then ``HIP_VISIBLE_DEVICES`` (or
    ``CUDA_VISIBLE_DEVICES``, or ``GPU_DEVICE_ORDINAL``) hide and reorder devices
    as the runtimes do; each device keeps its unfiltered ``index``. ``gfx`` follows
    ``HSA_OVERRIDE_GFX_VERSION`` (an invalid one is logged and ignored). A device that
    cannot be read is left out with a logged reason. Never raises.
    """
    env = os.environ if environ is None else environ
    try:
        override = parse_hsa_override(raw) if (raw := env.get("HSA_OVERRIDE_GFX_VERSION")) else None
        if raw and override is None:
            _log.warning("HSA_OVERRIDE_GFX_VERSION=%r is not decimal a.b.c; ROCm rejects it", raw)
        return _visible(_scan(os.path.realpath(os.fspath(root)), override), env)
    except Exception:  # advisory: a bug here must not take a backend's status() down
        _log.exception("AMD GPU discovery under %r failed", root)
        return []


class _Skip(Exception):
    """Why one node is left out."""


class _Drm(NamedTuple):
    vram_total: int
    vram_used: int
    gtt_total: int
    vram_vendor_known: bool
    pci_address: str | None


def _scan(base: str, override: str | None) -> list[GpuDevice]:
    nodes_dir = os.path.join(base, _NODES)
    try:
        names = os.listdir(nodes_dir)
    except OSError as exc:
        _log.debug("no KFD topology at %s (%s): no AMD GPUs", nodes_dir, exc.strerror)
        return []
    devices: list[GpuDevice] = []
    index = 0  # ROCR numbers GPU agents in node order, CPU nodes not counted
    for node in sorted(int(name) for name in names if name.isascii() and name.isdigit()):
        try:
            props = _properties(os.path.join(nodes_dir, str(node), "properties"))
            target, simds = _int(props, "gfx_target_version"), _int(props, "simd_count")
            if target is None and "cpu_cores_count" not in props:
                raise _Skip("not a KFD properties file (no gfx_target_version)")
        except _Skip as why:
            _log.warning("KFD node %d skipped: %s", node, why)
            index += _is_gpu_node(os.path.join(nodes_dir, str(node)))
            continue
        if not target and not simds:
            continue  # gfx_target_version 0: a CPU node
        try:
            devices.append(_device(base, node, index, props, override))
        except (_Skip, OSError) as why:
            _log.warning("KFD node %d (GPU index %d) skipped: %s", node, index, why)
        index += 1
    return devices


def _is_gpu_node(directory: str) -> bool:
    """Whether a node with unusable properties is a GPU (CPU nodes have gpu_id 0), so the
    GPUs after it keep the indices ROCm gives them."""
    try:
        return bool(int((_read(os.path.join(directory, "gpu_id")) or "0").strip()))
    except (_Skip, ValueError):
        return False


def _device(
    base: str, node: int, index: int, props: dict[str, str], override: str | None
) -> GpuDevice:
    target = _int(props, "gfx_target_version")
    if target is None:  # a GPU node (simd_count > 0) from a kernel older than 5.x
        raise _Skip("no gfx_target_version")
    try:
        native = gfx_from_target_version(target)
    except ValueError as exc:
        raise _Skip(str(exc)) from None
    vendor_id, device_id = _int(props, "vendor_id"), _int(props, "device_id")
    minor = _int(props, "drm_render_minor")
    if vendor_id is None or device_id is None or minor is None:
        raise _Skip("vendor_id, device_id or drm_render_minor missing")
    if vendor_id != _AMD:
        raise _Skip(f"vendor_id {vendor_id:#06x} is not AMD")
    drm = _drm(base, minor)
    name, apu_id = _NAMES.get(device_id, (f"AMD GPU 1002:{device_id:04x}", False))
    integrated = _integrated(props, native, apu_id, drm)
    unique_id = _int(props, "unique_id") or None
    return GpuDevice(index, override or native, native, name, vendor_id, device_id,
                     drm.vram_total, drm.vram_used, drm.gtt_total, integrated, unique_id,
                     drm.pci_address, node)  # fmt: skip


def _integrated(props: dict[str, str], native: str, apu_id: bool, drm: _Drm) -> bool:
    """Whether this is an APU's GPU; sysfs has no flag for it, so combine what it shows."""
    # A node holding CPU cores and SIMDs together is an APU: kernels that build
    # the topology from the ACPI CRAT table do this, e.g. Raven Ridge's node 0
    # reads "cpu_cores_count 8 / simd_count 44" (github.com/ROCm/amdgpu/issues/66).
    if (_int(props, "cpu_cores_count") or 0) > 0:
        return True
    # Silicon that only ships in APUs; catches a large BIOS carve-out too
    # (8 GiB on a 780M: github.com/ollama/ollama/issues/16040).
    if apu_id or native in _APU_TARGETS:
        return True
    # The carve-out pattern of a new APU: a small "VRAM" (512 MiB is the usual
    # BIOS default, github.com/ollama/ollama/issues/2637, clbr/radeontop#163)
    # beside a larger GTT, and no VRAM vendor: amdgpu hides mem_info_vram_vendor
    # when the vendor is unknown (amdgpu_vram_attrs_is_visible), as on APUs; older
    # kernels show "unknown".
    small = drm.vram_total <= 4 * _GIB and drm.gtt_total > drm.vram_total
    return small and not drm.vram_vendor_known


def _drm(base: str, minor: int) -> _Drm:
    render = f"renderD{minor}"
    device = _resolve(base, f"sys/class/drm/{render}/device")
    if device is None or not os.path.isdir(device):
        raise _Skip(f"no DRM device for {render}")
    vendor = _read_int(device, "vendor")
    if vendor != _AMD:
        raise _Skip(f"{render} PCI vendor is {vendor if vendor is None else hex(vendor)}, not AMD")
    try:
        driver: str | None = os.path.basename(os.readlink(os.path.join(device, "driver")))
    except OSError:
        driver = None
    if driver != "amdgpu":
        raise _Skip(f"{render} is bound to {driver or 'no driver'}, not amdgpu")
    vram_vendor = (_read(os.path.join(device, "mem_info_vram_vendor")) or "").strip()
    address = os.path.basename(device)
    total, used, gtt = (_read_int(device, f"mem_info_{n}") or 0 for n in _MEM_FILES)
    known = vram_vendor not in ("", "unknown")
    return _Drm(total, used, gtt, known, address if _PCI.fullmatch(address) else None)


def _resolve(base: str, relative: str) -> str | None:
    """Follow symlinks as if ``base`` were "/", so a fake tree never escapes to the host:
    absolute targets are taken under ``base`` unless they already point inside it."""
    parts = [p for p in relative.split("/") if p]
    done: list[str] = []
    for _ in range(256):
        if not parts:
            return os.path.join(base, *done)
        part = parts.pop(0)
        if part in (".", ".."):
            if part == ".." and done:
                done.pop()
            continue
        path = os.path.join(base, *done, part)
        if not os.path.islink(path):
            done.append(part)
            continue
        target = os.readlink(path)
        if os.path.isabs(target):
            done = []
            if base != "/" and (target + "/").startswith(base + "/"):
                target = target[len(base) :]
        parts = [p for p in target.split("/") if p] + parts
    return None  # a symlink loop


def _properties(path: str) -> dict[str, str]:
    text = _read(path)
    if text is None:
        raise _Skip("no properties file")
    props: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2:  # skip other lines (libhsakmt stops at the first such line)
            props[fields[0]] = fields[1]
    return props


def _int(props: dict[str, str], key: str) -> int | None:
    value = props.get(key)
    if value is None:
        return None
    if not _INT.fullmatch(value):
        raise _Skip(f"{key} is not an integer: {value[:40]!r}")
    return int(value)


def _read(path: str) -> str | None:
    """A small sysfs file's text; None when it does not exist."""
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_READ + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Skip(f"cannot read {os.path.basename(path)}: {exc.strerror or exc}") from None
    if len(data) > _MAX_READ:
        raise _Skip(f"{os.path.basename(path)} is larger than {_MAX_READ} bytes")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise _Skip(f"{os.path.basename(path)} is not text") from None


def _read_int(directory: str, name: str) -> int | None:
    text = _read(os.path.join(directory, name))
    if text is None:
        return None
    value = text.strip()
    if not re.fullmatch(r"0x[0-9a-fA-F]{1,16}|[0-9]{1,20}", value):
        raise _Skip(f"{name} is not a number: {value[:40]!r}")
    return int(value, 0) if value.startswith("0x") else int(value)


def _visible(devices: list[GpuDevice], env: Mapping[str, str]) -> list[GpuDevice]:
    """ROCR_VISIBLE_DEVICES (indices or GPU-<unique id>) filters what ROCR shows; HIP numbers
    what is left and applies HIP_, else CUDA_VISIBLE_DEVICES, else GPU_DEVICE_ORDINAL (the
    first set; we read clr that way). An empty variable counts as unset."""
    if env.get("ROCR_VISIBLE_DEVICES"):
        devices = _select(devices, "ROCR_VISIBLE_DEVICES", env["ROCR_VISIBLE_DEVICES"])
    for name in HIP_SELECTORS:
        if env.get(name):
            return _select(devices, name, env[name])
    return devices


def _select(devices: list[GpuDevice], name: str, value: str) -> list[GpuDevice]:
    """The listed devices in list order; a bad entry ends the list (CUDA's rule, HIP's too)."""
    chosen: list[GpuDevice] = []
    for entry in (e.strip() for e in value.split(",")):
        found = _lookup(devices, entry)
        if found is None:
            _log.warning(
                "%s=%r: %r matches no GPU; it and those after it are ignored", name, value, entry
            )
            break
        if found not in chosen:
            chosen.append(found)
    return chosen


def _lookup(devices: list[GpuDevice], entry: str) -> GpuDevice | None:
    if entry.isascii() and entry.isdigit() and len(entry) < 6:
        return devices[int(entry)] if int(entry) < len(devices) else None
    uuid = entry[4:] if entry[:4].upper() == "GPU-" else ""
    if uuid and len(uuid) <= 16 and all(c in "0123456789abcdefABCDEF" for c in uuid):
        return next((d for d in devices if d.unique_id == int(uuid, 16)), None)
    return None
