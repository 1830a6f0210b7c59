"""Which backends exist, which can run, and `load()`.

Plugins are found lazily through `importlib.metadata` entry points and loaded
with pluggy, each in its own try/except: a broken plugin is logged and listed
by `backends()` with its error, never fatal. The same isolation holds for the
other hooks (`inspect_model`, `register_commands`): each plugin is called on
its own, and one that raises is logged and skipped.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast, final

import attrs
import pluggy

from . import hookspecs, hub
from ._locations import redacted, url_scheme
from ._model_files import check_regular
from .errors import (
    BackendNotFound,
    BackendUnavailable,
    InvalidModelFile,
    InvalidValue,
    NoBackendAvailable,
)
from .protocols import Backend, BackendStatus, TextModel
from .types import LoadConfig, ModelInfo, build_config

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "aload",
    "backends",
    "choose_backend",
    "default_backend",
    "get_backend",
    "inspect_model",
    "load",
    "register",
    "register_commands",
    "reset",
    "unregister",
]

logger = logging.getLogger(__name__)

_ENV_FILTER = "INFERENCE_BACKENDS"


@final
class _Registry:
    """Process-wide, thread-safe table of backends and broken plugins."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._backends: dict[str, Backend] = {}
        self._broken: dict[str, BackendStatus] = {}
        self._discovered = False
        self._manager: pluggy.PluginManager | None = None

    def _wanted(self) -> set[str] | None:
        """The backend names `INFERENCE_BACKENDS` allows, or None for all."""
        names = {name.strip() for name in os.environ.get(_ENV_FILTER, "").split(",")}
        names.discard("")
        return names or None

    def _ensure_discovered(self) -> None:
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            wanted = self._wanted()
            manager = self._manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            manager.add_hookspecs(hookspecs)
            for entry_point in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
                self._load_plugin(manager, entry_point, wanted)

    def _load_plugin(
        self,
        manager: pluggy.PluginManager,
        entry_point: importlib.metadata.EntryPoint,
        wanted: set[str] | None,
    ) -> None:
        def register_one(backend: Backend) -> None:
            if wanted is None or backend.name in wanted:
                self._add(backend, replace=False)

        try:
            plugin = entry_point.load()
            if manager.is_registered(plugin):
                return
            manager.register(plugin, name=f"{entry_point.name}:{entry_point.value}")
            hook_impls = manager.hook.register_backends.get_hookimpls()
            for impl in hook_impls:
                if impl.plugin is plugin:
                    impl.function(register=register_one)
        except Exception as error:  # a broken plugin must never take the host down
            logger.warning(
                "backend plugin %r (%s) failed to load: %r",
                entry_point.name,
                entry_point.value,
                error,
            )
            # Listed whatever INFERENCE_BACKENDS says: which backend names a plugin would
            # have registered is unknown when it fails, and its error must not vanish.
            self._broken[entry_point.name] = BackendStatus(
                name=entry_point.name,
                priority=0,
                available=False,
                reasons=(f"plugin {entry_point.value} failed to load: {error!r}",),
            )

    def _add(self, backend: Backend, *, replace: bool) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"{backend!r} does not implement the Backend protocol")
        with self._lock:
            if backend.name in self._backends and not replace:
                logger.warning("backend %r registered twice; keeping the first", backend.name)
                return
            self._backends[backend.name] = backend

    def register(self, backend: Backend) -> None:
        self._ensure_discovered()
        self._add(backend, replace=True)

    def unregister(self, name: str) -> None:
        self._ensure_discovered()
        with self._lock:
            if self._backends.pop(name, None) is None and self._broken.pop(name, None) is None:
                raise BackendNotFound(f"no backend named {name!r} is registered")

    def snapshot(self) -> tuple[list[Backend], list[BackendStatus]]:
        self._ensure_discovered()
        with self._lock:
            return list(self._backends.values()), list(self._broken.values())

    def implementations(self, hook: str) -> list[tuple[str, Callable[..., Any]]]:
        """(plugin name, function) of every loaded plugin implementing `hook`, in call order."""
        self._ensure_discovered()
        with self._lock:
            if self._manager is None:
                return []
            impls = getattr(self._manager.hook, hook).get_hookimpls()
            # pluggy calls the last registered first; keep its order.
            return [(impl.plugin_name, impl.function) for impl in reversed(impls)]

    def reset(self) -> None:
        with self._lock:
            self._backends.clear()
            self._broken.clear()
            self._discovered = False
            self._manager = None


