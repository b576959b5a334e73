"""`POST /v1/pipelines/{name}/search` on a small and a large Pipeline of the same platform, in one run (by hand):

    flock /tmp/raylight-heavy.lock python bench/search_route.py [--small 1000] [--large 20000] [--requests 200]

Generates two folders of small Markdown documents (one chunk each: 40-70 words drawn from a fixed word list,
deterministic), writes the quickstart's two models and two hybrid Pipelines over those folders, starts them
with `raylight up` (its own port and data directory), then times search requests alternating between the two
Pipelines (sequential, after 20 warm-up requests each; each request embeds its query and runs the hybrid query
with the pipeline + ACL filter on the embedded store). Prints p50/p95 for each, the ratio of the p50s, and
ingestion's chunks/s; stops the platform and removes everything it wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import percentile

REPO = Path(__file__).resolve().parents[1]
_VOCABULARY = ("cluster replica embedding chunk overlap tenant group pipeline source agent model adapter quota token "
         "latency index vector sparse dense hybrid filter policy secret volume cache upgrade gateway route "
         "ingress worker head node memory disk network request answer citation document heading title section "
         "paragraph table list code image audit metric trace span alert budget schedule sync delete update "
         "create status ready waking serving failed pending retry timeout backoff limit window context")
WORDS = _VOCABULARY.split()


def corpus(folder: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 70)))
        (folder / f"note-{i:06d}.md").write_text(f"# Note {i}\n\n{words.capitalize()}.\n")


def manifests(root: Path, sizes: dict[str, int]) -> Path:
    out = root / "manifests"
    out.mkdir()
    shutil.copy(REPO / "examples/quickstart/models.yaml", out / "models.yaml")
    for name, n in sizes.items():
        corpus(root / name, n, seed=n)
        (out / f"{name}.yaml").write_text(json.dumps({
            "apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": name},
            "spec": {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
                     "sources": [{"path": str(root / name), "include": ["**/*.md"]}],
                     "retrieval": {"topK": 5, "hybrid": True}}}))
    return out


def timed(http: httpx.Client, url: str, rng: random.Random) -> float:
    query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
    begun = time.perf_counter()
    response = http.post(url, json={"query": query})
    elapsed = (time.perf_counter() - begun) * 1000
    response.raise_for_status()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--port", type=int, default=8311)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="raylight-bench-search-"))
    data = root / "data"
    raylight = [sys.executable, "-m", "raylight.cli"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    sizes = {"small": args.small, "large": args.large}
    try:
        folder = manifests(root, sizes)
        begun = time.perf_counter()
        subprocess.run([*raylight, "up", "-f", str(folder), "--port", str(args.port), "--data-dir", str(data)],
                       check=True, env=env)
        up_s = time.perf_counter() - begun
        base = f"http://127.0.0.1:{args.port}/v1/pipelines"
        rng = random.Random(5)
        latencies: dict[str, list[float]] = {name: [] for name in sizes}
        with httpx.Client(timeout=60) as http:
            for name in sizes:
                for _ in range(20):
                    timed(http, f"{base}/{name}/search", rng)
            for _ in range(args.requests):
                for name in sizes:
                    latencies[name].append(timed(http, f"{base}/{name}/search", rng))
        rows = {name: {"chunks": sizes[name], "p50_ms": round(statistics.median(lat), 1),
                       "p95_ms": round(percentile(lat, 0.95), 1)} for name, lat in latencies.items()}
        result = {"rows": rows, "p50_ratio_large_to_small": round(rows["large"]["p50_ms"] / rows["small"]["p50_ms"], 2),
                  "up_s_including_ingestion": round(up_s), "chunks_per_s_up": round(sum(sizes.values()) / up_s, 1),
                  "load_average": os.getloadavg()}
        print(json.dumps(result, indent=1))
    finally:
        subprocess.run([*raylight, "down", "--data-dir", str(data)], env=env, check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
