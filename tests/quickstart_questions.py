"""The five documented quickstart questions (examples/quickstart/QUESTIONS.md) and how an answer is judged.

An answer is *right* when it states every key fact of its row (each a regular expression, case-insensitive)
and lists the document that states them among its sources. An answer on an access rule must also never
state the opposite of the rule (`contradicts`). The test in tests/integration/local/test_up.py asks them
through `raylight ask --json`; to score other answers (another model, say):

    python tests/quickstart_questions.py ANSWERS.jsonl    # one `raylight ask ... --json` document per line,
                                                          # in the order of QUESTIONS below
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

NEGATION = r"\b(no|not|never|cannot|can't|only|unless)\b"


@dataclass(frozen=True)
class Question:
    text: str
    facts: tuple[str, ...]  # every one must be in the answer
    sources: tuple[str, ...]  # one of them must be among the answer's sources
    contradicts: str | None = None  # an answer matching this states the opposite of the rule


QUESTIONS = (
    Question("What is the default chunk size and overlap?", (r"\b400\b", r"\b50\b"), ("docs/pipeline.md",)),
    Question("Which port does the local platform listen on, and where is its data stored?",
             (r"\b8000\b", r"\.raylight"), ("docs/quickstart.md",)),
    Question("How long may a Pipeline name be, and why?", (r"\b41\b", r"\b47\b|-agent"),
             ("docs/troubleshooting.md", "docs/pipeline.md")),
    Question("What do I need to serve a model with a restricted licence such as llama3.1?",
             (r"licenseAccepted",), ("docs/licences.md",)),
    Question("Can a user outside a group see that group's documents?", (NEGATION,), ("docs/security.md",),
             contradicts=r"\byes\b|\b(can|may|will|could|do|does) (still )?(see|access|retrieve|read|get)\b"),
)


def states_the_opposite(question: Question, answer: str) -> bool:
    """Whether some sentence of the answer affirms what the rule forbids, with no negation in it."""
    if question.contradicts is None:
        return False
    return any(re.search(question.contradicts, s, re.I) and not re.search(NEGATION, s, re.I)
               for s in re.split(r"(?<=[.!?])\s+", answer))


def judge(question: Question, reply: dict[str, Any]) -> list[str]:
    """What is wrong with a `raylight ask --json` reply to `question` (empty when it is right)."""
    answer = reply.get("answer") or ""
    problems = [f"missing {fact!r}" for fact in question.facts if not re.search(fact, answer, re.I)]
    cited = [str(c.get("source", "")) for c in reply.get("citations") or []]
    if not any(src.endswith(want) for src in cited for want in question.sources):
        problems.append(f"does not cite {' or '.join(question.sources)} (cites {cited})")
    if states_the_opposite(question, answer):
        problems.append("states the opposite of the rule")
    return problems


def main(path: str) -> int:
    with open(path) as fh:
        replies = [json.loads(line) for line in fh if line.strip()]
    right = 0
    for question, reply in zip(QUESTIONS, replies, strict=True):
        problems = judge(question, reply)
        right += not problems
        print(f"{'RIGHT' if not problems else 'WRONG'}  {question.text}\n  {reply.get('answer')!r}")
        for problem in problems:
            print(f"  - {problem}")
    print(f"{right} of {len(QUESTIONS)} right")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
