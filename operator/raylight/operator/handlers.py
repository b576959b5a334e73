"""Kopf glue: which events call which reconcile, and where results go (status, Events). The logic is
in reconcile.py (I/O through clients.py) and status.py/admission.py (pure)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf

from raylight.api.types import GROUP, VERSION
from raylight.desired.kubernetes import MANAGED_BY
from raylight.operator import admission, metrics, preflight
from raylight.operator.clients import KubeClient, QdrantServers, RestKube, StoreFactory
from raylight.operator.config import OperatorConfig
from raylight.operator.reconcile import Deps, Reconciler, Result, owner_of
from raylight.operator.status import changed
from raylight.operator.webhook_tls import ReloadingWebhookServer

FINALIZER = "raylight.io/finalizer"
CHILD_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}


def _publish(result: Result, body: Any, patch: kopf.Patch | None, logger: logging.Logger | Any) -> None:
    old = body.get("status") or {}
    if patch is not None and changed(result.status, old):
        patch.setdefault("status", {}).update(result.status)
    for kind, reason, message in result.events:
        kopf.event(body, type=kind, reason=reason, message=message)
        logger.info(f"{reason}: {message}")


def build_registry(config: OperatorConfig, kube: KubeClient | None = None,
                   stores: StoreFactory | None = None) -> kopf.OperatorRegistry:
    """A registry with every handler, bound to this configuration and these clients."""
    registry = kopf.OperatorRegistry()
    rec = Reconciler(Deps(kube or RestKube(timeout=config.request_timeout), stores or QdrantServers(), config))
    backoff = max(min(config.status_interval, 15.0), 0.2)
    seen: dict[str, Any] = {}  # child uid -> generation last seen (hand edits bump it)
    seen_lock = threading.Lock()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = config.watch_timeout
        settings.watching.client_timeout = config.watch_timeout + 30
        settings.networking.request_timeout = config.request_timeout
        settings.execution.max_workers = config.max_workers
        settings.queueing.idle_timeout = config.idle_timeout
        # A timer caught mid-pass (sync, in a thread) delays the finalizer until it ends: look again soon.
        settings.background.instant_exit_timeout = min(0.5, config.timer_exit_polling)
        settings.background.cancellation_polling = config.timer_exit_polling
        settings.peering.clusterwide = config.clusterwide
        if config.webhook_port and config.webhook_certfile and config.webhook_keyfile and not config.webhook_insecure:
            # a mounted certificate (cert-manager's or the chart's): renewed in place, never a port gap
            settings.admission.server = ReloadingWebhookServer(
                addr=config.webhook_addr, port=config.webhook_port, certfile=config.webhook_certfile,
                pkeyfile=config.webhook_keyfile, check_interval=config.webhook_cert_check_seconds)
            settings.admission.managed = None  # the chart owns the ValidatingWebhookConfiguration
        elif config.webhook_port:
            settings.admission.server = kopf.WebhookServer(
                addr=config.webhook_addr, port=config.webhook_port, certfile=config.webhook_certfile,
                pkeyfile=config.webhook_keyfile, insecure=config.webhook_insecure)
            settings.admission.managed = None  # the chart owns the ValidatingWebhookConfiguration

    @kopf.on.startup(registry=registry)
    def preflight_check(logger: logging.Logger | Any, **_: Any) -> None:
        try:
            problems = preflight.messages(rec.deps.kube)
        except Exception as exc:  # the check must not keep the operator from starting
            logger.warning(f"could not check the cluster's CRDs: {exc}")
            return
        for required, message in problems:
            (logger.error if required else logger.warning)(message)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    # ------------------------------------------------------------ ModelDeployment

    @kopf.on.resume(GROUP, VERSION, "modeldeployments", registry=registry, backoff=backoff)
    @kopf.on.create(GROUP, VERSION, "modeldeployments", registry=registry, backoff=backoff)
    @kopf.on.update(GROUP, VERSION, "modeldeployments", registry=registry, backoff=backoff)
    def model_changed(**kw: Any) -> None:
        _publish(rec.model(kw["body"]), kw["body"], kw["patch"], kw["logger"])

    @kopf.timer(GROUP, VERSION, "modeldeployments", registry=registry, interval=config.status_interval,
                initial_delay=config.status_interval)
    def model_refresh(**kw: Any) -> None:
        _publish(rec.model(kw["body"]), kw["body"], kw["patch"], kw["logger"])

    @kopf.on.delete(GROUP, VERSION, "modeldeployments", registry=registry, optional=True)
    def model_deleted(**kw: Any) -> None:
        rec.deleted(kw["body"])  # after any pass in flight; no later one writes (children go by ownerReferences)
        metrics.forget(kw["body"])

    # ------------------------------------------------------------ Pipeline

    @kopf.on.resume(GROUP, VERSION, "pipelines", registry=registry, backoff=backoff)
    @kopf.on.create(GROUP, VERSION, "pipelines", registry=registry, backoff=backoff)
    @kopf.on.update(GROUP, VERSION, "pipelines", registry=registry, backoff=backoff)
    def pipeline_changed(**kw: Any) -> None:
        _publish(rec.pipeline(kw["body"]), kw["body"], kw["patch"], kw["logger"])

    @kopf.timer(GROUP, VERSION, "pipelines", registry=registry, interval=config.status_interval,
                initial_delay=config.status_interval)
    def pipeline_refresh(**kw: Any) -> None:
        _publish(rec.pipeline(kw["body"]), kw["body"], kw["patch"], kw["logger"])

    @kopf.on.delete(GROUP, VERSION, "pipelines", registry=registry, backoff=backoff)
    def pipeline_deleted(**kw: Any) -> None:
        body, logger = kw["body"], kw["logger"]
        try:
            kind, reason, message = rec.pipeline_deleted(body)
        except Exception as exc:  # Qdrant unreachable: keep the finalizer and try again
            raise kopf.TemporaryError(f"cannot clean up the collection: {exc}", delay=backoff) from exc
        kopf.event(body, type=kind, reason=reason, message=message)
        logger.info(message)
        metrics.forget(body)

    # ------------------------------------------------------------ FineTune

    @kopf.on.resume(GROUP, VERSION, "finetunes", registry=registry, backoff=backoff)
    @kopf.on.create(GROUP, VERSION, "finetunes", registry=registry, backoff=backoff)
    @kopf.on.update(GROUP, VERSION, "finetunes", registry=registry, backoff=backoff)
    def finetune_changed(**kw: Any) -> None:
        _publish(rec.finetune(kw["body"]), kw["body"], kw["patch"], kw["logger"])

    @kopf.timer(GROUP, VERSION, "finetunes", registry=registry, interval=config.status_interval,
                initial_delay=config.status_interval)
    def finetune_refresh(**kw: Any) -> None:
        _publish(rec.finetune(kw["body"]), kw["body"], kw["patch"], kw["logger"])

    @kopf.on.delete(GROUP, VERSION, "finetunes", registry=registry, optional=True)
    def finetune_deleted(**kw: Any) -> None:
        rec.deleted(kw["body"])  # the adapter stays where it was written; children go by ownerReferences

    # ------------------------------------------------------------ children: drift

    def child_event(event: Any, body: kopf.Body, logger: Any) -> None:
        owner = owner_of(body)
        if owner is None:
            return
        uid, generation = body["metadata"].get("uid"), body["metadata"].get("generation")
        with seen_lock:
            if event.get("type") == "DELETED":
                seen.pop(uid, None)
            else:
                first, before = uid not in seen, seen.get(uid)
                seen[uid] = generation
                if first or before == generation:
                    return  # status-only updates, or the first sight: nothing to restore
        kind, namespace, name = owner
        owner_body = rec.deps.kube.get(kind, namespace, name)
        if owner_body is None or owner_body["metadata"].get("deletionTimestamp"):
            return
        result = rec.model(owner_body) if kind == "ModelDeployment" else (
            rec.finetune(owner_body) if kind == "FineTune" else rec.pipeline(owner_body))
        if result.writes:
            metrics.DRIFT_REPAIRS.labels(kind).inc()
        for message in result.writes:
            kopf.event(kopf.Body(owner_body),  # type: ignore[arg-type]
                       type="Normal", reason="Restored", message=message)
            logger.info(f"restored for {kind} {namespace}/{name}: {message}")

    @kopf.on.event("ray.io", "v1", "rayservices", labels=CHILD_LABELS, registry=registry)
    def rayservice_event(**kw: Any) -> None:
        child_event(kw["event"], kw["body"], kw["logger"])

    @kopf.on.event("ray.io", "v1", "rayjobs", labels=CHILD_LABELS, registry=registry)
    def rayjob_event(**kw: Any) -> None:
        child_event(kw["event"], kw["body"], kw["logger"])

    @kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS, registry=registry)
    def job_event(**kw: Any) -> None:  # the weight cache's prefetch (spec.cache)
        child_event(kw["event"], kw["body"], kw["logger"])

    # ------------------------------------------------------------ admission

    # Only with a webhook server: Kopf refuses admission handlers it cannot serve.
    for plural, webhook_id in admission.WEBHOOK_IDS.items() if config.webhook_port else ():
        @kopf.on.validate(GROUP, VERSION, plural, id=webhook_id, operations=["CREATE", "UPDATE"],
                          registry=registry)
        async def validate(body: kopf.Body, operation: str | None = None, old: Any = None, **_: Any) -> None:
            if admission.exempt(operation, body, old):
                return
            found = admission.problems(body, config.settings.license_policy)
            if found:
                metrics.ADMISSION_REJECTIONS.labels(body.get("kind", "")).inc()
                raise kopf.AdmissionError(admission.message(found), code=422)

    return registry
