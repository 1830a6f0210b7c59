"""The README's example backend passes the conformance kit, like any plugin would."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import inference_core as ic
from inference_core.testing import BackendContract, TextModelContract

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from minimal_backend import ShoutBackend


class TestShoutBackend(BackendContract):
    @pytest.fixture
    def backend(self) -> ic.Backend:
        return ShoutBackend()

    @pytest.fixture
    def model_path(self) -> str:
        return "anything"


class TestShoutModel(TextModelContract):
    supports_seed = False  # it never samples

    @pytest.fixture
    def model(self) -> ic.TextModel:
        # A token a millisecond: a reader waits for each, and can cancel mid-answer.
        return ShoutBackend(delay=0.001).load_model("anything", ic.LoadConfig())

    @pytest.fixture
    def waiting_model(self) -> ic.TextModel:
        return ShoutBackend(delay=3600.0).load_model("anything", ic.LoadConfig())
