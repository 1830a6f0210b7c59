"""Embeddings from the real llama-server: the server's own vectors, and generation intact."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import inference_core as ic
from inference_rocm import client, model
from inference_rocm.keeper import KeptServer
from inference_rocm.model import LlamaServerModel

from .external import KEY, ExternalServer

pytestmark = pytest.mark.server

TEXTS = [
    "The cat sat on the mat.",
    "Stock markets fell sharply on Monday.",
    "A kitten was sleeping on the rug.",
    "Python is a programming language.",
]


@pytest.fixture(scope="module")
def embedder(smollm2_path: str) -> Iterator[LlamaServerModel[KeptServer]]:
    with ic.load(smollm2_path, backend="llama_cpp", context_len=256, embeddings=True) as model:
        assert isinstance(model, LlamaServerModel)
        yield model


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_vectors_are_the_servers_own_of_the_reported_dimension(
    embedder: LlamaServerModel[KeptServer],
) -> None:
    vectors = embedder.embed(TEXTS)
    assert [len(vector) for vector in vectors] == [embedder.info.embedding_length] * 4
    assert embedder.info.embedding_length == 576  # SmolLM2-135M's hidden size
    for text, vector in zip(TEXTS, vectors, strict=True):
        (own,) = embedder.server.client.request("POST", "/embedding", {"content": text})
        assert cosine(vector, own["embedding"][0]) >= 0.999
    related, unrelated = cosine(vectors[0], vectors[2]), cosine(vectors[0], vectors[1])
    assert related > unrelated, "a cat on a mat should be nearer a kitten on a rug than stocks"


def test_more_texts_than_one_answer_may_hold_are_embedded_in_several_requests(
    embedder: LlamaServerModel[KeptServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client refuses an answer past its cap on a body (here made 100 kB, about eight
    vectors of SmolLM2): the texts go in groups (here of two) whose answers fit it."""
    monkeypatch.setattr(client, "_MAX_BODY", 100_000)
    monkeypatch.setattr(model, "_EMBED_ANSWER_BYTES", 2 * 24 * 576)
    texts = TEXTS * 5
    vectors = embedder.embed(texts)
    assert len(vectors) == 20
    for text, vector in zip(texts, vectors, strict=True):
        (own,) = embedder.server.client.request("POST", "/embedding", {"content": text})
        assert cosine(vector, own["embedding"][0]) >= 0.999


def test_normalize_false_gives_the_raw_vectors(embedder: LlamaServerModel[KeptServer]) -> None:
    (unit,) = embedder.embed(TEXTS[:1])
    (raw,) = embedder.embed(TEXTS[:1], normalize=False)
    length = math.sqrt(sum(x * x for x in raw))
    assert abs(length - 1.0) > 0.1
    assert [x / length for x in raw] == pytest.approx(unit, abs=1e-5)
    (awaited,) = asyncio.run(embedder.aembed(TEXTS[:1]))
    assert awaited == pytest.approx(unit, abs=1e-6)


def test_the_same_model_still_generates_as_one_loaded_without(
    embedder: LlamaServerModel[KeptServer], shared_model: ic.TextModel
) -> None:
    prompt = "The capital of France is"
    assert [t.id for t in embedder.generate(prompt, max_tokens=12)] == [
        t.id for t in shared_model.generate(prompt, max_tokens=12)
    ]


def test_a_text_too_long_is_a_context_overflow_naming_it(
    embedder: LlamaServerModel[KeptServer],
) -> None:
    texts = ["short", "word " * 400, "short too"]
    with pytest.raises(ic.ContextOverflow, match=r"text 1 \(\d+ tokens\) is longer than the 256"):
        embedder.embed(texts)
    assert len(embedder.embed(texts[:1])) == 1


def test_a_model_loaded_without_embeddings_says_how_to_get_them(
    shared_model: ic.TextModel,
) -> None:
    with pytest.raises(ic.UnsupportedOption, match="embeddings=True") as caught:
        shared_model.embed(TEXTS)
    assert caught.value.option == "embed"


def test_a_remote_server_started_for_embeddings_gives_the_same_vectors(
    embedder: LlamaServerModel[KeptServer],
    external_server: ExternalServer,
    llama_server_binary: str,
    smollm2_path: str,
    tmp_path: Path,
) -> None:
    flags = ("--embeddings", "--pooling", "mean", "--ubatch-size", "256", "--batch-size", "256")
    server = ExternalServer(llama_server_binary, smollm2_path, KEY, *flags, log=tmp_path / "log")
    try:
        with ic.load(server.url, api_key=KEY, embeddings=True) as remote:
            for mine, theirs in zip(remote.embed(TEXTS), embedder.embed(TEXTS), strict=True):
                assert cosine(mine, theirs) >= 0.999
    finally:
        server.stop()
    with ic.load(external_server.url, api_key=KEY, embeddings=True) as plain:
        with pytest.raises(ic.GenerationError, match="Start it with `--embeddings`"):
            plain.embed(TEXTS)
        assert plain.generate("Hello", max_tokens=2).text()  # and it still generates
