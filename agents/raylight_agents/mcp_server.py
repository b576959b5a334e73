"""A Pipeline's agent as a Model Context Protocol server (Streamable HTTP), built on the official MCP SDK.

Served at `MCP_PATH` (`/v1/pipelines/{name}/mcp`) on the agent's endpoint and on `raylight up`'s port. Tools:

- `search(query, top_k?, filters?)` -> {"results": [{"rank", "id", "source", "title", "text", "score"}]}: the
  agent's `/search` route (same validation, ACL filter, quota, metrics, span, audit line).
- `ask(question, thread?)` -> {"answer", "citations": [{"ref", "id", "source", "text"}], "thread"} where the
  Pipeline has an LLM: the agent's `/invoke` route.

Every tool call runs through the agent's own plain methods (`AgentServer.search`, `AgentServer.invoke`) with
the HTTP request's `Authorization` header, so auth (shared bearer token or OIDC), the ACL filter, quotas,
metrics, traces and audit are the HTTP routes' own. Who the caller is:

- OIDC (`agent.auth.oidc`): the verified token's subject, tenant and groups; identity headers are refused.
- shared token or no auth: the caller states it in the headers `X-Raylight-User`, `X-Raylight-Tenant` and
  `X-Raylight-Groups` (comma-separated), as a body's `user` does on the HTTP routes. Headers are set in the
  client's configuration, so the model never sees or chooses them.

The transport is stateless with JSON responses (`StreamableHTTPSessionManager(stateless=True,
json_response=True)`): any replica answers any request, no session pins a client to a replica. An
unauthorised request gets HTTP 401 (with `WWW-Authenticate: Bearer`) before the SDK sees it; a body that is
not JSON, too deep, too large or carries lone surrogates gets the guard's 4xx naming the field; a refusal
inside a tool call (400 naming the field, 403, 404, 429 quota, 503) comes back as a tool error
(`isError: true`) whose text is the refusal's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import BaseModel, Field
from raylight.api.names import PIPELINE_MCP_PATH
from raylight_pipelines.web import guard
from raylight_pipelines.web.errors import ApiError

log = logging.getLogger(__name__)

MCP_PATH = PIPELINE_MCP_PATH
USER_HEADER, TENANT_HEADER, GROUPS_HEADER = "x-raylight-user", "x-raylight-tenant", "x-raylight-groups"
# Stateless JSON responses: no standalone SSE stream to GET and no session to DELETE, so both are 405 (what the
# Streamable HTTP transport lets a server answer; the SDK client then carries on with POSTs alone).
MCP_METHODS = ("POST",)
ROUTE_METHODS = ("GET", "POST", "DELETE")
# Headers of the HTTP request that reach the MCP transport (and through it the tool functions).
_FORWARDED = frozenset({"authorization", "content-type", "accept", "mcp-protocol-version", "mcp-session-id",
                        "last-event-id", USER_HEADER, TENANT_HEADER, GROUPS_HEADER, "traceparent", "tracestate"})


class Agentish(Protocol):
    """What the MCP server needs of the agent app: its plain methods (see raylight_agents.serve)."""

    name: str
    max_request_bytes: int

    async def search(self, body: dict[str, Any] | bytes, authorization: str | None = None) -> dict[str, Any]: ...

    async def invoke(self, body: dict[str, Any] | bytes, authorization: str | None = None) -> dict[str, Any]: ...

    async def authorize(self, authorization: str | None) -> None: ...


class SearchResult(BaseModel):
    rank: int
    id: str
    source: str
    title: str | None
    text: str
    score: float | None


class SearchOutput(BaseModel):
    query: str = Field(description="what was searched")
    results: list[SearchResult]


class Citation(BaseModel):
    ref: int | str = Field(description="the [n] marker in the answer")
    id: str
    source: str
    text: str


class AskOutput(BaseModel):
    answer: str
    citations: list[Citation]
    thread: str = Field(description="pass it back as `thread` to ask a follow-up in the same conversation")
    grounding: str | None = None


@dataclass(frozen=True)
class McpReply:
    """One HTTP answer of the MCP endpoint (plain data, so it crosses a Ray DeploymentHandle)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _stated_user(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """The identity a shared-token or unauthenticated caller states in its headers (a body's `user`)."""
    user = headers.get(USER_HEADER)
    tenant = headers.get(TENANT_HEADER)
    groups = [g.strip() for g in headers.get(GROUPS_HEADER, "").split(",") if g.strip()]
    if user is None and tenant is None and not groups:
        return None
    if user is None:
        raise ToolError(f"user: {TENANT_HEADER} and {GROUPS_HEADER} need {USER_HEADER} too")
    return {"id": user, **({"tenant": tenant} if tenant is not None else {}), "groups": groups}


async def _through(call: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run one of the agent's plain methods; its refusal becomes the tool's error (the model reads it)."""
    try:
        return await call()
    except ApiError as exc:
        raise ToolError(f"{exc.status} {exc.code or exc.type}: {exc.message}") from None


def build_server(app: Agentish, has_llm: bool) -> MCPServer:
    """The pipeline's MCP server: `search`, and `ask` when the pipeline answers with a model."""
    mcp = MCPServer(name=f"raylight-{app.name}", title=f"Raylight pipeline {app.name}",
                    instructions=f"Search (and ask, when offered) the documents of the Raylight pipeline "
                                 f"{app.name!r}. Cite the sources you use.")

    def headers(ctx: Context) -> Mapping[str, str]:
        return {k.lower(): v for k, v in (ctx.headers or {}).items()}

    @mcp.tool(description=f"Search the documents of pipeline {app.name!r}: the passages that best match the "
                          "query, each with its source, title and score (the caller sees only what it may see).")
    async def search(query: Annotated[str, Field(min_length=1, description="what to look for")],
                     ctx: Context,
                     top_k: Annotated[int | None, Field(ge=1, le=100, description="how many results")] = None,
                     filters: Annotated[dict[str, str | int | list[str] | list[int]] | None, Field(
                         description="exact-match filters on source, title, heading or page")] = None,
                     ) -> SearchOutput:
        head = headers(ctx)
        body: dict[str, Any] = {"query": query, "filters": filters or {}}
        if top_k is not None:
            body["top_k"] = top_k
        if (user := _stated_user(head)) is not None:
            body["user"] = user
        out = await _through(lambda: app.search(body, head.get("authorization")))
        return SearchOutput(query=out["query"], results=[SearchResult(**{k: r[k] for k in SearchResult.model_fields})
                                                         for r in out["results"]])

    if has_llm:
        @mcp.tool(description=f"Ask pipeline {app.name!r} a question: an answer written from its documents, "
                              "with numbered citations. Pass `thread` back to ask a follow-up.")
        async def ask(question: Annotated[str, Field(min_length=1, description="the question")],
                      ctx: Context,
                      thread: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description=(
                          "the thread of an earlier answer, for a follow-up"))] = None,
                      ) -> AskOutput:
            head = headers(ctx)
            body: dict[str, Any] = {"input": question}
            if thread is not None:
                body["thread_id"] = thread
            if (user := _stated_user(head)) is not None:
                body["user"] = user
            out = await _through(lambda: app.invoke(body, head.get("authorization")))
            return AskOutput(answer=out["answer"], thread=out["thread_id"], grounding=out.get("grounding"),
                             citations=[Citation(**{k: c[k] for k in Citation.model_fields}) for c in out["citations"]])
    return mcp


