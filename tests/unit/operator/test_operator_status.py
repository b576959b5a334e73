"""RayService status -> health, and health/governance -> phase and conditions (pure)."""

from __future__ import annotations

from typing import Any

from raylight.operator.status import (
    Health,
    conditions,
    model_verdict,
    pipeline_verdict,
    rayservice_health,
)


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
    assert h.ready and h.progressing and h.reason == "Reconciling"


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


def test_transition_time_moves_only_when_the_status_changes() -> None:
    v = model_verdict(Health(False, True, False, "Starting", ""), None, None)
    first = conditions(v.conditions, [], 1, "t1")
    same = conditions(v.conditions, first, 2, "t2")
    assert [c["lastTransitionTime"] for c in same] == ["t1"] * len(same)
    assert all(c["observedGeneration"] == 2 for c in same)
    ready = model_verdict(Health(True, False, False, "Serving", ""), None, None)
    moved = {c["type"]: c["lastTransitionTime"] for c in conditions(ready.conditions, first, 2, "t3")}
    assert moved["Ready"] == "t3" and moved["Progressing"] == "t3" and moved["LicenseApproved"] == "t1"
