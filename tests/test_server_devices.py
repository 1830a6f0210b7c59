"""The devices a llama-server lists, and how the `llama_cpp` backend plans for them.

Listings of real AMD cards are fakes in the shape the pinned build prints (measured with
Mesa's lavapipe: ``Vulkan0: llvmpipe (LLVM 15.0.6, 256 bits) (2048 MiB, 2048 MiB free)``)
with the device names RADV and AMDVLK give; their memory figures are illustrative. A
wrapper answers ``--list-devices`` with them and runs the real llama-server (on the CPU)
for everything else, recording the flags it was given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import inference_core as ic
from inference_rocm import gguf_meta, gpu_choice, server_devices, vram
from inference_rocm.backends import LlamaCppBackend
from inference_rocm.placement import Placement, read_placement
from inference_rocm.server_devices import ServerDevice, parse_listing
from tests.procs import child_argv, make_executable
from tests.test_devices import workstation
from tests.test_rocm_backend import cpu_server_binary

MIB = 1 << 20

DISCRETE = "  Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31) (24560 MiB, 23800 MiB free)"
# An APU's iGPU: RADV counts the memory it shares with the CPU (GTT) as the device's.
IGPU = "  Vulkan0: AMD Radeon 780M (RADV GFX1103_R1) (16384 MiB, 1200 MiB free)"
TWO_CARDS = (
    "  Vulkan0: AMD Radeon RX 7900 XTX (24560 MiB, 23800 MiB free)\n"
    "  Vulkan1: AMD Radeon RX 6800 XT (RADV NAVI21) (16368 MiB, 8000 MiB free)"
)


def listing_build(folder: Path, listing: str) -> Path:
    """A llama-server that lists ``listing`` (from ``listing.txt`` beside it) and otherwise
    runs the real one on the CPU, less the flags only a GPU build takes; each start's
    flags go to ``argv.jsonl``."""
    record, listed = folder / "argv.jsonl", folder / "listing.txt"
    real = cpu_server_binary()
    folder.mkdir(parents=True, exist_ok=True)
    listed.write_text(listing)  # read at each --list-devices: a test may change it
    return make_executable(
        folder / "llama-server",
        "import json, os, sys\n"
        "if '--list-devices' in sys.argv:\n"
        f"    open({str(folder / 'listings')!r}, 'a').write('.')\n"
        f"    print('Available devices:\\n' + open({str(listed)!r}).read())\n"
        "    raise SystemExit(0)\n"
        f"with open({str(record)!r}, 'a') as out:\n"
        "    out.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "args, skip = [], False\n"
        "for arg in sys.argv[1:]:\n"
        "    if skip or arg in ('--device', '--tensor-split'):\n"
        "        skip = not skip\n"
        "        continue\n"
        "    args.append(arg)\n"
        f"os.environ['LD_LIBRARY_PATH'] = {os.path.dirname(real)!r}\n"
        f"os.execv({real!r}, [{real!r}, *args])\n",
    )


def started_with(build: Path) -> list[list[str]]:
    """The flags of each server ``build`` started (not its --version or --help)."""
    lines = (build.parent / "argv.jsonl").read_text().splitlines()
    return [argv for argv in map(json.loads, lines) if "--model" in argv]


def backend_for(build: Path, tmp_path: Path, root: Path | None = None) -> LlamaCppBackend:
    environ = {"LLAMA_SERVER_PATH": str(build), "HOME": str(tmp_path / "home")}
    return LlamaCppBackend(environ, root=root or tmp_path / "no-sysfs")


@pytest.fixture
def cpu_warnings(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], list[str]]:
    """The "runs on the CPU" warnings so far, none said before this test."""
    monkeypatch.setattr(gpu_choice, "_said", set())
    caplog.set_level(logging.WARNING, "inference_rocm.gpu_choice")
    return lambda: [r.getMessage() for r in caplog.records if "runs on the CPU" in r.getMessage()]


def value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


# --- parsing ----------------------------------------------------------------------------


def test_a_discrete_card_is_parsed_with_its_memory_and_driver() -> None:
    (card,) = parse_listing(f"Available devices:\n{DISCRETE}\n")
    assert card == ServerDevice(0, "Vulkan0", "AMD Radeon RX 7900 XTX (RADV NAVI31)",
                                24560 * MIB, 23800 * MIB)  # fmt: skip
    assert card.backend == "Vulkan" and card.driver == "Mesa RADV"
    assert card.describe() == (
        "Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31), 23.2 GiB free of 24.0 GiB, driver Mesa RADV"
    )


def test_two_cards_of_two_drivers_keep_their_order() -> None:
    first, second = parse_listing(TWO_CARDS)
    assert (first.index, first.name, first.driver) == (
        0,
        "Vulkan0",
        "AMDVLK or AMD's own Vulkan driver",
    )
    assert (second.index, second.name, second.driver) == (1, "Vulkan1", "Mesa RADV")
    assert second.vram_free == 8000 * MIB


def test_lavapipe_and_other_backends_name_their_drivers() -> None:
    text = (
        "Available devices:\n"
        "  Vulkan0: llvmpipe (LLVM 15.0.6, 256 bits) (2048 MiB, 2048 MiB free)\n"
        "  ROCm0: AMD Radeon RX 7900 XTX (24560 MiB, 24000 MiB free)\n"
    )
    lavapipe, hip = parse_listing(text)
    assert lavapipe.driver == "Mesa lavapipe (runs on the CPU)"
    assert (hip.name, hip.backend, hip.driver) == ("ROCm0", "ROCm", "ROCm (HIP)")


def test_lines_of_other_shapes_are_skipped_and_free_never_exceeds_total() -> None:
    text = (
        "ggml_vulkan: Found 1 Vulkan devices:\n(none)\n"
        "  Vulkan0: Odd card (100 MiB, 900 MiB free)\n"
        "  Vulkan0: the same name again (100 MiB, 50 MiB free)\n"
        f"  Vulkan1: {'x' * 600} (100 MiB, 50 MiB free)\n"
        "  Vulkan2: no memory figures\n"
    )
    (only,) = parse_listing(text)
    assert (only.name, only.vram_total, only.vram_free) == ("Vulkan0", 100 * MIB, 100 * MIB)


def test_a_listing_is_bounded() -> None:
    many = "\n".join(f"  Vulkan{n}: card (100 MiB, 90 MiB free)" for n in range(200))
    assert len(parse_listing(many)) == 64


@given(st.text(max_size=2000))
def test_any_text_parses_to_devices_or_nothing(text: str) -> None:
    for device in parse_listing(text):
        assert 0 <= device.vram_free <= device.vram_total
        assert device.name.startswith(device.backend)


# --- planning for them ------------------------------------------------------------------


def test_a_model_is_planned_onto_a_discrete_card(smollm2_path: str) -> None:
    header = gguf_meta.read_header(smollm2_path)
    card = parse_listing(DISCRETE)
    assert vram.plan_gpu_layers(header, ic.LoadConfig(context_len=8192), card) == -1


def test_an_igpu_with_little_free_memory_refuses_with_the_figures_or_fits_some(
    smollm2_path: str,
) -> None:
    header = gguf_meta.read_header(smollm2_path)
    igpu = parse_listing(IGPU)
    big = ic.LoadConfig(context_len=8192, parallel_slots=4)
    with pytest.raises(ic.ModelLoadError) as caught:
        vram.plan_gpu_layers(header, big, igpu)
    message = str(caught.value)
    assert "does not fit in GPU memory with all of 31 layers" in message
    assert "KV cache 720 MiB at f16" in message
    assert "the 1.2 GiB free on Vulkan0: AMD Radeon 780M (RADV GFX1103_R1)" in message
    assert "cache_type='q8_0' fits" in message
    some = vram.plan_gpu_layers(header, ic.LoadConfig(context_len=8192, parallel_slots=4,
                                                      gpu_layers="auto"), igpu)  # fmt: skip
    assert 0 < some < 30
    assert f"gpu_layers={some} (or gpu_layers='auto') fits" in message


# --- the backend ------------------------------------------------------------------------


@pytest.mark.server
def test_devices_chooses_by_position_and_splits_by_free_memory(
    tmp_path: Path, smollm2_path: str
) -> None:
    build = listing_build(tmp_path / "two", TWO_CARDS)
    backend = backend_for(build, tmp_path)
    assert [d.name for d in backend.devices()] == ["Vulkan0", "Vulkan1"]
    with backend.load_model(smollm2_path, ic.LoadConfig(context_len=512, devices=(1,))) as one:
        assert isinstance(one.placement, Placement)
    with backend.load_model(smollm2_path, ic.LoadConfig(context_len=512)) as both:
        assert both.generate("Hi", ic.GenerateConfig(max_tokens=2, temperature=0))
    assert (build.parent / "listings").read_text() == "." * 3  # devices(), then once a load
    first, second = started_with(build)
    assert value(first, "--device") == "Vulkan1" and "--tensor-split" not in first
    assert value(first, "--n-gpu-layers") == "999"
    assert "--device" not in second and value(second, "--tensor-split") == "23800,8000"


def test_a_device_the_build_does_not_list_is_named_with_what_it_lists(
    tmp_path: Path, smollm2_path: str
) -> None:
    build = listing_build(tmp_path / "one", DISCRETE)
    with pytest.raises(ic.ModelLoadError) as caught:
        backend_for(build, tmp_path).load_model(smollm2_path, ic.LoadConfig(devices=(0, 2)))
    assert str(caught.value).startswith(f"LoadConfig.devices=(0, 2) names device 2, which {build}")
    assert "it lists: 0 = Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31)" in str(caught.value)
    assert not (build.parent / "argv.jsonl").exists()


def test_a_load_that_does_not_fit_is_refused_before_any_start(
    tmp_path: Path, smollm2_path: str
) -> None:
    build = listing_build(tmp_path / "igpu", IGPU)
    config = ic.LoadConfig(context_len=8192, parallel_slots=4)
    with pytest.raises(ic.ModelLoadError, match="does not fit in GPU memory"):
        backend_for(build, tmp_path).load_model(smollm2_path, config)
    assert not (build.parent / "argv.jsonl").exists()


@pytest.mark.server
def test_auto_that_fits_nothing_says_once_that_the_model_runs_on_the_cpu(
    tmp_path: Path, smollm2_path: str, cpu_warnings: Callable[[], list[str]]
) -> None:
    build = listing_build(
        tmp_path / "full", "  Vulkan0: AMD Radeon 780M (RADV GFX1103_R1) (4096 MiB, 100 MiB free)"
    )
    backend = backend_for(build, tmp_path)
    config = ic.LoadConfig(context_len=512, gpu_layers="auto")
    for _ in range(2):
        backend.load_model(smollm2_path, config).close()
    assert cpu_warnings() == [
        f"{smollm2_path} runs on the CPU: gpu_layers='auto' found no layer that fits in the "
        "memory free on Vulkan0: AMD Radeon 780M (RADV GFX1103_R1), 100 MiB free of 4.0 GiB, "
        "driver Mesa RADV"
    ]
    assert [value(argv, "--n-gpu-layers") for argv in started_with(build)] == ["0", "0"]


@pytest.mark.server
def test_an_amd_gpu_rocm_cannot_use_is_spoken_of_in_status_and_at_a_cpu_load(
    tmp_path: Path, smollm2_path: str, cpu_warnings: Callable[[], list[str]]
) -> None:
    root = tmp_path / "machine"
    workstation(root)  # no /dev/kfd: the amdgpu driver is not loaded, so no ROCm
    cpu_only = listing_build(tmp_path / "cpu", "")
    details = backend_for(cpu_only, tmp_path, root).status().details
    (note,) = [line for line in details if line.startswith("AMD GPU (")]
    assert "GPU 0: gfx1100 AMD Radeon RX 7900 XTX / 7900 XT" in note
    assert "rocm cannot use it (no " in note and "amdgpu kernel driver is not loaded" in note
    assert "this llama-server lists no AMD Vulkan device (its --list-devices lists none)" in note
    assert note.endswith("so models run on the CPU: " + gpu_choice.VULKAN_ADVICE)
    backend_for(cpu_only, tmp_path, root).load_model(smollm2_path, ic.LoadConfig()).close()
    (said,) = cpu_warnings()
    assert (
        "an AMD GPU is present (GPU 0: gfx1100" in said
        and f"but {cpu_only} lists no GPU device" in said
    )

    vulkan = listing_build(tmp_path / "vulkan", DISCRETE)
    details = backend_for(vulkan, tmp_path, root).status().details
    (note,) = [line for line in details if line.startswith("AMD GPU (")]
    assert note.endswith("llama_cpp uses it through Vulkan")
    assert "device Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31), 23.2 GiB free" in " ".join(
        details
    )


@pytest.mark.server
def test_a_machine_without_gpus_is_as_before(tmp_path: Path, smollm2_path: str) -> None:
    """The default test run has no Vulkan device: nothing is listed, nothing planned,
    every layer on the CPU, and the server's flags are those of a CPU load."""
    backend = LlamaCppBackend(root=tmp_path)
    assert backend.devices() == ()
    with backend.load_model(smollm2_path, ic.LoadConfig(context_len=512)) as model:
        assert model.placement == Placement((("CPU", 31),), 31)


