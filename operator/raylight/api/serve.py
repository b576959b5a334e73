"""The Serve side of the contract: the args each Serve application builder reads, and the deployment
options each deployment owns (the `ray.serve.llm` way: computed once from the typed config, here, and bound
by the data plane's builder; the Serve config carries the args and nothing computed twice).

    serveConfigV2:
      applications:
      - name: minilm
        import_path: raylight_pipelines.serving.app:build_app    # names.MODEL_APP_IMPORT
        args: ModelAppArgs (camelCase)                           # build_app(args) -> ModelServer
      - name: handbook
        import_path: raylight_agents.serve:build_app             # names.AGENT_APP_IMPORT
        args: AgentAppArgs (camelCase)                           # build_app(args) -> AgentServer
      - name: raylight-gateway (one machine) | front (a cluster app at replicas.min 0)
        import_path: raylight.local.gateway:build_app            # names.GATEWAY_IMPORT
        args: GatewayArgs (camelCase)                            # build_app(args) -> Gateway
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from raylight.api.connections import Connections, ResponseStoreConnection
from raylight.api.names import HEAD_RESOURCE
from raylight.api.quantity import quantity_bytes
from raylight.api.types import ApiModel, ModelDeploymentSpec, PipelineSpec, Replicas

# The sentence-transformers runtime's `engineArgs.backend` for `task: embed` (SentenceTransformer's own term):
# onnx runs the exported transformer on ONNX Runtime (same vectors, about 3x faster per query on CPUs and
# steady on busy ones), torch runs it on PyTorch.
EMBED_BACKENDS = ("onnx", "torch")
DEFAULT_EMBED_BACKEND = "onnx"


def embed_backend(engine_args: Mapping[str, Any]) -> Literal["onnx", "torch"]:
    """The backend an embedder's `engineArgs` ask for (onnx unless they say torch; admission refuses others)."""
    return "torch" if engine_args.get("backend", DEFAULT_EMBED_BACKEND) == "torch" else "onnx"

AGENT_CPUS = 1.0  # per agent replica: retrieval calls and the graph; the models run elsewhere


class ModelAppArgs(ApiModel):
    """Args of `raylight_pipelines.serving.app:build_app`: one ModelDeployment on a CPU runtime or embedder."""

    name: str  # the ModelDeployment's name: the `model` clients ask for
    spec: ModelDeploymentSpec  # resolved (ModelDeploymentSpec.resolved): no preset, runtime set
    responses: ResponseStoreConnection | None = None  # the /v1/responses store; None: this replica's memory


class AgentAppArgs(ApiModel):
    """Args of `raylight_agents.serve:build_app`: one Pipeline's agent."""

    name: str  # the Pipeline's name
    spec: PipelineSpec
    connections: Connections


class GatewayArgs(ApiModel):
    """Args of `raylight.local.gateway:build_app`: the gateway in front of model and agent applications that
    have no HTTP route of their own. On one machine it fronts every app; on a cluster it fronts the one model or
    agent of a RayService that scales to zero, so that a request held while it has no replica gets its deadline."""

    models: dict[str, str] = {}  # ModelDeployment name (its Serve app) -> task (chat | embed | rerank)
    pipelines: list[str] = []  # Pipeline names whose agents it routes to
    protected: list[str] = []  # pipelines with agent.auth: never named to a caller without the token
    max_request_bytes: int = 0  # the largest body any agent behind it accepts (models: their own limit)
    adapters: dict[str, list[str]] = {}  # model -> the LoRA adapters it serves by name
    wake: dict[str, int] = {}  # model or pipeline with replicas.min 0 -> replicas.wakeTimeoutSeconds
    apps: dict[str, str] = {}  # model or pipeline -> its Serve application, where that is not its own name
    on_head: bool = False  # place the replica on the head (names.HEAD_RESOURCE), so no worker pod stays for it


def replica_options(replicas: Replicas) -> dict[str, Any]:
    """Serve's replica settings: a fixed `num_replicas`, or an `autoscaling_config` when min < max."""
    options: dict[str, Any] = {
        "max_ongoing_requests": replicas.max_ongoing_requests or 2 * replicas.target_ongoing_requests,
    }
    if replicas.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": replicas.min,
            "max_replicas": replicas.max,
            "initial_replicas": max(replicas.min, 1),
            "target_ongoing_requests": replicas.target_ongoing_requests,
        }
        if replicas.min == 0:
            options["autoscaling_config"]["downscale_to_zero_delay_s"] = replicas.idle_seconds
    else:
        options["num_replicas"] = replicas.min
    return options


def actor_options(cpus: float, gpus: float = 0, memory_bytes: int | None = None,
                  accelerator_type: str | None = None) -> dict[str, Any]:
    """`ray_actor_options` of one replica: what Ray must find free on one node to place it."""
    actor: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
    if memory_bytes:
        actor["memory"] = memory_bytes
    if accelerator_type:
        actor["accelerator_type"] = accelerator_type
    return actor


def model_deployment_options(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """`ModelServer`'s options for a resolved spec: replicas and per-replica resources."""
    res = spec.resources
    return {**replica_options(spec.replicas),
            "ray_actor_options": actor_options(res.cpus, res.gpus, quantity_bytes(res.memory), res.accelerator_type)}


def gateway_deployment_options(args: GatewayArgs) -> dict[str, Any]:
    """`Gateway`'s options: no CPU; `on_head`: a sliver of the head's `raylight-head` resource (the head offers it
    whenever its RayService scales to zero), so no worker pod stays up for the gateway."""
    actor: dict[str, Any] = {"num_cpus": 0}
    if args.on_head:
        actor["resources"] = {HEAD_RESOURCE: 0.01}
    return {"num_replicas": 1, "ray_actor_options": actor}


def agent_deployment_options(spec: PipelineSpec) -> dict[str, Any]:
    """`AgentServer`'s options: the agent's replicas, one CPU each."""
    return {**replica_options(spec.agent.replicas), "ray_actor_options": actor_options(AGENT_CPUS)}
