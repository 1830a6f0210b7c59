"""The registry, driven through real `importlib.metadata` entry points."""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import inference_core as ic
from inference_core import registry
from inference_core.testing import FakeBackend

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A registry with only the third-party plugins under tests/plugins installed."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.delenv("INFERENCE_BACKENDS", raising=False)
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def only(monkeypatch: pytest.MonkeyPatch, clean_registry: None) -> None:
    """Limit discovery to the test backends, so real ones on this machine stay out."""
    monkeypatch.setenv("INFERENCE_BACKENDS", "echo,broken,fake,low,high,off")


def test_third_party_plugin_is_discovered_from_its_entry_point(only: None) -> None:
    names = [status.name for status in ic.backends()]
    assert "echo" in names
    model = ic.load("anything.gguf", backend="echo")
    assert model.model_type == "fake"
    assert "".join(t.text for t in model.generate("hi there", max_tokens=2)) == "hi there"


def test_auto_picks_the_plugin_by_priority(only: None) -> None:
    ic.register(FakeBackend("low", priority=1))
    assert ic.default_backend().name == "echo"
    assert ic.load("x.gguf").info.path == "x.gguf"


def test_broken_plugin_is_listed_with_its_error_and_does_not_stop_others(only: None) -> None:
    statuses = {status.name: status for status in ic.backends()}
    assert statuses["echo"].available
    broken = statuses["broken"]
    assert not broken.available
    assert "a_module_that_does_not_exist" in broken.reasons[0]


def test_loading_a_broken_plugin_by_name_says_why(only: None) -> None:
    with pytest.raises(ic.BackendUnavailable, match="a_module_that_does_not_exist"):
        ic.load("x.gguf", backend="broken")


def test_environment_filter_limits_what_loads(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_BACKENDS", "broken")
    assert [status.name for status in ic.backends()] == ["broken"]


def test_a_broken_plugin_is_listed_whatever_the_filter_names(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_BACKENDS", "echo")
    statuses = {status.name: status for status in ic.backends()}
    assert sorted(statuses) == ["broken", "echo"]
    assert "a_module_that_does_not_exist" in statuses["broken"].reasons[0]


def test_unknown_backend_is_backend_not_found(only: None) -> None:
    with pytest.raises(ic.BackendNotFound, match=r"'nope'.*echo"):
        ic.load("x.gguf", backend="nope")


def test_unavailable_backend_is_backend_unavailable_with_reasons(only: None) -> None:
    ic.register(FakeBackend("off", available=False, reasons=["the widget is unplugged"]))
    with pytest.raises(ic.BackendUnavailable, match="the widget is unplugged") as caught:
        ic.load("x.gguf", backend="off")
    assert caught.value.reasons == ("the widget is unplugged",)


def test_nothing_available_lists_every_backend_and_why(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_BACKENDS", "off,broken")
    ic.register(FakeBackend("off", available=False, reasons=["the widget is unplugged"]))
    with pytest.raises(ic.NoBackendAvailable) as caught:
        ic.load("x.gguf")
    message = str(caught.value)
    assert "off: the widget is unplugged" in message
    assert "broken: plugin broken_plugin failed to load" in message


def test_ties_in_priority_are_broken_by_name(only: None) -> None:
    ic.unregister("echo")
    ic.register(FakeBackend("high", priority=7))
    ic.register(FakeBackend("fake", priority=7))
    assert ic.default_backend().name == "fake"
    assert [s.name for s in ic.backends()][:2] == ["fake", "high"]


def test_register_replaces_and_unregister_removes(only: None) -> None:
    first, second = FakeBackend("fake"), FakeBackend("fake")
    ic.register(first)
    ic.register(second)
    assert ic.get_backend("fake") is second
    ic.unregister("fake")
    with pytest.raises(ic.BackendNotFound):
        ic.get_backend("fake")
    with pytest.raises(ic.BackendNotFound):
        ic.unregister("fake")


def test_register_rejects_what_is_not_a_backend(only: None) -> None:
    with pytest.raises(TypeError, match="Backend protocol"):
        ic.register(object())  # type: ignore[arg-type]


def test_a_status_that_raises_is_reported_not_fatal(only: None) -> None:
    def broken_status() -> ic.BackendStatus:
        raise ZeroDivisionError("probe failed")

    backend = FakeBackend("fake")
    backend.status = broken_status  # type: ignore[method-assign]
    ic.register(backend)
    status = next(s for s in ic.backends() if s.name == "fake")
    assert not status.available and "ZeroDivisionError" in status.reasons[0]


def test_the_backend_a_load_config_names_loads_unless_the_argument_names_one(
    only: None,
) -> None:
    low = FakeBackend("low", priority=1)  # echo is the default
    ic.register(low)
    config = ic.LoadConfig(backend="low")
    ic.load("x.gguf", config=config)
    assert len(low.loaded) == 1
    ic.load("x.gguf", backend="echo", config=config)
    assert len(low.loaded) == 1


def test_load_options_build_the_load_config(only: None) -> None:
    model = ic.load("x.gguf", backend="echo", context_len=1024, gpu_layers=0)
    assert model.context_len == 1024
    with pytest.raises(TypeError, match="context_len"):
        ic.load("x.gguf", backend="echo", context_length=1024)


def test_discovery_is_thread_safe(only: None) -> None:
    import threading

    registry.reset()
    seen: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: seen.append(sorted(s.name for s in ic.backends())))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and all(names == seen[0] for names in seen)
    assert "echo" in seen[0]


@pytest.mark.parametrize(
    ("system", "machine"), [("linux", "aarch64"), ("darwin", "arm64"), ("win32", "AMD64")]
)
def test_remote_registers_on_every_platform_and_the_local_backends_on_linux_x86_64(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch, system: str, machine: str
) -> None:
    monkeypatch.setattr(sys, "platform", system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    names = {status.name for status in ic.backends()}
    assert "remote" in names and not names & {"rocm", "llama_cpp"}
    assert ic.default_backend("http").name == "remote"  # what load("http://...") picks
