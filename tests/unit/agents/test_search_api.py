"""The search API (`AgentServer.search`, what POST /v1/pipelines/{name}/search and the gateway call): the
same auth, size limit, field-level 400s, ACL and audit as invoke; no model and no thread store needed, so a
Pipeline without spec.llm serves it (and answers 404 to invoke)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agent_fakes import Doc, MemoryRetriever, connections
from raylight.api.connections import AuthConnection
from raylight_agents.agent import Agent
from raylight_agents.serve import AgentServer
from raylight_pipelines.web.errors import ApiError

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning")

TOKEN = "t0ken"
BEARER = f"Bearer {TOKEN}"
DOCS = [Doc("d1", "Ray Serve scales replicas with autoscaling.", "serve.md"),
        Doc("d2", "Replicas of the embedder scale too.", "embed.md"),
        Doc("d3", "Board-only: replicas budget.", "board.md", groups=("board",))]


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """A search-only pipeline (no spec.llm, no thread store in its connections)."""
    monkeypatch.setenv("TEST_AGENT_TOKEN", TOKEN)
    spec = {"embedder": {"modelDeployment": "minilm"}, "agent": {"auth": {"secret": "agent"},
                                                                   "limits": {"maxRequestBytes": 1024}}}
    conn = connections(llm=None, auth=AuthConnection(token_env="TEST_AGENT_TOKEN"))
    cls = AgentServer.func_or_class
    obj = cls.__new__(cls)
    await obj.__init__("handbook", spec, conn)
    obj.retriever = MemoryRetriever(DOCS)
    obj.agent = Agent("handbook", obj.spec, conn, retriever=lambda: obj.retriever)
    yield obj
    await obj.agent.aclose()


async def test_search_returns_ranked_chunks_with_source_text_score_and_metadata(server: Any) -> None:
    out = await server.search({"query": "How do replicas scale?", "topK": 5}, BEARER)
    assert out["pipeline"] == "handbook" and out["query"] == "How do replicas scale?"
    assert [r["rank"] for r in out["results"]] == [1, 2]
    first = out["results"][0]
    assert first["id"] == "d1" and first["source"] == "serve.md" and "autoscaling" in first["text"]
    assert first["score"] >= out["results"][1]["score"]
    assert set(first["metadata"]) == {"heading", "page", "start", "end"}


async def test_caller_identity_is_the_acl_and_filters_only_narrow(server: Any) -> None:
    anonymous = await server.search({"query": "replicas budget"}, BEARER)
    board = await server.search({"query": "replicas budget", "user": {"id": "ann", "groups": ["board"]}}, BEARER)
    assert "d3" not in {r["id"] for r in anonymous["results"]}
    assert "d3" in {r["id"] for r in board["results"]}
    narrowed = await server.search({"query": "replicas", "filters": {"source": ["embed.md"]}}, BEARER)
    assert [r["id"] for r in narrowed["results"]] == ["d2"]


async def test_search_has_the_same_auth_limits_and_field_errors_as_invoke(server: Any) -> None:
    with pytest.raises(ApiError) as auth:
        await server.search({"query": "replicas"}, "Bearer nope")
    assert auth.value.status == 401
    with pytest.raises(ApiError) as big:
        await server.search({"query": "x" * 2000}, BEARER)
    assert big.value.status == 413
    with pytest.raises(ApiError) as bad:
        await server.search({"query": "", "top_k": 0, "filters": {"tenant": "acme"}}, BEARER)
    assert (bad.value.status, bad.value.code, bad.value.param) == (400, "invalid_value", "query")
    assert bad.value.message.startswith("query: ") and "; top_k: " in bad.value.message
    assert "; filters: unknown field 'tenant'" in bad.value.message
    with pytest.raises(ApiError) as rerank:
        await server.search({"query": "replicas", "rerank": True}, BEARER)
    assert rerank.value.status == 400 and rerank.value.param == "rerank"


async def test_search_writes_one_audit_line(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="raylight.audit"):
        await server.search({"query": "How do replicas scale?", "user": {"id": "ann"}}, BEARER)
    entries = [json.loads(r.message) for r in caplog.records if r.name == "raylight.audit"]
    assert [(e["operation"], e["status"], e["user"], e["model"]) for e in entries] == [("search", 200, "ann", None)]
    assert entries[0]["retrieved"] == ["d1", "d2"] and "question" not in entries[0]


async def test_store_outage_is_503_naming_the_store_and_an_error_id_not_the_cause(server: Any) -> None:
    server.retriever.down = True
    with pytest.raises(ApiError) as exc:
        await server.search({"query": "replicas"}, BEARER)
    assert exc.value.status == 503 and "the vector store is not available" in exc.value.message
    assert "error id" in exc.value.message and "store is down" not in exc.value.message  # the cause: in the log


async def test_a_search_only_pipeline_refuses_to_answer_and_is_ready_without_a_model(server: Any) -> None:
    for call in (server.invoke({"input": "How do replicas scale?"}, BEARER),
                 server.chat_completions({"model": "handbook", "messages": [{"role": "user", "content": "hi"}]},
                                         BEARER)):
        with pytest.raises(ApiError) as exc:
            await call
        assert exc.value.status == 404 and exc.value.code == "search_only"
        assert "/v1/pipelines/handbook/search" in exc.value.message
    report = await server.readyz()
    assert report["ready"] and report["model"] == {"ok": True, "detail": "no model: this pipeline serves search only"}
