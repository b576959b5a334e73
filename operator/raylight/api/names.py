"""Every name, port and mount root that the operator derives and the data plane relies on, in one place
(like KubeRay's `GenerateServeServiceName`): change one here and both sides follow.

Kubernetes object names are DNS labels; KubeRay derives `<rayservice>-serve-svc` and pods from a
RayService's name, and keeps it at most 47 characters, so every RayService name here stays within that.
"""

from __future__ import annotations

import re
from typing import Final

# ------------------------------------------------------------------ Ray Serve

MODEL_APP_IMPORT: Final = "raylight_pipelines.serving.app:build_app"  # CPU runtimes and embedders
AGENT_APP_IMPORT: Final = "raylight_agents.serve:build_app"
VLLM_APP_IMPORT: Final = "ray.serve.llm:build_openai_app"
MODEL_DEPLOYMENT: Final = "ModelServer"  # the one deployment of a model application
AGENT_DEPLOYMENT: Final = "AgentServer"  # the one deployment of an agent application
GATEWAY_IMPORT: Final = "raylight.local.gateway:build_app"  # the front of every app (GatewayArgs)
GATEWAY_DEPLOYMENT: Final = "Gateway"
# On a cluster, the application at "/" of a RayService whose model or agent scales to zero (replicas.min 0): the
# gateway, on the head, holds a request while that app has no replica (its own name says nothing of the app).
FRONT_APP_NAME: Final = "front"
SERVE_PORT: Final = 8000  # Serve's HTTP proxy in every Ray pod; KubeRay's serve Service targets it
RAY_METRICS_PORT: Final = 8080  # Ray's metrics agent (ray_* and ray_serve_* metrics) in every Ray pod
APP_METRICS_PORT: Final = 9464  # the agent's and model's own metrics (raylight_*), one replica per pod
APP_METRICS_PORT_ENV: Final = "RAYLIGHT_APP_METRICS_PORT"  # tells a replica to serve them there
PIPELINE_MCP_PATH: Final = "/v1/pipelines/{name}/mcp"  # a Pipeline's MCP server (agent endpoint and gateway)
RAY_NAMESPACE: Final = "raylight"  # Ray namespace of named actors (the local store actor) and drivers

# ------------------------------------------------------------------ Kubernetes names

MAX_RAYSERVICE_NAME: Final = 47  # KubeRay: longer names break the Services and pods derived from them
AGENT_SUFFIX: Final = "-agent"
MAX_PIPELINE_NAME: Final = MAX_RAYSERVICE_NAME - len(AGENT_SUFFIX)  # 41


def model_rayservice_name(model_deployment: str) -> str:
    """The RayService serving a ModelDeployment: its own name."""
    return model_deployment


def agent_rayservice_name(pipeline: str) -> str:
    """The RayService serving a Pipeline's agent: `<pipeline>-agent`."""
    return f"{pipeline}{AGENT_SUFFIX}"


def serve_service_name(rayservice: str) -> str:
    """The Service KubeRay puts in front of a RayService's Serve proxies (its `GenerateServeServiceName`)."""
    return f"{rayservice}-serve-svc"


def service_url(rayservice: str, namespace: str, cluster_domain: str) -> str:
    """`http://<rayservice>-serve-svc.<namespace>.svc.<domain>:8000`, a RayService's in-cluster URL."""
    return f"http://{serve_service_name(rayservice)}.{namespace}.svc.{cluster_domain}:{SERVE_PORT}"


def model_base_url(model_deployment: str, namespace: str, cluster_domain: str) -> str:
    """The OpenAI-compatible base URL (`.../v1`) of a ModelDeployment on a cluster."""
    return f"{service_url(model_rayservice_name(model_deployment), namespace, cluster_domain)}/v1"


def ingestion_config_map_name(pipeline: str) -> str:
    """The ConfigMap holding a Pipeline's ingestion plan."""
    return f"{pipeline}-ingest-plan"


PLAN_CHECKSUM_CHARS: Final = 10  # hex digits of the plan's sha256 in an ingestion run's name


MAX_RAYJOB_NAME: Final = 47  # KubeRay rejects longer RayJob names (it derives a RayCluster and its pods)
RAYCRONJOB_SUFFIX: Final = 11  # KubeRay's RayCronJob names each RayJob `<cron>-<suffix>`, at most this long
INGEST_INFIX: Final = "-ingest"


def _prefix(pipeline: str, room: int) -> str:
    return pipeline[:room].rstrip("-")


def ingestion_job_name(pipeline: str, checksum: str) -> str:
    """One ingestion run (a KubeRay RayJob) per plan: `<pipeline>-ingest-<plan checksum>`, the pipeline's
    name shortened to fit KubeRay's 47 characters (the checksum covers the whole plan, name included, so
    two Pipelines sharing a prefix still get two names; labels say which Pipeline a run belongs to)."""
    room = MAX_RAYJOB_NAME - len(INGEST_INFIX) - 1 - len(checksum)
    return f"{_prefix(pipeline, room)}{INGEST_INFIX}-{checksum}"


