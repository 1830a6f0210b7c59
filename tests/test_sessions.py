"""Saved sessions against the real llama-server and SmolLM2: a conversation saved by one
model and restored by another skips its prefill, parallel slots keep their conversations
apart, and a session that is missing, or was saved by another model or context, is
refused by name before the server is asked."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import inference_core as ic
from inference_core.types import MessageLike
from inference_rocm.sessions import SESSION_NAME, SessionIdentity, SessionStore

from .external import KEY, ExternalServer
from .gguf_copies import other_vocabulary_copy
from .test_cli import cli

pytestmark = pytest.mark.server

CONTEXT = 1024
FACTS = " ".join(f"Fact {n}: {n} times three is {3 * n}." for n in range(20))


def conversation(topic: str) -> list[MessageLike]:
    return [{"role": "user", "content": f"Remember these facts about {topic}. {FACTS}"}]


def sessions_folder() -> Path:
    return Path(os.environ["XDG_CACHE_HOME"], "inference-core", "sessions")


@pytest.fixture(scope="module")
def two_slots(smollm2_path: str) -> Iterator[ic.TextModel]:
    with ic.load(smollm2_path, backend="llama_cpp", context_len=CONTEXT, parallel_slots=2) as model:
        yield model


@pytest.fixture(scope="module")
def other_two_slots(smollm2_path: str) -> Iterator[ic.TextModel]:
    """A second server of the same model and settings: a session crosses between them."""
    with ic.load(smollm2_path, backend="llama_cpp", context_len=CONTEXT, parallel_slots=2) as model:
        yield model


def saving(model: ic.TextModel) -> ic.SavesSessions:
    """The model as one that saves sessions, which every llama-server model here is."""
    assert isinstance(model, ic.SavesSessions)
    return model


def answered(model: ic.TextModel, messages: list[MessageLike]) -> list[MessageLike]:
    stream = model.chat(messages, max_tokens=6)
    return [*messages, {"role": "assistant", "content": stream.text()}]


def test_a_restored_conversation_skips_its_prefill_on_another_server(
    two_slots: ic.TextModel, other_two_slots: ic.TextModel
) -> None:
    history = answered(two_slots, conversation("the river"))
    saved = saving(two_slots).save_session("river", history)
    assert saved.tokens > 250
    restored = saving(other_two_slots).restore_session("river")
    assert restored.tokens == saved.tokens
    assert [m.content for m in restored.messages] == [m["content"] for m in history]  # type: ignore[index]
    stream = other_two_slots.chat([*restored.messages, {"role": "user", "content": "Fact 7?"}])
    stream.text()
    assert stream.metrics is not None
    assert stream.metrics.cached_tokens >= saved.tokens - 2
    assert stream.metrics.prompt_tokens - stream.metrics.cached_tokens < 30  # the new turn


def test_each_of_two_slots_keeps_its_own_conversation(
    two_slots: ic.TextModel, other_two_slots: ic.TextModel
) -> None:
    first = answered(two_slots, conversation("apples"))
    second = answered(two_slots, conversation("boats"))
    saving(two_slots).save_session("apples", first)
    saving(two_slots).save_session("boats", second)
    records = {
        name: json.loads((sessions_folder() / f"{name}.json").read_text())
        for name in ("apples", "boats")
    }
    assert {record["slot"] for record in records.values()} == {0, 1}  # one each
    for name in ("boats", "apples"):
        session = saving(other_two_slots).restore_session(name)
        assert name in str(session.messages[0].content)
        stream = other_two_slots.chat([*session.messages, {"role": "user", "content": "Hi"}])
        stream.text()
        assert stream.metrics is not None and stream.metrics.cached_tokens >= session.tokens - 2


def test_by_default_the_last_generation_is_saved_with_what_it_generated(
    two_slots: ic.TextModel, other_two_slots: ic.TextModel
) -> None:
    prompt = f"Notes. {FACTS}\nSummary:"
    tokens = list(two_slots.generate(prompt, max_tokens=4))
    saved = saving(two_slots).save_session("notes")
    assert saved.prompt == prompt + "".join(token.text for token in tokens)
    assert saved.messages == ()
    restored = saving(other_two_slots).restore_session("notes")
    assert restored.tokens == saved.tokens == two_slots.count_tokens(prompt) + len(tokens)
    again = other_two_slots.generate(prompt, max_tokens=1)
    again.text()
    assert (
        again.metrics is not None and again.metrics.cached_tokens == again.metrics.prompt_tokens - 1
    )


def test_a_missing_session_is_named_with_those_that_exist(two_slots: ic.TextModel) -> None:
    two_slots.generate("Hello", max_tokens=1).text()
    saving(two_slots).save_session("present")
    with pytest.raises(ic.SessionNotFound, match=r"no session 'absent'.*present") as missing:
        saving(two_slots).restore_session("absent")
    assert missing.value.name == "absent" and isinstance(missing.value, LookupError)


def test_a_session_of_another_context_or_model_is_refused_by_what_differs(
    smollm2_path: str, two_slots: ic.TextModel, tmp_path: Path
) -> None:
    two_slots.generate("Hello there", max_tokens=1).text()
    saving(two_slots).save_session("small")
    with (
        ic.load(smollm2_path, backend="llama_cpp", context_len=512) as shorter,
        pytest.raises(ic.SessionMismatch, match=f"context_len {CONTEXT}, not 512"),
    ):
        saving(shorter).restore_session("small")
    other = tmp_path / "other.gguf"
    other_vocabulary_copy(smollm2_path, other, 1000)
    with (
        ic.load(other, backend="llama_cpp", context_len=CONTEXT) as another,
        pytest.raises(ic.SessionMismatch, match="the model") as refused,
    ):
        saving(another).restore_session("small")
    assert smollm2_path in str(refused.value) and isinstance(refused.value, ValueError)


def test_a_damaged_record_is_a_mismatch_not_a_crash(two_slots: ic.TextModel) -> None:
    two_slots.generate("Hello", max_tokens=1).text()
    saving(two_slots).save_session("damaged")
    (sessions_folder() / "damaged.json").write_text('{"version": 1, "messages": "x"')
    with pytest.raises(ic.SessionMismatch, match="cannot be read"):
        saving(two_slots).restore_session("damaged")


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 101, "名前", 7])
def test_a_name_that_is_not_a_plain_file_name_is_an_invalid_value(
    two_slots: ic.TextModel, name: object
) -> None:
    with pytest.raises(ic.InvalidValue, match="a session's name"):
        saving(two_slots).restore_session(name)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_any_name_is_a_plain_file_in_the_folder_or_refused(name: str) -> None:
    store = store_in(Path("/sessions"))
    if SESSION_NAME.fullmatch(name):
        path = store._record_path(name)
        assert path.parent == Path("/sessions") and path.name == f"{name}.json"
    else:
        with pytest.raises(ic.InvalidValue):
            store.restore(None, name, 1)  # type: ignore[arg-type]


def test_nothing_generated_yet_is_said(smollm2_path: str) -> None:
    with (
        ic.load(smollm2_path, backend="llama_cpp", context_len=256) as model,
        pytest.raises(ic.InvalidValue, match="nothing to save yet"),
    ):
        saving(model).save_session("early")


def test_the_remote_backend_says_it_cannot_save_sessions(
    external_server: ExternalServer,
) -> None:
    with (
        ic.load(external_server.url, api_key=KEY) as model,
        pytest.raises(ic.UnsupportedOption, match="not one at a URL") as error,
    ):
        saving(model).save_session("remote", "Hello")
    assert error.value.option == "sessions"


def test_the_chat_command_saves_and_restores(smollm2_path: str) -> None:
    first = cli("chat", "--ctx", "1024", "-n", "4", stdin=f"{FACTS}\n/save cli-facts\n")
    assert first.returncode == 0, first.stderr
    assert "(saved session cli-facts:" in first.stderr
    second = cli(
        "chat", "--ctx", "1024", "-n", "4", "--stats", stdin="/restore cli-facts\nFact 3?\n"
    )
    assert second.returncode == 0, second.stderr
    assert "(restored session cli-facts:" in second.stderr
    counts = re.search(r"prompt: (\d+) tokens \((\d+) cached\)", second.stderr)
    assert counts is not None, second.stderr
    prompt, cached = int(counts[1]), int(counts[2])
    assert cached > 250 and prompt - cached < 30


def test_the_chat_command_names_a_missing_session() -> None:
    result = cli("chat", "--ctx", "1024", "-n", "4", stdin="/restore never-saved\n")
    assert result.returncode != 0
    assert "no session 'never-saved'" in result.stderr


def test_by_default_a_chat_is_saved_with_its_reply(
    two_slots: ic.TextModel, other_two_slots: ic.TextModel
) -> None:
    asked = conversation("the moon")
    stream = two_slots.chat(asked, max_tokens=6)
    reply = stream.text()
    saved = saving(two_slots).save_session("moon")
    assert [m.role for m in saved.messages] == ["user", "assistant"]
    assert saved.messages[-1].content == reply
    restored = saving(other_two_slots).restore_session("moon")
    assert restored.messages == saved.messages


def test_a_load_whose_cache_folder_cannot_be_made_loads_and_says_why_it_saves_none(
    smollm2_path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # root may write anywhere, but not under a file
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    with ic.load(smollm2_path, backend="llama_cpp", context_len=256) as model:
        model.generate("Hello", max_tokens=1).text()
        with pytest.raises(ic.UnsupportedOption, match="cache folder can be written"):
            saving(model).save_session("nowhere")
    assert "will save no sessions" in caplog.text


# -- the record, without a server ------------------------------------------------------------


class _Answers:
    """A stand-in for the server's client: every request gets `answer`."""

    def __init__(self, answer: dict[str, object]) -> None:
        self.answer = answer
        self.paths: list[str] = []

    def request(self, method: str, path: str, body: object = None) -> dict[str, object]:
        self.paths.append(path)
        return self.answer


