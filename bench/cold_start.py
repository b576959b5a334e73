"""Cold start after scale to zero on one machine (run by hand under the heavy lock):

    flock /tmp/raylight-heavy.lock python bench/cold_start.py [--idle 5] [--rounds 3] [--port 8123]

Runs `raylight up` on the quickstart's SmolLM2 ModelDeployment (examples/quickstart/models.yaml, `smollm`) with
`replicas: {min: 0, max: 1, idleSeconds: IDLE}` in a temporary folder and data dir, then per round: waits until
the gateway's /readyz says the model is scaled to zero, and times the first chat completion after idle (8 tokens,
greedy) from the request to its answer: Serve starting a replica, llama.cpp loading the GGUF, the answer. A warm
request right after gives the part that is not the cold start. Prints one JSON document (median and each round,
the machine's load average) and runs `raylight down` whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from _common import free_port

ROOT = Path(__file__).resolve().parents[1]
ASK = {"model": "smollm", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
       "temperature": 0}


def quickstart_smollm(idle_s: int) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "quickstart" / "models.yaml").read_text()))
    smollm = next(d for d in docs if d and d["metadata"]["name"] == "smollm")
    smollm["spec"]["replicas"] = {"min": 0, "max": 1, "idleSeconds": idle_s}
    return dict(smollm)


def raylight(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "raylight.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def detail(url: str) -> str:
    body = httpx.get(f"{url}/readyz", timeout=30).json()
    return str(next(r for r in body["resources"] if r["name"] == "smollm")["detail"])


def wait_asleep(url: str, timeout_s: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if detail(url).startswith("scaled to zero"):
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"smollm not scaled to zero after {timeout_s:.0f} s: {detail(url)}")


def timed_chat(url: str) -> float:
    started = time.monotonic()
    resp = httpx.post(f"{url}/v1/chat/completions", json=ASK, timeout=900)
    took = time.monotonic() - started
    if resp.status_code != 200:
        raise SystemExit(f"chat answered {resp.status_code}: {resp.text[:300]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=5, help="replicas.idleSeconds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--data-dir", default="", help="default: a temporary folder")
    args = parser.parse_args()
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        manifests = Path(tmp) / "manifests"
        manifests.mkdir()
        (manifests / "smollm.yaml").write_text(yaml.safe_dump(quickstart_smollm(args.idle)))
        data_dir = args.data_dir or str(Path(tmp) / "data")
        up = raylight("up", "-f", str(manifests), "--data-dir", data_dir, "--port", str(port))
        try:
            if up.returncode != 0:
                raise SystemExit(f"raylight up failed: {up.stderr[-2000:]}")
            rounds = []
            for _ in range(args.rounds):
                idle_wait = wait_asleep(url)
                cold = timed_chat(url)
                warm = timed_chat(url)
                rounds.append({"cold_s": round(cold, 2), "warm_s": round(warm, 3),
                               "waited_for_zero_s": round(idle_wait, 1)})
        finally:
            raylight("down", "--data-dir", data_dir, timeout=300)
    print(json.dumps({
        "model": "smollm (SmolLM2-135M-Instruct Q4_1, llama-cpp, 1 CPU)", "idle_seconds": args.idle,
        "cold_start_median_s": round(statistics.median(r["cold_s"] for r in rounds), 2),
        "warm_median_s": round(statistics.median(r["warm_s"] for r in rounds), 3),
        "rounds": rounds, "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
