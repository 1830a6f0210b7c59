"""The test projector works with the real llama-server and SmolLM2: the server loads it,
says it sees images, and reads an image as the projector's count of prompt tokens.

The library cannot send images yet, so these tests ask a server started by hand, over
its own OpenAI-style chat endpoint."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference_core.testing.pictures import png
from tests.external import KEY, ExternalServer
from tests.projector import IMAGE_TOKENS, write_projector

QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def projector(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_projector(tmp_path_factory.mktemp("projector") / "mmproj.gguf", smollm2_path)


@pytest.fixture(scope="module")
def vision_server(
    llama_server_binary: str,
    smollm2_path: str,
    projector: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ExternalServer]:
    log = tmp_path_factory.mktemp("vision") / "server.log"
    server = ExternalServer(
        llama_server_binary, smollm2_path, KEY, "--mmproj", str(projector), "--ctx-size", "2048",
        log=log,
    )  # fmt: skip
    yield server
    server.stop()


def _ask(server: ExternalServer, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def _base64(image: bytes) -> str:
    return base64.b64encode(image).decode()


def _image_part(image: bytes) -> dict[str, Any]:
    url = "data:image/png;base64," + _base64(image)
    return {"type": "image_url", "image_url": {"url": url}}


def _chat(server: ExternalServer, *images: bytes) -> dict[str, Any]:
    """A greedy chat of one question with `images` after it."""
    content = [{"type": "text", "text": QUESTION}, *map(_image_part, images)]
    answer: dict[str, Any] = _ask(
        server,
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 4,
            "temperature": 0,
        },
    )
    return answer


def _ids(server: ExternalServer, image: bytes) -> list[int]:
    """The greedy ids after `image` and a few words, through /completion's own image field,
    each prompt read afresh: a prefix restored from the prompt cache is computed in other
    batches, which can turn a later greedy pick (measured after 11 tokens, text alike)."""
    marker = _ask(server, "/props")["media_marker"]
    prompt = {"prompt_string": marker + "This image shows", "multimodal_data": [_base64(image)]}
    answer = _ask(
        server,
        "/completion",
        {
            "prompt": prompt,
            "n_predict": 8,
            "temperature": 0,
            "return_tokens": True,
            "cache_prompt": False,
        },
    )
    ids: list[int] = answer["tokens"]
    return ids


def _gradient(width: int, height: int) -> bytes:
    return png(width, height, lambda x, y: (255 * x // width, 255 * y // height, 96))


def test_the_projector_is_the_same_file_each_time(smollm2_path: str, tmp_path: Path) -> None:
    first = write_projector(tmp_path / "first.gguf", smollm2_path)
    second = write_projector(tmp_path / "second.gguf", smollm2_path)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.server
def test_the_server_loads_the_projector_and_sees_images(vision_server: ExternalServer) -> None:
    assert _ask(vision_server, "/props")["modalities"]["vision"] is True


@pytest.mark.server
def test_an_image_takes_the_projectors_count_of_prompt_tokens(
    vision_server: ExternalServer,
) -> None:
    without = _chat(vision_server)["usage"]
    with_image = _chat(vision_server, _gradient(20, 12))["usage"]
    assert with_image["prompt_tokens"] - without["prompt_tokens"] == IMAGE_TOKENS
    assert with_image["completion_tokens"] > 0


@pytest.mark.server
def test_two_images_take_twice_the_count(vision_server: ExternalServer) -> None:
    without = _chat(vision_server)["usage"]
    with_two = _chat(vision_server, _gradient(20, 12), _gradient(7, 30))["usage"]
    assert with_two["prompt_tokens"] - without["prompt_tokens"] == 2 * IMAGE_TOKENS


@pytest.mark.server
def test_what_the_model_says_follows_the_image(vision_server: ExternalServer) -> None:
    first = _ids(vision_server, _gradient(20, 12))
    assert len(first) == 8
    assert _ids(vision_server, png(7, 30, lambda x, y: (0, 40, 255 - 8 * y))) != first
    assert _ids(vision_server, _gradient(20, 12)) == first
