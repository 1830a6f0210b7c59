"""The hooks a backend plugin implements: backends, model inspection, CLI commands.

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

import argparse
from collections.abc import Callable

import pluggy

from .protocols import Backend
from .types import ModelInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "hookimpl",
    "hookspec",
    "inspect_model",
    "register_backends",
    "register_commands",
]

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


@hookspec(firstresult=True)
def inspect_model(path: str) -> ModelInfo | None:
    """The `ModelInfo` of a model file read without loading it (`inference info`).

    `path` names an existing file. Return None for a file this plugin does not
    understand, so the next plugin can try; raise `InvalidModelFile` for one it
    understands but finds broken.
    """


@hookspec
def register_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this plugin's subcommands to the `inference` command line.

    Call `subparsers.add_parser(name, help=...)` and give the parser a handler
    with `set_defaults(handler=function)`; the handler receives the parsed
    `argparse.Namespace` and returns the exit status (0 on success). A plugin
    that raises here is logged and left out; the rest of the CLI still works.
    """
