"""Scheduled ingestion (issue 31, i01: `*/5 * * * *` with a day's run deadline) through the real Kopf runtime
against the API stand-in: KubeRay's RayCronJob creates suspended RayJobs labelled `ray.io/cronjob-name`, and the
operator starts one only when no other run of the Pipeline writes, skips the ones that come meanwhile, records
every run's outcome (status, Events, metrics) and prunes finished runs to the history limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import Emulator, Kube, eventually
from raylight.operator import metrics, schedule

pytestmark = pytest.mark.operator

CASE = Path(__file__).parents[1] / "cases" / "turn3" / "i01-cron-overlap.yaml"
RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": "x", "startTime": "2026-12-04T10:00:00Z"}


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(CASE.read_text()) if d]


async def _finish(kube: Kube, name: str, ok: bool, report: dict[str, Any] | None = None) -> None:
    """What KubeRay and the run's submitter leave when a RayJob ends."""
    if report is not None:
        await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"{name}-submitter", "labels": {"job-name": name}}, "spec": {"containers": []}})
        await kube.patch("Pod", f"{name}-submitter", {"status": {"containerStatuses": [{
            "name": "ray-job-submitter", "state": {"terminated": {"message": json.dumps(report)}}}]}})
    await kube.patch("RayJob", name, {"status": RUNNING})
    await kube.patch("RayJob", name, {"status": {
        "jobDeploymentStatus": "Complete" if ok else "Failed", "jobStatus": "SUCCEEDED" if ok else "FAILED",
        "endTime": f"2026-12-04T10:0{len(name) % 10}:00Z", "succeeded": int(ok), "failed": int(not ok),
        **({} if ok else {"reason": "AppFailed", "message": "Job entrypoint command failed with exit code 1"})}})


async def _cron_run(kube: Kube, suffix: str, created: str) -> str:
    """What KubeRay's RayCronJob controller creates on schedule: `<cron>-<random>`, labelled only with the
    cron's name, the job template as spec, owned by the RayCronJob."""
    cron = await kube.get("RayCronJob", "wiki-ingest")
    assert cron is not None
    name = f"wiki-ingest-{suffix}"
    await kube.create({"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {
        "name": name, "labels": {schedule.CRONJOB_LABEL: "wiki-ingest"},
        "annotations": {"ray.io/cronjob-scheduled-timestamp": created},
        "ownerReferences": [{"apiVersion": "ray.io/v1", "kind": "RayCronJob", "name": "wiki-ingest",
                             "uid": cron["metadata"]["uid"], "controller": True}]},
        "spec": cron["spec"]["jobTemplate"]})
    return name


async def _ingestion(kube: Kube, job: str, phase: str) -> dict[str, Any] | None:
    obj = await kube.get("Pipeline", "wiki")
    progress = ((obj or {}).get("status") or {}).get("ingestion") or {}
    return obj if progress.get("job") == job and progress.get("phase") == phase else None


async def _started(kube: Kube, name: str) -> dict[str, Any] | None:
    job = await kube.get("RayJob", name)
    return job if job is not None and job["spec"].get("suspend") is False else None


def _events(api: Emulator, reason: str) -> list[str]:
    return [d["message"] for a, p, _, d in api.writes if a == "CREATE" and p == "events" and d.get("reason") == reason]


