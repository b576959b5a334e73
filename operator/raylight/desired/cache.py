"""The weight cache's objects (pure): the batch/v1 Job that pre-pulls a ModelDeployment's pinned weights into its
spec.cache claim, and the read-only volume its serving pods mount instead of downloading."""

from __future__ import annotations

import json
from typing import Any

from raylight.api.cache import cache_plan
from raylight.api.names import CACHE_ENV, CACHE_MOUNT_ROOT, TERMINATION_LOG, cache_job_name
from raylight.api.types import ModelDeployment
from raylight.desired.kubernetes import _container, _finish, cache_volume, get_download_env, labels
from raylight.settings import Settings

__all__ = ["CACHE_LABEL", "get_cache_job"]

CACHE_LABEL = "raylight.io/cache"  # the prefetch's key (a hash of what it pulls and checks)
PREFETCH_DEADLINE_SECONDS = 6 * 3600  # a prefetch that has not finished in six hours is stopped
PREFETCH_TTL_SECONDS = 3600  # a finished Job (and its report) stays an hour; status.cache keeps its outcome
PREFETCH_CPUS, PREFETCH_MEMORY = 1, "2Gi"  # a download and sha256 over the files: I/O, one core
RUNTIME_UID, RUNTIME_GID = 1000, 100  # the runtime image's user (images/runtime/Dockerfile): owns what it writes


def get_cache_job(md: ModelDeployment, namespace: str, settings: Settings) -> dict[str, Any] | None:
    """The Job that pulls spec.model (source at its revision) into `<claim>/<entry>`, checks spec.cache.sha256 and
    writes the completion marker last; None without spec.cache. Its name carries the plan's key, so a new pin is
    a new Job and an unchanged one runs once. Only this pod downloads: it alone gets the hub token (from the
    Secret, never a value); its summary line is its termination message, which the operator reads."""
    spec = md.spec.resolved()
    plan = cache_plan(spec)
    volume = cache_volume(spec.cache, read_only=False)
    if plan is None or volume is None:
        return None
    key = plan.key()
    name = cache_job_name(md.metadata.name, key)
    job_labels = {**labels("ModelDeployment", md.metadata.name, "cache"), CACHE_LABEL: key}
    container = _container("prefetch", settings.runtime_image, PREFETCH_CPUS, PREFETCH_MEMORY,
                           env=[*get_download_env(spec.model), {"name": CACHE_ENV, "value": CACHE_MOUNT_ROOT}])
    container["command"] = ["raylight", "cache", "pull", "--root", CACHE_MOUNT_ROOT, "--report", TERMINATION_LOG,
                            "--json", "--plan-json", json.dumps(plan.to_wire(), sort_keys=True)]
    container["volumeMounts"] = [volume[1]]
    container["securityContext"] = {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                    "capabilities": {"drop": ["ALL"]}}
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels},
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": PREFETCH_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": PREFETCH_TTL_SECONDS,
            "template": {
                "metadata": {"labels": dict(job_labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsUser": RUNTIME_UID, "runAsGroup": RUNTIME_GID, "fsGroup": RUNTIME_GID,
                                        "fsGroupChangePolicy": "OnRootMismatch"},
                    "containers": [container],
                    "volumes": [volume[0]],
                },
            },
        },
    }
    return _finish(job)
