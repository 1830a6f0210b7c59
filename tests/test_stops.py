"""Stop strings, matched in the core for every `StreamingModel` backend, and the finish
reasons the core gives a stream.

A backend here replays tokens it is given (the real llama-server's part is in
tests/test_finish.py): what the stream delivers is compared with the text cut at the
first stop string, token by token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import inference_core as ic
from inference_core.streams import GenerationScope, StreamingModel, TokenSource
from inference_core.types import MAX_STOP_LENGTH, MAX_STOPS, FinishReason


class Replay(StreamingModel):
    """Gives back the tokens it was made with, whatever the prompt, and notes how far
    its generator was read, whether it was aborted and whether it was closed."""

    def __init__(self, tokens: Sequence[ic.Token], reason: FinishReason | None = "length") -> None:
        super().__init__()
        self.script = list(tokens)
        self.reason = reason
        self.produced = 0
        self.aborted = False
        self.closed = False

    def _tokens(
        self, prompt: str | Sequence[ic.Message], config: ic.GenerateConfig, scope: GenerationScope
    ) -> TokenSource:
        def tokens() -> Iterator[ic.Token]:
            try:
                for token in self.script:
                    self.produced += 1
                    yield token
            finally:
                self.closed = True

        def abort() -> None:
            self.aborted = True

        return TokenSource(tokens(), abort=abort, finish_reason=lambda: self.reason)

    def close(self) -> None:
        pass


def tokens_of(*texts: str) -> list[ic.Token]:
    return [ic.Token(100 + n, text) for n, text in enumerate(texts)]


def expected(tokens: list[ic.Token], stops: Sequence[str]) -> tuple[list[ic.Token], bool]:
    """The rule, written as the README states it: the tokens whose text ends at or before
    the first place a stop string begins in the whole text; an empty-text token (the first
    bytes of a character) ends where the token that completes its character ends."""
    full = "".join(token.text for token in tokens)
    starts = [full.find(stop) for stop in stops if stop in full]
    if not starts:
        return tokens, False
    cut = min(starts)
    ends, end = [], 0
    for token in tokens:
        end += len(token.text)
        ends.append(end)
    kept = []
    for index, token in enumerate(tokens):
        completing = next((ends[i] for i in range(index, len(tokens)) if tokens[i].text), None)
        if completing is None or completing > cut:
            break
        kept.append(token)
    return kept, True


# -- the rule, on any tokens and stop strings ---------------------------------------------

PIECES = st.sampled_from(["", "a", "b", "ab", "ba", "aab", "c", " ", "🎉", "b🎉a"])
STOPS = st.lists(st.text(alphabet="abc🎉 ", min_size=1, max_size=4), min_size=1, max_size=3)


@settings(deadline=None)
@given(texts=st.lists(PIECES, max_size=12), stops=STOPS)
def test_the_stream_is_the_text_cut_at_the_first_stop_string_in_whole_tokens(
    texts: list[str], stops: list[str]
) -> None:
    tokens = tokens_of(*texts)
    stream = Replay(tokens).generate("hi", stop=stops)
    delivered = list(stream)
    kept, matched = expected(tokens, stops)
    assert delivered == kept
    assert stream.finish_reason == ("stop" if matched else "length")
    full = "".join(texts)
    text = "".join(token.text for token in delivered)
    assert not any(stop in text for stop in stops)
    if matched:
        cut = min(full.find(stop) for stop in stops if stop in full)
        # The whole text cut there, but for a token that begins before and ends after it.
        assert full[:cut].startswith(text)
        if text != full[:cut]:
            straddling = next(t for t in tokens[len(delivered) :] if t.text)
            assert len(text) < cut < len(text) + len(straddling.text)


@settings(deadline=None)
@given(texts=st.lists(PIECES.filter(bool), max_size=12))
def test_text_that_cannot_begin_a_stop_string_is_delivered_token_by_token(
    texts: list[str],
) -> None:
    model = Replay(tokens_of(*texts))
    produced = [model.produced for _ in model.generate("hi", stop=["zz", "\n\n"])]
    assert produced == list(range(1, len(texts) + 1))


@pytest.mark.parametrize(
    ("texts", "when"),
    [
        (("a", "x", "y"), [2, 2, 3]),  # "a" may begin "abc" until "x" comes
        (("xa", "b", "d", "e"), [3, 3, 3, 4]),  # "ab" may too, until "d"
        (("x", "ab", "c"), [1]),  # "abc" ends the stream as soon as it is complete
    ],
)
def test_a_token_is_held_back_only_while_a_stop_string_may_begin_in_it(
    texts: tuple[str, ...], when: list[int]
) -> None:
    model = Replay(tokens_of(*texts))
    assert [model.produced for _ in model.generate("hi", stop="abc")] == when


@pytest.mark.parametrize(
    ("texts", "stops", "delivered"),
    [
        (("The", " end", " is", " near"), [" is"], ["The", " end"]),
        (("The", " end", " is", " near"), ["nd is"], ["The"]),  # begins inside " end"
        (("The", " end", " is"), ["e"], []),  # begins inside the first token
        (("a", "b", "c", "e"), ["abcd", "bc"], ["a"]),  # "abcd" was possible, until "e"
        (("a", "b", "c", "d"), ["bc", "abcd"], []),  # the first to begin, not to end
        (("x", "", "", "🎉", "y"), ["🎉"], ["x"]),  # the character's first bytes go too
        (("one", " two"), ["two!"], ["one", " two"]),  # held back, then no match
    ],
)
def test_where_the_stream_ends(
    texts: tuple[str, ...], stops: list[str], delivered: list[str]
) -> None:
    tokens = tokens_of(*texts)
    assert [t.text for t in Replay(tokens).generate("hi", stop=stops)] == delivered


def test_a_stop_string_that_begins_inside_a_token_leaves_that_token_out() -> None:
    tokens = tokens_of("Hello", " wor", "ld", "!")
    stream = Replay(tokens).generate("hi", stop=["orld"])
    assert list(stream) == tokens[:1] and stream.finish_reason == "stop"


def test_a_match_aborts_the_backend_and_reads_no_further() -> None:
    model = Replay(tokens_of("a", " b", " STOP", " c", " d"))
    stream = model.generate("hi", stop="STOP")
    assert stream.text() == "a b"
    assert model.aborted and model.closed and model.produced == 3
    assert stream.finish_reason == "stop" and stream.err() is None


def test_held_back_text_that_does_not_match_is_delivered_with_the_backends_reason() -> None:
    tokens = tokens_of("a", " b", " ST")
    for reason in ("stop", "length"):
        model = Replay(tokens, reason)
        stream = model.generate("hi", stop="STOP")
        assert list(stream) == tokens and stream.finish_reason == reason
        assert not model.aborted


def test_async_and_batch_streams_cut_at_stop_strings_too() -> None:
    model = Replay(tokens_of("a", " b", " STOP", " c"))

    async def run() -> tuple[list[ic.Token], object, list[ic.BatchResult]]:
        stream = model.agenerate("hi", stop="STOP")
        tokens = [token async for token in stream]
        return tokens, stream.finish_reason, await model.abatch_generate(["x"], stop="STOP")

    tokens, reason, batch = asyncio.run(run())
    assert [t.text for t in tokens] == ["a", " b"] and reason == "stop"
    assert [(r.text, r.finish_reason) for r in batch] == [("a b", "stop")]
    [result] = model.batch_generate(["x"], stop=[" b", "c"])
    assert result.text == "a" and result.finish_reason == "stop"


def test_classify_gives_the_next_token_whatever_the_stop_strings() -> None:
    tokens = tokens_of("Hello", " there")
    assert Replay(tokens).classify(["hi"], stop="Hel") == tokens[:1]


def test_chat_cuts_at_stop_strings_too() -> None:
    stream = Replay(tokens_of("a", " b", " STOP")).chat([ic.Message("user", "hi")], stop="STOP")
    assert stream.text() == "a b" and stream.finish_reason == "stop"


# -- the finish reasons the core gives -------------------------------------------------


def test_a_backend_that_gives_no_reason_is_judged_by_its_count() -> None:
    model = Replay(tokens_of("a", " b", " c"), reason=None)
    full, short = model.generate("hi", max_tokens=3), model.generate("hi", max_tokens=5)
    assert (full.text(), short.text()) == ("a b c", "a b c")
    assert (full.finish_reason, short.finish_reason) == ("length", "stop")


def test_a_reason_that_is_none_of_ours_is_the_backends_error() -> None:
    stream = Replay(tokens_of("a"), reason="done").generate("hi")  # type: ignore[arg-type]
    with pytest.raises(ic.GenerationError, match=r"finish reason 'done'.*bug of the backend"):
        list(stream)
    assert isinstance(stream.err(), ic.GenerationError) and stream.finish_reason is None


def test_an_async_stream_has_no_reason_until_its_own_iteration_ends() -> None:
    """Its thread reads ahead: the sync stream ends while tokens still wait for the loop."""

    async def run() -> list[object]:
        stream = Replay(tokens_of("a", " b", " c")).agenerate("hi")
        seen = [stream.finish_reason, (await stream.__anext__()).text]
        for pump in threading.enumerate():
            if pump.name == "inference-async-stream":
                pump.join(10)  # the sync stream has ended
        seen.append(stream.finish_reason)
        seen.append(await stream.text())
        return [*seen, stream.finish_reason]

    assert asyncio.run(run()) == [None, "a", None, "a b c", "length"]


# -- the option ----------------------------------------------------------------------


@given(st.lists(st.text(min_size=1, max_size=MAX_STOP_LENGTH), max_size=MAX_STOPS))
def test_any_non_empty_strings_within_the_limits_are_stop_strings(stops: list[str]) -> None:
    assert ic.GenerateConfig(stop=stops).stop == tuple(stops)


@given(
    st.one_of(
        st.lists(st.text(max_size=3), min_size=1).filter(lambda s: "" in s),
        st.lists(st.text(min_size=1), min_size=MAX_STOPS + 1, max_size=MAX_STOPS + 3),
        st.lists(st.text(min_size=MAX_STOP_LENGTH + 1, max_size=MAX_STOP_LENGTH + 5), min_size=1),
        st.lists(st.integers() | st.none() | st.binary(min_size=1), min_size=1),
        st.integers(),
        st.dictionaries(st.text(min_size=1), st.text(min_size=1), min_size=1),
    )
)
def test_anything_else_is_an_invalid_value_naming_stop(value: object) -> None:
    with pytest.raises(ic.InvalidValue, match="stop") as caught:
        ic.GenerateConfig(stop=value)  # type: ignore[arg-type]
    assert caught.value.field == "stop"


def test_one_stop_string_may_be_given_alone() -> None:
    assert ic.GenerateConfig(stop="###").stop == ("###",)
