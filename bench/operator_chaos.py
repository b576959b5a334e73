"""The operator SIGKILLed at random points while it reconciles 20 ModelDeployments, 100 trials (run by hand;
CI runs a few in tests/operator/test_operator_chaos.py). Each trial gets a fresh in-process API stand-in
(kmock, as the operator tests use) and runs `raylight operator --standalone` as a subprocess, killed 1-3
times and restarted; tests/operator/chaos.py says what is checked. Prints one line per trial and the totals
(trials, kills, kills that came mid-reconcile: some children written, not all; lost, duplicated,
orphans, untruthful statuses) as JSON.

    python bench/operator_chaos.py              # 100 trials, seeds 0..99
    python bench/operator_chaos.py 20 1000      # 20 trials from seed 1000
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "operator"), str(ROOT / "tests")]


def kubeconfig(port: int) -> str:
    fd, path = tempfile.mkstemp(prefix="raylight-chaos-", suffix=".kubeconfig")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "kmock", "user": {"token": "test"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock",
                                                       "namespace": "default"}}]}, f)
    return path


async def main(trials: int, first_seed: int) -> int:
    from support import free_port

    port = free_port()
    os.environ["KUBECONFIG"] = kubeconfig(port)  # before the harness's client reads it
    import kmock
    from chaos import OBJECTS, emulator, trial
    from operator_harness import Kube

    totals = {"trials": 0, "kills": 0, "lost": 0, "duplicated": 0, "orphans": 0, "untruthful": 0,
              "failed_trials": 0, "mid_reconcile_kills": 0}
    started = time.monotonic()
    for seed in range(first_seed, first_seed + trials):
        api = emulator()
        async with api, kmock.Server(api, port=port):
            out = await trial(api, Kube(), seed)
        totals["trials"] += 1
        totals["kills"] += out.kills
        for key in ("lost", "duplicated", "orphans", "untruthful"):
            totals[key] += len(getattr(out, key))
        totals["failed_trials"] += not out.ok
        totals["mid_reconcile_kills"] += sum(0 < n < OBJECTS for n in out.kill_points)
        print(f"seed {seed}: {out.kills} kills (children by then: {out.kill_points}), {out.seconds:.1f}s, "
              f"lost {out.lost}, duplicated {out.duplicated}, orphans {out.orphans}, untruthful {out.untruthful}",
              flush=True)
    totals["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(totals))
    return 1 if totals["failed_trials"] else 0


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    sys.exit(asyncio.run(main(args[0] if args else 100, args[1] if len(args) > 1 else 0)))
