"""Pipeline -> collection plan, ingestion plan and the agent's connections on a cluster (pure).

Secrets never appear in these plans: they reach pods as environment variables whose names the plan
carries (`raylight.api.connections.ENV_*`), so a rendered manifest is safe to commit.
"""

from __future__ import annotations

from typing import Any, Literal

from raylight.api.connections import (
    ENV_AGENT_TOKEN,
    ENV_LLM_API_KEY,
    ENV_QDRANT_API_KEY,
    ENV_THREADS_DSN,
    OIDC_JWKS_FILE,
    OIDC_JWKS_MOUNT,
    AuthConnection,
    CollectionPlan,
    Connections,
    EmbedderConnection,
    IngestionPlan,
    LLMConnection,
    McpServerConnection,
    OidcConnection,
    RayDataOptions,
    RerankerConnection,
    StoreConnection,
    ThreadsConnection,
    mcp_header_env,
)
from raylight.api.names import model_base_url
from raylight.api.serve import embed_backend
from raylight.api.types import Ingestion, ModelDeployment, ModelSource, Pipeline, PipelineSpec, SecretKeyRef
from raylight.qdrant_layout import PAYLOAD_INDEXES
from raylight.settings import Settings


def embedder_source(embedder: ModelDeployment | None) -> ModelSource | None:
    """The embedder's resolved model source (its tokenizer sizes chunks; its weights embed at scale)."""
    return embedder.spec.resolved().model if embedder is not None else None


def embedder_backend(embedder: ModelDeployment | None) -> Literal["onnx", "torch"]:
    """How a process that embeds by itself runs the embedder: its ModelDeployment's `engineArgs.backend` on the
    sentence-transformers runtime (default onnx), else torch."""
    if embedder is None or embedder.spec.resolved_runtime != "sentence-transformers":
        return "torch"
    return embed_backend(embedder.spec.resolved().engine_args)


def get_collection_plan(pipeline: Pipeline, embedder: ModelDeployment | None) -> CollectionPlan:
    """What the Qdrant collection must look like; dimensions None means: ask the embedder at run time."""
    source = embedder_source(embedder)
    return CollectionPlan(
        collection=pipeline.collection,
        dimensions=source.dimensions if source else None,
        sparse=pipeline.spec.retrieval.hybrid,
        payload_indexes=sorted(PAYLOAD_INDEXES),
    )


def secret_env(name: str, ref: SecretKeyRef | None) -> list[dict[str, Any]]:
    if ref is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _llm_connection(spec: PipelineSpec, namespace: str, settings: Settings,
                    llm_model: ModelDeployment | None = None) -> LLMConnection | None:
    llm = spec.llm
    if llm is not None and llm.external is not None:
        return LLMConnection(model=llm.external.model, base_url=llm.external.base_url,
                             api_key_env=ENV_LLM_API_KEY if llm.external.api_key_secret else None,
                             timeout_seconds=llm.external.timeout_seconds)
    if llm is not None and llm.model_deployment is not None:
        source = llm_model.spec.resolved().model if llm_model is not None else None
        replicas = llm_model.spec.replicas if llm_model is not None else None
        return LLMConnection(model=llm.model_deployment,
                             base_url=model_base_url(llm.model_deployment, namespace, settings.cluster_domain),
                             parameters=source.parameters if source else None,
                             wake_timeout_seconds=replicas.wake_timeout_seconds
                             if replicas is not None and replicas.min == 0 else None)
    return None


def get_auth_connection(spec: PipelineSpec) -> AuthConnection | None:
    """None, a shared token (in $RAYLIGHT_AGENT_TOKEN) or OIDC (the JWKS in the file the jwksSecret volume
    mounts, re-read when the Secret changes; or fetched from the issuer)."""
    auth = spec.agent.auth
    if auth is None:
        return None
    if auth.oidc is None:
        return AuthConnection(token_env=ENV_AGENT_TOKEN)
    oidc = auth.oidc
    return AuthConnection(oidc=OidcConnection(
        issuer=oidc.issuer, audience=oidc.audience, algorithms=list(oidc.algorithms), claims=oidc.claims,
        jwks_file=OIDC_JWKS_FILE if oidc.jwks_secret else None, jwks_cache_seconds=oidc.jwks_cache_seconds))


