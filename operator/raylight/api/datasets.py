"""Fine-tuning records: the two JSONL shapes a FineTune dataset may hold, checked the same way by the API
(inline records, at admission) and by the training entrypoint (every line of a file it reads).

- chat: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}` with at least one
  assistant turn (the assistant turns are what the model learns);
- instruction: `{"instruction": "...", "input": "..." (optional), "output": "..."}`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

RecordFormat = Literal["chat", "instruction"]
ROLES = ("system", "user", "assistant")


def record_problem(record: Any) -> str | None:
    """None when `record` is a valid chat or instruction record, else why it is not."""
    if not isinstance(record, dict):
        return "must be a JSON object"
    if "messages" in record:
        extra = set(record) - {"messages"}
        if extra:
            return f"a chat record has only 'messages' (unexpected: {', '.join(sorted(extra))})"
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            return "messages must be a non-empty list"
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or set(message) != {"role", "content"}:
                return f"messages[{i}] must be an object with exactly role and content"
            if message["role"] not in ROLES:
                return f"messages[{i}].role must be one of {', '.join(ROLES)}"
            if not isinstance(message["content"], str) or not message["content"].strip():
                return f"messages[{i}].content must be a non-empty string (not only whitespace)"
        if not any(m["role"] == "assistant" for m in messages):
            return "messages needs at least one assistant turn to learn from"
        return None
    if "instruction" in record or "output" in record:
        extra = set(record) - {"instruction", "input", "output"}
        if extra:
            return f"an instruction record has instruction, input and output (unexpected: {', '.join(sorted(extra))})"
        for key in ("instruction", "output"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                return f"{key} must be a non-empty string (not only whitespace)"
        if "input" in record and not isinstance(record["input"], str):
            return "input must be a string"
        return None
    return 'neither a chat record {"messages": [...]} nor an instruction record {"instruction", "output"}'


def record_format(record: dict[str, Any]) -> RecordFormat:
    return "chat" if "messages" in record else "instruction"


def to_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """A valid record as chat messages (an instruction record: one user turn, one assistant turn)."""
    if "messages" in record:
        return [dict(m) for m in record["messages"]]
    prompt = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]


def parse_jsonl(text: str) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """(records, [(line number, problem)]) of a JSONL document; blank lines are skipped."""
    records: list[dict[str, Any]] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((number, f"not valid JSON: {exc.msg}"))
            continue
        problem = record_problem(record)
        if problem:
            problems.append((number, problem))
        else:
            records.append(record)
    return records, problems
