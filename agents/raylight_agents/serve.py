"""A Pipeline's agent on Ray Serve: `build_app(args)` -> one deployment, `AgentServer`, with a FastAPI ingress.

HTTP routes (all but the health checks need the bearer token when connections["auth"] is set):

  POST /v1/pipelines/{name}/invoke              {"input", "thread_id"?, "user"?: {"id", "tenant"?, "groups"}}
                                                -> {"answer", "citations": [{"ref", "id", "source", "text"}],
                                                    "thread_id", "grounding", "retrieved", "usage"}
  POST /v1/pipelines/{name}/stream              the same body; server-sent events retrieval, token, final
                                                (and error, when the run fails after the first event)
  POST /v1/pipelines/{name}/search              {"query", "top_k"?, "filters"?: {"source"|"title"|"heading"|
                                                "page": value or [values]}, "user"?, "history"?: [earlier
                                                user turns], "hybrid"?, "rerank"?} -> {"pipeline", "query"
                                                (what was searched), "retrieval": {"hybrid", "rerank"},
                                                "results": [{"rank", "id", "source", "title", "text", "score",
                                                "metadata"}]}; no model, no thread (works without spec.llm)
  GET  /v1/pipelines/{name}/threads/{id}?user=  the thread's messages (only for the user who started it)
  POST /v1/chat/completions                     OpenAI-compatible, model = the pipeline's name, stream too;
                                                extensions: "thread_id", "user" as {"id", "tenant", "groups"},
                                                and "citations"/"thread_id" in the response
  GET  /v1/models                               this pipeline, as the one model
  GET  /healthz                                 the replica is up (liveness; 200)
  GET  /readyz                                  200 when the model and the store answer, else 503 with why

Plain async methods for a gateway that holds a DeploymentHandle (the local single-port gateway):
`invoke(body, authorization=None) -> dict`, `search(body, authorization=None) -> dict`,
`stream(body, authorization=None)` (async generator of SSE strings; call with `handle.options(stream=True)`),
`chat_completions(body, authorization=None) -> dict`,
`chat_completions_stream(body, authorization=None)` (SSE strings, stream=True), `models(authorization=None)`,
`thread(thread_id, user=None, authorization=None) -> dict`, `healthz() -> dict`,
`readyz() -> dict` (its "ready" says 200 or 503). `body` is a dict or the raw bytes. Refusals raise
`raylight_agents.errors.AgentError` (`.status`, `.body()`), which Ray re-raises as an AgentError.
"""

# No `from __future__ import annotations` here: Serve's ingress re-creates the route methods, and FastAPI
# must find the real `Request` class in their annotations, not the string "Request".
import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from ray import serve
from ray.serve import Application
from raylight.api.types import PipelineSpec
from raylight_pipelines.retrieval import FILTER_FIELDS, FilterValue

from raylight_agents import audit, errors
from raylight_agents.agent import Agent, Turn, User

log = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=BaseModel)


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    tenant: str | None = Field(None, max_length=256)
    groups: list[str] = Field(default_factory=list, max_length=64)

    def user(self) -> User:
        return User(self.id, self.tenant, tuple(self.groups))


class InvokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1)
    thread_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    user: UserIn | None = None


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    top_k: int | None = Field(None, ge=1, le=100, validation_alias=AliasChoices("top_k", "topK"))
    filters: dict[str, FilterValue] = Field(default_factory=dict)
    user: UserIn | None = None
    history: list[str] = Field(default_factory=list, max_length=50)  # earlier user turns, oldest first
    hybrid: bool | None = None  # override spec.retrieval.hybrid (raylight eval compares both)
    rerank: bool | None = None  # override: false skips the pipeline's reranker

    @field_validator("filters")
    @classmethod
    def _known_fields(cls, value: dict[str, FilterValue]) -> dict[str, FilterValue]:
        unknown = sorted(set(value) - set(FILTER_FIELDS))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; filter on {', '.join(FILTER_FIELDS)}")
        return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="ignore")  # temperature, max_tokens, ...: the pipeline decides

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | UserIn | None = None
    thread_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")

    def turn(self) -> Turn:
        if self.messages[-1].role != "user" or not self.messages[-1].text().strip():
            raise errors.AgentError(422, "messages: the last message must be a non-empty user message",
                                    code="invalid_request", param="messages")
        prior = [{"role": m.role, "content": m.text()} for m in self.messages[:-1]
                 if m.role in ("user", "assistant")]  # the pipeline's own system prompt applies
        user = self.user.user() if isinstance(self.user, UserIn) else User(self.user)
        return Turn(self.messages[-1].text(), self.thread_id, user, prior)


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _load(body: dict[str, Any] | bytes | str, limit: int) -> Any:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > limit:
        raise errors.too_large(limit)
    if not isinstance(body, dict):
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise errors.AgentError(422, f"body: not valid JSON ({exc})", code="invalid_request") from exc
    return body


