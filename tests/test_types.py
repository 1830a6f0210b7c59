"""Value types: valid values round-trip, invalid ones name the field."""

from __future__ import annotations

import math
import subprocess
import sys

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_core import GenerateConfig, InvalidValue, LoadConfig, Message, Token, ToolCall
from inference_core.types import MAX_TOKENS, build_config, to_message

unit = st.floats(min_value=0.0, max_value=1.0)
# What a careless caller passes where a sequence belongs: one item, a string (whose letters
# would pass for items), a dict (whose keys would), nothing at all.
not_a_sequence = st.one_of(
    st.integers(),
    st.floats(),
    st.none(),
    st.booleans(),
    st.text(),
    st.binary(),
    st.dictionaries(st.integers(0, 9), st.integers(0, 9)),
    st.builds(object),
)
valid_generate = st.fixed_dictionaries(
    {},
    optional={
        "max_tokens": st.integers(1, MAX_TOKENS),
        "temperature": st.floats(0.0, 100.0),
        "top_k": st.integers(0, 10**6),
        "top_p": unit,
        "min_p": unit,
        "repeat_penalty": st.floats(0.0, 100.0, exclude_min=True),
        "stop_tokens": st.lists(st.integers(0, 10**6), max_size=5).map(tuple),
        "seed": st.none() | st.integers(0, 2**32 - 2),
        "logprobs": st.integers(0, 20),
    },
)


@given(valid_generate)
def test_valid_generate_options_round_trip(options: dict[str, object]) -> None:
    config = build_config(GenerateConfig, None, options)
    assert {key: getattr(config, key) for key in options} == options
    assert attrs.evolve(config) == config


bad_generate = st.one_of(
    st.tuples(
        st.just("max_tokens"),
        st.integers(max_value=0)
        | st.integers(min_value=MAX_TOKENS + 1)
        | st.just(True)
        | st.just(2.5),
    ),
    st.tuples(
        st.just("temperature"), st.floats(max_value=-1e-9) | st.just(math.nan) | st.just(math.inf)
    ),
    st.tuples(st.just("top_k"), st.integers(max_value=-1)),
    st.tuples(
        st.sampled_from(["top_p", "min_p"]),
        st.floats(min_value=1.000001) | st.floats(max_value=-1e-9) | st.just(math.nan),
    ),
    st.tuples(st.just("repeat_penalty"), st.floats(max_value=0.0) | st.just(math.nan)),
    st.tuples(
        st.just("seed"), st.integers(max_value=-1) | st.integers(min_value=2**32 - 1) | st.just("1")
    ),
    st.tuples(st.just("stop_tokens"), st.lists(st.integers(max_value=-1), min_size=1).map(tuple)),
    st.tuples(st.just("stop_tokens"), not_a_sequence),
)


@given(bad_generate)
def test_invalid_generate_option_raises_value_error_naming_the_field(
    item: tuple[str, object],
) -> None:
    field, value = item
    with pytest.raises(InvalidValue, match=field) as caught:
        GenerateConfig(**{field: value})  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError) and caught.value.field == field


valid_load = st.fixed_dictionaries(
    {},
    optional={
        "backend": st.text(max_size=10),
        "context_len": st.integers(0, 10**7),
        "gpu_layers": st.integers(-1, 1000) | st.just("auto"),
        "parallel_slots": st.integers(0, 256),
        "devices": st.lists(st.integers(0, 16), max_size=4).map(tuple),
        "adapter_path": st.none() | st.text(min_size=1, max_size=20),
        "extra_args": st.lists(st.text(max_size=10), max_size=4).map(tuple),
        "threads": st.integers(0, 1024),
        "load_timeout": st.floats(min_value=1e-3, max_value=86_400.0),
    },
)


@given(valid_load)
def test_valid_load_options_round_trip(options: dict[str, object]) -> None:
    config = build_config(LoadConfig, None, options)
    assert {key: getattr(config, key) for key in options} == options


