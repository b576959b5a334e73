"""The typed training plan: what a FineTune resolves to, read by the training entrypoint
(`raylight finetune --plan FILE`, `raylight_pipelines.training.lora`) on a cluster's RayJob or the local Ray.

The builder (`raylight.desired.training`) resolves the base (a ModelDeployment's model or the FineTune's
own), where the dataset is on the pod's file system and the licence the adapter inherits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, JsonValue

from raylight.api.types import ApiModel, Hyperparameters, ModelCache, ModelSource


class PlanDataset(ApiModel):
    """Exactly one of records (inline), path (a file on the worker's file system) or uri (s3://)."""

    records: list[dict[str, JsonValue]] | None = None
    path: str | None = None
    uri: str | None = None
    eval_fraction: float = 0.0


class PlanResources(ApiModel):
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: int = 0


class FineTunePlan(ApiModel):
    name: str
    namespace: str = "default"
    base: ModelSource = Field(description="The resolved base model (source, file, revision, licence).")
    base_model_deployment: str | None = None
    base_cache: ModelCache | None = Field(None, description=(
        "The base ModelDeployment's spec.cache where the run's pods mount its claim (a cluster's RayJob): the base "
        "is read from the cache's complete entry, checked, or the run fails; never downloaded."))
    dataset: PlanDataset
    method: Literal["lora", "qlora"] = "lora"
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resources: PlanResources = Field(default_factory=PlanResources)
    output: str = Field(description="Where the adapter is written: a local path, or s3://ROOT/NAME.")
    output_uri: str = Field(description="The output as the FineTune named it (s3://, pvc://, file://).")
    license: str | None = Field(None, description="Inherited from the base.")
    license_accepted: bool = False

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "base": self.base.source, "output": self.output_uri}
