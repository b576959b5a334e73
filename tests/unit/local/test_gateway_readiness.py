"""The gateway's /readyz answers within a second whatever is restarting: Serve's controller that does not
answer (ray.serve.status() blocks until a restarted controller is back), a replica that is down, an agent
replica that does not answer its own readyz. Serve's status objects are the real schema classes; the
controller's and the agent's silence are threads and futures that never finish."""

from __future__ import annotations

import asyncio
import json
import threading
import time
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
from raylight.api.names import AGENT_DEPLOYMENT, MODEL_DEPLOYMENT
from raylight.local import gateway as gw

BUDGET_S = 1.0


def status(running: dict[str, tuple[str, int]]) -> ServeStatus:
    """Serve's status with app -> (deployment, running replicas)."""
    apps = {}
    for app, (dep, n) in running.items():
        dep_status = DeploymentStatus.HEALTHY if n else DeploymentStatus.UNHEALTHY
        apps[app] = ApplicationStatusOverview(
            status=ApplicationStatus.RUNNING if n else ApplicationStatus.DEPLOYING, message="", last_deployed_time_s=0,
            deployments={dep: DeploymentStatusOverview(
                status=dep_status, status_trigger=DeploymentStatusTrigger.HEALTH_CHECK_FAILED,
                replica_states={ReplicaState.RUNNING: n} if n else {ReplicaState.STARTING: 1},
                message="" if n else "replica restarting")})
    return ServeStatus(applications=apps)


class Controller:
    """serve.status as the gateway sees it: answers, or blocks until released (a controller restarting)."""

    def __init__(self) -> None:
        self.answer: ServeStatus | None = None
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> ServeStatus:
        self.calls += 1
        if self.answer is None:
            self.release.wait(30)
            raise RuntimeError("controller gone")
        return self.answer


class Agent:
    """A DeploymentHandle's `readyz.remote(auth)`: an answer, or a call that never finishes."""

    def __init__(self, answer: dict[str, Any] | None) -> None:
        self.answer = answer
        self.readyz = self

    def remote(self, auth: str | None) -> Any:
        async def call() -> dict[str, Any]:
            if self.answer is None:
                await asyncio.sleep(3600)
            assert self.answer is not None
            return dict(self.answer)
        return call()


def gateway(monkeypatch: pytest.MonkeyPatch, controller: Controller, agent: Agent) -> Any:
    monkeypatch.setattr(gw.serve, "status", controller)
    cls = gw.Gateway.func_or_class.__mro__[1]  # the class under Serve's ingress wrapper
    g = cls({"minilm": "embed"}, ["docs", "secret"], ["secret"], 0)
    monkeypatch.setattr(g, "_agent", lambda name: agent)
    return g


class FakeRequest:
    headers: dict[str, str] = {}


async def ask(g: Any) -> tuple[int, dict[str, Any], float]:
    t0 = time.monotonic()
    resp = await g.readyz(FakeRequest())
    return resp.status_code, json.loads(resp.body), time.monotonic() - t0


RUNNING = {"minilm": (MODEL_DEPLOYMENT, 1), "docs": (AGENT_DEPLOYMENT, 1), "secret": (AGENT_DEPLOYMENT, 1)}
AGENT_OK = {"ready": True, "visible": True, "store": {"ok": True, "detail": "ok"}}


def test_a_controller_that_does_not_answer_gives_503_within_a_second_with_the_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    controller = Controller()
    g = gateway(monkeypatch, controller, Agent(AGENT_OK))

    async def probe() -> None:
        for _ in range(3):  # repeated probes while it hangs: each within the budget, one read in flight
            code, body, took = await ask(g)
            assert code == 503 and took < BUDGET_S, took
            assert [r["name"] for r in body["resources"]] == ["minilm", "docs"]
            assert all("controller did not answer" in r["detail"] for r in body["resources"])
            assert body["protected"] == {"count": 1, "ready": False}
        assert controller.calls == 1
        controller.release.set()  # (asyncio.run waits for the read's thread)

    asyncio.run(probe())


def test_the_last_view_carries_readiness_through_a_short_controller_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    controller = Controller()
    controller.answer = status(RUNNING)
    g = gateway(monkeypatch, controller, Agent(AGENT_OK))

    async def probe() -> None:
        assert (await ask(g))[0] == 200
        controller.answer = None  # the controller restarts
        code, _, took = await ask(g)
        assert code == 200 and took < BUDGET_S
        g.status_max_age_s = 0.0  # once the view is too old: not ready, and why
        code, body, took = await ask(g)
        assert code == 503 and took < BUDGET_S and "controller" in body["resources"][0]["detail"]
        controller.release.set()

    asyncio.run(probe())


def test_a_replica_down_is_503_naming_it_within_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    controller = Controller()
    controller.answer = status({**RUNNING, "docs": (AGENT_DEPLOYMENT, 0)})
    g = gateway(monkeypatch, controller, Agent(AGENT_OK))
    code, body, took = asyncio.run(ask(g))
    assert code == 503 and took < BUDGET_S
    docs = next(r for r in body["resources"] if r["name"] == "docs")
    assert docs["ready"] is False and "no replica running" in docs["detail"] and "replica restarting" in docs["detail"]


def test_an_agent_replica_that_does_not_answer_is_busy_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    controller = Controller()
    controller.answer = status(RUNNING)
    g = gateway(monkeypatch, controller, Agent(None))
    code, body, took = asyncio.run(ask(g))
    assert took < BUDGET_S and code == 200
    docs = next(r for r in body["resources"] if r["name"] == "docs")
    assert docs["detail"].startswith("busy")


def test_the_budget_is_under_a_second() -> None:
    assert gw.READY_BUDGET_S < BUDGET_S