_registry = _Registry()


def _status(backend: Backend) -> BackendStatus:
    """`status()` must not raise; a backend that does is reported, not trusted."""
    try:
        return backend.status()
    except Exception as error:
        logger.warning("backend %r raised from status(): %r", backend.name, error)
        return BackendStatus(
            name=backend.name,
            priority=backend.priority,
            available=False,
            reasons=(f"status() raised {error!r}",),
        )


def _ranked(statuses: list[BackendStatus]) -> list[BackendStatus]:
    return sorted(statuses, key=lambda status: (-status.priority, status.name))


def _describe(status: BackendStatus) -> str:
    if status.available:
        return f"{status.name}: available"
    return f"{status.name}: " + "; ".join(status.reasons or ("unavailable (no reason given)",))


def backends() -> list[BackendStatus]:
    """Every registered backend and every broken plugin, best first."""
    found, broken = _registry.snapshot()
    return _ranked([_status(backend) for backend in found] + broken)


def get_backend(name: str) -> Backend:
    """The backend registered as `name`, available or not."""
    found, broken = _registry.snapshot()
    for backend in found:
        if backend.name == name:
            return backend
    for status in broken:
        if status.name == name:
            raise BackendUnavailable(_describe(status), status.reasons)
    known = ", ".join(sorted(b.name for b in found)) or "none"
    raise BackendNotFound(
        f"no backend named {name!r}; registered backends: {known}"
        + (
            f" (limited by {_ENV_FILTER}={os.environ[_ENV_FILTER]})"
            if _ENV_FILTER in os.environ
            else ""
        )
    )


def _schemes(backend: Backend) -> tuple[str, ...]:
    """The URL schemes a backend loads (its optional `schemes`); none: it loads files."""
    return tuple(getattr(backend, "schemes", ()) or ())


def _loads(backend: Backend, scheme: str | None) -> bool:
    """Whether a backend loads a location of this URL scheme (None: a file path)."""
    schemes = _schemes(backend)
    return scheme in schemes if scheme else not schemes


def default_backend(scheme: str | None = None) -> Backend:
    """The available backend with the highest priority (ties broken by name) for a model
    file or, given a URL scheme, among the backends that load that scheme."""
    found, broken = _registry.snapshot()
    found = [backend for backend in found if _loads(backend, scheme)]
    if scheme and not found:
        limit = os.environ.get(_ENV_FILTER)
        raise NoBackendAvailable(
            f"no installed backend loads {scheme}:// locations"
            + (f" ({_ENV_FILTER}={limit} limits them)" if limit is not None else "")
        )
    statuses = {backend.name: _status(backend) for backend in found}
    for status in _ranked(list(statuses.values())):
        if status.available:
            return next(backend for backend in found if backend.name == status.name)
    every = _ranked(list(statuses.values()) + broken)
    listing = "\n".join(f"  - {_describe(status)}" for status in every) or "  (none registered)"
    raise NoBackendAvailable(
        "no inference backend is available here; each says why and what to do "
        "(`inference backends` shows the same):\n" + listing
    )


def _resolve(name: str, scheme: str | None, shown: str) -> Backend:
    """The backend to load a location of `scheme` (None: a file), `shown` in messages."""
    if name in ("", "auto"):
        return default_backend(scheme)
    backend = get_backend(name)
    if not _loads(backend, scheme):
        schemes = _schemes(backend)
        takes = " or ".join(f"{s}://" for s in schemes) + " URLs" if schemes else "model files"
        raise InvalidValue(
            "backend",
            f"backend {name!r} loads {takes}, not {shown!r}: use backend='auto', which "
            "picks a backend for what it is given",
        )
    status = _status(backend)
    if not status.available:
        raise BackendUnavailable(
            f"backend {name!r} is unavailable: "
            + "; ".join(status.reasons or ("no reason given",)),
            status.reasons,
        )
    return backend


def choose_backend(path: str | os.PathLike[str], backend: str = "auto") -> Backend:
    """The backend `load(path, backend)` would use, checked to be available; an
    `hf://` name counts as the file it stands for."""
    location = os.fspath(path)
    scheme = None if hub.is_hub_name(location) else url_scheme(location)
    return _resolve(backend, scheme, redacted(location))


