"""A third-party backend plugin, installed as its own distribution (see its dist-info)."""

from __future__ import annotations

from collections.abc import Callable

import inference_core
from inference_core.testing import FakeModel


class EchoBackend:
    name = "echo"
    priority = 500

    def available(self) -> bool:
        return True

    def status(self) -> inference_core.BackendStatus:
        return inference_core.BackendStatus(self.name, self.priority, True, (), ("echoes",))

    def load_model(self, path: str, config: inference_core.LoadConfig) -> FakeModel:
        return FakeModel(path, config)


@inference_core.hookimpl
def register_backends(register: Callable[[inference_core.Backend], None]) -> None:
    register(EchoBackend())
