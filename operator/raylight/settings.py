"""Operator and renderer settings, read once from the environment (RAYLIGHT_*)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from raylight import __version__
from raylight.governance.licenses import LicensePolicy

RAY_VERSION = "2.60.0"


@dataclass(frozen=True)
class Settings:
    runtime_image: str = f"ghcr.io/raylight-io/raylight-runtime:{__version__}"
    vllm_image: str = f"rayproject/ray-llm:{RAY_VERSION}-py311-cu128"
    ray_version: str = RAY_VERSION
    qdrant_url: str = "http://qdrant.raylight-system.svc:6333"
    postgres_secret: str | None = None  # Secret with key "dsn" for agent threads
    license_policy: LicensePolicy = field(default_factory=LicensePolicy)
    cluster_domain: str = "cluster.local"
    serve_haproxy: bool = False  # RayService pods serve through HAProxy (RAY_SERVE_ENABLE_HA_PROXY), opt-in

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        defaults = cls()
        return cls(
            runtime_image=env.get("RAYLIGHT_RUNTIME_IMAGE", defaults.runtime_image),
            vllm_image=env.get("RAYLIGHT_VLLM_IMAGE", defaults.vllm_image),
            ray_version=env.get("RAYLIGHT_RAY_VERSION", defaults.ray_version),
            qdrant_url=env.get("RAYLIGHT_QDRANT_URL", defaults.qdrant_url),
            postgres_secret=env.get("RAYLIGHT_POSTGRES_SECRET") or None,
            license_policy=LicensePolicy.from_env(
                env.get("RAYLIGHT_LICENSE_DENY", ""), env.get("RAYLIGHT_LICENSE_ALLOW_UNKNOWN", "")
            ),
            cluster_domain=env.get("RAYLIGHT_CLUSTER_DOMAIN", defaults.cluster_domain),
            serve_haproxy=env.get("RAYLIGHT_SERVE_HAPROXY", "").lower() in ("1", "true", "yes"),
        )
