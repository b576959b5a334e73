"""Accelerator vendors, in one place: which Kubernetes extended resource a pod asks for, which taint the
vendor's device plugin nodes usually carry, how Ray counts the devices, and which Ray accelerator types
(`ray.util.accelerators`) belong to the vendor, with their memory (GiB per device; the fit check).

A replica with `accelerator_type: X` asks Ray for the node resource `accelerator_type:X`, which Ray detects
from the hardware; the pod must therefore ask Kubernetes for the *same vendor's* devices, or the replica can
never be placed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vendor:
    name: str  # for messages
    k8s_resource: str  # the device plugin's extended resource, e.g. nvidia.com/gpu
    ray_resource: str  # how Ray counts the devices: GPU (num_gpus), HPU, TPU
    toleration_key: str  # the taint GPU node pools of this vendor usually carry
    memory_gib: dict[str, float]  # Ray accelerator type -> GiB per device

    @property
    def supported(self) -> bool:
        """Served by Raylight today: the Serve options count devices as `num_gpus`, so only vendors that Ray
        counts as GPU can be placed (Gaudi is Ray's HPU, TPU its TPU resource)."""
        return self.ray_resource == "GPU"

    def toleration(self) -> dict[str, str]:
        return {"key": self.toleration_key, "operator": "Exists", "effect": "NoSchedule"}


NVIDIA = Vendor("NVIDIA", "nvidia.com/gpu", "GPU", "nvidia.com/gpu", {
    "B300": 288, "B200": 192, "GB200": 192, "GB300": 288, "H200": 141, "H100": 80, "H20": 96,
    "A100-80G": 80, "A100-40G": 40, "A100": 80, "L40S": 48, "L4": 24, "A10G": 24, "T4": 16, "V100": 16,
    "P100": 16, "RTX-PRO-6000": 96,
})
AMD = Vendor("AMD", "amd.com/gpu", "GPU", "amd.com/gpu", {
    "AMD-Instinct-MI300A": 128, "AMD-Instinct-MI300X-OAM": 192, "AMD-Instinct-MI325X-OAM": 256,
    "AMD-Instinct-MI350X-OAM": 288, "AMD-Instinct-MI355X-OAM": 288, "AMD-Instinct-MI250X-MI250": 128,
    "AMD-Instinct-MI210": 64,
})
INTEL_GAUDI = Vendor("Intel Gaudi", "habana.ai/gaudi", "HPU", "habana.ai/gaudi", {"Intel-GAUDI": 96})
GOOGLE_TPU = Vendor("Google TPU", "google.com/tpu", "TPU", "google.com/tpu", {
    "TPU-V4": 32, "TPU-V5P": 95, "TPU-V5LITEPOD": 16, "TPU-V6E": 32,
})
VENDORS: tuple[Vendor, ...] = (NVIDIA, AMD, INTEL_GAUDI, GOOGLE_TPU)
DEFAULT_VENDOR = NVIDIA  # gpus without an acceleratorType

VENDOR_OF: dict[str, Vendor] = {t: v for v in VENDORS for t in v.memory_gib}
# What `resources.acceleratorType` accepts: the types of vendors whose devices Ray counts as GPU.
SUPPORTED_ACCELERATORS: dict[str, float] = {t: g for v in VENDORS if v.supported for t, g in v.memory_gib.items()}
# Every extended resource name of a known accelerator vendor (pods, placement).
DEVICE_RESOURCES: frozenset[str] = frozenset(v.k8s_resource for v in VENDORS)


def vendor_of(accelerator_type: str | None) -> Vendor:
    """The vendor of a Ray accelerator type; the default (NVIDIA) when none is given."""
    if accelerator_type is None:
        return DEFAULT_VENDOR
    return VENDOR_OF[accelerator_type]


def check_accelerator(accelerator_type: str) -> str | None:
    """None when Raylight can place replicas on this accelerator type, else why not."""
    vendor = VENDOR_OF.get(accelerator_type)
    if vendor is None:
        return f"unknown accelerator {accelerator_type!r}; one of {', '.join(sorted(SUPPORTED_ACCELERATORS))}"
    if not vendor.supported:
        return (f"{accelerator_type} ({vendor.name}, {vendor.k8s_resource}) is not supported yet: Ray schedules it "
                f"as the {vendor.ray_resource} resource, not as GPUs; one of "
                f"{', '.join(sorted(SUPPORTED_ACCELERATORS))}")
    return None