bad_load = st.one_of(
    st.tuples(st.just("context_len"), st.integers(max_value=-1) | st.just(1.5)),
    st.tuples(st.just("gpu_layers"), st.integers(max_value=-2) | st.just("all") | st.just(None)),
    st.tuples(st.just("parallel_slots"), st.integers(max_value=-1) | st.integers(min_value=257)),
    st.tuples(st.just("devices"), st.lists(st.integers(max_value=-1), min_size=1).map(tuple)),
    st.tuples(st.sampled_from(["devices", "extra_args"]), not_a_sequence),
    st.tuples(st.just("extra_args"), st.just("--flag") | st.just((1, 2))),
    st.tuples(st.just("rpc_servers"), not_a_sequence.filter(lambda v: not isinstance(v, str))),
    st.tuples(
        st.sampled_from(["adapter_path", "ca_bundle"]),
        st.integers() | st.binary() | st.lists(st.text(), max_size=2),
    ),
    st.tuples(st.just("threads"), st.integers(max_value=-1) | st.just(True) | st.just(2.0)),
    st.tuples(
        st.just("load_timeout"),
        st.floats(max_value=0.0) | st.floats(min_value=86_400.5) | st.sampled_from([math.nan, "5"]),
    ),
)


@given(bad_load)
def test_invalid_load_option_raises_value_error_naming_the_field(item: tuple[str, object]) -> None:
    field, value = item
    with pytest.raises(InvalidValue, match=field) as caught:
        LoadConfig(**{field: value})  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError) and caught.value.field == field


def test_a_sequence_refused_names_what_it_got() -> None:
    with pytest.raises(
        InvalidValue, match=r"stop_tokens must be a sequence .* of integers >= 0, got 5"
    ):
        GenerateConfig(stop_tokens=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match=r"extra_args must be a sequence .* got '--flag'"):
        LoadConfig(extra_args="--flag")


def test_max_tokens_leaves_room_within_a_signed_32_bit_count() -> None:
    assert GenerateConfig(max_tokens=MAX_TOKENS).max_tokens == MAX_TOKENS
    with pytest.raises(
        InvalidValue, match=rf"max_tokens must be an integer in \[1, {MAX_TOKENS}\]"
    ):
        GenerateConfig(max_tokens=2**31)


def test_unknown_option_is_a_type_error_listing_the_known_ones() -> None:
    with pytest.raises(TypeError, match=r"'max_tokenz'.*known options: max_tokens, temperature"):
        build_config(GenerateConfig, None, {"max_tokenz": 3})


def test_options_override_a_config_object() -> None:
    base = GenerateConfig(max_tokens=5, temperature=0.7)
    assert build_config(GenerateConfig, base, {"max_tokens": 9}) == GenerateConfig(9, 0.7)
    assert build_config(GenerateConfig, base, {}) is base


def test_a_config_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="GenerateConfig"):
        build_config(GenerateConfig, LoadConfig(), {})  # type: ignore[type-var]


def test_values_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        GenerateConfig().max_tokens = 3  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Token(1, "a").id = 2  # type: ignore[misc]


@given(st.text(), st.text())
def test_message_roles_are_checked(role: str, content: str) -> None:
    if role in ("system", "user", "assistant", "tool"):
        assert Message(role, content).role == role
    else:
        with pytest.raises(ValueError, match="role must be one of system, user, assistant, tool"):
            Message(role, content)


def test_dict_messages_are_accepted_and_checked() -> None:
    assert to_message({"role": "user", "content": "hi"}) == Message("user", "hi")
    with pytest.raises(ValueError, match="role"):
        to_message({"role": "wizard", "content": "hi"})
    with pytest.raises(ValueError, match="needs 'role' and 'content'"):
        to_message({"role": "user"})
    with pytest.raises(ValueError, match="needs 'role' and 'content'"):
        to_message({"role": "user", "content": "hi", "name": "bob"})
    with pytest.raises(TypeError):
        to_message(("user", "hi"))  # type: ignore[arg-type]


def test_tool_calls_and_results_come_as_openai_dicts_too() -> None:
    assistant = to_message(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        }
    )
    assert assistant == Message(
        "assistant", "", tool_calls=(ToolCall("call_1", "get_weather", {"city": "Paris"}),)
    )
    result = to_message({"role": "tool", "content": "21 C", "tool_call_id": "call_1"})
    assert result == Message("tool", "21 C", tool_call_id="call_1")
    with pytest.raises(InvalidValue, match="a tool call must be") as caught:
        to_message({"role": "assistant", "content": "", "tool_calls": [{"id": "x"}]})
    assert caught.value.field == "tool_calls"
    with pytest.raises(InvalidValue, match="only an assistant message makes tool calls"):
        Message("user", "hi", tool_calls=(ToolCall("c", "f", {}),))
    with pytest.raises(InvalidValue, match="only a 'tool' message answers a tool call"):
        Message("user", "hi", tool_call_id="c")
    with pytest.raises(InvalidValue, match="arguments must be a JSON object"):
        ToolCall("c", "f", ["not", "an", "object"])


