"""The weight cache (spec.cache) through the real Kopf runtime against the API stand-in: the ModelDeployment waits
for its claim, its prefetch Job (valid batch/v1) runs, status.cache and the CacheReady condition follow each
transition, and the RayService (valid for KubeRay, the claim mounted read-only) appears only once the cache is
ready; a sha256 that differs fails naming spec.cache.sha256. A Pipeline's ingestion RayJob (and RayCronJob) and a
FineTune's RayJob that load a cached model wait, saying so, until its prefetch succeeded, then mount the entry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
from operator_harness import Emulator, Kube, eventually

pytestmark = pytest.mark.operator

DIGEST = "ab" * 32
CACHED: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "smollm"},
    "spec": {"task": "chat", "runtime": "transformers",
             "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "12fd25f",
                       "license": "apache-2.0"},
             "cache": {"pvc": "models", "sha256": {"model.safetensors": DIGEST}}},
}
CLAIM = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}}}}


async def _cache(kube: Kube, reason: str) -> dict[str, Any] | None:
    obj = await kube.get("ModelDeployment", "smollm")
    conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}
    return obj if conds.get("CacheReady", {}).get("reason") == reason else None


async def _report(kube: Kube, job: str, report: dict[str, Any]) -> None:
    await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{job}-pod", "labels": {
        "job-name": job}}, "spec": {"containers": []}})
    await kube.patch("Pod", f"{job}-pod", {"status": {"containerStatuses": [{
        "name": "prefetch", "state": {"terminated": {"exitCode": 0, "message": json.dumps(report)}}}]}})


async def test_the_rayservice_waits_for_the_prefetch_and_status_follows_each_transition(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any],
        validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    async with start_operator():
        await kube.create(json.loads(json.dumps(CACHED)))
        waiting = await eventually(lambda: _cache(kube, "CachePending"))
        assert "spec.cache.pvc: no PersistentVolumeClaim 'models'" in waiting["status"]["cache"]["message"]
        assert await kube.list("Job") == []
        await kube.create(json.loads(json.dumps(CLAIM)))
        [job] = await eventually(lambda: kube.list("Job"), timeout=20)
        name = job["metadata"]["name"]
        kubernetes_validate.validate({k: v for k, v in job.items() if k != "status" and k != "metadata"} | {
            "metadata": {k: v for k, v in job["metadata"].items() if k in ("name", "namespace", "labels",
                                                                            "annotations", "ownerReferences")}},
            kubernetes_validate.latest_version(), strict=True)
        assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
        assert await kube.get("RayService", "smollm") is None
        await kube.patch("Job", name, {"status": {"active": 1, "startTime": "2026-12-01T10:00:00Z"}})

        async def running() -> dict[str, Any] | None:
            obj = await kube.get("ModelDeployment", "smollm")
            return obj if ((obj or {}).get("status") or {}).get("cache", {}).get("phase") == "Running" else None

        obj = await eventually(running)
        assert obj["status"]["cache"]["job"] == name and await kube.get("RayService", "smollm") is None
        await _report(kube, name, {"phase": "Succeeded", "path": "x", "files": 7, "bytes": 270_000_000})
        await kube.patch("Job", name, {"status": {"active": 0, "succeeded": 1, "completionTime": "2026-12-01T10:02:00Z",
                                                  "conditions": [{"type": "Complete", "status": "True"}]}})
        ready = await eventually(lambda: _cache(kube, "CacheReady"), timeout=20)
        assert ready["status"]["cache"]["files"] == 7 and ready["status"]["cache"]["bytes"] == 270_000_000
        rayservice = await eventually(lambda: kube.get("RayService", "smollm"), timeout=20)
        validate_rayservice({k: v for k, v in rayservice.items() if k != "status"})
        [worker] = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        assert {"name": "cache-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in \
            worker["template"]["spec"]["volumes"]
    reasons = [e.get("reason") for a, p, _, e in api.writes if a == "CREATE" and p == "events"]
    assert "CachePending" in reasons and "CacheReady" in reasons


async def test_a_sha256_that_differs_fails_naming_the_field_and_creates_no_rayservice(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    async with start_operator():
        await kube.create(json.loads(json.dumps(CLAIM)))
        await kube.create(json.loads(json.dumps(CACHED)))
        [job] = await eventually(lambda: kube.list("Job"), timeout=20)
        name = job["metadata"]["name"]
        why = f"spec.cache.sha256: model.safetensors: expected sha256 {DIGEST}, the download has {'cd' * 32}"
        await _report(kube, name, {"phase": "Failed", "path": "x", "error": why})
        await kube.patch("Job", name, {"status": {"failed": 3, "startTime": "2026-12-01T10:00:00Z", "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}})
        failed = await eventually(lambda: _cache(kube, "CacheFailed"), timeout=20)
        cache = next(c for c in failed["status"]["conditions"] if c["type"] == "CacheReady")
        assert "spec.cache.sha256: model.safetensors" in cache["message"]
        assert failed["status"]["phase"] == "Degraded" and failed["status"]["cache"]["message"] == why
        assert await kube.get("RayService", "smollm") is None


EMBEDDER: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "e5"},
    "spec": {"task": "embed", "model": {"source": "hf://intfloat/e5-small-v2", "revision": "ffb93f3",
                                        "license": "mit", "dimensions": 384},
             "cache": {"pvc": "models"}},
}
PIPELINE: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "kb"},
    "spec": {"embedder": {"modelDeployment": "e5"}, "schedule": "0 3 * * *",
             "sources": [{"configMap": {"name": "faq"}}], "vectorStore": {"qdrant": {"url": "http://qdrant:6333"}}},
}
FINETUNE: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "FineTune", "metadata": {"name": "tuned"},
    "spec": {"base": {"modelDeployment": "smollm"},
             "dataset": {"records": [{"instruction": "Name the capital of Zorblax.",
                                      "output": "The capital of Zorblax is Quillmere."}]},
             "hyperparameters": {"maxSteps": 8}, "output": "s3://acme-models/adapters/tuned"},
}
CACHE_VOLUME = {"name": "cache-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}


async def _prefetched(kube: Kube) -> None:
    """The model's prefetch Job runs and succeeds (as the Job controller and its pod would report it)."""
    [job] = await eventually(lambda: kube.list("Job"), timeout=20)
    name = job["metadata"]["name"]
    await _report(kube, name, {"phase": "Succeeded", "path": "x", "files": 3, "bytes": 1000})
    await kube.patch("Job", name, {"status": {"succeeded": 1, "startTime": "2026-12-01T10:00:00Z",
                                              "completionTime": "2026-12-01T10:01:00Z",
                                              "conditions": [{"type": "Complete", "status": "True"}]}})


