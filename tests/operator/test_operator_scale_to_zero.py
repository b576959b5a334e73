"""Scale to zero through the real Kopf runtime against the API stand-in: a chat model and a Pipeline's agent at
`replicas.min: 0` render RayServices KubeRay accepts, the agent's carries its model's wakeTimeoutSeconds (the
deadline its calls to the model keep) and the idle timeout for its own workers; once KubeRay reports no replica
running, both say Ready/ScaledToZero rather than not ready."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from operator_harness import Emulator, Kube, eventually
from test_operator_runtime import CHAT, EMBEDDER, condition, md, pipeline

pytestmark = pytest.mark.operator


async def scaled_to_zero(kube: Kube, name: str) -> None:
    """What KubeRay reports while Serve runs the applications with no replica (min 0, idle): the worker pods
    are gone; Serve's proxy on the head is still a serve endpoint, so the RayService stays Ready."""
    rs = await kube.get("RayService", name)
    assert rs is not None
    apps = [a["name"] for a in yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]]
    await kube.patch("RayService", name, {"status": {
        "observedGeneration": rs["metadata"]["generation"], "numServeEndpoints": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "RunningServeEndpoints"}],
        "activeServiceStatus": {"rayClusterStatus": {"readyWorkerReplicas": 0}, "applicationStatuses": {
            app: {"status": "RUNNING", "deployments": {"d": {"status": "HEALTHY"}}} for app in apps}},
    }})


async def reason_is(kube: Kube, kind: str, name: str, kind_of_condition: str, reason: str) -> dict[str, Any] | None:
    obj = await kube.get(kind, name)
    return obj if condition(obj, kind_of_condition).get("reason") == reason else None


async def test_a_model_and_an_agent_at_min_zero_render_their_deadlines_and_report_scaled_to_zero(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any],
        validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    chat = md(CHAT)
    chat["spec"]["replicas"] = {"min": 0, "max": 1, "idleSeconds": 60, "wakeTimeoutSeconds": 45}
    async with start_operator():
        await kube.create(md(EMBEDDER))
        await kube.create(chat)
        await kube.create(pipeline(agent={"replicas": {"min": 0, "max": 1, "idleSeconds": 30}}))
        agent = await eventually(lambda: kube.get("RayService", "handbook-agent"))
        validate_rayservice({k: v for k, v in agent.items() if k != "status"})

        def llm_deadline(rs: dict[str, Any] | None) -> dict[str, Any] | None:
            app = yaml.safe_load((rs or {}).get("spec", {}).get("serveConfigV2") or "{}")
            llm = (app.get("applications") or [{}])[0].get("args", {}).get("connections", {}).get("llm") or {}
            return rs if llm.get("wakeTimeoutSeconds") == 45 else None

        async def agent_with_deadline() -> dict[str, Any] | None:
            return llm_deadline(await kube.get("RayService", "handbook-agent"))

        agent = await eventually(agent_with_deadline)  # once the model is known to the pipeline's reconcile
        assert agent["spec"]["rayClusterConfig"]["autoscalerOptions"] == {"idleTimeoutSeconds": 30}

        await scaled_to_zero(kube, "smollm")
        model = await eventually(lambda: reason_is(kube, "ModelDeployment", "smollm", "Ready", "ScaledToZero"))
        assert condition(model, "Ready")["status"] == "True"
        await scaled_to_zero(kube, "handbook-agent")
        pipe = await eventually(lambda: reason_is(kube, "Pipeline", "handbook", "AgentReady", "ScaledToZero"))
        assert condition(pipe, "AgentReady")["status"] == "True"
