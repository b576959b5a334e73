"""The weight cache (spec.cache) through the reconciler: the prefetch Job waits for its claim, runs once per pin,
and its outcome is status.cache and the CacheReady condition (CachePending -> CacheReady, or CacheFailed with the
Job's reason naming spec.cache.sha256); the RayService is created only once the cache is ready and then mounts the
claim read-only; a new pin keeps the running RayService until its own prefetch completes."""

from __future__ import annotations

import json
from typing import Any

from raylight.api.names import CACHE_MOUNT_ROOT
from raylight.operator.reconcile import Reconciler
from test_operator_reconcile import FakeKube, add

DIGEST = "ab" * 32
CACHED: dict[str, Any] = {
    "task": "chat", "runtime": "transformers",
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "12fd25f", "license": "apache-2.0"},
    "cache": {"pvc": "models", "sha256": {"model.safetensors": DIGEST}}}


def cond(result: Any, kind: str) -> dict[str, Any]:
    return next(c for c in result.status["conditions"] if c["type"] == kind)


def claim(kube: FakeKube, name: str = "models") -> None:
    kube.objects[("PersistentVolumeClaim", "ns", name)] = {"metadata": {"name": name},
                                                           "spec": {"accessModes": ["ReadWriteMany"]}}


def finish(kube: FakeKube, job: str, ok: bool, report: dict[str, Any]) -> None:
    """What Kubernetes does when the prefetch ends: the Job's condition, and its pod's termination message."""
    kind = "Complete" if ok else "Failed"
    kube.objects[("Job", "ns", job)]["status"] = {
        "startTime": "2026-12-01T10:00:00Z", "conditions": [
            {"type": kind, "status": "True", "reason": "" if ok else "BackoffLimitExceeded",
             "lastTransitionTime": "2026-12-01T10:02:00Z"}],
        **({"completionTime": "2026-12-01T10:02:00Z", "succeeded": 1} if ok else {"failed": 3})}
    kube.objects[("Pod", "ns", f"{job}-x")] = {
        "metadata": {"name": f"{job}-x", "labels": {"job-name": job}, "creationTimestamp": "2026-12-01T10:00:00Z"},
        "status": {"containerStatuses": [{"state": {"terminated": {"message": json.dumps(report)}}}]}}


def jobs(kube: FakeKube) -> list[str]:
    return sorted(n for (k, _, n) in kube.objects if k == "Job")


def test_the_prefetch_waits_for_its_claim_and_names_the_field(rec: Reconciler, kube: FakeKube) -> None:
    md = add(kube, "ModelDeployment", "smollm", CACHED)
    result = rec.model(md)
    cache = cond(result, "CacheReady")
    assert cache["status"] == "False" and cache["reason"] == "CachePending"
    assert "spec.cache.pvc: no PersistentVolumeClaim 'models'" in cache["message"]
    assert result.status["cache"]["phase"] == "Pending" and result.status["phase"] == "Progressing"
    assert jobs(kube) == [] and kube.get("RayService", "ns", "smollm") is None


def test_the_rayservice_starts_only_once_the_cache_is_ready(rec: Reconciler, kube: FakeKube) -> None:
    claim(kube)
    md = add(kube, "ModelDeployment", "smollm", CACHED)
    first = rec.model(md)
    [job] = jobs(kube)
    assert first.status["cache"] == {"phase": "Pending", "job": job, "pvc": "models",
                                     "path": "hf/HuggingFaceTB/SmolLM2-135M-Instruct/12fd25f"}
    assert cond(first, "CacheReady")["reason"] == "CachePending"
    assert ("Normal", "CachePending", f"prefetch Job {job} pulls {first.status['cache']['path']} into claim models") \
        in first.events
    assert kube.get("RayService", "ns", "smollm") is None
    assert "the RayService is created once it completes" in cond(first, "Ready")["message"]

    kube.objects[("Job", "ns", job)]["status"] = {"active": 1, "startTime": "2026-12-01T10:00:00Z"}
    md["status"] = first.status
    running = rec.model(md)
    assert running.status["cache"]["phase"] == "Running" and kube.get("RayService", "ns", "smollm") is None
    assert cond(running, "Progressing")["status"] == "True"

    finish(kube, job, True, {"phase": "Succeeded", "files": 7, "bytes": 270_000_000})
    md["status"] = running.status
    ready = rec.model(md)
    assert ready.status["cache"]["phase"] == "Succeeded"
    assert (ready.status["cache"]["files"], ready.status["cache"]["bytes"]) == (7, 270_000_000)
    assert cond(ready, "CacheReady")["status"] == "True" and cond(ready, "CacheReady")["reason"] == "CacheReady"
    assert any(reason == "CacheReady" for _, reason, _ in ready.events)
    rayservice = kube.get("RayService", "ns", "smollm")
    assert rayservice is not None
    [worker] = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    [mount] = [m for m in worker["template"]["spec"]["containers"][0]["volumeMounts"]
               if m["mountPath"] == CACHE_MOUNT_ROOT]
    assert mount["readOnly"] is True

    del kube.objects[("Job", "ns", job)]  # its TTL expired: status.cache keeps what it recorded, nothing reruns
    md["status"] = ready.status
    later = rec.model(md)
    assert later.status["cache"]["phase"] == "Succeeded" and jobs(kube) == []


