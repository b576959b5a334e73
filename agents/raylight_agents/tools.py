"""Allowlisted HTTP tools (spec.agent.tools) for the agentic graph.

The model chooses a tool by name and supplies only the text input; the URL is the manifest's, exactly
(no redirects followed, no URL built from model output), so a prompt-injected document cannot make the
agent call anywhere else.
"""

from __future__ import annotations

from typing import Any

import httpx
from raylight.api.types import HttpTool

MAX_RESULT_CHARS = 1500


class ToolError(RuntimeError):
    """A tool is not allowlisted, or its call failed."""


class HttpToolbox:
    def __init__(self, tools: list[HttpTool], timeout_seconds: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.tools = {t.name: t for t in tools}
        self.timeout = timeout_seconds
        self.transport = transport  # tests only

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    def describe(self) -> str:
        return "\n".join(f"- {t.name}: {t.description}" for t in self.tools.values())

    async def call(self, name: str, text: str) -> dict[str, Any]:
        """Call tool `name` with `text` (GET ?q=text, POST {"input": text}); the result is text to cite."""
        tool = self.tools.get(name)
        if tool is None:
            raise ToolError(f"tool {name!r} is not in the pipeline's allowlist")
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                     transport=self.transport) as client:
            try:
                if tool.method == "GET":
                    resp = await client.get(tool.url, params={"q": text})
                else:
                    resp = await client.post(tool.url, json={"input": text})
            except httpx.HTTPError as exc:
                raise ToolError(f"tool {name} failed: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise ToolError(f"tool {name} answered HTTP {resp.status_code}")
        return {"id": f"tool:{name}", "source": tool.url, "title": name,
                "text": resp.text[:MAX_RESULT_CHARS], "score": None}
