"""The asyncio API against the real llama-server, and for backends that are sync only."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import inference_core as ic
from inference_core.aio import AsyncBridge
from inference_core.testing import FakeBackend
from inference_rocm.backends import LlamaCppBackend
from inference_rocm.keeper import KeptServer
from inference_rocm.model import LlamaServerModel

from .procs import wait_gone

LONG = "Count from one to a thousand: 1, 2, 3, 4, 5, 6,"  # greedy SmolLM2 keeps going
HANG = 60.0  # a bound on a load and a close that only a hang reaches


@pytest.fixture(scope="module")
def one_slot(smollm2_path: str) -> Iterator[ic.TextModel]:
    with ic.load(smollm2_path, backend="llama_cpp", context_len=8192, parallel_slots=1) as model:
        yield model


@pytest.mark.server
def test_a_cancelled_task_frees_the_only_slot_at_once(one_slot: ic.TextModel) -> None:
    async def run() -> list[ic.Token]:
        stream = one_slot.agenerate(LONG, max_tokens=8000)
        first = asyncio.Event()

        async def read() -> None:
            async for _ in stream:
                first.set()

        task = asyncio.create_task(read())
        await asyncio.wait_for(first.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Were the slot still busy, this would wait for 8,000 tokens: minutes, far past 30 s.
        return [t async for t in one_slot.agenerate("Hi", max_tokens=3, timeout=30)]

    assert len(asyncio.run(run())) == 3


@pytest.mark.server
def test_a_loop_left_with_break_frees_the_only_slot(one_slot: ic.TextModel) -> None:
    async def run() -> list[ic.Token]:
        async for _ in one_slot.agenerate(LONG, max_tokens=8000):
            break  # no aclose(): the stream is garbage once the loop is left
        # Were the slot still busy, this would wait for 8,000 tokens: minutes, far past 30 s.
        return [t async for t in one_slot.agenerate("Hi", max_tokens=3, timeout=30)]

    assert len(asyncio.run(run())) == 3


@pytest.mark.server
def test_aload_serves_and_never_blocks_the_loop(smollm2_path: str) -> None:
    async def run() -> tuple[int, str]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        model = await ic.aload(smollm2_path, backend="llama_cpp", context_len=512)
        ticker.cancel()
        with model:
            assert isinstance(model, LlamaServerModel)
            return ticks, await model.agenerate("The capital of France is", max_tokens=4).text()

    ticks, text = asyncio.run(run())
    assert ticks > 0, "the loop did not run while the server started"
    assert text.strip()


class KeepingBackend:
    """The llama_cpp backend, which keeps every model it loads: a model aload drops is
    then stopped by aload itself, not by the garbage collector (as a third party's
    model without a __del__ never would be)."""

    name, priority = "keeping", 0

    def __init__(self) -> None:
        self.inner = LlamaCppBackend()
        self.loading = threading.Event()
        self.loaded: list[LlamaServerModel[KeptServer]] = []

    def available(self) -> bool:
        return True

    def status(self) -> ic.BackendStatus:
        return ic.BackendStatus(self.name, self.priority, True)

    def load_model(self, path: str, config: ic.LoadConfig) -> LlamaServerModel[KeptServer]:
        self.loading.set()
        model = self.inner.load_model(path, config)
        self.loaded.append(model)
        return model

    def stopped(self) -> bool:
        """Whether a model was loaded and its server is gone."""
        return (
            bool(self.loaded)
            and self.loaded[0].server.pid is not None
            and (wait_gone(self.loaded[0].server.pid, 0))
        )


@pytest.mark.server
def test_an_aload_cancelled_mid_way_closes_its_model_once_loaded(smollm2_path: str) -> None:
    backend = KeepingBackend()

    async def run() -> None:
        loading = asyncio.create_task(ic.aload(smollm2_path, backend="keeping", context_len=512))
        while not backend.loading.is_set():  # the load is under way on its worker thread
            await asyncio.sleep(0.01)
        loading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loading
        deadline = time.monotonic() + HANG
        while not backend.stopped() and time.monotonic() < deadline:  # the loop runs on
            await asyncio.sleep(0.05)

    ic.register(backend)
    try:
        asyncio.run(run())
        assert backend.stopped(), "the server of a cancelled load lives on"
        with pytest.raises(ic.ModelClosed):
            backend.loaded[0].generate("Hi")
    finally:
        ic.unregister("keeping")
        for model in backend.loaded:  # whatever the outcome, no server is left behind
            model.close()


class SyncOnlyModel:
    """A third party's model written against the sync protocol alone."""

    def __init__(self) -> None:
        self.inner = FakeBackend().load_model("fake", ic.LoadConfig())
        self.model_type, self.info = "sync-only", self.inner.info

    def __getattr__(self, name: str) -> Any:
        if name.startswith("a"):  # none of the async methods
            raise AttributeError(name)
        return getattr(self.inner, name)


class SyncOnlyBackend:
    name, priority = "sync-only", 0

    def available(self) -> bool:
        return True

    def status(self) -> ic.BackendStatus:
        return ic.BackendStatus(self.name, self.priority, True)

    def load_model(self, path: str, config: ic.LoadConfig) -> Any:
        return SyncOnlyModel()


def test_a_sync_only_backend_gets_the_async_methods_from_the_registry() -> None:
    ic.register(SyncOnlyBackend())
    try:
        model = ic.load("fake.gguf", backend="sync-only")
    finally:
        ic.unregister("sync-only")
    assert isinstance(model, AsyncBridge) and isinstance(model, ic.TextModel)

    async def run() -> tuple[list[ic.Token], list[ic.BatchResult]]:
        tokens = [t async for t in model.agenerate("one two three", max_tokens=5)]
        return tokens, await model.abatch_generate(["a b", "c d"], max_tokens=2)

    tokens, batch = asyncio.run(run())
    assert tokens == list(model.generate("one two three", max_tokens=5))
    assert [result.text for result in batch] == ["a b", "c d"]
    with model:
        pass
    assert model.closed
