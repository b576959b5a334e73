"""A Pipeline as an MCP server, driven by the official MCP Python SDK client over real Streamable HTTP (uvicorn
on a loopback port in front of `AgentServer.mcp`, the plain method a gateway calls): tools listed, `search` and
`ask` called, an unauthorised call refused with 401, a document the caller may not see never returned, refusals
inside a tool (quota, bad arguments) given to the model as tool errors, hostile bodies 4xx naming the field."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, connections
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from raylight.api.connections import AuthConnection
from raylight_agents import mcp_server
from raylight_agents.agent import Agent
from raylight_agents.serve import AgentServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support import free_port
from test_identity import OTHER_KEY

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning")

TOKEN = "mcp-t0ken"
DOCS = [Doc("d1", "Ray Serve scales replicas with autoscaling between min and max.", "serve.md"),
        Doc("hr1", "Salary bands for replicas engineers are set by hr.", "salaries.md", groups=("hr",))]


async def make_server(spec_extra: dict[str, Any] | None = None, llm: bool = True) -> Any:
    spec: dict[str, Any] = {"embedder": {"modelDeployment": "minilm"},
            "retrieval": {"minScore": 0.3},  # the fakes' bag-of-words embedder (see test_graphs.spec)
                            "agent": {"auth": {"secret": "agent"}, **(spec_extra or {})}}
    if llm:
        spec["llm"] = {"modelDeployment": "smollm"}
    conn = connections(auth=AuthConnection(token_env="TEST_MCP_TOKEN"), **({} if llm else {"llm": None}))
    cls = AgentServer.func_or_class
    obj = cls.__new__(cls)
    await obj.__init__("handbook", spec, conn)
    retriever = MemoryRetriever(DOCS)
    scripted = ScriptedLLM(lambda body: "Replicas autoscale [1].")
    obj.agent = Agent("handbook", obj.spec, conn, retriever=lambda: retriever,
                      llm=scripted.llm() if llm else None)
    return obj


@contextlib.asynccontextmanager
async def serving(obj: Any) -> AsyncIterator[str]:
    """`obj.mcp` behind a real HTTP server, as the gateway and the agent's route put it; yields the URL."""
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        reply = await obj.mcp(request.method, list(request.headers.items()), body)
        return Response(reply.body, reply.status, headers=dict(reply.headers))

    path = mcp_server.MCP_PATH.format(name="handbook")
    app = Starlette(routes=[Route(path, endpoint, methods=["GET", "POST", "DELETE", "PUT"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        server.should_exit = True
        await task
        await obj.agent.aclose()
        if obj._mcp is not None:
            await obj._mcp.aclose()


@pytest.fixture
async def url(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv("TEST_MCP_TOKEN", TOKEN)
    async with serving(await make_server()) as address:
        yield address


def client(url: str, **headers: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}", **headers}, timeout=30)
    return Client(streamable_http_client(url, http_client=http))


async def test_lists_search_and_ask_with_their_schemas(url: str) -> None:
    async with client(url) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
    assert set(tools) == {"search", "ask"}
    assert tools["search"].input_schema["required"] == ["query"]
    assert {"query", "top_k", "filters"} <= set(tools["search"].input_schema["properties"])
    assert {"question", "thread"} <= set(tools["ask"].input_schema["properties"])
    assert tools["search"].output_schema is not None and "results" in tools["search"].output_schema["properties"]


async def test_search_returns_sources_titles_texts_and_scores(url: str) -> None:
    async with client(url) as mcp:
        result = await mcp.call_tool("search", {"query": "how do replicas autoscale", "top_k": 3})
    assert not result.is_error
    results = result.structured_content["results"]
    assert results[0]["source"] == "serve.md" and "autoscaling" in results[0]["text"]
    assert set(results[0]) >= {"source", "title", "text", "score", "rank", "id"}
    assert json.loads(result.content[0].text)["results"][0]["id"] == "d1"


async def test_ask_answers_with_citations_and_a_thread_for_follow_ups(url: str) -> None:
    async with client(url) as mcp:
        first = await mcp.call_tool("ask", {"question": "How do replicas scale?"})
        assert not first.is_error, first.content
        out = first.structured_content
        assert out["answer"].startswith("Replicas autoscale") and out["citations"][0]["id"] == "d1"
        follow = await mcp.call_tool("ask", {"question": "And the maximum?", "thread": out["thread"]})
    assert not follow.is_error and follow.structured_content["thread"] == out["thread"]


async def test_an_unauthorised_call_is_401_before_any_tool_runs(url: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        async with httpx.AsyncClient() as http:
            resp = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                   headers={"Accept": "application/json, text/event-stream", **headers})
        assert resp.status_code == 401, headers
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["error"]["message"] == "missing or wrong bearer token"
    http2 = httpx2.AsyncClient(headers={"Authorization": "Bearer wrong"})
    with pytest.raises(Exception) as exc:  # the SDK client surfaces the 401 (it cannot even list tools)
        async with Client(streamable_http_client(url, http_client=http2)) as mcp:
            await mcp.list_tools()
    assert "Server returned an error response" in repr(exc.value)  # the SDK's words for the 401 it got


async def test_a_document_the_caller_may_not_see_is_never_returned(url: str) -> None:
    async with client(url, **{"X-Raylight-User": "bob"}) as mcp:
        outsider = await mcp.call_tool("search", {"query": "salary bands replicas engineers", "top_k": 10})
    async with client(url, **{"X-Raylight-User": "carol", "X-Raylight-Groups": "eng, hr"}) as mcp:
        insider = await mcp.call_tool("search", {"query": "salary bands replicas engineers", "top_k": 10})
    assert "hr1" not in [r["id"] for r in outsider.structured_content["results"]]
    assert "hr1" in [r["id"] for r in insider.structured_content["results"]]


async def test_refusals_inside_a_tool_are_tool_errors_naming_the_field(url: str) -> None:
    async with client(url) as mcp:
        bad_k = await mcp.call_tool("search", {"query": "replicas", "top_k": 0})
        bad_filter = await mcp.call_tool("search", {"query": "replicas", "filters": {"colour": "red"}})
        bad_thread = await mcp.call_tool("ask", {"question": "x", "thread": "a b"})
        unknown = await mcp.call_tool("delete_everything", {})
    assert bad_k.is_error and "top_k" in bad_k.content[0].text
    assert bad_filter.is_error and "colour" in bad_filter.content[0].text
    assert bad_thread.is_error and "thread" in bad_thread.content[0].text
    assert unknown.is_error or "delete_everything" in str(unknown)


async def test_quota_refusal_reaches_the_model_as_a_tool_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MCP_TOKEN", TOKEN)
    obj = await make_server({"limits": {"requestsPerMinute": 1}})
    async with serving(obj) as address, client(address, **{"X-Raylight-User": "dora"}) as mcp:
        first = await mcp.call_tool("search", {"query": "replicas"})
        second = await mcp.call_tool("search", {"query": "replicas"})
    assert not first.is_error
    assert second.is_error and "429" in second.content[0].text


async def test_a_search_only_pipeline_offers_search_but_not_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MCP_TOKEN", TOKEN)
    async with serving(await make_server(llm=False)) as address, client(address) as mcp:
        names = [t.name for t in (await mcp.list_tools()).tools]
    assert names == ["search"]


@pytest.mark.parametrize(("body", "status", "named"), [
    (b"{not json", 400, None),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": '
     b'{"query": "\\ud800"}}}', 400, "params.arguments.query"),
    (b"[" * 100 + b"]" * 100, 400, None),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "x": NaN}', 400, None),
    (b'{"a": "' + b"x" * 2_000_000 + b'"}', 413, None),
])
async def test_hostile_bodies_get_4xx_never_5xx(url: str, body: bytes, status: int, named: str | None) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(url, content=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"})
    assert resp.status_code == status, resp.text
    if named:
        assert named in resp.json()["error"]["message"] or named == resp.json()["error"]["param"]


async def test_odd_requests_are_4xx_never_5xx(url: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient() as http:
        put = await http.put(url, content=b"{}", headers=auth)
        wrong_method = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "no/such"},
                                       headers={**auth, "Accept": "application/json, text/event-stream"})
        no_accept = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                    headers={**auth, "Accept": "text/html"})
        not_rpc = await http.post(url, json={"hello": "world"},
                                  headers={**auth, "Accept": "application/json, text/event-stream"})
        get = await http.get(url, headers={**auth, "Accept": "text/event-stream"})
    assert put.status_code == get.status_code == 405 and put.headers["allow"] == "POST"
    for resp in (wrong_method, no_accept, not_rpc):
        assert resp.status_code < 500, (resp.status_code, resp.text)


async def test_oidc_callers_see_only_their_tenants_documents_and_cannot_restate_who_they_are(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from test_identity import DOCS as TENANT_DOCS
    from test_identity import QUESTION, jwks, oidc_spec, token
    from test_identity import make_server as make_oidc_server

    (tmp_path / "jwks.json").write_text(json.dumps(jwks()))
    monkeypatch.setattr("raylight.desired.pipeline.OIDC_JWKS_FILE", str(tmp_path / "jwks.json"))
    obj = await make_oidc_server(oidc_spec(), MemoryRetriever(TENANT_DOCS))

    def oidc_client(url: str, jwt: str, **headers: str) -> Client:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {jwt}", **headers}, timeout=30)
        return Client(streamable_http_client(url, http_client=http))

    async with serving(obj) as address:
        async with oidc_client(address, token("bob", "b")) as mcp:
            b = await mcp.call_tool("search", {"query": QUESTION, "top_k": 10})
            asked = await mcp.call_tool("ask", {"question": QUESTION})
        async with oidc_client(address, token("hana", "a", ["hr"])) as mcp:
            hr = await mcp.call_tool("search", {"query": QUESTION, "top_k": 10})
        async with oidc_client(address, token("bob", "b"), **{"X-Raylight-User": "hana"}) as mcp:
            restated = await mcp.call_tool("search", {"query": QUESTION})
        async with httpx.AsyncClient() as http:
            forged = await http.post(address, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                     headers={"Authorization": f"Bearer {token('eve', 'a', key=OTHER_KEY)}",
                                              "Accept": "application/json, text/event-stream"})
    assert [r["id"] for r in b.structured_content["results"]] == ["b1"]
    assert {c["id"] for c in asked.structured_content["citations"]} <= {"b1"}
    assert {"a1", "hr"} <= {r["id"] for r in hr.structured_content["results"]}
    assert restated.is_error and "400" in restated.content[0].text and "user" in restated.content[0].text
    assert forged.status_code == 401
