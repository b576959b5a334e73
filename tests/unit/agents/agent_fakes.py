"""Deterministic stand-ins for unit tests of the graphs (the end-to-end tests use the real models):
an OpenAI-compatible endpoint on an httpx MockTransport that records every request, and an in-memory
retriever with the same search signature and ACL semantics as raylight_pipelines.retrieval.retriever."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from raylight.api.connections import (
    AuthConnection,
    Connections,
    EmbedderConnection,
    LLMConnection,
    StoreConnection,
    ThreadsConnection,
)
from raylight_agents.graphs.base import terms
from raylight_agents.llm import LLM
from raylight_pipelines.retrieval.retriever import Caller, RetrievedChunk

TINY_LLM = LLMConnection(model="tiny", base_url="http://llm.test/v1")


def connections(llm: LLMConnection | None = TINY_LLM, threads: ThreadsConnection | None = None,
                auth: AuthConnection | None = None) -> Connections:
    """A Pipeline's connections for tests that bring their own retriever (the embedder and store are never
    reached): the scripted model, a thread store (default: memory), auth."""
    return Connections(pipeline="handbook", embedder=EmbedderConnection(model="minilm"),
                       store=StoreConnection(collection="handbook"), llm=llm,
                       threads=threads or ThreadsConnection(), auth=auth)


@dataclass
class ScriptedLLM:
    """Answers chat completions with reply(request_body) -> text; streams it word by word."""

    reply: Callable[[dict[str, Any]], str]
    requests: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False
    context_length: int = 8192  # what the model's /models card says (the agent's context check reads it)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused")
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": "tiny", "object": "model", "context_length": self.context_length}]})
        body = json.loads(request.content)
        self.requests.append(body)
        text = self.reply(body)
        usage = {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 0}
        if not body.get("stream"):
            return httpx.Response(200, json={
                "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}], "usage": usage})
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1][:-1]
        lines = [{"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                  "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
        lines.append({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                      "choices": [], "usage": usage})
        sse = "".join(f"data: {json.dumps(line)}\n\n" for line in lines) + "data: [DONE]\n\n"
        return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})

    def llm(self) -> LLM:
        client = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return LLM("tiny", "http://llm.test/v1", timeout_seconds=5, max_retries=0, http_client=client)

    def answer_calls(self) -> list[dict[str, Any]]:
        """Requests that asked for an answer (not a structured grading/rewrite/tool decision)."""
        return [r for r in self.requests if "Sources:" in r["messages"][-1]["content"]
                and "Question:" in r["messages"][-1]["content"]
                and r.get("response_format", {}).get("json_schema", {}).get("name") not in ("grade", "query",
                                                                                               "tool")]


@dataclass
class Doc:
    id: str
    text: str
    source: str = "doc.md"
    groups: tuple[str, ...] = ()
    tenant: str | None = None


class WordEmbedder:
    """Bag-of-words vectors (content words hashed into 512 dimensions, L2-normalised): cosine is word overlap,
    so the agent's evidence check runs its real code on a deterministic embedder."""

    def embed(self, texts: list[str]) -> list[list[float]]:
        import zlib

        out = []
        for text in texts:
            vector = [0.0] * 512
            for word in terms(text):
                vector[zlib.crc32(word.encode()) % 512] = 1.0
            norm = sum(v * v for v in vector) ** 0.5 or 1.0
            out.append([v / norm for v in vector])
        return out


class MemoryRetriever:
    """Lexical top-k over a few documents, with the store's ACL rule (tenant and groups); `embedder` embeds
    like WordEmbedder."""

    def __init__(self, docs: list[Doc]) -> None:
        self.docs = docs
        self.embedder = WordEmbedder()
        self.queries: list[tuple[str, Caller | None]] = []
        self.options: list[dict[str, Any]] = []
        self.down = False

    def search(self, query: str, caller: Caller | None = None, top_k: int | None = None,
               filters: dict[str, Any] | None = None, **options: Any) -> list[RetrievedChunk]:
        """`filters` supports {"source": value or [values]}; other options are recorded, not applied."""
        from raylight_pipelines.retrieval.retriever import StoreUnavailable

        if self.down:
            raise StoreUnavailable("store is down (test)")
        self.queries.append((query, caller))
        self.options.append({"filters": filters, **options})
        caller = caller or Caller()
        sources = (filters or {}).get("source")
        wanted = None if sources is None else set(sources if isinstance(sources, list) else [sources])
        visible = [d for d in self.docs if (d.tenant is None or d.tenant == caller.tenant)
                   and (not d.groups or set(d.groups) & set(caller.groups))
                   and (wanted is None or d.source in wanted)]
        scored = sorted(visible, key=lambda d: -len(terms(query) & terms(d.text)))[: top_k or 4]
        return [RetrievedChunk(d.id, d.source, d.source, None, d.text, float(len(terms(query) & terms(d.text))),
                               None, 0, len(d.text)) for d in scored]

    def ready(self) -> tuple[bool, str]:
        return (not self.down, "down" if self.down else "ok")
