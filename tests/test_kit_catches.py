"""The conformance kit fails each backend of tests/broken_backends.py where it is broken,
and the same contracts pass for the faithful control.

The kit runs in a pytest of its own, outside this project's configuration, on the
contracts each backend must fail (a full run of every class takes minutes here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RUN_BOUND = 600.0  # seconds: only a hang takes a run this long

CANCEL_AND_DEADLINE = {
    "test_cancel_wakes_a_reader_blocked_in_another_thread[signal]",
    "test_cancel_wakes_a_reader_blocked_in_another_thread[call]",
    "test_a_deadline_wakes_a_blocked_reader",
    "test_cancelling_the_task_alone_stops_the_stream",
}
OPTIONS = {
    "test_json_schema_output_parses_and_keeps_to_the_schema",
    "test_grammar_limits_the_output",
    "test_logprobs_rank_each_token_first_among_its_candidates",
    "test_required_tool_choice_calls_one_of_the_tools",
    "test_a_tool_named_in_tool_choice_is_the_one_called[name]",
    "test_a_tool_named_in_tool_choice_is_the_one_called[openai]",
    "test_constrained_streams_cancel_time_out_and_share_threads[json_schema]",
    "test_constrained_streams_cancel_time_out_and_share_threads[logprobs]",
    "test_constrained_streams_cancel_time_out_and_share_threads[tools]",
    "test_embed_gives_a_unit_vector_per_text_or_is_refused",
}
# The contracts that must fail, by the class running the kit against a broken backend.
FAILS: dict[str, set[str]] = {
    "TestDeafToCancel": CANCEL_AND_DEADLINE,
    "TestDeadlineAtStartOnly": {
        "test_a_deadline_wakes_a_blocked_reader",
        "test_a_deadline_passing_mid_stream_ends_it",
    },
    "TestConstantIds": {
        "test_generate_yields_tokens_with_ids",
        "test_stop_token_ends_generation_before_it",
        "test_logprobs_rank_each_token_first_among_its_candidates",
    },
    "TestFixedSeed": {"test_seed_makes_sampling_reproducible"},
    "TestChatIgnoresMessages": {"test_chat_answers_the_messages"},
    "TestRefusesUntyped": OPTIONS,
    "TestEmbedsNothing": {"test_declared_embeddings_are_computed_and_others_refused"},
    "TestCountsOneMore": {"test_count_tokens_is_what_a_generation_reads"},
    "TestDetokenizesShort": {"test_tokenize_and_detokenize_round_trip"},
    "TestIgnoresStopStrings": {
        "test_a_stop_string_ends_the_stream_before_it_in_whole_tokens",
        "test_a_stop_string_beginning_inside_a_token_leaves_that_token_out",
        "test_async_and_batch_streams_end_at_stop_strings_and_say_why",
    },
    "TestRetextsAtStopStrings": {
        "test_a_stop_string_beginning_inside_a_token_leaves_that_token_out",
    },
    "TestStopAtMaxTokens": {
        "test_finish_reason_is_none_while_running_then_length_at_max_tokens",
        "test_async_and_batch_streams_end_at_stop_strings_and_say_why",
    },
    "TestEndsOnCancel": CANCEL_AND_DEADLINE - {"test_a_deadline_wakes_a_blocked_reader"},
    "TestLeaksThinking": {"test_declared_reasoning_is_kept_apart_from_the_answer"},
    "TestDropsImages": {"test_declared_vision_reads_images_and_none_refuses_them"},
    "TestClaimsVision": {"test_declared_vision_reads_images_and_none_refuses_them"},
    "TestIgnoresNamedTool": {
        "test_a_tool_named_in_tool_choice_is_the_one_called[name]",
        "test_a_tool_named_in_tool_choice_is_the_one_called[openai]",
    },
    "TestCallsWithoutArguments": {
        "test_required_tool_choice_calls_one_of_the_tools",
        "test_a_tool_named_in_tool_choice_is_the_one_called[name]",
        "test_a_tool_named_in_tool_choice_is_the_one_called[openai]",
        "test_declared_tools_are_called_and_none_refused",
    },
    "TestBoolPriority": {"test_backend_satisfies_the_protocol"},
}
MODEL_FAILS = set().union(*(tests for name, tests in FAILS.items() if name != "TestBoolPriority"))
RUN = {**FAILS, "TestFaithfulModel": MODEL_FAILS, "TestRefusesEveryOption": OPTIONS}
Outcomes = dict[str, dict[str, tuple[str, str]]]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    """By class, each contract's outcome ("passed", "failure", "error", "skipped") and
    message, from one pytest run of the contracts in RUN."""
    folder = tmp_path_factory.mktemp("kit")
    (folder / "test_kit_run.py").write_text(
        "from tests.broken_backends import MODELS, TestBoolPriority, model_contract\n"
        "globals().update({f'Test{name}': model_contract(name) for name in MODELS})\n"
    )
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *([path] if path else [])])}
    nodes = [f"test_kit_run.py::{name}::{test}" for name, tests in RUN.items() for test in tests]
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--junitxml=run.xml", *nodes],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        timeout=RUN_BOUND,
        check=False,
    )
    found: Outcomes = {name: {} for name in RUN}
    for case in ET.parse(folder / "run.xml").iter("testcase"):
        mark = next(iter(case), None)
        outcome = ("passed", "") if mark is None else (mark.tag, mark.get("message", ""))
        found[case.get("classname", "").rpartition(".")[2]][case.get("name", "")] = outcome
    return found


@pytest.mark.parametrize("name", sorted(FAILS))
def test_the_kit_fails_each_broken_backend_where_it_breaks(outcomes: Outcomes, name: str) -> None:
    assert {test: outcome for test, (outcome, _) in outcomes[name].items()} == dict.fromkeys(
        FAILS[name], "failure"
    ), outcomes[name]


def test_the_same_contracts_pass_for_the_faithful_backend(outcomes: Outcomes) -> None:
    expected = dict.fromkeys(MODEL_FAILS, "passed")
    expected["test_grammar_limits_the_output"] = "skipped"  # FakeModel refuses grammars
    assert {test: outcome for test, (outcome, _) in outcomes["TestFaithfulModel"].items()} == (
        expected
    ), outcomes["TestFaithfulModel"]


def test_a_refused_option_is_skipped_saying_so_never_passed(outcomes: Outcomes) -> None:
    refused = outcomes["TestRefusesEveryOption"]
    assert set(refused) == OPTIONS
    assert all(outcome == "skipped" for outcome, _ in refused.values()), refused
    assert all("the backend refuses" in message for _, message in refused.values()), refused
