"""The embedded store (EdgeStore, Qdrant's engine in-process) under Raylight's query: hybrid (dense 384-d +
BM25-like sparse, prefetch 40 + 40, RRF, limit 10) with the pipeline + ACL filter, at growing sizes; upserts/s,
RSS and disk per size, and the growth exponent of p50 latency. Synthetic points: random unit 384-d vectors,
sparse vectors of 20-60 terms from a 30k vocabulary (Zipf-like); 80% in the queried pipeline, 80% without a
tenant, 80% without groups (20 tenants, 5 groups), so a query's filter lets about 55-65% of all points through:
near the worst case for exact search. One run; compare ratios within it.

    flock /tmp/raylight-heavy.lock nice -n 10 python bench/store.py --sizes 1000 10000 100000 [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from raylight_pipelines.store.base import ChunkPoint, Scope, SearchQuery
from raylight_pipelines.store.edge import EdgeStore

DIM, VOCAB, BATCH = 384, 30_000, 512


def points(rng: np.random.Generator, start: int, n: int) -> list[ChunkPoint]:
    dense = rng.normal(size=(n, DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    out = []
    for i in range(n):
        k = int(rng.integers(20, 60))
        terms = np.unique(np.minimum((rng.zipf(1.3, size=k) - 1), VOCAB - 1))
        tenant = None if rng.random() < 0.8 else f"t{int(rng.integers(20))}"
        groups = [] if rng.random() < 0.8 else [f"g{int(rng.integers(5))}"]
        pipeline = "p0" if rng.random() < 0.8 else f"p{int(rng.integers(1, 3))}"
        out.append(ChunkPoint(id=str(uuid.UUID(int=start + i + 1)), dense=dense[i].tolist(),
                              sparse=(terms.tolist(), rng.uniform(0.5, 3, size=len(terms)).tolist()),
                              payload={"pipeline": pipeline, "tenant": tenant, "groups": groups,
                                       "source_id": f"doc{(start + i) // 4}", "text": "x" * 200,
                                       "chunk_index": (start + i) % 4}))
    return out


def query(rng: np.random.Generator) -> SearchQuery:
    d = rng.normal(size=DIM)
    d /= np.linalg.norm(d)
    terms = np.unique(np.minimum(rng.zipf(1.3, size=6) - 1, VOCAB - 1)).tolist()
    scope = Scope(pipeline="p0", tenant=f"t{int(rng.integers(20))}",
                  groups=(f"g{int(rng.integers(5))}",))
    return SearchQuery(dense=d.tolist(), sparse=(terms, [1.0] * len(terms)), hybrid=True, limit=10, prefetch=40,
                       scope=scope)


def disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(sizes: list[int], queries: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    root = Path(tempfile.mkdtemp(prefix="raylight-bench-store-"))
    rows = []
    try:
        store = EdgeStore(root)
        store.ensure_collection("c", DIM)
        have, write_s = 0, 0.0
        for size in sorted(sizes):
            while have < size:
                n = min(BATCH, size - have)
                batch = points(rng, have, n)
                t0 = time.perf_counter()
                store.upsert("c", batch)
                write_s += time.perf_counter() - t0
                have += n
            store.flush()
            qs = [query(rng) for _ in range(queries + 20)]
            for q in qs[:20]:  # warm-up
                store.search("c", q)
            lat = []
            for q in qs[20:]:
                t0 = time.perf_counter()
                store.search("c", q)
                lat.append((time.perf_counter() - t0) * 1000)
            lat.sort()
            rows.append({"points": size, "p50_ms": round(statistics.median(lat), 2),
                         "p95_ms": round(lat[int(0.95 * len(lat)) - 1], 2), "upserts_per_s": round(have / write_s),
                         "rss_mib": round(rss_mib()), "peak_rss_mib": round(resource.getrusage(
                             resource.RUSAGE_SELF).ru_maxrss / 1024), "disk_mib": round(disk(root) / 2**20, 1)})
            print(json.dumps(rows[-1]), flush=True)
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first, last = rows[0], rows[-1]
    exponent = (math.log(last["p50_ms"] / first["p50_ms"]) / math.log(last["points"] / first["points"])
                if len(rows) > 1 else None)
    return {"rows": rows, "p50_growth_exponent": round(exponent, 3) if exponent else None,
            "load_average": os.getloadavg(), "queries": queries}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.sizes, args.queries, args.seed)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
