"""Whether a llama-server still generates: what a stopped or cancelled stream must end."""

from __future__ import annotations

import time

import inference_core as ic
from inference_rocm.model import LlamaServerModel


def generating(model: ic.TextModel) -> bool:
    """Whether any slot of the model's llama-server is processing a request."""
    assert isinstance(model, LlamaServerModel)
    slots = model.server.client.request("GET", "/slots")
    return any(slot["is_processing"] for slot in slots)


def wait_until_idle(model: ic.TextModel, within: float) -> None:
    """Return once no slot generates; fail after `within` seconds."""
    end = time.monotonic() + within
    while generating(model):
        assert time.monotonic() < end, f"a slot still generates {within:g} s later"
        time.sleep(0.1)
