"""Constrained decoding for every CPU chat runtime: a JSON schema (`response_format`) or tool calls become an
llguidance grammar, and before each token a matcher masks out every token that would leave it, so the output
is always a valid prefix of a matching document (complete unless max_tokens cuts it off).

Both CPU runtimes take their grammars from here: transformers applies llguidance's mask in a logits processor,
llama-cpp hands the Lark text to llama.cpp's own llguidance sampler. A schema is enforced, or refused, the same
way whichever runtime serves it.
"""

from __future__ import annotations

import json
from typing import Any

from raylight_pipelines.serving import tool_calls
from raylight_pipelines.serving.runtimes.base import Constraint
from raylight_pipelines.serving.tool_calls import CallGrammar

_DATA_KEYWORDS = ("const", "enum", "default", "examples")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


def closed_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object schema that lists properties and says
    nothing of others. llguidance follows JSON Schema (unlisted properties allowed), which lets a small model
    pad a tool call's arguments with invented keys; OpenAI's strict mode and llama.cpp's own schema converter
    read such objects as closed, so we do too. An explicit `additionalProperties` (true or a schema) is kept.
    Pure; returns a new document."""
    if isinstance(schema, list):
        return [closed_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DATA_KEYWORDS:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):  # names -> schemas (a property may be "properties")
            out[key] = {name: closed_objects(sub) for name, sub in value.items()}
        else:
            out[key] = closed_objects(value)
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def lark(constraint: Constraint) -> str:
    """The constraint as a Lark grammar for llguidance. A JSON schema: the whole answer is one matching
    document. Tool calls: what follows CALL_START, one call (or, parallel, several joined by NEXT_CALL), then
    CALL_END. Object schemas are closed first (closed_objects)."""
    if isinstance(constraint, CallGrammar):
        more = f" ({json.dumps(tool_calls.NEXT_CALL)} call)*" if constraint.parallel else ""
        return (f"start: call{more} {json.dumps(tool_calls.CALL_END)}\n"
                f"call: %json {json.dumps(closed_objects(json.loads(constraint.schema)))}")
    return f"start: %json {json.dumps(closed_objects(constraint))}"


def grammar(constraint: Constraint, tokenizer: Any) -> str:
    """The constraint's llguidance grammar, checked (against `tokenizer`, an llguidance LLTokenizer, when one
    is given). Raises ValueError with llguidance's reason when it cannot be enforced (a keyword llguidance does
    not implement, a $ref it cannot resolve)."""
    import llguidance

    text = llguidance.LLMatcher.grammar_from_lark(lark(constraint))
    error = llguidance.LLMatcher.validate_grammar(text, tokenizer)
    if error:
        raise ValueError(error)
    return str(text)


def problem(constraint: Constraint, tokenizer: Any) -> str | None:
    """Why `constraint` cannot be enforced (None when it can): a runtime's `constraint_problem`."""
    try:
        grammar(constraint, tokenizer)
    except ValueError as exc:
        return f"this JSON schema cannot be enforced: {exc}"
    return None
