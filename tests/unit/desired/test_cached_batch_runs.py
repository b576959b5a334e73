"""Batch runs that load a cached model (spec.cache): a Pipeline's ingestion RayJob and RayCronJob whose embedder,
and a FineTune's RayJob whose base ModelDeployment, has a weight cache mount its claim read-only at the cache
root on every Ray pod (head: the driver; workers: the embedding actors / Ray Train), tell the run where the
cache is, keep the hub offline and carry no hub token; the plan tells the run to read the entry or fail. The
objects stay valid for KubeRay, with nothing pruned."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from raylight.api.connections import IngestionPlan
from raylight.api.names import CACHE_ENV, CACHE_MOUNT_ROOT, PLAN_FILE
from raylight.api.training import FineTunePlan
from raylight.cli import main as raylight

Check = Callable[[dict[str, Any]], None]
DIGEST = "0f" * 32
SECRET = {"name": "hf-token", "key": "token"}
CACHE = {"pvc": "model-cache", "sha256": {"model.safetensors": DIGEST}}
EMBEDDER = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "e5"},
            "spec": {"task": "embed", "model": {"source": "hf://intfloat/e5-small-v2", "revision": "ffb93f3",
                                                "license": "mit", "dimensions": 384, "tokenSecret": SECRET},
                     "cache": CACHE}}
PIPELINE = {"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "kb"},
            "spec": {"embedder": {"modelDeployment": "e5"}, "schedule": "0 3 * * *",
                     "sources": [{"configMap": {"name": "faq"}}, {"pvc": {"claim": "docs", "path": "/kb"}}],
                     "vectorStore": {"qdrant": {"url": "http://qdrant:6333"}}}}
BASE = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "llama"},
        "spec": {"task": "chat", "model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct", "revision": "0e9e39f",
                                           "license": "llama3.1", "licenseAccepted": True, "parameters": "8.0B",
                                           "tokenSecret": SECRET},
                 "cache": CACHE, "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"}}}
FINETUNE = {"apiVersion": "raylight.io/v1alpha1", "kind": "FineTune", "metadata": {"name": "tuned"},
            "spec": {"base": {"modelDeployment": "llama"},
                     "dataset": {"records": [{"messages": [{"role": "user", "content": "hi"},
                                                           {"role": "assistant", "content": "hello"}]}] * 4},
                     "output": "pvc://adapters/tuned",
                     "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"}}}
VOLUME = {"name": "cache-model-cache", "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": True}}


def render(tmp_path: Path, capsys: pytest.CaptureFixture[str], *docs: dict[str, Any]) -> list[dict[str, Any]]:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert raylight(["render", "-f", str(path)]) == 0, capsys.readouterr().err
    return [o for o in yaml.safe_load_all(capsys.readouterr().out) if o]


def one(objects: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and component in (
        None, o["metadata"]["labels"].get("app.kubernetes.io/component"))]
    return found


def ray_pods(cluster: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster["workerGroupSpecs"]:
        yield group["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def assert_reads_the_cache(cluster: dict[str, Any]) -> None:
    pods = list(ray_pods(cluster))
    assert len(pods) == 2  # the head (driver) and the worker group (embedding actors / Ray Train workers)
    for pod in pods:
        assert VOLUME in pod["volumes"]
        [container] = pod["containers"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == VOLUME["name"]]
        assert mount == {"name": VOLUME["name"], "mountPath": CACHE_MOUNT_ROOT, "readOnly": True}
        env = env_of(container)
        assert env[CACHE_ENV] == CACHE_MOUNT_ROOT and env["HF_HUB_OFFLINE"] == "1"
        assert "HF_TOKEN" not in env  # it downloads nothing


def test_an_ingestion_run_of_a_cached_embedder_mounts_the_entry_read_only_and_downloads_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], validate_rayjob: Check,
        validate_raycronjob: Check) -> None:
    objects = render(tmp_path, capsys, EMBEDDER, PIPELINE)
    rayjob, cron = one(objects, "RayJob"), one(objects, "RayCronJob")
    validate_rayjob(rayjob)
    validate_raycronjob(cron)
    assert_reads_the_cache(rayjob["spec"]["rayClusterSpec"])
    assert_reads_the_cache(cron["spec"]["jobTemplate"]["rayClusterSpec"])
    submitter = rayjob["spec"]["submitterPodTemplate"]["spec"]
    assert "volumes" not in submitter and "HF_TOKEN" not in env_of(submitter["containers"][0])
    config_map = one(objects, "ConfigMap", "ingestion")
    plan = IngestionPlan.model_validate_json(config_map["data"][PLAN_FILE])
    assert plan.embedder.cache is not None and plan.embedder.cache.to_wire() == CACHE
    assert plan.embedder.source is not None and plan.embedder.source.revision == "ffb93f3"
    # only the prefetch Job holds the token, and only by reference
    assert "HF_TOKEN" not in yaml.safe_dump([rayjob, cron, config_map])
    job = one(objects, "Job")
    assert env_of(job["spec"]["template"]["spec"]["containers"][0])["HF_TOKEN"] == {"secretKeyRef": SECRET}


def test_a_finetune_of_a_cached_base_mounts_the_entry_read_only_and_downloads_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], validate_rayjob: Check) -> None:
    objects = render(tmp_path, capsys, BASE, FINETUNE)
    rayjob = one(objects, "RayJob", "training")
    validate_rayjob(rayjob)
    assert_reads_the_cache(rayjob["spec"]["rayClusterSpec"])
    for pod in ray_pods(rayjob["spec"]["rayClusterSpec"]):  # the output claim beside it, read-write
        assert {"name": "pvc-0", "persistentVolumeClaim": {"claimName": "adapters", "readOnly": False}} \
            in pod["volumes"]
    plan = FineTunePlan.model_validate_json(one(objects, "ConfigMap", "training")["data"][PLAN_FILE])
    assert plan.base_cache is not None and plan.base_cache.to_wire() == CACHE
    assert plan.base_model_deployment == "llama" and plan.base.revision == "0e9e39f"
    assert "HF_TOKEN" not in yaml.safe_dump(rayjob)


def test_runs_of_models_without_a_cache_are_unchanged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], validate_rayjob: Check) -> None:
    plain_embedder = {**EMBEDDER, "spec": {k: v for k, v in EMBEDDER["spec"].items() if k != "cache"}}
    objects = render(tmp_path, capsys, plain_embedder, PIPELINE)
    rayjob = one(objects, "RayJob")
    validate_rayjob(rayjob)
    for pod in ray_pods(rayjob["spec"]["rayClusterSpec"]):
        assert VOLUME not in pod["volumes"]
        env = env_of(pod["containers"][0])
        assert CACHE_ENV not in env and env["HF_HUB_OFFLINE"] == "0" and env["HF_TOKEN"] == {"secretKeyRef": SECRET}
    plan = IngestionPlan.model_validate_json(one(objects, "ConfigMap", "ingestion")["data"][PLAN_FILE])
    assert plan.embedder.cache is None and "cache" not in plan.embedder.to_wire()  # the checksum stays the same
    own = {**FINETUNE, "spec": {**FINETUNE["spec"], "base": {"model": BASE["spec"]["model"]}}}
    rayjob = one(render(tmp_path, capsys, BASE, own), "RayJob", "training")
    for pod in ray_pods(rayjob["spec"]["rayClusterSpec"]):  # its own base.model: no ModelDeployment's cache
        assert VOLUME not in pod["volumes"] and env_of(pod["containers"][0])["HF_TOKEN"] == {"secretKeyRef": SECRET}
