"""Pipeline -> collection plan, ingestion plan and the agent's connections (pure).

Secrets never appear in these plans: they reach pods as environment variables whose names the plan
carries, so a rendered manifest is safe to commit.
"""

from __future__ import annotations

from typing import Any

from raylight.api.types import ModelDeployment, Pipeline, PipelineSpec, SecretKeyRef
from raylight.desired.serve import resolve_spec
from raylight.qdrant_layout import PAYLOAD_INDEXES
from raylight.settings import Settings

# Environment variables through which Secrets reach the agent and ingestion pods.
ENV_LLM_API_KEY = "RAYLIGHT_LLM_API_KEY"
ENV_QDRANT_API_KEY = "RAYLIGHT_QDRANT_API_KEY"
ENV_AGENT_TOKEN = "RAYLIGHT_AGENT_TOKEN"
ENV_THREADS_DSN = "RAYLIGHT_THREADS_DSN"
ENV_OIDC_JWKS = "RAYLIGHT_OIDC_JWKS"


def model_endpoint(name: str, namespace: str, settings: Settings) -> str:
    """The OpenAI-compatible base URL of a ModelDeployment's RayService on a cluster."""
    return f"http://{name}-serve-svc.{namespace}.svc.{settings.cluster_domain}:8000/v1"


def collection_name(pipeline: Pipeline) -> str:
    return pipeline.spec.vector_store.qdrant.collection or pipeline.metadata.name


def embedder_dimensions(embedder: ModelDeployment | None) -> int | None:
    """The collection's vector size, when the embedder's manifest or preset says it."""
    if embedder is None:
        return None
    model = resolve_spec(embedder.spec).model
    return model.dimensions if model else None


def embedder_model(embedder: ModelDeployment | None) -> dict[str, Any] | None:
    """The embedder's resolved model source (ingestion loads its tokenizer, and its weights at scale)."""
    if embedder is None:
        return None
    model = resolve_spec(embedder.spec).model
    return model.to_wire() if model else None


def get_collection_plan(pipeline: Pipeline, embedder: ModelDeployment | None) -> dict[str, Any]:
    """What the Qdrant collection must look like; dimensions None means: ask the embedder at run time."""
    return {
        "collection": collection_name(pipeline),
        "dimensions": embedder_dimensions(embedder),
        "distance": "Cosine",
        "sparse": pipeline.spec.retrieval.hybrid,
        "payloadIndexes": sorted(PAYLOAD_INDEXES),
    }


def secret_env(name: str, ref: SecretKeyRef | None) -> list[dict[str, Any]]:
    if ref is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def get_connections(pipeline: Pipeline, namespace: str, settings: Settings,
                    embedder: ModelDeployment | None = None) -> dict[str, Any]:
    """Where the pipeline's embedder, LLM, store and threads are on a cluster."""
    spec = pipeline.spec
    llm = spec.llm
    llm_conn: dict[str, Any] | None = None
    if llm is not None and llm.external is not None:
        llm_conn = {
            "model": llm.external.model,
            "base_url": llm.external.base_url,
            "api_key_env": ENV_LLM_API_KEY if llm.external.api_key_secret else None,
            "timeout_seconds": llm.external.timeout_seconds,
        }
    elif llm is not None and llm.model_deployment is not None:
        llm_conn = {
            "model": llm.model_deployment,
            "base_url": model_endpoint(llm.model_deployment, namespace, settings),
            "api_key_env": None,
            "timeout_seconds": 120.0,
        }
    qdrant = spec.vector_store.qdrant
    return {
        "pipeline": pipeline.metadata.name,  # retrieval filters on it: pipelines may share a collection
        "embedder": {
            "model": spec.embedder.model_deployment,
            "base_url": model_endpoint(spec.embedder.model_deployment, namespace, settings),
            "dimensions": embedder_dimensions(embedder),
            "source": embedder_model(embedder),
        },
        "llm": llm_conn,
        "reranker": {
            "model": spec.retrieval.rerank.model_deployment,
            "base_url": model_endpoint(spec.retrieval.rerank.model_deployment, namespace, settings),
        } if spec.retrieval.rerank else None,
        "store": {
            "url": qdrant.url or settings.qdrant_url,
            "path": None,  # embedded store (one machine)
            "actor": None,  # named Ray actor that owns the embedded store (one machine, shared)
            "collection": collection_name(pipeline),
            "api_key_env": ENV_QDRANT_API_KEY if qdrant.api_key_secret else None,
        },
        "threads": {"postgres_dsn_env": ENV_THREADS_DSN, "sqlite_path": None,
                    "pool_size": spec.agent.threads.pool_size},
        "auth": get_auth_connection(spec),
    }


def get_auth_connection(spec: PipelineSpec) -> dict[str, Any] | None:
    """connections["auth"]: None, a shared token (in $token_env) or OIDC (JWKS in $jwks_env or fetched)."""
    auth = spec.agent.auth
    if auth is None:
        return None
    if auth.oidc is None:
        return {"token_env": ENV_AGENT_TOKEN}
    oidc = auth.oidc
    return {"oidc": {"issuer": oidc.issuer, "audience": oidc.audience, "algorithms": list(oidc.algorithms),
                     "jwks_env": ENV_OIDC_JWKS if oidc.jwks_secret else None,
                     "claims": oidc.claims.model_dump()}}


def get_pipeline_env(pipeline: Pipeline, settings: Settings) -> list[dict[str, Any]]:
    """Secret-backed environment for the agent and ingestion pods."""
    spec = pipeline.spec
    threads_secret = spec.agent.threads.postgres_secret or (
        SecretKeyRef(name=settings.postgres_secret, key="dsn") if settings.postgres_secret else None
    )
    auth = spec.agent.auth
    token = SecretKeyRef(name=auth.secret, key=auth.key) if auth and auth.secret else None
    return [
        *secret_env(ENV_LLM_API_KEY, spec.llm.external.api_key_secret if spec.llm and spec.llm.external else None),
        *secret_env(ENV_QDRANT_API_KEY, spec.vector_store.qdrant.api_key_secret),
        *secret_env(ENV_AGENT_TOKEN, token),
        *secret_env(ENV_OIDC_JWKS, auth.oidc.jwks_secret if auth and auth.oidc else None),
        *secret_env(ENV_THREADS_DSN, threads_secret),
    ]


def get_ingestion_plan(pipeline: Pipeline, namespace: str, settings: Settings,
                       embedder: ModelDeployment | None = None) -> dict[str, Any]:
    """Everything an ingestion run needs, as one JSON-able document (mounted into the Job). The run writes
    its summary (counts, what it skipped and why) to `report_path`: the container's termination message,
    which the operator copies into the Pipeline's status.lastIngestion."""
    connections = get_connections(pipeline, namespace, settings, embedder)
    return {
        "pipeline": pipeline.metadata.name,
        "report_path": "/dev/termination-log",
        "namespace": namespace,
        "spec": pipeline.spec.to_wire(),
        "embedder": connections["embedder"],
        "store": connections["store"],
        "collection": get_collection_plan(pipeline, embedder),
    }
