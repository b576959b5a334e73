"""One idempotent reconcile per object: desired children from the pure builders, written only where they
differ from what is live, then the status that what is live deserves. No Kopf here: handlers call
these with the object's body and write back the status they return."""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from raylight.api.cache import cache_plan
from raylight.api.limits import LimitExceeded, object_problems
from raylight.api.manifests import field_path
from raylight.api.names import agent_rayservice_name, ingestion_cron_name, model_rayservice_name, service_url
from raylight.api.types import API_VERSION, FineTune, ModelDeployment, Pipeline
from raylight.api.validate import check_adapters, check_finetune, check_model, check_references
from raylight.desired.cache import get_cache_job
from raylight.desired.kubernetes import (
    RECREATE_ANNOTATION,
    get_agent_rayservice,
    get_ingestion_cron,
    get_ingestion_objects,
    get_model_rayservice,
)
from raylight.desired.pipeline import get_collection_plan
from raylight.desired.training import get_finetune_objects, resolve_adapters
from raylight.operator import metrics, schedule
from raylight.operator.clients import Conflict, KubeClient, Obj, StoreFactory, secret_value
from raylight.operator.config import OperatorConfig
from raylight.operator.patching import child_patch
from raylight.operator.status import (
    Cond,
    Health,
    Verdict,
    cache_health,
    cache_status,
    cache_wait,
    clock,
    conditions,
    finetune_status,
    ingestion_progress,
    job_phase,
    model_verdict,
    models_health,
    overdue,
    pipeline_verdict,
    rayjob_finished,
    rayjob_health,
    rayservice_health,
)

log = logging.getLogger(__name__)
PLAN_LABEL = "raylight.io/plan"
Event = tuple[str, str, str]  # (Normal|Warning, reason, message)


def utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Result:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)


