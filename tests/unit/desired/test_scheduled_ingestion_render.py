"""i01 (issue 31): a Pipeline scheduled every five minutes with a day's run deadline validates and renders a
RayCronJob whose runs start suspended (the operator starts one at a time), valid against KubeRay's CRD."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from raylight.api.manifests import load
from raylight.render import load_valid, render_objects
from raylight.settings import Settings

CASE = Path(__file__).parents[2] / "cases" / "turn3" / "i01-cron-overlap.yaml"


def _objects() -> list[dict[str, Any]]:
    result = load_valid([CASE], "default", Settings())
    assert not result.problems, result.problems
    return render_objects(result.manifests, "default", Settings())


def test_i01_renders_a_raycronjob_whose_runs_start_suspended() -> None:
    assert {type(m.resource).__name__ for m in load([CASE]).manifests} == {"ModelDeployment", "Pipeline"}
    objects = _objects()
    cron = next(o for o in objects if o["kind"] == "RayCronJob")
    job = next(o for o in objects if o["kind"] == "RayJob")
    assert cron["metadata"]["name"] == "wiki-ingest" and cron["spec"]["schedule"] == "*/5 * * * *"
    assert cron["spec"]["jobTemplate"] == {**job["spec"], "suspend": True}
    assert "suspend" not in job["spec"]  # the plan's own run starts at once (when no other run writes)
    pods = cron["spec"]["jobTemplate"]["submitterPodTemplate"]["metadata"]["labels"]
    assert pods["raylight.io/pipeline"] == "wiki"  # its runs' pods say which Pipeline they belong to


def test_i01_objects_are_valid_against_kuberay(validate_raycronjob: Callable[[dict[str, Any]], None],
                                               validate_rayjob: Callable[[dict[str, Any]], None]) -> None:
    objects = _objects()
    validate_raycronjob(next(o for o in objects if o["kind"] == "RayCronJob"))
    validate_rayjob(next(o for o in objects if o["kind"] == "RayJob"))
    assert yaml.safe_dump(objects)