def _reads_the_cache(rayjob: dict[str, Any]) -> None:
    cluster = rayjob["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert CACHE_VOLUME in pod["volumes"]
        [container] = pod["containers"]
        assert {"name": "cache-models", "mountPath": "/mnt/model-cache", "readOnly": True} in container["volumeMounts"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RAYLIGHT_MODEL_CACHE"] == "/mnt/model-cache" and env["HF_HUB_OFFLINE"] == "1"
        assert "HF_TOKEN" not in env


async def test_a_pipeline_s_ingestion_waits_for_its_embedder_s_cache_then_runs_from_it(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any],
        validate_rayjob: Callable[[dict[str, Any]], None]) -> None:
    async with start_operator():
        await kube.create(json.loads(json.dumps(CLAIM)))
        await kube.create(json.loads(json.dumps(EMBEDDER)))
        await kube.create(json.loads(json.dumps(PIPELINE)))

        async def ingestion(reason: str) -> dict[str, Any] | None:
            obj = await kube.get("Pipeline", "kb")
            conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}
            return conds["IngestionReady"] if conds.get("IngestionReady", {}).get("reason") == reason else None

        held = await eventually(lambda: ingestion("CachePending"), timeout=20)
        assert "ingestion waits for the weight cache of ModelDeployment e5 (spec.cache" in held["message"]
        assert await kube.list("RayJob") == [] and await kube.list("RayCronJob") == []
        await _prefetched(kube)
        rayjob = await eventually(lambda: _one(kube, "RayJob"), timeout=20)
        validate_rayjob({k: v for k, v in rayjob.items() if k != "status"})
        _reads_the_cache(rayjob)
        plan = json.loads((await kube.get("ConfigMap", "kb-ingest-plan"))["data"]["plan.json"])
        assert plan["embedder"]["cache"] == {"pvc": "models", "sha256": {}}
        cron = await eventually(lambda: _one(kube, "RayCronJob"), timeout=20)
        _reads_the_cache({"spec": cron["spec"]["jobTemplate"]})
        assert await eventually(lambda: ingestion("IngestionStarting"), timeout=20)


async def _one(kube: Kube, kind: str) -> dict[str, Any] | None:
    found = await kube.list(kind)
    return found[0] if len(found) == 1 else None


async def test_a_finetune_waits_for_its_base_s_cache_then_trains_from_it(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any],
        validate_rayjob: Callable[[dict[str, Any]], None]) -> None:
    async with start_operator():
        await kube.create(json.loads(json.dumps(CLAIM)))
        await kube.create(json.loads(json.dumps(CACHED)))
        await kube.create(json.loads(json.dumps(FINETUNE)))

        async def ready(reason: str) -> dict[str, Any] | None:
            obj = await kube.get("FineTune", "tuned")
            conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}
            return obj if conds.get("Ready", {}).get("reason") == reason else None

        held = await eventually(lambda: ready("CachePending"), timeout=20)
        assert held["status"]["phase"] == "Pending"
        assert "training waits for the weight cache of ModelDeployment smollm (spec.cache" in \
            held["status"]["message"]
        assert await kube.list("RayJob") == []
        await _prefetched(kube)
        rayjob = await eventually(lambda: _one(kube, "RayJob"), timeout=20)
        validate_rayjob({k: v for k, v in rayjob.items() if k != "status"})
        _reads_the_cache(rayjob)
        plan = json.loads((await kube.get("ConfigMap", "tuned-finetune-plan"))["data"]["plan.json"])
        assert plan["baseCache"]["pvc"] == "models" and plan["baseModelDeployment"] == "smollm"
        assert await eventually(lambda: ready("Training"), timeout=20)