@pytest.mark.server
def test_a_build_that_lists_a_gpu_is_preferred_over_a_newer_cpu_only_one(
    tmp_path: Path, smollm2_path: str
) -> None:
    cache = tmp_path / "cache"
    builds = {}
    for name, listing, built in (("cpu", "", "2026-02-01"), ("vulkan", DISCRETE, "2026-01-01")):
        folder = cache / "inference-core" / "builds" / f"0.3.36-{name}-1"
        builds[name] = listing_build(folder / "bin", listing)
        (folder / "manifest.json").write_text(json.dumps({"backend": name, "built": built}))
    backend = LlamaCppBackend({"XDG_CACHE_HOME": str(cache), "PATH": ""}, root=tmp_path)
    assert (
        backend.status()
        .details[0]
        .startswith(f"llama-server: {builds['vulkan']} (from cached vulkan build")
    )
    backend.load_model(smollm2_path, ic.LoadConfig(context_len=512)).close()
    backend.load_model(smollm2_path, ic.LoadConfig(context_len=512, gpu_layers=0)).close()
    assert len(started_with(builds["vulkan"])) == 1  # the GPU wanted
    assert len(started_with(builds["cpu"])) == 1  # gpu_layers=0: the newest build, as before


# --- the placement, from the server's log -----------------------------------------------

