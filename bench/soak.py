"""Soak: mixed traffic at a fixed concurrency against the local platform, with readiness polled throughout
(run by hand, not by the tests).

    OPENBLAS_NUM_THREADS=1 RAY_AUTH_MODE=disabled python bench/soak.py [--minutes 10] [--concurrency 16]
        [--url http://127.0.0.1:8000]

Without `--url` it runs `raylight up -f examples/quickstart` on a temporary data directory and a free port,
and `raylight down` at the end. Each worker sends, in turn, an embedding request (minilm, 4 sentences), a chat
completion (smollm, at most 16 tokens) and an agent invoke (handbook, a documented question). Meanwhile
`/readyz` is polled once a second. Reported: requests and errors by status, p50/p95 latency per minute and
kind, every `/readyz` answer that was not 200, and the resident memory of each platform process (Ray workers
by name) at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import free_port, percentile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"
SENTENCES = ["Ray Serve scales replicas.", "Qdrant stores vectors.", "Threads live in SQLite.", "Hello."]
QUESTIONS = ["What is the default chunk size and overlap?",
             "Which port does the local platform listen on, and where is its data stored?"]


def requests_for(i: int) -> tuple[str, str, dict[str, Any]]:
    kind = ("embeddings", "chat", "invoke")[i % 3]
    if kind == "embeddings":
        return kind, "/v1/embeddings", {"model": "minilm", "input": SENTENCES}
    if kind == "chat":
        return kind, "/v1/chat/completions", {"model": "smollm", "max_tokens": 16, "temperature": 0,
                                              "messages": [{"role": "user", "content": f"Say a number: {i}"}]}
    return kind, "/v1/pipelines/handbook/invoke", {"input": QUESTIONS[i % len(QUESTIONS)]}


def memory(session_pids: list[int]) -> dict[str, float]:
    """Resident MiB by process name: the platform's own pids and every Ray worker (ray::...)."""
    out: dict[str, float] = collections.defaultdict(float)
    mine = set(session_pids)
    for proc in psutil.process_iter(["pid", "name", "cmdline", "memory_info"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        try:  # only this platform's Ray workers: other Ray sessions on the machine run ray:: workers too
            ours = not mine or proc.info["pid"] in mine or any(p.pid in mine for p in proc.parents())
        except psutil.Error:
            continue
        if ours and (proc.info["pid"] in mine or cmd.startswith("ray::")):
            name = cmd.split()[0] if cmd.startswith("ray::") else Path(str(proc.info["name"])).name
            out[name] += proc.info["memory_info"].rss / 2**20 if proc.info["memory_info"] else 0.0
    return dict(out)


async def soak(url: str, minutes: float, concurrency: int) -> dict[str, Any]:
    deadline = time.monotonic() + minutes * 60
    started = time.monotonic()
    samples: list[tuple[int, str, int, float]] = []  # (minute, kind, status, seconds)
    ready: list[tuple[float, int, str]] = []
    counter = iter(range(10**9))

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            kind, path, body = requests_for(next(counter))
            t0 = time.monotonic()
            try:
                status = (await client.post(path, json=body)).status_code
            except httpx.HTTPError:
                status = 0  # no answer at all
            samples.append((int((t0 - started) // 60), kind, status, time.monotonic() - t0))

    async def probe(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                resp = await client.get("/readyz")
                ready.append((t0 - started, resp.status_code, "" if resp.status_code == 200 else resp.text[:300]))
            except httpx.HTTPError as exc:
                ready.append((t0 - started, 0, repr(exc)))
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))

    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await asyncio.gather(probe(client), *[worker(client) for _ in range(concurrency)])

    by_status = collections.Counter(f"{kind} {status}" for _, kind, status, _ in samples)
    per_minute: dict[str, dict[str, float]] = {}
    for minute in sorted({m for m, *_ in samples}):
        for kind in ("embeddings", "chat", "invoke"):
            times = [s for m, k, st, s in samples if m == minute and k == kind and st == 200]
            if times:
                per_minute[f"{minute} {kind}"] = {"n": len(times), "p50_ms": 1000 * percentile(times, 0.5),
                                                  "p95_ms": 1000 * percentile(times, 0.95)}
    return {"requests": len(samples), "by_status": dict(by_status), "per_minute": per_minute,
            "readyz": {"polls": len(ready), "not_200": [r for r in ready if r[1] != 200]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--url", help="an already running platform (default: start one)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "raylight.cli"]
    data_dir = Path(tempfile.mkdtemp(prefix="raylight-soak-")) / "rl"
    url = args.url
    if url is None:
        port = free_port()
        up = subprocess.run([*cli, "up", "-f", str(QUICKSTART), "--data-dir", str(data_dir), "--port", str(port)],
                            capture_output=True, text=True, timeout=1800)
        if up.returncode != 0:
            print(up.stderr[-3000:], file=sys.stderr)
            return 1
        url = f"http://127.0.0.1:{port}"
    try:
        state = json.loads((data_dir / "platform.json").read_text()) if args.url is None else {}
        # The daemon (it runs ray.init, so every Ray worker of this platform descends from it) and what it
        # records; "pids" is the older name.
        pids = [int(p) for p in (*state.get("processes", {}), *state.get("pids", []))]
        pids += [int(state["daemon_pid"])] if state.get("daemon_pid") else []
        before = memory(pids)
        report = asyncio.run(soak(url, args.minutes, args.concurrency))
        report["rss_mib"] = {"start": before, "end": memory(pids)}
    finally:
        if args.url is None:
            subprocess.run([*cli, "down", "--data-dir", str(data_dir)], capture_output=True, timeout=300)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
