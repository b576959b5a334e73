"""charts/raylight-stack, the umbrella chart that adds the official KubeRay, Qdrant and PostgreSQL charts.
Its remote dependencies cannot be fetched on a machine without access to their repositories, so what can be
checked offline is checked here, and the render runs only where `helm dependency update` has been done."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helmtool import CHART, ROOT, helm_run

STACK = ROOT / "charts" / "raylight-stack"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_stack_depends_on_this_raylight_chart_and_switches_the_others() -> None:
    stack = yaml.safe_load((STACK / "Chart.yaml").read_text())
    raylight = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((STACK / "values.yaml").read_text())
    deps = {d["name"]: d for d in stack["dependencies"]}
    assert deps["raylight"] == {"name": "raylight", "version": raylight["version"], "repository": "file://../raylight"}
    assert stack["version"] == stack["appVersion"] == raylight["version"]
    for name in ("kuberay-operator", "qdrant", "postgresql"):
        key, _, flag = deps[name]["condition"].partition(".")
        assert key == name and flag == "enabled" and isinstance(values[name]["enabled"], bool)


def test_stack_values_for_raylight_pass_the_raylight_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = yaml.safe_load((STACK / "values.yaml").read_text())
    jsonschema.validate(deep_merge(defaults, values["raylight"]), schema)
    # The Qdrant installed by the stack is the one the operator is told about.
    assert values["raylight"]["qdrant"]["url"].startswith(f"http://{values['qdrant']['fullnameOverride']}.")


def test_stack_renders_when_its_dependencies_are_present(helm: str) -> None:
    deps = yaml.safe_load((STACK / "Chart.yaml").read_text())["dependencies"]
    vendored = STACK / "charts"
    missing = [d["name"] for d in deps
               if not list(vendored.glob(f"{d['name']}-*.tgz")) and not (vendored / d["name"]).is_dir()]
    if missing:
        pytest.skip(f"dependencies {missing} not vendored: run `helm dependency update charts/raylight-stack` "
                    "where their chart repositories are reachable")
    out = helm_run(helm, "template", "raylight", str(STACK), "--namespace", "raylight-system")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out) if d}
    assert ("Deployment", "raylight") in kinds
    assert ("CustomResourceDefinition", "modeldeployments.raylight.io") in kinds


def test_stack_values_reach_the_raylight_subchart(helm: str, tmp_path: Path) -> None:
    """Offline, with this repository's raylight chart vendored and empty placeholders standing in for the
    three remote charts (Helm refuses to render with a declared dependency absent)."""
    stack = tmp_path / "raylight-stack"
    shutil.copytree(STACK, stack)
    shutil.copytree(CHART, stack / "charts" / "raylight")
    for dep in yaml.safe_load((STACK / "Chart.yaml").read_text())["dependencies"]:
        if dep["name"] != "raylight":
            floor = dep["version"].split()[0].lstrip(">=")
            (stack / "charts" / dep["name"]).mkdir()
            (stack / "charts" / dep["name"] / "Chart.yaml").write_text(yaml.safe_dump(
                {"apiVersion": "v2", "name": dep["name"], "version": floor}))
    out = helm_run(helm, "template", "raylight", str(stack), "--namespace", "raylight-system")
    objects = [d for d in yaml.safe_load_all(out) if d]
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RAYLIGHT_QDRANT_URL"] == "http://qdrant.raylight-system.svc:6333"
    assert deployment["metadata"]["name"] == "raylight"