# Lines of the pinned build at -lv 4, SmolLM2 with -ngl 20 on lavapipe.
PARTLY = """\
0.00.345.562 I load_tensors: offloading output layer to GPU
0.00.345.579 I load_tensors: offloading 19 repeating layers to GPU
0.00.345.580 I load_tensors: offloaded 20/31 layers to GPU
0.00.345.587 I load_tensors:   CPU_Mapped model buffer size =    92.10 MiB
0.00.345.588 I load_tensors:      Vulkan0 model buffer size =    68.85 MiB
0.00.393.407 I llama_context: Vulkan_Host  output buffer size =     0.75 MiB
0.00.393.502 I llama_kv_cache:        CPU KV buffer size =     4.12 MiB
0.00.395.894 I llama_kv_cache:    Vulkan0 KV buffer size =     7.12 MiB
"""


def test_a_partial_offload_is_read_from_the_log() -> None:
    placement = read_placement(PARTLY)
    assert placement == Placement((("CPU", 11), ("Vulkan0", 20)), 31)
    assert placement.gpu_layers == 20 and placement.on("Vulkan0") == 20
    assert placement.describe() == "CPU 11, Vulkan0 20 of 31 layers"


def test_two_gpus_share_the_offloaded_layers_as_their_kv_caches_do() -> None:
    log = (
        "I load_tensors: offloaded 31/31 layers to GPU\n"
        "I load_tensors:      Vulkan0 model buffer size =    60.00 MiB\n"
        "I load_tensors:      Vulkan1 model buffer size =    30.00 MiB\n"
        "I llama_kv_cache:    Vulkan0 KV buffer size =    60.00 MiB\n"
        "I llama_kv_cache:    Vulkan1 KV buffer size =    30.00 MiB\n"
    )
    assert read_placement(log) == Placement((("Vulkan0", 21), ("Vulkan1", 10)), 31)


