"""The packages' import graph, read from the source: no circle, hidden or not.

Imports inside functions count too: a circle broken only by importing late is
still a circle, waiting for the next refactoring to make it bite.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = ("inference_core", "inference_rocm")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, wherever the import statement stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from package import module` imports the module; `from module import name`
            # the module that holds the name.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found.update(target for target in targets if target in known)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    known = {module_name(path) for path in files}
    return {module_name(path): imported_modules(path, known) for path in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_imports_another_in_a_circle() -> None:
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_circle_through_a_late_import() -> None:
    graph = import_graph()
    graph["inference_rocm.binaries"] = {*graph["inference_rocm.binaries"], "inference_rocm.server"}
    assert find_cycle(graph) == [
        "inference_rocm.binaries",
        "inference_rocm.server",
        "inference_rocm.binaries",
    ]


def test_inference_core_never_imports_inference_rocm() -> None:
    for module, targets in import_graph().items():
        if module.startswith("inference_core"):
            assert not any(target.startswith("inference_rocm") for target in targets), module


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("inference_rocm.binaries", {"inference_rocm.server", "inference_rocm.build"}),
        ("inference_rocm.server", {"inference_rocm.build", "inference_rocm.backends"}),
        ("inference_rocm.build", {"inference_rocm.backends", "inference_rocm.server"}),
    ],
)
def test_the_layers_stay_apart(module: str, forbidden: set[str]) -> None:
    assert not import_graph()[module] & forbidden


FRAMEWORKS = ("langchain_core", "langchain", "llama_index", "litellm", "dspy", "llm")


def test_importing_the_packages_tries_to_import_no_framework() -> None:
    """Frameworks are imported by their adapters only: a finder refuses any attempt,
    so this holds whether a framework is installed or not."""
    script = f"""
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FRAMEWORKS!r}:
            raise ImportError("tried to import " + name)
        return None

sys.meta_path.insert(0, Refuse())
import inference_core, inference_core.integrations, inference_core.integrations._shared
import inference_core.cli, inference_rocm, inference_rocm.plugin
inference_core.backends()
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("framework", "adapter", "extra"),
    [
        ("langchain_core", "langchain", "langchain"),
        ("llama_index", "llama_index", "llama-index"),
        ("litellm", "litellm", "litellm"),
    ],
)
def test_an_adapter_without_its_framework_names_the_extra(
    framework: str, adapter: str, extra: str
) -> None:
    """Whether the framework is installed or not: the child hides it."""
    script = f"""
import sys
sys.modules[{framework!r}] = None  # as if not installed
try:
    import inference_core.integrations.{adapter}
except ImportError as error:
    print(error)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f'pip install "inference-core[{extra}]"' in done.stdout
