"""`raylight operator`: run the Kopf operator in this process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import kopf

from raylight.operator import metrics
from raylight.operator.config import OperatorConfig
from raylight.operator.handlers import build_registry

log = logging.getLogger("raylight.operator")
PEERING_GROUP = "kopf.dev/v1"
PEERING_CHECK_DELAY = 5.0  # seconds after start-up; then every PEERING_CHECK_INTERVAL while it is missing
PEERING_CHECK_INTERVAL = 60.0

# GET of an API path: the object, or None for 404 (raises on other errors).
Getter = Callable[[str], Any]


def peering_problem(config: OperatorConfig, get: Getter) -> str | None:
    """Why Kopf would pause this operator forever waiting for its peering (None: nothing is missing).

    With a peering name, Kopf's peering is mandatory: it pauses every handler until its (Cluster)KopfPeering
    CRD is served and the named object exists, and says nothing while it waits."""
    if config.standalone:
        return None
    kind, plural = ("ClusterKopfPeering", "clusterkopfpeerings") if config.clusterwide else (
        "KopfPeering", "kopfpeerings")
    fix = ("install the Raylight chart with peering.enabled (it creates the CRD and the object), or run "
           "`raylight operator --standalone` (RAYLIGHT_STANDALONE=true) when only one operator runs")
    group = get(f"/apis/{PEERING_GROUP}")
    served = {r.get("name") for r in (group or {}).get("resources", [])}
    if plural not in served:
        return (f"waiting for Kopf peering: the {kind} CRD ({plural}.kopf.dev) is not installed, so every "
                f"handler is paused; {fix}")
    paths = [f"/apis/{PEERING_GROUP}/{plural}/{config.peering_name}"] if config.clusterwide else [
        f"/apis/{PEERING_GROUP}/namespaces/{ns}/{plural}/{config.peering_name}" for ns in config.namespaces]
    missing = [p for p in paths if get(p) is None]
    if missing:
        where = "" if config.clusterwide else f" in namespace(s) {', '.join(p.split('/')[5] for p in missing)}"
        return (f"waiting for Kopf peering: no {kind} named {config.peering_name!r}{where} "
                f"(RAYLIGHT_PEERING_NAME), so every handler is paused; create it, {fix}")
    return None


def _rest_getter() -> Getter:
    from raylight.operator.clients import RestKube

    kube = RestKube(timeout=10)

    def get(path: str) -> Any:
        try:
            return kube._call("GET", path)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise

    return get


async def watch_peering(config: OperatorConfig, get: Getter | None = None, delay: float = PEERING_CHECK_DELAY,
                        interval: float = PEERING_CHECK_INTERVAL) -> None:
    """Log, soon after start-up and then every `interval`, what the operator waits for and how to fix it."""
    if config.standalone:
        return
    getter = get or _rest_getter()
    await asyncio.sleep(delay)
    while True:
        try:
            problem = await asyncio.to_thread(peering_problem, config, getter)
        except Exception as exc:  # the API is unreachable: Kopf reports that itself
            log.debug(f"cannot check the peering: {exc}")
            problem = None
        if problem is None:
            return
        log.warning(problem)
        await asyncio.sleep(interval)


async def run(config: OperatorConfig, registry: kopf.OperatorRegistry | None = None, **kwargs: object) -> None:
    """The operator until stopped (kwargs: Kopf's stop_flag, ready_flag, ... for tests and embedding)."""
    if config.metrics_port is not None:
        port = metrics.serve(config.metrics_port)
        log.info(f"serving Prometheus metrics on :{port}/metrics")
    watchdog = asyncio.create_task(watch_peering(config))
    try:
        await kopf.operator(
            registry=registry or build_registry(config),
            clusterwide=config.clusterwide,
            namespaces=list(config.namespaces),
            standalone=config.standalone,
            # A peering name makes peering mandatory, which Kopf enforces even when standalone.
            peering_name=None if config.standalone else config.peering_name,
            liveness_endpoint=config.liveness,
            **kwargs,  # type: ignore[arg-type]
        )
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watchdog


def operator_command(args: argparse.Namespace) -> int:
    config = OperatorConfig.from_env().with_args(args)
    kopf.configure(verbose=False, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("raylight").setLevel(logging.INFO)
    asyncio.run(run(config))
    return 0
