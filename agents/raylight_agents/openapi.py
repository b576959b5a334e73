"""The agent app's OpenAPI document, describing the bodies that really travel.

The routes take the raw `Request` (the guard reads and checks a body before pydantic sees it), so FastAPI
alone would publish operations without request bodies and with a made-up 422. `describe(app, bodies)`
replaces `app.openapi` with a document built from the same pydantic models the routes validate with, the
response models below, every error status in the OpenAI error shape, and OpenAPI links (invoke and chat
give the `thread_id` that the thread, stream and next invoke take), so a stateful fuzzer (schemathesis,
tests/unit/agents/test_openapi_schemathesis.py) reaches every route with real identifiers.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from raylight_pipelines.web.responses import ChatCompletion, ErrorBody, Health, ModelList

REF = "#/components/schemas/{model}"


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")  # responses may grow fields; clients ignore unknown ones


class Citation(_Out):
    ref: int
    id: str
    source: str
    text: str


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int


class InvokeOut(_Out):
    answer: str
    citations: list[Citation]
    thread_id: str
    grounding: Literal["cited", "context", "none"]
    retrieved: list[str]
    usage: Usage


class Message(_Out):
    role: str
    content: str


class ThreadOut(_Out):
    thread_id: str
    messages: list[Message]
    citations: list[Citation]


class HitMetadata(_Out):
    heading: str | None
    page: int | None
    start: int | None
    end: int | None


class Hit(_Out):
    rank: int
    id: str
    source: str
    title: str | None
    text: str
    score: float
    metadata: HitMetadata


class SearchOut(_Out):
    pipeline: str
    query: str
    retrieval: dict[str, Any]
    results: list[Hit]


class ChatOut(ChatCompletion):
    """The OpenAI chat completion (web/responses, the one the model app sends too) and a Pipeline's fields."""

    citations: list[Citation]
    thread_id: str
    grounding: Literal["cited", "context", "none"]


class Check(_Out):
    ok: bool
    detail: str


class ReadyOut(_Out):
    """200 with ready=true, or 503 with ready=false and the failing check's reason."""

    ready: bool
    visible: bool
    model: Check | None = None
    store: Check | None = None
    threads: Check | None = None


ERRORS = {
    "400": "invalid JSON, Unicode, nesting or field (the message names each field)",
    "401": "missing or wrong bearer token",
    "404": "no such pipeline, thread or route (a thread of another user is not found either)",
    "405": "wrong method",
    "408": "the body did not arrive in time",
    "409": "another turn on this thread is running",
    "413": "the body is over the pipeline's limit",
    "431": "the headers are too large",
    "503": "a dependency (model, store, thread store, auth keys) is down; the message says which",
    "504": "the run took longer than the pipeline's time limit",
}
# Server-sent events, each {event, data}: the agent's retrieval, token, final (and error after the first
# event); chat's stream sends OpenAI chunks as plain `data:` lines, ending with `data: [DONE]`.
SSE = {"text/event-stream": {"schema": {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"enum": ["retrieval", "token", "final", "error"]}, "data": {"type": "string"}}}}}
CHAT_SSE = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}}}

# operationId -> (method, path, request model name or None, 200 response: model name or "sse")
ROUTES: dict[str, tuple[str, str, str | None, str]] = {
    "invoke": ("post", "/v1/pipelines/{name}/invoke", "invoke", "InvokeOut"),
    "stream": ("post", "/v1/pipelines/{name}/stream", "invoke", "sse"),
    "search": ("post", "/v1/pipelines/{name}/search", "search", "SearchOut"),
    "getThread": ("get", "/v1/pipelines/{name}/threads/{thread_id}", None, "ThreadOut"),
    "chatCompletions": ("post", "/v1/chat/completions", "chat", "ChatOut"),
    "listModels": ("get", "/v1/models", None, "ModelList"),
    "healthz": ("get", "/healthz", None, "Health"),
    "readyz": ("get", "/readyz", None, "ReadyOut"),
}
THREAD_USER = "$request.body#/user/id"
LINKS: dict[str, dict[str, Any]] = {
    "invoke": {
        "GetThread": {"operationId": "getThread", "parameters": {
            "name": "$request.path.name", "thread_id": "$response.body#/thread_id", "user": THREAD_USER}},
        "NextTurn": {"operationId": "invoke", "parameters": {"name": "$request.path.name"},
                     "requestBody": {"input": "And how is that configured?", "thread_id": "$response.body#/thread_id",
                                     "user": "$request.body#/user"}},
        "StreamNextTurn": {"operationId": "stream", "parameters": {"name": "$request.path.name"},
                           "requestBody": {"input": "Say that again, briefly.",
                                           "thread_id": "$response.body#/thread_id",
                                           "user": "$request.body#/user"}},
    },
    "chatCompletions": {
        "GetThread": {"operationId": "getThread", "parameters": {
            "name": "$response.body#/model", "thread_id": "$response.body#/thread_id"}},
    },
}
RESPONSES = (ErrorBody, InvokeOut, ThreadOut, SearchOut, ChatOut, ModelList, Health, ReadyOut)


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=name)}}}


def document(base: dict[str, Any], bodies: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """FastAPI's document for `app` with the bodies, statuses and links described above."""
    doc = copy.deepcopy(base)
    keys: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in bodies.values()]
    keys += [(m, "serialization") for m in RESPONSES]
    refs, defs = models_json_schema(keys, ref_template=REF)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which this app never sends
        schemas.pop(name, None)
    schemas.update(defs.get("$defs", {}))
    doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "description":
                                            "the Pipeline's token, or a signed identity in OIDC mode"}}
    for op_id, (method, path, body, ok) in ROUTES.items():
        op = doc["paths"][path][method]
        op["operationId"] = op_id
        if body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": refs[(bodies[body], "validation")]}}}
        if path in ("/healthz", "/readyz"):
            op["security"] = []  # public probes
        else:
            op["security"] = [{}, {"bearer": []}]  # the token is needed only where the pipeline sets agent.auth
        responses: dict[str, Any] = {"200": {"description": "OK", "content": SSE if ok == "sse" else _json(ok)}}
        if op_id == "chatCompletions":  # "stream": true
            responses["200"]["content"].update(CHAT_SSE)
        if op_id in LINKS:
            responses["200"]["links"] = LINKS[op_id]
        for status, why in ERRORS.items():
            responses[status] = {"description": why, "content": _json("ErrorBody")}
        if op_id == "readyz":
            responses["503"] = {"description": "not ready: the failing check says why", "content": _json("ReadyOut")}
        op["responses"] = responses
    return doc


def describe(app: FastAPI, bodies: dict[str, type[BaseModel]]) -> None:
    """Serve `document(...)` at the app's /openapi.json (built once, on first request)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            base = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = document(base, bodies)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
