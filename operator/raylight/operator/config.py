"""Operator settings: the shared `Settings` (images, Qdrant URL, licence policy) plus what only the
running operator needs (namespaces, peering, probes, timer cadence), read from RAYLIGHT_* and flags.

Environment (the chart sets these): RAYLIGHT_RUNTIME_IMAGE, RAYLIGHT_VLLM_IMAGE, RAYLIGHT_RAY_VERSION,
RAYLIGHT_QDRANT_URL, RAYLIGHT_QDRANT_API_KEY, RAYLIGHT_POSTGRES_SECRET, RAYLIGHT_LICENSE_DENY,
RAYLIGHT_LICENSE_ALLOW_UNKNOWN, RAYLIGHT_CLUSTER_DOMAIN, RAYLIGHT_SERVE_HAPROXY, RAYLIGHT_WATCH_NAMESPACES
(comma list; empty: cluster-wide), RAYLIGHT_STANDALONE, RAYLIGHT_PEERING_NAME (a ClusterKopfPeering the chart creates),
RAYLIGHT_LIVENESS, RAYLIGHT_WEBHOOK_PORT, RAYLIGHT_WEBHOOK_CERTFILE, RAYLIGHT_WEBHOOK_KEYFILE,
RAYLIGHT_WEBHOOK_INSECURE, RAYLIGHT_STATUS_INTERVAL, RAYLIGHT_PROGRESS_DEADLINE (seconds),
RAYLIGHT_MAX_WORKERS.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, replace

from raylight.settings import Settings


def _split(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class OperatorConfig:
    settings: Settings = field(default_factory=Settings)
    namespaces: tuple[str, ...] = ()  # empty: every namespace (cluster-wide)
    standalone: bool = False  # no peering; only one instance may run
    peering_name: str = "raylight"
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz
    webhook_port: int | None = None  # serve the validating webhook here (plain HTTP behind TLS only if
    webhook_addr: str = "0.0.0.0"  # webhook_certfile/keyfile are unset: the chart mounts a certificate)
    webhook_certfile: str | None = None
    webhook_keyfile: str | None = None
    webhook_insecure: bool = False
    webhook_cert_check_seconds: float = 10.0  # how often a renewed serving certificate is looked for
    status_interval: float = 30.0  # seconds between status/drift checks of each object
    # A rollout (new Ray cluster, Serve applications, ingestion pods) not finished this many seconds after
    # it began is reported Degraded (ProgressDeadlineExceeded) with what to do; 0 turns the check off.
    progress_deadline: float = 1800.0
    request_timeout: float = 30.0
    watch_timeout: int = 300
    max_workers: int = 16
    timer_exit_polling: float = 2.0  # a deleted object waits for its running timer this often (Kopf: 60)
    idle_timeout: float = 5.0  # Kopf's per-object workers linger this long (and delay a shutdown)
    qdrant_api_key: str | None = None  # for the default Qdrant server (Pipelines may name their own)
    metrics_port: int | None = None  # serve Prometheus /metrics here (RAYLIGHT_METRICS_PORT)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        env = dict(os.environ if env is None else env)
        d = cls()
        port = env.get("RAYLIGHT_WEBHOOK_PORT", "")
        return cls(
            settings=Settings.from_env(env),
            namespaces=_split(env.get("RAYLIGHT_WATCH_NAMESPACES", "")),
            standalone=_flag(env.get("RAYLIGHT_STANDALONE", "")),
            peering_name=env.get("RAYLIGHT_PEERING_NAME", d.peering_name),
            liveness=env.get("RAYLIGHT_LIVENESS") or d.liveness,
            webhook_port=int(port) if port else None,
            webhook_certfile=env.get("RAYLIGHT_WEBHOOK_CERTFILE") or None,
            webhook_keyfile=env.get("RAYLIGHT_WEBHOOK_KEYFILE") or None,
            webhook_insecure=_flag(env.get("RAYLIGHT_WEBHOOK_INSECURE", "")),
            webhook_cert_check_seconds=float(env.get("RAYLIGHT_WEBHOOK_CERT_CHECK_SECONDS") or 10.0),
            status_interval=float(env.get("RAYLIGHT_STATUS_INTERVAL", d.status_interval)),
            progress_deadline=float(env.get("RAYLIGHT_PROGRESS_DEADLINE", d.progress_deadline)),
            max_workers=int(env.get("RAYLIGHT_MAX_WORKERS", d.max_workers)),
            qdrant_api_key=env.get("RAYLIGHT_QDRANT_API_KEY") or None,
            metrics_port=int(env["RAYLIGHT_METRICS_PORT"]) if env.get("RAYLIGHT_METRICS_PORT") else None,
        )

    def with_args(self, args: argparse.Namespace) -> OperatorConfig:
        """Command-line flags of `raylight operator` override the environment."""
        changes: dict[str, object] = {}
        if getattr(args, "namespaces", None):
            changes["namespaces"] = tuple(args.namespaces)
        if getattr(args, "standalone", False):
            changes["standalone"] = True
        if getattr(args, "liveness", None):
            changes["liveness"] = args.liveness
        if getattr(args, "webhook_port", None):
            changes["webhook_port"] = args.webhook_port
        return replace(self, **changes)  # type: ignore[arg-type]