def kv_log(counts: list[int], total: int, per_layer: float = 1.5) -> str:
    """A load's log lines for GPUs holding ``counts`` repeating layers each."""
    lines = [f"I load_tensors: offloaded {sum(counts)}/{total} layers to GPU",
             "I load_tensors:   CPU_Mapped model buffer size =    92.10 MiB"]  # fmt: skip
    lines += [f"I llama_kv_cache:    ROCm{n} KV buffer size = {c * per_layer:.2f} MiB"
              for n, c in enumerate(counts) if c]  # fmt: skip
    return "\n".join(lines)


def test_three_gpus_and_the_cpu() -> None:
    log = kv_log([7, 9, 4], 31)
    assert read_placement(log) == Placement(
        (("CPU", 11), ("ROCm0", 7), ("ROCm1", 9), ("ROCm2", 4)), 31
    )


@given(st.lists(st.integers(0, 40), min_size=1, max_size=6), st.integers(0, 20))
def test_each_gpu_gets_the_layers_its_kv_cache_holds(counts: list[int], on_cpu: int) -> None:
    total = sum(counts) + on_cpu
    placement = read_placement(kv_log(counts, total))
    assert placement is not None
    held = [(f"ROCm{n}", c) for n, c in enumerate(counts) if c]
    assert placement == Placement(((("CPU", on_cpu),) if on_cpu else ()) + tuple(held), total)