def load(
    path: str | os.PathLike[str],
    backend: str = "auto",
    config: LoadConfig | None = None,
    **load_options: Any,
) -> TextModel:
    """Load a model with the named backend, or the best available one for "auto".

    Options are `LoadConfig` fields as keywords (`context_len=4096`); an
    unknown one is a `TypeError` listing the known ones. `hf://OWNER/REPO/FILE.gguf`
    is fetched into the Hugging Face cache first (see `inference_core.hub`), with the
    projector beside it (`hub.projector`) unless `mmproj` names another or is "", and so
    is a `draft_model` so named.
    """
    load_config = build_config(LoadConfig, config, load_options)
    name = backend if backend not in ("", "auto") else load_config.backend or "auto"
    location = os.fspath(path)
    chosen = choose_backend(location, name)
    # fetched once the backend is known: no download in vain
    location, mmproj = hub.resolve(location, load_config.mmproj)
    draft = hub.fetched(load_config.draft_model)
    load_config = attrs.evolve(load_config, backend=chosen.name, mmproj=mmproj, draft_model=draft)
    logger.debug("loading %s with backend %r", redacted(location), chosen.name)
    model = chosen.load_model(location, load_config)
    if hasattr(model, "agenerate"):
        return model
    from .aio import AsyncBridge  # asyncio is a fifth of our import time: on use

    return cast(TextModel, AsyncBridge(model))  # a sync-only backend: asyncio through threads


def _close_when_loaded(future: asyncio.Future[TextModel]) -> None:  # see aload
    if not future.cancelled() and future.exception() is None:
        future.result().close()


async def aload(
    path: str | os.PathLike[str],
    backend: str = "auto",
    config: LoadConfig | None = None,
    **load_options: Any,
) -> TextModel:
    """`inference_core.load`, on a worker thread: the loop runs on while the server starts.

    Cancelled while loading, the model is closed as soon as its load returns, so no
    server is left behind.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    loading = loop.run_in_executor(
        None, functools.partial(load, path, backend, config, **load_options)
    )
    try:
        return await asyncio.shield(loading)
    except asyncio.CancelledError:
        loading.add_done_callback(_close_when_loaded)
        raise


def inspect_model(path: str | os.PathLike[str]) -> ModelInfo:
    """A model file's metadata, read by the first plugin that understands it; no server starts.

    Raises `InvalidModelFile` when the file is missing, not a regular file (a FIFO, a
    symlink loop), broken, or of a kind no installed plugin understands. An hf:// name
    is looked up in the cache only.
    """
    name = os.fspath(path)
    if hub.is_hub_name(name):
        name = hub.fetch(name, local_only=True)
    check_regular(name)  # before any plugin opens it: a FIFO would block the open
    for plugin, function in _registry.implementations("inspect_model"):
        try:
            info = function(path=name)
        except InvalidModelFile:
            raise
        except Exception as error:  # one plugin's bug must not hide what the others can read
            logger.warning("plugin %r failed in inspect_model(%r): %r", plugin, name, error)
            continue
        if info is not None:
            return info  # type: ignore[no-any-return]
    raise InvalidModelFile(
        name, "is not a model file any installed plugin understands (is it a GGUF file?)"
    )


def register_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Let every plugin add its CLI subcommands; one that raises is logged and left out."""
    for plugin, function in _registry.implementations("register_commands"):
        before = set(subparsers.choices)
        try:
            function(subparsers=subparsers)
        except Exception as error:
            logger.warning("plugin %r failed to add its commands: %r", plugin, error)
            _drop_commands(subparsers, set(subparsers.choices) - before)


def _drop_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], names: set[str]
) -> None:
    """Remove what a failed plugin half-added, so the help never lists a broken command."""
    for name in names:
        subparsers.choices.pop(name, None)
    subparsers._choices_actions = [
        action for action in subparsers._choices_actions if action.dest not in names
    ]


def register(backend: Backend) -> None:
    """Add (or replace) a backend in this process, e.g. from a test or an application."""
    _registry.register(backend)


def unregister(name: str) -> None:
    """Remove a backend (or a broken plugin's entry) by name."""
    _registry.unregister(name)


def reset() -> None:
    """Forget every backend; the next use discovers plugins again (tests, reloads)."""
    _registry.reset()
