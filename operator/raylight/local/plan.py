"""Manifests -> the Serve applications of the local platform (pure: no Ray, no I/O).

The model and agent application configs come from the same builders the operator uses
(`raylight.desired.serve`); only their connections differ: everything is reached through the single-port
gateway on 127.0.0.1, the store through the actor that owns the embedded Qdrant folder, threads in SQLite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylight.api.connections import Connections, IngestionPlan, ResponseStoreConnection, ThreadsConnection
from raylight.api.manifests import Manifest, Problem
from raylight.api.names import GATEWAY_IMPORT, MODEL_APP_IMPORT
from raylight.api.serve import GatewayArgs, ModelAppArgs
from raylight.api.types import FineTune, ModelDeployment, Pipeline
from raylight.desired.pipeline import get_connections, get_ingestion_plan
from raylight.desired.serve import get_agent_application, get_model_application
from raylight.desired.training import resolve_adapters
from raylight.local import state as st
from raylight.settings import Settings


@dataclass
class Resource:
    kind: str
    name: str
    app: dict[str, Any]  # the Serve application config
    manifest: Manifest

    @property
    def key(self) -> str:
        return st.resource_key(self.kind, self.name)

    @property
    def spec_hash(self) -> str:
        return st.spec_hash(self.app)


@dataclass
class Plan:
    url: str
    resources: list[Resource] = field(default_factory=list)
    gateway: dict[str, Any] = field(default_factory=dict)

    @property
    def apps(self) -> list[dict[str, Any]]:
        return [r.app for r in self.resources] + [self.gateway]

    def models(self) -> list[Resource]:
        return [r for r in self.resources if r.kind == "ModelDeployment"]

    def pipelines(self) -> list[Resource]:
        return [r for r in self.resources if r.kind == "Pipeline"]

    def record(self) -> dict[str, dict[str, Any]]:
        """The `resources` entry of platform.json."""
        out = {}
        for r in self.resources:
            entry: dict[str, Any] = {"kind": r.kind, "name": r.name, "app": r.app["name"],
                                     "spec_hash": r.spec_hash, "file": str(r.manifest.file.resolve())}
            if isinstance(r.manifest.resource, Pipeline):
                entry["endpoint"] = f"{self.url}/v1/pipelines/{r.name}"
                entry["collection"] = r.manifest.resource.collection
                entry["deletion_policy"] = r.manifest.resource.spec.deletion_policy
                entry["auth"] = r.manifest.resource.spec.agent.auth is not None
            else:
                entry["endpoint"] = f"{self.url}/v1"
            out[r.key] = entry
        return out


def local_problems(manifests: list[Manifest]) -> list[Problem]:
    """What only one machine cares about: one name per thing a request's `model` can select, across kinds
    (ModelDeployments, their LoRA adapters, Pipelines: the gateway routes by that name)."""
    problems = []
    owner: dict[str, str] = {}
    for m in manifests:
        r = m.resource
        name = r.metadata.name
        if name == st.GATEWAY_APP:
            problems.append(Problem(str(m.file), r.kind, name, "metadata.name",
                                    f"{st.GATEWAY_APP} is reserved for the local gateway"))
        elif name in owner and owner[name] != r.kind:
            problems.append(Problem(str(m.file), r.kind, name, "metadata.name",
                                    f"a {owner[name]} has the same name; on one machine a name selects the "
                                    "model or pipeline in requests, so names must differ across kinds"))
        owner.setdefault(name, r.kind)
    selectable = {m.resource.metadata.name: f"{m.resource.kind} {m.resource.metadata.name}" for m in manifests
                  if isinstance(m.resource, ModelDeployment | Pipeline)}
    for m in manifests:
        r = m.resource
        if not isinstance(r, ModelDeployment):
            continue
        for i, adapter in enumerate(r.spec.adapters):
            taken = selectable.get(adapter.name)
            if taken is not None:
                problems.append(Problem(str(m.file), r.kind, r.metadata.name, f"spec.adapters[{i}].name",
                                        f"'{adapter.name}' already names {taken}; a request's model selects "
                                        "one thing, so adapter names must differ from every model, adapter "
                                        "and pipeline name"))
            else:
                selectable[adapter.name] = f"an adapter of ModelDeployment {r.metadata.name}"
    return problems


def local_connections(pipeline: Pipeline, embedder: ModelDeployment | None, data_dir: Path,
                      url: str, llm_model: ModelDeployment | None = None) -> Connections:
    """Connections on one machine (docs/architecture.md): models through the gateway at `url`, query
    embeddings in the agent's own process (the embedder's weights are on this machine: no hop for a query),
    the store through its actor, threads in SQLite."""
    conns = get_connections(pipeline, "default", Settings.from_env(), embedder, llm_model)
    base_url = f"{url}/v1"
    llm = conns.llm
    if llm is not None and pipeline.spec.llm is not None and pipeline.spec.llm.model_deployment:
        llm = llm.model_copy(update={"base_url": base_url})
    return conns.model_copy(update={
        # The agent embeds its queries itself when it can load the weights (package, file or cached hub
        # source; ingestion still goes through the embedder's app), else through the gateway.
        "embedder": conns.embedder.model_copy(update={"base_url": None if conns.embedder.source else base_url}),
        "reranker": conns.reranker.model_copy(update={"base_url": base_url}) if conns.reranker else None,
        "llm": llm,
        "store": st.store_connection(data_dir, pipeline.collection, {"store_actor": st.STORE_ACTOR}),
        "threads": ThreadsConnection(
            sqlite_path=str(data_dir / st.THREADS_DIR / f"{pipeline.metadata.name}.sqlite")),
    })


def local_ingestion_plan(pipeline: Pipeline, embedder: ModelDeployment | None, data_dir: Path,
                         state: dict[str, Any] | None, url: str | None = None) -> IngestionPlan:
    """The ingestion plan on one machine: the store under data_dir (through the running platform's actor
    when `state` is given), the embedder behind the gateway at `url`, or in this process when url is None."""
    plan = get_ingestion_plan(pipeline, "default", Settings.from_env(), embedder)
    return plan.model_copy(update={
        "embedder": plan.embedder.model_copy(update={"base_url": f"{url}/v1" if url else None}),
        "store": st.store_connection(data_dir, pipeline.collection, state),
        "report_path": None,
        # With the platform up, the run is the same Ray Data pipeline as on a cluster, on the platform's Ray
        # (workers write through the store actor). Its CPUs are shared with the Serve replicas, so the tasks
        # and actors claim none (a claim the replicas already hold would stall the run); without the
        # platform the run stays in this process.
        "ray_data": plan.ray_data.model_copy(update={"num_cpus": 0.0, "task_cpus": 0.0})
        if state is not None and plan.ray_data is not None and not plan.ray_data.num_gpus else None,
    })


def build_plan(manifests: list[Manifest], data_dir: Path, port: int) -> Plan:
    url = f"http://127.0.0.1:{port}"
    plan = Plan(url)
    models = {m.resource.metadata.name: m.resource for m in manifests if isinstance(m.resource, ModelDeployment)}
    outputs = {m.resource.metadata.name: m.resource.spec.output for m in manifests if isinstance(m.resource, FineTune)}
    for m in manifests:
        r = m.resource
        if isinstance(r, ModelDeployment):
            app = get_model_application(resolve_adapters(r, outputs))
            if app["import_path"] == MODEL_APP_IMPORT:  # /v1/responses: one SQLite file for every replica
                app["args"] = ModelAppArgs.model_validate(app["args"]).model_copy(update={
                    "responses": ResponseStoreConnection(sqlite_path=str(data_dir / st.RESPONSES_FILE))}).to_wire()
        elif not isinstance(r, Pipeline):  # a FineTune is batch work (`raylight finetune`), not a Serve app
            continue
        else:
            llm_ref = r.spec.llm.model_deployment if r.spec.llm else None
            conns = local_connections(r, models.get(r.spec.embedder.model_deployment), data_dir, url,
                                      models.get(llm_ref) if llm_ref else None)
            app = get_agent_application(r, conns)
        app["route_prefix"] = None  # reached through the gateway only
        plan.resources.append(Resource(r.kind, r.metadata.name, app, m))
    pipelines = [m.resource for m in manifests if isinstance(m.resource, Pipeline)]
    plan.gateway = {
        "name": st.GATEWAY_APP,
        "route_prefix": "/",
        "import_path": GATEWAY_IMPORT,
        "args": GatewayArgs(
            models={n: md.spec.task for n, md in models.items()},
            pipelines=[p.metadata.name for p in pipelines],
            protected=[p.metadata.name for p in pipelines if p.spec.agent.auth],
            max_request_bytes=max([p.spec.agent.limits.max_request_bytes for p in pipelines], default=0),
            adapters={n: [a.name for a in md.spec.adapters] for n, md in models.items() if md.spec.adapters},
            wake=wake_deadlines(manifests)).to_wire(),
    }
    return plan


def wake_deadlines(manifests: list[Manifest]) -> dict[str, int]:
    """Each model or pipeline agent that may scale to zero (replicas.min 0) -> its replicas.wakeTimeoutSeconds:
    how long the gateway holds a request while it has no replica."""
    out = {}
    for m in manifests:
        r = m.resource
        replicas = r.spec.replicas if isinstance(r, ModelDeployment) else \
            r.spec.agent.replicas if isinstance(r, Pipeline) else None
        if replicas is not None and replicas.min == 0:
            out[r.metadata.name] = replicas.wake_timeout_seconds
    return out


def cpus_needed(manifests: list[Manifest]) -> int:
    """Logical CPUs Ray must offer so every replica can be placed (at most replicas, one machine)."""
    total = 0.0
    for m in manifests:
        r = m.resource
        if isinstance(r, ModelDeployment):
            spec = r.spec.resolved()
            total += spec.resources.cpus * spec.replicas.max
        elif isinstance(r, Pipeline):
            total += r.spec.agent.replicas.max
    return math.ceil(total)
