"""The one guard in front of every HTTP app (model server, agent, local gateway): hostile input gets a 4xx in
the OpenAI error shape, never a 5xx and never an internal trace.

- `read_body(request, limit)`: a body declared or streamed over `limit` bytes -> 413 `request_too_large`
  (refused before it is read when Content-Length says so); one that takes longer than `BODY_TIMEOUT_S` to
  arrive (a slow client holding a connection) -> 408 `request_timeout`.
- `load_json(body, limit)`: what a route and a plain method (called through a DeploymentHandle) both run on
  a body, raw bytes or an already-parsed dict: over `limit` -> 413; not UTF-8, not JSON, `NaN`/`Infinity`,
  an integer of more than `MAX_INT_DIGITS` digits or a float out of range -> 400 `invalid_json`; nested
  deeper than `MAX_DEPTH` -> 400 `too_deep`; a lone surrogate (`"\\ud800"`) in any key or string -> 400
  `invalid_unicode` naming the field.
- `install(app)`: a header block over `MAX_HEADER_BYTES` -> 431; FastAPI's own refusals (unknown route,
  wrong method, its request validation) and any unexpected exception answer in the same shape (404, 405,
  400 `invalid_value`, 500 `internal_error` with an id that the log line carries, never the trace).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from raylight_pipelines.web import limits, responses
from raylight_pipelines.web.errors import ApiError, validation_error

log = logging.getLogger("raylight.guard")

MAX_DEPTH = 32  # OpenAI bodies nest about 6 deep (a JSON schema in response_format a little more)
# Python's own bound on int(str) (parsing is quadratic in the digits); a known field's integers are bounded by
# its request model (400 `invalid_value` naming it), an unknown field is ignored whatever its value.
MAX_INT_DIGITS = 4300
MAX_HEADER_BYTES = 16 * 1024
BODY_TIMEOUT_S = 30.0


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")


async def read_body(request: Request, limit: int, timeout: float = BODY_TIMEOUT_S) -> bytes:
    """The request body, at most `limit` bytes, arriving within `timeout` seconds; raises ApiError."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)  # refuse before reading it
    parts: list[bytes] = []
    size = 0
    deadline = time.monotonic() + timeout
    stream = request.stream().__aiter__()
    while True:
        try:
            part = await asyncio.wait_for(anext(stream), max(deadline - time.monotonic(), 0.001))
        except StopAsyncIteration:
            return b"".join(parts)
        except TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {timeout:g} seconds",
                           code="request_timeout") from None
        size += len(part)
        if size > limit:
            raise too_large(limit)
        parts.append(part)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"the integer {text[:12]}... has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:24]} is out of range")
    return value


def _invalid_json(reason: str) -> ApiError:
    return ApiError(400, f"The request body is not valid JSON: {reason}.", code="invalid_json")


def _check(value: Any, path: list[str], depth: int) -> None:
    """Depth and Unicode of a parsed body, naming the first bad field."""
    if depth > MAX_DEPTH:
        raise ApiError(400, f"The request body nests deeper than {MAX_DEPTH} levels.", code="too_deep")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            field = ".".join(path) or "body"
            raise ApiError(400, f"{field}: invalid Unicode (a lone surrogate U+{ord(value[exc.start]):04X} at "
                           f"character {exc.start})", param=field if path else None,
                           code="invalid_unicode") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(key, path, depth)
            _check(item, [*path, str(key)], depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, [*path, str(i)], depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"{'.'.join(path) or 'body'}: {value} is not a JSON number",
                       param=".".join(path) or None, code="invalid_value")


