"""schemathesis against the agent app's own /openapi.json (raylight_agents.openapi), in process over ASGI:
the real FastAPI app, guard and AgentServer, with the deterministic model and retriever of agent_fakes.

- every operation, with generated valid and invalid bodies, parameters and headers: never a 5xx, every
  status documented, every body (errors included) matching its schema;
- stateful: the links invoke -> thread / next invoke / stream and chat -> thread, so the thread routes
  see real thread ids and users, not only 404s.

The pipeline's name is the one identifier the document cannot know (the app serves whichever Pipeline
it was built for): the test pins the `name` path parameter and the chat body's `model` to it. The
number of cases run is printed (`pytest -s`) and asserted to be above a floor."""

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
from raylight_agents.agent import Agent
from raylight_agents.serve import AgentServer, api
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.filterwarnings("ignore:coroutine .*__del__. was never awaited:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

NAME = "handbook"
DOCS = [Doc("d1", "Ray Serve scales replicas with autoscaling between min and max.", "serve.md"),
        Doc("d2", "Tenant A keeps its runbooks here.", "a.md", tenant="a"),
        Doc("d3", "Operators restart failed replicas.", "ops.md", groups=("ops",))]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
STATELESS_EXAMPLES = 40  # per operation (8 operations, positive and negative modes)
STATEFUL_EXAMPLES = 30  # scenarios, each up to STEPS calls following the links
STEPS = 6
CASES: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()
STATEFUL: Counter[tuple[str, int]] = Counter()  # (operation, status) of the calls the state machine made


def _server() -> Any:
    spec = {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
            "agent": {"limits": {"maxRequestBytes": 1 << 20, "timeoutSeconds": 10}}}
    conn = connections()
    cls = AgentServer.func_or_class  # the user class behind the Serve deployment
    obj = cls.__new__(cls)
    asyncio.run(obj.__init__(NAME, spec, conn))  # Serve's ingress wrapper has an async constructor
    llm = ScriptedLLM(lambda body: "Replicas autoscale [1].")
    obj.agent = Agent(NAME, obj.spec, conn, retriever=lambda: MemoryRetriever(DOCS), llm=llm.llm())
    return obj


def _document() -> dict[str, Any]:
    """The app's /openapi.json with the pipeline's name pinned where the document says "a pipeline name"."""
    with TestClient(api) as client:
        doc: dict[str, Any] = client.get("/openapi.json").json()
    for path in doc["paths"].values():
        for op in path.values():
            for param in op.get("parameters", []):
                if param["name"] == "name" and param["in"] == "path":
                    param["schema"] = {"type": "string", "enum": [NAME]}
    doc["components"]["schemas"]["ChatIn"]["properties"]["model"] = {"type": "string", "enum": [NAME]}
    return doc


# Loaded eagerly (schemathesis' lazy `from_fixture` does not run under pytest 9); fetching the document
# needs no replica, the calls do: `replica` below provides it.
agent_schema = schemathesis.openapi.from_dict(_document())
agent_schema.app = api


@pytest.fixture(scope="module", autouse=True)
def replica() -> Iterator[Any]:
    server = _server()
    patch = pytest.MonkeyPatch()
    # The routes find their replica through Serve's replica context: here, this one object.
    patch.setattr(ray.serve, "get_replica_context", lambda: SimpleNamespace(servable_object=server))
    yield server
    patch.undo()
    print(f"\nschemathesis: {sum(CASES.values())} cases, by operation {dict(CASES)}, by status {dict(STATUSES)}; "
          f"stateful calls {sum(STATEFUL.values())}: {dict(STATEFUL)}")


def _record(case: Any, response: Any) -> None:
    CASES[case.operation.label] += 1
    STATUSES[response.status_code] += 1


@agent_schema.parametrize()
@settings(max_examples=STATELESS_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_documented_schema(case: Any) -> None:
    response = case.call_and_validate(checks=CHECKS)
    _record(case, response)
    assert response.status_code < 500, response.text


def test_stateful_links_reach_invoke_stream_and_threads() -> None:
    # The operations the links join (chat's generated bodies are mostly refusals: its own test covers them).
    linked = agent_schema.include(operation_id=["invoke", "stream", "getThread"])

    class Machine(linked.as_state_machine()):  # type: ignore[misc]
        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            _record(case, response)
            STATEFUL[(case.operation.label, response.status_code)] += 1
            case.validate_response(response, checks=CHECKS)

    Machine.run(settings=settings(max_examples=STATEFUL_EXAMPLES, stateful_step_count=STEPS, deadline=None,
                                  derandomize=True, suppress_health_check=list(HealthCheck)))
    ok = {label for (label, status) in STATEFUL if status == 200}
    # Followed links gave the thread and stream routes real thread ids (a 200 on a thread needs one).
    assert {"POST /v1/pipelines/{name}/invoke", "POST /v1/pipelines/{name}/stream",
            "GET /v1/pipelines/{name}/threads/{thread_id}"} <= ok, STATEFUL
    assert not [key for key in STATEFUL if key[1] >= 500], STATEFUL


def test_the_run_was_not_vacuous() -> None:
    """Runs last in this module: the fuzzing above reached every route, and 200s among them."""
    assert sum(CASES.values()) >= 300, CASES
    assert STATUSES[200] >= 50 and not [s for s in STATUSES if s >= 500], STATUSES
