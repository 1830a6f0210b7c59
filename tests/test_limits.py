"""What we send is bounded before it is sent: a count the server cannot hold, a grammar
or a schema nested deep enough to crash it, is the caller's `InvalidValue`."""

from __future__ import annotations

import pytest

import inference_core as ic
from inference_core.types import MAX_TOKENS

YES_OR_NO = 'root ::= "yes" | "no"'


@pytest.mark.server
def test_the_most_tokens_allowed_is_a_count_the_server_takes(shared_model: ic.TextModel) -> None:
    answer = shared_model.generate("Is the sky blue?", grammar=YES_OR_NO, max_tokens=MAX_TOKENS)
    assert answer.text() in ("yes", "no")
