"""`python -m tests.hub_child ACTION NAME`: use an hf:// name in a process of its own.

huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_TOKEN and HF_HUB_OFFLINE once, when
first imported, as it does in a user's program: each environment a test sets up
needs a fresh process. Prints one JSON object: what was loaded, or the error.

ACTION: `load` (through FakeBackend: the path the backend was given, and the projector's),
`load-without-projector` (the same, with mmproj=""), `load-drafted` (the same, the name
its own draft model: the draft's path as the backend got it), `generate`
(the real llama_cpp backend: four greedy tokens), `inspect` (`ic.inspect_model`),
`misnamed` (a backend name that no plugin registers).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import inference_core as ic
from inference_core.testing import FakeBackend, FakeModel


def run(action: str, name: str) -> dict[str, Any]:
    if action == "inspect":
        return {"path": ic.inspect_model(name).path}
    backend = {"generate": "llama_cpp", "misnamed": "no-such-backend"}.get(action, "fake")
    ic.register(FakeBackend())
    mmproj = "" if action == "load-without-projector" else None
    draft = name if action == "load-drafted" else None
    with ic.load(name, backend=backend, context_len=512, mmproj=mmproj, draft_model=draft) as model:
        result: dict[str, Any] = {"path": model.info.path}
        if isinstance(model, FakeModel):
            result["mmproj"] = model.config.mmproj
            result["draft_model"] = model.config.draft_model
        if action == "generate":
            result["text"] = model.generate("The capital of France is", max_tokens=4).text()
    return result


def main() -> None:
    action, name = sys.argv[1:]
    try:
        result = run(action, name)
    except ic.InferenceError as error:
        result = {
            "error": type(error).__name__,
            "kinds": [kind.__name__ for kind in type(error).__mro__],
            "message": str(error),
            "repr": repr(error),
            "files": getattr(error, "files", None),
            "cached": getattr(error, "cached", None),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
