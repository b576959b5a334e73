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

from raylight.api.manifests import Manifest, Problem
from raylight.api.types import ModelDeployment, Pipeline
from raylight.desired.pipeline import collection_name, get_connections
from raylight.desired.serve import get_agent_application, get_model_application, resolve_spec
from raylight.local import state as st
from raylight.settings import Settings

GATEWAY_IMPORT = "raylight.local.gateway:build_app"


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
                entry["collection"] = collection_name(r.manifest.resource)
                entry["deletion_policy"] = r.manifest.resource.spec.deletion_policy
                entry["auth"] = r.manifest.resource.spec.agent.auth is not None
            else:
                entry["endpoint"] = f"{self.url}/v1"
            out[r.key] = entry
        return out


def local_problems(manifests: list[Manifest]) -> list[Problem]:
    """What only one machine cares about: one Serve application per name, across kinds."""
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
    return problems


def local_connections(pipeline: Pipeline, embedder: ModelDeployment | None, data_dir: Path,
                      url: str) -> dict[str, Any]:
    """connections for one machine (docs/architecture.md): the gateway, the store actor, SQLite threads."""
    conns = get_connections(pipeline, "default", Settings.from_env(), embedder)
    conns["embedder"]["base_url"] = f"{url}/v1"
    conns["embedder"]["serve_app"] = pipeline.spec.embedder.model_deployment  # same Ray: a handle, no HTTP
    if conns["reranker"]:
        conns["reranker"]["base_url"] = f"{url}/v1"
    if conns["llm"] and pipeline.spec.llm and pipeline.spec.llm.model_deployment:
        conns["llm"]["base_url"] = f"{url}/v1"
    conns["store"] = {
        "url": None,
        "path": str(data_dir / st.STORE_DIR),
        "actor": st.STORE_ACTOR,
        "collection": collection_name(pipeline),
        "api_key_env": None,
    }
    conns["threads"] = {"postgres_dsn_env": None,
                        "sqlite_path": str(data_dir / st.THREADS_DIR / f"{pipeline.metadata.name}.sqlite")}
    return conns


def build_plan(manifests: list[Manifest], data_dir: Path, port: int) -> Plan:
    url = f"http://127.0.0.1:{port}"
    plan = Plan(url)
    models = {m.resource.metadata.name: m.resource for m in manifests if isinstance(m.resource, ModelDeployment)}
    for m in manifests:
        r = m.resource
        if isinstance(r, ModelDeployment):
            app = get_model_application(r)
        else:
            conns = local_connections(r, models.get(r.spec.embedder.model_deployment), data_dir, url)
            app = get_agent_application(r, conns)
        app["route_prefix"] = None  # reached through the gateway only
        plan.resources.append(Resource(r.kind, r.metadata.name, app, m))
    pipelines = [m.resource for m in manifests if isinstance(m.resource, Pipeline)]
    plan.gateway = {
        "name": st.GATEWAY_APP,
        "route_prefix": "/",
        "import_path": GATEWAY_IMPORT,
        "args": {"models": {n: md.spec.task for n, md in models.items()},
                 "pipelines": [p.metadata.name for p in pipelines],
                 "protected": [p.metadata.name for p in pipelines if p.spec.agent.auth],
                 "max_request_bytes": max([p.spec.agent.limits.max_request_bytes for p in pipelines], default=0)},
    }
    return plan


def cpus_needed(manifests: list[Manifest]) -> int:
    """Logical CPUs Ray must offer so every replica can be placed (at most replicas, one machine)."""
    total = 0.0
    for m in manifests:
        r = m.resource
        if isinstance(r, ModelDeployment):
            spec = resolve_spec(r.spec)
            total += spec.resources.cpus * spec.replicas.max
        else:
            total += r.spec.agent.replicas.max
    return math.ceil(total)