@dataclass
class Deps:
    kube: KubeClient
    stores: StoreFactory
    config: OperatorConfig
    clock: Callable[[], str] = utcnow


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body["kind"],
            "name": body["metadata"]["name"], "uid": body["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def owned(obj: Obj, body: Mapping[str, Any]) -> Obj:
    obj["metadata"]["ownerReferences"] = [owner_reference(body)]
    return obj


def owner_of(child: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(kind, namespace, name) of the raylight object controlling a child, if any."""
    for ref in child.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("apiVersion") == API_VERSION and ref.get("controller"):
            return ref["kind"], child["metadata"].get("namespace", ""), ref["name"]
    return None


def ingestion_report(pods: list[Obj]) -> dict[str, Any]:
    """The summary a finished ingestion run left as its submitter pod's termination message (counts, skips
    and failures with reasons, or the error that stopped it; see raylight_pipelines.ingest.sync.SyncReport.summary),
    from the newest pod that has one."""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((container.get("state") or {}).get("terminated") or {}).get("message")
            try:
                report = json.loads(message) if message else None
            except ValueError:
                continue
            if isinstance(report, dict):
                return report
    return {}


def _parse(cls: type[ModelDeployment] | type[Pipeline] | type[FineTune], body: Mapping[str, Any]) -> Any:
    meta = body["metadata"]
    return cls.model_validate({"apiVersion": API_VERSION, "kind": cls.__name__,
                               "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
                               "spec": body.get("spec") or {}})


def _invalid(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{field_path(e['loc'])}: {e['msg']}"


TOMBSTONE_SECONDS = 3600.0  # how long a deleted object's uid is remembered (far longer than any pass)
NOTHING = Result({})  # a pass that wrote nothing and has no status to report


class Reconciler:
    """Reconciles ModelDeployments and Pipelines, one pass at a time per object: create/update/resume
    handlers, timers, child events and the delete handler of one object never interleave (Kopf runs
    them concurrently). Deletion wins: once an object's delete handler has run, or its body carries a
    deletionTimestamp, a pass writes nothing for it, so nothing is created after its clean-up."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._deleted: dict[str, float] = {}  # uid -> when its deletion began (time.monotonic)
        self._guard = threading.Lock()
        # uid -> (inputs, desired objects): building a RayService (its serveConfigV2 YAML above all) costs
        # far more than comparing it, and the timer passes over unchanged objects all the time.
        self._desired: dict[str, tuple[Any, list[Obj]]] = {}

    def _built(self, body: Mapping[str, Any], inputs: Any, build: Callable[[], list[Obj]]) -> list[Obj]:
        uid = body["metadata"].get("uid", "")
        with self._guard:
            cached = self._desired.get(uid)
        if cached is None or cached[0] != inputs:
            cached = (inputs, [owned(o, body) for o in build()])
            with self._guard:
                self._desired[uid] = cached
        return copy.deepcopy(cached[1])

    @contextlib.contextmanager
    def _turn(self, body: Mapping[str, Any]) -> Iterator[bool]:
        """This object's turn (one at a time per object); yields False when it is being deleted."""
        meta = body["metadata"]
        key = (body.get("kind", ""), meta.get("namespace", "default"), meta["name"])
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                deleted = meta.get("uid") in self._deleted
            yield not (deleted or meta.get("deletionTimestamp"))

    def deleted(self, body: Mapping[str, Any]) -> None:
        """Remember that this object is being deleted: a pass still running finishes first, and no later
        one (a timer or child event holding an older body) writes anything for it."""
        meta = body["metadata"]
        uid = meta.get("uid", "")
        with self._turn(body):
            now = time.monotonic()
            with self._guard:
                self._deleted = {u: t for u, t in self._deleted.items() if now - t < TOMBSTONE_SECONDS}
                self._deleted[uid] = now
                self._desired.pop(uid, None)
                self._locks.pop((body.get("kind", ""), meta.get("namespace", "default"), meta["name"]), None)

    # ------------------------------------------------------------ children

    def apply(self, desired: Obj, writes: list[str]) -> Obj:
        """Create the child, or patch what differs; returns the live object."""
        if problems := object_problems(desired):  # what the API server or etcd would refuse: never sent
            raise LimitExceeded("; ".join(problems))
        kube = self.deps.kube
        kind, meta = desired["kind"], desired["metadata"]
        ns, name = meta["namespace"], meta["name"]
        live = kube.get(kind, ns, name)
        if live is None:
            try:
                created = kube.create(kind, ns, desired)
                writes.append(f"created {kind} {name}")
                return created
            except Conflict:  # another reconcile (or a previous operator run) was first
                live = kube.get(kind, ns, name)
                if live is None:
                    raise
        if live["metadata"].get("deletionTimestamp"):  # on its way out: created anew once it is gone
            return live
        if _recreate(desired, live):
            kube.delete(kind, ns, name)
            writes.append(f"deleted {kind} {name} to recreate it (upgradeStrategy Recreate: its Ray cluster changed)")
            return kube.get(kind, ns, name) or live
        patch = child_patch(desired, live)
        if not patch:
            return live
        patched = kube.patch(kind, ns, name, patch)
        writes.append(f"patched {kind} {name} ({', '.join(sorted(_leaves(patch)))})")
        return patched if patched is not None else self.apply(desired, writes)

    # ------------------------------------------------------------ ModelDeployment

    def model(self, body: Mapping[str, Any]) -> Result:
        meta = body["metadata"]
        with self._turn(body) as live:
            if not live:
                return NOTHING
            return metrics.observe("ModelDeployment", body,
                                   lambda: self._model(body, meta.get("namespace", "default"), meta["name"]))

    def _model(self, body: Mapping[str, Any], ns: str, name: str) -> Result:
        settings, writes, now = self.deps.config.settings, list[str](), self.deps.clock()
        try:
            md: ModelDeployment = _parse(ModelDeployment, body)
        except ValidationError as exc:
            verdict = Verdict("Failed", [])
            return self._result(body, verdict, {"endpoint": None}, writes, now,
                                failure=("InvalidSpec", _invalid(exc)))
        waiting, outputs = self._adapter_outputs(md, ns)
        if waiting:  # an adapter names a FineTune that has not produced its adapter yet: deploy nothing
            reason, why = waiting
            return self._result(body, Verdict("Pending" if reason == "WaitingForFineTune" else "Failed", []),
                                {"endpoint": None}, writes, now, failure=(reason, why))
        md = resolve_adapters(md, outputs)
        problems = dict(check_model(md, settings.license_policy))
        license_problem = next((m for f, m in problems.items() if f != "spec.resources"), None)
        fit_problem = problems.get("spec.resources")
        live = None
        gateway = self._gateway_problem(md)
        if gateway:
            return self._result(body, Verdict("Failed", []), {"endpoint": None}, writes, now,
                                failure=("GatewayClassMissing", gateway))
        cache: tuple[Health, dict[str, Any]] | None = None
        health: Health | None = None
        if not problems:
            inputs = (body["metadata"].get("generation"), md.spec.to_wire())
            desired, *job = self._built(body, inputs, lambda: [
                get_model_rayservice(md, ns, settings), *filter(None, [get_cache_job(md, ns, settings)])])
            if job:
                cache = self._cache(md, ns, job[0], (body.get("status") or {}).get("cache"), writes, now)
            if cache is None or cache[0].ready:
                live = self.apply(desired, writes)
            else:  # the pods would mount an entry that is not there: wait; a RayService of an earlier pin serves on
                live = self.deps.kube.get("RayService", ns, model_rayservice_name(name))
                serving = rayservice_health(live, md.spec.replicas.min == 0) if live is not None else None
                health = replace(cache[0], ready=bool(serving and serving.ready),
                                 ready_replicas=serving.ready_replicas if serving else 0)
        if health is None:
            health = rayservice_health(live, md.spec.replicas.min == 0)
        health = self._deadline(body, now)(health, None)
        verdict = model_verdict(health, license_problem, fit_problem)
        if cache is not None:
            verdict.conditions.append(Cond("CacheReady", cache[0].ready, cache[0].reason, cache[0].message))
        extra = {
            "endpoint": None if problems else service_url(model_rayservice_name(name), ns, settings.cluster_domain),
            "readyReplicas": health.ready_replicas,
            "runtime": md.spec.resolved().resolved_runtime,
            "upgradeStrategy": md.spec.upgrade_type,
            "cache": cache[1] if cache is not None else None,
        }
        result = self._result(body, verdict, extra, writes, now)
        result.events.extend(cache_events((body.get("status") or {}).get("cache"), cache[1] if cache else None))
        was: dict[str, Any] = next((c for c in (body.get("status") or {}).get("conditions") or []
                                    if c.get("type") == "LicenseApproved"), {})
        if license_problem and was.get("status") != "False":  # once, when the refusal begins
            result.events.append(("Warning", "LicenseRefused", license_problem))
        return result

    def _cache(self, md: ModelDeployment, ns: str, job: Obj, before: Mapping[str, Any] | None, writes: list[str],
               now: str) -> tuple[Health, dict[str, Any]]:
        """The weight cache's prefetch (spec.cache): its claim must exist; its Job runs once per plan (a new pin is
        a new Job; one still running for an earlier pin is stopped: its entry stays without a marker, which no
        reader trusts); a Job that succeeded and expired (TTL) keeps the outcome status.cache recorded, a failed
        one that is gone (deleted, or expired) is run again.
        (health for the CacheReady condition, status.cache)."""
        kube, name = self.deps.kube, md.metadata.name
        plan = cache_plan(md.spec)
        assert plan is not None and md.spec.cache is not None  # a cache Job exists only for spec.cache
        pvc, source = md.spec.cache.pvc, f"{plan.source.source} at revision {plan.revision}"
        own = job["metadata"]["name"]
        prefetches = {"raylight.io/modeldeployment": name, "app.kubernetes.io/component": "cache"}
        for other in kube.list("Job", ns, prefetches):
            other_name = other["metadata"]["name"]
            if other_name != own and job_phase(other) in ("Pending", "Running") and kube.delete("Job", ns, other_name):
                writes.append(f"deleted superseded Job {other_name}")
        before = dict(before or {})
        if before.get("job") == own and before.get("phase") == "Succeeded":
            live = kube.get("Job", ns, own)
            if live is None or job_phase(live) == "Succeeded":  # expired (TTL), or still saying so
                return cache_health(before, source), before
        # A failed Job stays (and status says why) until it is deleted or expires; then the next pass retries.
        if kube.get("PersistentVolumeClaim", ns, pvc) is None:
            status = {"phase": "Pending", "job": own, "pvc": pvc, "path": plan.entry,
                      "message": f"spec.cache.pvc: no PersistentVolumeClaim {pvc!r} in namespace {ns}"}
            return Health(False, True, False, "CachePending", f"{status['message']}: create it (ReadWriteMany, big "
                          "enough for the weights); the prefetch Job starts once it exists", since=now,
                          if_stuck=f"create PersistentVolumeClaim {pvc}, or correct spec.cache.pvc"), status
        live = kube.get("Job", ns, own)
        if live is None:
            try:
                live = kube.create("Job", ns, job)
                writes.append(f"created Job {own}")
            except Conflict:
                live = kube.get("Job", ns, own)
        report: dict[str, Any] = {}
        if job_phase(live) in ("Succeeded", "Failed"):
            report = self._run_report("ModelDeployment", ns, name, job)
        status = cache_status(live, report, pvc, plan.entry, now)
        return cache_health(status, source), status

    def _gateway_problem(self, md: ModelDeployment) -> str | None:
        """An Incremental upgrade needs the GatewayClass it names (so the Gateway API is installed): why not."""
        options = md.spec.upgrade_strategy.incremental
        if md.spec.upgrade_type != "Incremental" or options is None:
            return None
        if self.deps.kube.get("GatewayClass", "", options.gateway_class_name) is not None:
            return None
        return (f"spec.upgradeStrategy.incremental.gatewayClassName: no GatewayClass "
                f"{options.gateway_class_name!r} in the cluster. The incremental upgrade needs the Gateway API and "
                "an implementation of it (e.g. Istio, Envoy Gateway) and KubeRay >= 1.5.1 with its "
                "RayServiceIncrementalUpgrade feature gate; or set spec.upgradeStrategy.type to NewCluster or "
                "Recreate")

    def _adapter_outputs(self, md: ModelDeployment, ns: str) -> tuple[tuple[str, str] | None, dict[str, str]]:
        """((reason, why) the model is not deployed: WaitingForFineTune, AdapterIncompatible or
        AdapterNotOnCluster; or None), FineTune name -> its adapter's URI) for the adapters naming a
        FineTune: each is served once its FineTune has succeeded, from the URI its status reports, and only
        if it was trained on a base compatible with this one and written where the serving pods read it
        (never a file:// URI on a cluster)."""
        outputs: dict[str, str] = {}
        finetunes: dict[str, FineTune] = {}
        waiting: tuple[str, str] | None = None  # reported after the compatibility checks, which need no run
        for a in md.spec.adapters:
            if a.fine_tune is None:
                continue
            ft = self.deps.kube.get("FineTune", ns, a.fine_tune)
            status = (ft or {}).get("status") or {}
            if ft is None:
                return ("WaitingForFineTune", f"spec.adapters: no FineTune named {a.fine_tune!r} in namespace {ns}"), {}
            with contextlib.suppress(ValidationError):
                finetunes[a.fine_tune] = _parse(FineTune, ft)
            if status.get("phase") != "Succeeded" or not status.get("adapterUri"):
                waiting = waiting or ("WaitingForFineTune", f"adapter {a.name} waits for FineTune {a.fine_tune} "
                                      f"(phase {status.get('phase') or 'Pending'})")
                continue
            outputs[a.fine_tune] = str(status["adapterUri"])
        models: dict[str, ModelDeployment] = {}
        for tune in finetunes.values():
            base = tune.spec.base.model_deployment
            if not base or base == md.metadata.name:
                continue
            body = self.deps.kube.get("ModelDeployment", ns, base)
            if body is not None:
                with contextlib.suppress(ValidationError):
                    models[base] = _parse(ModelDeployment, body)
        for f, message in check_adapters(md, finetunes, {**models, md.metadata.name: md}, cluster=True):
            return ("AdapterNotOnCluster" if "one machine" in message else "AdapterIncompatible", f"{f}: {message}"), {}
        if waiting:
            return waiting, {}
        for name, uri in outputs.items():
            if uri.startswith("file://"):
                return ("AdapterNotOnCluster", f"FineTune {name} reports its adapter at {uri}, a path on one machine: "
                        "the serving pods cannot read it (write adapters to pvc:// or s3:// on a cluster)"), {}
        return None, outputs

    def _deadline(self, body: Mapping[str, Any], now: str) -> Callable[[Health, str | None], Health]:
        """`overdue` for this object's children: a transition began no earlier than this object's
        Progressing condition went True for this generation (now, if it is not True yet), nor than
        the part condition named (e.g. AgentReady) went False."""
        old = list((body.get("status") or {}).get("conditions") or [])
        progressing = clock(old, "Progressing", "True", body["metadata"].get("generation")) or now
        deadline = self.deps.config.progress_deadline

        def check(health: Health, part: str | None) -> Health:
            return overdue(health, now, deadline, progressing, clock(old, part, "False") if part else None)
        return check

    # ------------------------------------------------------------ Pipeline

    def pipeline(self, body: Mapping[str, Any]) -> Result:
        meta = body["metadata"]
        with self._turn(body) as live:
            if not live:
                return NOTHING
            return metrics.observe("Pipeline", body,
                                   lambda: self._pipeline(body, meta.get("namespace", "default"), meta["name"]))

    def store_for(self, pipeline: Pipeline, ns: str) -> Any:
        qdrant = pipeline.spec.vector_store.qdrant
        key = self.deps.config.qdrant_api_key
        if qdrant.api_key_secret:
            key = secret_value(self.deps.kube, ns, qdrant.api_key_secret.name, qdrant.api_key_secret.key)
        return self.deps.stores(qdrant.url or self.deps.config.settings.qdrant_url, key)

    def _models(self, p: Pipeline, ns: str) -> tuple[dict[str, ModelDeployment], dict[str, Obj], Health]:
        names = [p.spec.embedder.model_deployment]
        if p.spec.llm and p.spec.llm.model_deployment:
            names.append(p.spec.llm.model_deployment)
        if p.spec.retrieval.rerank:
            names.append(p.spec.retrieval.rerank.model_deployment)
        models: dict[str, ModelDeployment] = {}
        bodies: dict[str, Obj] = {}
        for n in names:
            body = self.deps.kube.get("ModelDeployment", ns, n)
            if body is None:
                continue
            bodies[n] = body
            with contextlib.suppress(ValidationError):
                models[n] = _parse(ModelDeployment, body)
        problems = check_references(p, models)
        if problems:
            f, msg = problems[0]
            return models, bodies, Health(False, True, False, "ModelMissing", f"{f}: {msg}",
                                          if_stuck=f"create the ModelDeployment, or correct {f}")
        return models, bodies, models_health(bodies)

    def _pipeline(self, body: Mapping[str, Any], ns: str, name: str) -> Result:
        settings, writes, now = self.deps.config.settings, list[str](), self.deps.clock()
        try:
            p: Pipeline = _parse(Pipeline, body)
        except ValidationError as exc:
            return self._result(body, Verdict("Failed", []), {"endpoint": None}, writes, now,
                                failure=("InvalidSpec", _invalid(exc)))
        models, bodies, models_health = self._models(p, ns)
        embedder = models.get(p.spec.embedder.model_deployment)
        llm = models.get(p.spec.llm.model_deployment) if p.spec.llm and p.spec.llm.model_deployment else None

        inputs = (body["metadata"].get("generation"), p.spec.to_wire(), embedder.spec.to_wire() if embedder else None,
                  llm.spec.to_wire() if llm else None)
        agent_desired, config_map, job = self._built(body, inputs, lambda: [
            get_agent_rayservice(p, ns, settings, embedder, llm), *get_ingestion_objects(p, ns, settings, embedder)])
        agent = self.apply(agent_desired, writes)
        agent_health = rayservice_health(agent, p.spec.agent.replicas.min == 0)

        plan = get_collection_plan(p, embedder)
        points = None
        try:
            store = self.store_for(p, ns)
            if plan.dimensions and store.ensure(plan):
                writes.append(f"created collection {plan.collection}")
            points = store.count(plan.collection)
            store_health = Health(True, False, False, "CollectionExists",
                                  f"collection {plan.collection} exists") if points is not None else Health(
                False, True, False, "WaitingForIngestion", "the first ingestion run creates the collection")
        except Exception as exc:  # the store is a remote service: report, retry on the next pass
            store_health = Health(False, True, False, "StoreUnreachable", f"Qdrant: {exc}"[:300], if_stuck=(
                "check the Qdrant URL (spec.vectorStore.qdrant.url, else the chart's qdrant.url), its API key "
                "Secret and NetworkPolicies between the operator and Qdrant"))

        last = dict((body.get("status") or {}).get("lastIngestion") or {})
        ingest_events: list[Event] = []
        progress = before = (body.get("status") or {}).get("ingestion")
        cache_held = cache_wait(embedder, bodies[embedder.metadata.name].get("status"), "ingestion") \
            if embedder is not None else None
        if models_health.reason == "ModelMissing":
            ingest_health = Health(False, True, False, "ModelMissing", "ingestion waits for the models")
        elif cache_held is not None:  # its pods would mount an entry that is not complete: no run, scheduled or not
            ingest_health = cache_held
        else:
            ingest_health, last, progress = self._ingestion(p, ns, config_map, job, last, progress, writes, now,
                                                            ingest_events)

        deadline = self._deadline(body, now)
        parts = {"Models": models_health, "Agent": agent_health, "Store": store_health, "Ingestion": ingest_health}
        verdict = pipeline_verdict({part: deadline(h, f"{part}Ready") for part, h in parts.items()})
        extra = {
            "endpoint": service_url(agent_rayservice_name(p.metadata.name), ns, settings.cluster_domain),
            "collection": p.collection,
            "points": points,
            "lastIngestion": last or None,
            "ingestion": progress or None,
        }
        result = self._result(body, verdict, extra, writes, now)
        transitions = ingestion_events(before, progress)
        result.events.extend(ingest_events + transitions)
        if progress and any(reason in ("IngestionSucceeded", "IngestionFailed") for _, reason, _ in transitions):
            metrics.ingestion_finished(ns, name, progress)
        return result

    def _ingestion(self, p: Pipeline, ns: str, config_map: Obj, job: Obj, last: dict[str, Any],
                   progress: dict[str, Any] | None, writes: list[str],
                   now: str, events: list[Event] | None = None,
                   ) -> tuple[Health, dict[str, Any], dict[str, Any] | None]:
        """Run the plan as a RayJob (once per plan checksum), stop superseded runs, keep the RayCronJob in
        line with spec.schedule and let one run write at a time (`schedule.gate`: scheduled runs wait
        suspended and start only when no other run of the Pipeline runs; finished ones are pruned to a
        history limit); the latest run's health, its record (status.lastIngestion) and its progress
        (status.ingestion: KubeRay's view of the RayJob, and the run's own report once it finished)."""
        kube, name = self.deps.kube, p.metadata.name
        events = events if events is not None else []
        self.apply(config_map, writes)
        checksum = job["metadata"]["labels"][PLAN_LABEL]
        own_name = job["metadata"]["name"]
        cron_name = ingestion_cron_name(name)
        runs = {j["metadata"]["name"]: j for j in (
            *kube.list("RayJob", ns, {"raylight.io/pipeline": name, "app.kubernetes.io/component": "ingestion"}),
            *kube.list("RayJob", ns, {schedule.CRONJOB_LABEL: cron_name}))}
        recorded = progress.get("job") if progress and progress.get("phase") in ("Succeeded", "Failed") else None
        decided = schedule.gate(list(runs.values()), checksum, recorded)
        for run in decided.stop:
            if kube.delete("RayJob", ns, run):
                writes.append(f"deleted superseded RayJob {run}")
        for run in decided.skip:
            if kube.delete("RayJob", ns, run):
                writes.append(f"deleted RayJob {run}")
                why = f"run {decided.running} is still writing" if decided.running else "a newer run is waiting"
                events.append(("Warning", "IngestionSkipped", f"ingestion run {run} skipped: {why} collection "
                               f"{p.collection} (one run of a Pipeline at a time)"))
                metrics.ingestion_skipped(ns, name)
        if decided.admit is not None:
            admitted = kube.patch("RayJob", ns, decided.admit, {"spec": {"suspend": False}})
            writes.append(f"patched RayJob {decided.admit} (spec.suspend)")
            runs[decided.admit] = admitted or {**runs[decided.admit], "spec": {
                **runs[decided.admit].get("spec", {}), "suspend": False}}
        live = runs.get(own_name) if own_name not in (*decided.stop, *decided.skip) else None
        done_before = last.get("plan") == checksum and last.get("succeeded")
        waits_for = decided.running if decided.running not in (None, own_name) else None
        if live is None and not done_before and waits_for is None:  # a new plan, or a run deleted unfinished
            live = runs[own_name] = self.apply(job, writes)
            decided.latest = own_name
        schedule_problem = None
        if p.spec.schedule:
            try:
                self.apply(get_ingestion_cron(job, p.spec.schedule), writes)
            except Exception as exc:  # e.g. a KubeRay before 1.5 has no RayCronJob: say so, run the plan anyway
                log.warning("Pipeline %s/%s: cannot apply RayCronJob %s: %s", ns, name, cron_name, exc)
                schedule_problem = (f"spec.schedule: cannot create RayCronJob {cron_name} (KubeRay 1.5 or later "
                                    f"with its RayCronJob feature gate is needed): {exc}")[:500]
        elif kube.get("RayCronJob", ns, cron_name) is not None and kube.delete("RayCronJob", ns, cron_name):
            writes.append(f"deleted RayCronJob {cron_name}")
        for run in decided.prune:
            if kube.delete("RayJob", ns, run):
                writes.append(f"deleted RayJob {run} (history limit)")
        legacy = kube.get("CronJob", ns, f"{name}-ingest")  # a release before RayJobs ran batch CronJobs
        if legacy is not None and owner_of(legacy) == ("Pipeline", ns, name) and \
                kube.delete("CronJob", ns, f"{name}-ingest"):
            writes.append(f"deleted CronJob {name}-ingest (scheduled runs are a RayCronJob now)")
        latest = runs.get(decided.latest or "") if decided.latest else None
        if latest is None and done_before:  # the run finished and its TTL removed the RayJob: nothing to redo
            return (Health(True, False, False, "IngestionSucceeded", f"plan {checksum} was ingested"),
                    {**last, "succeeded": True}, progress)
        if latest is None and waits_for is not None:
            latest = runs.get(waits_for)
        health = rayjob_health(latest)
        latest_name = (latest or job)["metadata"]["name"]
        record: dict[str, Any] = {"plan": checksum, "job": latest_name, "succeeded": health.ready}
        report: dict[str, Any] = {}
        if latest is not None and rayjob_finished(latest):
            report = self._run_report("Pipeline", ns, name, latest)
            record |= report
            if health.degraded and report.get("error"):  # the run's own word on why
                health = replace(health, message=f"{health.message}: {report['error']}"[:1000])
        progress_now = {"plan": checksum, **ingestion_progress(latest, report, now)}
        if latest is not None and schedule.scheduled(latest):
            progress_now["scheduled"] = True
        if schedule_problem:
            progress_now["message"] = schedule_problem
        return health, record, progress_now

    # ------------------------------------------------------------ FineTune

    def finetune(self, body: Mapping[str, Any]) -> Result:
        meta = body["metadata"]
        with self._turn(body) as live:
            if not live:
                return NOTHING
            return self._finetune(body, meta.get("namespace", "default"), meta["name"])

    def _finetune(self, body: Mapping[str, Any], ns: str, name: str) -> Result:
        """Run the training plan as a RayJob (once per plan checksum: a retried run resumes from its
        checkpoints) and mirror it: phase, steps, losses, the adapter's URI and sha256 from the run's report."""
        kube, settings, writes, now = self.deps.kube, self.deps.config.settings, list[str](), self.deps.clock()
        old = body.get("status") or {}
        try:
            ft: FineTune = _parse(FineTune, body)
        except ValidationError as exc:
            return self._finetune_result(body, {"phase": "Failed", "message": _invalid(exc)}, writes, now,
                                         ("InvalidSpec", _invalid(exc)))
        base, base_body = None, None
        if ft.spec.base.model_deployment:
            base_body = kube.get("ModelDeployment", ns, ft.spec.base.model_deployment)
            base = _parse(ModelDeployment, base_body) if base_body is not None else None
        models = {base.metadata.name: base} if base is not None else {}
        problems = check_finetune(ft, models, settings.license_policy, cluster=True)
        if problems:
            field, message = problems[0]
            licence = "license" in field.lower() or field == "spec.base.modelDeployment"
            reason = "ModelMissing" if base is None and ft.spec.base.model_deployment else (
                "LicenseRefused" if licence else "InvalidSpec")
            return self._finetune_result(body, {"phase": "Pending" if reason == "ModelMissing" else "Failed",
                                                "message": f"{field}: {message}"}, writes, now, (reason, message))
        inputs = (body["metadata"].get("generation"), ft.spec.to_wire(), base.spec.to_wire() if base else None)
        config_map, job = self._built(body, inputs, lambda: get_finetune_objects(ft, ns, settings, base))
        self.apply(config_map, writes)
        checksum = job["metadata"]["labels"][PLAN_LABEL]
        live = kube.get("RayJob", ns, job["metadata"]["name"])
        done_before = old.get("job") == job["metadata"]["name"] and old.get("phase") == "Succeeded"
        if live is None and not done_before:
            held = cache_wait(base, base_body.get("status"), "training") if base and base_body else None
            if held is not None:  # its pods would mount an entry that is not complete: the RayJob waits
                return self._finetune_result(body, {"phase": "Pending", "message": held.message}, writes, now,
                                             (held.reason, held.message))
            live = self.apply(job, writes)
        for other in kube.list("RayJob", ns, {"raylight.io/finetune": name}):
            superseded = other["metadata"].get("labels", {}).get(PLAN_LABEL) != checksum and not rayjob_finished(other)
            if superseded and kube.delete("RayJob", ns, other["metadata"]["name"]):
                writes.append(f"deleted superseded RayJob {other['metadata']['name']}")
        if done_before and live is None:  # finished, and its TTL removed the RayJob: keep what it reported
            return self._finetune_result(body, dict(old), writes, now)
        report: dict[str, Any] = {}
        if live is not None and rayjob_finished(live):
            report = self._run_report("FineTune", ns, name, job)
        return self._finetune_result(body, finetune_status(live, report, now), writes, now)

    def _run_report(self, kind: str, ns: str, name: str, job: Obj) -> dict[str, Any]:
        """The report a finished RayJob's run left (its submitter's termination message); {} when unreadable:
        the report informs, reading it never fails a reconcile."""
        try:
            return ingestion_report(self.deps.kube.list("Pod", ns, {"job-name": job["metadata"]["name"]}))
        except Exception as exc:
            log.warning("%s %s/%s: cannot read the run's report: %s", kind, ns, name, exc)
            return {}

    def _finetune_result(self, body: Mapping[str, Any], fields: dict[str, Any], writes: list[str], now: str,
                         failure: tuple[str, str] | None = None) -> Result:
        old = body.get("status") or {}
        phase = fields.get("phase") or "Pending"
        keep = {k: v for k, v in fields.items() if k not in ("conditions", "observedGeneration")}
        if failure:
            conds = [Cond("Ready", False, failure[0], failure[1]), Cond("Progressing", False, failure[0])]
        elif phase == "Succeeded":
            conds = [Cond("Ready", True, "AdapterReady", f"adapter at {fields.get('adapterUri', '')}"),
                     Cond("Progressing", False, "Succeeded")]
        elif phase == "Failed":
            conds = [Cond("Ready", False, "TrainingFailed", str(fields.get("message", ""))),
                     Cond("Progressing", False, "TrainingFailed")]
        else:
            conds = [Cond("Ready", False, "Training", f"RayJob {fields.get('job', '')} is {phase}"),
                     Cond("Progressing", True, "Training")]
        generation = body["metadata"].get("generation")
        wire = conditions(conds, old.get("conditions") or [], generation, now)
        status = {"observedGeneration": generation, **keep, "phase": phase, "conditions": wire}
        events: list[Event] = [("Normal", _WRITE_REASONS.get(w.split(" ", 1)[0], "Applied"), w) for w in writes]
        if old.get("phase") != phase or (failure is None and old.get("job") != fields.get("job")):
            if phase in ("Pending", "Running") and fields.get("job"):
                events.append(("Normal", "TrainingStarted", f"training run {fields['job']} {phase.lower()}"))
            elif phase == "Succeeded":
                events.append(("Normal", "TrainingSucceeded", f"training run {fields.get('job')}: "
                               f"{fields.get('step')} steps, train loss {fields.get('trainLoss')}, adapter "
                               f"{fields.get('adapterUri')} (sha256 {fields.get('adapterSha256')})"))
            elif phase == "Failed":
                events.append(("Warning", "TrainingFailed", str(fields.get("message") or "no reason given")))
        return Result(status, events, writes)

    def pipeline_deleted(self, body: Mapping[str, Any]) -> Event:
        """The finalizer's work: keep or drop the collection by spec.deletionPolicy, after any pass still
        running for this Pipeline (which might otherwise create the collection again)."""
        self.deleted(body)
        ns = body["metadata"].get("namespace", "default")
        try:
            p: Pipeline = _parse(Pipeline, body)
        except ValidationError:
            return "Warning", "CollectionKept", "invalid spec: the collection (if any) was kept"
        collection = p.collection
        if p.spec.deletion_policy == "Delete":
            dropped = self.store_for(p, ns).drop(collection)
            return "Normal", "CollectionDropped", (
                f"dropped collection {collection}" if dropped else f"collection {collection} did not exist")
        return "Normal", "CollectionKept", f"kept collection {collection} (deletionPolicy Retain)"

    # ------------------------------------------------------------ status

    def _result(self, body: Mapping[str, Any], verdict: Verdict, extra: dict[str, Any], writes: list[str],
                now: str, failure: tuple[str, str] | None = None) -> Result:
        old = body.get("status") or {}
        generation = body["metadata"].get("generation")
        conds = verdict.conditions
        if failure:
            conds = [Cond("Ready", False, failure[0], failure[1]), Cond("Progressing", False, failure[0]),
                     Cond("Degraded", False, failure[0])]
        wire = conditions(conds, old.get("conditions") or [], generation, now)
        status = {"observedGeneration": generation, "phase": verdict.phase, **extra, "conditions": wire}
        events: list[Event] = [("Normal", _WRITE_REASONS.get(w.split(" ", 1)[0], "Applied"), w) for w in writes]
        if old.get("phase") != verdict.phase:
            ready = next((c for c in wire if c["type"] == "Ready"), None)
            why = (ready or {}).get("message") or (ready or {}).get("reason", "")
            kind = "Warning" if verdict.phase in ("Failed", "Degraded") else "Normal"
            events.append((kind, verdict.phase, f"phase {old.get('phase') or 'none'} -> {verdict.phase}: {why}"))
        return Result(status, events, writes)


def ingestion_events(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[Event]:
    """The Events of an ingestion run's transitions between two status.ingestion values (camelCase):
    IngestionStarted, IngestionSucceeded (with its counts) or IngestionFailed (with the reason)."""
    if not new:
        return []
    old = old if old and old.get("job") == new.get("job") else {}  # another run: its transitions start afresh
    before, phase, job = old.get("phase"), new.get("phase"), new.get("job")
    if phase == before:
        return []
    if phase in ("Pending", "Running"):
        return [] if before in ("Pending", "Running") else [
            ("Normal", "IngestionStarted", f"ingestion run {job} started (plan {new.get('plan')})")]
    if phase == "Succeeded":
        counts = ", ".join(f"{new.get(key) or 0} {label}" for key, label in (
            ("documentsDone", "documents done"), ("documentsSkipped", "skipped"), ("documentsFailed", "failed"),
            ("chunksEmbedded", "chunks embedded"), ("points", "points")))
        took = f" in {new['durationSeconds']:.0f} s" if new.get("durationSeconds") is not None else ""
        return [("Normal", "IngestionSucceeded", f"ingestion run {job}: {counts}{took}")]
    if phase == "Failed":
        why = new.get("message") or "no reason given"
        return [("Warning", "IngestionFailed", f"ingestion run {job} failed: {why}")]
    return []


def cache_events(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[Event]:
    """The Events of the weight cache's prefetch between two status.cache values: CachePending (a new Job),
    CacheReady (with its size) or CacheFailed (with the reason)."""
    if not new:
        return []
    old = old if old and old.get("job") == new.get("job") else {}
    before, phase, job = old.get("phase"), new.get("phase"), new.get("job")
    if phase == before:
        return []
    if phase == "Succeeded":
        return [("Normal", "CacheReady", f"prefetch Job {job}: {new.get('path')} complete in claim {new.get('pvc')} "
                 f"({new.get('files')} files, {new.get('bytes')} bytes)")]
    if phase == "Failed":
        return [("Warning", "CacheFailed", f"prefetch Job {job} failed: {new.get('message') or 'no reason given'}")]
    if before is None:
        return [("Normal", "CachePending", f"prefetch Job {job} pulls {new.get('path')} into claim {new.get('pvc')}")]
    return []


_WRITE_REASONS = {"created": "Created", "patched": "Applied", "deleted": "Deleted"}  # Event reasons per write


def _recreate(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether a RayService under upgradeStrategy Recreate must be deleted first: its Ray cluster changed (the
    hash the builder wrote differs from the live one's); a change of the Serve config alone is patched in place."""
    want = (desired["metadata"].get("annotations") or {}).get(RECREATE_ANNOTATION)
    have = (live["metadata"].get("annotations") or {}).get(RECREATE_ANNOTATION)
    return want is not None and have is not None and want != have


def _leaves(patch: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in patch.items():
        path = f"{prefix}.{k}" if prefix else k
        out.extend(_leaves(v, path) if isinstance(v, dict) and v and k != "annotations" else [path])
    return out