def store_in(folder: Path, adapter: str | None = None) -> SessionStore:
    identity = SessionIdentity("model-print", "model.gguf", adapter, CONTEXT, "f16")
    return SessionStore(folder, identity)


def test_a_session_saved_with_another_adapter_is_refused_before_the_server_is_asked(
    tmp_path: Path,
) -> None:
    client = _Answers({"n_saved": 12})
    (tmp_path / "plain.slot").write_bytes(b"the server's file")
    assert store_in(tmp_path).save(client, 0, "plain", "Hello", 12) is not None  # type: ignore[arg-type]
    asked = len(client.paths)
    with pytest.raises(ic.SessionMismatch, match="another LoRA adapter"):
        store_in(tmp_path, adapter="adapter-print").restore(client, "plain", 1)  # type: ignore[arg-type]
    assert len(client.paths) == asked


def test_a_slot_taken_before_it_was_written_records_nothing(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    (tmp_path / "s.slot").write_bytes(b"the server's file")
    assert store.save(_Answers({"n_saved": 40}), 0, "s", "Hello", 40) is not None  # type: ignore[arg-type]
    assert (tmp_path / "s.json").is_file()
    assert store.save(_Answers({"n_saved": 7}), 0, "s", "Hello", 40) is None  # type: ignore[arg-type]
    with pytest.raises(ic.SessionNotFound):  # its old record would name another's cache
        store.restore(_Answers({"n_restored": 7}), "s", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "record",
    ['{"version": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "[]", '{"version": 2}'],
    ids=["nested-deep", "not-an-object", "another-version"],
)
def test_a_hostile_record_is_a_mismatch(tmp_path: Path, record: str) -> None:
    (tmp_path / "bad.slot").write_bytes(b"")
    (tmp_path / "bad.json").write_text(record)
    with pytest.raises(ic.SessionMismatch, match="cannot be read"):
        store_in(tmp_path).restore(None, "bad", 1)  # type: ignore[arg-type]


def test_a_chat_with_tool_calls_and_reasoning_comes_back_as_it_was_saved(tmp_path: Path) -> None:
    chat = [
        ic.Message("user", "Weather in Paris?"),
        ic.Message(
            "assistant",
            "",
            tool_calls=[ic.ToolCall("call_1", "get_weather", {"city": "Paris"})],
            reasoning="The user asks for the weather.",
        ),
        ic.Message("tool", "sunny", tool_call_id="call_1"),
    ]
    (tmp_path / "tools.slot").write_bytes(b"the server's file")
    store = store_in(tmp_path)
    saved = store.save(_Answers({"n_saved": 30}), 0, "tools", chat, 30)  # type: ignore[arg-type]
    restored = store.restore(_Answers({"n_restored": 30}), "tools", 1)  # type: ignore[arg-type]
    assert saved is not None and list(saved.messages) == list(restored.messages) == chat
