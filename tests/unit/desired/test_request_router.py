"""Prefix-aware routing for vLLM models with more than one replica: ray.serve.llm's PrefixCacheAffinityRouter in
the LLMConfig's deployment_config by default, Serve's default (power of two choices) otherwise or when asked;
refused on runtimes that keep no prefix cache, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from raylight.api.manifests import parse_document
from raylight.api.types import ModelDeployment
from raylight.desired.kubernetes import get_model_rayservice
from raylight.desired.serve import PREFIX_CACHE_AFFINITY_ROUTER
from raylight.settings import Settings

VLLM = {"task": "chat", "preset": "qwen2.5-7b-instruct",
        "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"}}


def deployment_config(spec: dict[str, Any], validate: Any) -> dict[str, Any]:
    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "m"}, "spec": spec}
    md, problems = parse_document(doc, "m.yaml")
    assert isinstance(md, ModelDeployment), problems
    rayservice = get_model_rayservice(md, "ns", Settings())
    validate(rayservice)
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    config: dict[str, Any] = app["args"]["llm_configs"][0]["deployment_config"]
    return config


@pytest.mark.parametrize(("replicas", "router", "prefix_aware"), [
    ({"min": 1, "max": 4}, None, True),
    ({"min": 2, "max": 2}, None, True),
    ({"min": 1, "max": 1}, None, False),
    ({"min": 1, "max": 4}, "PowerOfTwoChoices", False),
    ({"min": 1, "max": 1}, "PrefixCacheAffinity", True),
])
def test_vllm_models_route_by_prefix_when_they_have_several_replicas(replicas, router, prefix_aware,
                                                                      validate_rayservice) -> None:
    spec = {**VLLM, "replicas": replicas, **({"requestRouter": router} if router else {})}
    config = deployment_config(spec, validate_rayservice)
    routed = config.get("request_router_config", {}).get("request_router_class")
    assert routed == (PREFIX_CACHE_AFFINITY_ROUTER if prefix_aware else None)


def test_prefix_routing_on_a_cpu_runtime_is_refused_naming_the_field() -> None:
    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "m"},
           "spec": {"task": "chat", "preset": "smollm2-135m-instruct", "requestRouter": "PrefixCacheAffinity"}}
    md, problems = parse_document(doc, "m.yaml")
    assert md is None and any("requestRouter" in f"{p.field} {p.message}" and "vLLM" in p.message
                              for p in problems), problems
