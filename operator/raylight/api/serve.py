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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from raylight.api.connections import Connections, ResponseStoreConnection
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


def agent_deployment_options(spec: PipelineSpec) -> dict[str, Any]:
    """`AgentServer`'s options: the agent's replicas, one CPU each."""
    return {**replica_options(spec.agent.replicas), "ray_actor_options": actor_options(AGENT_CPUS)}
