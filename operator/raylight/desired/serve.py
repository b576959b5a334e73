"""ModelDeployment and Pipeline -> Ray Serve application configs (pure).

The same config is embedded in a KubeRay RayService on a cluster and deployed onto a local Ray by
`raylight up`; only the route prefix and the connections differ. The project's own applications carry
typed args (`raylight.api.serve`) and no deployment options: their builders bind the options the
deployment owns (`model_deployment_options`, `agent_deployment_options`), computed once.
"""

from __future__ import annotations

from typing import Any

from raylight.api.connections import Connections
from raylight.api.names import (
    AGENT_APP_IMPORT,
    CACHE_MOUNT_ROOT,
    FRONT_APP_NAME,
    GATEWAY_IMPORT,
    HEAD_RESOURCE,
    MODEL_APP_IMPORT,
    VLLM_APP_IMPORT,
    cache_entry,
    local_path,
)
from raylight.api.serve import AgentAppArgs, GatewayArgs, ModelAppArgs, replica_options
from raylight.api.types import ModelDeployment, ModelDeploymentSpec, Pipeline

# ray.serve.llm's prefix-aware router, by import path. Its public name, ray.serve.llm.request_router.
# PrefixCacheAffinityRouter, is an empty subclass of this class but imports vLLM on import, so an LLMConfig naming
# it cannot even be validated where vLLM is absent (the operator, CI); Ray is pinned (constraints.txt), and
# tests/unit/serving/test_serving_app_config.py validates the config with Ray's own LLMConfig.
PREFIX_CACHE_AFFINITY_ROUTER = (
    "ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router.PrefixCacheAffinityRouter")


def _vllm_llm_config(name: str, spec: ModelDeploymentSpec) -> dict[str, Any]:
    """A `ray.serve.llm.LLMConfig` (as a dict): ray.serve.llm derives actor resources from the engine's
    placement, so only the replica settings go into `deployment_config`."""
    assert spec.model is not None
    source = spec.model.source
    scheme, _, rest = source.partition("://")
    # ray.serve.llm: a Hub id, a local path, or a cloud mirror that it downloads from (s3://).
    model_source: str | dict[str, str] = rest if scheme == "hf" else local_path(source) or source
    if scheme == "s3":
        model_source = {"bucket_uri": source}
    cached = spec.cache is not None and spec.model.revision is not None
    if cached:  # the prefetched entry on the read-only cache volume: vLLM downloads nothing
        model_source = f"{CACHE_MOUNT_ROOT}/{cache_entry(source, spec.model.revision or '')}"
    engine = {**spec.engine_args}
    if spec.resources.gpus > 1:
        engine.setdefault("tensor_parallel_size", spec.resources.gpus)
    if spec.model.revision and not cached:
        engine.setdefault("revision", spec.model.revision)
    deployment = replica_options(spec.replicas)
    if spec.router == "PrefixCacheAffinity":
        deployment["request_router_config"] = {"request_router_class": PREFIX_CACHE_AFFINITY_ROUTER}
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": name, "model_source": model_source},
        "engine_kwargs": engine,
        "deployment_config": deployment,
    }
    if spec.resources.accelerator_type:
        config["accelerator_type"] = spec.resources.accelerator_type
    if spec.adapters:
        config["lora_config"] = {
            "dynamic_lora_loading_path": spec.adapters[0].root,  # the API requires one root for all
            "max_num_adapters_per_replica": len(spec.adapters),
        }
    return config


def get_model_application(md: ModelDeployment, route_prefix: str | None = "/") -> dict[str, Any]:
    """The Serve application config for a ModelDeployment (spec already validated)."""
    name = md.metadata.name
    spec = md.spec.resolved()
    if spec.runtime == "vllm":
        args: dict[str, Any] = {"llm_configs": [_vllm_llm_config(name, spec)]}
        if spec.replicas.min == 0:  # the OpenAI ingress stays on the head, so the GPU workers can all go
            args["ingress_deployment_config"] = {
                "ray_actor_options": {"num_cpus": 0, "resources": {HEAD_RESOURCE: 0.01}}}
        return {"name": name, "route_prefix": route_prefix, "import_path": VLLM_APP_IMPORT, "args": args}
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": MODEL_APP_IMPORT,
        "args": ModelAppArgs(name=name, spec=spec).to_wire(),
    }


def get_agent_application(pipeline: Pipeline, connections: Connections,
                          route_prefix: str | None = "/") -> dict[str, Any]:
    """The Serve application for a Pipeline's agent; `connections` says where its models and store are."""
    args = AgentAppArgs(name=pipeline.metadata.name, spec=pipeline.spec, connections=connections)
    return {
        "name": pipeline.metadata.name,
        "route_prefix": route_prefix,
        "import_path": AGENT_APP_IMPORT,
        "args": args.to_wire(),
    }


def get_front_application(app: dict[str, Any], args: GatewayArgs) -> list[dict[str, Any]]:
    """A cluster's model or agent application that scales to zero, behind its front: the gateway of
    `raylight up` (`args`), at the app's route, on the head (`on_head`), holding a request while the app has no
    replica and answering 503 `model_waking` with Retry-After past its `wakeTimeoutSeconds`. The app keeps no
    route of its own (the front reaches it by handle). Without a front, Serve's proxy holds such a request with
    no limit: no Raylight code runs on that path while the app sleeps."""
    front = {"name": FRONT_APP_NAME, "route_prefix": app["route_prefix"], "import_path": GATEWAY_IMPORT,
             "args": args.model_copy(update={"on_head": True}).to_wire()}
    return [{**app, "route_prefix": None}, front]
