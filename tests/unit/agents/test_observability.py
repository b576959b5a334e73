"""Metrics, traces and quotas of the agent app, in-process (no Ray): one trace per request with the retrieval
(embed, search, rerank), generation and checkpoint spans, parent-linked across the HTTP hop to the model app
(whose real `ModelServer` methods run behind the agent's HTTP client); the trace id in the audit line; 429 with
Retry-After past a caller's quota, other callers unaffected; the counters in `telemetry.REGISTRY`."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from agent_fakes import connections
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from raylight.api.types import Limits, ModelDeploymentSpec, Retrieval
from raylight_agents.agent import Agent
from raylight_agents.quota import Quota
from raylight_agents.serve import AgentServer
from raylight_pipelines import telemetry
from raylight_pipelines.retrieval.retriever import Retriever
from raylight_pipelines.serving.app import ModelServer
from raylight_pipelines.serving.runtimes.base import Generation
from raylight_pipelines.store.base import ChunkPoint
from raylight_pipelines.store.edge import EdgeStore
from raylight_pipelines.web.errors import ApiError

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning")

EXPORTER = InMemorySpanExporter()
if not isinstance(trace.get_tracer_provider(), TracerProvider):
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(_provider)
else:  # another module installed the SDK first: add our exporter to it
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(EXPORTER))  # type: ignore[attr-defined]

WORDS = ["replica", "autoscal", "ray", "serve", "gpu", "quota", "token", "lora"]
DOCS = {"d1": "Ray Serve scales replicas with autoscaling between min and max.",
        "d2": "LoRA adapters are trained on your own data."}


def embed(text: str) -> list[float]:
    low = text.lower()
    return [1.0 if w in low else 0.0 for w in WORDS] or [0.0]


class BagEmbedder:
    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[*embed(t), 0.01] for t in texts]


class LengthReranker:
    def scores(self, query: str, texts: list[str]) -> list[float]:
        return [float(len(t)) for t in texts]


def value(name: str, **labels: str) -> float:
    got = telemetry.REGISTRY.get_sample_value(name, labels)
    return got or 0.0


class FakeChat:
    context_length = 2048

    def check(self, request: Any) -> None:
        pass

    def generate(self, request: Any, put: Any, cancelled: Any) -> Generation:
        return Generation("Replicas autoscale between min and max [1].", "stop", 12, 7)


def model_server() -> Any:
    cls = ModelServer.func_or_class
    obj = cls.__new__(cls)
    obj.name, obj.task, obj.runtime_name = "tiny", "chat", "llama-cpp"
    obj.spec = ModelDeploymentSpec.model_validate({"task": "chat", "preset": "smollm2-135m-instruct"})
    obj.loaded = type("Loaded", (), {"runtime": FakeChat()})()
    import asyncio

    obj._generate_lock = asyncio.Lock()
    obj._stats = {"chat_requests": 0, "generations_cancelled": 0}
    return obj


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    EXPORTER.clear()
    yield EXPORTER


@pytest.fixture
async def server(tmp_path: Any) -> AsyncIterator[Any]:
    spec = {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "tiny"},
            "retrieval": {"topK": 2, "hybrid": False, "rerank": {"modelDeployment": "rr", "candidates": 4}},
            "agent": {"limits": {"requestsPerMinute": 3, "tokensPerMinute": 1000}}}
    conn = connections()
    cls = AgentServer.func_or_class
    obj = cls.__new__(cls)
    await obj.__init__("handbook", spec, conn)
    client = EdgeStore(tmp_path / "store")
    client.ensure_collection("handbook", len(WORDS) + 1, sparse=False)
    client.upsert("handbook", [ChunkPoint(id=str(uuid.UUID(int=i)), dense=[*embed(t), 0.01], payload={
        "pipeline": "handbook", "source_id": f"{k}.md", "text": t}) for i, (k, t) in enumerate(DOCS.items(), 1)])
    retriever = Retriever(client, "handbook", BagEmbedder(), Retrieval.model_validate(spec["retrieval"]),  # type: ignore[arg-type]
                          pipeline="handbook", reranker=LengthReranker())  # type: ignore[arg-type]
    model = model_server()
    obj.model_requests = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "tiny"}]})
        obj.model_requests.append(request)
        # What the gateway does with the caller's headers: the model's plain method, in the caller's trace.
        body = await model.chat_completions(request.content, trace_headers=dict(request.headers))
        return httpx.Response(200, json=body)

    from raylight_agents.llm import LLM

    llm = LLM("tiny", "http://llm.test/v1", timeout_seconds=5, max_retries=0,
              http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    obj.agent = Agent("handbook", obj.spec, conn, retriever=lambda: retriever, llm=llm)
    yield obj
    await obj.agent.aclose()


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


async def test_one_trace_per_request_with_the_stages_parent_linked_across_the_model_call(
        server: Any, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="raylight.audit"):
        out = await server.invoke({"input": "How do replicas autoscale?", "user": {"id": "ann"}})
    assert out["citations"]
    got = by_name(list(spans.get_finished_spans()))
    assert {"agent invoke", "retrieval", "embed", "search", "rerank", "generation", "model chat",
            "checkpoint"} <= set(got)
    root = got["agent invoke"]
    assert root.parent is None
    assert {s.context.trace_id for s in got.values()} == {root.context.trace_id}  # one trace

    def parent(name: str) -> str:
        span = got[name]
        assert span.parent is not None
        return next(s.name for s in got.values() if s.context.span_id == span.parent.span_id)

    assert parent("retrieval") == "agent invoke"
    assert parent("embed") == parent("search") == parent("rerank") == "retrieval"
    assert parent("generation") == "agent invoke"
    assert parent("model chat") == "generation"  # across the HTTP hop: the traceparent the LLM client sent
    assert parent("checkpoint") == "agent invoke"
    header = server.model_requests[-1].headers["traceparent"]
    assert header.split("-")[1] == f"{root.context.trace_id:032x}"
    assert got["generation"].attributes["gen_ai.usage.output_tokens"] == 7
    [line] = [json.loads(r.message) for r in caplog.records if r.name == "raylight.audit"]
    assert line["trace_id"] == f"{root.context.trace_id:032x}"


async def test_metrics_count_requests_stages_tokens_and_chunks(server: Any) -> None:
    before = {
        "ok": value("raylight_agent_requests_total", pipeline="handbook", route="invoke", status="200"),
        "bad": value("raylight_agent_requests_total", pipeline="handbook", route="invoke", status="400"),
        "latency": value("raylight_agent_request_duration_seconds_count", pipeline="handbook", route="invoke"),
        "embed": value("raylight_agent_stage_duration_seconds_count", pipeline="handbook", stage="embed"),
        "generate": value("raylight_agent_stage_duration_seconds_count", pipeline="handbook", stage="generate"),
        "prompt": value("raylight_agent_tokens_total", pipeline="handbook", kind="prompt"),
        "completion": value("raylight_agent_tokens_total", pipeline="handbook", kind="completion"),
        "cited": value("raylight_agent_chunks_total", pipeline="handbook", kind="cited"),
        "model": value("raylight_model_requests_total", model="tiny", route="chat", status="200"),
        "model_tokens": value("raylight_model_tokens_total", model="tiny", kind="completion"),
        "dont_know": value("raylight_agent_dont_know_total", pipeline="handbook"),
    }
    await server.invoke({"input": "How do replicas autoscale?", "user": {"id": "bob"}})
    await server.invoke({"input": "What is the capital of Peru?", "user": {"id": "bob"}})  # nothing relevant
    with pytest.raises(ApiError):
        await server.invoke({"input": ""})
    requests = "raylight_agent_requests_total"
    assert value(requests, pipeline="handbook", route="invoke", status="200") == before["ok"] + 2
    assert value(requests, pipeline="handbook", route="invoke", status="400") == before["bad"] + 1
    assert value("raylight_agent_request_duration_seconds_count", pipeline="handbook",
                 route="invoke") == before["latency"] + 3
    assert value("raylight_agent_stage_duration_seconds_count", pipeline="handbook",
                 stage="embed") == before["embed"] + 2
    assert value("raylight_agent_stage_duration_seconds_count", pipeline="handbook",
                 stage="generate") == before["generate"] + 1
    assert value("raylight_agent_tokens_total", pipeline="handbook", kind="prompt") == before["prompt"] + 12
    assert value("raylight_agent_tokens_total", pipeline="handbook", kind="completion") == before["completion"] + 7
    assert value("raylight_agent_chunks_total", pipeline="handbook", kind="cited") == before["cited"] + 1
    assert value("raylight_agent_dont_know_total", pipeline="handbook") == before["dont_know"] + 1
    assert value("raylight_model_requests_total", model="tiny", route="chat", status="200") == before["model"] + 1
    assert value("raylight_model_tokens_total", model="tiny", kind="completion") == before["model_tokens"] + 7
    text = telemetry.exposition()
    assert "raylight_agent_requests_total{" in text and "raylight_model_queue_depth{" in text


async def test_past_the_request_quota_a_caller_gets_429_with_retry_after_and_others_do_not(server: Any) -> None:
    rejected = value("raylight_agent_quota_rejections_total", pipeline="handbook", limit="requests")
    for _ in range(3):
        await server.search({"query": "replicas", "user": {"id": "carol"}})
    with pytest.raises(ApiError) as exc:
        await server.search({"query": "replicas", "user": {"id": "carol"}})
    assert exc.value.status == 429 and exc.value.code == "rate_limit_exceeded" and exc.value.type == "requests"
    assert exc.value.headers()["Retry-After"] == "20"  # 3 a minute: one more in 20 s
    assert exc.value.body()["error"]["code"] == "rate_limit_exceeded"
    await server.search({"query": "replicas", "user": {"id": "dave"}})  # another caller is not affected
    assert value("raylight_agent_quota_rejections_total", pipeline="handbook", limit="requests") == rejected + 1
    assert value("raylight_agent_requests_total", pipeline="handbook", route="search", status="429") >= 1


def test_token_quota_refuses_until_the_budget_refills_per_tenant() -> None:
    now = [0.0]
    quota = Quota("p", Limits.model_validate({"tokensPerMinute": 600, "per": "tenant"}), clock=lambda: now[0])
    quota.admit("u1", "acme")
    quota.spend("u1", "acme", 900)  # 300 over the minute's budget
    with pytest.raises(ApiError) as exc:
        quota.admit("u2", "acme")  # the same tenant, another user
    assert exc.value.status == 429 and exc.value.type == "tokens"
    assert exc.value.retry_after == 31  # (300 + 1) tokens at 10 a second
    quota.admit("u3", "globex")  # another tenant
    now[0] = 31.0
    quota.admit("u2", "acme")


def test_merge_joins_the_expositions_of_several_processes() -> None:
    a = ('# HELP raylight_model_requests_total x\n# TYPE raylight_model_requests_total counter\n'
         'raylight_model_requests_total{model="a",route="chat",status="200"} 2.0\n')
    b = a.replace('model="a"', 'model="b"').replace("2.0", "5.0")
    merged = telemetry.merge([a, b])
    assert merged.count("# TYPE raylight_model_requests_total counter") == 1
    assert 'model="a"' in merged and 'model="b"' in merged and "5.0" in merged
