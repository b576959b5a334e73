"""The shared guard in front of every HTTP app: each hostile input gets a 4xx in the OpenAI error shape
(never a 5xx, never a trace), on a FastAPI app with the guard installed exactly as the real apps do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from raylight_pipelines.web import guard
from raylight_pipelines.web.errors import ApiError

LIMIT = 4096
DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(("raw", "status", "code", "param"), [
    ('{"model":"minilm","input":' + DEEP + "}", 400, "too_deep", None),  # was a 500 / RecursionError
    ('{"model":"minilm","input":' + "[" * 40 + "]" * 40 + "}", 400, "too_deep", None),
    ('{"model":"minilm","input":"\\ud800"}', 400, "invalid_unicode", "input"),  # was a 502
    ('{"messages":[{"role":"user","content":"\\ud800 vault"}]}', 400, "invalid_unicode", "messages.0.content"),
    ('{"\\udfff":1}', 400, "invalid_unicode", None),
    ('{"temperature": NaN}', 400, "invalid_json", None),
    ('{"temperature": Infinity}', 400, "invalid_json", None),
    ('{"temperature": 1e999}', 400, "invalid_json", None),
    ("{not json", 400, "invalid_json", None),
    (b'{"input": "\xff\xfe"}', 400, "invalid_json", None),  # not UTF-8
    ('{"input": "' + "x" * LIMIT + '"}', 413, "request_too_large", None),
])
def test_hostile_bodies_are_refused_with_a_4xx_naming_the_fault(raw: str | bytes, status: int, code: str,
                                                                 param: str | None) -> None:
    with pytest.raises(ApiError) as info:
        guard.load_json(raw.encode() if isinstance(raw, str) else raw, LIMIT)
    assert (info.value.status, info.value.code, info.value.param) == (status, code, param)
    assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}


def test_a_python_caller_s_dict_gets_the_same_checks() -> None:
    with pytest.raises(ApiError) as info:
        guard.load_json({"input": ["ok", "\ud800"]}, LIMIT)
    assert info.value.code == "invalid_unicode" and info.value.param == "input.1"
    nested: Any = []
    for _ in range(100):
        nested = [nested]
    with pytest.raises(ApiError) as deep:
        guard.load_json({"input": nested}, 10**6)
    assert deep.value.code == "too_deep"
    with pytest.raises(ApiError) as nan:
        guard.load_json({"temperature": float("nan")}, LIMIT)
    assert nan.value.param == "temperature"


def test_ordinary_bodies_pass_unchanged() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "héllo 🚀 \u0000"}]}],
            "max_tokens": 12, "seed": 2**63 - 1, "temperature": 0.7, "response_format": {"type": "json_schema",
            "json_schema": {"schema": {"type": "object", "properties": {"a": {"type": "array", "items": {
                "type": "object", "properties": {"b": {"type": "string"}}}}}}}}}
    assert guard.load_json(json.dumps(body).encode(), LIMIT) == body
    assert guard.load_json(body, LIMIT) is body
    with pytest.raises(ApiError) as info:
        guard.load_object(b"[1, 2]", LIMIT)
    assert info.value.status == 400


# ---------------------------------------------------------------- the guard installed on an app

app = FastAPI()
guard.install(app)


@app.post("/echo")
async def echo(request: Request) -> dict[str, Any]:
    return guard.load_object(await guard.read_body(request, LIMIT, timeout=0.5), LIMIT)


@app.get("/typed")
async def typed(n: int) -> dict[str, int]:
    return {"n": n}


@app.get("/boom")
async def boom() -> None:
    raise RecursionError("maximum recursion depth exceeded\x1b[31m in /secret/path.py")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def openai_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def test_oversize_declared_streamed_and_slow_bodies_are_refused(client: httpx.AsyncClient) -> None:
    declared = await client.post("/echo", content=b"{}", headers={"content-length": str(10 * 1024 * 1024)})
    assert declared.status_code == 413 and openai_error(declared)["code"] == "request_too_large"

    async def chunks(n: int, pause: float = 0.0) -> AsyncIterator[bytes]:
        for _ in range(n):
            await asyncio.sleep(pause)
            yield b" " * 1024

    streamed = await client.post("/echo", content=chunks(10))  # chunked: no Content-Length
    assert streamed.status_code == 413
    slow = await client.post("/echo", content=chunks(3, pause=0.4))
    assert slow.status_code == 408 and openai_error(slow)["code"] == "request_timeout"
    assert (await client.post("/echo", content=b'{"a": 1}')).json() == {"a": 1}


async def test_oversize_headers_are_431(client: httpx.AsyncClient) -> None:
    response = await client.get("/typed?n=1", headers={"x-pad": "a" * (guard.MAX_HEADER_BYTES + 1)})
    assert response.status_code == 431 and openai_error(response)["code"] == "headers_too_large"


async def test_framework_refusals_and_failures_keep_the_openai_shape_and_no_trace(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nothing")
    assert missing.status_code == 404 and openai_error(missing)["code"] == "not_found"
    wrong = await client.get("/echo")
    assert wrong.status_code == 405 and openai_error(wrong)["code"] == "method_not_allowed"
    typed_bad = await client.get("/typed?n=many")
    assert typed_bad.status_code == 400 and openai_error(typed_bad)["param"] == "n"
    failed = await client.get("/boom")
    error = openai_error(failed)
    assert failed.status_code == 500 and error["code"] == "internal_error"
    assert "Recursion" not in error["message"] and "\x1b" not in failed.text and "secret" not in failed.text


@pytest.mark.parametrize("field", ["max_tokens", "ignored"])
def test_an_integer_longer_than_python_parses_cheaply_is_invalid_json_a_long_one_is_not(field: str) -> None:
    with pytest.raises(ApiError) as info:
        guard.load_json(f'{{"{field}": {"9" * (guard.MAX_INT_DIGITS + 1)}}}'.encode(), 1 << 20)
    assert (info.value.status, info.value.code) == (400, "invalid_json")
    # 300 digits parse; a known field's bound then refuses it (test_openai_surface: max_tokens 2**63)
    assert guard.load_json(f'{{"{field}": {"9" * 300}}}'.encode(), 1 << 20)[field] == int("9" * 300)