def test_a_cpu_build_that_offloads_to_nothing_is_all_cpu_and_silence_is_none() -> None:
    log = (
        "I load_tensors: offloaded 31/31 layers to GPU\n"
        "I load_tensors:   CPU_Mapped model buffer size =    92.10 MiB\n"
        "I llama_kv_cache:        CPU KV buffer size =    11.25 MiB\n"
    )
    assert read_placement(log) == Placement((("CPU", 31),), 31)
    assert read_placement("I srv  llama_server: model loaded\n") is None
    # offloaded, to buffers of names this reading does not know (an older build): no guess
    assert read_placement("I load_tensors: offloaded 31/31 layers to GPU\n") is None


@given(st.text(max_size=3000))
def test_any_log_gives_a_placement_that_adds_up_or_none(text: str) -> None:
    placement = read_placement(text)
    if placement is not None:
        assert sum(count for _, count in placement.layers) == placement.total


@pytest.mark.server
def test_the_users_own_verbosity_is_kept_and_the_placement_then_unknown(
    tmp_path: Path, smollm2_path: str
) -> None:
    config = ic.LoadConfig(context_len=512, extra_args=("-lv", "3"))
    with LlamaCppBackend(root=tmp_path).load_model(smollm2_path, config) as model:
        assert model.placement is None
        argv = child_argv(model.server.pid)
    assert argv.count("-lv") == 1 and argv[argv.index("-lv") + 1] == "3"


