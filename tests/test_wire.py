"""The readers of llama-server's answers: what llama-server sends is read as it means, and
any other JSON value is a `BadAnswer`, never another exception."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import inference_core as ic
from inference_rocm import wire
from inference_rocm.client import error_for

# Every field name a reader looks for, so that random objects reach deep into them.
FIELDS = (
    "tokens",
    "content",
    "id",
    "piece",
    "bytes",
    "logprob",
    "top_logprobs",
    "completion_probabilities",
    "prompt",
    "index",
    "embedding",
    "default_generation_settings",
    "n_ctx",
    "total_slots",
    "model_path",
    "model_alias",
    "model_ftype",
    "data",
    "meta",
    "n_params",
    "size",
    "n_ctx_train",
    "n_vocab",
    "n_embd",
    "ftype",
    "prompt_n",
    "prompt_ms",
    "predicted_n",
    "predicted_ms",
    "prompt_per_second",
    "predicted_per_second",
    "n_prompt_tokens",
    "cache_n",
    "chat_template_caps",
    "supports_tool_calls",
    "modalities",
    "vision",
    "type",
    "message",
    "error",
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**70)
    | st.floats()  # NaN and both infinities included, as Python's JSON reads them
    | st.text(st.characters(exclude_categories=()), max_size=8)  # lone surrogates too
    | st.sampled_from(["exceed_context_size_error", "eos", "limit", *FIELDS])
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=3), children, max_size=5)
    ),
    max_leaves=30,
)

READERS: dict[str, Callable[[Any], object]] = {
    "ids": wire.ids,
    "text": wire.text,
    "count": lambda value: wire.count(value, "tokens_predicted"),
    "flag": lambda value: wire.flag(value, "stop"),
    "finish_reason": wire.finish_reason,
    "token": lambda value: wire.token(value, value, value),
    "token, figures": lambda value: wire.token(5, "a", value),
    "figures": wire.figures,
    "first_token": wire.first_token,
    "metrics": wire.metrics,
    "pieces": wire.pieces,
    "token_count": wire.token_count,
    "prompt": wire.prompt,
    "detokenized": wire.detokenized,
    "embeddings": lambda value: wire.embeddings(value, 2),
    "props": wire.props,
    "model_meta": wire.model_meta,
}


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS)
@given(value=JSON)
def test_any_json_value_is_read_or_a_bad_answer(
    reader: Callable[[Any], object], value: Any
) -> None:
    try:
        reader(value)
    except wire.BadAnswer as bad:
        assert str(bad).startswith(f"{bad.endpoint}: {bad.field} ")
        assert len(str(bad)) < 200, "a message stays short whatever the value"


@given(value=JSON)
def test_a_wrapped_value_reaches_the_readers_of_nested_answers(value: Any) -> None:
    """Random values in the places the readers look, not only at the top."""
    answers: list[tuple[Callable[[Any], object], Any]] = [
        (wire.props, {"default_generation_settings": {"n_ctx": value}, "total_slots": value}),
        (wire.model_meta, {"data": [{"meta": {"n_params": value, "size": value}}]}),
        (wire.pieces, {"tokens": [{"id": 1, "piece": value}]}),
        (wire.figures, [{"id": 1, "logprob": value, "top_logprobs": [value]}]),
        (lambda v: wire.embeddings(v, 1), [{"index": 0, "embedding": [value]}]),
        (wire.metrics, {"prompt_n": 1, "prompt_ms": value, "predicted_per_second": value}),
    ]
    for reader, answer in answers:
        with contextlib.suppress(wire.BadAnswer):
            reader(answer)


@given(status=st.sampled_from([400, 401, 404, 500, 503]), body=JSON)
def test_any_error_answer_becomes_an_inference_error(status: int, body: Any) -> None:
    error = error_for(status, body)
    assert isinstance(error, ic.InferenceError)
    overflow = {"error": {"type": "exceed_context_size_error", "n_ctx": body, "message": body}}
    assert isinstance(error_for(status, overflow, endpoint="/completion"), ic.GenerationError)


# -- what llama-server sends is read as it means ----------------------------------------


def test_the_stop_type_of_the_last_event_is_read_as_a_finish_reason() -> None:
    reasons = {value: wire.finish_reason(value) for value in ("eos", "word", "limit", "none")}
    assert reasons == {"eos": "stop", "word": "stop", "limit": "length", "none": "length"}
    for bad in (None, "EOS", "", 1, ["eos"]):
        with pytest.raises(wire.BadAnswer, match="stop_type"):
            wire.finish_reason(bad)


def test_a_token_with_figures_carries_them() -> None:
    figures = [
        {"id": 9, "logprob": -3.0, "bytes": [98]},
        {
            "id": 5,
            "logprob": 0.25,  # rounding can put a certain token above 0: it is 0
            "bytes": [97],
            "top_logprobs": [
                {"id": 5, "logprob": -0.1, "bytes": [97]},
                {"id": 6, "logprob": None, "bytes": [0xF0]},  # a probability of 0; a piece
            ],
        },
    ]
    token = wire.token(5, "a", figures)
    assert token == ic.Token(
        5,
        "a",
        logprob=0.0,
        top_logprobs=(ic.Token(5, "a", logprob=-0.1), ic.Token(6, "\ufffd", logprob=-math.inf)),
    )
    assert wire.token(5, "a", []) == ic.Token(5, "a")


def test_props_and_models_say_what_the_server_runs() -> None:
    props = wire.props(
        {
            "default_generation_settings": {"n_ctx": 4096},
            "total_slots": 4,
            "model_alias": "m.gguf",
            "model_ftype": "Q4_1",
        }
    )
    assert props == wire.Props(context_len=4096, slots=4, model_path="m.gguf", file_type="Q4_1")
    assert wire.props({"default_generation_settings": {"n_ctx": 8}}).slots is None
    featured = wire.props(
        {
            "default_generation_settings": {"n_ctx": 8},
            "chat_template_caps": {"supports_tool_calls": True, "supports_tools": True},
            "modalities": {"vision": True, "audio": False, "video": False},
        }
    )
    assert featured.template_tools and not featured.template_parallel_calls
    assert featured.modalities == {"vision"}
    meta = wire.model_meta({"data": [{"meta": {"n_params": 7, "size": 9, "n_vocab": None}}]})
    assert (meta.parameters, meta.size, meta.vocab_size, meta.file_type) == (7, 9, 0, "")
    assert wire.model_meta({"data": []}) == wire.model_meta({})


def test_timings_become_metrics() -> None:
    metrics = wire.metrics(
        {
            "prompt_n": 4,
            "prompt_ms": 2,
            "predicted_n": 3,
            "predicted_ms": 6.0,
            "prompt_per_second": None,  # a rate the server could not compute
            "predicted_per_second": 500.0,
        }
    )
    assert metrics == ic.GenerateMetrics(4, 3, 0.002, 0.006, 0.008, 0.0, 500.0)
    cached = wire.metrics({"prompt_n": 1, "cache_n": 9, "prompt_ms": 1.0})
    assert cached is not None and (cached.prompt_tokens, cached.cached_tokens) == (10, 9)
    assert (cached.drafted_tokens, cached.accepted_tokens) == (0, 0)  # nothing drafted
    drafted = wire.metrics({"predicted_n": 40, "draft_n": 30, "draft_n_accepted": 29})
    assert drafted is not None and (drafted.drafted_tokens, drafted.accepted_tokens) == (30, 29)
    assert wire.metrics(None) is None and wire.metrics({}) is None


def test_draft_counts_from_a_hostile_server_are_typed_errors() -> None:
    with pytest.raises(wire.BadAnswer, match="draft_n_accepted"):
        wire.metrics({"predicted_n": 4, "draft_n": 3, "draft_n_accepted": "all"})


def test_embeddings_come_in_the_order_of_the_texts() -> None:
    answer = [{"index": 1, "embedding": [[0, 1.0]]}, {"index": 0, "embedding": [[1, 0.0]]}]
    assert wire.embeddings(answer, 2) == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ([{"index": 0, "embedding": [[1.0]]}] * 2, r"\[1\].index is 0, not a new index below 2"),
        (
            [{"index": 0, "embedding": [[1.0]]}, {"index": 1, "embedding": [[1.0, 2.0]]}],
            "vectors of different lengths",
        ),
        ([{"index": 0, "embedding": [[math.nan]]}, {"index": 1}], "not a list of finite numbers"),
    ],
)
def test_embeddings_that_do_not_match_the_texts_are_refused(answer: Any, problem: str) -> None:
    with pytest.raises(wire.BadAnswer, match=problem):
        wire.embeddings(answer, 2)


@pytest.mark.parametrize(
    ("reader", "value", "problem"),
    [
        (wire.ids, [1, True], "/completion: tokens is [1, True], not a list of token ids"),
        (wire.ids, [2**63], "/completion: tokens is [9223372036854775808], not a list"),
        (lambda v: wire.flag(v, "stop"), "yes", "/completion: stop is 'yes', not true or false"),
        (
            wire.props,
            {"default_generation_settings": {}},
            "/props: default_generation_settings has no n_ctx",
        ),
        (wire.model_meta, [1, 2], "/v1/models: the answer is [1, 2], not a JSON object"),
        (wire.ids, ["x"] * 10_000, "/completion: tokens is ['x', 'x', 'x', 'x', 'x', 'x', ...]"),
    ],
)
def test_a_bad_value_is_named_with_its_endpoint_and_field(
    reader: Callable[[Any], object], value: Any, problem: str
) -> None:
    with pytest.raises(wire.BadAnswer) as caught:
        reader(value)
    assert str(caught.value).startswith(problem)
