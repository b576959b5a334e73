"""Every app's OpenAPI document, describing the bodies that really travel.

The routes take the raw `Request` (the guard reads and checks a body before pydantic sees it), so FastAPI
alone would publish operations without request bodies and with a made-up 422. `describe(app, operations,
errors)` replaces `app.openapi` with a document built from the same pydantic models the routes validate
with and answer with (web/protocol, web/responses, an app's own), every error status in the OpenAI error
shape, server-sent events and OpenAPI links, so a stateful fuzzer (schemathesis) reaches every route with
real identifiers. Used by the model app (serving/app.py) and the agent app (raylight_agents/openapi.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from raylight_pipelines.web.responses import ErrorBody

REF = "#/components/schemas/{model}"
# An OpenAI stream: chunks as plain `data:` lines, ending with `data: [DONE]`.
DATA_SSE = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}}}

# Named events (`event: <name>` and `data: <json>`): a Pipeline's /stream, the Responses API's stream.
EVENT_SSE = {"text/event-stream": {"schema": {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}}}
ANY_JSON = {"application/json": {"schema": {"type": "object"}}}  # a body without a model of its own (yet)


@dataclass(frozen=True)
class Operation:
    """One route: its method and path, the request body model, the 200 body (a model, or server-sent events
    given as `{media type: schema}`), links, and whether it is a public probe (no security)."""

    method: str
    path: str
    ok: type[BaseModel] | dict[str, Any]
    body: type[BaseModel] | None = None
    stream: dict[str, Any] | None = None  # a second 200 content (`"stream": true` on a JSON route)
    links: dict[str, Any] = field(default_factory=dict)
    public: bool = False
    # more statuses: why and the body (a model, a {media type: schema} content, or None: no body), e.g. readyz's 503
    statuses: dict[str, tuple[str, type[BaseModel] | dict[str, Any] | None]] = field(default_factory=dict)


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=name)}}}


def document(base: dict[str, Any], operations: dict[str, Operation], errors: dict[str, str],
             security: dict[str, Any] | None = None) -> dict[str, Any]:
    """FastAPI's document `base` with each operation's bodies, statuses (`errors`: status -> why, all in the
    OpenAI error shape) and links; `security`: the schemes (operations not public may use one or none)."""
    doc = copy.deepcopy(base)
    keys: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for op in operations.values():
        if op.body is not None:
            keys.append((op.body, "validation"))
        keys += [(m, "serialization") for m in [op.ok, *(m for _, m in op.statuses.values())]
                 if isinstance(m, type)]
    refs, defs = models_json_schema(list(dict.fromkeys(keys)), ref_template=REF)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which these apps never send
        schemas.pop(name, None)
    schemas.update(defs.get("$defs", {}))
    if security:
        doc["components"]["securitySchemes"] = security
    for op_id, spec in operations.items():
        op = doc["paths"][spec.path][spec.method]
        op["operationId"] = op_id
        if spec.body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": refs[(spec.body, "validation")]}}}
        if security:
            op["security"] = [] if spec.public else [{}, *({name: []} for name in security)]
        content = _json(spec.ok.__name__) if isinstance(spec.ok, type) else dict(spec.ok)
        if spec.stream:
            content.update(spec.stream)
        responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
        if spec.links:
            responses["200"]["links"] = spec.links
        for status, why in errors.items():
            responses[status] = {"description": why, "content": _json("ErrorBody")}
        for status, (why, model) in spec.statuses.items():
            responses[status] = {"description": why}
            if model is not None:
                responses[status]["content"] = _json(model.__name__) if isinstance(model, type) else model
        op["responses"] = responses
    return doc


def describe(app: FastAPI, operations: Callable[[], dict[str, Operation]], errors: dict[str, str],
             security: dict[str, Any] | None = None) -> None:
    """Serve `document(...)` at the app's /openapi.json (built once, on first request)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            base = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = document(base, operations(), errors, security)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
