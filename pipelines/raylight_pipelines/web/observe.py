"""Every HTTP app's request observation: one span per request (a caller's `traceparent` continued), its
status (the `ApiError`'s, 499 when the caller went away, else 200) handed to the app's metrics."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from raylight_pipelines import telemetry
from raylight_pipelines.web.errors import ApiError


class TraceContextMiddleware:
    """ASGI middleware: a request's work runs inside the trace its `traceparent` header names (if any)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])
                   if k in (b"traceparent", b"tracestate")}
        if not headers:
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(propagate.extract(headers))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


async def observed_stream(name: str, attributes: dict[str, Any], make: Callable[[], AsyncGenerator[str]],
                          done: Callable[[int, float, trace.Span], None],
                          parent: otel_context.Context | None = None) -> AsyncGenerator[str]:
    """A stream inside one span: the span is current while each part is produced (never across a yield, so
    the trace context survives the response being sent from another task); `done(status, started, span)`
    gets the refusal's status raised before the first part (499 when the caller went away), else 200."""
    started, status, sent = time.perf_counter(), 200, False
    span = telemetry.tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes)
    ctx = trace.set_span_in_context(span)
    try:
        token = otel_context.attach(ctx)
        try:
            parts = make()
        finally:
            otel_context.detach(token)
        async with contextlib.aclosing(parts):
            while True:
                token = otel_context.attach(ctx)
                try:
                    part = await anext(parts)
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                sent = True
                yield part
    except ApiError as exc:
        status = 200 if sent else exc.status
        span.record_exception(exc)
        raise
    except BaseException:
        status = 200 if sent else 499
        raise
    finally:
        span.set_attribute("http.response.status_code", status)
        done(status, started, span)
        span.end()


@contextlib.contextmanager
def observed(name: str, attributes: dict[str, Any], done: Callable[[int, float, trace.Span], None]
             ) -> Iterator[trace.Span]:
    """One request inside one (current) span; `done(status, started, span)` gets the `ApiError`'s status
    raised (499 when the caller went away), else 200."""
    started, status = time.perf_counter(), 200
    with telemetry.tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER, attributes=attributes) as span:
        try:
            yield span
        except ApiError as exc:
            status = exc.status
            raise
        except BaseException:
            status = 499
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            done(status, started, span)
