"""Session-wide real parts: the pinned llama-server and the SmolLM2 model, in an
environment of the tests' own.

Tests that need them fail (never skip) when they are missing: tox and .ci/run
install both, so a missing part is a broken setup, not an optional feature.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.integration.pytest import SybilItem
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

import inference_core as ic
from inference_core.demo import demo_model_path
from inference_rocm.server import LlamaServer
from tests.external import KEY, ExternalServer

# They import what only their own tox environment installs (the frameworks; MkDocs and
# Playwright): a run that does not select their marker leaves the files unread (a run
# that does and lacks one fails on the import, never skips). A page of the documentation
# here has its examples carry the marker.
MARKED_FILES = {
    **dict.fromkeys(
        ("test_langchain.py", "test_llama_index.py", "test_litellm.py", "test_serve.py"),
        "frameworks",
    ),
    "frameworks.md": "frameworks",
    "test_docs_site.py": "docs",
}


# Every ```python block of the README and the documentation runs, in order, each page's
# blocks sharing one namespace; `<!-- skip: next "why" -->` leaves one out, saying why.
pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md", "docs/*.md", "docs/*/*.md"],
).pytest()


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A documentation example drives the real server (as the `server` marker says), and
    one on a marked page carries that page's marker."""
    for item in items:
        if isinstance(item, SybilItem):
            item.add_marker(pytest.mark.server)
            marker = MARKED_FILES.get(item.path.name)
            if marker is not None:
                item.add_marker(marker)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    marker = MARKED_FILES.get(collection_path.name)
    if marker is None:
        return None
    selected = config.option.markexpr or ""
    return marker not in selected.replace(f"not {marker}", "")


@pytest.fixture(scope="session", autouse=True)
def hermetic_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Whatever this machine holds (a cached build, crash verdicts, a llama-server on
    PATH, Mesa's CPU Vulkan device exposed by GGML_VK_VISIBLE_DEVICES), the tests see an
    empty cache, a PATH of the interpreter's and the system's own folders, and lavapipe
    hidden (the Vulkan tests expose it to their own servers; a real GPU with a Vulkan
    driver stays visible). A binary named by LLAMA_SERVER_PATH is still honoured."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        patch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.defpath]))
        patch.delenv("GGML_VK_VISIBLE_DEVICES", raising=False)
        yield


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:  # a binary that is not there starts nothing
        return False


@pytest.fixture(autouse=True)
def real_servers_are_marked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test that starts a real llama-server (not a fake script) carries the `server`
    marker, so that `-m "not server"` leaves out every one of them."""
    real: list[str] = []
    spawn = LlamaServer._spawn

    def recording(server: LlamaServer) -> None:
        if _is_elf(server.options.binary):  # now: a build's binary moves once it is proven
            real.append(server.options.binary)
        spawn(server)

    monkeypatch.setattr(LlamaServer, "_spawn", recording)
    yield
    if real and request.node.get_closest_marker("server") is None:
        pytest.fail(f"starts the real llama-server ({real[0]}) but is not marked `server`")


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    try:
        return demo_model_path()
    except ic.InvalidModelFile as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def llama_server_binary() -> str:
    from inference_rocm.binaries import find_binary

    lookup = find_binary()
    if lookup.path is None:
        pytest.fail("; ".join(lookup.problems))
    return lookup.path


@pytest.fixture(scope="session")
def shared_model(smollm2_path: str, llama_server_binary: str) -> Iterator[ic.TextModel]:
    """One SmolLM2 server for the whole session: 4 slots, a 2048-token context."""
    with ic.load(smollm2_path, backend="llama_cpp", context_len=2048, parallel_slots=4) as model:
        yield model


@pytest.fixture(scope="session")
def external_server(
    llama_server_binary: str, smollm2_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExternalServer]:
    """Someone else's llama-server for the remote backend, started by hand with the key
    `tests.external.KEY`: 4 slots of 2048 tokens, as the shared model has."""
    log = tmp_path_factory.mktemp("external") / "server.log"
    server = ExternalServer(
        llama_server_binary, smollm2_path, KEY, "--ctx-size", "8192", "--parallel", "4", log=log
    )
    yield server
    server.stop()
