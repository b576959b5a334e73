"""Tools from MCP servers (`spec.agent.mcpServers`) beside the allowlisted HTTP tools, for the agentic graph.

`McpToolbox(servers)` offers exactly the allowlisted tool names of each server (`Connections.mcp_servers`); it
reaches a server with the official MCP SDK client (Streamable HTTP) at the manifest's URL only, with the
manifest's headers, whose values it reads from the environment variables the connection names (filled from
Secrets), at call time. Those values go into the HTTP request and nowhere else: not into a tool's description
or result, an error message, a log line or the audit.

A server that is down, slow (over its `timeout_seconds`), answers an error, or lacks the tool raises
`ToolError` with the server's and the tool's name and the kind of failure; the graph records it on the turn and
carries on (the question is still answered from the documents), so a failing MCP server never becomes a 5xx.

The model gives a tool one text input (the agentic graph's contract): it becomes the tool's single required
string argument (or its only string property); a tool that needs more than that is called with
`{"input": text}` and its own validation answers.

`Toolbox(http, mcp)` joins both behind the interface the graph uses: `names`, `describe()`, `await prepare()`
(fetch the MCP tools' descriptions once, within the timeouts) and `await call(name, text) -> chunk`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from raylight.api.connections import McpServerConnection

from raylight_agents.tools import MAX_RESULT_CHARS, HttpToolbox, ToolError

log = logging.getLogger(__name__)


class McpToolbox:
    def __init__(self, servers: list[McpServerConnection]) -> None:
        self.servers = {s.name: s for s in servers}
        self.owner = {tool: s for s in servers for tool in s.tools}  # tool name -> its server
        self.descriptions: dict[str, str] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        self._prepared = False

    @property
    def names(self) -> list[str]:
        return list(self.owner)

    def describe(self) -> str:
        return "\n".join(f"- {name}: {self.descriptions.get(name, 'a tool of MCP server ' + s.name)}"
                         for name, s in self.owner.items())

    def _client(self, server: McpServerConnection) -> Client:
        headers: dict[str, str] = {}
        for header, env in server.header_envs.items():
            value = os.environ.get(env)
            if not value:
                raise ToolError(f"MCP server {server.name}: header {header} is configured but its Secret did not "
                                "arrive")
            headers[header] = value
        http = httpx2.AsyncClient(headers=headers, timeout=server.timeout_seconds, follow_redirects=False)
        return Client(streamable_http_client(server.url, http_client=http), read_timeout_seconds=server.timeout_seconds)

    async def _listing(self, server: McpServerConnection) -> None:
        try:
            async with asyncio.timeout(server.timeout_seconds):
                async with self._client(server) as client:
                    tools = (await client.list_tools()).tools
        except (Exception, TimeoutError) as exc:
            log.warning("MCP server %s: cannot list its tools (%s)", server.name, _kind(exc))
            return
        for tool in tools:
            if self.owner.get(tool.name) is server:
                self.descriptions[tool.name] = (tool.description or tool.name)[:300]
                self.schemas[tool.name] = dict(tool.input_schema or {})

    async def prepare(self) -> None:
        """Fetch the allowlisted tools' descriptions and input schemas once (a server that does not answer
        keeps a generic description and is tried again at call time)."""
        if self._prepared or not self.servers:
            return
        await asyncio.gather(*(self._listing(s) for s in self.servers.values()))
        self._prepared = True

    def arguments(self, name: str, text: str) -> dict[str, Any]:
        schema = self.schemas.get(name, {})
        props = schema.get("properties") or {}
        strings = [k for k, v in props.items() if isinstance(v, dict) and v.get("type") == "string"]
        required = [k for k in schema.get("required") or [] if k in strings]
        if len(required) == 1:
            return {required[0]: text}
        if len(strings) == 1:
            return {strings[0]: text}
        return {"input": text}

    async def call(self, name: str, text: str) -> dict[str, Any]:
        """Call allowlisted tool `name` with the model's text; the result is a chunk to cite. Raises ToolError."""
        server = self.owner.get(name)
        if server is None:
            raise ToolError(f"tool {name!r} is not in the pipeline's allowlist")
        try:
            async with asyncio.timeout(server.timeout_seconds):
                async with self._client(server) as client:
                    if name not in self.schemas:
                        listed = {t.name: t for t in (await client.list_tools()).tools}
                        if name not in listed:
                            raise ToolError(f"MCP server {server.name} has no tool {name}")
                        self.schemas[name] = dict(listed[name].input_schema or {})
                    result = await client.call_tool(name, self.arguments(name, text))
        except ToolError:
            raise
        except TimeoutError:
            raise ToolError(f"MCP server {server.name}: tool {name} took longer than {server.timeout_seconds:g} s")\
                from None
        except Exception as exc:
            raise ToolError(f"MCP server {server.name}: tool {name} failed ({_kind(exc)})") from None
        body = "".join(getattr(part, "text", "") for part in result.content)
        if not body and result.structured_content is not None:
            body = json.dumps(result.structured_content)
        if result.is_error:
            raise ToolError(f"MCP server {server.name}: tool {name} answered an error: {body[:300]}")
        return {"id": f"tool:{name}", "source": f"mcp:{server.name}/{name}", "title": name,
                "text": body[:MAX_RESULT_CHARS], "score": None}


def _kind(exc: BaseException) -> str:
    """The failure's kind, never its text (which may quote a URL with credentials or a header)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return type(exc).__name__


class Toolbox:
    """The HTTP tools and the MCP tools as one toolbox (the interface `HttpToolbox` has, plus `prepare`)."""

    def __init__(self, http: HttpToolbox, mcp: McpToolbox | None = None) -> None:
        self.http = http
        self.mcp = mcp or McpToolbox([])

    @property
    def names(self) -> list[str]:
        return [*self.http.names, *self.mcp.names]

    def describe(self) -> str:
        return "\n".join(part for part in (self.http.describe(), self.mcp.describe()) if part)

    async def prepare(self) -> None:
        await self.mcp.prepare()

    async def call(self, name: str, text: str) -> dict[str, Any]:
        if name in self.mcp.owner:
            return await self.mcp.call(name, text)
        return await self.http.call(name, text)
