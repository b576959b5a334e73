"""Scale to zero (replicas.min 0): Serve scales the model's last replica away after replicas.idleSeconds, the
RayCluster autoscaler removes the idle worker pods after the same time, vLLM's OpenAI ingress is pinned to the
head (so nothing keeps a GPU worker alive: kuberay#4445), and status says ScaledToZero, then Waking when a request
arrives, then Serving."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from raylight.api.manifests import parse_document
from raylight.api.names import HEAD_RESOURCE
from raylight.api.serve import replica_options
from raylight.api.types import ModelDeployment, Replicas
from raylight.desired.kubernetes import get_model_rayservice
from raylight.operator.status import rayservice_health
from raylight.settings import Settings
from test_operator_reconcile import add

GPU = {"task": "chat", "preset": "qwen2.5-7b-instruct",
       "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"},
       "replicas": {"min": 0, "max": 2, "idleSeconds": 600}}


def model(spec: dict[str, Any]) -> ModelDeployment:
    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "m"}, "spec": spec}
    md, problems = parse_document(doc, "m.yaml")
    assert isinstance(md, ModelDeployment), problems
    return md


def test_nothing_but_the_head_outlives_the_idle_period(validate_rayservice) -> None:
    rayservice = get_model_rayservice(model(GPU), "ns", Settings())
    validate_rayservice(rayservice)
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"] == {"idleTimeoutSeconds": 600}
    assert cluster["workerGroupSpecs"][0]["minReplicas"] == 0
    assert cluster["headGroupSpec"]["resources"] == {HEAD_RESOURCE: "1"}
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    autoscaling = app["args"]["llm_configs"][0]["deployment_config"]["autoscaling_config"]
    assert autoscaling["min_replicas"] == 0 and autoscaling["downscale_to_zero_delay_s"] == 600
    ingress = app["args"]["ingress_deployment_config"]["ray_actor_options"]
    assert ingress["num_cpus"] == 0 and ingress["resources"] == {HEAD_RESOURCE: 0.01}


def test_a_model_that_keeps_a_replica_pins_nothing_to_the_head(validate_rayservice) -> None:
    rayservice = get_model_rayservice(model({**GPU, "replicas": {"min": 1, "max": 2}}), "ns", Settings())
    validate_rayservice(rayservice)
    assert "autoscalerOptions" not in rayservice["spec"]["rayClusterConfig"]
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    assert "ingress_deployment_config" not in app["args"]


def test_cpu_runtimes_scale_their_one_deployment_to_zero_after_the_idle_period() -> None:
    options = replica_options(Replicas(min=0, max=1, idle_seconds=120))
    assert options["autoscaling_config"]["min_replicas"] == 0
    assert options["autoscaling_config"]["downscale_to_zero_delay_s"] == 120


def running(endpoints: int, deployment_status: str = "HEALTHY") -> dict[str, Any]:
    ready = "True" if endpoints else "False"
    return {"metadata": {"name": "m", "generation": 1}, "status": {
        "observedGeneration": 1, "numServeEndpoints": endpoints,
        "conditions": [{"type": "Ready", "status": ready, "reason": "Running" if endpoints else "NoServeEndpoints"}],
        "activeServiceStatus": {"rayClusterName": "m-abc", "rayClusterStatus": {"readyWorkerReplicas": endpoints},
                                "applicationStatuses": {"m": {"status": "RUNNING", "deployments": {
                                    "LLMServer": {"status": deployment_status}}}}}}}


def test_status_goes_scaled_to_zero_then_waking_then_serving() -> None:
    idle = rayservice_health(running(0), scale_to_zero=True)
    assert (idle.reason, idle.ready, idle.progressing, idle.degraded) == ("ScaledToZero", True, False, False)
    waking = rayservice_health(running(0, "UPSCALING"), scale_to_zero=True)
    assert (waking.reason, waking.progressing, waking.degraded) == ("Waking", True, False)
    assert rayservice_health(running(1), scale_to_zero=True).reason == "Serving"
    # a model that must keep a replica and has none is not "scaled to zero"
    assert rayservice_health(running(0)).reason != "ScaledToZero"


def test_the_operator_reports_a_scaled_to_zero_model_ready(rec, kube) -> None:
    md = add(kube, "ModelDeployment", "m", GPU)
    rec.model(md)
    kube.objects[("RayService", "ns", "m")]["status"] = copy.deepcopy(running(0)["status"])
    status = rec.model(md).status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert status["phase"] == "Ready" and ready["reason"] == "ScaledToZero"
