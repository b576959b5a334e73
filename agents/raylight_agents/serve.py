"""A Pipeline's agent on Ray Serve: `build_app(args)` -> one deployment, `AgentServer`, with a FastAPI ingress.

HTTP routes (all but the health checks need the bearer token when `Connections.auth` is set):

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
  POST /v1/pipelines/{name}/mcp                 the pipeline as an MCP server (Streamable HTTP, stateless JSON):
                                                tools search and ask (raylight_agents.mcp_server, docs/mcp.md)
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
`ApiError` (`.status`, `.body()`), which Ray re-raises as an ApiError. Every route and method sits behind
`raylight_pipelines.web.guard` (size, depth, Unicode, headers, slow bodies) and answers bad input with the
same 400 `invalid_value` naming each field as the model routes; `/v1/chat/completions` validates the OpenAI
parameters exactly as a ModelDeployment does (sampling itself is the pipeline's to decide).
"""

# No `from __future__ import annotations` here: Serve's ingress re-creates the route methods, and FastAPI
# must find the real `Request` class in their annotations, not the string "Request".
import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve import Application
from raylight.api.connections import Connections, OidcConnection, ResponseStoreConnection
from raylight.api.names import AGENT_DEPLOYMENT
from raylight.api.serve import AgentAppArgs, agent_deployment_options
from raylight.api.types import PipelineSpec
from raylight_pipelines import telemetry
from raylight_pipelines.retrieval.retriever import FILTER_FIELDS, FilterValue
from raylight_pipelines.web import guard, parameters, protocol, response_store, responses, responses_api, server
from raylight_pipelines.web.errors import ApiError
from raylight_pipelines.web.protocol import ChatCompletionRequest

from raylight_agents import audit, errors, mcp_server, openapi
from raylight_agents.agent import Agent, Turn, User
from raylight_agents.identity import Verifier
from raylight_agents.quota import Quota

log = logging.getLogger(__name__)
# Characters a token takes at most on average in the text the context check sees (English ~4; code and
# other scripts fewer): a question refused by it would not fit the model's context either.
CHARS_PER_TOKEN = 4
ModelT = TypeVar("ModelT", bound=BaseModel)


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # as documented: 0 is no boolean, "5" no number

    id: str = Field(min_length=1, max_length=256)
    tenant: str | None = Field(None, max_length=256)
    groups: list[str] = Field(default_factory=list, max_length=64)

    def user(self) -> User:
        return User(self.id, self.tenant, tuple(self.groups))


class InvokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # as documented: 0 is no boolean, "5" no number

    input: str = Field(min_length=1)
    thread_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    user: UserIn | None = None


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # as documented: 0 is no boolean, "5" no number

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


class ChatIn(ChatCompletionRequest):
    """The OpenAI request, validated exactly as a ModelDeployment validates it, plus the agent's extensions."""

    user: str | UserIn | None = None  # type: ignore[assignment]
    thread_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")

    def turn(self) -> Turn:
        for param, asked in (("n", self.n != 1), ("tools", bool(self.tools)), ("logprobs", bool(self.logprobs))):
            if asked:  # valid for a model, but an agent answers once, from its sources, without caller tools
                raise ApiError(400, f"{param}: a pipeline answers with one cited choice; it does not take {param}",
                               code="invalid_value", param=param)
        if self.response_format is not None and self.response_format.type != "text":
            # the same answer a model gives a format it cannot enforce: a pipeline answers in cited prose
            raise ApiError(400, f"response_format: a pipeline answers in cited prose; it cannot enforce "
                           f"{self.response_format.type}", param="response_format", code="unsupported_schema")
        if self.messages[-1].role != "user" or not self.messages[-1].text().strip():
            raise ApiError(400, "messages: the last message must be a non-empty user message",
                           code="invalid_value", param="messages")
        prior = [{"role": m.role, "content": m.text()} for m in self.messages[:-1]
                 if m.role in ("user", "assistant")]  # the pipeline's own system prompt applies
        user = self.user.user() if isinstance(self.user, UserIn) else User(self.user)
        return Turn(self.messages[-1].text(), self.thread_id, user, prior)


def _extensions(result: dict[str, Any]) -> dict[str, Any]:
    """A Pipeline's fields on top of the OpenAI chat response (see `openapi.PipelineChatCompletion`)."""
    return {"citations": result["citations"], "thread_id": result["thread_id"], "grounding": result["grounding"],
            "support": result["support"]}


