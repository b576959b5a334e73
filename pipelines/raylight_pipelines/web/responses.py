"""The one owner of every OpenAI response shape the apps send: pydantic models, the builders that make them,
ids, and server-sent-event framing.

Every app (a ModelDeployment's `ModelServer`, a Pipeline's `AgentServer`, the local gateway and the routes
other modules add) builds its answers here, and its OpenAPI document describes these same models, so the
clients' view of ids, bodies and chunks is one:

- `chat_completion(...)` -> `ChatCompletion` as a dict; `chat_chunk(...)` -> `ChatCompletionChunk`;
  `extra` fields (a Pipeline's `citations`, `thread_id`, `grounding`) ride along at the top level.
- `new_id(prefix)`: `<prefix>-<24 hex digits>` (96 random bits), the one id format (`chatcmpl-`, `rerank-`, ...).
- `sse(data, event=None)`: one event (`event: <name>` when named, then `data: <json>`); `SSE_DONE` ends an
  OpenAI stream; `sse_error(error)` is the OpenAI error body as an event.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from raylight_pipelines.web.errors import ApiError

ID_HEX_DIGITS = 24


def new_id(prefix: str, separator: str = "-") -> str:
    """`<prefix>-<24 hex digits>`: the one id format of every response (96 random bits); the Responses API
    writes its ids with "_" (`resp_...`, as OpenAI's)."""
    return f"{prefix}{separator}{uuid.uuid4().hex[:ID_HEX_DIGITS]}"


def completion_id() -> str:
    return new_id("chatcmpl")


class _Out(BaseModel):
    # Responses may grow fields (a Pipeline's citations, say); clients ignore the ones they do not know.
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Out):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(_Out):
    """Every refusal, on every route and app: the OpenAI error shape."""

    error: ErrorDetail


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class EmbeddingUsage(_Out):
    prompt_tokens: int
    total_tokens: int


class FunctionCallOut(_Out):
    name: str
    arguments: str


class ToolCallOut(_Out):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(_Out):
    role: Literal["assistant"]
    content: str | None  # null when the answer is only tool calls
    tool_calls: list[ToolCallOut] | None = None


class Logprobs(_Out):
    content: list[dict[str, Any]]


class ChatChoice(_Out):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: Logprobs | None


class ChatCompletion(_Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkChoice(_Out):
    index: int
    delta: dict[str, Any]
    finish_reason: str | None
    logprobs: Logprobs | None


class ChatCompletionChunk(_Out):
    """One `data:` event of a chat stream; the last one before `[DONE]` may carry only `usage`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class Embedding(_Out):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingList(_Out):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class RerankResult(_Out):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None


class RerankList(_Out):
    id: str
    object: Literal["list"]
    model: str
    results: list[RerankResult]
    usage: EmbeddingUsage


class TextChoice(_Out):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class TextCompletion(_Out):
    """A legacy `POST /v1/completions` answer (`object: text_completion`)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    owned_by: str


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]


class Health(_Out):
    status: Literal["ok"]


class Tokenizer(_Out):
    """`GET /v1/tokenizer` of an embedding model: its window and its tokenizer.json."""

    object: Literal["tokenizer"]
    model: str
    max_tokens: int
    tokenizer: dict[str, Any]


# ---------------------------------------------------------------- builders


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def choice(index: int, text: str, finish_reason: str, tool_calls: list[dict[str, Any]] | None = None,
           logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One choice of a chat completion; content is null when the answer is only tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": text if text.strip() or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "finish_reason": finish_reason,
            "logprobs": None if logprobs is None else {"content": logprobs}}


def chat_completion(cid: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int,
                    completion_tokens: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `ChatCompletion` (as the dict that is sent); `extra` adds top-level extension fields."""
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, completion_tokens), **(extra or {})}


def text_completion(cid: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int,
                    completion_tokens: int, created: int | None = None, chunk: bool = False) -> dict[str, Any]:
    """A legacy completion (or one of its streamed chunks): choices are {"index", "text", "finish_reason",
    "logprobs"}."""
    body: dict[str, Any] = {"id": cid, "object": "text_completion", "created": created or int(time.time()),
                            "model": model, "choices": choices}
    if not chunk or not choices:
        body["usage"] = usage(prompt_tokens, completion_tokens)
    return body


def chat_chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
               usage_: dict[str, int] | None = None, index: int = 0,
               logprobs: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """A `ChatCompletionChunk`: one choice's delta, or (with `usage_`) the usage-only chunk with no choices."""
    chunk: dict[str, Any] = {
        "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason,
                     "logprobs": None if logprobs is None else {"content": logprobs}}]
        if usage_ is None else [],
    }
    if usage_ is not None:
        chunk["usage"] = usage_
    return {**chunk, **(extra or {})}


def tool_call_deltas(position: int, call: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream deltas of one finished call: its id and name, then its arguments (OpenAI's order)."""
    function = call["function"]
    return [{"tool_calls": [{"index": position, "id": call["id"], "type": "function",
                             "function": {"name": function["name"], "arguments": ""}}]},
            {"tool_calls": [{"index": position, "function": {"arguments": function["arguments"]}}]}]


def rerank_response(model: str, texts: list[str], scores: list[float], top_n: int | None,
                    return_documents: bool, tokens: int) -> dict[str, Any]:
    """A `RerankList`: results best first, {"index" (into the request's documents), "relevance_score",
    "document"?}."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_n]
    results: list[dict[str, Any]] = []
    for i in order:
        result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if return_documents:
            result["document"] = {"text": texts[i]}
        results.append(result)
    return {"id": new_id("rerank"), "object": "list", "model": model, "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def sse(data: dict[str, Any] | str, event: str | None = None) -> str:
    """One server-sent event: `event: <name>` when named, `data: <json>` and a blank line."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


SSE_DONE = sse("[DONE]")


def sse_error(error: ApiError) -> str:
    return sse(error.body())


def sse_error_event(error: ApiError) -> str:
    """A refusal as a named `error` event (a Pipeline's /stream): {"status", "error": {...}}."""
    return sse({"status": error.status, **error.body()}, "error")
