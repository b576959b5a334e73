"""The raylight.io/v1alpha1 API types, manifest loading and validation."""

from raylight.api.types import (
    API_VERSION,
    GROUP,
    KINDS,
    VERSION,
    ModelDeployment,
    ModelDeploymentSpec,
    Pipeline,
    PipelineSpec,
    Resource,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "Pipeline",
    "PipelineSpec",
    "Resource",
]
