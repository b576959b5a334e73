"""The cluster guide reaches a cluster: the CRDs it names are the chart's, every Qdrant address in the guide,
the chart and the examples is the one the guide installs, the images the build script tags are the ones the
chart and the operator use, every source the GPU example names is provided, and the operator says at start
which KubeRay kinds are missing and what that disables."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from helmtool import CHART, ROOT, Render
from raylight.operator import preflight
from raylight.settings import Settings

GUIDE = ROOT / "docs" / "install-on-a-cluster.md"


def test_the_guide_names_exactly_the_crds_the_chart_installs(render: Render) -> None:
    rendered = {o["metadata"]["name"] for o in render({}) if o and o["kind"] == "CustomResourceDefinition"}
    ours = {name for name in rendered if name.endswith(".raylight.io")}
    for line in GUIDE.read_text().splitlines():
        if line.startswith(("kubectl get crd", "kubectl delete crd")):
            named = set(re.findall(r"[a-z]+\.raylight\.io", line))
            assert named == ours, line
    assert len(ours) == 3


def test_every_qdrant_address_is_the_one_the_guide_installs() -> None:
    default = Settings().qdrant_url
    texts = [GUIDE, ROOT / "README.md", CHART / "values.yaml", *sorted((ROOT / "examples").rglob("*.yaml")),
             *sorted((ROOT / "examples").rglob("*.md"))]
    found = {m for path in texts for m in re.findall(r"https?://qdrant[\w.-]*\.svc[:\d]*", path.read_text())}
    assert found == {default}, found


def test_the_build_script_tags_the_images_the_chart_and_operator_use() -> None:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-images.sh"), "--dry-run"], capture_output=True,
                         text=True, check=True).stdout
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert f"-t {values['image']['repository']}:{app_version} " in out
    assert f"-t {Settings().runtime_image} " in out
    for image in ("operator", "runtime"):
        assert (ROOT / "images" / image / "Dockerfile").exists()


def test_every_source_the_gpu_example_names_is_provided() -> None:
    docs = [d for p in sorted((ROOT / "examples" / "gpu-cluster").rglob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]
    provided = {(d["kind"], d["metadata"]["name"]) for d in docs}
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    for source in pipeline["spec"]["sources"]:
        if "pvc" in source:
            assert ("PersistentVolumeClaim", source["pvc"]["claim"]) in provided
        if "configMap" in source:
            assert ("ConfigMap", source["configMap"]["name"]) in provided
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]  # every ingestion pod mounts it at once


class Crds:
    def __init__(self, present: set[str]) -> None:
        self.present = present

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert kind == "CustomResourceDefinition" and namespace == ""
        return {"metadata": {"name": name}} if name in self.present else None


def test_the_operator_says_at_start_what_a_missing_kuberay_kind_disables() -> None:
    everything = {r.crd for r in preflight.REQUIREMENTS}
    assert preflight.messages(Crds(everything)) == []  # type: ignore[arg-type]
    old_kuberay = preflight.messages(Crds(everything - {"raycronjobs.ray.io"}))  # type: ignore[arg-type]
    assert old_kuberay == [(False, old_kuberay[0][1])]
    assert "spec.schedule" in old_kuberay[0][1] and "featureGates" in old_kuberay[0][1]
    nothing = preflight.messages(Crds(set()))  # type: ignore[arg-type]
    assert [required for required, _ in nothing] == [True, True, False, False]


def test_the_cluster_example_validates_beside_its_kubernetes_objects(tmp_path: Path) -> None:
    from raylight.cli import main

    assert main(["validate", "-f", str(ROOT / "examples" / "gpu-cluster")]) == 0
