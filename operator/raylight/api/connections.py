"""Where a Pipeline's parts are, as the agent and the ingestion run read them: the typed contract the
control plane (operator, `raylight up`) writes and the data plane reads. Never secret values: those
arrive as environment variables whose names these carry, so a rendered manifest is safe to commit.

On a cluster every URL is a Service (`names.model_base_url`); on one machine the gateway on 127.0.0.1,
the agent's query embeddings in its own process (no `base_url`), the store through the Ray actor that owns
the embedded Qdrant folder, threads in SQLite. On the wire (Serve args, the ingestion plan) fields are
camelCase, like the CRs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raylight.api.types import ApiModel, ModelCache, ModelSource, OidcClaims, PipelineSpec

# Environment variables through which Secrets reach the agent and ingestion pods.
ENV_LLM_API_KEY = "RAYLIGHT_LLM_API_KEY"
ENV_QDRANT_API_KEY = "RAYLIGHT_QDRANT_API_KEY"
ENV_AGENT_TOKEN = "RAYLIGHT_AGENT_TOKEN"
ENV_RESPONSES_DSN = "RAYLIGHT_RESPONSES_DSN"  # a chat model's /v1/responses store (the operator's default DSN)
ENV_THREADS_DSN = "RAYLIGHT_THREADS_DSN"
ENV_OIDC_JWKS = "RAYLIGHT_OIDC_JWKS"
# Where the agent pods mount agent.auth.oidc.jwksSecret (a volume, so a changed Secret reaches them).
OIDC_JWKS_MOUNT = "/etc/raylight/oidc"
OIDC_JWKS_FILE = f"{OIDC_JWKS_MOUNT}/jwks.json"


class EmbedderConnection(ApiModel):
    model: str  # the embedder ModelDeployment's name (the OpenAI `model`)
    base_url: str | None = None  # OpenAI-compatible `.../v1`; None: embed in this process from `source`
    dimensions: int | None = None  # None: ask the embedder at run time
    source: ModelSource | None = None  # resolved weights: ingestion loads the tokenizer (and model at scale)
    # How a process that embeds by itself (no base_url) runs the model: the embedder ModelDeployment's
    # sentence-transformers `engineArgs.backend` (onnx or torch; api.serve.EMBED_BACKENDS).
    backend: Literal["onnx", "torch"] = "torch"
    # The embedder ModelDeployment's spec.cache where the run's pods mount its claim (a cluster's ingestion
    # RayJob): `source` is then read from the cache's complete entry, checked against these digests, or the run
    # fails naming the ModelDeployment; never downloaded. None: resolved as usual (on one machine a complete
    # entry in the machine's cache folder is still used).
    cache: ModelCache | None = None

    @property
    def identity(self) -> str:
        """What names the embedding model in the collection (stored with every point, hashed with every chunk):
        its weights' source when known, else the ModelDeployment's name. The same on every path (in process,
        over HTTP, through a handle, on Ray Data), so switching between them re-embeds nothing."""
        return self.source.source if self.source is not None else self.model


class LLMConnection(ApiModel):
    model: str
    base_url: str
    parameters: str | None = None  # the model's size ("135M") when known: agent.answerMode auto reads it
    api_key_env: str | None = None
    timeout_seconds: float = 120.0
    # The model's replicas.wakeTimeoutSeconds when it scales to zero (replicas.min 0), else None: a call may
    # wait that long for the first replica on top of timeout_seconds, and past both it is answered 503
    # model_waking with Retry-After.
    wake_timeout_seconds: int | None = None


class RerankerConnection(ApiModel):
    model: str
    base_url: str | None = None  # `.../v1` with `POST /rerank`; None: rerank in this process from `source`
    source: ModelSource | None = None


class StoreConnection(ApiModel):
    """One of `url` (a Qdrant server), `actor` (the named Ray actor that owns an embedded folder: this
    process must have joined that Ray first) or `path` (an embedded folder this process owns)."""

    collection: str
    url: str | None = None
    path: str | None = None
    actor: str | None = None
    api_key_env: str | None = None


class ThreadsConnection(ApiModel):
    postgres_dsn_env: str | None = None  # PostgreSQL when this variable is set and non-empty
    sqlite_path: str | None = None  # else SQLite here; neither: memory (one replica's)
    pool_size: int = 8  # PostgreSQL connections per replica


class ResponseStoreConnection(ApiModel):
    """Where `/v1/responses` stores responses, shared by every replica (raylight_pipelines.web.response_store)."""

    postgres_dsn_env: str | None = None  # PostgreSQL when this variable is set and non-empty
    sqlite_path: str | None = None  # else SQLite here; neither: memory (one replica's)
    retention_seconds: int = 30 * 24 * 3600  # a stored response is kept this long (OpenAI: 30 days)


class OidcConnection(ApiModel):
    issuer: str
    audience: str
    algorithms: list[str]
    claims: OidcClaims
    jwks_env: str | None = None  # the JWKS JSON is in this variable (read once); None: see jwks_file
    jwks_file: str | None = None  # the JWKS JSON is in this file (a mounted Secret, re-read on change)
    jwks_cache_seconds: int = 300  # a fetched JWKS is used at most this long (a removed key's bound)


class AuthConnection(ApiModel):
    """A shared bearer token (in `$token_env`) or verified OIDC identities; exactly one."""

    token_env: str | None = None
    oidc: OidcConnection | None = None


class McpServerConnection(ApiModel):
    """One of `spec.agent.mcpServers`: where it is, which tools, and the NAMES of the variables holding its
    header values (never the values)."""

    name: str
    url: str
    tools: list[str]
    timeout_seconds: float = 10.0
    header_envs: dict[str, str] = Field(default_factory=dict)  # header name -> environment variable


def mcp_header_env(server: int, header: int) -> str:
    """The environment variable that carries header `header` of MCP server `server` (indexes in the spec)."""
    return f"RAYLIGHT_MCP_{server}_HEADER_{header}"


class Connections(ApiModel):
    pipeline: str  # retrieval filters on it, so pipelines may share a collection
    embedder: EmbedderConnection
    store: StoreConnection
    llm: LLMConnection | None = None  # None: the Pipeline serves search only
    reranker: RerankerConnection | None = None  # spec.retrieval.rerank
    threads: ThreadsConnection = Field(default_factory=ThreadsConnection)
    auth: AuthConnection | None = None
    mcp_servers: list[McpServerConnection] = Field(default_factory=list)  # spec.agent.mcpServers


class CollectionPlan(ApiModel):
    """What the Qdrant collection must look like (`raylight.qdrant_layout` creates it)."""

    collection: str
    dimensions: int | None = None  # None: ask the embedder at run time
    distance: Literal["Cosine"] = "Cosine"
    sparse: bool = True  # a BM25 sparse vector beside the dense one (hybrid retrieval)
    payload_indexes: list[str] = Field(default_factory=list)


class RayDataOptions(ApiModel):
    """How an ingestion run uses a Ray cluster: read, parse, chunk and upsert as Ray Data tasks (each asking
    `task_cpus`), embedding in `map_batches` over an actor pool (`concurrency` actors, each with `num_cpus`
    and `num_gpus`)."""

    concurrency: int | tuple[int, int] = 1  # actors, or (min, max) for an autoscaling pool
    num_cpus: float = 1.0  # per actor
    num_gpus: float = 0.0  # per actor
    batch_size: int = 64  # passages per batch
    task_cpus: float = 0.25  # per read/parse/chunk and per upsert task
    documents_per_task: int = 16  # documents one read/parse/chunk task takes


class IngestionPlan(ApiModel):
    """Everything one ingestion run needs, as one document: on a cluster the operator mounts it into the
    run's pod (`names.PLAN_MOUNT_DIR`); `raylight up` and `raylight ingest` build the same one in process.
    The run writes its summary (counts, what it skipped and why) to `report_path` when set."""

    pipeline: str
    namespace: str = "default"
    spec: PipelineSpec
    embedder: EmbedderConnection
    store: StoreConnection
    collection: CollectionPlan
    report_path: str | None = None
    ray_data: RayDataOptions | None = None  # embed on Ray Data when the run is connected to a Ray cluster
