"""Tool calling on the CPU runtimes (llama.cpp, transformers): how tools and past calls reach the chat
template, the JSON schema a call is decoded under, and how calls are read back from the text. Pure: no
model, no I/O.

A call is written in the Hermes convention (the one Qwen2.5, Hermes and SmolLM templates teach):

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Templates that know tools (they use the `tools` variable) get the tools and the past calls in the OpenAI
shape and instruct the model themselves; for the others a system message describes the tools and this
convention. Only the text before `<tool_call>` is free: everything after it is decoded under a grammar
built from the tools' JSON schemas (see the runtimes), so every call parses and its arguments validate.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from raylight_pipelines.web.protocol import ChatCompletionRequest, FunctionDefinition

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
CALL_START = OPEN + "\n"  # the text that opens a call; the grammar takes over right after it
CALL_END = "\n" + CLOSE
NEXT_CALL = CALL_END + "\n" + CALL_START  # between two calls of one answer (parallel_tool_calls)


def template_knows_tools(template: str) -> bool:
    """Whether a Jinja chat template renders the `tools` variable itself."""
    return re.search(r"\btools\b", template) is not None


def _function(f: FunctionDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f.name, "parameters": f.parameters}
    if f.description:
        out["description"] = f.description
    return out


def template_tools(request: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The callable tools in the OpenAI shape that chat templates expect; None when no call may be made."""
    functions = request.callable_tools
    return [{"type": "function", "function": _function(f)} for f in functions] if functions else None


def instructions(request: ChatCompletionRequest) -> str:
    """A system prompt that describes the tools and the call convention (for templates without tools)."""
    listing = "\n".join(json.dumps(_function(f), ensure_ascii=False) for f in request.callable_tools)
    return ("You can call functions to help with the request. Each function is described by a JSON schema "
            f"inside <tools></tools>:\n<tools>\n{listing}\n</tools>\n"
            "To call a function, answer with a JSON object holding its name and arguments inside "
            f'{OPEN}{CLOSE} tags:\n{CALL_START}{{"name": "<function name>", "arguments": {{...}}}}{CALL_END}\n'
            "The result comes back inside <tool_response></tool_response> tags.")


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a client's own malformed call: show the model what it was sent


def call_text(name: str, arguments: Any) -> str:
    """One call in the Hermes convention, as the model writes it."""
    return CALL_START + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + CALL_END


def template_messages(request: ChatCompletionRequest, native: bool) -> list[dict[str, Any]]:
    """The request's messages for a chat template.

    native: the template knows tools, so assistant calls stay `tool_calls` (arguments as objects, as
    Hugging Face templates expect) and results stay role `tool`. Otherwise calls are written into the
    assistant's text, results become user turns in <tool_response> tags, and a system message describes
    the tools (when a call may be made).
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in request.messages:
        role = "system" if m.role == "developer" else m.role
        text = m.text()
        if m.role == "assistant" and m.tool_calls:
            names.update({c.id: c.function.name for c in m.tool_calls})
            if native:
                calls = [{"id": c.id, "type": "function",
                          "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
                         for c in m.tool_calls]
                out.append({"role": "assistant", "content": text, "tool_calls": calls})
                continue
            text = "\n".join([text, *(call_text(c.function.name, _arguments(c.function.arguments))
                                      for c in m.tool_calls)]).strip()
        elif m.role == "tool":
            if native:
                out.append({"role": "tool", "content": text, "tool_call_id": m.tool_call_id,
                            "name": names.get(m.tool_call_id or "", "")})
                continue
            role, text = "user", f"<tool_response>\n{text}\n</tool_response>"
        out.append({"role": role, "content": text})
    if not native and request.callable_tools:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + instructions(request)}
        else:
            out.insert(0, {"role": "system", "content": instructions(request)})
    return out


def _rebased(schema: Any, prefix: str) -> Any:
    """`schema` with every local `$ref` (`#`, `#/$defs/X`, `#/definitions/X`, any JSON pointer into it)
    rewritten to point below `prefix`, the pointer where the schema now lives inside a larger document."""
    if isinstance(schema, list):
        return [_rebased(item, prefix) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str) and (value == "#" or value.startswith("#/")):
            out[key] = prefix + value[1:]
        elif key in ("const", "enum", "default", "examples"):
            out[key] = value  # data, not schemas: a "$ref" key inside is a value
        else:
            out[key] = _rebased(value, prefix)
    return out


def call_schema(request: ChatCompletionRequest) -> dict[str, Any]:
    """The JSON schema of one call: the name of a callable tool and arguments that match its schema.

    Each tool's parameters become `$defs.tool<i>` of this document, their local references rebased onto
    it, so `#/$defs/...`, `#/definitions/...` and recursive `#` refs (what `openai.pydantic_function_tool`
    emits for nested models) resolve against the tool's own parameters, as they do for the client."""
    functions = request.callable_tools
    defs = {f"tool{i}": _rebased(f.parameters, f"#/$defs/tool{i}") for i, f in enumerate(functions)}
    one = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
            "properties": {"name": {"const": f.name}, "arguments": {"$ref": f"#/$defs/tool{i}"}}}
           for i, f in enumerate(functions)]
    return {"$defs": defs, **(one[0] if len(one) == 1 else {"anyOf": one})}


@dataclass(frozen=True)
class CallGrammar:
    """What is decoded after CALL_START: a call matching `schema` (JSON text, sorted keys), CALL_END, and,
    when `parallel`, more calls each joined by NEXT_CALL. Hashable, so runtimes can cache compiled ones."""

    schema: str
    parallel: bool


def call_grammar(request: ChatCompletionRequest) -> CallGrammar:
    # keys in the order the prompt teaches ("name" before "arguments"): the model picks the tool first
    return CallGrammar(json.dumps(call_schema(request)), request.parallel_tool_calls is True)


def openai_call(name: str, arguments: Any) -> dict[str, Any]:
    """A call in the OpenAI response shape (arguments as JSON text)."""
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


class CallReader:
    """Reads calls out of the constrained text as it streams in; `push` returns the calls it completed."""

    def __init__(self) -> None:
        self.buffer = ""
        self.calls: list[dict[str, Any]] = []

    def push(self, piece: str) -> list[dict[str, Any]]:
        self.buffer += piece
        done: list[dict[str, Any]] = []
        while CLOSE in self.buffer:
            body, _, self.buffer = self.buffer.partition(CLOSE)
            call = json.loads(body.strip().removeprefix(OPEN).strip())  # the grammar made it valid JSON
            done.append(openai_call(call["name"], call["arguments"]))
        self.calls += done
        return done
