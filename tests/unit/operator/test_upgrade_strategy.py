"""Upgrades you choose (spec.upgradeStrategy): KubeRay's strategies rendered valid for its CRD, a GPU model
defaulting to Recreate (no second set of GPUs), Recreate carried out by the operator (the old RayService goes,
then the new one starts; a Serve-only change is still patched in place), Incremental refused with the field
named while its GatewayClass is missing, and the strategy in effect in status."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from raylight.api.manifests import parse_document
from raylight.api.types import ModelDeployment
from raylight.desired.kubernetes import get_model_rayservice
from raylight.settings import Settings
from test_operator_reconcile import CHAT, FakeKube, add

GPU = {"task": "chat", "preset": "qwen2.5-7b-instruct",
       "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"}}
INCREMENTAL = {"type": "Incremental", "incremental": {"gatewayClassName": "istio", "stepSizePercent": 20}}


def model(spec: dict[str, Any], name: str = "m") -> ModelDeployment:
    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
           "spec": spec}
    resource, problems = parse_document(doc, "m.yaml")
    assert isinstance(resource, ModelDeployment), problems
    return resource


@pytest.mark.parametrize(("spec", "kuberay"), [
    (GPU, {"type": "None"}),
    (CHAT, {"type": "NewCluster"}),
    ({**GPU, "upgradeStrategy": {"type": "NewCluster"}}, {"type": "NewCluster"}),
    ({**CHAT, "upgradeStrategy": {"type": "Recreate"}}, {"type": "None"}),
    ({**GPU, "upgradeStrategy": INCREMENTAL}, {"type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": {
        "gatewayClassName": "istio", "stepSizePercent": 20, "intervalSeconds": 60, "maxSurgePercent": 25}}),
])
def test_each_strategy_renders_kuberays_and_validates(spec, kuberay, validate_rayservice) -> None:
    rayservice = get_model_rayservice(model(spec), "ns", Settings())
    validate_rayservice(rayservice)
    assert rayservice["spec"]["upgradeStrategy"] == kuberay


@pytest.mark.parametrize(("strategy", "field"), [
    ({"type": "Incremental"}, "spec.upgradeStrategy"),
    ({"type": "NewCluster", "incremental": {"gatewayClassName": "istio"}}, "spec.upgradeStrategy"),
    ({"type": "Incremental", "incremental": {"gatewayClassName": "istio", "stepSizePercent": 0}},
     "spec.upgradeStrategy.incremental.stepSizePercent"),
    ({"type": "BlueGreen"}, "spec.upgradeStrategy.type"),
])
def test_a_strategy_that_cannot_work_is_refused_naming_the_field(strategy, field) -> None:
    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "m"},
           "spec": {**GPU, "upgradeStrategy": strategy}}
    resource, problems = parse_document(doc, "m.yaml")
    assert resource is None and any(p.field.startswith(field) for p in problems), problems


def _rayservice(kube: FakeKube) -> dict[str, Any]:
    live = kube.get("RayService", "ns", "gpu")
    assert live is not None
    return live


def test_recreate_deletes_the_old_cluster_first_and_patches_serve_changes_in_place(rec, kube) -> None:
    md = add(kube, "ModelDeployment", "gpu", GPU)
    first = rec.model(md)
    assert first.status["upgradeStrategy"] == "Recreate"
    assert _rayservice(kube)["spec"]["upgradeStrategy"] == {"type": "None"}

    # a Serve-only change (the autoscaling target) is patched in place: no outage
    kube.writes.clear()
    md = {**md, "metadata": {**md["metadata"], "generation": 2},
          "spec": {**GPU, "replicas": {"min": 1, "max": 1, "targetOngoingRequests": 4}}}
    kube.objects[("ModelDeployment", "ns", "gpu")] = copy.deepcopy(md)
    rec.model(md)
    assert ("delete", "RayService", "gpu") not in kube.writes

    # a cluster change (more memory per worker) deletes the RayService first ...
    kube.writes.clear()
    md = {**md, "metadata": {**md["metadata"], "generation": 3},
          "spec": {**md["spec"], "resources": {**GPU["resources"], "memory": "96Gi"}}}
    result = rec.model(md)
    assert kube.writes == [("delete", "RayService", "gpu")]
    assert any("upgradeStrategy Recreate" in w for w in result.writes)

    # ... while it terminates (KubeRay's finalizer), status says so and nothing else is written ...
    old = add(kube, "RayService", "gpu", {})
    kube.objects[("RayService", "ns", "gpu")]["metadata"]["deletionTimestamp"] = "2026-11-29T10:00:05Z"
    kube.writes.clear()
    waiting = rec.model(md)
    assert kube.writes == [] and old
    recreating = next(c for c in waiting.status["conditions"] if c["type"] == "Progressing")
    assert recreating["reason"] == "Recreating"

    # ... and once it is gone the new one is created with the new cluster
    del kube.objects[("RayService", "ns", "gpu")]
    rec.model(md)
    assert kube.writes == [("create", "RayService", "gpu")]
    worker = _rayservice(kube)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert worker["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "96Gi"


def test_incremental_waits_for_its_gateway_class_naming_the_field(rec, kube) -> None:
    md = add(kube, "ModelDeployment", "gpu", {**GPU, "upgradeStrategy": INCREMENTAL})
    refused = rec.model(md)
    assert kube.get("RayService", "ns", "gpu") is None
    ready = next(c for c in refused.status["conditions"] if c["type"] == "Ready")
    assert "spec.upgradeStrategy.incremental.gatewayClassName" in ready["message"]
    kube.objects[("GatewayClass", "", "istio")] = {"metadata": {"name": "istio"}}
    assert rec.model(md).status["upgradeStrategy"] == "Incremental"
    assert _rayservice(kube)["spec"]["upgradeStrategy"]["type"] == "NewClusterWithIncrementalUpgrade"
