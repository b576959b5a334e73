"""Desired objects for a FineTune (pure): its training plan and a ConfigMap + KubeRay RayJob that runs
`raylight finetune --plan` on a Ray cluster of its own (a head and one worker pod per Ray Train worker)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from raylight.api.names import (
    ADAPTER_MANIFEST,
    CONFIGMAP_MOUNT_ROOT,
    PLAN_CHECKSUM_CHARS,
    PLAN_FILE,
    PLAN_MOUNT_DIR,
    PVC_MOUNT_ROOT,
    finetune_config_map_name,
    finetune_job_name,
    local_path,
)
from raylight.api.training import FineTunePlan, PlanDataset, PlanResources
from raylight.api.types import Adapter, FineTune, ModelCache, ModelDeployment, ModelSource
from raylight.desired.kubernetes import _finish, cache_volume, get_batch_rayjob, get_weights_env, labels
from raylight.settings import Settings

__all__ = ["ADAPTER_MANIFEST", "finetune_base", "finetune_base_cache", "get_finetune_objects", "get_finetune_plan",
           "plan_checksum", "resolve_adapters"]


def resolve_adapters(md: ModelDeployment, outputs: Mapping[str, str]) -> ModelDeployment:
    """The ModelDeployment with each `fineTune: NAME` adapter pointing at that FineTune's output (`outputs`:
    FineTune name -> its adapter's URI); raises KeyError naming a FineTune that has none."""
    if not any(a.fine_tune for a in md.spec.adapters):
        return md
    adapters = [a if a.fine_tune is None else Adapter(name=a.name, source=outputs[a.fine_tune])
                for a in md.spec.adapters]
    return md.model_copy(update={"spec": md.spec.model_copy(update={"adapters": adapters})})


def finetune_base(ft: FineTune, base: ModelDeployment | None) -> ModelSource | None:
    """The base model: the FineTune's own, or its ModelDeployment's (resolved from a preset); None when the
    ModelDeployment is not known."""
    if ft.spec.base.model is not None:
        return ft.spec.base.model
    return base.spec.resolved().model if base is not None else None


def finetune_base_cache(ft: FineTune, base: ModelDeployment | None) -> ModelCache | None:
    """The weight cache the base is read from: its ModelDeployment's spec.cache (None for a FineTune's own
    base.model, or a ModelDeployment without one)."""
    if ft.spec.base.model is not None or base is None:
        return None
    return base.spec.resolved().cache


def get_finetune_plan(ft: FineTune, namespace: str, base: ModelDeployment | None = None) -> FineTunePlan:
    spec = ft.spec
    model = finetune_base(ft, base)
    if model is None:
        raise ValueError(f"spec.base.modelDeployment: no ModelDeployment named {spec.base.model_deployment!r}")
    ds = spec.dataset
    dataset = PlanDataset(records=ds.records, eval_fraction=ds.eval_fraction)
    if ds.config_map is not None:
        where = f"{CONFIGMAP_MOUNT_ROOT}/{ds.config_map.name}/{ds.config_map.key}"
        dataset = dataset.model_copy(update={"path": where})
    elif ds.pvc is not None:
        dataset = dataset.model_copy(update={"path": f"{PVC_MOUNT_ROOT}/{ds.pvc.claim}/{ds.pvc.path.strip('/')}"})
    elif ds.uri is not None:
        dataset = dataset.model_copy(update={"path": local_path(ds.uri)} if ds.uri.startswith("file://")
                                     else {"uri": ds.uri})
    res = spec.resources
    return FineTunePlan(
        name=ft.metadata.name, namespace=namespace, base=model, base_model_deployment=spec.base.model_deployment,
        dataset=dataset, method=spec.method, hyperparameters=spec.hyperparameters,
        resources=PlanResources(workers=res.workers, cpus_per_worker=res.cpus, gpus_per_worker=res.gpus),
        output=local_path(spec.output) or spec.output, output_uri=spec.output,
        license=model.license, license_accepted=model.license_accepted)


def plan_checksum(plan: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:PLAN_CHECKSUM_CHARS]


def _claim(uri: str | None) -> str | None:
    return uri.partition("://")[2].split("/", 1)[0] if uri and uri.startswith("pvc://") else None


def get_finetune_objects(ft: FineTune, namespace: str, settings: Settings,
                         base: ModelDeployment | None = None) -> list[dict[str, Any]]:
    """The plan ConfigMap and the RayJob. The RayJob's name carries the plan's checksum (a changed spec
    starts a new run); a retried run resumes from the last checkpoint under the output."""
    name = ft.metadata.name
    plan = get_finetune_plan(ft, namespace, base)
    # A base ModelDeployment with spec.cache: every pod mounts its claim read-only (the driver checks the entry, the
    # Ray Train workers load it) and the run reads the prefetched entry or fails; no download, no hub token.
    cache = finetune_base_cache(ft, base)
    if cache is not None:
        plan = plan.model_copy(update={"base_cache": cache})
    wire = plan.to_wire()
    checksum = plan_checksum(wire)
    cm_name = finetune_config_map_name(name)
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": cm_name, "namespace": namespace, "labels": labels("FineTune", name, "training")},
        "data": {PLAN_FILE: json.dumps(wire, indent=2, sort_keys=True)},
    }
    volumes: list[dict[str, Any]] = [{"name": "plan", "configMap": {"name": cm_name}}]
    mounts: list[dict[str, Any]] = [{"name": "plan", "mountPath": PLAN_MOUNT_DIR, "readOnly": True}]
    ds = ft.spec.dataset
    if ds.config_map is not None:
        volumes.append({"name": "dataset", "configMap": {"name": ds.config_map.name}})
        mounts.append({"name": "dataset", "mountPath": f"{CONFIGMAP_MOUNT_ROOT}/{ds.config_map.name}",
                       "readOnly": True})
    out_claim = _claim(ft.spec.output)
    claims: dict[str, bool] = {}  # claim -> read-only
    for claim, read_only in ((_claim(plan.base.source), True), (ds.pvc.claim if ds.pvc else None, True),
                             (out_claim, False)):
        if claim is not None:
            claims[claim] = claims.get(claim, True) and read_only
    for i, (claim, read_only) in enumerate(sorted(claims.items())):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
        mounts.append({"name": f"pvc-{i}", "mountPath": f"{PVC_MOUNT_ROOT}/{claim}", "readOnly": read_only})
    if (cached := cache_volume(cache, read_only=True)) is not None:
        volumes.append(cached[0])
        mounts.append(cached[1])
    env = get_weights_env(plan.base, cache)
    res = ft.spec.resources
    rayjob = get_batch_rayjob(
        finetune_job_name(name, checksum), namespace,
        {**labels("FineTune", name, "training"), "raylight.io/plan": checksum},
        f"raylight finetune --plan {PLAN_MOUNT_DIR}/{PLAN_FILE} --json", settings, env, volumes, mounts,
        head_cpus=1, group="train", workers=res.workers, cpus=res.cpus, memory=res.memory, gpus=res.gpus,
        accelerator=res.accelerator_type)
    return [_finish(config_map), _finish(rayjob)]
