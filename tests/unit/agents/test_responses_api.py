"""The OpenAI Responses API on a Pipeline, driven by the OpenAI Python SDK over real HTTP (uvicorn in front of
`AgentServer`'s plain methods, as its routes and a gateway call them): `responses.create`, `.stream` with the
typed events, citations as annotations, `previous_response_id` across two replicas sharing one store (SQLite
file; PostgreSQL at 127.0.0.1:5432/test when it answers), `store: false`, GET and DELETE, hostile bodies 4xx
naming the field."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, connections
from raylight.api.connections import AuthConnection, ThreadsConnection
from raylight_agents.agent import Agent
from raylight_agents.serve import AgentServer
from raylight_pipelines.web import guard
from raylight_pipelines.web.errors import ApiError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from support import free_port

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning")

TOKEN = "resp-t0ken"
DOCS = [Doc("d1", "Ray Serve scales replicas with autoscaling between min and max.", "serve.md")]
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_answers() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=2):
            return True
    except Exception:
        return False


async def make_server(threads: ThreadsConnection, seen: list[dict[str, Any]] | None = None) -> Any:
    spec = {"embedder": {"modelDeployment": "minilm"},
            "llm": {"modelDeployment": "smollm"},
            "retrieval": {"minScore": 0.3},  # the fakes' bag-of-words embedder (see test_graphs.spec)
            "agent": {"auth": {"secret": "agent"}}}
    conn = connections(auth=AuthConnection(token_env="TEST_RESP_TOKEN"), threads=threads)
    cls = AgentServer.func_or_class
    obj = cls.__new__(cls)
    await obj.__init__("handbook", spec, conn)

    def reply(body: dict[str, Any]) -> str:
        if seen is not None:
            seen.append(body)
        return "Replicas autoscale [1]."
    obj.agent = Agent("handbook", obj.spec, conn, retriever=lambda: MemoryRetriever(DOCS),
                      llm=ScriptedLLM(reply).llm())
    return obj


def app_for(obj: Any) -> Starlette:
    async def create(request: Request) -> Response:
        auth = request.headers.get("authorization")
        try:
            body = guard.load_object(await request.body(), 1 << 20)
            if body.get("stream") is True:
                return await guard.sse_response(obj.responses_stream(body, auth))
            return JSONResponse(await obj.responses_create(body, auth))
        except ApiError as exc:
            return guard.error_response(exc)

    async def one(request: Request) -> Response:
        auth, rid = request.headers.get("authorization"), request.path_params["rid"]
        try:
            if request.method == "DELETE":
                return JSONResponse(await obj.responses_delete(rid, auth))
            return JSONResponse(await obj.responses_get(rid, auth))
        except ApiError as exc:
            return guard.error_response(exc)

    return Starlette(routes=[Route("/v1/responses", create, methods=["POST"]),
                             Route("/v1/responses/{rid}", one, methods=["GET", "DELETE"])])


@contextlib.asynccontextmanager
async def serving(obj: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app_for(obj), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task
        await obj.agent.aclose()
        if obj._response_store is not None:
            await obj._response_store.aclose()


def sdk(url: str, token: str = TOKEN) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key=token, max_retries=0)


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_RESP_TOKEN", TOKEN)


@pytest.fixture
async def url(token_env: None, tmp_path: Path) -> AsyncIterator[str]:
    async with serving(await make_server(ThreadsConnection(sqlite_path=str(tmp_path / "threads.db")))) as address:
        yield address


async def test_create_answers_with_citations_as_annotations_and_usage(url: str) -> None:
    response = await sdk(url).responses.create(model="handbook", input="How do replicas scale?")
    assert response.id.startswith("resp_") and response.status == "completed" and response.model == "handbook"
    assert response.output_text == "Replicas autoscale [1]."
    note = response.output[0].content[0].annotations[0]
    assert (note.type, note.file_id, note.filename) == ("file_citation", "d1", "serve.md")
    assert note.index == response.output_text.index("[1]")
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


async def test_stream_gives_the_typed_events_the_sdk_reads(url: str) -> None:
    async with sdk(url).responses.stream(model="handbook", input="How do replicas scale?") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
    assert final.output_text == "Replicas autoscale [1]."
    assert final.output[0].content[0].annotations[0].file_id == "d1"
    stored = await sdk(url).responses.retrieve(final.id)
    assert stored.output_text == final.output_text


async def test_previous_response_id_continues_on_another_replica_sharing_sqlite(token_env: None,
                                                                                tmp_path: Path) -> None:
    threads = ThreadsConnection(sqlite_path=str(tmp_path / "threads.db"))
    seen: list[dict[str, Any]] = []
    async with serving(await make_server(threads)) as first, serving(await make_server(threads, seen)) as second:
        one = await sdk(first).responses.create(model="handbook", input="How do replicas scale?",
                                                instructions="Answer briefly.")
        two = await sdk(second).responses.create(model="handbook", input="And the maximum?",
                                                 previous_response_id=one.id)
    assert two.previous_response_id == one.id
    sent = [m["content"] for m in seen[-1]["messages"]]
    assert any("How do replicas scale?" in m for m in sent) and any("Replicas autoscale" in m for m in sent)
    assert any("And the maximum?" in m for m in sent)


@pytest.mark.skipif(not postgres_answers(), reason=f"no PostgreSQL answers at {PG_DSN}")
async def test_previous_response_id_continues_on_another_replica_sharing_postgres(
        token_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_RESP_PG", PG_DSN)
    threads = ThreadsConnection(postgres_dsn_env="TEST_RESP_PG")
    seen: list[dict[str, Any]] = []
    async with serving(await make_server(threads)) as first, serving(await make_server(threads, seen)) as second:
        one = await sdk(first).responses.create(model="handbook", input="How do replicas scale?")
        two = await sdk(second).responses.create(model="handbook", input="And the maximum?",
                                                 previous_response_id=one.id)
        fetched = await sdk(second).responses.retrieve(one.id)
        await sdk(first).responses.delete(one.id)
        with pytest.raises(openai.NotFoundError):
            await sdk(second).responses.retrieve(one.id)
    assert two.status == "completed" and fetched.output_text == one.output_text
    assert any("Replicas autoscale" in (m["content"] or "") for m in seen[-1]["messages"])


async def test_store_false_keeps_nothing_and_delete_forgets(url: str) -> None:
    client = sdk(url)
    unstored = await client.responses.create(model="handbook", input="How do replicas scale?", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError) as exc:
        await client.responses.create(model="handbook", input="next", previous_response_id=unstored.id)
    assert exc.value.body["param"] == "previous_response_id"
    kept = await client.responses.create(model="handbook", input="How do replicas scale?")
    await client.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(kept.id)


async def test_a_wrong_token_is_401_and_a_pipeline_refuses_function_tools_naming_the_field(url: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        await sdk(url, "nope").responses.create(model="handbook", input="x")
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk(url).responses.create(model="handbook", input="x", tools=[{
            "type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}])
    assert exc.value.body["param"] == "tools"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x"}, "model"),
    ({"model": "handbook"}, "input"),
    ({"model": "handbook", "input": ""}, "input"),
    ({"model": "handbook", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input"),
    ({"model": "handbook", "input": "x", "tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"model": "handbook", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "handbook", "input": "x", "previous_response_id": "../etc"}, "previous_response_id"),
    ({"model": "handbook", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
    ({"model": "handbook", "input": "x", "background": True}, "background"),
    ({"model": "handbook", "input": "x", "temperature": "hot"}, "temperature"),
    ({"model": "gpt-4", "input": "x"}, "model"),
])
async def test_hostile_bodies_get_400_naming_the_field(url: str, body: dict[str, Any], param: str) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{url}/responses", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code in (400, 404), resp.text
    error = resp.json()["error"]
    assert (error["param"] or "").startswith(param) or param in error["message"], error


async def test_get_and_delete_of_unknown_or_malformed_ids_are_4xx(url: str) -> None:
    async with httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        missing = await http.get(f"{url}/responses/resp_0000", headers=auth)
        malformed = await http.get(f"{url}/responses/x%27;drop", headers=auth)
        gone = await http.delete(f"{url}/responses/resp_0000", headers=auth)
    assert (missing.status_code, malformed.status_code, gone.status_code) == (404, 400, 404)


