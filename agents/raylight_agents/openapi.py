"""The agent app's OpenAPI document (built by raylight_pipelines.web.openapi), describing the bodies that
really travel: `describe(app, bodies)` serves a document built from the same pydantic models the routes
validate with, the response models below (the chat completion is web's), every error status in the OpenAI
error shape, and OpenAPI links (invoke and chat
give the `thread_id` that the thread, stream and next invoke take), so a stateful fuzzer (schemathesis,
tests/unit/agents/test_openapi_schemathesis.py) reaches every route with real identifiers.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from raylight_pipelines.web import openapi
from raylight_pipelines.web.openapi import ANY_JSON, DATA_SSE, EVENT_SSE, Operation
from raylight_pipelines.web.responses import ChatCompletion, Health, ModelList
from raylight_pipelines.web.responses_api import ResponsesRequest

from raylight_agents.mcp_server import MCP_PATH, ROUTE_METHODS


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


class SentenceSupport(_Out):
    """One sentence of the answer and the citations ([n]) of the sources that support it (docs/grounding.md)."""

    text: str
    refs: list[int]
    supported: bool


class InvokeOut(_Out):
    answer: str
    citations: list[Citation]
    thread_id: str
    grounding: Literal["cited", "context", "none"]
    support: list[SentenceSupport]
    evidence_score: float | None
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
    support: list[SentenceSupport]


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
MCP_CONTENT = {**ANY_JSON, **EVENT_SSE}
MCP_STATUSES: dict[str, tuple[str, type[BaseModel] | dict[str, Any] | None]] = {
    "202": ("a notification or response accepted (no body)", None),
    "406": ("the Accept header does not take JSON and event streams", ANY_JSON),
}
SECURITY = {"bearer": {"type": "http", "scheme": "bearer",
                       "description": "the Pipeline's token, or a signed identity in OIDC mode"}}
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


def operations(bodies: dict[str, type[BaseModel]]) -> dict[str, Operation]:
    """The agent app's routes, with the request models the server validates with (`bodies`: invoke, search,
    chat) and the responses above."""
    return {
        "invoke": Operation("post", "/v1/pipelines/{name}/invoke", InvokeOut, bodies["invoke"],
                            links=LINKS["invoke"]),
        "stream": Operation("post", "/v1/pipelines/{name}/stream", SSE, bodies["invoke"]),
        "search": Operation("post", "/v1/pipelines/{name}/search", SearchOut, bodies["search"]),
        "getThread": Operation("get", "/v1/pipelines/{name}/threads/{thread_id}", ThreadOut),
        "chatCompletions": Operation("post", "/v1/chat/completions", ChatOut, bodies["chat"], stream=DATA_SSE,
                                     links=LINKS["chatCompletions"]),
        # the Responses API (web/responses_api): its request model; the Response object as JSON
        "createResponse": Operation("post", "/v1/responses", ANY_JSON, ResponsesRequest, stream=EVENT_SSE),
        "getResponse": Operation("get", "/v1/responses/{response_id}", ANY_JSON),
        "deleteResponse": Operation("delete", "/v1/responses/{response_id}", ANY_JSON),
        # the Pipeline's MCP server (raylight_agents.mcp_server): JSON-RPC over streamable HTTP
        **{f"mcp{method.title()}": Operation(method.lower(), MCP_PATH, MCP_CONTENT, statuses=MCP_STATUSES)
           for method in ROUTE_METHODS},
        "listModels": Operation("get", "/v1/models", ModelList),
        "healthz": Operation("get", "/healthz", Health, public=True),
        "readyz": Operation("get", "/readyz", ReadyOut, public=True,
                            statuses={"503": ("not ready: the failing check says why", ReadyOut)}),
    }


def describe(app: FastAPI, bodies: dict[str, type[BaseModel]]) -> None:
    """Serve the agent app's document at its /openapi.json (web/openapi builds it)."""
    openapi.describe(app, lambda: operations(bodies), ERRORS, SECURITY)
