"""ModelDeployment -> Ray Serve application config (pure).

The same config is embedded in a KubeRay RayService on a cluster and deployed onto a local Ray by
`raylight up`; only the route prefix differs.
"""

from __future__ import annotations

from typing import Any

from raylight.api.types import ModelDeployment, ModelDeploymentSpec, ModelSource, Pipeline, Replicas
from raylight.governance.presets import PRESETS

# Import paths of the project's own Serve application builders (the data plane).
MODEL_APP = "raylight_pipelines.serving.app:build_app"
AGENT_APP = "raylight_agents.serve:build_app"
VLLM_APP = "ray.serve.llm:build_openai_app"
# The one deployment that the project's builders create; its options are set from the spec below.
MODEL_DEPLOYMENT = "ModelServer"
AGENT_DEPLOYMENT = "AgentServer"
# Where pvc:// sources are mounted inside Ray worker pods.
PVC_MOUNT_ROOT = "/mnt/pvc"


def resolve_spec(spec: ModelDeploymentSpec) -> ModelDeploymentSpec:
    """Fill model, licence and engine args from the preset; the manifest's own engine args win."""
    if spec.preset is None:
        return spec.model_copy(update={"runtime": spec.resolved_runtime})
    preset = PRESETS[spec.preset]
    model = ModelSource(
        source=preset.source,
        file=preset.file,
        license=preset.license,
        license_accepted=spec.license_accepted,
        parameters=preset.parameters,
        dimensions=preset.dimensions,
    )
    # The preset is now spelled out in `model` (acceptance included): drop it so the resolved spec, which
    # travels in the Serve args, validates again as a ModelDeploymentSpec (exactly one of model/preset).
    resolved = spec.model_copy(
        update={"model": model, "preset": None, "license_accepted": False,
                "engine_args": {**preset.engine_args, **spec.engine_args}}
    )
    runtime = resolved.resolved_runtime
    if runtime == "vllm":  # vLLM parses the model's own tool-call format (the CPU runtimes need no parser)
        resolved = resolved.model_copy(update={"engine_args": {**preset.tool_engine_args, **resolved.engine_args}})
    return resolved.model_copy(update={"runtime": runtime})


def local_path(source: str) -> str | None:
    """Where a pvc:// or file:// source is on a worker's file system; None for remote sources."""
    scheme, _, rest = source.partition("://")
    if scheme == "file":
        return rest
    if scheme == "pvc":
        return f"{PVC_MOUNT_ROOT}/{rest.strip('/')}"
    return None


def autoscaling_config(replicas: Replicas) -> dict[str, Any]:
    return {
        "min_replicas": replicas.min,
        "max_replicas": replicas.max,
        "initial_replicas": max(replicas.min, 1),
        "target_ongoing_requests": replicas.target_ongoing_requests,
    }


def deployment_options(replicas: Replicas, cpus: float, gpus: int, memory_bytes: int | None,
                       accelerator_type: str | None = None) -> dict[str, Any]:
    """Ray Serve deployment options: replicas or autoscaling, and per-replica resources."""
    actor: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
    if memory_bytes:
        actor["memory"] = memory_bytes
    if accelerator_type:
        actor["accelerator_type"] = accelerator_type
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": replicas.max_ongoing_requests or 2 * replicas.target_ongoing_requests,
    }
    if replicas.autoscaling:
        options["autoscaling_config"] = autoscaling_config(replicas)
    else:
        options["num_replicas"] = replicas.min
    return options


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": 10**-3}


def quantity_bytes(quantity: str) -> int:
    number = quantity.rstrip("kKMGTPEim")
    return int(float(number) * _UNITS[quantity[len(number):]])


def _vllm_llm_config(name: str, spec: ModelDeploymentSpec) -> dict[str, Any]:
    assert spec.model is not None
    source = spec.model.source
    scheme, _, rest = source.partition("://")
    # ray.serve.llm: a Hub id, a local path, or a cloud mirror that it downloads from (s3://).
    model_source: str | dict[str, str] = rest if scheme == "hf" else local_path(source) or source
    if scheme == "s3":
        model_source = {"bucket_uri": source}
    engine = {**spec.engine_args}
    if spec.resources.gpus > 1:
        engine.setdefault("tensor_parallel_size", spec.resources.gpus)
    if spec.model.revision:
        engine.setdefault("revision", spec.model.revision)
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": name, "model_source": model_source},
        "engine_kwargs": engine,
        "deployment_config": {
            key: value
            for key, value in deployment_options(spec.replicas, 0, 0, None).items()
            if key != "ray_actor_options"  # ray.serve.llm derives actor resources from the engine's placement
        },
    }
    if spec.resources.accelerator_type:
        config["accelerator_type"] = spec.resources.accelerator_type
    if spec.adapters:
        config["lora_config"] = {
            "dynamic_lora_loading_path": spec.adapters[0].root,  # the API requires one root for all
            "max_num_adapters_per_replica": len(spec.adapters),
        }
    return config


def get_model_application(md: ModelDeployment, route_prefix: str = "/") -> dict[str, Any]:
    """The Serve application config for a ModelDeployment (spec already validated)."""
    name = md.metadata.name
    spec = resolve_spec(md.spec)
    if spec.runtime == "vllm":
        return {
            "name": name,
            "route_prefix": route_prefix,
            "import_path": VLLM_APP,
            "args": {"llm_configs": [_vllm_llm_config(name, spec)]},
        }
    options = deployment_options(
        spec.replicas, spec.resources.cpus, spec.resources.gpus, quantity_bytes(spec.resources.memory),
        spec.resources.accelerator_type,
    )
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": MODEL_APP,
        "args": {"name": name, "spec": spec.to_wire()},
        "deployments": [{"name": MODEL_DEPLOYMENT, **options}],
    }


def get_agent_application(pipeline: Pipeline, connections: dict[str, Any],
                          route_prefix: str = "/") -> dict[str, Any]:
    """The Serve application for a Pipeline's agent; `connections` says where its model and store are."""
    agent = pipeline.spec.agent
    options = deployment_options(agent.replicas, 1, 0, None)
    return {
        "name": pipeline.metadata.name,
        "route_prefix": route_prefix,
        "import_path": AGENT_APP,
        "args": {"name": pipeline.metadata.name, "spec": pipeline.spec.to_wire(), "connections": connections},
        "deployments": [{"name": AGENT_DEPLOYMENT, **options}],
    }
