"""The hook a backend plugin implements.

A plugin is a module (or object) named by an entry point in the group
`inference_core.backends`::

    # pyproject.toml of the plugin
    [project.entry-points."inference_core.backends"]
    mybackend = "my_package.plugin"

    # my_package/plugin.py
    import inference_core

    @inference_core.hookimpl
    def register_backends(register):
        register(MyBackend())
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .protocols import Backend

__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "hookimpl", "hookspec", "register_backends"]

PROJECT_NAME = "inference_core"
ENTRY_POINT_GROUP = "inference_core.backends"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Call `register(backend)` once for each backend this plugin offers here.

    Offer nothing (return without calling) on platforms the plugin does not
    support; report a backend that is installed but unusable through its
    `status()` rather than by not registering it.
    """
