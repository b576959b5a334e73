"""Ingestion on Ray Data against the single-driver path and raw SentenceTransformer.encode (by hand, not CI).

    OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled python bench/ingest_ray.py [--docs 30] [--rounds 2]
        [--gpus 1] [--fit] [--legs "ray 1x1,ray 2x1"]

Same corpus and chunks as bench/ingest.py (seeded pages from examples/quickstart/docs, MiniLM tokens, size
220, overlap 30). Model loading is excluded from raw and driver timings; the Ray Data timings are whole
runs (`ingest.run` on a local Ray: listing, read/parse/chunk tasks, the actor pool, upserts from the workers
through the store actor that owns the embedded Qdrant folder, deletes), each into a fresh collection, so
they include Ray Data's start-up and the actors' model loads: what a run really costs.

  raw          SentenceTransformer.encode(all chunk texts), 2 threads, no store (the ceiling)
  driver       today's single-driver path: sync() in this process, embedded Qdrant (2 threads)
  ray 1x1      Ray Data, 1 embedding actor of 1 CPU (torch gets OMP_NUM_THREADS=1 from Ray)
  ray 2x1      Ray Data, 2 embedding actors of 1 CPU each
  ray 1x2      Ray Data, 1 embedding actor of 2 CPUs

Scaling efficiency at 2 workers = rate(2x1) / (2 x rate(1x1)): doubling the cores by doubling the actors.

With --fit, each Ray leg also runs on a quarter of the corpus, and a run's time is fitted as T = T0 + n / r
(two sizes, same round): r is the steady-state rate (chunks/s once running), T0 the fixed start-up (planning
the dataset, starting the workers and actors, each actor loading the model). r is compared with raw encode on
the same CPUs: one thread for a 1-CPU actor, two for the 2-CPU one.
The machine has 2 cores, which the read/parse/upsert tasks, the store actor and the driver share with the
actors, so this efficiency is a floor, not what a cluster of separate nodes gets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import MINILM, OVERLAP, SIZE, chunk_passages, make_corpus, time_raw, time_raylight
from raylight.api.connections import (
    CollectionPlan,
    EmbedderConnection,
    IngestionPlan,
    RayDataOptions,
    StoreConnection,
)
from raylight.api.types import Chunking, ModelRef, PipelineSpec, Source
from raylight_pipelines.embed.embedders import LocalEmbedder
from raylight_pipelines.ingest import runner as ingest
from raylight_pipelines.store.qdrant import start_store_actor

LEGS = {"ray 1x1": (1, 1.0), "ray 2x1": (2, 1.0), "ray 1x2": (1, 2.0)}


def ray_plan(docs_dir: Path, actor: str, workers: int, cpus: float, gpus: float = 0.0) -> IngestionPlan:
    collection = f"bench-{uuid.uuid4().hex[:6]}"
    spec = PipelineSpec(embedder=ModelRef(model_deployment="minilm"),
                        sources=[Source(path=str(docs_dir), include=["**/*.md"])],
                        chunking=Chunking(size=SIZE, overlap=OVERLAP))
    return IngestionPlan(pipeline="bench", spec=spec, embedder=EmbedderConnection(model="minilm", source=MINILM),
                         store=StoreConnection(collection=collection, actor=actor),
                         collection=CollectionPlan(collection=collection, dimensions=384),
                         ray_data=RayDataOptions(concurrency=workers, num_cpus=cpus, num_gpus=gpus,
                                                 task_cpus=0.0, documents_per_task=4))


def time_ray(embedder: LocalEmbedder, docs_dir: Path, actor: str, workers: int, cpus: float,
             gpus: float = 0.0) -> tuple[float, int]:
    plan = ray_plan(docs_dir, actor, workers, cpus, gpus)
    start = time.perf_counter()
    report = ingest.run(plan, docs_dir.parent, embedder)
    return time.perf_counter() - start, report.chunks_embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs per embedding actor (a GPU node: g)")
    parser.add_argument("--fit", action="store_true", help="fit start-up and steady-state rate (two sizes)")
    parser.add_argument("--legs", default=",".join(["driver", *LEGS]),
                        help="comma-separated legs to run besides raw encode (default: all)")
    args = parser.parse_args()
    chosen = [leg.strip() for leg in args.legs.split(",")]
    unknown = set(chosen) - {"driver", *LEGS}
    if unknown:
        parser.error(f"--legs: unknown {sorted(unknown)}; choose from driver, {', '.join(LEGS)}")
    legs = {k: v for k, v in LEGS.items() if k in chosen}
    import ray

    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, namespace="raylight",
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    tmp = Path(tempfile.mkdtemp(prefix="raylight-bench-ray-"))
    try:
        docs = tmp / "docs"
        make_corpus(docs, args.docs)
        embedder = LocalEmbedder.from_source(MINILM)
        passages = chunk_passages(docs, embedder)
        quarter = tmp / "quarter" / "docs"
        if args.fit:
            make_corpus(quarter, max(1, args.docs // 4))
            small = len(chunk_passages(quarter, embedder))
        fits: dict[str, list[tuple[float, float]]] = {k: [] for k in legs}
        actor = f"bench-store-{uuid.uuid4().hex[:6]}"
        start_store_actor(actor, str(tmp / "qdrant-actor"))
        time_raw(embedder, passages[:32])  # warm-up
        times: dict[str, list[float]] = {k: [] for k in ("raw", "raw 1 thread", *chosen)}
        chunks = len(passages)
        for r in range(args.rounds):
            times["raw"].append(time_raw(embedder, passages))
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            times["raw 1 thread"].append(time_raw(embedder, passages))
            torch.set_num_threads(threads)
            if "driver" in chosen:
                seconds, n = time_raylight(embedder, docs, tmp / f"store-{r}")
                assert n == chunks, (n, chunks)
                times["driver"].append(seconds)
            for leg, (workers, cpus) in legs.items():
                seconds, n = time_ray(embedder, docs, actor, workers, cpus, args.gpus)
                assert n == chunks, (leg, n, chunks)
                times[leg].append(seconds)
                if args.fit:
                    t_small, n_small = time_ray(embedder, quarter, actor, workers, cpus, args.gpus)
                    assert n_small == small, (leg, n_small, small)
                    steady = (chunks - small) / (seconds - t_small)
                    fits[leg].append((steady, seconds - chunks / steady))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
        rate = {k: chunks / statistics.median(v) for k, v in times.items()}
        out: dict[str, Any] = {
            "chunks": chunks, "rounds": args.rounds,
            "chunks_per_second": {k: round(v, 1) for k, v in rate.items()},
            "ratio_to_raw": {k: round(v / rate["raw"], 3) for k, v in rate.items()},
        }
        if "driver" in rate:
            out["ratio_to_driver"] = {k: round(v / rate["driver"], 3) for k, v in rate.items()}
        if "ray 1x1" in rate and "ray 2x1" in rate:
            out["scaling_efficiency_2_workers"] = round(rate["ray 2x1"] / (2 * rate["ray 1x1"]), 3)
        if args.fit:
            same_cpus = {"ray 1x1": "raw 1 thread", "ray 2x1": "raw", "ray 1x2": "raw"}
            out["fit"] = {leg: {
                "steady_chunks_per_second": round(statistics.median(r for r, _ in f), 1),
                "startup_seconds": round(statistics.median(t0 for _, t0 in f), 1),
                "steady_ratio_to_raw_same_cpus": round(statistics.median(r for r, _ in f) / rate[same_cpus[leg]], 3),
                "startup_share_of_run": round(statistics.median(t0 for _, t0 in f) / statistics.median(times[leg]), 3),
            } for leg, f in fits.items()}
            if "ray 1x1" in fits and "ray 2x1" in fits:
                r1 = out["fit"]["ray 1x1"]["steady_chunks_per_second"]
                out["fit"]["steady_efficiency_2_workers"] = round(
                    out["fit"]["ray 2x1"]["steady_chunks_per_second"] / (2 * r1), 3)
        out["load_average"] = os.getloadavg()
        print(json.dumps(out, indent=2, ensure_ascii=False))
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