@pytest.mark.server
def test_each_load_is_planned_with_the_memory_free_now(tmp_path: Path, smollm2_path: str) -> None:
    """Another program (or model) took most of the card between two loads."""
    build = listing_build(tmp_path / "card", DISCRETE)
    backend = backend_for(build, tmp_path)
    config = ic.LoadConfig(context_len=8192, parallel_slots=4)
    backend.load_model(smollm2_path, config).close()
    (build.parent / "listing.txt").write_text(
        "  Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31) (24560 MiB, 600 MiB free)"
    )
    with pytest.raises(ic.ModelLoadError, match="the 600 MiB free on Vulkan0"):
        backend.load_model(smollm2_path, config)
    assert len(started_with(build)) == 1


@pytest.mark.server
def test_gpu_layers_0_beside_an_amd_gpu_is_said_to_be_asked_for(
    tmp_path: Path, smollm2_path: str, cpu_warnings: Callable[[], list[str]]
) -> None:
    root = tmp_path / "machine"
    workstation(root)
    build = listing_build(tmp_path / "cpu", "")
    backend_for(build, tmp_path, root).load_model(smollm2_path, ic.LoadConfig(gpu_layers=0)).close()
    (said,) = cpu_warnings()
    assert "runs on the CPU: gpu_layers=0 keeps it off GPU 0: gfx1100" in said
    assert "lists no GPU device" not in said


def test_a_vulkan_device_of_another_vendor_is_not_said_to_run_the_amd_gpu(tmp_path: Path) -> None:
    root = tmp_path / "machine"
    workstation(root)
    nvidia = "  Vulkan0: NVIDIA GeForce RTX 3060 (12288 MiB, 11000 MiB free)"
    details = backend_for(listing_build(tmp_path / "nv", nvidia), tmp_path, root).status().details
    (note,) = [line for line in details if line.startswith("AMD GPU (")]
    assert "lists no AMD Vulkan device (it lists Vulkan0 (NVIDIA GeForce RTX 3060))" in note


def test_a_listing_that_fails_is_named_in_status(tmp_path: Path) -> None:
    failing = make_executable(tmp_path / "bin" / "llama-server", "raise SystemExit(3)\n")
    details = backend_for(failing, tmp_path).status().details
    assert details[2] == (
        "devices: none listed, so it runs on the CPU (its --list-devices exited with status 3)"
    )


def test_a_binary_that_hangs_or_floods_is_cut_off(tmp_path: Path) -> None:
    """A wrapper that leaves a grandchild holding the output open, and one that prints
    without end: each run ends, its whole session with it."""
    hangs = make_executable(
        tmp_path / "hangs" / "llama-server",
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('Available devices:', flush=True)\n"
        "time.sleep(600)\n",
    )
    listing = server_devices.list_devices(str(hangs), {}, timeout=1.0)
    assert listing.devices == () and listing.problem == "did not finish within 1 s"
    floods = make_executable(
        tmp_path / "floods" / "llama-server",
        "import sys\nwhile True:\n    sys.stdout.write('  Vulkan0: x (1 MiB, 1 MiB free)\\n')\n",
    )
    listing = server_devices.list_devices(str(floods), {})
    assert listing.problem == "printed more than 64 KiB" and len(listing.devices) == 1
    assert server_devices.run_flag(str(floods), "--help", {}).count("\n") < 64 * 1024 // 30


@pytest.mark.server
def test_over_rpc_workers_the_split_is_left_to_llama_server(
    tmp_path: Path, smollm2_path: str
) -> None:
    build = listing_build(tmp_path / "two", TWO_CARDS)
    with socket.create_server(("127.0.0.1", 0)) as worker:  # answers, then hangs up
        address = f"127.0.0.1:{worker.getsockname()[1]}"
        threading.Thread(target=hang_up_on_each, args=(worker,), daemon=True).start()
        config = ic.LoadConfig(context_len=512, rpc_servers=(address,), load_timeout=30)
        with pytest.raises(ic.InferenceError):
            backend_for(build, tmp_path).load_model(smollm2_path, config)
    argv = started_with(build)[0]
    assert value(argv, "--rpc") == address and "--tensor-split" not in argv


def hang_up_on_each(listener: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            listener.accept()[0].close()