def load_json(body: bytes | str | dict[str, Any], limit: int) -> Any:
    """Check and parse a request body (raw, or a dict a Python caller built); raises ApiError (413, 400)."""
    if isinstance(body, dict):
        data: Any = body
        try:
            size = len(json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass"))
        except (TypeError, ValueError, RecursionError):
            size = 0  # _check below names what is wrong
        if size > limit:
            raise too_large(limit)
    else:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        if len(raw) > limit:
            raise too_large(limit)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _invalid_json(f"not UTF-8 at byte {exc.start}") from None
        try:
            data = json.loads(text, parse_constant=_refuse_constant, parse_int=_parse_int,
                              parse_float=_parse_float)
        except RecursionError:
            raise ApiError(400, f"The request body nests deeper than {MAX_DEPTH} levels.", code="too_deep") from None
        except ValueError as exc:
            raise _invalid_json(str(exc)) from None
    _check(data, [], 0)
    return data


def load_object(body: bytes | str | dict[str, Any], limit: int) -> dict[str, Any]:
    """`load_json`, and the body must be a JSON object."""
    data = load_json(body, limit)
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return data


def error_response(exc: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The OpenAI error body with the refusal's status and headers (`Retry-After`, a 405's `Allow`)."""
    return JSONResponse(exc.body(), status_code=exc.status, headers={**exc.headers(), **(headers or {})} or None)


def stream_timeout(seconds: float, idle: bool) -> ApiError:
    what = f"sent nothing for {seconds:g} seconds (limit stream_idle_seconds)" if idle else \
        f"ran for {seconds:g} seconds (limit stream_max_seconds)"
    return ApiError(504, f"the stream {what}; it was ended", type="timeout", code="stream_timeout")


async def sse_response(lines: AsyncGenerator[str], error_event: Callable[[ApiError], str] = responses.sse_error,
                       max_seconds: float = limits.STREAM_MAX_SECONDS,
                       idle_seconds: float = limits.STREAM_IDLE_SECONDS) -> Response:
    """Server-sent events whose first line is awaited before the response starts, so a refusal raised
    before it (ApiError) still gets its HTTP status instead of a 200 with an error event. A stream that runs
    past `max_seconds`, or whose producer sends nothing for `idle_seconds`, ends with `error_event(...)`
    (code `stream_timeout`) and its producer is stopped."""
    started = time.monotonic()
    first = await anext(lines, None)

    async def body() -> AsyncIterator[str]:
        async with contextlib.aclosing(lines):  # a client that goes away stops the producer now
            if first is None:
                return
            yield first
            while True:
                left = max_seconds - (time.monotonic() - started)
                try:
                    line = await asyncio.wait_for(anext(lines), max(min(idle_seconds, left), 0.001))
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    idle = left > idle_seconds
                    yield error_event(stream_timeout(idle_seconds if idle else max_seconds, idle))
                    return
                yield line

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def internal_error(where: str, exc: BaseException) -> ApiError:
    """A 500 that tells the client an id to quote and logs the trace under it (never sent)."""
    ident = uuid.uuid4().hex[:12]
    log.error("%s failed (error id %s)", where, ident, exc_info=exc)
    return ApiError(500, f"internal error (error id {ident}); the server log has the details",
                    type="server_error", code="internal_error")


class _HeaderGuard:
    """ASGI middleware: refuse a header block over MAX_HEADER_BYTES with 431 before the app runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
            if size > MAX_HEADER_BYTES:
                error = ApiError(431, f"request headers larger than {MAX_HEADER_BYTES} bytes",
                                 code="headers_too_large")
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Put the guard in front of `app` and give its own refusals and failures the OpenAI error shape."""
    app.add_middleware(_HeaderGuard)

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(ApiError(exc.status_code, str(exc.detail), code=code), exc.headers)

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # FastAPI's locations start with where the value came from ("query", "body"): drop that part.
        return error_response(validation_error([{**e, "loc": tuple(e["loc"])[1:]} for e in exc.errors()]))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(internal_error(f"{request.method} {request.url.path}", exc))

    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        ApiError: api_error, StarletteHTTPException: http_error, RequestValidationError: validation,
        Exception: unexpected}
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
