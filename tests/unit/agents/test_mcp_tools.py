"""Agents call MCP tools (`spec.agent.mcpServers`): a real MCP server that this test starts with the official SDK
(MCPServer over Streamable HTTP on uvicorn) checks the header from the Secret; the agentic graph offers only the
allowlisted tools, calls one and cites its result; a slow or failing server is a tool error on the turn, never a
5xx; the header's value never reaches the model, a log line or the audit. Plus the manifest field's validation,
its connection and its Secret-backed environment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, connections
from mcp.server.mcpserver import MCPServer
from pydantic import ValidationError
from raylight.api.connections import McpServerConnection, mcp_header_env
from raylight.api.types import Pipeline, PipelineSpec
from raylight.desired.pipeline import get_mcp_connections, get_pipeline_env
from raylight.settings import Settings
from raylight_agents.agent import Agent, Turn, running
from raylight_agents.mcp_tools import McpToolbox
from raylight_agents.tools import ToolError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from support import free_port

SECRET = "Bearer mcp-s3cret-value"
DOCS = [Doc("d1", "Orders ship from the Lyon warehouse within two days.", "orders.md")]


def make_mcp_server() -> tuple[Starlette, list[str]]:
    seen: list[str] = []
    server = MCPServer("orders")

    @server.tool(description="Look up an order by its id")
    async def lookup_order(order_id: str) -> str:
        seen.append(order_id)
        return f"Order {order_id} ships on Monday from Lyon."

    @server.tool(description="Takes forever")
    async def slow_report(topic: str) -> str:
        await asyncio.sleep(5)
        return "late"

    @server.tool(description="Always fails")
    async def broken(topic: str) -> str:
        raise RuntimeError("database exploded")

    @server.tool(description="Deletes things (not allowlisted)")
    async def delete_order(order_id: str) -> str:
        seen.append(f"DELETED {order_id}")
        return "deleted"

    app = server.streamable_http_app(stateless_http=True, json_response=True)

    async def guard_header(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and Request(scope).headers.get("authorization") != SECRET:
            await JSONResponse({"error": "unauthorized"}, 401)(scope, receive, send)
            return
        await app(scope, receive, send)
    wrapper = Starlette()
    wrapper.mount("/", guard_header)
    wrapper.router.lifespan_context = app.router.lifespan_context
    return wrapper, seen


@contextlib.asynccontextmanager
async def mcp_server() -> AsyncIterator[tuple[str, list[str]]]:
    app, seen = make_mcp_server()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp", seen
    finally:
        server.should_exit = True
        await task


def agentic_spec(url: str, tools: list[str], timeout: float = 2.0) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
        "agent": {"graph": "agentic-rag", "mcpServers": [{
            "name": "orders", "url": url, "tools": tools, "timeoutSeconds": timeout,
            "headers": [{"name": "Authorization", "secret": {"name": "orders-mcp", "key": "token"}}]}]}})


def scripted(tool: str, arg: str) -> ScriptedLLM:
    def reply(body: dict[str, Any]) -> str:
        name = body.get("response_format", {}).get("json_schema", {}).get("name")
        return {"tool": json.dumps({"tool": tool, "input": arg}), "grade": '{"relevant": [1]}'}.get(
            name, "It ships on Monday [1].")
    return ScriptedLLM(reply)


def make_agent(spec: PipelineSpec, llm: ScriptedLLM) -> Agent:
    conn = connections().model_copy(update={"mcp_servers": get_mcp_connections(spec)})
    return Agent("handbook", spec, conn, retriever=lambda: MemoryRetriever(DOCS), llm=llm.llm())


@pytest.fixture
def header_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mcp_header_env(0, 0), SECRET)


async def test_the_agent_calls_an_allowlisted_mcp_tool_and_cites_it(header_env: None,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with mcp_server() as (url, seen):
        spec = agentic_spec(url, ["lookup_order", "slow_report"])
        llm = scripted("lookup_order", "A-17")
        async with running(make_agent(spec, llm)) as agent:
            out = await agent.invoke(Turn("When does order A-17 ship?"))
    assert seen == ["A-17"]
    assert out["citations"][0]["id"] == "tool:lookup_order"
    assert out["citations"][0]["source"] == "mcp:orders/lookup_order"
    chooser = next(r for r in llm.requests
                   if r.get("response_format", {}).get("json_schema", {}).get("name") == "tool")
    offered = chooser["response_format"]["json_schema"]["schema"]["properties"]["tool"]["enum"]
    assert offered == ["search", "lookup_order", "slow_report"]  # delete_order is on the server, not allowlisted
    assert "Look up an order by its id" in chooser["messages"][0]["content"]  # the server's own description
    everything = json.dumps(llm.requests) + caplog.text
    assert "s3cret" not in everything


@pytest.mark.parametrize(("tool", "words"), [("slow_report", "longer than"), ("broken", "answered an error")])
async def test_a_slow_or_failing_server_is_a_tool_error_on_the_turn_not_a_5xx(
        header_env: None, caplog: pytest.LogCaptureFixture, tool: str, words: str) -> None:
    caplog.set_level(logging.DEBUG)
    async with mcp_server() as (url, _):
        spec = agentic_spec(url, ["lookup_order", tool], timeout=1.0)
        llm = scripted(tool, "x")
        async with running(make_agent(spec, llm)) as agent:
            out = await agent.invoke(Turn("When do orders ship?"))
            state = await agent.graph.aget_state(agent.config(out["thread_id"]))  # type: ignore[union-attr]
    errors = [c.get("error") for c in state.values["tool_calls"] if c.get("error")]
    assert errors and words in errors[0] and "orders" in errors[0]
    assert out["answer"]  # answered from the documents
    assert "s3cret" not in caplog.text + json.dumps(llm.requests)


async def test_a_wrong_or_missing_header_and_a_down_server_are_tool_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    async with mcp_server() as (url, seen):
        conn = McpServerConnection(name="orders", url=url, tools=["lookup_order"], timeout_seconds=2,
                                   header_envs={"Authorization": "TEST_MCP_HDR"})
        with pytest.raises(ToolError, match="Secret did not arrive"):
            await McpToolbox([conn]).call("lookup_order", "A-1")
        monkeypatch.setenv("TEST_MCP_HDR", "Bearer wrong")
        with pytest.raises(ToolError) as wrong:
            await McpToolbox([conn]).call("lookup_order", "A-1")
        with pytest.raises(ToolError, match="allowlist"):
            await McpToolbox([conn]).call("delete_order", "A-1")
    assert "wrong" not in str(wrong.value) and seen == []
    down = McpServerConnection(name="gone", url=f"http://127.0.0.1:{free_port()}/mcp", tools=["x"], timeout_seconds=1)
    with pytest.raises(ToolError, match="gone"):
        await McpToolbox([down]).call("x", "y")


@pytest.mark.parametrize(("server", "field"), [
    ({"name": "Bad Name", "url": "http://x.test/mcp", "tools": ["a"]}, "name"),
    ({"name": "ok", "url": "ftp://x.test/mcp", "tools": ["a"]}, "url"),
    ({"name": "ok", "url": "http://x.test/mcp", "tools": []}, "tools"),
    ({"name": "ok", "url": "http://x.test/mcp", "tools": ["rm -rf"]}, "tools.0"),
    ({"name": "ok", "url": "http://x.test/mcp", "tools": ["a", "a"]}, "tools"),
    ({"name": "ok", "url": "http://x.test/mcp", "tools": ["search"]}, "mcpServers.0.tools.0"),
    ({"name": "ok", "url": "http://x.test/mcp", "tools": ["a"], "timeoutSeconds": 0}, "timeoutSeconds"),
    ({"name": "ok", "url": "http://x.test/mcp", "tools": ["a"], "headers": [{"name": "X Y", "secret": {"name": "s"}}]},
     "headers"),
])
def test_invalid_mcp_servers_are_refused_naming_the_field(server: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        PipelineSpec.model_validate({"embedder": {"modelDeployment": "m"}, "agent": {"mcpServers": [server]}})
    text = str(exc.value)
    assert field.split(".")[-1] in text or field in text, text


def test_header_values_stay_in_secrets_the_connection_names_only_variables() -> None:
    spec = agentic_spec("http://orders.test/mcp", ["lookup_order"])
    pipeline = Pipeline.model_validate({"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline",
                                        "metadata": {"name": "handbook"}, "spec": spec.model_dump(by_alias=True)})
    (conn,) = get_mcp_connections(spec)
    assert conn.header_envs == {"Authorization": mcp_header_env(0, 0)}
    env = get_pipeline_env(pipeline, Settings.from_env())
    assert {"name": mcp_header_env(0, 0), "valueFrom": {"secretKeyRef": {"name": "orders-mcp", "key": "token"}}} in env