api = server.app("Raylight agent")


@serve.deployment(name=AGENT_DEPLOYMENT)
@serve.ingress(api)
class AgentServer(server.Edge):
    span_prefix = "agent"

    def __init__(self, name: str, spec: PipelineSpec | dict[str, Any],
                 connections: Connections | dict[str, Any]) -> None:
        audit.configure()
        telemetry.configure_tracing("raylight-agent")
        telemetry.serve_metrics()
        self.name = name
        self.spec = PipelineSpec.model_validate(spec)
        self.connections = Connections.model_validate(connections)
        self.limits = self.spec.agent.limits
        self.max_request_bytes = self.limits.max_request_bytes
        self.quota = Quota(name, self.limits)
        self.agent = Agent(name, self.spec, self.connections)
        self.agent.retriever.warm()  # the replica is RUNNING once its store and query encoder are open
        self._started: asyncio.Task[Agent] | None = None
        auth = self.connections.auth
        self.token_env: str | None = auth.token_env if auth else None
        self.oidc: OidcConnection | None = auth.oidc if auth else None
        self._verifier: Verifier | None = None
        self._mcp: mcp_server.McpEndpoint | None = None
        self._response_store: response_store.ResponseStore | None = None

    async def _ready_agent(self) -> Agent:
        # The checkpointer's connections belong to the event loop that serves requests: open them there.
        if self._started is None or (self._started.done() and self._started.exception()):
            self._started = asyncio.ensure_future(self.agent.start())
        try:
            return await asyncio.shield(self._started)
        except Exception as exc:
            raise errors.outage("threads", "the thread store", exc) from exc

    async def _identify(self, authorization: str | None) -> User | None:
        """Check the caller's bearer token: None when it is the shared token (or no auth is configured: the
        caller's stated identity is used), the verified user in OIDC mode; raises 401 (or 503 when the
        configured secret or the issuer's keys are missing: fail closed)."""
        if self.token_env is None and self.oidc is None:
            return None
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise errors.unauthorized()
        if self.oidc is not None:
            if self._verifier is None:
                try:
                    self._verifier = Verifier.from_connection(self.oidc)
                except ValueError as exc:
                    raise errors.unavailable("auth", str(exc)) from exc
            return await asyncio.to_thread(self._verifier.verify, presented.strip())
        assert self.token_env is not None
        token = os.environ.get(self.token_env)
        if not token:  # fail closed: auth is required but the secret did not arrive
            raise errors.unavailable("auth", f"auth is required but ${self.token_env} is not set")
        if not hmac.compare_digest(presented.strip().encode(), token.encode()):
            raise errors.unauthorized()
        return None

    def _caller(self, operation: str, verified: User | None, stated: User) -> User:
        """Who the request runs as: the verified identity when there is one (then the body may state none)."""
        if verified is None:
            return stated
        if stated != User():
            refusal = ApiError(400, "user: this pipeline takes the caller's identity from its verified token; "
                               "do not send one", param="user", code="invalid_value")
            self._refuse(operation, refusal)
            raise refusal
        return verified

    def _refuse(self, operation: str, exc: ApiError) -> None:
        """Audit refusals that happen before the agent runs (auth, size, validation)."""
        audit.record(self.name, operation, started=time.perf_counter(), status=exc.status,
                     model=self.agent.model, error=exc.message)

    def request_attributes(self, route: str) -> dict[str, Any]:
        return {"raylight.pipeline": self.name, "raylight.route": route}

    def request_done(self, route: str, status: int, seconds: float, span: trace.Span) -> None:
        telemetry.AGENT_REQUESTS.labels(self.name, route, str(status)).inc()
        telemetry.AGENT_REQUEST_SECONDS.labels(self.name, route).observe(seconds)
        if status == 401:
            telemetry.AGENT_AUTH_FAILURES.labels(self.name).inc()

    def _admit(self, turn_or_user: Turn | User) -> User:
        user = turn_or_user.user if isinstance(turn_or_user, Turn) else turn_or_user
        self.quota.admit(user.id, user.tenant)
        return user

    def _spend(self, user: User, usage: dict[str, Any] | None) -> None:
        if usage:
            self.quota.spend(user.id, user.tenant,
                             int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0)))

    async def _timed(self, operation: str, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.limits.timeout_seconds)
        except TimeoutError:
            raise errors.timed_out(self.limits.timeout_seconds) from None

    async def _parse(self, model: type[ModelT], operation: str, body: Any,
                     authorization: str | None) -> tuple[ModelT, User | None]:
        """Authorize, check the size limit and validate the body: the request and the verified caller (OIDC
        mode; None otherwise); refusals are audited and raised."""
        try:
            verified = await self._identify(authorization)
            return self.validate(model, self.load(body)), verified
        except ApiError as exc:
            self._refuse(operation, exc)
            raise

    async def _parse_invoke(self, operation: str, body: Any, authorization: str | None) -> Turn:
        request, verified = await self._parse(InvokeIn, operation, body, authorization)
        user = self._caller(operation, verified, request.user.user() if request.user else User())
        turn = Turn(request.input, request.thread_id, user)
        try:
            await self._check_context(turn, "input")
        except ApiError as exc:
            self._refuse(operation, exc)
            raise
        return turn

    async def _parse_chat(self, body: Any, authorization: str | None) -> Turn:
        try:
            verified = await self._identify(authorization)
            loaded = self.load(body)
            request = protocol.parse(ChatIn, loaded, self.name)
            turn = request.turn()
            await self._check_context(turn, "messages", request.token_limit,
                                      "max_completion_tokens" if request.max_completion_tokens else "max_tokens")
            # then what an agent does not do is refused, never dropped: a fault a model refuses too (a context
            # it cannot hold, a schema it cannot enforce) gets the model's answer first, whichever app is named
            parameters.check_chat(loaded, "pipeline")
        except ApiError as exc:
            self._refuse("chat", exc)
            raise
        turn.user = self._caller("chat", verified, turn.user)
        return turn

    async def _check_context(self, turn: Turn, param: str, max_tokens: int | None = None,
                             token_param: str = "max_tokens") -> None:
        """Refuse (400 `context_length_exceeded`) before any work a turn that cannot fit the model's context:
        `max_tokens` not below it, or a question (with the chat's earlier messages) whose text alone, at
        CHARS_PER_TOKEN characters a token, would fill it. Unknown context (an endpoint that does not say):
        the model's own refusal still maps to the same error."""
        llm = self.agent.llm
        context = await llm.context_length() if llm is not None else None
        if context is None:
            return
        if max_tokens is not None and max_tokens >= context:
            raise ApiError(400, f"{token_param}: {max_tokens} tokens do not fit this model's context of {context} "
                           "tokens (the prompt needs some too)", param=token_param, code="context_length_exceeded")
        chars = len(turn.question) + sum(len(m["content"]) for m in turn.prior)
        if chars // CHARS_PER_TOKEN >= context:
            raise ApiError(400, f"{param}: about {chars // CHARS_PER_TOKEN} tokens ({chars} characters) do not fit "
                           f"this model's context of {context} tokens", param=param, code="context_length_exceeded")

    # ------------------------------------------------------------ plain methods (also used by the routes)

    async def invoke(self, body: dict[str, Any] | bytes, authorization: str | None = None) -> dict[str, Any]:
        with self.observed("invoke"):
            turn = await self._parse_invoke("invoke", body, authorization)
            user = self._admit(turn)
            agent = await self._ready_agent()
            result: dict[str, Any] = await self._timed("invoke", agent.invoke(turn))
            self._spend(user, result.get("usage"))
            return result

    async def search(self, body: dict[str, Any] | bytes, authorization: str | None = None) -> dict[str, Any]:
        """Ranked chunks (Agent.search); needs neither the model nor the thread store."""
        with self.observed("search"):
            return await self._search(body, authorization)

    async def _search(self, body: dict[str, Any] | bytes, authorization: str | None) -> dict[str, Any]:
        request, verified = await self._parse(SearchIn, "search", body, authorization)
        if request.rerank and self.spec.retrieval.rerank is None:
            refusal = ApiError(400, "rerank: this pipeline sets no spec.retrieval.rerank", code="invalid_value",
                               param="rerank")
            self._refuse("search", refusal)
            raise refusal
        user = self._admit(self._caller("search", verified, request.user.user() if request.user else User()))
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

    async def _primed(self, events: AsyncGenerator[Any]) -> AsyncGenerator[Any]:
        """Raise the first event's failure now; later failures become an `error` event. Closing the result
        closes `events` at once (a caller that went away stops the run)."""
        first = await anext(events, None)

        async def rest() -> AsyncGenerator[Any]:
            async with contextlib.aclosing(events):
                if first is not None:
                    yield first
                try:
                    async for item in events:
                        yield item
                except ApiError as exc:
                    yield ("error", {"status": exc.status, **exc.body()})
        return rest()

    async def stream(self, body: dict[str, Any] | bytes, authorization: str | None = None) -> AsyncGenerator[str]:
        async with contextlib.aclosing(self.observed_stream("stream", lambda: self._stream(body, authorization))) \
                as parts:
            async for part in parts:
                yield part

    async def _stream(self, body: dict[str, Any] | bytes, authorization: str | None) -> AsyncGenerator[str]:
        turn = await self._parse_invoke("stream", body, authorization)
        user = self._admit(turn)
        async with contextlib.aclosing(await self._primed(self._events(turn, "stream"))) as events:
            async for event, data in events:
                if event == "final":
                    self._spend(user, data.get("usage"))
                yield responses.sse(data, event)

    async def chat_completions(self, body: dict[str, Any] | bytes,
                               authorization: str | None = None) -> dict[str, Any]:
        with self.observed("chat"):
            turn = await self._parse_chat(body, authorization)
            user = self._admit(turn)
            agent = await self._ready_agent()
            result = await self._timed("chat", agent.invoke(turn, "chat"))
            self._spend(user, result.get("usage"))
        return responses.chat_completion(
            responses.completion_id(), self.name, [responses.choice(0, result["answer"], "stop")],
            result["usage"]["prompt_tokens"], result["usage"]["completion_tokens"], extra=_extensions(result))

    async def chat_completions_stream(self, body: dict[str, Any] | bytes,
                                      authorization: str | None = None) -> AsyncGenerator[str]:
        async with contextlib.aclosing(self.observed_stream("chat", lambda: self._chat_stream(body, authorization))) \
                as parts:
            async for part in parts:
                yield part

    async def _chat_stream(self, body: dict[str, Any] | bytes, authorization: str | None) -> AsyncGenerator[str]:
        turn = await self._parse_chat(body, authorization)
        user = self._admit(turn)
        ident, created = responses.completion_id(), int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            return responses.sse(responses.chat_chunk(ident, self.name, created, delta, finish, **extra))

        events = await self._primed(self._events(turn, "chat"))
        yield chunk({"role": "assistant", "content": ""})
        streamed = False
        async with contextlib.aclosing(events):
            async for event, data in events:
                if event == "token":
                    streamed = True
                    yield chunk({"content": data["text"]})
                elif event == "final":
                    if not streamed and data["answer"]:  # e.g. "I don't know" comes without the model
                        yield chunk({"content": data["answer"]})
                    usage = data["usage"]
                    self._spend(user, usage)
                    yield chunk({}, "stop", extra={**_extensions(data), "usage": responses.usage(
                        usage["prompt_tokens"], usage["completion_tokens"])})
                elif event == "error":
                    yield responses.sse({k: v for k, v in data.items() if k != "status"})
        yield responses.SSE_DONE

    async def thread(self, thread_id: str, user: str | None = None,
                     authorization: str | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            caller = self._caller("thread", await self._identify(authorization), User(user))
            agent = await self._ready_agent()
            result: dict[str, Any] = await agent.history(thread_id, caller)
        except ApiError as exc:
            audit.record(self.name, "thread", started=started, status=exc.status, model=self.agent.model,
                         user=user, thread_id=thread_id, error=exc.message)
            raise
        audit.record(self.name, "thread", started=started, status=200, model=self.agent.model, user=user,
                     thread_id=thread_id)
        return result

    async def models(self, authorization: str | None = None) -> dict[str, Any]:
        await self._identify(authorization)
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0,
                                            "owned_by": "raylight", "kind": "pipeline",
                                            "search_only": self.spec.llm is None}]}

    async def authorize(self, authorization: str | None) -> None:
        """The MCP endpoint's check before the SDK reads a request: 401 (audited) unless the bearer token or
        OIDC token is valid; each tool call is checked again by the route it runs (search, invoke)."""
        try:
            await self._identify(authorization)
        except ApiError as exc:
            self._refuse("mcp", exc)
            raise

    async def mcp(self, method: str, headers: list[tuple[str, str]], body: bytes) -> mcp_server.McpReply:
        """One HTTP request to the pipeline's MCP endpoint (raylight_agents.mcp_server), as plain data for a
        gateway: the reply's status, headers and body. Counted and traced as route "mcp"; its tool calls also
        count as the routes they run (search, invoke)."""
        if self._mcp is None:
            self._mcp = mcp_server.McpEndpoint(self, has_llm=self.spec.llm is not None)
        try:
            with self.observed("mcp"):
                return await self._mcp.handle(method, headers, body, mcp_server.MCP_PATH.format(name=self.name))
        except ApiError as exc:
            return mcp_server.refusal(exc)

    # ------------------------------------------------------------ the Responses API (web.responses_api)

    def _responses(self, authorization: str | None) -> responses_api.Responses:
        """The Responses API over this pipeline's own chat completions (auth, quotas, audit are theirs), with
        the response store beside the thread store (the same PostgreSQL; SQLite: `<threads file>.responses`)."""
        if self._response_store is None:
            threads = self.connections.threads
            self._response_store = response_store.open_connection(ResponseStoreConnection(
                postgres_dsn_env=threads.postgres_dsn_env if threads else None,
                sqlite_path=f"{threads.sqlite_path}.responses" if threads and threads.sqlite_path else None))
        return responses_api.Responses(self._response_store, lambda body: self.chat_completions(body, authorization),
                                       lambda body: self.chat_completions_stream(body, authorization))

    async def _response_owner(self, authorization: str | None, stated: str | None = None) -> str | None:
        verified = await self._identify(authorization)
        return verified.id if verified is not None else stated

    async def responses_create(self, body: dict[str, Any] | bytes, authorization: str | None = None) -> dict[str, Any]:
        """POST /v1/responses (not streamed): the response object; refusals raise ApiError."""
        with self.observed("responses"):
            api = self._responses(authorization)
            request = api.prepare(self.load(body))
            return await api.create(request, await self._response_owner(authorization, request.user))

    async def responses_stream(self, body: dict[str, Any] | bytes,
                               authorization: str | None = None) -> AsyncGenerator[str]:
        """POST /v1/responses with `stream: true`: the typed events as SSE strings."""
        async def run() -> AsyncGenerator[str]:
            api = self._responses(authorization)
            request = api.prepare(self.load(body))
            owner = await self._response_owner(authorization, request.user)
            async with contextlib.aclosing(api.create_stream(request, owner)) as events:
                async for event in events:
                    yield event
        async with contextlib.aclosing(self.observed_stream("responses", run)) as parts:
            async for part in parts:
                yield part

    async def responses_get(self, response_id: str, authorization: str | None = None,
                            user: str | None = None) -> dict[str, Any]:
        with self.observed("responses"):
            return await self._responses(authorization).get(response_id,
                                                            await self._response_owner(authorization, user))

    async def responses_delete(self, response_id: str, authorization: str | None = None,
                               user: str | None = None) -> dict[str, Any]:
        with self.observed("responses"):
            return await self._responses(authorization).delete(response_id,
                                                               await self._response_owner(authorization, user))

    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def metrics(self) -> str:
        """This replica's metrics (Prometheus text), for a gateway that serves one /metrics for all apps."""
        return telemetry.exposition()

    async def _visible(self, authorization: str | None) -> bool:
        """Whether this caller may learn the pipeline exists (no auth, or a valid token)."""
        try:
            await self._identify(authorization)
        except ApiError:
            return False
        return True

    async def readyz(self, authorization: str | None = None) -> dict[str, Any]:
        """{"ready", "visible", "model"|"store"|"threads": {"ok", "detail"}}: whether this replica can serve,
        with reasons that name no collection, count or path; "visible" tells a gateway whether this caller
        may see the pipeline's name (no auth, or its token)."""
        try:
            agent = await self._ready_agent()
        except ApiError as exc:
            report: dict[str, Any] = {"ready": False, "threads": {"ok": False, "detail": exc.message}}
        else:
            report = await agent.ready()
        return {**report, "visible": await self._visible(authorization)}

    # ------------------------------------------------------------ HTTP routes

    def _check_name(self, name: str) -> None:
        if name != self.name:
            raise errors.not_found(f"pipeline {name}")

    @api.post("/v1/pipelines/{name}/invoke")
    async def http_invoke(self, name: str, request: Request) -> Response:
        self._check_name(name)
        return JSONResponse(await self.invoke(await self.read(request), request.headers.get("authorization")))

    @api.post("/v1/pipelines/{name}/search")
    async def http_search(self, name: str, request: Request) -> Response:
        self._check_name(name)
        return JSONResponse(await self.search(await self.read(request), request.headers.get("authorization")))

    @api.post("/v1/pipelines/{name}/stream")
    async def http_stream(self, name: str, request: Request) -> Response:
        self._check_name(name)
        return await guard.sse_response(self.stream(await self.read(request), request.headers.get("authorization")),
                                        responses.sse_error_event)

    @api.get("/v1/pipelines/{name}/threads/{thread_id}")
    async def http_thread(self, name: str, thread_id: str, request: Request, user: str | None = None) -> Response:
        self._check_name(name)
        return JSONResponse(await self.thread(thread_id, user, request.headers.get("authorization")))

    @api.api_route(mcp_server.MCP_PATH, methods=list(mcp_server.ROUTE_METHODS))
    async def http_mcp(self, name: str, request: Request) -> Response:
        self._check_name(name)
        body = await self.read(request) if request.method == "POST" else b""
        reply = await self.mcp(request.method, list(request.headers.items()), body)
        return Response(reply.body, reply.status, headers=dict(reply.headers))

    @api.post("/v1/chat/completions")
    async def http_chat(self, request: Request) -> Response:
        body = self.load(await self.read(request))
        auth = request.headers.get("authorization")
        if body.get("stream") is True:
            return await guard.sse_response(self.chat_completions_stream(body, auth))
        return JSONResponse(await self.chat_completions(body, auth))

    @api.post("/v1/responses")  # its bodies: web/responses_api (and OpenAI's own spec, docs/responses.md)
    async def http_responses(self, request: Request) -> Response:
        body = self.load(await self.read(request))
        auth = request.headers.get("authorization")
        if body.get("stream") is True:
            return await guard.sse_response(self.responses_stream(body, auth), responses_api.sse_error_event)
        return JSONResponse(await self.responses_create(body, auth))

    @api.get("/v1/responses/{response_id}")
    async def http_responses_get(self, response_id: str, request: Request, user: str | None = None) -> Response:
        return JSONResponse(await self.responses_get(response_id, request.headers.get("authorization"), user))

    @api.delete("/v1/responses/{response_id}")
    async def http_responses_delete(self, response_id: str, request: Request, user: str | None = None) -> Response:
        return JSONResponse(await self.responses_delete(response_id, request.headers.get("authorization"), user))

    @api.get("/v1/models")
    async def http_models(self, request: Request) -> Response:
        return JSONResponse(await self.models(request.headers.get("authorization")))

    @api.get("/healthz")
    async def http_healthz(self) -> Response:
        return JSONResponse(await self.healthz())

    @api.get("/readyz")
    async def http_readyz(self, request: Request) -> Response:
        report = await self.readyz(request.headers.get("authorization"))
        return JSONResponse(report, 200 if report.get("ready") else 503)

    async def __del__(self) -> None:  # Serve awaits an async __del__ when the replica shuts down
        if self._started is not None and self._started.done() and not self._started.exception():
            await self.agent.aclose()
        if self._mcp is not None:
            await self._mcp.aclose()
        if self._response_store is not None:
            await self._response_store.aclose()


# /openapi.json: the real request and response bodies, errors and links (raylight_agents.openapi)
openapi.describe(api, {"invoke": InvokeIn, "search": SearchIn, "chat": ChatIn})


def build_app(args: AgentAppArgs | dict[str, Any]) -> Application:
    """Serve application builder (import path `raylight.api.names.AGENT_APP_IMPORT`): args are AgentAppArgs
    (camelCase on the wire), validated at deploy time, not per request; the deployment's options come from
    the spec (`agent_deployment_options`)."""
    app_args = AgentAppArgs.model_validate(args)
    return AgentServer.options(  # type: ignore[attr-defined]
        name=AGENT_DEPLOYMENT, **agent_deployment_options(app_args.spec)
    ).bind(app_args.name, app_args.spec, app_args.connections)
