"""What is really running, as our status (pure): a child's status -> health; health and governance ->
phase and conditions, with transition times kept while a condition does not change.

Every state of a child that is not plainly serving the current generation is `progressing` or `degraded`,
with the reason; a transition carries when it began (`since`, where the child says) and what to do
should it never finish (`if_stuck`), and `overdue` turns one older than the progress deadline into
`Degraded`. KubeRay's status shapes: ray-operator/apis/ray/v1/rayservice_types.go and
controllers/ray/rayservice_controller.go (calculateConditions) in ray-project/kuberay."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from raylight.api.cache import cache_plan
from raylight.api.names import cache_job_name
from raylight.api.types import ModelDeployment

APP_RUNNING = "RUNNING"
APP_FAILED = ("DEPLOY_FAILED", "UNHEALTHY")
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


@dataclass(frozen=True)
class Health:
    """A child's health: ready serves traffic (maybe an older generation); progressing is on its way to
    the current generation; degraded is failing. `since` (RFC 3339) is when the transition began, where
    the child reports it; `if_stuck` says what to do when it does not finish (empty: it cannot stall,
    because it is progress itself or another object reports it)."""

    ready: bool
    progressing: bool
    degraded: bool
    reason: str
    message: str
    ready_replicas: int = 0
    since: str | None = None
    if_stuck: str = ""


@dataclass(frozen=True)
class Cond:
    type: str
    ok: bool | None  # None: Unknown
    reason: str
    message: str = ""
    per_generation: bool = False  # its clock restarts with each generation (one rollout per spec)


@dataclass
class Verdict:
    phase: str
    conditions: list[Cond] = field(default_factory=list)


# ---------------------------------------------------------------- KubeRay RayService


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in status.get("conditions") or []}


def _is_true(conds: Mapping[str, Mapping[str, Any]], kind: str) -> bool:
    return (conds.get(kind) or {}).get("status") == "True"


def serve_app_names(rs: Mapping[str, Any]) -> list[str]:
    """The Serve applications a RayService's serveConfigV2 declares."""
    try:
        config = yaml.load((rs.get("spec") or {}).get("serveConfigV2") or "",
                           Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError:
        return []
    return [a["name"] for a in config.get("applications") or [] if isinstance(a, dict) and a.get("name")]


def _app_failure(apps: Mapping[str, Any]) -> tuple[str, str] | None:
    """(Serve status, message) of the first failed application, with its failing deployment's message."""
    for name, app in sorted(apps.items()):
        if app.get("status") in APP_FAILED:
            bad = [f"{d}: {s.get('message')}" for d, s in sorted((app.get("serveDeploymentStatuses") or {}).items())
                   if s.get("status") == "UNHEALTHY" and s.get("message")]
            why = "; ".join(filter(None, [app.get("message", ""), *bad[:1]]))
            return app["status"], f"Serve application {name} is {app['status']}" + (f": {why}" if why else "")
    return None


def _cluster_failure(cluster: Mapping[str, Any]) -> str | None:
    conds = _conditions(cluster)
    if _is_true(conds, "ReplicaFailure"):
        return f"pods cannot be created: {conds['ReplicaFailure'].get('message', '')}".strip()
    if cluster.get("state") == "failed":
        return f"the Ray cluster failed: {cluster.get('reason', '')}".strip()
    return None


def _head_not_ready(cluster: Mapping[str, Any]) -> Mapping[str, Any] | None:
    head = _conditions(cluster).get("HeadPodReady")
    return head if head is not None and head.get("status") == "False" else None


def _asleep(rs: Mapping[str, Any], cluster: Mapping[str, Any]) -> bool | None:
    """Whether a RayService that scales to zero runs no replica now, as far as KubeRay's status tells: no Serve
    endpoint at all, or (where the replicas run on workers: the head offers them no CPU) no ready worker pod.
    Serve's proxy on the head stays an endpoint while the apps sleep, and KubeRay copies no replica counts, only
    each deployment's status and message (Serve's "Upscaling from 0 to 1 replicas." tells a wake from there).
    None: it cannot tell (no worker group: the replicas share the head with the proxy)."""
    if not (rs.get("status") or {}).get("numServeEndpoints"):
        return True
    spec = (rs.get("spec") or {}).get("rayClusterConfig") or {}
    if not spec.get("workerGroupSpecs"):
        return None
    return not int(cluster.get("readyWorkerReplicas") or 0)


def rayservice_health(rs: Mapping[str, Any] | None, scale_to_zero: bool = False) -> Health:
    """Read a KubeRay RayService: its Ready, UpgradeInProgress and RollbackInProgress conditions, its
    observedGeneration against its generation, the active and pending clusters' conditions (head pod,
    replica failures) and the status of each Serve application it declares.

    `ready` is KubeRay's Ready (serve endpoints exist) with our applications listed: the old cluster keeps
    it during an upgrade, so `progressing` says whether the current spec is what serves. With `scale_to_zero`
    (replicas.min 0), running applications without an endpoint are ScaledToZero (ready: a request wakes them),
    or Waking while a deployment scales up."""
    if rs is None:
        return Health(False, True, False, "RayServiceMissing", "the RayService does not exist (yet)",
                      if_stuck="the operator creates it: its log says why it cannot")
    name = rs.get("metadata", {}).get("name", "")
    status = rs.get("status") or {}
    conds = _conditions(status)
    ready_cond = conds.get("Ready") or {}
    generation = rs.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    active = status.get("activeServiceStatus") or {}
    pending = status.get("pendingServiceStatus") or {}
    apps: dict[str, Any] = active.get("applicationStatuses") or {}
    cluster = active.get("rayClusterStatus") or {}
    replicas = int(cluster.get("readyWorkerReplicas") or status.get("numServeEndpoints") or 0)
    # KubeRay before 1.3 (no conditions) reported serviceStatus only.
    serving = (ready_cond.get("status") == "True" if ready_cond else status.get("serviceStatus") == "Running")
    serving = serving and bool(apps)  # Ready with no application listed is not serving our model

    def health(progressing: bool, degraded: bool, reason: str, message: str, since: str | None = None,
               if_stuck: str = "") -> Health:
        return Health(serving, progressing, degraded, reason, message, replicas, since, if_stuck)

    if rs.get("metadata", {}).get("deletionTimestamp"):  # upgradeStrategy Recreate: the old one goes first
        return Health(False, True, False, "Recreating",
                      f"RayService {name} is being deleted so that the changed spec starts on a new Ray cluster "
                      "(upgradeStrategy Recreate): nothing serves until the new one is ready",
                      0, rs["metadata"]["deletionTimestamp"],
                      f"kubectl get rayservice {name} -o yaml: a finalizer that never clears keeps it; the operator "
                      "creates the new RayService once it is gone")

    # Terminal states KubeRay will not leave by itself.
    if ready_cond.get("reason") == "ValidationFailed":
        return health(False, True, "RayServiceInvalid", f"KubeRay rejected RayService {name}: "
                      f"{ready_cond.get('message', '')}".strip())
    if ready_cond.get("reason") == "InitializingTimeout":
        return health(False, True, "InitializingTimeout",
                      f"KubeRay gave up starting RayService {name}: {ready_cond.get('message', '')}; fix the cause, "
                      "then delete the RayService and the operator creates it again")
    if _is_true(conds, "Suspended") or _is_true(conds, "Suspending"):
        return health(False, True, "Suspended", f"RayService {name} is suspended (spec.suspend): it serves nothing")
    failure = _app_failure(apps)
    if failure:
        return health(False, True, "ApplicationUnhealthy" if failure[0] == "UNHEALTHY" else "ApplicationFailed",
                      failure[1])
    broken = _cluster_failure(cluster)
    if broken:
        return health(False, True, "ReplicaFailure", f"Ray cluster {active.get('rayClusterName', '')}: {broken}")

    # An upgrade: a new (pending) Ray cluster for the changed spec, the old (active) one serving meanwhile.
    # (The first cluster of a new RayService is pending too, with no active one: that is starting.)
    pending_name = pending.get("rayClusterName")
    cluster_name = active.get("rayClusterName", "")
    if _is_true(conds, "UpgradeInProgress") or (pending_name and cluster_name):
        upgrade = conds.get("UpgradeInProgress") or {}
        where = f"the new Ray cluster {pending_name or '(not yet named)'}"
        failure = _app_failure(pending.get("applicationStatuses") or {})
        broken = _cluster_failure(pending.get("rayClusterStatus") or {})
        if failure or broken:
            return health(False, True, "UpgradeFailed", f"{where}: {failure[1] if failure else broken}; "
                          "the old cluster keeps serving the previous spec", upgrade.get("lastTransitionTime"))
        head = _head_not_ready(pending.get("rayClusterStatus") or {})
        state = f"head pod not ready ({head.get('reason')})" if head else "Serve applications deploying"
        return health(True, False, "UpgradeInProgress",
                      f"{where} is starting for the changed spec ({state}); the old cluster serves meanwhile",
                      upgrade.get("lastTransitionTime"),
                      f"kubectl describe raycluster {pending_name or ''} and its pods (image pulls, quota, node "
                      "capacity); fix or revert the change, and KubeRay replaces or drops the new cluster. A "
                      "NewCluster upgrade needs a second full set of the model's resources: where the cluster "
                      "has no spare GPUs, set spec.upgradeStrategy.type to Recreate (an outage instead) or "
                      "Incremental (a Gateway API steps the traffic over)")
    if _is_true(conds, "RollbackInProgress"):
        rollback = conds["RollbackInProgress"]
        return health(True, False, "RollbackInProgress", f"KubeRay is rolling back: {rollback.get('message', '')}",
                      rollback.get("lastTransitionTime"), "kubectl describe rayservice " + name)
    if generation is not None and (observed is None or int(observed) < int(generation)):
        return health(True, False, "GenerationNotObserved",
                      f"KubeRay has not yet observed generation {generation} of RayService {name} "
                      f"(observed: {observed if observed is not None else 'none'})",
                      if_stuck="is the KubeRay operator running? Its log says why it does not reconcile "
                      "(kubectl get pods -A -l app.kubernetes.io/name=kuberay-operator)")

    if not apps or ready_cond.get("reason") == "Initializing":
        starting = cluster_name or pending_name or ""
        head = _head_not_ready(cluster if cluster_name else pending.get("rayClusterStatus") or {})
        doing = f"head pod not ready ({head.get('reason')})" if head else "waiting for Serve"
        return health(True, False, "ClusterStarting", f"Ray cluster {starting or '(not yet named)'} is starting: "
                      f"{doing}", ready_cond.get("lastTransitionTime"),
                      f"kubectl get pods -l ray.io/cluster={starting or '<name>'} and describe the ones not Running "
                      "(image pulls, quota, node capacity); the head pod's log says why Serve does not start")
    head = _head_not_ready(cluster)
    if head:
        return health(True, False, "HeadPodNotReady",
                      f"the head pod of Ray cluster {cluster_name} is not ready: {head.get('reason')} "
                      f"{head.get('message', '')}".strip(), head.get("lastTransitionTime"),
                      f"kubectl describe pod -l ray.io/cluster={cluster_name},ray.io/node-type=head")
    unlisted = [n for n in serve_app_names(rs) if n not in apps]
    deploying = sorted({*unlisted, *(n for n, a in apps.items() if a.get("status") != APP_RUNNING)})
    if deploying:
        return health(True, False, "ApplicationsDeploying", f"Serve applications deploying: {', '.join(deploying)}",
                      if_stuck="`serve status` on the head pod and its log say why (weights still downloading, "
                      "replicas that do not fit the workers)")
    if scale_to_zero and apps:
        asleep = _asleep(rs, cluster)
        upscaling = sorted(f"{a}/{d}" for a, app in apps.items()
                           for d, dep in (app.get("deployments") or {}).items() if dep.get("status") == "UPSCALING"
                           and (asleep or str(dep.get("message", "")).startswith("Upscaling from 0 ")))
        if upscaling:
            return Health(False, True, False, "Waking", f"a request woke the model: {', '.join(upscaling)} "
                          "starting its first replica (requests are held meanwhile)", 0,
                          ready_cond.get("lastTransitionTime"),
                          "kubectl get pods: a GPU worker pod that stays Pending has no node to run on (the "
                          "cluster autoscaler, quota, or the accelerator type)")
        if asleep:
            return Health(True, False, False, "ScaledToZero", "no replica runs after the idle period "
                          "(replicas.idleSeconds); the first request wakes one and is held until it serves", 0)
    if not serving:
        return health(True, False, ready_cond.get("reason") or "NotReady",
                      ready_cond.get("message") or "RayService not ready", ready_cond.get("lastTransitionTime"),
                      "no pod passes its Serve readiness probe: kubectl describe pods -l "
                      f"ray.io/cluster={cluster_name}")
    return health(False, False, "Serving", "all Serve applications are RUNNING")


# ---------------------------------------------------------------- KubeRay RayJob (ingestion)

# KubeRay's RayJob status (ray-operator/apis/ray/v1/rayjob_types.go): jobDeploymentStatus is KubeRay's view
# (New, Initializing, Waiting, Running, Complete, Failed, Retrying, Suspending, Suspended, ValidationFailed),
# jobStatus the Ray job's (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED); reason and message say why.
JOB_DONE = ("Complete", "Failed", "ValidationFailed")


def rayjob_finished(job: Mapping[str, Any] | None) -> bool:
    return (job or {}).get("status", {}).get("jobDeploymentStatus") in JOB_DONE


def rayjob_phase(job: Mapping[str, Any] | None) -> str:
    """Pending, Running, Succeeded or Failed: the run's phase as the Pipeline's status shows it."""
    status = (job or {}).get("status") or {}
    deployment, ray_job = status.get("jobDeploymentStatus") or "", status.get("jobStatus") or ""
    if deployment == "Complete" and ray_job == "SUCCEEDED":
        return "Succeeded"
    if deployment in JOB_DONE:
        return "Failed"
    if deployment in ("Running", "Retrying") or ray_job == "RUNNING":
        return "Running"
    return "Pending"


def rayjob_health(job: Mapping[str, Any] | None) -> Health:
    """Read an ingestion RayJob: succeeded, failed (with KubeRay's reason and message), retrying on a fresh
    cluster, running (progress that needs no deadline) or starting (its cluster is not up since it began)."""
    if job is None:
        return Health(False, True, False, "IngestionPending", "the ingestion RayJob has not started",
                      if_stuck="the operator creates it: its log says why it cannot")
    status = job.get("status") or {}
    name = job["metadata"]["name"]
    phase = rayjob_phase(job)
    why = ": ".join(x for x in (status.get("reason"), status.get("message")) if x)
    if phase == "Succeeded":
        return Health(True, False, False, "IngestionSucceeded", f"RayJob {name} succeeded", 1)
    if phase == "Failed":
        return Health(False, False, True, "IngestionFailed",
                      f"RayJob {name} failed{': ' + why if why else ''} (kubectl logs job/{name})"[:1000])
    if status.get("jobDeploymentStatus") == "Retrying":
        return Health(False, True, False, "IngestionRetrying",
                      f"RayJob {name}: {int(status.get('failed') or 0)} failed attempt(s), retrying on a new "
                      f"cluster{': ' + why if why else ''}")
    if phase == "Running":
        return Health(False, True, False, "IngestionRunning", f"RayJob {name} is running")
    cluster = status.get("rayClusterName") or name
    return Health(False, True, False, "IngestionStarting",
                  f"RayJob {name}: its Ray cluster is starting ({status.get('jobDeploymentStatus') or 'New'})",
                  since=status.get("startTime") or job["metadata"].get("creationTimestamp"),
                  if_stuck=f"kubectl describe rayjob {name}; kubectl describe pods -l ray.io/cluster={cluster} "
                  "(image pulls, quota, GPUs, volumes that do not mount)")


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return max((_time(end) - _time(start)).total_seconds(), 0.0)


def ingestion_progress(job: Mapping[str, Any] | None, report: Mapping[str, Any], now: str) -> dict[str, Any]:
    """status.ingestion (raylight.api.types.IngestionProgress) from the RayJob's status and, once the run
    has finished, its own report (counts, failures with reasons)."""
    status = (job or {}).get("status") or {}
    start, end = status.get("startTime"), status.get("endTime")
    out: dict[str, Any] = {"phase": rayjob_phase(job) if job is not None else "Pending",
                           "job": (job or {}).get("metadata", {}).get("name"),
                           "startTime": start, "endTime": end,
                           "durationSeconds": _seconds(start, end or (now if start else None))}
    why = ": ".join(x for x in (status.get("reason"), status.get("message")) if x)
    if why:
        out["message"] = why[:1000]
    if report.get("error"):
        out["message"] = str(report["error"])[:1000]
        out["phase"] = "Failed" if out["phase"] != "Running" else out["phase"]
    if "added" in report:
        done = sum(int(report.get(k) or 0) for k in ("added", "updated", "unchanged"))
        out.update(documentsDone=done, documentsSkipped=report.get("skipped"), documentsFailed=report.get("failed"),
                   documentsSeen=report.get("seen", done + int(report.get("skipped") or 0) +
                                            int(report.get("failed") or 0)),
                   chunksEmbedded=report.get("chunks_embedded"), chunksReused=report.get("chunks_reused"),
                   points=report.get("points"), workers=report.get("workers"),
                   failures=[{"source": str(f.get("source", "")), "reason": str(f.get("reason", ""))}
                             for f in report.get("failures") or [] if isinstance(f, Mapping)][:20])
        seconds = report.get("seconds") or out["durationSeconds"]
        if seconds:
            out["chunksPerSecond"] = round(int(report.get("chunks_embedded") or 0) / float(seconds), 1)
    return {k: v for k, v in out.items() if v is not None}


def finetune_status(job: Mapping[str, Any] | None, report: Mapping[str, Any], now: str) -> dict[str, Any]:
    """A FineTune's status fields (raylight.api.types.FineTuneStatus, camelCase) from its RayJob and, once
    the run finished, the training report it left (steps, losses, the adapter's URI and sha256)."""
    progress = ingestion_progress(job, {"error": report["message"]} if report.get("phase") == "Failed" else {},
                                  now)
    out: dict[str, Any] = {k: progress.get(k) for k in ("phase", "job", "message", "startTime", "endTime",
                                                         "durationSeconds")}
    for key in ("step", "totalSteps", "trainLoss", "evalLoss", "adapterUri", "adapterSha256", "license"):
        if report.get(key) is not None:
            out[key] = report[key]
    if report.get("phase") == "Succeeded" and out["phase"] == "Succeeded" and report.get("durationSeconds"):
        out["durationSeconds"] = report["durationSeconds"]
    return {k: v for k, v in out.items() if v is not None}


# ---------------------------------------------------------------- the weight cache's prefetch Job (batch/v1)


def job_phase(job: Mapping[str, Any] | None) -> str:
    """Pending, Running, Succeeded or Failed, from a batch/v1 Job's conditions (Complete, Failed; the
    SuccessCriteriaMet/FailureTarget that come first on Kubernetes 1.31+) and its active pods."""
    status = (job or {}).get("status") or {}
    conds = _conditions(status)
    if _is_true(conds, "Complete") or _is_true(conds, "SuccessCriteriaMet"):
        return "Succeeded"
    if _is_true(conds, "Failed") or _is_true(conds, "FailureTarget"):
        return "Failed"
    if status.get("active") or status.get("startTime"):
        return "Running"
    return "Pending"


def cache_status(job: Mapping[str, Any] | None, report: Mapping[str, Any], pvc: str, path: str,
                 now: str) -> dict[str, Any]:
    """status.cache (raylight.api.types.CacheStatus) from the prefetch Job and, once it finished, its report."""
    status = (job or {}).get("status") or {}
    conds = _conditions(status)
    start, end = status.get("startTime"), status.get("completionTime")
    phase = job_phase(job)
    failed = conds.get("Failed") or conds.get("FailureTarget") or {}
    if phase == "Failed" and not end:
        end = failed.get("lastTransitionTime")
    out: dict[str, Any] = {"phase": phase, "job": (job or {}).get("metadata", {}).get("name"), "pvc": pvc,
                           "path": path, "startTime": start, "completionTime": end,
                           "durationSeconds": _seconds(start, end or (now if start else None))}
    if phase == "Failed":
        out["message"] = str(report.get("error") or ": ".join(
            x for x in (failed.get("reason"), failed.get("message")) if x) or "the prefetch failed")[:1000]
    if phase == "Succeeded":
        out.update(files=report.get("files"), bytes=report.get("bytes"))
    return {k: v for k, v in out.items() if v is not None}


def cache_health(cache: Mapping[str, Any], source: str) -> Health:
    """The CacheReady condition's view of status.cache: CacheReady, CachePending (the Job waits or pulls: the
    RayService is created once it completes) or CacheFailed (the Job's own reason, e.g. a sha256 that differs,
    naming spec.cache.sha256)."""
    phase, job, where = cache.get("phase"), cache.get("job", ""), f"{cache.get('pvc')}/{cache.get('path')}"
    if phase == "Succeeded":
        size = f" ({cache['files']} files, {cache['bytes']} bytes)" if cache.get("files") is not None else ""
        return Health(True, False, False, "CacheReady", f"{source} is in the cache at {where}{size}")
    if phase == "Failed":
        return Health(False, False, True, "CacheFailed", f"prefetch Job {job} failed: {cache.get('message', '')}"
                      f" (kubectl logs job/{job}); the RayService is not created until the cache is ready")
    doing = "pulling" if phase == "Running" else "waiting to pull"
    return Health(False, True, False, "CachePending", f"prefetch Job {job} is {doing} {source} into {where}; the "
                  "RayService is created once it completes", since=cache.get("startTime"),
                  if_stuck=f"kubectl describe job {job} and its pod: the claim must mount (ReadWriteMany), the hub "
                  "must be reachable with the token's Secret present, and the download must fit the volume")


def cache_wait(md: ModelDeployment, status: Mapping[str, Any] | None, run: str) -> Health | None:
    """Why a batch run (`run`: "ingestion", "training") that loads `md`'s model waits before its RayJob is created:
    its pods mount md's spec.cache claim and read the entry without downloading, so the prefetch of md's current
    pin must have succeeded (md's status.cache: phase Succeeded, for the Job of this pin). None when md has no cache
    or it has; else CachePending (the prefetch waits or pulls) or CacheFailed (degraded), naming md."""
    plan = cache_plan(md.spec)
    cache = md.spec.resolved().cache
    if plan is None or cache is None:
        return None
    name = md.metadata.name
    job = cache_job_name(name, plan.key())
    recorded = (status or {}).get("cache") or {}
    phase = recorded.get("phase") if recorded.get("job") == job else None  # another pin's outcome says nothing
    if phase == "Succeeded":
        return None
    what = (f"{run} waits for the weight cache of ModelDeployment {name} (spec.cache: {plan.source.source} at "
            f"revision {plan.revision} in claim {cache.pvc})")
    if phase == "Failed":
        return Health(False, False, True, "CacheFailed", f"{what}: its prefetch Job {job} failed: "
                      f"{recorded.get('message') or 'see the ModelDeployment'}; the RayJob is created once a "
                      "prefetch succeeds")
    doing = (phase or "not started").lower()
    return Health(False, True, False, "CachePending", f"{what}: prefetch Job {job} is {doing}; the RayJob is created "
                  "once it succeeded (its pods read the entry and download nothing)")


# ---------------------------------------------------------------- ModelDeployments a Pipeline uses


def models_health(models: Mapping[str, Mapping[str, Any]]) -> Health:
    """A Pipeline's view of the ModelDeployments it uses (name -> object): ready when each one's Ready
    condition is True (also while it rolls out a change), degraded when one is Failed or Degraded.
    Waiting for one never stalls here: the ModelDeployment's own deadline reports it."""
    failing, waiting = [], []
    for name, obj in models.items():
        status = obj.get("status") or {}
        conds = _conditions(status)
        phase = status.get("phase")
        if phase in ("Failed", "Degraded"):
            why = conds.get("Degraded" if phase == "Degraded" else "Ready") or {}
            failing.append(f"ModelDeployment {name} is {phase}: {why.get('message') or why.get('reason', '')}")
        if not _is_true(conds, "Ready"):
            waiting.append(name)
    if failing:
        return Health(not waiting, False, True, "ModelDegraded", "; ".join(failing))
    if waiting:
        return Health(False, True, False, "ModelsNotReady", f"waiting for ModelDeployments: {', '.join(waiting)}")
    return Health(True, False, False, "ModelsReady", "referenced ModelDeployments are Ready")


# ---------------------------------------------------------------- deadlines


def _time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def overdue(health: Health, now: str, deadline: float, *started: str | None) -> Health:
    """`health`, or Degraded (reason ProgressDeadlineExceeded, with what to do) when it is a transition
    that can stall and began more than `deadline` seconds before `now`. It began at the latest of its own
    `since` and `started` (what the caller knows, e.g. when its Progressing condition went True for this
    generation): each is a lower bound. Progressing stays True, so its clock keeps running."""
    starts = [s for s in (health.since, *started) if s]
    if deadline <= 0 or not health.progressing or health.degraded or not health.if_stuck or not starts:
        return health
    began = max(starts, key=_time)
    late = (_time(now) - _time(began)).total_seconds()
    if late <= deadline:
        return health
    return replace(health, degraded=True, reason=PROGRESS_DEADLINE_EXCEEDED,
                   message=f"{health.reason} since {began} (more than {_duration(deadline)}): {health.message}. "
                           f"What to do: {health.if_stuck}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v) or "0s"


def clock(old: Iterable[Mapping[str, Any]], kind: str, status: str, generation: int | None = None) -> str | None:
    """When condition `kind` entered `status` (its lastTransitionTime), or None when it is not in that
    status now, or (with `generation`) was written for another generation."""
    for c in old:
        if c.get("type") == kind and c.get("status") == status:
            if generation is not None and c.get("observedGeneration") != generation:
                return None
            return c.get("lastTransitionTime")
    return None


# ---------------------------------------------------------------- verdicts


def model_verdict(health: Health, license_problem: str | None, fit_problem: str | None) -> Verdict:
    """Phase and conditions of a ModelDeployment."""
    gates = [
        Cond("LicenseApproved", license_problem is None,
             "LicenseRejected" if license_problem else "LicenseApproved", license_problem or ""),
        Cond("Fits", fit_problem is None, "DoesNotFit" if fit_problem else "Fits", fit_problem or ""),
    ]
    if license_problem or fit_problem:
        why = license_problem or fit_problem or ""
        reason = "LicenseRejected" if license_problem else "DoesNotFit"
        return Verdict("Failed", [Cond("Ready", False, reason, f"not deployed: {why}"),
                                  Cond("Progressing", False, reason, ""),
                                  Cond("Degraded", False, reason, ""), *gates])
    return Verdict(_phase(health), [*_health_conditions(health), *gates])


def _phase(health: Health) -> str:
    if health.degraded:
        return "Degraded"
    if health.progressing:
        return "Progressing"
    return "Ready" if health.ready else "Pending"


def _health_conditions(health: Health) -> list[Cond]:
    return [
        # Ready: "Serving", or "ScaledToZero" (ready too: a request wakes it), else why not
        Cond("Ready", health.ready, "Serving" if health.ready and health.reason != "ScaledToZero" else health.reason,
             health.message),
        Cond("Progressing", health.progressing, health.reason if health.progressing else "Stable",
             health.message if health.progressing else "", per_generation=True),
        Cond("Degraded", health.degraded, health.reason if health.degraded else "Healthy",
             health.message if health.degraded else ""),
    ]


def pipeline_verdict(parts: Mapping[str, Health]) -> Verdict:
    """A Pipeline is Ready when each part (models, agent, store, ingestion) serves, Progressing while any
    part is on its way, Degraded when any part fails: one condition per part (e.g. ModelsReady) plus
    Ready/Progressing/Degraded over all of them, with the first failing (else moving) part's reason."""
    conds = [Cond(f"{name}Ready", h.ready, h.reason, h.message) for name, h in parts.items()]
    healths = list(parts.values())
    ready = all(h.ready for h in healths)
    first = next((h for h in healths if h.degraded), None) or next(
        (h for h in healths if h.progressing or not h.ready), None)
    overall = Health(ready, any(h.progressing for h in healths), first is not None and first.degraded,
                     first.reason if first else "AllReady",
                     first.message if first else "models, agent, store and ingestion are ready")
    return Verdict(_phase(overall), [*_health_conditions(overall), *conds])


def _status_word(ok: bool | None) -> str:
    return "Unknown" if ok is None else ("True" if ok else "False")


def conditions(new: Iterable[Cond], old: Iterable[Mapping[str, Any]], generation: int | None,
               now: str) -> list[dict[str, Any]]:
    """Wire conditions; lastTransitionTime moves only when a condition's status changes (or, for a
    per-generation one such as Progressing, when a new generation starts a new rollout)."""
    old = list(old)
    out = []
    for c in new:
        status = _status_word(c.ok)
        since = clock(old, c.type, status, generation if c.per_generation and c.ok else None)
        out.append({"type": c.type, "status": status, "reason": c.reason, "message": c.message,
                    "lastTransitionTime": since or now, "observedGeneration": generation})
    return out


def changed(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change the stored status (so an unchanged one causes no write)."""
    return any(old.get(k) != v for k, v in new.items())
