"""Every name, port and mount root that the operator derives and the data plane relies on, in one place
(like KubeRay's `GenerateServeServiceName`): change one here and both sides follow.

Kubernetes object names are DNS labels; KubeRay derives `<rayservice>-serve-svc` and pods from a
RayService's name, and keeps it at most 47 characters, so every RayService name here stays within that.
"""

from __future__ import annotations

from typing import Final

# ------------------------------------------------------------------ Ray Serve

MODEL_APP_IMPORT: Final = "raylight_pipelines.serving.app:build_app"  # CPU runtimes and embedders
AGENT_APP_IMPORT: Final = "raylight_agents.serve:build_app"
VLLM_APP_IMPORT: Final = "ray.serve.llm:build_openai_app"
MODEL_DEPLOYMENT: Final = "ModelServer"  # the one deployment of a model application
AGENT_DEPLOYMENT: Final = "AgentServer"  # the one deployment of an agent application
SERVE_PORT: Final = 8000  # Serve's HTTP proxy in every Ray pod; KubeRay's serve Service targets it
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


def ingestion_job_name(pipeline: str, checksum: str) -> str:
    """One ingestion run per plan: `<pipeline>-ingest-<plan checksum>`."""
    return f"{pipeline}-ingest-{checksum}"


def ingestion_cron_name(pipeline: str) -> str:
    """The CronJob re-running a Pipeline's ingestion on its schedule."""
    return f"{pipeline}-ingest"


# ------------------------------------------------------------------ mount roots and paths in pods

PVC_MOUNT_ROOT: Final = "/mnt/pvc"  # pvc://CLAIM/PATH is at /mnt/pvc/CLAIM/PATH in Ray and ingestion pods
CONFIGMAP_MOUNT_ROOT: Final = "/mnt/configmap"  # a ConfigMap source NAME is mounted at /mnt/configmap/NAME
PLAN_MOUNT_DIR: Final = "/etc/raylight"  # where the ingestion pod finds plan.json
PLAN_FILE: Final = "plan.json"
TERMINATION_LOG: Final = "/dev/termination-log"  # the ingestion run's summary; the operator reads it back


def local_path(source: str) -> str | None:
    """Where a `pvc://` or `file://` model source is on a pod's file system; None for remote sources."""
    scheme, _, rest = source.partition("://")
    if scheme == "file":
        return rest
    if scheme == "pvc":
        return f"{PVC_MOUNT_ROOT}/{rest.strip('/')}"
    return None
