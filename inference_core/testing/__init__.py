"""Test helpers shipped with the library: the conformance kit and FakeBackend.

`BackendContract` and `TextModelContract` need pytest; importing this package
without it gives only `FakeBackend`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .fake import FakeBackend, FakeModel, fake_token

if TYPE_CHECKING:
    from .contracts import BackendContract, TextModelContract

__all__ = ["BackendContract", "FakeBackend", "FakeModel", "TextModelContract", "fake_token"]


def __getattr__(name: str) -> object:
    if name in ("BackendContract", "TextModelContract"):
        from . import contracts

        return getattr(contracts, name)
    raise AttributeError(name)