def _runs(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("raylight_operator_ingestion_runs_total",
                                             {"namespace": "default", "pipeline": "wiki", "result": result}) or 0.0


async def test_i01_scheduled_runs_never_overlap_and_each_outcome_is_recorded(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    before = {r: _runs(r) for r in ("Succeeded", "Failed", "Skipped")}
    async with start_operator():
        for doc in _docs():
            await kube.create(doc)
        cron = await eventually(lambda: kube.get("RayCronJob", "wiki-ingest"), timeout=20)
        assert cron["spec"]["schedule"] == "*/5 * * * *" and cron["spec"]["jobTemplate"]["suspend"] is True
        assert cron["spec"]["jobTemplate"]["activeDeadlineSeconds"] == 86400
        [own] = await eventually(lambda: kube.list("RayJob"), timeout=20)  # the plan's own first run
        assert "suspend" not in own["spec"]

        # a scheduled run comes while the plan's run writes: it waits suspended, then is skipped
        await kube.patch("RayJob", own["metadata"]["name"], {"status": RUNNING})
        early = await _cron_run(kube, "aaaaa", "2026-12-04T10:05:00Z")
        await eventually(lambda: _absent(kube, early))
        skipped = f"ingestion run {early} skipped: run {own['metadata']['name']} is still writing collection wiki"
        await eventually(lambda: _event(api, "IngestionSkipped", skipped))  # posted once the pass ends
        await _finish(kube, own["metadata"]["name"], ok=True, report={"added": 3, "updated": 0, "unchanged": 0,
                                                                     "skipped": 0, "failed": 0, "points": 9})
        await eventually(lambda: _ingestion(kube, own["metadata"]["name"], "Succeeded"))

        # the next scheduled run starts (nothing else runs), fails: the Pipeline says so, with the run's name
        first = await _cron_run(kube, "bbbbb", "2026-12-04T10:10:00Z")
        await eventually(lambda: _started(kube, first))
        second = await _cron_run(kube, "ccccc", "2026-12-04T10:15:00Z")  # overlaps `first`: skipped
        await eventually(lambda: _absent(kube, second))
        await _finish(kube, first, ok=False, report={"error": "qdrant: connection refused"})
        obj = await eventually(lambda: _ingestion(kube, first, "Failed"))
        assert obj["status"]["ingestion"]["scheduled"] is True
        assert "qdrant: connection refused" in obj["status"]["ingestion"]["message"]
        assert obj["status"]["phase"] != "Ready"
        await eventually(lambda: _event(api, "IngestionFailed", first))
        assert any("qdrant: connection refused" in m for m in _events(api, "IngestionFailed") if first in m)

        # and the one after succeeds: Ready again, with its own numbers
        third = await _cron_run(kube, "ddddd", "2026-12-04T10:20:00Z")
        await eventually(lambda: _started(kube, third))
        await _finish(kube, third, ok=True, report={"added": 0, "updated": 1, "unchanged": 2, "skipped": 0,
                                                    "failed": 0, "points": 10})
        obj = await eventually(lambda: _ingestion(kube, third, "Succeeded"))
        assert obj["status"]["ingestion"]["points"] == 10 and obj["status"]["lastIngestion"]["job"] == third
        await eventually(lambda: _event(api, "IngestionSucceeded", third))

        # history: finished scheduled runs beyond 3 succeeded and 1 failed are pruned
        for i, suffix in enumerate(("eeeee", "fffff", "ggggg")):
            run = await _cron_run(kube, suffix, f"2026-12-04T10:3{i}:00Z")
            await eventually(lambda r=run: _started(kube, r))
            await _finish(kube, run, ok=True)
            await eventually(lambda r=run: _ingestion(kube, r, "Succeeded"))
        left = await eventually(lambda: _scheduled_runs(kube, 4))
        assert sorted(left) == ["wiki-ingest-bbbbb", "wiki-ingest-eeeee", "wiki-ingest-fffff", "wiki-ingest-ggggg"]
    assert _runs("Skipped") - before["Skipped"] == 2
    assert _runs("Failed") - before["Failed"] == 1
    assert _runs("Succeeded") - before["Succeeded"] == 5


async def _event(api: Emulator, reason: str, text: str) -> bool:
    return any(text in m for m in _events(api, reason))


async def _absent(kube: Kube, name: str) -> bool:
    return await kube.get("RayJob", name) is None


async def _scheduled_runs(kube: Kube, count: int) -> list[str] | None:
    names = [j["metadata"]["name"] for j in await kube.list("RayJob")
             if schedule.CRONJOB_LABEL in (j["metadata"].get("labels") or {})]
    return names if len(names) == count else None