def refusal(exc: ApiError) -> McpReply:
    """An ApiError as the endpoint's HTTP answer: the OpenAI error body, `WWW-Authenticate` on 401 (what an MCP
    client reads to ask for credentials), `Allow` on 405."""
    extra = [("www-authenticate", 'Bearer realm="raylight"')] if exc.status == 401 else []
    if exc.status == 405:
        extra.append(("allow", ", ".join(MCP_METHODS)))
    return McpReply(exc.status, [("content-type", "application/json"), *extra], bytes(guard.error_response(exc).body))


class McpEndpoint:
    """The Streamable HTTP endpoint of one replica: `handle(method, headers, body) -> McpReply`.

    The SDK's session manager runs in a task of the replica's event loop, started on the first request."""

    def __init__(self, app: Agentish, has_llm: bool) -> None:
        self.app = app
        self.server = build_server(app, has_llm)
        self.manager = StreamableHTTPSessionManager(self.server._lowlevel_server, stateless=True,
                                                    json_response=True,
                                                    max_request_body_size=app.max_request_bytes)
        self._running: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        if self._running is None:
            self._running = asyncio.get_running_loop().create_future()
            running = self._running

            async def run() -> None:
                try:
                    async with self.manager.run():
                        running.set_result(None)
                        await asyncio.Event().wait()
                except BaseException as exc:
                    if not running.done():
                        running.set_exception(exc)
                    raise
            self._task = asyncio.create_task(run(), name="mcp-session-manager")
        await asyncio.shield(self._running)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def handle(self, method: str, headers: Sequence[tuple[str, str]] | Mapping[str, str],
                     body: bytes, path: str = "/mcp") -> McpReply:
        """Answer one HTTP request to the MCP endpoint. Refusals before the SDK raise ApiError (401, 405, 413,
        400 for a body that is not JSON); `refusal(exc)` turns one into the reply."""
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        lower = {k.lower(): v for k, v in pairs}
        if method not in MCP_METHODS:
            raise ApiError(405, f"method: the MCP endpoint takes {', '.join(MCP_METHODS)} (stateless Streamable "
                           "HTTP: no GET stream, no session to DELETE)",
                           type="invalid_request_error", code="method_not_allowed")
        await self.app.authorize(lower.get("authorization"))
        if method == "POST":
            if len(body) > self.app.max_request_bytes:
                raise guard.too_large(self.app.max_request_bytes)
            guard.load_json(body, self.app.max_request_bytes)  # lone surrogates, depth, NaN: the field named
        await self._start()
        return await self._asgi(method, [(k, v) for k, v in pairs if k.lower() in _FORWARDED], body, path)

    async def _asgi(self, method: str, headers: list[tuple[str, str]], body: bytes, path: str) -> McpReply:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                              for k, v in headers],
                 "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 80)}
        sent = False
        status, out_headers, parts = 500, [], []
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.manager.handle_request(scope, receive, send)
        finally:
            done.set()
        keep = [(k, v) for k, v in out_headers if k.lower() not in ("content-length", "transfer-encoding")]
        return McpReply(status, keep, b"".join(parts))
