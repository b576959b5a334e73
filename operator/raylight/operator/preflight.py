"""What the operator checks about the cluster when it starts: the KubeRay kinds every object needs, and those
that only some features need (a scheduled ingestion's RayCronJob, an Incremental upgrade's Gateway API), each
missing one logged with the feature it disables and how to get it. Objects that use a missing optional kind
also say so in their own status when they are reconciled."""

from __future__ import annotations

from dataclasses import dataclass

from raylight.operator.clients import KubeClient


@dataclass(frozen=True)
class Requirement:
    crd: str
    required: bool
    why: str


REQUIREMENTS = (
    Requirement("rayservices.ray.io", True, "every ModelDeployment and Pipeline agent runs as a KubeRay RayService: "
                "install the KubeRay operator (docs/install-on-a-cluster.md, Prerequisites)"),
    Requirement("rayjobs.ray.io", True, "ingestion runs and FineTunes run as KubeRay RayJobs: install the KubeRay "
                "operator"),
    Requirement("raycronjobs.ray.io", False, "Pipelines with spec.schedule need KubeRay >= 1.5 with its RayCronJob "
                "feature gate (helm install ... --set featureGates[0].name=RayCronJob "
                "--set featureGates[0].enabled=true); until then their status says so"),
    Requirement("gatewayclasses.gateway.networking.k8s.io", False, "spec.upgradeStrategy.type Incremental needs "
                "the Gateway API, an implementation of it, and KubeRay >= 1.5.1 with its "
                "RayServiceIncrementalUpgrade feature gate; such ModelDeployments are refused until then"),
)


def missing(kube: KubeClient) -> list[Requirement]:
    """The requirements whose CustomResourceDefinition the cluster does not have."""
    return [r for r in REQUIREMENTS if kube.get("CustomResourceDefinition", "", r.crd) is None]


def messages(kube: KubeClient) -> list[tuple[bool, str]]:
    """(required, one sentence) for each missing requirement, for the operator's log at start."""
    return [(r.required, f"{'required' if r.required else 'optional'} CRD {r.crd} is missing: {r.why}")
            for r in missing(kube)]