def ingestion_cron_name(pipeline: str) -> str:
    """The RayCronJob re-running a Pipeline's ingestion on its schedule: `<pipeline>-ingest`, short enough
    that the RayJobs it names `<cron>-<suffix>` stay within KubeRay's 47 characters."""
    room = MAX_RAYJOB_NAME - RAYCRONJOB_SUFFIX - len(INGEST_INFIX)
    return f"{_prefix(pipeline, room)}{INGEST_INFIX}"


FINETUNE_INFIX: Final = "-finetune"


def finetune_config_map_name(fine_tune: str) -> str:
    """The ConfigMap holding a FineTune's training plan."""
    return f"{fine_tune}-finetune-plan"


def finetune_job_name(fine_tune: str, checksum: str) -> str:
    """One training run (a KubeRay RayJob) per plan: `<finetune>-finetune-<plan checksum>`, shortened to fit."""
    room = MAX_RAYJOB_NAME - len(FINETUNE_INFIX) - 1 - len(checksum)
    return f"{_prefix(fine_tune, room)}{FINETUNE_INFIX}-{checksum}"


CACHE_INFIX: Final = "-cache"
MAX_JOB_NAME: Final = 63  # a batch/v1 Job's name is a DNS label (its pods carry it in the job-name label)


def cache_job_name(model_deployment: str, key: str) -> str:
    """The Job pre-pulling a ModelDeployment's pinned weights into its cache: `<name>-cache-<key>`, `key` a hash
    of what it pulls (source, revision, digests), so a new pin is a new Job and an unchanged one starts none."""
    room = MAX_JOB_NAME - len(CACHE_INFIX) - 1 - len(key)
    return f"{_prefix(model_deployment, room)}{CACHE_INFIX}-{key}"


ADAPTER_MANIFEST: Final = "raylight-adapter.json"  # beside a PEFT adapter: its provenance and licence
CHECKPOINT_DIR: Final = "checkpoints"  # under the output: Ray Train checkpoints a resumed run starts from


# ------------------------------------------------------------------ mount roots and paths in pods

PVC_MOUNT_ROOT: Final = "/mnt/pvc"  # pvc://CLAIM/PATH is at /mnt/pvc/CLAIM/PATH in Ray and ingestion pods
CONFIGMAP_MOUNT_ROOT: Final = "/mnt/configmap"  # a ConfigMap source NAME is mounted at /mnt/configmap/NAME
PLAN_MOUNT_DIR: Final = "/etc/raylight"  # where the ingestion pod finds plan.json
PLAN_FILE: Final = "plan.json"
TERMINATION_LOG: Final = "/dev/termination-log"  # the ingestion run's summary; the operator reads it back

# The weight cache (spec.cache): one folder per pinned source and revision, complete once its marker is there.
CACHE_MOUNT_ROOT: Final = "/mnt/model-cache"  # the cache claim in the prefetch Job (rw) and serving pods (ro)
CACHE_ENV: Final = "RAYLIGHT_MODEL_CACHE"  # where the cache is: set in pods; on one machine see local_cache_root
CACHE_MARKER: Final = ".raylight-complete"  # written last by the prefetch, with every file's size and sha256
CACHE_PARTIAL: Final = ".raylight-partial"  # beside an entry while a prefetch writes it


def cache_entry(source: str, revision: str) -> str:
    """An entry's folder under the cache root: `<scheme>/<location>/<revision>` (hf://org/name at revision
    abc -> hf/org/name/abc), the same in a pod and on one machine."""
    scheme, _, rest = source.partition("://")
    parts = [_path_part(p) for p in rest.split("/") if p and p not in (".", "..")]
    return "/".join([scheme, *parts, _path_part(revision)])


def _path_part(text: str) -> str:
    """One folder name from free text: letters, digits, '.', '_' and '-' kept, anything else '_'; never '.' or
    '..' (so an entry stays inside the cache root whatever the source or revision says)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"
    return f"_{safe}" if safe in (".", "..") else safe


def local_path(source: str) -> str | None:
    """Where a `pvc://` or `file://` model source is on a pod's file system; None for remote sources."""
    scheme, _, rest = source.partition("://")
    if scheme == "file":
        return rest
    if scheme == "pvc":
        return f"{PVC_MOUNT_ROOT}/{rest.strip('/')}"
    return None

# A custom Ray resource only a serving cluster's head offers when its model may scale to zero: what must outlive
# the model's replicas (vLLM's OpenAI ingress) asks for a sliver of it, so it never keeps a GPU worker pod alive.
HEAD_RESOURCE: Final = "raylight-head"
