"""Images in chat, through the library, with the real llama-server, SmolLM2 and the tiny
test projector (tests/projector.py): 16 prompt tokens an image, greedy ids that follow
the image, and the typed errors of what cannot be sent."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import inference_core as ic
from inference_core.content import content_text
from inference_core.testing import TextModelContract
from inference_core.testing.pictures import png
from inference_rocm import rendering
from inference_rocm.model import LlamaServerModel

from .external import KEY, ExternalServer
from .jpeg import jpeg
from .projector import IMAGE_TOKENS, write_projector
from .test_cli import assert_one_line_error, cli

pytestmark = pytest.mark.server

RED = png(8, 8, lambda x, y: (220, 30, 30))
BLUE = png(8, 8, lambda x, y: (20, 40, 230))
QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def projector(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_projector(tmp_path_factory.mktemp("projector") / "mmproj.gguf", smollm2_path)


@pytest.fixture(scope="module")
def seeing(smollm2_path: str, projector: Path) -> Iterator[ic.TextModel]:
    with ic.load(
        smollm2_path, backend="llama_cpp", context_len=512, parallel_slots=2, mmproj=projector
    ) as model:
        yield model


def asking(*images: bytes | str | Path) -> list[ic.Message]:
    parts = [{"type": "text", "text": QUESTION}, *(ic.image(i) for i in images)]
    return [ic.Message("user", parts)]


def ids(model: ic.TextModel, messages: list[ic.Message]) -> list[int]:
    stream = model.chat(messages, max_tokens=12)
    found = [token.id for token in stream]
    assert stream.err() is None
    return found


def test_a_model_with_its_projector_sees(seeing: ic.TextModel) -> None:
    assert seeing.capabilities.vision and not seeing.capabilities.audio


def test_each_image_costs_the_projectors_tokens(seeing: ic.TextModel) -> None:
    counts = [seeing.count_tokens(asking(*pictures)) for pictures in [(), (RED,), (RED, BLUE)]]
    assert counts[1] - counts[0] == IMAGE_TOKENS and counts[2] - counts[1] == IMAGE_TOKENS
    for pictures, counted in zip([(), (RED,), (RED, BLUE)], counts, strict=True):
        stream = seeing.chat(asking(*pictures), max_tokens=2)
        stream.text()
        assert stream.metrics is not None and stream.metrics.prompt_tokens == counted


def test_a_chat_with_images_is_not_saved_as_the_last_conversation(
    seeing: ic.TextModel,
) -> None:
    assert isinstance(seeing, ic.SavesSessions)
    seeing.generate("Hello", max_tokens=1).text()  # a conversation of text first
    ids(seeing, asking(RED))
    with pytest.raises(ic.InvalidValue, match="nothing to save yet"):  # not the text's
        seeing.save_session("after-an-image")
    with pytest.raises(ic.UnsupportedOption, match="with images cannot be saved"):
        seeing.save_session("an-image", asking(RED))


def test_the_ids_follow_the_image(seeing: ic.TextModel) -> None:
    red = ids(seeing, asking(RED))
    assert red != ids(seeing, asking(BLUE))
    assert red == ids(seeing, asking(RED))


def grey(x: int, y: int) -> int:
    return (x * 16 + y * 3) % 256


PICTURES = {
    "png": png(16, 16, lambda x, y: (grey(x, y),) * 3),
    "jpeg": jpeg(16, 16, grey),  # the same pixels' source, through a lossy format
}


def servers_own_ids(model: ic.TextModel, messages: list[ic.Message], picture: bytes) -> list[int]:
    """The greedy ids llama-server gives for the chat with `picture`, asked directly."""
    assert isinstance(model, LlamaServerModel)
    client = model.server.client
    text = rendering.render(client, messages)
    body = {
        "prompt": {"prompt_string": text, "multimodal_data": [base64.b64encode(picture).decode()]},
        "n_predict": 8, "temperature": 0, "return_tokens": True, "cache_prompt": False,
    }  # fmt: skip
    answer = client.request("POST", "/completion", body)
    return [int(token) for token in answer["tokens"]]


@pytest.mark.parametrize("kind", PICTURES)
def test_a_path_bytes_and_urls_of_one_file_give_the_servers_own_ids(
    seeing: ic.TextModel, tmp_path: Path, kind: str
) -> None:
    picture = PICTURES[kind]
    path = tmp_path / f"picture.{kind}"
    path.write_bytes(picture)
    data_url = f"data:image/{kind};base64," + base64.b64encode(picture).decode()
    forms: list[bytes | str | Path] = [picture, path, str(path), path.as_uri(), data_url]
    expected = servers_own_ids(seeing, asking(picture), picture)
    for form in forms:
        stream = seeing.chat(asking(form), max_tokens=8)
        assert [token.id for token in stream] == expected, form
    assert ic.image(path)["image_url"]["url"].startswith(f"data:image/{kind};base64,")


def test_an_image_without_a_projector_is_refused_before_anything_is_sent(
    shared_model: ic.TextModel,
) -> None:
    assert not shared_model.capabilities.vision
    with pytest.raises(ic.UnsupportedOption) as refused:
        shared_model.chat(asking(RED), max_tokens=4)
    assert refused.value.option == "image" and "mmproj" in str(refused.value)
    with pytest.raises(ic.UnsupportedOption):
        shared_model.count_tokens(asking(RED))
    assert ids(shared_model, [ic.Message("user", QUESTION)])  # it serves on


def test_an_image_the_server_cannot_decode_is_named(seeing: ic.TextModel) -> None:
    truncated = RED[: len(RED) // 2]  # a PNG's signature, then half of it
    messages = asking(BLUE, truncated)
    stream = seeing.chat(messages, max_tokens=4)
    with pytest.raises(ic.InvalidValue) as refused:
        list(stream)
    assert "message 0, content part 2" in str(refused.value)
    assert ids(seeing, asking(BLUE))  # it serves on


def test_an_image_beyond_the_context_is_a_context_overflow(seeing: ic.TextModel) -> None:
    too_many = asking(*[RED] * (512 // IMAGE_TOKENS + 1))
    with pytest.raises(ic.ContextOverflow):
        list(seeing.chat(too_many, max_tokens=4))
    assert ids(seeing, asking(RED))


@pytest.mark.parametrize(
    ("source", "said"),
    [
        (b"", "is empty"),
        (b"not an image at all", "not an image"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP"),
        (b"\x00\x00\x00\x1cftypheic", "HEIF/AVIF"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not an image"),  # audio, not WebP
        (b"\x00\x00\x00\x00 zeros", "not an image"),
        ("https://example.invalid/cat.png", "download it first"),
        ("/nonexistent/cat.png", "cannot read"),
        ("data:image/png;base64,@@@", "not valid base64"),
    ],
)
def test_what_cannot_be_an_image_is_refused_when_the_message_is_made(
    source: bytes | str, said: str
) -> None:
    with pytest.raises(ic.InvalidValue, match=said) as refused:
        ic.Message("user", [{"type": "text", "text": "hi"}, ic.image(source)])
    assert refused.value.field == "content"


def test_only_a_user_message_carries_images() -> None:
    with pytest.raises(ic.InvalidValue, match="only a user message"):
        ic.Message("assistant", [ic.image(RED)])


def test_a_chat_that_keeps_the_first_of_two_adjacent_images_is_answered(
    seeing: ic.TextModel,
) -> None:
    """The pinned server's prompt cache fails ("Chunk not found") when a cached prompt
    parts from the next one between two adjacent images: the chat is sent again without
    the cache, and gives the ids it gives uncached."""
    ids(seeing, asking(RED, BLUE))
    kept = ids(seeing, asking(RED))
    ids(seeing, asking(BLUE, RED))  # another prompt in the slot, sharing no image
    assert kept == ids(seeing, asking(RED))


def test_an_async_chat_gives_the_sync_ids(seeing: ic.TextModel) -> None:
    expected = ids(seeing, asking(BLUE))

    async def run() -> list[int]:
        stream = seeing.achat(asking(BLUE), max_tokens=12)
        return [token.id async for token in stream]

    assert asyncio.run(run()) == expected


@pytest.fixture(scope="module")
def seeing_remotely(
    llama_server_binary: str,
    smollm2_path: str,
    projector: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ic.TextModel]:
    log = tmp_path_factory.mktemp("remote-vision") / "server.log"
    server = ExternalServer(
        llama_server_binary, smollm2_path, KEY, "--mmproj", str(projector),
        "--ctx-size", "1024", "--parallel", "2", log=log,
    )  # fmt: skip
    try:
        with ic.load(server.url, api_key=KEY) as model:
            yield model
    finally:
        server.stop()


def test_the_remote_backend_sends_the_images_bytes(
    seeing: ic.TextModel, seeing_remotely: ic.TextModel, tmp_path: Path
) -> None:
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    message = asking(path)
    path.unlink()  # the message holds the bytes: nothing reads the path again
    assert seeing_remotely.capabilities.vision
    assert ids(seeing_remotely, message) == ids(seeing, message)
    assert seeing_remotely.count_tokens(message) == seeing.count_tokens(message)


def test_the_kits_vision_contract_holds(seeing: ic.TextModel) -> None:
    TextModelContract().test_declared_vision_reads_images_and_none_refuses_them(seeing)


# -- the command line --------------------------------------------------------------------


@pytest.fixture(scope="module")
def red_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "red.png"
    path.write_bytes(RED)
    return path


def test_run_with_an_image_answers_as_the_library_does(
    seeing: ic.TextModel, projector: Path, red_file: Path
) -> None:
    expected = seeing.chat(asking(red_file), max_tokens=12, temperature=0).text()
    result = cli(
        "run", "--mmproj", str(projector), "--ctx", "512", "-n", "12", "-t", "0",
        "--image", str(red_file), QUESTION,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.lstrip() + "\n"


def test_chat_takes_an_image_command_for_the_next_message(
    seeing: ic.TextModel, projector: Path, red_file: Path
) -> None:
    expected = seeing.chat(asking(red_file), max_tokens=12, temperature=0).text()
    result = cli(
        "chat", "--mmproj", str(projector), "--ctx", "512", "-n", "12", "-t", "0",
        stdin=f"/image {red_file}\n{QUESTION}\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.lstrip() + "\n"


def test_run_with_an_image_and_no_projector_is_one_line_naming_mmproj(red_file: Path) -> None:
    result = cli("run", "-n", "4", "--image", str(red_file), QUESTION)
    assert_one_line_error(result, "sees no images", "mmproj")


@pytest.mark.parametrize("command", ["run", "chat"])
def test_an_image_that_is_no_image_is_a_usage_error_before_loading(
    command: str, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a picture")
    result = cli(command, "--image", str(path), *(["hi"] if command == "run" else []))
    assert result.returncode == 2 and "argument --image" in result.stderr
    assert "not an image" in result.stderr and "loading" not in result.stderr


def test_a_messages_repr_shows_an_image_by_its_type_and_size_not_its_bytes() -> None:
    message = ic.Message("user", [{"type": "text", "text": QUESTION}, ic.image(RED)])
    shown = repr(message)
    assert f"<image image/png, {len(RED)} bytes>" in shown and QUESTION in shown
    assert base64.b64encode(RED).decode()[:20] not in shown


@given(st.binary(max_size=64))
def test_any_bytes_are_an_image_part_holding_them_or_an_invalid_value(data: bytes) -> None:
    try:
        part = ic.image(data)
    except ic.InvalidValue as refused:
        assert refused.field == "content"
        return
    header, _, payload = part["image_url"]["url"].partition(",")
    assert header.startswith("data:image/") and base64.b64decode(payload) == data


@given(st.lists(st.text(max_size=20), max_size=5))
def test_text_parts_keep_their_text_joined_as_the_server_joins_them(texts: list[str]) -> None:
    message = ic.Message("system", [{"type": "text", "text": text} for text in texts])
    assert content_text(message.content) == "\n".join(texts)


@given(
    st.one_of(st.integers(), st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=5)))
)
def test_a_part_that_is_no_part_is_an_invalid_value(part: object) -> None:
    with pytest.raises(ic.InvalidValue):
        ic.Message("user", [part])


def test_a_batch_answers_chats_with_images_as_chat_does(seeing: ic.TextModel) -> None:
    prompts: list[str | list[ic.Message]] = [asking(RED), asking(BLUE), QUESTION]
    results = seeing.batch_generate(prompts, max_tokens=12)
    assert [result.prompt for result in results] == prompts
    assert all(result.ok for result in results)
    got = [[token.id for token in result.tokens] for result in results]
    assert got[:2] == [ids(seeing, asking(RED)), ids(seeing, asking(BLUE))]
    assert got[2] == [token.id for token in seeing.generate(QUESTION, max_tokens=12)]

    async def run() -> list[list[int]]:
        done = await seeing.abatch_generate(prompts[:2], max_tokens=12)
        return [[token.id for token in result.tokens] for result in done]

    assert asyncio.run(run()) == got[:2]


def test_a_batch_with_an_image_for_a_blind_model_is_refused_before_it_starts(
    shared_model: ic.TextModel,
) -> None:
    with pytest.raises(ic.UnsupportedOption) as refused:
        shared_model.batch_generate([QUESTION, asking(RED)], max_tokens=4)
    assert refused.value.option == "image"