def _respond(exc: errors.AgentError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status)


api = FastAPI(title="Raylight agent", docs_url=None, redoc_url=None)


@serve.deployment(name="AgentServer")
@serve.ingress(api)
class AgentServer:
    def __init__(self, name: str, spec: dict[str, Any], connections: dict[str, Any]) -> None:
        audit.configure()
        self.name = name
        self.spec = PipelineSpec.model_validate(spec)
        self.connections = connections
        self.limits = self.spec.agent.limits
        self.agent = Agent(name, self.spec, connections)
        self._started: asyncio.Task[Agent] | None = None
        auth = connections.get("auth")
        self.token_env: str | None = auth["token_env"] if auth else None

    async def _ready_agent(self) -> Agent:
        # The checkpointer's connections belong to the event loop that serves requests: open them there.
        if self._started is None or (self._started.done() and self._started.exception()):
            self._started = asyncio.ensure_future(self.agent.start())
        try:
            return await asyncio.shield(self._started)
        except Exception as exc:
            raise errors.unavailable("threads", f"cannot open the thread store: {exc}") from exc

    def _authorize(self, authorization: str | None) -> None:
        if self.token_env is None:
            return
        token = os.environ.get(self.token_env)
        if not token:  # fail closed: auth is required but the secret did not arrive
            raise errors.unavailable("auth", f"auth is required but ${self.token_env} is not set")
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
            raise errors.unauthorized()

    def _refuse(self, operation: str, exc: errors.AgentError) -> None:
        """Audit refusals that happen before the agent runs (auth, size, validation)."""
        audit.record(self.name, operation, started=time.perf_counter(), status=exc.status,
                     model=self.agent.model, error=exc.message)

    async def _timed(self, operation: str, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.limits.timeout_seconds)
        except TimeoutError:
            raise errors.timed_out(self.limits.timeout_seconds) from None

    def _parse(self, model: type[ModelT], operation: str, body: Any, authorization: str | None) -> ModelT:
        """Authorize, check the size limit and validate the body; refusals are audited and raised."""
        try:
            self._authorize(authorization)
            data = _load(body, self.limits.max_request_bytes)
            try:
                return model.model_validate(data)
            except ValidationError as exc:
                raise errors.invalid(exc) from None
        except errors.AgentError as exc:
            self._refuse(operation, exc)
            raise

    def _parse_invoke(self, operation: str, body: Any, authorization: str | None) -> Turn:
        request = self._parse(InvokeIn, operation, body, authorization)
        return Turn(request.input, request.thread_id, request.user.user() if request.user else User())

    def _parse_chat(self, body: Any, authorization: str | None) -> tuple[ChatIn, Turn]:
        try:
            self._authorize(authorization)
            data = _load(body, self.limits.max_request_bytes)
            try:
                request = ChatIn.model_validate(data)
            except ValidationError as exc:
                raise errors.invalid(exc) from None
            if request.model != self.name:
                raise errors.AgentError(404, f"The model '{request.model}' does not exist; this endpoint "
                                        f"serves the pipeline '{self.name}'.", code="model_not_found",
                                        param="model")
            return request, request.turn()
        except errors.AgentError as exc:
            self._refuse("chat", exc)
            raise

    # ------------------------------------------------------------ plain methods (also used by the routes)

    async def invoke(self, body: dict[str, Any] | bytes, authorization: str | None = None) -> dict[str, Any]:
        turn = self._parse_invoke("invoke", body, authorization)
        agent = await self._ready_agent()
        result: dict[str, Any] = await self._timed("invoke", agent.invoke(turn))
        return result

    async def search(self, body: dict[str, Any] | bytes, authorization: str | None = None) -> dict[str, Any]:
        """Ranked chunks (Agent.search); needs neither the model nor the thread store."""
        request = self._parse(SearchIn, "search", body, authorization)
        if request.rerank and self.spec.retrieval.rerank is None:
            refusal = errors.AgentError(422, "rerank: this pipeline sets no spec.retrieval.rerank",
                                        code="invalid_request", param="rerank")
            self._refuse("search", refusal)
            raise refusal
        user = request.user.user() if request.user else User()
        result: dict[str, Any] = await self._timed("search", self.agent.search(
            request.query, user, request.top_k, request.filters, request.history, hybrid=request.hybrid,
            rerank=request.rerank))
        return result

    async def _events(self, turn: Turn, operation: str) -> AsyncGenerator[tuple[str, dict[str, Any]]]:
        """The agent's events within the time limit; the first one is awaited before any byte is sent,
        so failures at retrieval still get a real HTTP status."""
        agent = await self._ready_agent()
        deadline = time.monotonic() + self.limits.timeout_seconds
        events = agent.events(turn, operation)
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    item = await asyncio.wait_for(anext(events), max(remaining, 0.001))
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise errors.timed_out(self.limits.timeout_seconds) from None
                yield item
        finally:
            await events.aclose()

    async def _primed(self, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Raise the first event's failure now; later failures become an `error` event."""
        first = await anext(events, None)

        async def rest() -> AsyncIterator[Any]:
            if first is not None:
                yield first
            try:
                async for item in events:
                    yield item
            except errors.AgentError as exc:
                yield ("error", {"status": exc.status, **exc.body()})
        return rest()

    async def stream(self, body: dict[str, Any] | bytes, authorization: str | None = None) -> AsyncIterator[str]:
        turn = self._parse_invoke("stream", body, authorization)
        async for event, data in await self._primed(self._events(turn, "stream")):
            yield sse(event, data)

    async def chat_completions(self, body: dict[str, Any] | bytes,
                               authorization: str | None = None) -> dict[str, Any]:
        _, turn = self._parse_chat(body, authorization)
        agent = await self._ready_agent()
        result = await self._timed("chat", agent.invoke(turn, "chat"))
        usage = result["usage"]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result["answer"]},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                      "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
            "citations": result["citations"], "thread_id": result["thread_id"],
            "grounding": result["grounding"],
        }

    async def chat_completions_stream(self, body: dict[str, Any] | bytes,
                                      authorization: str | None = None) -> AsyncIterator[str]:
        _, turn = self._parse_chat(body, authorization)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": self.name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                    **extra}
            return f"data: {json.dumps(body)}\n\n"

        events = await self._primed(self._events(turn, "chat"))
        yield chunk({"role": "assistant", "content": ""})
        streamed = False
        async for event, data in events:
            if event == "token":
                streamed = True
                yield chunk({"content": data["text"]})
            elif event == "final":
                if not streamed and data["answer"]:  # e.g. "I don't know" comes without the model
                    yield chunk({"content": data["answer"]})
                usage = data["usage"]
                yield chunk({}, "stop", citations=data["citations"], thread_id=data["thread_id"],
                            grounding=data["grounding"],
                            usage={"prompt_tokens": usage["prompt_tokens"],
                                   "completion_tokens": usage["completion_tokens"],
                                   "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]})
            elif event == "error":
                yield f"data: {json.dumps({k: v for k, v in data.items() if k != 'status'})}\n\n"
        yield "data: [DONE]\n\n"

    async def thread(self, thread_id: str, user: str | None = None,
                     authorization: str | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            self._authorize(authorization)
            agent = await self._ready_agent()
            result: dict[str, Any] = await agent.history(thread_id, User(user))
        except errors.AgentError as exc:
            audit.record(self.name, "thread", started=started, status=exc.status, model=self.agent.model,
                         user=user, thread_id=thread_id, error=exc.message)
            raise
        audit.record(self.name, "thread", started=started, status=200, model=self.agent.model, user=user,
                     thread_id=thread_id)
        return result

    async def models(self, authorization: str | None = None) -> dict[str, Any]:
        self._authorize(authorization)
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0,
                                            "owned_by": "raylight", "kind": "pipeline",
                                            "search_only": self.spec.llm is None}]}

    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "pipeline": self.name}

    async def readyz(self) -> dict[str, Any]:
        try:
            agent = await self._ready_agent()
        except errors.AgentError as exc:
            return {"ready": False, "pipeline": self.name, "threads": {"ok": False, "detail": exc.message}}
        return await agent.ready()

    # ------------------------------------------------------------ HTTP routes

    def _check_name(self, name: str) -> None:
        if name != self.name:
            raise errors.not_found(f"pipeline {name}")

    @staticmethod
    async def _body(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise errors.too_large(limit)  # refuse before reading it
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise errors.too_large(limit)
        return body

    async def _sse_response(self, lines: AsyncIterator[str]) -> Response:
        first = await anext(lines)  # failures before the first event keep their HTTP status

        async def body() -> AsyncIterator[str]:
            yield first
            async for line in lines:
                yield line
        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.post("/v1/pipelines/{name}/invoke")
    async def http_invoke(self, name: str, request: Request) -> Response:
        try:
            self._check_name(name)
            body = await self._body(request, self.limits.max_request_bytes)
            return JSONResponse(await self.invoke(body, request.headers.get("authorization")))
        except errors.AgentError as exc:
            return _respond(exc)

    @api.post("/v1/pipelines/{name}/search")
    async def http_search(self, name: str, request: Request) -> Response:
        try:
            self._check_name(name)
            body = await self._body(request, self.limits.max_request_bytes)
            return JSONResponse(await self.search(body, request.headers.get("authorization")))
        except errors.AgentError as exc:
            return _respond(exc)

    @api.post("/v1/pipelines/{name}/stream")
    async def http_stream(self, name: str, request: Request) -> Response:
        try:
            self._check_name(name)
            body = await self._body(request, self.limits.max_request_bytes)
            return await self._sse_response(self.stream(body, request.headers.get("authorization")))
        except errors.AgentError as exc:
            return _respond(exc)

    @api.get("/v1/pipelines/{name}/threads/{thread_id}")
    async def http_thread(self, name: str, thread_id: str, request: Request, user: str | None = None) -> Response:
        try:
            self._check_name(name)
            return JSONResponse(await self.thread(thread_id, user, request.headers.get("authorization")))
        except errors.AgentError as exc:
            return _respond(exc)

    @api.post("/v1/chat/completions")
    async def http_chat(self, request: Request) -> Response:
        try:
            body = await self._body(request, self.limits.max_request_bytes)
            try:
                wants_stream = bool(json.loads(body).get("stream"))
            except (ValueError, AttributeError):
                wants_stream = False  # the parser below reports what is wrong
            auth = request.headers.get("authorization")
            if wants_stream:
                return await self._sse_response(self.chat_completions_stream(body, auth))
            return JSONResponse(await self.chat_completions(body, auth))
        except errors.AgentError as exc:
            return _respond(exc)

    @api.get("/v1/models")
    async def http_models(self, request: Request) -> Response:
        try:
            return JSONResponse(await self.models(request.headers.get("authorization")))
        except errors.AgentError as exc:
            return _respond(exc)

    @api.get("/healthz")
    async def http_healthz(self) -> Response:
        return JSONResponse(await self.healthz())

    @api.get("/readyz")
    async def http_readyz(self) -> Response:
        report = await self.readyz()
        return JSONResponse(report, 200 if report.get("ready") else 503)

    async def __del__(self) -> None:  # Serve awaits an async __del__ when the replica shuts down
        if self._started is not None and self._started.done() and not self._started.exception():
            await self.agent.aclose()


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder (import path `raylight_agents.serve:build_app`)."""
    spec = PipelineSpec.model_validate(args["spec"])  # refuse a bad spec at deploy time, not per request
    return AgentServer.bind(args["name"], spec.to_wire(), args["connections"])  # type: ignore[attr-defined]