def test_a_checksum_mismatch_fails_naming_spec_cache_sha256_and_starts_nothing(
        rec: Reconciler, kube: FakeKube) -> None:
    claim(kube)
    md = add(kube, "ModelDeployment", "smollm", CACHED)
    md["status"] = rec.model(md).status
    [job] = jobs(kube)
    why = (f"spec.cache.sha256: model.safetensors: expected sha256 {DIGEST}, the download of "
           "hf://HuggingFaceTB/SmolLM2-135M-Instruct at revision 12fd25f has " + "cd" * 32)
    finish(kube, job, False, {"phase": "Failed", "path": "x", "error": why})
    failed = rec.model(md)
    cache = cond(failed, "CacheReady")
    assert cache["status"] == "False" and cache["reason"] == "CacheFailed"
    assert "spec.cache.sha256: model.safetensors" in cache["message"]
    assert failed.status["cache"]["message"] == why
    assert failed.status["phase"] == "Degraded" and cond(failed, "Degraded")["reason"] == "CacheFailed"
    assert ("Warning", "CacheFailed", f"prefetch Job {job} failed: {why}") in failed.events
    assert kube.get("RayService", "ns", "smollm") is None

    del kube.objects[("Job", "ns", job)]  # deleted (or expired): the next pass tries again
    md["status"] = failed.status
    rec.model(md)
    assert jobs(kube) == [job]


def test_a_new_pin_keeps_the_running_rayservice_until_its_prefetch_completes(
        rec: Reconciler, kube: FakeKube) -> None:
    claim(kube)
    md = add(kube, "ModelDeployment", "smollm", CACHED)
    md["status"] = rec.model(md).status
    [old] = jobs(kube)
    finish(kube, old, True, {"phase": "Succeeded", "files": 7, "bytes": 1})
    md["status"] = rec.model(md).status
    served = kube.get("RayService", "ns", "smollm")
    assert served is not None

    md["spec"] = {**CACHED, "model": {**CACHED["model"], "revision": "99aa00b"}}
    md["metadata"]["generation"] = 2
    kube.objects[("Job", "ns", old)]["status"] = {"active": 1}  # pretend it still runs: a superseded one is stopped
    pending = rec.model(md)
    [new] = jobs(kube)
    assert new != old and pending.status["cache"]["path"].endswith("/99aa00b")
    assert f"deleted superseded Job {old}" in pending.writes
    assert kube.get("RayService", "ns", "smollm") == served  # untouched: its pods read the old entry
    assert cond(pending, "CacheReady")["reason"] == "CachePending"


def test_a_model_without_spec_cache_has_no_prefetch_and_no_cache_condition(rec: Reconciler, kube: FakeKube) -> None:
    spec = {k: v for k, v in CACHED.items() if k != "cache"}
    result = rec.model(add(kube, "ModelDeployment", "smollm", spec))
    assert jobs(kube) == [] and "CacheReady" not in {c["type"] for c in result.status["conditions"]}
    assert result.status.get("cache") is None and kube.get("RayService", "ns", "smollm") is not None


def test_a_batch_run_waits_for_the_prefetch_of_the_model_s_current_pin() -> None:
    """cache_wait: what holds an ingestion or training RayJob that loads a cached model. Only status.cache of the
    current pin's Job counts (a Succeeded one of an earlier pin does not); a failed prefetch degrades the run."""
    from raylight.api.cache import cache_plan
    from raylight.api.names import cache_job_name
    from raylight.api.types import ModelDeployment
    from raylight.operator.status import cache_wait

    md = ModelDeployment.model_validate({"metadata": {"name": "smollm"}, "spec": CACHED})
    plan = cache_plan(md.spec)
    assert plan is not None
    job = cache_job_name("smollm", plan.key())
    assert cache_wait(md, {"cache": {"phase": "Succeeded", "job": job}}, "training") is None
    plain = ModelDeployment.model_validate({"metadata": {"name": "smollm"}, "spec": {
        **CACHED, "cache": None}})
    assert cache_wait(plain, None, "training") is None
    for status in (None, {"cache": {"phase": "Running", "job": job}},
                   {"cache": {"phase": "Succeeded", "job": cache_job_name("smollm", "0123456789")}}):
        held = cache_wait(md, status, "ingestion")
        assert held is not None and held.reason == "CachePending" and not held.degraded and held.progressing
        assert held.message.startswith("ingestion waits for the weight cache of ModelDeployment smollm (spec.cache: "
                                       "hf://HuggingFaceTB/SmolLM2-135M-Instruct at revision 12fd25f in claim models)")
    failed = cache_wait(md, {"cache": {"phase": "Failed", "job": job, "message": "spec.cache.sha256: x"}}, "training")
    assert failed is not None and failed.reason == "CacheFailed" and failed.degraded
    assert "spec.cache.sha256: x" in failed.message