def get_agent_volumes(spec: PipelineSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts) the agent pods need: the OIDC JWKS Secret as a file (a volume, not
    an environment variable, so the kubelet brings a rotated Secret to running pods; `optional: false`, so a
    missing Secret keeps the pod from starting instead of serving without keys)."""
    auth = spec.agent.auth
    ref = auth.oidc.jwks_secret if auth and auth.oidc else None
    if ref is None:
        return [], []
    volume = {"name": "oidc-jwks", "secret": {"secretName": ref.name, "optional": False,
                                              "items": [{"key": ref.key, "path": OIDC_JWKS_FILE.rsplit("/", 1)[1]}]}}
    return [volume], [{"name": "oidc-jwks", "mountPath": OIDC_JWKS_MOUNT, "readOnly": True}]


def get_connections(pipeline: Pipeline, namespace: str, settings: Settings,
                    embedder: ModelDeployment | None = None, llm: ModelDeployment | None = None) -> Connections:
    """Where the pipeline's embedder, LLM, reranker, store and threads are on a cluster; `llm` (the LLM's
    ModelDeployment, when known) gives the model's size to the agent (agent.answerMode auto)."""
    spec = pipeline.spec
    domain = settings.cluster_domain
    source = embedder_source(embedder)
    qdrant = spec.vector_store.qdrant
    rerank = spec.retrieval.rerank
    return Connections(
        pipeline=pipeline.metadata.name,
        embedder=EmbedderConnection(
            model=spec.embedder.model_deployment,
            base_url=model_base_url(spec.embedder.model_deployment, namespace, domain),
            dimensions=source.dimensions if source else None,
            source=source,
            backend=embedder_backend(embedder),
        ),
        llm=_llm_connection(spec, namespace, settings, llm),
        reranker=RerankerConnection(model=rerank.model_deployment,
                                    base_url=model_base_url(rerank.model_deployment, namespace, domain))
        if rerank else None,
        store=StoreConnection(collection=pipeline.collection, url=qdrant.url or settings.qdrant_url,
                              api_key_env=ENV_QDRANT_API_KEY if qdrant.api_key_secret else None),
        threads=ThreadsConnection(postgres_dsn_env=ENV_THREADS_DSN, pool_size=spec.agent.threads.pool_size),
        auth=get_auth_connection(spec),
        mcp_servers=get_mcp_connections(spec),
    )


def get_mcp_connections(spec: PipelineSpec) -> list[McpServerConnection]:
    """spec.agent.mcpServers as connections: each header's value stays in its Secret (`get_pipeline_env` puts
    it in the variable `mcp_header_env(i, j)` names)."""
    return [McpServerConnection(name=server.name, url=str(server.url), tools=list(server.tools),
                                timeout_seconds=server.timeout_seconds,
                                header_envs={h.name: mcp_header_env(i, j) for j, h in enumerate(server.headers)})
            for i, server in enumerate(spec.agent.mcp_servers)]


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
        *secret_env(ENV_THREADS_DSN, threads_secret),
        *(env for i, server in enumerate(spec.agent.mcp_servers) for j, header in enumerate(server.headers)
          for env in secret_env(mcp_header_env(i, j), header.secret)),
    ]


def get_ray_data_options(embedder: ModelDeployment | None,
                         ingestion: Ingestion | None = None) -> RayDataOptions | None:
    """Ray Data sizing: the Pipeline's spec.ingestion (workers -> the actor pool, CPUs/GPUs per worker ->
    each actor's, batch size) where given, else from the embedder's ModelDeployment (its replicas -> the
    actor pool, its resources -> each actor's CPUs and GPUs). None when the embedder is unknown (its weights
    are what the actors load; the run then embeds through the service)."""
    if embedder is None:
        return None
    if ingestion is not None:
        return RayDataOptions(concurrency=ingestion.workers, num_cpus=ingestion.cpus_per_worker,
                              num_gpus=float(ingestion.gpus_per_worker), batch_size=ingestion.batch_size)
    spec = embedder.spec.resolved()
    low, high = max(spec.replicas.min, 1), max(spec.replicas.max, 1)
    return RayDataOptions(concurrency=(low, high) if high > low else low,
                          num_cpus=spec.resources.cpus, num_gpus=spec.resources.gpus)


def get_ingestion_plan(pipeline: Pipeline, namespace: str, settings: Settings,
                       embedder: ModelDeployment | None = None) -> IngestionPlan:
    """Everything an ingestion run on the cluster needs. The run (a RayJob's entrypoint) prints its summary
    as its last line; the RayJob's submitter keeps that line as its termination message, which the
    operator copies into the Pipeline's status."""
    connections = get_connections(pipeline, namespace, settings, embedder)
    return IngestionPlan(
        pipeline=pipeline.metadata.name,
        namespace=namespace,
        spec=pipeline.spec,
        embedder=connections.embedder,
        store=connections.store,
        collection=get_collection_plan(pipeline, embedder),
        ray_data=get_ray_data_options(embedder, pipeline.spec.ingestion),
    )
