"""The skeleton every HTTP app shares (a ModelDeployment's `ModelServer`, a Pipeline's `AgentServer`, the local
`Gateway`, and routes other modules add): the FastAPI app with the guard in front, request observation, body
reading and parsing, and the mapping of refusals to the OpenAI error shape, written once.

An app is an `Edge` subclass (the engine host keeps only what is its own: its engine, its metrics labels,
its routes):

    api = server.app("raylight model server")

    @serve.deployment(...)
    @serve.ingress(api)
    class ModelServer(server.Edge):
        span_prefix = "model"
        def request_attributes(self, route): ...        # span attributes
        def request_done(self, route, status, seconds, span): ...  # the app's metrics, audit
        @api.post("/v1/embeddings")
        async def http_embeddings(self, request: Request) -> Response:
            return JSONResponse(await self.embeddings(await self.read(request)))

- `read(request)`: the raw body, at most `max_request_bytes`, within guard.BODY_TIMEOUT_S (413, 408).
- `load(body)`: a JSON object from raw bytes or a dict a handle caller built (413, 400: guard.load_object).
- `validate(model, data)`: the pydantic request model, or one 400 naming every field (errors.validation_error).
- `observed(route, trace_headers)` / `observed_stream(route, make, trace_headers)`: one span per request (the
  caller's `traceparent`, or the `trace_headers` a gateway passed through a handle) and `request_done`
  with the status (the ApiError's, 499 when the caller went away, else 200).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, ClassVar, TypeVar

from fastapi import FastAPI, Request
from opentelemetry import trace
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from raylight_pipelines import telemetry
from raylight_pipelines.web import guard, limits, observe
from raylight_pipelines.web.errors import ApiError, validation_error

ModelT = TypeVar("ModelT", bound=BaseModel)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")  # Starlette's TestClient calls itself "testclient"


class ClientLimit:
    """ASGI middleware: at most `limit` requests in flight from one client address on this replica; more get
    429 `too_many_requests` naming the limit. Health probes and loopback callers (the one-machine platform's
    own hops: gateway, agents calling their model) are never refused; `limit` 0 turns it off."""

    PROBES = frozenset({"/healthz", "/readyz", "/-/healthz", "/-/routes"})

    def __init__(self, app: ASGIApp, limit: int | None = None) -> None:
        self.app = app
        self.limit = limits.max_client_requests() if limit is None else limit
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = (scope.get("client") or ("unknown", 0))[0]
        if scope["type"] != "http" or not self.limit or scope.get("path") in self.PROBES or _loopback(client):
            await self.app(scope, receive, send)
            return
        if self.in_flight[client] >= self.limit:
            refusal = ApiError(429, f"{self.limit} requests from this client are in flight already "
                               "(limit max_client_requests); retry when one has finished", type="rate_limit_error",
                               code="too_many_requests", retry_after=1)
            await guard.error_response(refusal)(scope, receive, send)
            return
        self.in_flight[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[client] -= 1
            if not self.in_flight[client]:
                del self.in_flight[client]


def app(title: str) -> FastAPI:
    """A FastAPI app behind the guard (sizes, Unicode, depth, headers, slow bodies; every refusal and failure
    in the OpenAI error shape) and the per-client limit, that continues a caller's trace."""
    api = FastAPI(title=title, docs_url=None, redoc_url=None)
    guard.install(api)
    api.add_middleware(observe.TraceContextMiddleware)
    api.add_middleware(ClientLimit)
    return api


class Edge:
    """What every app does with a request before and after its own work (see the module docstring)."""

    span_prefix: ClassVar[str] = "request"  # spans are named "<span_prefix> <route>"
    max_request_bytes: int = 1024 * 1024

    def request_attributes(self, route: str) -> dict[str, Any]:
        """The span attributes of a request on `route` (the app names itself here)."""
        return {"raylight.route": route}

    def request_done(self, route: str, status: int, seconds: float, span: trace.Span) -> None:
        """Called once per request with its status: the app's metrics (and audit) go here."""

    def _done(self, route: str) -> Callable[[int, float, trace.Span], None]:
        def done(status: int, started: float, span: trace.Span) -> None:
            self.request_done(route, status, time.perf_counter() - started, span)
        return done

    @contextlib.contextmanager
    def observed(self, route: str, trace_headers: dict[str, str] | None = None) -> Iterator[trace.Span]:
        """One request inside one (current) span, a child of the caller's trace."""
        with telemetry.attached(trace_headers), \
                observe.observed(f"{self.span_prefix} {route}", self.request_attributes(route),
                                 self._done(route)) as span:
            yield span

    def observed_stream(self, route: str, make: Callable[[], AsyncGenerator[str]],
                        trace_headers: dict[str, str] | None = None) -> AsyncGenerator[str]:
        """A streamed request inside one span (see `observe.observed_stream`)."""
        return observe.observed_stream(f"{self.span_prefix} {route}", self.request_attributes(route), make,
                                       self._done(route), telemetry.extract(trace_headers))

    async def read(self, request: Request) -> bytes:
        """The raw request body within this app's size and time limits; raises ApiError (413, 408)."""
        return await guard.read_body(request, self.max_request_bytes)

    def load(self, body: bytes | str | dict[str, Any]) -> dict[str, Any]:
        """A checked JSON object from a raw body or a handle caller's dict; raises ApiError (413, 400)."""
        return guard.load_object(body, self.max_request_bytes)

    @staticmethod
    def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
        """`data` as the request model, or one 400 naming every offending field."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None
