"""How tests/quickstart_questions.py judges an answer (the quickstart answer test relies on it)."""

from __future__ import annotations

import pytest
from quickstart_questions import QUESTIONS, judge, states_the_opposite

ACCESS = QUESTIONS[4]
SECURITY = [{"source": "path:docs/security.md"}]


@pytest.mark.parametrize("answer", [
    "Yes.", "Yes, they can see them.", "A user outside a group can see that group's documents.",
    "No restrictions apply. Users outside the group can still access them [1].",
])
def test_affirming_what_the_access_rule_forbids_is_the_opposite(answer: str) -> None:
    assert states_the_opposite(ACCESS, answer)
    assert "states the opposite of the rule" in judge(ACCESS, {"answer": answer, "citations": SECURITY})


@pytest.mark.parametrize("answer", [
    "No.", "No: a user outside a group never sees that group's chunks [1].",
    "A user outside a group can only see that group's documents if they are within the group.",
    "Chunks with groups can only be retrieved by callers who belong to at least one of those groups.",
])
def test_denials_and_the_rule_itself_are_not_the_opposite(answer: str) -> None:
    assert not states_the_opposite(ACCESS, answer)
    assert judge(ACCESS, {"answer": answer, "citations": SECURITY}) == []


def test_an_answer_is_right_only_with_every_fact_and_the_source_listed() -> None:
    chunking = QUESTIONS[0]
    both = "The default chunk size is 400 tokens and the overlap is 50 tokens."
    assert judge(chunking, {"answer": both, "citations": [{"source": "path:docs/pipeline.md"}]}) == []
    assert judge(chunking, {"answer": "It is 400 tokens.", "citations": [{"source": "path:docs/pipeline.md"}]})
    assert judge(chunking, {"answer": both, "citations": [{"source": "path:docs/security.md"}]})
