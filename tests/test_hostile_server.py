"""A server that answers unlike llama-server: each bad value it sends is a typed error
naming the endpoint and the field, never a plain Python error or an `InvalidValue`.

During a generation (a stream, `chat`, `classify`, `embed`) that error is a
`GenerationError`; during a load it is `UnexpectedServer`, and a server we started is
stopped. A scripted HTTP server (tests/scripted.py) stands in for a remote llama-server
(the real one cannot be made to send these), and the fake llama-server of tests/fakes
for a local one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import inference_core as ic
from inference_rocm.backends import LlamaCppBackend

from .procs import children, make_executable
from .scripted import Answer, Serve, scripted_servers
from .test_wire import JSON

FAKE_SERVER = Path(__file__).parent / "fakes" / "fake_llama_server.py"


def event(**fields: Any) -> bytes:
    """One event of a /completion stream (Python's JSON writes inf as `Infinity`)."""
    return json.dumps(fields).encode()


def token(i: int) -> bytes:
    return event(content=f" t{i}", tokens=[100 + i], stop=False, tokens_predicted=i + 1)


TIMINGS = {"prompt_n": 1, "prompt_ms": 1.0, "predicted_n": 2, "predicted_ms": 2.0}
END = event(content="", tokens=[], stop=True, stop_type="eos", tokens_predicted=2, timings=TIMINGS)
FIGURES = {"id": 100, "bytes": [65], "logprob": -0.5, "top_logprobs": []}
SPLIT = event(content="🎉", tokens=[227], stop=False, tokens_predicted=3)
SPLIT_END = event(content="", tokens=[], stop=True, stop_type="eos", tokens_predicted=3)

# What llama-server answers, as far as these tests ask it.
GOOD: dict[str, Answer] = {
    "/health": b'{"status": "ok"}',
    "/props": json.dumps(
        {
            "default_generation_settings": {"n_ctx": 512},
            "total_slots": 2,
            "model_path": "/models/tiny.gguf",
        }
    ).encode(),
    "/v1/models": json.dumps(
        {
            "object": "list",
            "data": [{"id": "tiny", "meta": {"n_params": 1000, "size": 500, "n_ctx_train": 2048}}],
        }
    ).encode(),
    "/completion": [token(0), token(1), END],
    "/completion, whole": json.dumps(
        {"content": "A", "tokens": [65], "completion_probabilities": [FIGURES]}
    ).encode(),
    "/tokenize": json.dumps(
        {
            "tokens": [
                {"id": 10813, "piece": [240, 159]},
                {"id": 232, "piece": [142]},
                {"id": 227, "piece": [137]},
            ]
        }
    ).encode(),
    "/embedding": b'[{"index": 0, "embedding": [[0.6, 0.8]]}]',
    "/apply-template": b'{"prompt": "<user>hi</user>"}',
}


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a scripted server answering as llama-server does but for `changes`; its URL."""
    with scripted_servers() as start:
        yield lambda changes: start({**GOOD, **changes})


CALLS: dict[str, Callable[[ic.TextModel], object]] = {
    "generate": lambda model: list(model.generate("hi", max_tokens=8)),
    "logprobs": lambda model: list(model.generate("hi", max_tokens=8, logprobs=2)),
    "chat": lambda model: list(model.chat([{"role": "user", "content": "hi"}], max_tokens=8)),
    "classify": lambda model: model.classify(["hi"]),
    "embed": lambda model: model.embed(["hi"]),
    "tokenize": lambda model: model.tokenize("hi"),
    "detokenize": lambda model: model.detokenize([5]),
    "count_tokens": lambda model: model.count_tokens([{"role": "user", "content": "hi"}]),
}


def test_the_scripted_server_is_one_the_model_drives(
    serve: Serve,
) -> None:
    """Each hostile case below changes one answer of this server, which works."""
    with ic.load(serve({}), embeddings=True) as model:
        assert (model.context_len, model.info.name, model.info.context_length) == (
            512,
            "tiny",
            2048,
        )
        assert [t.id for t in model.generate("hi", max_tokens=8)] == [100, 101]
        stream = model.generate("hi", max_tokens=8, logprobs=2)
        assert [t.logprob for t in stream] == [None, None]
        assert stream.metrics is not None and stream.metrics.generated_tokens == 2
        assert model.chat([{"role": "user", "content": "hi"}], max_tokens=8).text() == " t0 t1"
        assert model.classify(["hi"]) == [ic.Token(100, "A")]
        assert model.embed(["hi"]) == [[0.6, 0.8]]
    with ic.load(serve({"/completion": [SPLIT, SPLIT_END]})) as model:
        assert [t.id for t in model.generate("hi", max_tokens=8)] == [10813, 232, 227]


def _events(*events: bytes) -> dict[str, Answer]:
    return {"/completion": list(events)}


def _figures(figures: object) -> dict[str, Answer]:
    """A stream whose one token carries these `completion_probabilities`."""
    return _events(
        event(content="a", tokens=[5], tokens_predicted=1, completion_probabilities=figures)
    )


# (the call, what the server sends instead, what the error must say)
IN_A_GENERATION: dict[str, tuple[str, dict[str, Answer], str]] = {
    "tokens not a list": (
        "generate",
        _events(event(content="a", tokens=5, stop=False, tokens_predicted=1), END),
        "/completion: tokens is 5, not a list",
    ),
    "tokens a string": (
        "generate",
        _events(event(content="a", tokens="a", stop=False, tokens_predicted=1), END),
        "/completion: tokens is 'a', not a list",
    ),
    "no content": (
        "generate",
        _events(event(tokens=[5], stop=False, tokens_predicted=1), END),
        "/completion: content is missing",
    ),
    "content not a string": (
        "generate",
        _events(event(content=5, tokens=[5], stop=False, tokens_predicted=1), END),
        "/completion: content is 5, not a string",
    ),
    "content with a lone surrogate": (
        "generate",
        _events(event(content="\ud800", tokens=[5], stop=False, tokens_predicted=1), END),
        "/completion: content is '\\\\ud800', not a string of text",
    ),
    "a negative token id": (
        "generate",
        _events(event(content="a", tokens=[-1], stop=False, tokens_predicted=1), END),
        r"/completion: tokens\[0\] is -1, not a token id",
    ),
    "a token id not a number": (
        "generate",
        _events(event(content="a", tokens=["7"], stop=False, tokens_predicted=1), END),
        r"/completion: tokens\[0\] is '7', not a token id",
    ),
    "tokens_predicted not a number": (
        "generate",
        _events(event(content="a", tokens=[5], stop=False, tokens_predicted="x"), END),
        "/completion: tokens_predicted is 'x', not an integer",
    ),
    "tokens_predicted infinite": (
        "generate",
        _events(event(content="a", tokens=[5], stop=False, tokens_predicted=float("inf")), END),
        "/completion: tokens_predicted is inf, not an integer",
    ),
    "tokens_predicted of the end not a number": (
        "generate",
        _events(
            token(0), event(content="", tokens=[], stop=True, stop_type="eos", tokens_predicted="x")
        ),
        "/completion: tokens_predicted is 'x', not an integer",
    ),
    "stop_type unknown": (
        "generate",
        _events(token(0), event(content="", tokens=[], stop=True, stop_type="tired")),
        "/completion: stop_type is 'tired', not one of eos, word, limit, none",
    ),
    "stop_type missing": (
        "generate",
        _events(token(0), event(content="", tokens=[], stop=True)),
        "/completion: stop_type is missing",
    ),
    "timings not numbers": (
        "generate",
        _events(
            token(0),
            event(content="", tokens=[], stop=True, stop_type="eos", timings={"prompt_n": "x"}),
        ),
        "/completion: timings.prompt_n is 'x', not an integer",
    ),
    "timings not an object": (
        "generate",
        _events(token(0), event(content="", tokens=[], stop=True, stop_type="eos", timings="fast")),
        "/completion: timings is 'fast', not a JSON object",
    ),
    "an overflow error whose n_ctx is not a number": (
        "generate",
        _events(
            event(
                error={
                    "message": "too long",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 600,
                    "n_ctx": "512",
                }
            )
        ),
        "/completion: error.n_ctx is '512', not an integer",
    ),
    "a refusal whose n_prompt_tokens is not a number": (
        "generate",
        {
            "/completion": (
                400,
                b'{"error": {"message": "too long", "type": "exceed_context_size_error", '
                b'"n_prompt_tokens": "600", "n_ctx": 512}}',
            )
        },
        "error.n_prompt_tokens is '600', not an integer",
    ),
    "completion_probabilities not a list": (
        "logprobs",
        _figures(5),
        "/completion: completion_probabilities is 5, not a list",
    ),
    "a logprob not a number": (
        "logprobs",
        _figures([{"id": 5, "logprob": "x"}]),
        r"/completion: completion_probabilities\[0\].logprob is 'x', not a log-probability",
    ),
    "a candidate's bytes not bytes": (
        "logprobs",
        _figures([{"id": 5, "logprob": -1, "top_logprobs": [{"id": 1, "bytes": "ab"}]}]),
        r"completion_probabilities\[0\].top_logprobs\[0\].bytes is 'ab', not a list of bytes",
    ),
    "a /tokenize answer without a list": (
        "generate",
        {**_events(SPLIT, SPLIT_END), "/tokenize": b'{"tokens": 5}'},
        "/tokenize: tokens is 5, not a list",
    ),
    "a /tokenize piece not text": (
        "generate",
        {**_events(SPLIT, SPLIT_END), "/tokenize": b'{"tokens": [{"id": 227, "piece": 5}]}'},
        r"/tokenize: tokens\[0\].piece is 5, not a string",
    ),
    "an /apply-template answer without a prompt": (
        "chat",
        {"/apply-template": b'{"text": "hi"}'},
        "/apply-template: prompt is missing",
    ),
    "tokenize: an id not a number": (
        "tokenize",
        {"/tokenize": b'{"tokens": [{"id": "x", "piece": "hi"}]}'},
        r"/tokenize: tokens\[0\].id is 'x', not an integer",
    ),
    "detokenize: no text": (
        "detokenize",
        {"/detokenize": b'{"content": 5}'},
        "/detokenize: content is 5, not a string",
    ),
    "count_tokens: ids not numbers": (
        "count_tokens",
        {"/tokenize": b'{"tokens": ["hi"]}'},
        r"/tokenize: tokens\[0\] is 'hi', not an integer",
    ),
    "count_tokens: an /apply-template answer without a prompt": (
        "count_tokens",
        {"/apply-template": b'{"text": "hi"}'},
        "/apply-template: prompt is missing",
    ),
    "classify: no figures": (
        "classify",
        {"/completion, whole": b'{"completion_probabilities": []}'},
        "/completion: completion_probabilities is empty",
    ),
    "classify: an id not a number": (
        "classify",
        {"/completion, whole": b'{"completion_probabilities": [{"id": "x", "bytes": [65]}]}'},
        r"/completion: completion_probabilities\[0\].id is 'x', not an integer",
    ),
    "classify: bytes out of range": (
        "classify",
        {"/completion, whole": b'{"completion_probabilities": [{"id": 5, "bytes": [300]}]}'},
        r"/completion: completion_probabilities\[0\].bytes is \[300\], not a list of bytes",
    ),
    "embed: an object": (
        "embed",
        {"/embedding": b'{"index": 0}'},
        "/embedding: the answer is {'index': 0}, not a list",
    ),
    "embed: no vector for the text": (
        "embed",
        {"/embedding": b"[]"},
        "/embedding: the answer holds 0 items for 1 texts",
    ),
    "embed: a vector not numbers": (
        "embed",
        {"/embedding": b'[{"index": 0, "embedding": [["x"]]}]'},
        r"/embedding: \[0\].embedding\[0\] is \['x'\], not a list of finite numbers",
    ),
    "embed: an embedding not a list": (
        "embed",
        {"/embedding": b'[{"index": 0, "embedding": 5}]'},
        r"/embedding: \[0\].embedding is 5, not a list",
    ),
    "embed: a bad /tokenize after a refusal": (
        "embed",
        {"/embedding": (500, b'{"error": {"message": "too long"}}'), "/tokenize": b'{"tokens": 5}'},
        "/tokenize: tokens is 5, not a list",
    ),
}


@pytest.mark.parametrize("case", IN_A_GENERATION.values(), ids=IN_A_GENERATION)
def test_a_bad_value_in_a_generation_is_a_generation_error_naming_it(
    serve: Serve, case: tuple[str, dict[str, Answer], str]
) -> None:
    call, changes, problem = case
    with ic.load(serve(changes), embeddings=True) as model:
        with pytest.raises(ic.GenerationError, match=problem) as caught:
            CALLS[call](model)
        assert type(caught.value) is ic.GenerationError
        assert "unlike a llama-server" in str(caught.value)


EVENT_FIELDS = (
    "tokens",
    "content",
    "tokens_predicted",
    "stop",
    "stop_type",
    "timings",
    "completion_probabilities",
    "error",
)
# Events near llama-server's: its fields, each with any JSON value or a well-formed one.
EVENTS = st.lists(
    st.dictionaries(
        st.sampled_from(EVENT_FIELDS),
        JSON | st.lists(st.integers(-1, 300), max_size=3) | st.sampled_from(["a", "🎉", True]),
        max_size=len(EVENT_FIELDS),
    ),
    min_size=1,
    max_size=4,
)


def test_any_stream_gives_tokens_or_a_generation_error() -> None:
    answers = dict(GOOD)
    with scripted_servers() as start, ic.load(start(answers)) as model:

        @settings(deadline=None)
        @given(events=EVENTS, tokenized=JSON, logprobs=st.sampled_from([0, 2]))
        def check(events: list[dict[str, Any]], tokenized: Any, logprobs: int) -> None:
            answers["/completion"] = [json.dumps(event).encode() for event in events]
            answers["/tokenize"] = json.dumps(tokenized).encode()
            stream = model.generate("hi", max_tokens=4, logprobs=logprobs)
            try:
                tokens = list(stream)
            except ic.GenerationError as error:
                assert type(error) in (ic.GenerationError, ic.ContextOverflow), error
            else:
                assert all(isinstance(token, ic.Token) for token in tokens)

        check()


NUMBERS = JSON | st.integers(-1, 2**64)


def test_any_props_and_models_give_a_model_or_an_unexpected_server() -> None:
    answers = dict(GOOD)
    with scripted_servers() as start:
        url = start(answers)

        @settings(deadline=None)
        @given(
            props=st.fixed_dictionaries(
                {"default_generation_settings": st.fixed_dictionaries({"n_ctx": NUMBERS}) | JSON},
                optional={"total_slots": NUMBERS, "model_path": JSON, "model_ftype": JSON},
            )
            | JSON,
            meta=st.dictionaries(
                st.sampled_from(["n_params", "size", "n_vocab", "ftype"]), NUMBERS
            ),
            models=JSON,
        )
        def check(props: Any, meta: dict[str, Any], models: Any) -> None:
            answers["/props"] = json.dumps(props).encode()
            answers["/v1/models"] = json.dumps(models or {"data": [{"meta": meta}]}).encode()
            try:
                ic.load(url).close()
            except ic.UnexpectedServer as error:
                assert "is not a llama-server's" in str(error)

        check()


def _props(n_ctx: object = 512, **fields: object) -> dict[str, Answer]:
    answer = {"default_generation_settings": {"n_ctx": n_ctx}, **fields}
    return {"/props": json.dumps(answer).encode()}


def _meta(**meta: object) -> dict[str, Answer]:
    return {"/v1/models": json.dumps({"data": [{"id": "m", "meta": meta}]}).encode()}


# (what the server sends instead, what the error must say)
AT_A_LOAD: dict[str, tuple[dict[str, Answer], str]] = {
    "a negative n_ctx": (
        _props(-5),
        r"/props is not a llama-server's: default_generation_settings.n_ctx is -5, "
        "not an integer >= 1",
    ),
    "an n_ctx not a number": (_props("x"), "default_generation_settings.n_ctx is 'x'"),
    "an infinite n_ctx": (_props(float("inf")), "default_generation_settings.n_ctx is inf"),
    "total_slots not a number": (_props(total_slots="x"), "/props is .* total_slots is 'x'"),
    "a model path not a string": (_props(model_path=5), "/props is .* model_path is 5"),
    "models not objects": (
        {"/v1/models": b'{"data": [5]}'},
        r"/v1/models is not a llama-server's: data\[0\] is 5, not a JSON object",
    ),
    "models not a list": ({"/v1/models": b'{"data": 5}'}, "/v1/models is .* data is 5"),
    "template caps not an object": (
        _props(chat_template_caps=[True]),
        r"/props is .* chat_template_caps is \[True\], not a JSON object",
    ),
    "a template cap not a flag": (
        _props(chat_template_caps={"supports_tool_calls": "yes"}),
        "/props is .* chat_template_caps.supports_tool_calls is 'yes', not true or false",
    ),
    "modalities not flags": (
        _props(modalities={"vision": 1}),
        "/props is .* modalities.vision is 1, not true or false",
    ),
    "n_params not a number": (_meta(n_params="x"), r"data\[0\].meta.n_params is 'x'"),
    "a size past 64 bits": (_meta(n_params=1000, size=10**400), r"data\[0\].meta.size is 1000"),
}


@pytest.mark.parametrize("case", AT_A_LOAD.values(), ids=AT_A_LOAD)
def test_a_bad_value_at_a_remote_load_is_an_unexpected_server_naming_it(
    serve: Serve, case: tuple[dict[str, Answer], str]
) -> None:
    changes, problem = case
    with pytest.raises(ic.UnexpectedServer, match=problem):
        ic.load(serve(changes))


def load_fake(tmp_path: Path, model_path: str, *extra: str) -> ic.TextModel:
    binary = make_executable(tmp_path / "llama-server", FAKE_SERVER.read_text())
    backend = LlamaCppBackend(environ={"LLAMA_SERVER_PATH": str(binary)})
    return backend.load_model(model_path, ic.LoadConfig(extra_args=extra))


LOCAL_PROPS = {
    "a negative n_ctx": (
        '{"default_generation_settings": {"n_ctx": -5}}',
        "default_generation_settings.n_ctx is -5",
    ),
    "an n_ctx not a number": (
        '{"default_generation_settings": {"n_ctx": "x"}, "total_slots": 1}',
        "default_generation_settings.n_ctx is 'x'",
    ),
    "total_slots not a number": (
        '{"default_generation_settings": {"n_ctx": 512}, "total_slots": "x"}',
        "total_slots is 'x'",
    ),
    "not an object": ("[1]", "/props: the answer is \\[1\\], not a JSON object"),
    "not JSON": ("{", "invalid JSON"),
}


@pytest.mark.parametrize("case", LOCAL_PROPS.values(), ids=LOCAL_PROPS)
def test_a_bad_props_from_our_own_server_is_an_unexpected_server_and_it_is_stopped(
    tmp_path: Path, smollm2_path: str, case: tuple[str, str]
) -> None:
    body, problem = case
    before = children()
    with pytest.raises(ic.UnexpectedServer, match=problem) as caught:
        load_fake(tmp_path, smollm2_path, "--fake-props", body)
    assert "answered /props unlike a llama-server" in str(caught.value)
    assert "it was stopped" in str(caught.value)
    assert children() - before == set()


def test_our_server_dying_on_props_is_a_start_error_with_its_log(
    tmp_path: Path, smollm2_path: str
) -> None:
    before = children()
    with pytest.raises(ic.ServerStartError, match="exited with status 3") as caught:
        load_fake(tmp_path, smollm2_path, "--fake-exit-on", "/props")
    assert "exiting on /props" in caught.value.log_tail
    assert caught.value.returncode == 3
    assert children() - before == set()


def test_a_router_listing_endless_names_is_refused_in_a_message_of_bounded_size(
    serve: Serve,
) -> None:
    names = [f"model-{number}-" + "x" * 5000 for number in range(3000)]
    listing = {"object": "list", "data": [{"id": name} for name in names]}
    url = serve({"/props": b'{"role": "router"}', "/v1/models": json.dumps(listing).encode()})
    with pytest.raises(ic.InvalidValue, match="name one with model=NAME") as error:
        ic.load(url)
    message = str(error.value)
    assert "model-0-xxx" in message and "and 2980 more" in message
    assert len(message) < 4000
