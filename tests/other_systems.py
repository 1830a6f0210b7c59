"""The client as it waits on a system other than Linux, where it cannot be run here."""

from __future__ import annotations

import select

import pytest

from inference_rocm import client


def wait_as_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads wait with Python's socket timeout (SO_RCVTIMEO's layout is Linux's own), and
    a pooled connection is checked with select(), as on Windows, which has no poll()."""
    monkeypatch.setattr(client, "_KERNEL_TIMEOUTS", False)
    monkeypatch.delattr(select, "poll")
