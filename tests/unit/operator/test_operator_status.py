"""RayService status -> health, and health/governance -> phase and conditions (pure)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from raylight.operator.status import (
    PROGRESS_DEADLINE_EXCEEDED,
    Health,
    conditions,
    ingestion_progress,
    model_verdict,
    models_health,
    overdue,
    pipeline_verdict,
    rayjob_health,
    rayservice_health,
)

RECORDED = yaml.safe_load((Path(__file__).parent / "data" / "kuberay_rayservice_statuses.yaml").read_text())


def rayservice(generation: int = 1, observed: int | None = 1, ready: str | None = "True",
               apps: dict[str, str] | None = None, workers: int = 1) -> dict[str, Any]:
    status: dict[str, Any] = {"activeServiceStatus": {
        "applicationStatuses": {n: {"status": s, "message": f"{n} says {s}"} for n, s in (apps or {}).items()},
        "rayClusterStatus": {"readyWorkerReplicas": workers}}}
    if observed is not None:
        status["observedGeneration"] = observed
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": "Because"}]
    return {"metadata": {"generation": generation}, "status": status}


def test_missing_rayservice_is_progressing() -> None:
    h = rayservice_health(None)
    assert (h.ready, h.progressing, h.degraded, h.reason) == (False, True, False, "RayServiceMissing")


def test_ready_condition_and_running_apps_are_ready_with_replicas() -> None:
    h = rayservice_health(rayservice(apps={"minilm": "RUNNING"}, workers=2))
    assert (h.ready, h.progressing, h.degraded, h.ready_replicas) == (True, False, False, 2)


def test_a_generation_kuberay_has_not_observed_is_progressing_even_when_ready() -> None:
    h = rayservice_health(rayservice(generation=3, observed=2, apps={"a": "RUNNING"}))
    assert h.ready and h.progressing and h.reason == "GenerationNotObserved"


def test_deploying_app_is_progressing_and_failed_app_is_degraded() -> None:
    assert rayservice_health(rayservice(apps={"a": "DEPLOYING"})).reason == "ApplicationsDeploying"
    h = rayservice_health(rayservice(apps={"a": "RUNNING", "b": "DEPLOY_FAILED"}))
    assert h.degraded and "b says DEPLOY_FAILED" in h.message


def test_not_ready_without_applications_even_if_kuberay_says_ready() -> None:
    h = rayservice_health(rayservice(apps={}))
    assert not h.ready and h.reason == "ClusterStarting"
    assert not rayservice_health(rayservice(ready="False", apps={"a": "RUNNING"})).ready


def test_older_kuberay_service_status_is_understood() -> None:
    rs = rayservice(ready=None, apps={"a": "RUNNING"})
    rs["status"]["serviceStatus"] = "Running"
    assert rayservice_health(rs).ready


def test_model_verdict_failed_on_licence_or_fit_with_the_reason() -> None:
    ok = Health(True, False, False, "Serving", "")
    v = model_verdict(ok, "licence llama3.1 restricts use", None)
    by_type = {c.type: c for c in v.conditions}
    assert v.phase == "Failed"
    assert by_type["LicenseApproved"].ok is False and by_type["Fits"].ok is True
    assert "not deployed: licence llama3.1" in by_type["Ready"].message
    assert model_verdict(ok, None, "needs 80 GiB").phase == "Failed"
    assert model_verdict(ok, None, None).phase == "Ready"


def test_pipeline_is_ready_only_when_every_part_is() -> None:
    ready = Health(True, False, False, "Ok", "")
    waiting = Health(False, True, False, "IngestionRunning", "Job x is running")
    broken = Health(False, False, True, "IngestionFailed", "Job x failed")
    parts = {"Models": ready, "Agent": ready, "Store": ready, "Ingestion": ready}
    assert pipeline_verdict(parts).phase == "Ready"
    v = pipeline_verdict({**parts, "Ingestion": waiting})
    assert v.phase == "Progressing"
    assert {c.type: c.ok for c in v.conditions}["IngestionReady"] is False
    assert pipeline_verdict({**parts, "Ingestion": broken, "Models": waiting}).phase == "Degraded"


def test_transition_time_moves_only_when_the_status_changes_or_a_new_rollout_starts() -> None:
    v = model_verdict(Health(False, True, False, "Starting", ""), None, None)
    first = conditions(v.conditions, [], 1, "t1")
    again = conditions(v.conditions, first, 1, "t2")
    assert [c["lastTransitionTime"] for c in again] == ["t1"] * len(again)
    same = {c["type"]: c for c in conditions(v.conditions, first, 2, "t2")}
    assert all(c["observedGeneration"] == 2 for c in same.values())
    # Progressing's clock restarts with a new generation (a new rollout); the others keep theirs.
    assert same["Progressing"]["lastTransitionTime"] == "t2"
    assert {t: c["lastTransitionTime"] for t, c in same.items() if t != "Progressing"} == dict.fromkeys(
        ["Ready", "Degraded", "LicenseApproved", "Fits"], "t1")
    ready = model_verdict(Health(True, False, False, "Serving", ""), None, None)
    moved = {c["type"]: c["lastTransitionTime"] for c in conditions(ready.conditions, first, 2, "t3")}
    assert moved["Ready"] == "t3" and moved["Progressing"] == "t3" and moved["LicenseApproved"] == "t1"


def _recorded(case: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": {"name": "minilm", "generation": case["generation"]},
            "spec": {"serveConfigV2": "applications:\n- name: minilm\n  import_path: x:y\n"},
            "status": case["status"]}


@pytest.mark.parametrize("case", RECORDED, ids=[c["name"] for c in RECORDED])
def test_each_recorded_kuberay_status_reads_as_what_it_means(case: dict[str, Any]) -> None:
    h = rayservice_health(_recorded(case))
    assert [h.ready, h.progressing, h.degraded, h.reason] == case["expect"], h.message
    assert h.message
    if "since" in case:
        assert h.since == case["since"]
    if h.progressing:  # every transition says what to do should it stall
        assert h.if_stuck
    if h.ready and not h.progressing and not h.degraded:
        assert h.reason == "Serving"


def test_recorded_statuses_are_valid_kuberay_statuses(
        validate_rayservice_status: Callable[[dict[str, Any]], None]) -> None:
    for case in RECORDED:
        validate_rayservice_status(case["status"])


def test_a_stalled_upgrade_is_progressing_then_degraded_with_what_to_do() -> None:
    stalled = next(c for c in RECORDED if c["expect"][3] == "UpgradeInProgress")
    h = rayservice_health(_recorded(stalled))
    v = model_verdict(h, None, None)
    by_type = {c.type: c for c in v.conditions}
    assert v.phase == "Progressing"
    assert by_type["Progressing"].ok and by_type["Progressing"].reason == "UpgradeInProgress"
    assert by_type["Ready"].ok  # the old cluster serves meanwhile

    assert overdue(h, "2026-11-29T10:29:59Z", 1800, "2026-11-29T09:00:00Z") == h
    late = overdue(h, "2026-11-29T10:30:01Z", 1800, "2026-11-29T09:00:00Z")
    assert (late.ready, late.progressing, late.degraded, late.reason) == (True, True, True, PROGRESS_DEADLINE_EXCEEDED)
    assert "UpgradeInProgress since 2026-11-29T10:00:00Z (more than 30m)" in late.message
    assert "kubectl describe raycluster minilm-q4m8z" in late.message
    v = model_verdict(late, None, None)
    by_type = {c.type: c for c in v.conditions}
    assert v.phase == "Degraded" and by_type["Progressing"].ok and by_type["Degraded"].ok


def test_a_deadline_counts_from_the_latest_known_start() -> None:
    h = Health(False, True, False, "ClusterStarting", "starting", since="2026-11-29T09:00:00Z", if_stuck="look")
    # A new generation restarted the caller's clock at 10:00: the old since does not make it overdue.
    assert not overdue(h, "2026-11-29T10:10:00Z", 1800, "2026-11-29T10:00:00Z").degraded
    assert overdue(h, "2026-11-29T10:31:00Z", 1800, "2026-11-29T10:00:00Z").degraded
    assert not overdue(h, "2026-11-29T12:00:00Z", 0, "2026-11-29T10:00:00Z").degraded  # 0: no deadline
    progress = Health(False, True, False, "IngestionRunning", "Job x is running")  # progress itself never stalls
    assert overdue(progress, "2026-11-30T10:00:00Z", 60, "2026-11-29T10:00:00Z") == progress


def _job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "docs-ingest-1", "creationTimestamp": "2026-11-29T10:00:00Z"}, "status": status}


@pytest.mark.parametrize(("status", "expect"), [
    ({}, (False, True, False, "IngestionStarting")),
    ({"jobDeploymentStatus": "Initializing", "startTime": "2026-11-29T10:00:05Z"},
     (False, True, False, "IngestionStarting")),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "startTime": "2026-11-29T10:00:05Z"},
     (False, True, False, "IngestionRunning")),
    ({"jobDeploymentStatus": "Retrying", "failed": 1, "reason": "AppFailed"},
     (False, True, False, "IngestionRetrying")),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "succeeded": 1,
      "startTime": "2026-11-29T10:00:05Z", "endTime": "2026-11-29T10:02:05Z"},
     (True, False, False, "IngestionSucceeded")),
    ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "failed": 3, "reason": "AppFailed",
      "message": "Job failed"}, (False, False, True, "IngestionFailed")),
    ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "activeDeadlineSeconds passed"},
     (False, False, True, "IngestionFailed")),
])
def test_each_ingestion_rayjob_state_reads_as_what_it_means(
        status: dict[str, Any], expect: tuple[Any, ...], validate_rayjob_status: Any) -> None:
    validate_rayjob_status(status)  # a status KubeRay's CRD admits
    h = rayjob_health(_job(**status))
    assert (h.ready, h.progressing, h.degraded, h.reason) == expect
    if h.reason == "IngestionStarting":  # a cluster that never starts stalls: counted from the run's start
        assert h.since == status.get("startTime", "2026-11-29T10:00:00Z") and "describe pods" in h.if_stuck
    if h.reason == "IngestionRunning":
        assert not h.if_stuck
    if h.reason == "IngestionFailed":
        assert status["reason"] in h.message


def test_progress_reads_the_rayjob_and_the_run_report() -> None:
    running = ingestion_progress(_job(jobDeploymentStatus="Running", jobStatus="RUNNING",
                                      startTime="2026-11-29T10:00:00Z"), {}, "2026-11-29T10:00:30Z")
    assert running == {"phase": "Running", "job": "docs-ingest-1", "startTime": "2026-11-29T10:00:00Z",
                       "durationSeconds": 30.0}
    report = {"seen": 12, "added": 8, "updated": 1, "unchanged": 1, "skipped": 1, "failed": 1, "chunks_embedded": 300,
              "chunks_reused": 20, "points": 320, "workers": 2, "seconds": 60.0,
              "failures": [{"source": "path:docs/x.pdf", "reason": "cannot parse"}]}
    done = ingestion_progress(_job(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED",
                                   startTime="2026-11-29T10:00:00Z", endTime="2026-11-29T10:01:40Z"),
                              report, "2026-11-29T10:05:00Z")
    assert done["phase"] == "Succeeded" and done["durationSeconds"] == 100.0
    assert (done["documentsSeen"], done["documentsDone"], done["documentsSkipped"], done["documentsFailed"]) == (
        12, 10, 1, 1)
    assert (done["chunksEmbedded"], done["chunksReused"], done["points"]) == (300, 20, 320)
    assert done["chunksPerSecond"] == 5.0
    assert done["failures"] == [{"source": "path:docs/x.pdf", "reason": "cannot parse"}]
    failed = ingestion_progress(_job(jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed"),
                                {"error": "the vector store is unreachable"}, "2026-11-29T10:05:00Z")
    assert failed["phase"] == "Failed" and failed["message"] == "the vector store is unreachable"


def _md(phase: str, ready: str, **degraded: str) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": ready, "reason": "R", "message": "m"}]
    if degraded:
        conds.append({"type": "Degraded", "status": "True", **degraded})
    return {"status": {"phase": phase, "conditions": conds}}


def test_a_pipeline_sees_its_models_serving_while_they_roll_out_and_failing_when_they_fail() -> None:
    assert models_health({"a": _md("Ready", "True")}).ready
    upgrading = models_health({"a": _md("Progressing", "True")})
    assert upgrading.ready and not upgrading.progressing
    assert models_health({"a": _md("Progressing", "False")}).reason == "ModelsNotReady"
    broken = models_health({"a": _md("Ready", "True"), "b": _md("Degraded", "True", reason="X", message="stuck")})
    assert broken.degraded and "ModelDeployment b is Degraded: stuck" in broken.message


def test_a_pipeline_part_rolling_out_keeps_the_pipeline_progressing_though_every_part_serves() -> None:
    ready = Health(True, False, False, "Ok", "")
    upgrading = Health(True, True, False, "UpgradeInProgress", "new cluster starting")
    v = pipeline_verdict({"Models": ready, "Agent": upgrading, "Store": ready, "Ingestion": ready})
    by_type = {c.type: c for c in v.conditions}
    assert v.phase == "Progressing" and by_type["Ready"].ok and by_type["Progressing"].reason == "UpgradeInProgress"
