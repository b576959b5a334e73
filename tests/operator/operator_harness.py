"""Helpers for the operator tests: the API emulator, the test's own client, polling, in-memory Qdrant."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp.web
import yaml
from kmock._internal import enums
from kmock_compat import RVEmulator
from raylight.operator.clients import QdrantCollections, RestKube
from raylight.operator.config import OperatorConfig
from raylight.settings import Settings


class Emulator(RVEmulator):
    """Adds what the operator tests look at: `metadata.generation` bumped on spec changes (KubeRay and
    our status compare it with observedGeneration) and a log of every write."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._names = itertools.count(1)
        self.writes: list[tuple[str, str, str | None, Any]] = []
        self.phases: dict[tuple[str, str | None, str | None], str] = {}  # last status.phase written

    async def _handle(self, request: Any) -> Any:
        # kmock keeps every request for assertions and matches each new one by scanning that history
        # (quadratic in the request count); the tests assert on `writes`, so keep a short window only.
        if len(self._requests) > 16:
            del self._requests[:-4]
        res = request.resource
        if res is not None and res.plural == "events" and request.action == enums.action.CREATE:
            # Answered, recorded, not stored: kmock scans every stored object on every request, and
            # thousands of Events would make the mock, not the operator, the slow part.
            self.writes.append(("CREATE", "events", None, request.data))
            return aiohttp.web.json_response(request.data, status=201)
        if res is not None and request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):  # kmock 0.8 ignores generateName
                meta["name"] = f"{meta['generateName']}{next(self._names):05d}"
        if res is not None and request.action in (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE):
            name = request.name or (request.data or {}).get("metadata", {}).get("name") if isinstance(
                request.data, dict) else request.name
            self.writes.append((request.action.name, res.plural, name, request.data))
            status = request.data.get("status") if isinstance(request.data, dict) else None
            if isinstance(status, dict) and status.get("phase"):
                self.phases[(res.plural, request.namespace, name)] = status["phase"]
            key = (res, request.namespace, request.name)
            live = self._objects[key] if key in self._objects and not self._objects[key].deleted else None
            if request.action == enums.action.DELETE and live is not None:
                # kmock_compat bumps resourceVersion on writes but not on a delete, whose MODIFIED
                # (deletionTimestamp) event a reconnecting watch would then skip as already seen.
                live.patch({"metadata": {"resourceVersion": str(next(self._rv))}})
            spec_change = isinstance(request.data, dict) and "spec" in request.data
            if request.action == enums.action.UPDATE and spec_change and live is not None:
                gen = live.get("metadata", {}).get("generation") or 1
                request.data.setdefault("metadata", {})["generation"] = gen + 1
        return await super()._handle(request)

    def count(self, action: str, plural: str, name: str | None = None) -> int:
        return sum(1 for a, p, n, _ in self.writes if a == action and p == plural and (name is None or n == name))


class Kube:
    """The test's own view of the API, through the operator's client (in a thread: it is sync)."""

    def __init__(self) -> None:
        self.client = RestKube(timeout=5)

    async def get(self, kind: str, name: str, ns: str = "default") -> dict[str, Any] | None:
        return await asyncio.to_thread(self.client.get, kind, ns, name)

    async def create(self, obj: dict[str, Any], ns: str = "default") -> dict[str, Any]:
        obj.setdefault("metadata", {}).setdefault("namespace", ns)
        return await asyncio.to_thread(self.client.create, obj["kind"], ns, obj)

    async def patch(self, kind: str, name: str, patch: dict[str, Any], ns: str = "default") -> Any:
        return await asyncio.to_thread(self.client.patch, kind, ns, name, patch)

    async def delete(self, kind: str, name: str, ns: str = "default") -> bool:
        return await asyncio.to_thread(self.client.delete, kind, ns, name)

    async def list(self, kind: str, ns: str = "default") -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.client.list, kind, ns, {})


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an (async) check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


class Stores:
    """Every Qdrant URL resolves to one in-memory qdrant-client, behind the operator's store class."""

    def __init__(self) -> None:
        from qdrant_client import QdrantClient

        self.store = QdrantCollections(QdrantClient(":memory:"))
        self.urls: list[tuple[str, str | None]] = []

    def __call__(self, url: str, api_key: str | None) -> QdrantCollections:
        self.urls.append((url, api_key))
        return self.store


def operator_config(**changes: Any) -> OperatorConfig:
    base = OperatorConfig(settings=Settings(runtime_image="raylight-runtime:test"), standalone=True,
                          status_interval=0.3, request_timeout=5, watch_timeout=10, max_workers=8, idle_timeout=0.2,
                          timer_exit_polling=0.2)
    return replace(base, **changes)


# The API groups the operator watches and writes, served by the stand-in beside the bundled built-in kinds.
CRDS = {
    "raylight.io/v1alpha1/modeldeployments": "ModelDeployment",
    "raylight.io/v1alpha1/pipelines": "Pipeline",
    "raylight.io/v1alpha1/finetunes": "FineTune",
    "ray.io/v1/rayservices": "RayService",
    "ray.io/v1/rayjobs": "RayJob",
    "ray.io/v1/raycronjobs": "RayCronJob",
    "batch/v1/jobs": "Job",
    "batch/v1/cronjobs": "CronJob",
}


def new_emulator() -> Emulator:
    """A fresh API stand-in that serves the built-in kinds and CRDS (with their status subresources)."""
    api = Emulator()
    api.resources.load_bundled()
    for key, kind in CRDS.items():
        api.resources[key] = {
            "kind": kind, "singular": kind.lower(), "namespaced": True,
            "verbs": {"list", "watch", "get", "patch", "create", "delete"},
            "subresources": {"status"} if key.startswith(("raylight", "ray.io", "batch")) else set(),
        }
    return api


async def mark_rayservice_ready(kube: Kube, name: str) -> None:
    """What KubeRay reports once the cluster runs and every Serve application is RUNNING."""
    rs = await kube.get("RayService", name)
    assert rs is not None
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["name"]
    await kube.patch("RayService", name, {"status": {
        "observedGeneration": rs["metadata"]["generation"],
        "conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}],
        "numServeEndpoints": 1,
        "activeServiceStatus": {"applicationStatuses": {app: {"status": "RUNNING"}},
                                "rayClusterStatus": {"readyWorkerReplicas": 1}},
    }})
