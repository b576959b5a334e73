"""The HTTP edge every app shares (web/server, web/guard, web/errors): the per-client limit, stream duration
and idle limits, and 5xx messages that carry no Ray ids. Real FastAPI apps over ASGI."""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import AsyncGenerator

import httpx
import pytest
from fastapi import Request, Response
from raylight_pipelines.web import guard, responses, server
from raylight_pipelines.web.errors import ApiError, internal_ids_removed


def _app(limit: int) -> tuple[server.FastAPI, asyncio.Event]:
    api = server.app("test")
    release = asyncio.Event()
    for middleware in api.user_middleware:
        if middleware.cls is server.ClientLimit:
            middleware.kwargs["limit"] = limit

    @api.post("/work")
    async def work(request: Request) -> Response:
        await release.wait()
        return Response("done")

    @api.get("/healthz")
    async def healthz() -> Response:
        return Response("ok")

    return api, release


async def test_one_client_gets_429_naming_the_limit_past_its_requests_in_flight_others_do_not() -> None:
    api, release = _app(limit=2)
    one = httpx.AsyncClient(transport=httpx.ASGITransport(app=api, client=("10.0.0.7", 5000)), base_url="http://t")
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=api, client=("10.0.0.8", 5000)), base_url="http://t")
    held = [asyncio.ensure_future(one.post("/work")) for _ in range(2)]
    await asyncio.sleep(0.05)
    refused = await one.post("/work")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert "max_client_requests" in refused.json()["error"]["message"]
    assert (await one.get("/healthz")).status_code == 200  # probes are never refused
    third = asyncio.ensure_future(other.post("/work"))  # another address has its own budget
    await asyncio.sleep(0.05)
    assert not third.done()
    release.set()
    assert [r.status_code for r in await asyncio.gather(*held, third)] == [200, 200, 200]
    assert (await one.post("/work")).status_code == 200  # its slots came back


async def test_loopback_callers_are_not_limited() -> None:
    api, release = _app(limit=1)
    local = httpx.AsyncClient(transport=httpx.ASGITransport(app=api, client=("127.0.0.1", 5000)), base_url="http://t")
    calls = [asyncio.ensure_future(local.post("/work")) for _ in range(3)]
    await asyncio.sleep(0.05)
    release.set()
    assert [r.status_code for r in await asyncio.gather(*calls)] == [200, 200, 200]


async def _drain(response: Response) -> list[str]:
    return [part if isinstance(part, str) else part.decode() async for part in response.body_iterator]  # type: ignore[attr-defined]


async def test_a_stream_whose_producer_goes_quiet_ends_with_stream_timeout() -> None:
    stopped = asyncio.Event()

    async def quiet() -> AsyncGenerator[str]:
        try:
            yield responses.sse({"n": 1})
            await asyncio.sleep(60)
            yield responses.sse({"n": 2})
        finally:
            stopped.set()

    response = await guard.sse_response(quiet(), idle_seconds=0.2)
    parts = await _drain(response)
    assert parts[0] == responses.sse({"n": 1})
    error = json.loads(parts[1].removeprefix("data: "))["error"]
    assert error["code"] == "stream_timeout" and "stream_idle_seconds" in error["message"]
    assert stopped.is_set()  # the producer was stopped


async def test_a_stream_that_runs_too_long_ends_with_stream_timeout_in_its_own_event_shape() -> None:
    async def endless() -> AsyncGenerator[str]:
        while True:
            yield responses.sse({"token": "t"}, "token")
            await asyncio.sleep(0.02)

    response = await guard.sse_response(endless(), responses.sse_error_event, max_seconds=0.3, idle_seconds=5)
    parts = await _drain(response)
    assert 5 < len(parts) < 30
    assert parts[-1].startswith("event: error\n")
    data = json.loads(parts[-1].split("data: ", 1)[1])
    assert data["status"] == 504 and data["error"]["code"] == "stream_timeout"
    assert "stream_max_seconds" in data["error"]["message"]


RAY_DEATH = ("The actor died unexpectedly before finishing this task. class_name: QdrantStore actor_id: "
             "8d4b1e0f2a3c4d5e6f7a8b9c01000000 pid: 12345 name: store namespace: raylight ip: 10.0.0.3 "
             "ActorID(8d4b1e0f2a3c4d5e6f7a8b9c01000000) "
             "worker_id=0123456789abcdef0123456789abcdef0123456789abcdef01234567")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_failure_names_no_ray_actor_worker_or_process(status: int) -> None:
    error = ApiError(status, f"vector store query failed: {RAY_DEATH}", type="service_unavailable")
    for text in (error.message, json.dumps(error.body()), pickle.loads(pickle.dumps(error)).message):
        assert "8d4b1e0f" not in text and "12345" not in text and "10.0.0.3" not in text and "0123456789ab" not in text
        assert "vector store query failed" in text and "QdrantStore" in text


def test_a_client_refusal_keeps_the_ids_the_client_sent() -> None:
    thread = "8d4b1e0f2a3c4d5e6f7a8b9c01000000"
    assert thread in ApiError(404, f"thread {thread} not found").message
    assert internal_ids_removed("no ids here") == "no ids here"