@given(not_a_sequence)
def test_tool_calls_that_are_not_a_sequence_are_refused(value: object) -> None:
    with pytest.raises(InvalidValue, match="tool_calls must be a sequence") as caught:
        Message("assistant", "", tool_calls=value)  # type: ignore[arg-type]
    assert caught.value.field == "tool_calls"
    if value:  # empty ones mean no calls
        with pytest.raises(InvalidValue, match="tool_calls must be a sequence"):
            to_message({"role": "assistant", "content": "", "tool_calls": value})


def test_a_config_copies_its_schema_and_refuses_a_second_constraint() -> None:
    schema: dict[str, object] = {"type": "object"}
    config = GenerateConfig(json_schema=schema)
    schema["type"] = "array"  # the caller's dict changes later; the frozen config does not
    assert config.json_schema == {"type": "object"}
    assert hash(config) == hash(GenerateConfig(json_schema={"type": "object"}))
    with pytest.raises(InvalidValue, match="set one of them") as caught:
        GenerateConfig(json_schema={"type": "object"}, grammar='root ::= "a"')
    assert caught.value.field == "grammar"
    with pytest.raises(InvalidValue, match="json_schema must be a JSON object"):
        GenerateConfig(json_schema={"pattern": object()})


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=21), st.booleans()))
def test_logprobs_outside_0_to_20_are_refused(value: int) -> None:
    with pytest.raises(InvalidValue, match="logprobs must be an integer in"):
        GenerateConfig(logprobs=value)


@given(st.floats(min_value=1e-9, allow_nan=False) | st.just(float("nan")) | st.integers())
def test_a_logprob_is_a_float_at_most_zero(value: float) -> None:
    with pytest.raises(InvalidValue, match="logprob must be None or a float <= 0"):
        Token(1, "a", logprob=value)


def test_token_ids_are_non_negative_integers() -> None:
    with pytest.raises(ValueError, match="id"):
        Token(-1, "x")
    with pytest.raises(ValueError, match="text"):
        Token(1, b"x")  # type: ignore[arg-type]


def test_importing_the_core_pulls_in_no_backend_or_heavy_dependency() -> None:
    code = (
        "import sys, inference_core, inference_core.testing;"
        "heavy = {'requests', 'gguf', 'numpy', 'inference_rocm', 'pytest'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@given(
    st.sampled_from(["off", "ngram", "draft", "auto", "", 1, None]),
    st.none() | st.just("draft.gguf"),
    st.integers(-2, 1100) | st.booleans(),
    st.integers(-2, 1100),
    st.sampled_from(["f16", "q8_0", "q4_0", "q5_1", "F16", 0]),
)
def test_speculation_and_cache_settings_agree_or_are_an_invalid_value(
    speculative: object, draft_model: str | None, most: object, fewest: int, cache: object
) -> None:
    given = {"draft_model": draft_model, "draft_max": most, "draft_min": fewest}
    if speculative is not None:
        given["speculative"] = speculative
    try:
        config = LoadConfig(cache_type=cache, **given)  # type: ignore[arg-type]
    except InvalidValue as error:
        assert error.field in {"speculative", "draft_model", "draft_max", "draft_min", "cache_type"}
        return
    assert config.cache_type in ("f16", "q8_0", "q4_0")
    assert (config.speculative == "draft") == (config.draft_model is not None)
    assert config.speculative != "off" or config.draft_max == config.draft_min == 0
    assert not config.draft_max or config.draft_min <= config.draft_max
    assert 0 <= config.draft_min <= 1024 and 0 <= config.draft_max <= 1024


def test_a_draft_model_given_on_top_of_a_config_means_drafting_with_it() -> None:
    drafted = build_config(LoadConfig, LoadConfig(context_len=4096), {"draft_model": "d.gguf"})
    assert (drafted.speculative, drafted.context_len) == ("draft", 4096)
    assert build_config(LoadConfig, drafted, {"draft_model": None}).speculative == "off"
    ngram = LoadConfig(speculative="ngram")
    assert build_config(LoadConfig, ngram, {"draft_max": 8}).speculative == "ngram"
    with pytest.raises(InvalidValue):  # said otherwise: "ngram" and a draft disagree
        build_config(LoadConfig, ngram, {"draft_model": "d.gguf"})
